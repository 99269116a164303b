//! The request a batch item sends to the model, as a real-time caller would (spec/inference.md
//! §2.9): the API chosen by the service's request path says how. A `multipart/form-data`
//! API gets the file as the form field its request schema names (the seed's `images`); an
//! `application/json` API gets the file's text as the body, or, for a CSV file with a
//! mapping, one JSON request per row (`mapping.rs`).

use atelier_inference::config::{Api, ContentType};
use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use serde_json::Value;

/// How the chosen API takes a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Json,
    /// A multipart form with the file under `field`.
    Multipart {
        field: String,
    },
}

/// The API a batch service calls: its method, path and form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub method: String,
    pub path: String,
    pub form: Form,
}

impl Target {
    /// The model's API at `path`; a batch service needs its request's `Content-type`
    /// (seed 9.3.2: mandatory for batch). The error is the user's (a 400).
    pub fn of(apis: &[Api], path: &str) -> Result<(Target, Option<Value>), String> {
        let api = apis.iter().find(|a| a.url == path).ok_or_else(|| {
            let urls: Vec<&str> = apis.iter().map(|a| a.url.as_str()).collect();
            if urls.is_empty() {
                "request_path: the model's config.json has no apis; a batch service calls one of them".to_string()
            } else {
                format!(
                    "request_path: {path:?} is none of the model's apis[].url ({})",
                    urls.join(", ")
                )
            }
        })?;
        let request = api.request.as_ref();
        let schema = request.and_then(|r| r.data.clone());
        let form = match request.and_then(|r| r.content_type) {
            Some(ContentType::Json) => Form::Json,
            Some(ContentType::Multipart) => Form::Multipart {
                field: file_field(schema.as_ref()),
            },
            None => {
                return Err(format!(
                    "the model's API {path} has no request Content-type; a batch service needs it (application/json or multipart/form-data) to send files"
                ));
            }
        };
        Ok((
            Target {
                method: api.method.clone(),
                path: path.to_string(),
                form,
            },
            schema,
        ))
    }

    fn request(&self, content_type: &str, body: inf::Body) -> inf::Request {
        inf::Request {
            method: self.method.clone(),
            path: self.path.clone(),
            query: Vec::new(),
            headers: Vec::new(),
            content_type: content_type.to_string(),
            body,
        }
    }

    /// The request of a whole file named `name`.
    pub fn file(&self, name: &str, data: Vec<u8>) -> Result<inf::Request, String> {
        match &self.form {
            Form::Json => {
                let text = String::from_utf8(data).map_err(|_| {
                    format!("{name} is not UTF-8 text; the model's API takes application/json")
                })?;
                serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| {
                    format!("{name} is not JSON ({e}); the model's API takes application/json")
                })?;
                Ok(self.request("application/json", inf::Body::Json(text)))
            }
            Form::Multipart { field } => Ok(self.request(
                "multipart/form-data",
                inf::Body::Multipart(vec![inf::FormField {
                    name: field.clone(),
                    files: vec![inf::File {
                        name: name.to_string(),
                        content_type: Some(media_type(name).to_string()),
                        data,
                    }],
                    values: Vec::new(),
                }]),
            )),
        }
    }

    /// The request of one JSON document (a CSV row's).
    pub fn json(&self, value: &Value) -> inf::Request {
        self.request("application/json", inf::Body::Json(value.to_string()))
    }
}

/// The form field a file goes in: the request schema's first property of type `file`
/// (the seed's `"images": {"type": "file"}`), else its first property, else `file`.
fn file_field(schema: Option<&Value>) -> String {
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let Some(props) = props else {
        return "file".into();
    };
    props
        .iter()
        .find(|(_, v)| v.get("type").and_then(Value::as_str) == Some("file"))
        .or_else(|| props.iter().next())
        .map_or_else(|| "file".into(), |(k, _)| k.clone())
}

/// A file's media type by its extension (seed Tables 9-21/9-22, and the common others).
fn media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt") => "text/plain",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        Some("webp") => "image/webp",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Whether a file is a CSV table (its rows are mapped when the service has a mapping).
pub fn is_csv(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".csv")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_file_field_comes_from_the_schema() {
        assert_eq!(
            file_field(Some(
                &json!({"properties": {"meta": {"type": "string"}, "images": {"type": "file"}}})
            )),
            "images"
        );
        assert_eq!(file_field(Some(&json!({"properties": {"x": {}}}))), "x");
        assert_eq!(file_field(None), "file");
    }

    #[test]
    fn files_become_the_apis_form() {
        let t = Target {
            method: "POST".into(),
            path: "/".into(),
            form: Form::Multipart {
                field: "images".into(),
            },
        };
        let r = t.file("1.jpg", vec![1, 2]).unwrap();
        assert_eq!(r.content_type, "multipart/form-data");
        let inf::Body::Multipart(fields) = r.body else {
            panic!("not multipart")
        };
        assert_eq!(fields[0].name, "images");
        assert_eq!(fields[0].files[0].name, "1.jpg");
        assert_eq!(
            fields[0].files[0].content_type.as_deref(),
            Some("image/jpeg")
        );
        let j = Target {
            form: Form::Json,
            ..t
        };
        assert!(
            matches!(j.file("a.json", b"{\"a\":1}".to_vec()).unwrap().body, inf::Body::Json(s) if s == "{\"a\":1}")
        );
        assert!(
            j.file("a.json", b"{oops".to_vec())
                .unwrap_err()
                .starts_with("a.json is not JSON")
        );
        assert!(
            j.file("a.bin", vec![0xff])
                .unwrap_err()
                .contains("not UTF-8")
        );
    }
}
