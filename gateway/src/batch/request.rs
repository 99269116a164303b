//! The request a batch item sends to the model, as a real-time caller would (spec/inference.md
//! §2.9): the API chosen by the service's request path says how. A `multipart/form-data`
//! API gets the file as the form field its request schema names (the seed's `images`); an
//! `application/json` API gets the file's text as the body, or, for a CSV file with a
//! mapping, one JSON request per row (`mapping.rs`).
//!
//! A model on a container or process engine gets the same request over HTTP
//! ([`http_body`]): `POST` to the API's path on the model's server.

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
    /// The API says nothing (an engine model without `apis` or without a request
    /// `Content-type`): a `.json` file as `application/json`, any other as a multipart form
    /// with the file under `file`.
    ByFile,
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

    /// The API a batch service calls on a model that runs its own server: `path` when
    /// given (one of its `apis[].url`), else its first API's, else `/` (a model whose
    /// config lists no API is called at `/`). Unlike the built-in engine's, an API without a
    /// request `Content-type` is taken ([`Form::ByFile`]).
    pub fn for_engine(apis: &[Api], path: Option<&str>) -> Result<(Target, Option<Value>), String> {
        let Some(first) = apis.first() else {
            return match path {
                None | Some("/") => Ok((
                    Target {
                        method: "POST".into(),
                        path: "/".into(),
                        form: Form::ByFile,
                    },
                    None,
                )),
                Some(p) => Err(format!(
                    "request_path: {p:?}: the model's config.json lists no apis, so its server is called at /"
                )),
            };
        };
        let path = path.unwrap_or(&first.url);
        if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(format!(
                "request_path: {path:?} is no path the model's server can be called at"
            ));
        }
        match Target::of(apis, path) {
            Ok(t) => Ok(t),
            // Found, but without a request Content-type: by the file.
            Err(_) if apis.iter().any(|a| a.url == path) => Ok((
                Target {
                    method: "POST".into(),
                    path: path.to_string(),
                    form: Form::ByFile,
                },
                None,
            )),
            Err(e) => Err(e),
        }
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
        let json = match &self.form {
            Form::Json => true,
            Form::Multipart { .. } => false,
            Form::ByFile => name.to_ascii_lowercase().ends_with(".json"),
        };
        match &self.form {
            _ if json => {
                let text = String::from_utf8(data).map_err(|_| {
                    format!("{name} is not UTF-8 text; the model's API takes application/json")
                })?;
                serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| {
                    format!("{name} is not JSON ({e}); the model's API takes application/json")
                })?;
                Ok(self.request("application/json", inf::Body::Json(text)))
            }
            form => Ok(self.request(
                "multipart/form-data",
                inf::Body::Multipart(vec![inf::FormField {
                    name: match form {
                        Form::Multipart { field } => field.clone(),
                        _ => "file".into(),
                    },
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

/// A request's body as an engine's server gets it: its `Content-Type` and bytes. A form is
/// encoded as `multipart/form-data` with a fresh boundary; its names and file names are
/// escaped as browsers do (`"` → `%22`, CR → `%0D`, LF → `%0A`), so an input's name cannot
/// add a header or a part.
pub fn http_body(req: inf::Request) -> (String, Vec<u8>) {
    match req.body {
        inf::Body::Json(text) => ("application/json".into(), text.into_bytes()),
        inf::Body::Raw(bytes) => (req.content_type, bytes),
        inf::Body::Multipart(fields) => {
            let boundary = format!("atelier-{}", uuid::Uuid::new_v4().simple());
            let mut out = Vec::new();
            for f in fields {
                let name = form_escape(&f.name);
                for v in &f.values {
                    out.extend_from_slice(
                        format!(
                            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    out.extend_from_slice(v.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                for file in f.files {
                    let content_type = file
                        .content_type
                        .as_deref()
                        .filter(|c| c.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                        .unwrap_or("application/octet-stream");
                    out.extend_from_slice(
                        format!(
                            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
                            form_escape(&file.name)
                        )
                        .as_bytes(),
                    );
                    out.extend_from_slice(&file.data);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            (format!("multipart/form-data; boundary={boundary}"), out)
        }
    }
}

/// A name in a form part's header, escaped as the HTML standard's form encoding does.
fn form_escape(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
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

    fn api(url: &str, content_type: Option<ContentType>) -> Api {
        Api {
            url: url.into(),
            method: "POST".into(),
            request: content_type.map(|ct| atelier_inference::config::Body {
                content_type: Some(ct),
                data: Some(json!({"type": "object",
                                  "properties": {"images": {"type": "file"}}})),
            }),
            response: None,
        }
    }

    #[test]
    fn an_engine_model_is_called_at_its_first_api_or_at_the_root() {
        let (t, _) = Target::for_engine(&[], None).unwrap();
        assert_eq!((t.path.as_str(), &t.form), ("/", &Form::ByFile));
        assert!(
            Target::for_engine(&[], Some("/x"))
                .unwrap_err()
                .contains("lists no apis")
        );
        let apis = [
            api("/predict", Some(ContentType::Multipart)),
            api("/bare", None),
        ];
        let (t, _) = Target::for_engine(&apis, None).unwrap();
        assert_eq!(t.path, "/predict");
        assert_eq!(
            t.form,
            Form::Multipart {
                field: "images".into()
            }
        );
        let (t, _) = Target::for_engine(&apis, Some("/bare")).unwrap();
        assert_eq!(t.form, Form::ByFile);
        assert!(
            Target::for_engine(&apis, Some("/other"))
                .unwrap_err()
                .contains("none of the model's apis")
        );
        assert!(
            Target::for_engine(&apis, Some("/a b"))
                .unwrap_err()
                .contains("no path")
        );
        // By the file: .json as JSON, the rest as a form under `file`.
        let t = Target {
            method: "POST".into(),
            path: "/".into(),
            form: Form::ByFile,
        };
        assert!(matches!(
            t.file("A.JSON", b"[1]".to_vec()).unwrap().body,
            inf::Body::Json(_)
        ));
        let r = t.file("a.bin", vec![0]).unwrap();
        assert!(matches!(&r.body, inf::Body::Multipart(f) if f[0].name == "file"));
    }

    #[test]
    fn a_form_goes_to_an_engine_as_multipart_with_its_names_escaped() {
        let t = Target {
            method: "POST".into(),
            path: "/".into(),
            form: Form::Multipart {
                field: "images".into(),
            },
        };
        let r = t
            .file("a\"; name=\"x\r\nX-Evil: 1.png", b"PNG".to_vec())
            .unwrap();
        let (ct, body) = http_body(r);
        let boundary = ct
            .strip_prefix("multipart/form-data; boundary=")
            .expect(&ct)
            .to_string();
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            body,
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a%22; name=%22x%0D%0AX-Evil: 1.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--{boundary}--\r\n"
            )
        );
        let (ct, body) = http_body(t.json(&json!({"a": 1})));
        assert_eq!(
            (ct.as_str(), body.as_slice()),
            ("application/json", &b"{\"a\":1}"[..])
        );
    }
}
