//! Authentication: who is calling. API tokens (`Authorization: Bearer …`) and browser
//! session cookies resolve to a [`Principal`]. Secrets are random, shown once, and stored as
//! SHA-256 hashes; resolved credentials are cached briefly and evicted on revocation.
//! Connections that outlive a request (WebSockets, SSH) register with [`revoke`], so a
//! revocation cuts them too.
//!
//! Browsers hold two kinds of cookie: the console's session (`atelier_session`, on the
//! console's host, for `/v1` and the pages) and, per notebook, a notebook-host cookie
//! (`atelier_nb`, on `{id}.<notebook domain>` only) that [`tickets`] makes from a one-time
//! ticket. A notebook-host cookie resolves to its console session's [`Principal`] and is
//! never accepted anywhere else. [`csrf`] holds the checks for cookie-authenticated writes.
//!
//! Authorization (what the principal may touch) lives in [`authz`].

pub mod authz;
pub mod csrf;
pub mod revoke;
pub mod tickets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::cache::TtlCache;
use crate::error::Error;
use crate::store::{self, Store, users};
use revoke::{Reason, Revocations, Subject};

/// The gateway's cookies. Over https their names carry the `__Host-` prefix: browsers accept
/// such a cookie only from the host itself, `Secure`, with `Path=/` and no `Domain`, so a page
/// on a notebook's subdomain cannot plant one for the console (cookie tossing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieJar {
    secure: bool,
}

/// Every cookie of the gateway's starts with this (after the `__Host-` prefix); none is
/// forwarded to notebooks.
pub const COOKIE_PREFIX: &str = "atelier_";

impl CookieJar {
    pub fn new(secure: bool) -> Self {
        CookieJar { secure }
    }

    /// The console's session.
    pub fn session(&self) -> &'static str {
        if self.secure {
            "__Host-atelier_session"
        } else {
            "atelier_session"
        }
    }

    /// The login and logout forms' double-submit token.
    pub fn csrf(&self) -> &'static str {
        if self.secure {
            "__Host-atelier_csrf"
        } else {
            "atelier_csrf"
        }
    }

    /// A notebook host's own session.
    pub fn notebook(&self) -> &'static str {
        if self.secure {
            "__Host-atelier_nb"
        } else {
            "atelier_nb"
        }
    }

    /// `Set-Cookie` value: host-only, `Path=/`, `HttpOnly`, `SameSite=Strict`, `Secure` over
    /// https; `max_age` in seconds (0 deletes it).
    pub fn set(&self, name: &str, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

/// Whether `name` (a cookie's name) is one of the gateway's.
pub fn is_gateway_cookie(name: &str) -> bool {
    name.strip_prefix("__Host-")
        .unwrap_or(name)
        .starts_with(COOKIE_PREFIX)
}

/// The values of every cookie called `name` the request carries (a browser may send several
/// of one name, set for different paths or domains).
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// How a credential came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer`.
    Bearer,
    /// The console's session cookie: a browser sends it by itself, so writes need the CSRF
    /// checks of [`csrf`].
    Cookie,
}

/// A credential as presented, not yet checked.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub secret: &'a str,
    pub via: Via,
}

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
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::forbidden("this operation needs the admin role"))
        }
    }
}

/// Who a request relayed from a notebook's `atelier` socket acts as (`api::files`): the
/// notebook's owner, with a user's rights whatever their role, so an admin's notebook gains
/// nothing a user's would not. Only [`Authenticator::notebook_owner`] makes one and only the
/// relay puts it in a request's extensions, where the [`Principal`] extractor takes it before
/// any header; nothing that arrives over the network can put it there.
#[derive(Debug, Clone)]
pub struct NotebookCaller {
    principal: Principal,
}

impl NotebookCaller {
    pub fn principal(&self) -> &Principal {
        &self.principal
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

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Resolves secrets to principals, with a short-lived cache in front of the database.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    /// SHA-256 of the secret → principal. The short TTL bounds how stale an expiry can be;
    /// revocation evicts at once.
    cache: Arc<TtlCache<[u8; 32], Arc<Principal>>>,
    jar: CookieJar,
    /// Notebook hosts' tickets and sessions (in memory: a restart sends browsers back through
    /// the console for a new ticket).
    logins: Arc<tickets::NotebookLogins>,
    revocations: Revocations,
}

impl Authenticator {
    /// `session_lifetime` bounds a notebook host's session (its console session's own expiry
    /// and revocation apply too).
    pub fn new(
        store: Store,
        jar: CookieJar,
        session_lifetime: Duration,
        revocations: Revocations,
    ) -> Self {
        Authenticator {
            store,
            cache: Arc::new(TtlCache::new(100_000, Duration::from_secs(60))),
            jar,
            logins: Arc::new(tickets::NotebookLogins::new(session_lifetime)),
            revocations,
        }
    }

    pub fn cookies(&self) -> CookieJar {
        self.jar
    }

    pub fn logins(&self) -> &tickets::NotebookLogins {
        &self.logins
    }

    /// The registry long-lived connections register with.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub async fn resolve(&self, secret: &str) -> Result<Option<Principal>, Error> {
        Ok(self.resolve_shared(secret).await?.map(Arc::unwrap_or_clone))
    }

    /// As [`Self::resolve`], without copying the cached principal (the proxy's hot path).
    pub async fn resolve_shared(&self, secret: &str) -> Result<Option<Arc<Principal>>, Error> {
        self.resolve_digest(digest(secret)).await
    }

    /// As [`Self::resolve_shared`], from the secret's SHA-256.
    pub async fn resolve_digest(&self, key: [u8; 32]) -> Result<Option<Arc<Principal>>, Error> {
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

    /// The caller a request from notebook `notebook_id`'s socket acts as: its owner, read
    /// from the store for each request (a deleted user acts no more), as a user.
    /// `Ok(None)`: the owner is gone.
    pub async fn notebook_owner(
        &self,
        owner_id: &str,
        notebook_id: &str,
    ) -> Result<Option<NotebookCaller>, Error> {
        let mut conn = self.store.pool.acquire().await?;
        Ok(users::user_by_id(&mut conn, owner_id)
            .await?
            .map(|u| NotebookCaller {
                principal: Principal {
                    user_id: u.id,
                    name: u.name,
                    role: Role::User,
                    token_id: format!("notebook:{notebook_id}"),
                },
            }))
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
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, Error> {
        Ok(self
            .authenticate_shared(headers)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// As [`Self::authenticate`], without copying the cached principal.
    pub async fn authenticate_shared(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Error> {
        let Some(presented) = self.presented(headers) else {
            return Ok(None);
        };
        match self.resolve_shared(presented.secret).await? {
            Some(p) => Ok(Some(p)),
            None => Err(Error::unauthenticated(
                "the token or session is not valid (revoked, expired or mistyped)",
            )),
        }
    }

    /// The bearer token, else the console's session cookie.
    pub fn presented<'a>(&self, headers: &'a HeaderMap) -> Option<Presented<'a>> {
        presented_secret(headers, self.jar.session())
    }

    /// The console's session cookie, if the request carries one.
    pub fn session_cookie<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie_values(headers, self.jar.session()).next()
    }

    /// Who a notebook host's request comes from: a notebook-host cookie made for notebook
    /// `id`, resolved to the console session (or token) it was made from, which must still be
    /// valid and the same user's. `None`: no such cookie (the browser goes to the console for
    /// a ticket). Other notebooks' cookies, tossed in by a page on a sibling host, are skipped.
    pub async fn authenticate_notebook_host(
        &self,
        headers: &HeaderMap,
        id: &str,
    ) -> Result<Option<Arc<Principal>>, Error> {
        for value in cookie_values(headers, self.jar.notebook()) {
            let Some(session) = self.logins.session(value, id) else {
                continue;
            };
            match self.resolve_digest(session.parent).await? {
                Some(p) if p.user_id == session.user_id => return Ok(Some(p)),
                _ => self.logins.end_session(value),
            }
        }
        Ok(None)
    }
}

/// The bearer token, else the cookie called `session_cookie`.
pub fn presented_secret<'a>(
    headers: &'a HeaderMap,
    session_cookie: &'a str,
) -> Option<Presented<'a>> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(Presented {
                secret: t.trim(),
                via: Via::Bearer,
            });
        }
    }
    cookie_values(headers, session_cookie)
        .next()
        .map(|secret| Presented {
            secret,
            via: Via::Cookie,
        })
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
        fn secret(h: &HeaderMap) -> Option<(&str, Via)> {
            presented_secret(h, CookieJar::new(false).session()).map(|p| (p.secret, p.via))
        }
        let mut h = HeaderMap::new();
        assert_eq!(secret(&h), None);
        h.insert(
            http::header::COOKIE,
            "a=1; atelier_session=ats_x; b=2".parse().unwrap(),
        );
        assert_eq!(secret(&h), Some(("ats_x", Via::Cookie)));
        // Over https only the prefixed name counts: a plain one may have been tossed in by a
        // sibling host.
        assert_eq!(
            presented_secret(&h, CookieJar::new(true).session()).map(|p| p.secret),
            None
        );
        h.insert(http::header::AUTHORIZATION, "Bearer atl_y".parse().unwrap());
        assert_eq!(secret(&h), Some(("atl_y", Via::Bearer)));
    }

    #[test]
    fn cookies_by_name() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "atelier_nb=a; x=1".parse().unwrap());
        h.append(http::header::COOKIE, "atelier_nb=b".parse().unwrap());
        assert_eq!(
            cookie_values(&h, "atelier_nb").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(is_gateway_cookie("atelier_session"));
        assert!(is_gateway_cookie("__Host-atelier_nb"));
        assert!(!is_gateway_cookie("_xsrf"));
        let secure = CookieJar::new(true);
        assert_eq!(
            secure.set(secure.session(), "v", 60),
            "__Host-atelier_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let plain = CookieJar::new(false);
        assert_eq!(
            plain.set(plain.notebook(), "v", 0),
            "atelier_nb=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
