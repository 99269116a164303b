//! Authentication: who is calling. API tokens (`Authorization: Bearer …`) and browser
//! session cookies resolve to a [`Principal`]. Secrets are random, shown once, and stored as
//! SHA-256 hashes; resolved credentials are cached briefly and evicted on revocation.
//! Connections that outlive a request (WebSockets, SSH) register with [`revoke`], so a
//! revocation cuts them too.
//!
//! Authorization (what the principal may touch) lives in [`authz`].

pub mod authz;
pub mod revoke;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::cache::TtlCache;
use crate::server::AppState;
use crate::store::{self, Store, users};
use revoke::{Reason, Revocations, Subject};

pub const SESSION_COOKIE: &str = "atelier_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub token_id: String,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this operation needs the admin role"))
        }
    }
}

/// A new random secret with a recognisable prefix (`atl_` API token, `ats_` session).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(digest(secret))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Resolves secrets to principals, with a short-lived cache in front of the database.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    /// SHA-256 of the secret → principal. The short TTL bounds how stale an expiry can be;
    /// revocation evicts at once.
    cache: Arc<TtlCache<[u8; 32], Arc<Principal>>>,
    revocations: Revocations,
}

impl Authenticator {
    pub fn new(store: Store, revocations: Revocations) -> Self {
        Authenticator {
            store,
            cache: Arc::new(TtlCache::new(100_000, Duration::from_secs(60))),
            revocations,
        }
    }

    /// The registry long-lived connections register with.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub async fn resolve(&self, secret: &str) -> Result<Option<Principal>, ApiError> {
        Ok(self.resolve_shared(secret).await?.map(Arc::unwrap_or_clone))
    }

    /// As [`Self::resolve`], without copying the cached principal (the proxy's hot path).
    pub async fn resolve_shared(&self, secret: &str) -> Result<Option<Arc<Principal>>, ApiError> {
        let key = digest(secret);
        if let Some(p) = self.cache.get(&key) {
            return Ok(Some(p));
        }
        let hash = hex::encode(key);
        let since = Instant::now();
        let mut conn = self.store.pool.acquire().await?;
        let Some(cred) = users::credential_by_hash(&mut conn, &hash).await? else {
            return Ok(None);
        };
        let now = store::now();
        if cred.expires_at.as_deref().is_some_and(|e| e < now.as_str()) {
            return Ok(None);
        }
        users::touch_token(&mut conn, &cred.token_id, &now).await?;
        let principal = Arc::new(Principal {
            user_id: cred.user_id,
            name: cred.name,
            role: Role::parse(&cred.role).unwrap_or(Role::User),
            token_id: cred.token_id,
        });
        self.cache.insert(key, principal.clone());
        // Revoked while it was being read: the eviction may have come before the insert.
        let subjects = [
            Subject::Token(principal.token_id.clone()),
            Subject::User(principal.user_id.clone()),
        ];
        if self.revocations.revoked_since(&subjects, since) {
            self.cache.invalidate(&key);
            return Ok(None);
        }
        Ok(Some(principal))
    }

    /// Evicts a credential by its stored (hex) hash.
    pub fn forget(&self, secret_hash: &str) {
        let mut key = [0u8; 32];
        if hex::decode_to_slice(secret_hash, &mut key).is_ok() {
            self.cache.invalidate(&key);
        }
    }

    /// After a token or browser session was deleted from the store: evicted from the cache,
    /// and the connections it opened cut.
    pub fn revoke_token(&self, token_id: &str, secret_hash: &str) {
        self.forget(secret_hash);
        self.revocations
            .revoke(Subject::Token(token_id.to_owned()), Reason::TokenRevoked);
    }

    /// From the bearer token, else the session cookie. `Ok(None)`: no credential presented.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        Ok(self
            .authenticate_shared(headers)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// As [`Self::authenticate`], without copying the cached principal.
    pub async fn authenticate_shared(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        let Some(secret) = presented_secret(headers) else {
            return Ok(None);
        };
        match self.resolve_shared(secret).await? {
            Some(p) => Ok(Some(p)),
            None => Err(ApiError::unauthenticated(
                "the token or session is not valid (revoked, expired or mistyped)",
            )),
        }
    }
}

pub fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    session_cookie(headers)
}

pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(&parts.headers).await?.ok_or_else(|| {
            ApiError::unauthenticated(
                "authentication required: send Authorization: Bearer <token> or log in at /login",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret("atl_");
        let b = new_secret("atl_");
        assert_ne!(a, b);
        assert!(a.starts_with("atl_") && a.len() > 40);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(!hash_secret(&a).contains(&a[4..]));
    }

    #[test]
    fn credentials_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_secret(&h), None);
        h.insert(
            http::header::COOKIE,
            "a=1; atelier_session=ats_x; b=2".parse().unwrap(),
        );
        assert_eq!(presented_secret(&h), Some("ats_x"));
        h.insert(http::header::AUTHORIZATION, "Bearer atl_y".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("atl_y"));
    }
}
