//! Applications (spec/inference.md §1.4 AUTH-03/04, §2.10, §3.4): a user's named apps, each
//! with an AppKey and AppSecret made at create, up to 5 AppCodes, and the services (of the
//! same user) bound to it. A call that presents `X-Apig-AppCode: <code>` or
//! `apikey: <AppKey>` (and no token) is the app's: it may call the bound services that have
//! `app_auth` on, and runs as their owner.
//!
//! ```text
//! created (AppKey + AppSecret) → [AppCode added]* → bound ↔ unbound → reset (new secret) → deleted
//! call: SHA-256 of the presented code or key ─► cache | row by digest ─► opened sealed value
//!       compared in constant time ─► AppCaller (owner, bound service ids)
//! ```
//!
//! The AppKey alone authenticates (the seed's "simplified authentication"), so it is kept
//! and shown like the secret: at create and by `secret`, to the owner only. The AppSecret
//! signs calls with APIG's SDK-HMAC-SHA256 (`signing.rs`): [`Apps::signing_secret`] opens
//! it for the check, and it never travels.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::ServiceError;
use crate::auth::Principal;
use crate::cache::TtlCache;
use crate::secrets::SecretBox;
use crate::store::apps::{self as rows, AppRow};
use crate::store::audit::{self, Action, Target};
use crate::store::{Store, services as service_rows};

/// AppCodes one app may have (the seed's console allows 5).
pub const MAX_CODES: usize = 5;
/// Apps one user may have: a bound on rows a user makes, far above any real use.
pub const MAX_APPS: i64 = 100;
/// How long a resolved app credential is trusted without reading the store again. Every
/// change made through this gateway (unbind, delete, code deleted) clears the cache at once;
/// the TTL bounds what only the database saw (a user deleted).
const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_CAPACITY: usize = 10_000;

/// `POST /v1/apps`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// 1-64 of `A-Z a-z 0-9 _ -`; `app_` and 8 random characters when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// An app as listed and shown: no credentials.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    /// Its AppCodes, without their values (`secret` shows them).
    pub app_codes: Vec<CodeView>,
    /// The services it may call.
    pub services: Vec<BoundService>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CodeView {
    pub id: String,
    /// The code itself: only where credentials are shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoundService {
    pub id: String,
    pub name: String,
}

/// An app's credentials, as its owner sees them (create, `secret`, `reset`).
#[derive(Debug, Clone, Serialize)]
pub struct AppCredentials {
    pub id: String,
    pub name: String,
    pub app_key: String,
    pub app_secret: String,
    pub app_codes: Vec<CodeView>,
}

/// An app that authenticated a call.
#[derive(Debug, Clone)]
pub struct AppCaller {
    pub app_id: String,
    pub app_name: String,
    pub owner_id: String,
    pub owner_name: String,
    /// The ids of the services bound to it.
    pub services: HashSet<String>,
}

impl AppCaller {
    pub fn bound(&self, service_id: &str) -> bool {
        self.services.contains(service_id)
    }
}

/// How an app presented itself.
#[derive(Debug, Clone, Copy)]
pub enum AppCredential<'a> {
    /// `X-Apig-AppCode`.
    Code(&'a str),
    /// `apikey`: the AppKey.
    Key(&'a str),
}

/// The applications.
#[derive(Clone)]
pub struct Apps {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    secrets: Arc<SecretBox>,
    /// SHA-256 of ("code:" | "key:") + the credential → the app.
    cache: TtlCache<[u8; 32], Arc<AppCaller>>,
    /// Creates and code additions one at a time: the limit checks and inserts cannot
    /// interleave.
    create: tokio::sync::Mutex<()>,
}

/// App names: 1-64 of `A-Z a-z 0-9 _ -`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("name: {name:?}; 1-64 of A-Z a-z 0-9 _ -"))
    }
}

/// `bytes` random bytes as lower-case hex.
fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest_hex(value: &str) -> String {
    crate::auth::hash_secret(value)
}

fn key_context(app_id: &str) -> String {
    format!("app:{app_id}:key")
}

fn secret_context(app_id: &str) -> String {
    format!("app:{app_id}:secret")
}

fn code_context(code_id: &str) -> String {
    format!("app-code:{code_id}")
}

fn target(a: &AppRow) -> Target<'_> {
    Target {
        kind: "app",
        id: &a.id,
        name: &a.name,
    }
}

impl Apps {
    pub fn new(store: Store, secrets: Arc<SecretBox>) -> Apps {
        Apps {
            inner: Arc::new(Inner {
                store,
                secrets,
                cache: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
                create: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Ends a change of app `a`: its audit row written and the transaction committed; the
    /// credential cache cleared (a binding, a code or the app itself may have gone).
    async fn done(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        who: &Principal,
        action: Action,
        a: &AppRow,
        detail: Option<&str>,
    ) -> Result<(), ServiceError> {
        audit::record(&mut tx, &who.name, action, target(a), "succeeded", detail).await?;
        tx.commit().await?;
        self.inner.cache.clear();
        Ok(())
    }

    /// Creates an app: its AppKey (128 random bits, 32 hex digits, as APIG's) and AppSecret
    /// (256 bits), shown in the answer.
    pub async fn create(
        &self,
        who: &Principal,
        req: CreateApp,
    ) -> Result<AppCredentials, ServiceError> {
        let name = match req.name {
            Some(n) => n,
            None => format!("app_{}", &random_hex(4)),
        };
        check_name(&name).map_err(ServiceError::Invalid)?;
        super::spec::check_description(&req.description).map_err(ServiceError::Invalid)?;
        let id = uuid::Uuid::new_v4().to_string();
        let app_key = Zeroizing::new(random_hex(16));
        let app_secret = Zeroizing::new(random_hex(32));
        let secrets = &self.inner.secrets;
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &name).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "you already have an app named {name:?}"
            )));
        }
        let count = rows::count_for_owner(&mut tx, &who.user_id).await?;
        if count >= MAX_APPS {
            return Err(ServiceError::Conflict(format!(
                "you have {count} apps, the most allowed ({MAX_APPS}); delete one first"
            )));
        }
        let now = crate::store::now();
        rows::insert(
            &mut tx,
            rows::NewApp {
                id: &id,
                owner_id: &who.user_id,
                name: &name,
                description: &req.description,
                key_digest: &digest_hex(&app_key),
                key_sealed: &secrets.seal(&app_key, &key_context(&id)),
                secret_sealed: &secrets.seal(&app_secret, &secret_context(&id)),
                now: &now,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateApp,
            Target {
                kind: "app",
                id: &id,
                name: &name,
            },
            "succeeded",
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(AppCredentials {
            id,
            name,
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            app_codes: Vec::new(),
        })
    }

    /// The caller's app `key` (its id or their app's name); another user's is "not found".
    async fn find(&self, who: &Principal, key: &str) -> Result<AppRow, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::by_key(&mut conn, &who.user_id, key)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("app {key} not found")))
    }

    async fn view(&self, a: AppRow) -> Result<AppView, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let codes = rows::codes(&mut conn, &a.id).await?;
        let services = rows::bound(&mut conn, &a.id).await?;
        Ok(AppView {
            app_codes: codes
                .into_iter()
                .map(|c| CodeView {
                    id: c.id,
                    code: None,
                    created_at: c.created_at,
                })
                .collect(),
            services: services
                .into_iter()
                .map(|s| BoundService {
                    id: s.id,
                    name: s.name,
                })
                .collect(),
            id: a.id,
            name: a.name,
            owner: a.owner,
            description: a.description,
            created_at: a.created_at,
            updated_at: a.updated_at,
        })
    }

    pub async fn list(&self, who: &Principal) -> Result<Vec<AppView>, ServiceError> {
        let all = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::list(&mut conn, &who.user_id).await?
        };
        let mut out = Vec::with_capacity(all.len());
        for a in all {
            out.push(self.view(a).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<AppView, ServiceError> {
        let a = self.find(who, key).await?;
        self.view(a).await
    }

    /// The app's credentials in plain text (the seed's "Query Plaintext"); audited.
    pub async fn secret(&self, who: &Principal, key: &str) -> Result<AppCredentials, ServiceError> {
        let a = self.find(who, key).await?;
        let shown = self.credentials(&a).await?;
        let tx = self.inner.store.write().await?;
        self.done(tx, who, Action::ViewAppSecret, &a, None).await?;
        Ok(shown)
    }

    async fn credentials(&self, a: &AppRow) -> Result<AppCredentials, ServiceError> {
        let secrets = &self.inner.secrets;
        let codes = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::codes(&mut conn, &a.id).await?
        };
        let mut app_codes = Vec::with_capacity(codes.len());
        for c in codes {
            let code = secrets.open(&c.sealed, &code_context(&c.id))?;
            app_codes.push(CodeView {
                id: c.id,
                code: Some(code.to_string()),
                created_at: c.created_at,
            });
        }
        Ok(AppCredentials {
            id: a.id.clone(),
            name: a.name.clone(),
            app_key: secrets
                .open(&a.key_sealed, &key_context(&a.id))?
                .to_string(),
            app_secret: secrets
                .open(&a.secret_sealed, &secret_context(&a.id))?
                .to_string(),
            app_codes,
        })
    }

    /// A new AppSecret (the AppKey and the codes stay).
    pub async fn reset(&self, who: &Principal, key: &str) -> Result<AppCredentials, ServiceError> {
        let a = self.find(who, key).await?;
        let secret = Zeroizing::new(random_hex(32));
        let mut tx = self.inner.store.write().await?;
        let sealed = self.inner.secrets.seal(&secret, &secret_context(&a.id));
        rows::set_secret(&mut tx, &a.id, &sealed, &crate::store::now()).await?;
        self.done(tx, who, Action::ResetAppSecret, &a, None).await?;
        let mut shown = self.credentials(&a).await?;
        shown.app_secret = secret.to_string();
        Ok(shown)
    }

    /// A new AppCode (256 random bits, 64 hex digits), shown in the answer.
    pub async fn add_code(&self, who: &Principal, key: &str) -> Result<CodeView, ServiceError> {
        let a = self.find(who, key).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let code = Zeroizing::new(random_hex(32));
        let now = crate::store::now();
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_id(&mut tx, &a.id).await?.is_none() {
            return Err(ServiceError::NotFound(format!("app {key} not found")));
        }
        let have = rows::codes(&mut tx, &a.id).await?.len();
        if have >= MAX_CODES {
            return Err(ServiceError::Conflict(format!(
                "app {} has {have} AppCodes, the most allowed ({MAX_CODES}); delete one first",
                a.name
            )));
        }
        let sealed = self.inner.secrets.seal(&code, &code_context(&id));
        rows::insert_code(&mut tx, &id, &a.id, &digest_hex(&code), &sealed, &now).await?;
        self.done(tx, who, Action::AddAppCode, &a, Some(&id))
            .await?;
        Ok(CodeView {
            id,
            code: Some(code.to_string()),
            created_at: now,
        })
    }

    pub async fn delete_code(
        &self,
        who: &Principal,
        key: &str,
        code_id: &str,
    ) -> Result<(), ServiceError> {
        let a = self.find(who, key).await?;
        let mut tx = self.inner.store.write().await?;
        if !rows::delete_code(&mut tx, &a.id, code_id).await? {
            return Err(ServiceError::NotFound(format!(
                "app {} has no AppCode {code_id}",
                a.name
            )));
        }
        self.done(tx, who, Action::DeleteAppCode, &a, Some(code_id))
            .await?;
        Ok(())
    }

    /// Deletes an app: its codes and bindings go with it; calls with its credentials are
    /// refused from now on.
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), ServiceError> {
        let a = self.find(who, key).await?;
        let mut tx = self.inner.store.write().await?;
        rows::delete(&mut tx, &a.id).await?;
        self.done(tx, who, Action::DeleteApp, &a, None).await?;
        Ok(())
    }

    /// The caller's service `key` (id or name); another user's is "not found", so that only
    /// the owner of both binds.
    async fn own_service(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<service_rows::ServiceRow, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        service_rows::by_key(&mut conn, &who.user_id, key)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("service {key} not found")))
    }

    /// Lets the app call the service (both the caller's).
    pub async fn bind(
        &self,
        who: &Principal,
        key: &str,
        service: &str,
    ) -> Result<AppView, ServiceError> {
        let a = self.find(who, key).await?;
        let s = self.own_service(who, service).await?;
        let mut tx = self.inner.store.write().await?;
        rows::bind(&mut tx, &a.id, &s.id, &crate::store::now()).await?;
        self.done(tx, who, Action::BindAppService, &a, Some(&s.id))
            .await?;
        self.get(who, &a.id).await
    }

    /// The app may no longer call the service.
    pub async fn unbind(
        &self,
        who: &Principal,
        key: &str,
        service: &str,
    ) -> Result<AppView, ServiceError> {
        let a = self.find(who, key).await?;
        let s = self.own_service(who, service).await?;
        let mut tx = self.inner.store.write().await?;
        if !rows::unbind(&mut tx, &a.id, &s.id).await? {
            return Err(ServiceError::NotFound(format!(
                "app {} is not bound to service {}",
                a.name, s.name
            )));
        }
        self.done(tx, who, Action::UnbindAppService, &a, Some(&s.id))
            .await?;
        self.get(who, &a.id).await
    }

    /// The app a call's credential belongs to, or none (unknown, or its app deleted).
    pub async fn resolve(
        &self,
        presented: AppCredential<'_>,
    ) -> Result<Option<Arc<AppCaller>>, ServiceError> {
        let (tag, value) = match presented {
            AppCredential::Code(v) => ("code:", v),
            AppCredential::Key(v) => ("key:", v),
        };
        // Far longer than any credential this gateway makes: not worth a lookup.
        if value.is_empty() || value.len() > 256 {
            return Ok(None);
        }
        let cache_key = crate::auth::digest(&format!("{tag}{value}"));
        if let Some(hit) = self.inner.cache.get(&cache_key) {
            return Ok(Some(hit));
        }
        let digest = digest_hex(value);
        let secrets = &self.inner.secrets;
        let mut conn = self.inner.store.pool.acquire().await?;
        let app = match presented {
            AppCredential::Code(_) => {
                let Some(c) = rows::code_by_digest(&mut conn, &digest).await? else {
                    return Ok(None);
                };
                let stored = secrets.open(&c.sealed, &code_context(&c.id))?;
                if !bool::from(stored.as_bytes().ct_eq(value.as_bytes())) {
                    return Ok(None);
                }
                rows::by_id(&mut conn, &c.app_id).await?
            }
            AppCredential::Key(_) => {
                let Some(a) = rows::by_key_digest(&mut conn, &digest).await? else {
                    return Ok(None);
                };
                let stored = secrets.open(&a.key_sealed, &key_context(&a.id))?;
                if !bool::from(stored.as_bytes().ct_eq(value.as_bytes())) {
                    return Ok(None);
                }
                Some(a)
            }
        };
        let Some(a) = app else {
            return Ok(None);
        };
        let services = rows::bound(&mut conn, &a.id)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let caller = Arc::new(AppCaller {
            app_id: a.id,
            app_name: a.name,
            owner_id: a.owner_id,
            owner_name: a.owner,
            services,
        });
        self.inner.cache.insert(cache_key, caller.clone());
        Ok(Some(caller))
    }
}

impl Apps {
    /// The AppSecret of `app_id`, for checking a signed call; `None` when the app is gone.
    pub async fn signing_secret(
        &self,
        app_id: &str,
    ) -> Result<Option<Zeroizing<String>>, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let Some(a) = rows::by_id(&mut conn, app_id).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.inner
                .secrets
                .open(&a.secret_sealed, &secret_context(&a.id))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_seed() {
        for ok in ["app_1a2b3c4d", "my-app", "A", &"a".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a b", "a/b", "app.1", &"a".repeat(65), "é"] {
            let e = check_name(bad).unwrap_err();
            assert!(e.starts_with("name:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn credentials_are_long_and_random() {
        let (a, b) = (random_hex(16), random_hex(16));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(random_hex(32).len(), 64);
    }
}
