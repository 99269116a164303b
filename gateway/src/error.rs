//! The domain's common error: a kind (what went wrong, in the caller's terms), a stable
//! code, a message for the user, and a hidden source that is logged, never shown. Only
//! `api/error.rs` turns a kind into an HTTP status, so nothing below `api/` speaks HTTP.
//!
//! A service with failures of its own has its own `thiserror` enum (`notebooks::uploads::
//! UploadError`, `notebooks::mounts::MountError`, `notebooks::save::SaveError`): each variant
//! says what failed and [`DomainError::kind`] whose side it is on; `domain_error!` gives it
//! the `From` into this common error that the front doors use. Nothing turns a failure into
//! a kind by its text.

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
    /// More calls than a limit lets through (a service's traffic limit): retry later.
    TooManyRequests,
    /// The work took longer than its deadline (an inference call's timeout).
    TimedOut,
    /// A user's code failed (a model, a processor plugin) and said why: shown as it is.
    Failed,
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
    /// An error of `kind` with the kind's own code.
    pub fn of(kind: Kind, message: impl Into<String>) -> Self {
        Self::new(kind, kind.code(), message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::of(Kind::Invalid, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::of(Kind::Unauthenticated, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::of(Kind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::of(Kind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::of(Kind::Conflict, message)
    }
    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, "quota_exceeded", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::of(Kind::TooLarge, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::of(Kind::Upstream, message)
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

impl Kind {
    /// The stable code of an error of this kind that has none of its own.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid_argument",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "permission_denied",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::Conflict => "conflict",
            Kind::TooLarge => "payload_too_large",
            Kind::UnsupportedMedia => "unsupported_media_type",
            Kind::Upstream => "unavailable",
            Kind::Unavailable => "unavailable",
            Kind::TooManyRequests => "too_many_requests",
            Kind::TimedOut => "timed_out",
            Kind::Failed => "failed",
            Kind::Internal => "internal",
        }
    }
}

/// A domain module's own error.
pub trait DomainError: std::error::Error + Send + Sync + Sized + 'static {
    /// Whose side the failure is on.
    fn kind(&self) -> Kind;

    /// The code clients match; the kind's by default.
    fn code(&self) -> &'static str {
        self.kind().code()
    }
}

impl Error {
    /// The common error of a module's own: its kind, code and text; an internal one keeps
    /// itself as the hidden source.
    pub fn from_domain<E: DomainError>(e: E) -> Error {
        match e.kind() {
            Kind::Internal => Error::internal(anyhow::Error::new(e)),
            kind => Error::new(kind, e.code(), e.to_string()),
        }
    }
}

/// What a request about one of a user's resources (a model, a service, a batch service,
/// an algorithm) fails with: one shape for all of them.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A field of the request is wrong (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// No such resource of the caller's.
    #[error("{0}")]
    NotFound(String),
    /// A name taken, the quota reached, the resource in use or in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// A shared check refused: a status, the quota, the store.
    #[error("{}", .0.message)]
    Common(#[from] Error),
    /// Ours: logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for ResourceError {
    fn kind(&self) -> Kind {
        match self {
            ResourceError::Invalid(_) => Kind::Invalid,
            ResourceError::NotFound(_) => Kind::NotFound,
            ResourceError::Conflict(_) => Kind::Conflict,
            ResourceError::Common(e) => e.kind,
            ResourceError::Internal(_) => Kind::Internal,
        }
    }
}

/// `From<$t> for crate::error::Error` (its `$common` variant's error as it is, the rest
/// through [`Error::from_domain`]), and the `From`s a
/// module's error takes from what every service calls: the store (`sqlx`, into its
/// `$internal` variant) and the lifecycle's refusals (into its `$common` variant).
#[macro_export]
macro_rules! domain_error {
    ($t:ident, common: $common:ident, internal: $internal:ident) => {
        impl From<$t> for $crate::error::Error {
            fn from(e: $t) -> Self {
                match e {
                    // A shared check's error, given back as it is.
                    $t::$common(common) => common,
                    other => $crate::error::Error::from_domain(other),
                }
            }
        }
        impl From<sqlx::Error> for $t {
            fn from(e: sqlx::Error) -> Self {
                $t::$internal(e.into())
            }
        }
        impl From<$crate::lifecycle::Refused> for $t {
            fn from(r: $crate::lifecycle::Refused) -> Self {
                $t::$common(r.into())
            }
        }
        impl From<$crate::store::transition::Denied> for $t {
            fn from(d: $crate::store::transition::Denied) -> Self {
                $t::$common(d.into())
            }
        }
    };
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
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

domain_error!(ResourceError, common: Common, internal: Internal);
