//! The domain's error: a kind (what went wrong, in the caller's terms), a stable code, a
//! message for the user, and a hidden source that is logged, never shown. Services return
//! it; only `api/error.rs` turns a kind into an HTTP status, so nothing below `api/` speaks
//! HTTP.

use crate::lifecycle::Refused;
use crate::store::transition::Denied;

/// What went wrong, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong (a field, a value, a limit): fix it and retry.
    Invalid,
    /// No valid credential.
    Unauthenticated,
    /// A credential that may not do this.
    Forbidden,
    /// No such thing (or not the caller's to see).
    NotFound,
    /// The method does not apply to the path.
    MethodNotAllowed,
    /// Not in the resource's current state, a name taken, a quota reached.
    Conflict,
    /// A body or file over its limit.
    TooLarge,
    /// A body in a format the API does not take.
    UnsupportedMedia,
    /// Something the gateway depends on (a notebook, object storage, the engine) failed.
    Upstream,
    /// The gateway cannot do this at all here (no sandbox, no engine).
    Unavailable,
    /// Ours, not the caller's: the details go to the log only.
    Internal,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    source: Option<anyhow::Error>,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            source: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, "invalid_argument", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Kind::Unauthenticated, "unauthenticated", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, "permission_denied", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, "conflict", message)
    }
    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, "quota_exceeded", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, "payload_too_large", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Upstream, "unavailable", message)
    }
    /// A failure that is ours, not the caller's: the details go to the log only.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Error {
            kind: Kind::Internal,
            code: "internal",
            message: "internal error; the gateway log has the details".into(),
            source: Some(source.into()),
        }
    }

    /// What an internal error hides (for the log).
    pub fn source(&self) -> Option<&anyhow::Error> {
        self.source.as_ref()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}): {}", self.code, self.kind, self.message)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::internal(e)
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::internal(e)
    }
}

/// An operation not allowed in the resource's status: a conflict, in the table's words.
impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        Error::conflict(r.message)
    }
}

impl From<Denied> for Error {
    fn from(e: Denied) -> Self {
        match e {
            Denied::Refused(r) | Denied::Moved(r) => r.into(),
            gone @ Denied::Gone { .. } => Error::not_found(gone.to_string()),
            Denied::Store(e) => e.into(),
        }
    }
}
