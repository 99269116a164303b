//! The HTTP side of the domain's error (`crate::error::Error`, called `ApiError` here):
//! its kind's status, the `{"error": {code, message}}` body, and extractors whose
//! rejections have the same shape. The hidden source is logged, never sent.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use crate::error::{Error as ApiError, Kind};

impl ApiError {
    /// The HTTP status of the error's kind: the only place kinds become statuses.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Upstream => StatusCode::BAD_GATEWAY,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Kind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = self.source() {
            tracing::error!(error = format!("{source:#}"), "request failed");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::too_large("the request body is larger than the API accepts (2 MiB)");
        }
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::of(
                Kind::UnsupportedMedia,
                "the request body must be JSON with Content-Type: application/json",
            ),
            // axum's text names the field path: "auto_stop.duration_hours: invalid type ..."
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text);
                ApiError::invalid(format!("invalid request body: {text}"))
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::invalid(format!(
                "request body is not valid JSON: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text())
            )),
            other => ApiError::invalid(other.body_text()),
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s, so a bad body gets the common error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Option<ApiJson<T>>`: an empty body is `None` (actions like start or renew whose body
/// is optional); anything else must be valid JSON for `T`.
impl<T, S> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 2 * 1024 * 1024)
            .await
            .map_err(|_| {
                ApiError::too_large("the request body is larger than the API accepts (2 MiB)")
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        <ApiJson<T> as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Query strings with the same error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::invalid(format!("invalid query string: {}", r.body_text()))
    }
}

/// Path parameters with the same error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::not_found(format!("not found: {}", r.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::ApiError;
    use crate::notebooks::mounts::MountError;
    use crate::notebooks::save::SaveError;
    use crate::notebooks::uploads::UploadError;

    /// A module's own error reaches the client with its kind's status, its code and its
    /// text; a shared check's error it carries goes through unchanged; an internal one shows
    /// nothing of itself and keeps its detail for the log.
    #[test]
    fn module_errors_keep_their_kind_code_and_text() {
        let cases: Vec<(ApiError, StatusCode, &str, &str)> = vec![
            (
                UploadError::Invalid("size: 0 bytes".into()).into(),
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "size: 0 bytes",
            ),
            (
                UploadError::WorkDir("x is a folder in the work dir".into()).into(),
                StatusCode::CONFLICT,
                "conflict",
                "x is a folder in the work dir",
            ),
            (
                UploadError::Store("the store is down".into()).into(),
                StatusCode::BAD_GATEWAY,
                "unavailable",
                "the store is down",
            ),
            (
                MountError::Failed("mounting obs://b/ at /data/x/ failed".into()).into(),
                StatusCode::BAD_GATEWAY,
                "mount_failed",
                "mounting obs://b/ at /data/x/ failed",
            ),
            (
                MountError::NotFound("no mount named \"x\"".into()).into(),
                StatusCode::NOT_FOUND,
                "not_found",
                "no mount named \"x\"",
            ),
            (
                MountError::Common(ApiError::quota("100 notebooks is the most")).into(),
                StatusCode::CONFLICT,
                "quota_exceeded",
                "100 notebooks is the most",
            ),
            (
                SaveError::Taken("image \"a/b:c\" already exists".into()).into(),
                StatusCode::CONFLICT,
                "conflict",
                "image \"a/b:c\" already exists",
            ),
        ];
        for (e, status, code, message) in cases {
            assert_eq!(
                (e.status(), e.code, e.message.as_str()),
                (status, code, message)
            );
        }

        let e: ApiError = UploadError::Internal(anyhow::anyhow!("disk /srv/x is full")).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.body().to_string().contains("/srv/x"), "{}", e.body());
        let logged = format!("{:#}", e.source().expect("the detail is kept for the log"));
        assert!(logged.contains("disk /srv/x is full"), "{logged}");

        // The store's errors are internal, whatever module meets them.
        let e: ApiError = SaveError::from(sqlx::Error::PoolTimedOut).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
