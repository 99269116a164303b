//! A small HTTP client for the Atelier v1 API (`docs/api.md`) and the CLI's error type.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;

use super::table::sanitize;

/// Everything that can make a client command fail. The exit code depends on the variant:
/// 2 for connection problems, 1 for everything else.
#[derive(Debug)]
pub enum CliError {
    /// The server answered with a 4xx/5xx status.
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The server could not be reached (refused, timed out, reset, DNS...).
    Connect { url: String, detail: String },
    /// Usage errors, unexpected responses, local I/O problems.
    Other(String),
}

impl CliError {
    pub fn other(msg: impl Into<String>) -> Self {
        CliError::Other(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Connect { .. } => 2,
            _ => 1,
        }
    }

    /// An extra line of advice printed after the error, if any.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Connect { .. } => Some(
                "is the server running? Start it with `atelier serve`, or point the client at \
                 it with --url or ATELIER_URL"
                    .to_string(),
            ),
            CliError::Api { status, code, .. }
                if *status == 401 || code.as_deref() == Some("unauthenticated") =>
            {
                Some("the token was refused; run `atelier login` or set ATELIER_TOKEN".to_string())
            }
            _ => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api {
                status, message, ..
            } => write!(f, "{message} (HTTP {status})"),
            CliError::Connect { url, detail } => write!(f, "cannot connect to {url}: {detail}"),
            CliError::Other(msg) => f.write_str(msg),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(format!("{e:#}"))
    }
}

/// Builds the error for a non-success response from its status and body. The documented body is
/// `{"error": {"code": "...", "message": "..."}}`; anything else (a proxy's HTML page, an empty
/// body) still gives a usable message.
pub fn parse_error_body(status: u16, body: &str) -> CliError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }

    let nonempty = |s: Option<String>| s.map(|s| sanitize(s.trim())).filter(|s| !s.is_empty());
    if let Ok(env) = serde_json::from_str::<Envelope>(body) {
        let code = nonempty(env.error.code);
        let message = nonempty(env.error.message)
            .or_else(|| code.clone())
            .unwrap_or_else(|| reason(status));
        return CliError::Api {
            status,
            code,
            message,
        };
    }
    let text = sanitize(body.trim());
    let message = if text.is_empty() || text.starts_with('<') {
        // Empty, or an HTML error page from something in front of the server.
        reason(status)
    } else {
        truncate_chars(&text, 200)
    };
    CliError::Api {
        status,
        code: None,
        message,
    }
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("request failed")
        .to_ascii_lowercase()
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// Parses and checks a server base URL (`http://host:port`, optionally with a path prefix).
pub fn parse_base_url(raw: &str) -> Result<Url, CliError> {
    let raw = raw.trim();
    if !raw.contains("://") {
        return Err(CliError::other(format!(
            "invalid server URL {raw:?}: expected http://HOST[:PORT], e.g. http://{raw}"
        )));
    }
    let mut url =
        Url::parse(raw).map_err(|e| CliError::other(format!("invalid server URL {raw:?}: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::other(format!(
                "invalid server URL {raw:?}: this build of atelier speaks plain http only; \
                 use an http:// URL"
            )));
        }
        other => {
            return Err(CliError::other(format!(
                "invalid server URL {raw:?}: unsupported scheme {other:?} (expected http://)"
            )));
        }
    }
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(CliError::other(format!(
            "invalid server URL {raw:?}: expected http://HOST[:PORT]"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CliError::other(format!(
            "invalid server URL {raw:?}: credentials in the URL are not supported; use a token"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// A server base URL without the trailing slash, for display and for joining with paths.
pub fn display_base(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// A successful response: the raw body (kept to print the server's JSON unchanged) and its
/// parsed value (`Value::Null` for an empty body such as a 204).
#[derive(Debug)]
pub struct Reply {
    pub raw: String,
    pub value: Value,
}

pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Self, CliError> {
        let base = parse_base_url(base)?;
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::other(
                "the API token is empty or contains invalid characters",
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("atelier-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::other(format!("cannot create the HTTP client: {e}")))?;
        Ok(Api {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// The base URL as given (without a trailing slash).
    pub fn base(&self) -> String {
        display_base(&self.base)
    }

    /// Builds `base + /seg/seg…?query`, percent-encoding each segment.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, CliError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| CliError::other("the server URL cannot take a path"))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        let url = self.url(segments, query)?;
        let mut req = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        self.finish(req, &url).await
    }

    /// A request whose body is `body` as it is, of type `content_type` (a YAML or JSON
    /// document read from a file).
    pub async fn send_raw(
        &self,
        method: Method,
        segments: &[&str],
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, CliError> {
        let url = self.url(segments, &[])?;
        let req = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.finish(req, &url).await
    }

    /// `POST` of a multipart form (uploads), with a longer timeout for large bodies.
    pub async fn post_multipart(
        &self,
        segments: &[&str],
        form: reqwest::multipart::Form,
    ) -> Result<Reply, CliError> {
        let url = self.url(segments, &[])?;
        let req = self
            .http
            .post(url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(Duration::from_secs(600))
            .multipart(form);
        self.finish(req, &url).await
    }

    async fn finish(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<Reply, CliError> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let raw = resp.text().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(parse_error_body(status.as_u16(), &raw));
        }
        let value = if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw).map_err(|e| {
                CliError::other(format!(
                    "invalid JSON in the response from {} ({e}); is {} an Atelier server?",
                    url.path(),
                    self.base()
                ))
            })?
        };
        Ok(Reply { raw, value })
    }

    /// `GET` of a text body handed to `sink` piece by piece as it comes (a followed log);
    /// no timeout but the server's.
    pub async fn stream_text(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), CliError> {
        let url = self.url(segments, query)?;
        let mut resp = self
            .http
            .get(url.clone())
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(7 * 3600))
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let raw = resp.text().await.map_err(|e| self.transport_error(&e))?;
            return Err(parse_error_body(status.as_u16(), &raw));
        }
        while let Some(piece) = resp.chunk().await.map_err(|e| self.transport_error(&e))? {
            sink(&piece);
        }
        Ok(())
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply, CliError> {
        self.call(Method::GET, segments, query, None).await
    }

    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Reply, CliError> {
        self.call(Method::POST, segments, &[], body).await
    }

    pub async fn patch(&self, segments: &[&str], body: &Value) -> Result<Reply, CliError> {
        self.call(Method::PATCH, segments, &[], Some(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Reply, CliError> {
        self.call(Method::DELETE, segments, &[], None).await
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if e.is_builder() {
            return CliError::other(format!("cannot build the request: {e}"));
        }
        // The innermost cause ("Connection refused (os error 111)") is the useful part.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        if e.is_timeout() {
            detail = format!("timed out ({detail})");
        }
        CliError::Connect {
            url: self.base(),
            detail,
        }
    }
}

/// The `items` array of a list response.
pub fn items(v: &Value) -> Result<&[Value], CliError> {
    v.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| CliError::other("unexpected response from the server: no `items` list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_documented_shape() {
        let e = parse_error_body(
            400,
            r#"{"error":{"code":"invalid_argument","message":"name: must be 1-128 characters"}}"#,
        );
        match &e {
            CliError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(*status, 400);
                assert_eq!(code.as_deref(), Some("invalid_argument"));
                assert_eq!(message, "name: must be 1-128 characters");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.to_string(), "name: must be 1-128 characters (HTTP 400)");
        assert_eq!(e.exit_code(), 1);
        assert!(e.hint().is_none());
    }

    #[test]
    fn error_body_missing_message_uses_code_then_reason() {
        let e = parse_error_body(409, r#"{"error":{"code":"conflict"}}"#);
        assert_eq!(e.to_string(), "conflict (HTTP 409)");
        let e = parse_error_body(404, r#"{"error":{}}"#);
        assert_eq!(e.to_string(), "not found (HTTP 404)");
    }

    #[test]
    fn error_body_not_json() {
        assert_eq!(
            parse_error_body(502, "").to_string(),
            "bad gateway (HTTP 502)"
        );
        assert_eq!(
            parse_error_body(502, "<html><body>Bad Gateway</body></html>").to_string(),
            "bad gateway (HTTP 502)"
        );
        assert_eq!(
            parse_error_body(500, "oops\nsomething\x1b[31m broke").to_string(),
            "oops something?[31m broke (HTTP 500)"
        );
        let long = "x".repeat(500);
        let msg = parse_error_body(500, &long).to_string();
        assert!(msg.starts_with(&"x".repeat(200)));
        assert!(msg.contains('…'));
    }

    #[test]
    fn unauthenticated_has_login_hint() {
        let e = parse_error_body(
            401,
            r#"{"error":{"code":"unauthenticated","message":"invalid token"}}"#,
        );
        assert!(e.hint().is_some_and(|h| h.contains("atelier login")));
    }

    #[test]
    fn connect_error_exit_code_and_hint() {
        let e = CliError::Connect {
            url: "http://127.0.0.1:8000".into(),
            detail: "Connection refused (os error 111)".into(),
        };
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("http://127.0.0.1:8000"));
        let hint = e.hint().unwrap_or_default();
        assert!(hint.contains("atelier serve") && hint.contains("ATELIER_URL"));
    }

    #[test]
    fn base_urls() {
        assert!(parse_base_url("http://127.0.0.1:8000").is_ok());
        assert!(parse_base_url("https://example.com").is_err());
        assert!(parse_base_url("ftp://example.com").is_err());
        assert!(parse_base_url("localhost:8000").is_err());
        assert!(parse_base_url("http://u:p@host").is_err());
        assert!(parse_base_url("not a url").is_err());
        let u = parse_base_url("http://h:1/prefix/?q=1#f").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(display_base(&u), "http://h:1/prefix");
    }

    #[test]
    fn urls_are_encoded() {
        let api = Api::new("http://h:8000/", "tok").unwrap_or_else(|e| panic!("{e}"));
        let u = api
            .url(&["v1", "users", "a/../b c", "tokens"], &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.as_str(), "http://h:8000/v1/users/a%2F..%2Fb%20c/tokens");
        let u = api
            .url(
                &["v1", "notebooks"],
                &[("name", "a&b=c".into()), ("all", "true".into())],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u.as_str(),
            "http://h:8000/v1/notebooks?name=a%26b%3Dc&all=true"
        );

        let api = Api::new("http://h/atelier", "tok").unwrap_or_else(|e| panic!("{e}"));
        let u = api
            .url(&["v1", "whoami"], &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.as_str(), "http://h/atelier/v1/whoami");
    }

    #[test]
    fn bad_tokens_rejected() {
        assert!(Api::new("http://h", "").is_err());
        assert!(Api::new("http://h", "a b").is_err());
        assert!(Api::new("http://h", "a\nb").is_err());
        assert!(Api::new("http://h", " tok \n").is_ok());
    }
}
