//! Webhooks (spec/training.md §2.2 "Event Notification"): a resource's events POSTed as JSON
//! to a URL its owner gave, signed with HMAC-SHA256 under the owner's secret, retried with
//! backoff, durable across gateway restarts.
//!
//! ```text
//! an event, in the transaction of its status change ─► webhook_deliveries row (pending)
//! delivery loop (each second) ─► due rows ─► the URL's host resolved; every address must be
//!     public (unless webhooks.allow_private) and the connection pinned to it (no DNS
//!     rebinding, no redirects) ─► POST, 10 s ─► 2xx: delivered; else retried 1, 2, 4 … 300 s
//!     apart, given up (failed) after MAX_ATTEMPTS
//! ```
//!
//! A delivery carries `X-Atelier-Event`, `X-Atelier-Delivery` (its id, the same on every
//! retry), `X-Atelier-Timestamp` (Unix seconds) and `X-Atelier-Signature:
//! sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::secrets::SecretBox;
use crate::store::{Conn, Store};

/// Tries of one delivery before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
/// Deliveries sent per tick.
const BATCH: i64 = 16;
pub const MIN_SECRET: usize = 16;
pub const MAX_SECRET: usize = 256;

/// Where a resource's events go, as its spec keeps it (the secret sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub url: String,
    /// Sealed with the resource's id as context; never shown.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret: String,
    pub events: Vec<String>,
}

/// What a request gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub url: String,
    /// 16-256 characters; the receiver checks the signature with it.
    pub secret: String,
    /// Which events (default: all of `known`).
    #[serde(default)]
    pub events: Vec<String>,
}

/// Checks a request (`field` names it in refusals) and seals its secret for `subject_id`.
pub fn subscription(
    field: &str,
    req: &SubscriptionRequest,
    known: &[&str],
    secrets: &SecretBox,
    subject_id: &str,
) -> Result<Subscription, String> {
    check_url(&req.url).map_err(|e| format!("{field}.url: {e}"))?;
    let n = req.secret.chars().count();
    if !(MIN_SECRET..=MAX_SECRET).contains(&n) || req.secret.chars().any(char::is_control) {
        return Err(format!(
            "{field}.secret: {MIN_SECRET}-{MAX_SECRET} characters, no control characters (the receiver checks the HMAC-SHA256 signature with it)"
        ));
    }
    for e in &req.events {
        if !known.contains(&e.as_str()) {
            return Err(format!(
                "{field}.events: {:?} is not an event; the events are {}",
                e.chars().take(40).collect::<String>(),
                known.join(", ")
            ));
        }
    }
    let events = if req.events.is_empty() {
        known.iter().map(|e| e.to_string()).collect()
    } else {
        req.events.clone()
    };
    Ok(Subscription {
        url: req.url.trim().to_string(),
        secret: secrets.seal(&req.secret, subject_id),
        events,
    })
}

/// An http(s) URL with a host, no user info, at most 2,048 bytes. Its addresses are checked
/// when it is called (they may change).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    if url.len() > 2048 {
        return Err("at most 2048 bytes".into());
    }
    let u = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{}: only http and https URLs", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("no user or password in the URL; the signature says who sent it".into());
    }
    Ok(u)
}

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// carrier-grade NAT, unique-local, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Queues `event` for `sub` when it asked for it, in the caller's transaction.
pub async fn enqueue(
    tx: &mut Conn,
    subject_kind: &str,
    subject_id: &str,
    sub: &Subscription,
    event: &str,
    payload: &serde_json::Value,
) -> sqlx::Result<()> {
    if !sub.events.iter().any(|e| e == event) {
        return Ok(());
    }
    let now = crate::store::now();
    let body = serde_json::json!({
        "event": event,
        "time": now,
        subject_kind: payload,
    })
    .to_string();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, subject_kind, subject_id, url, secret, event, body, \
         status, attempts, next_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(subject_kind)
    .bind(subject_id)
    .bind(&sub.url)
    .bind(&sub.secret)
    .bind(event)
    .bind(body)
    .bind(&now)
    .execute(tx)
    .await?;
    Ok(())
}

/// A delivery as the API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub url: String,
    /// `pending`, `delivered`, `failed`.
    pub status: String,
    pub attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

pub async fn deliveries(conn: &mut Conn, subject_id: &str) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        "SELECT id, event, url, status, attempts, last_status, last_error, created_at, delivered_at \
         FROM webhook_deliveries WHERE subject_id = $1 ORDER BY created_at, rowid",
    )
    .bind(subject_id)
    .fetch_all(conn)
    .await
}

/// Drops a resource's deliveries (it is deleted).
pub async fn forget(conn: &mut Conn, subject_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM webhook_deliveries WHERE subject_id = $1 AND status <> 'pending'")
        .bind(subject_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Due {
    id: String,
    subject_id: String,
    url: String,
    secret: String,
    event: String,
    body: String,
    attempts: i64,
}

/// The sender.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    secrets: Arc<SecretBox>,
    allow_private: bool,
}

impl Webhooks {
    pub fn new(store: Store, secrets: Arc<SecretBox>, allow_private: bool) -> Webhooks {
        Webhooks {
            store,
            secrets,
            allow_private,
        }
    }

    /// Sends what is due each second until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "sending webhooks failed");
            }
        }
    }

    async fn send_due(&self) -> sqlx::Result<()> {
        let due: Vec<Due> = {
            let mut conn = self.store.pool.acquire().await?;
            sqlx::query_as(
                "SELECT id, subject_id, url, secret, event, body, attempts FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at LIMIT $2",
            )
            .bind(crate::store::now())
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?
        };
        for d in due {
            let outcome = self.send(&d).await;
            let attempts = d.attempts + 1;
            let now = time::OffsetDateTime::now_utc();
            let mut tx = self.store.write().await?;
            match outcome {
                Ok(status) => {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2, \
                         last_status = $3, last_error = NULL, delivered_at = $4 WHERE id = $1",
                    )
                    .bind(&d.id)
                    .bind(attempts)
                    .bind(i64::from(status))
                    .bind(crate::store::now())
                    .execute(&mut *tx)
                    .await?;
                }
                Err((status, why)) => {
                    let backoff = 2i64
                        .saturating_pow((attempts - 1).clamp(0, 20) as u32)
                        .min(300);
                    let next = crate::store::format_time(now + time::Duration::seconds(backoff));
                    let status_text = if attempts >= MAX_ATTEMPTS {
                        "failed"
                    } else {
                        "pending"
                    };
                    sqlx::query(
                        "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_status = $4, \
                         last_error = $5, next_at = $6 WHERE id = $1",
                    )
                    .bind(&d.id)
                    .bind(status_text)
                    .bind(attempts)
                    .bind(status.map(i64::from))
                    .bind(&why)
                    .bind(next)
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(delivery = %d.id, attempts, error = %why, "a webhook was not delivered");
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// One POST: `Ok(status)` on 2xx, else the status (when one came) and why.
    async fn send(&self, d: &Due) -> Result<u16, (Option<u16>, String)> {
        let fail = |s: Option<u16>, e: String| (s, e);
        let url = check_url(&d.url).map_err(|e| fail(None, e))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| fail(None, format!("resolving {host}: {e}")))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err(fail(None, format!("{host} has no address")));
        };
        if !self.allow_private
            && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip()))
        {
            return Err(fail(
                None,
                format!(
                    "{host} resolves to {}, which is not a public address (webhooks.allow_private)",
                    bad.ip()
                ),
            ));
        }
        let secret = self
            .secrets
            .open(&d.secret, &d.subject_id)
            .map_err(|e| fail(None, format!("the secret: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host.trim_matches(['[', ']']), addr)
            .build()
            .map_err(|e| fail(None, e.to_string()))?;
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = signature(secret.as_bytes(), ts, d.body.as_bytes());
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "atelier-webhooks")
            .header("x-atelier-event", &d.event)
            .header("x-atelier-delivery", &d.id)
            .header("x-atelier-timestamp", ts.to_string())
            .header("x-atelier-signature", sig)
            .body(d.body.clone())
            .send()
            .await
            .map_err(|e| fail(None, format!("{e}")))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            Ok(status)
        } else {
            Err(fail(
                Some(status),
                format!("the receiver answered {status}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_called_by_default() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_and_signatures() {
        assert!(check_url("https://example.com/hook").is_ok());
        for bad in [
            "ftp://x/",
            "https://user:pw@x/",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        // As Python's hmac.new(b"key", b'1700000000.{"event":"JobCompleted"}', sha256) gives it.
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"event":"JobCompleted"}"#),
            "sha256=39e3dc3f4b1d76bb2f9ac1f48c7062ef7fffcadbf193b6d1595625390eb0f37e"
        );
    }
}
