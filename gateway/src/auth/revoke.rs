//! Prompt revocation of long-lived connections. A proxied WebSocket (a kernel, a terminal)
//! or an SSH connection is authenticated once, then lives for hours; without this, revoking
//! what let it in would leave it open. Each such connection registers the [`Subject`]s it
//! depends on and watches a [`Watch`]; every revocation point (a token deleted, a logout, a
//! key pair removed from a notebook or deleted, a notebook stopped or deleted) calls
//! [`Revocations::revoke`], which cancels the watches of every connection that depends on the
//! subject, at once.
//!
//! ```text
//! authenticate (since) ──► connection opens ──► register(subjects, since) ─┐
//! API: DELETE token, logout, stop, detach key ──► revoke(subject) ─────────┴─► watch fires
//!                                                                              ─► connection closed
//! ```
//!
//! A revocation can land between a connection's credential check and its registration. So
//! revoked subjects are remembered for a while ([`REMEMBER`]) with the time of revocation, and
//! a registration whose check began (`since`) before a revocation of one of its subjects is
//! cancelled at once. The authenticator's cache uses the same record, so a credential read
//! from the store just before its revocation is not cached after it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a revocation is remembered for connections that were being authenticated while
/// it happened. A connection registers within a request's lifetime of its check (an upgrade
/// waits at most for the notebook's answer, well under a minute); ten minutes is ample, and
/// a registration older than that is refused rather than trusted.
pub const REMEMBER: Duration = Duration::from_secs(600);

/// What a connection depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A user (deleted: everything of theirs goes).
    User(String),
    /// An API token or a browser session (`Principal::token_id`).
    Token(String),
    /// A notebook (stopped or deleted).
    Notebook(String),
    /// A key pair (deleted).
    KeyPair(String),
    /// A key pair on one notebook (removed from its SSH settings): `(notebook, key pair)`.
    NotebookKeyPair(String, String),
}

/// Why a connection was cut; told to SSH clients in the disconnect message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TokenRevoked,
    UserDeleted,
    NotebookStopped,
    KeyPairRemoved,
    /// Registered too long after its credential check to trust it.
    Stale,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenRevoked => "the token or browser session was revoked",
            Reason::UserDeleted => "the user was deleted",
            Reason::NotebookStopped => "the notebook stopped",
            Reason::KeyPairRemoved => "the key pair was removed from the notebook",
            Reason::Stale => "the login is too old; connect again",
        }
    }
}

/// The receiving end a connection selects on: cancelled (with a reason) when something it
/// depends on is revoked. Cheap to clone.
#[derive(Clone, Default)]
pub struct Watch {
    token: CancellationToken,
    reason: Arc<OnceLock<Reason>>,
}

impl Watch {
    pub fn new() -> Watch {
        Watch::default()
    }

    /// Waits until revoked; the reason.
    pub async fn revoked(&self) -> Reason {
        self.token.cancelled().await;
        self.reason().unwrap_or(Reason::Stale)
    }

    pub fn is_revoked(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason.get().copied()
    }

    fn fire(&self, reason: Reason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

/// The registry of live connections by subject; one per gateway, cheap to clone.
#[derive(Clone, Default)]
pub struct Revocations(Arc<Mutex<Table>>);

#[derive(Default)]
struct Table {
    next: u64,
    live: HashMap<u64, (Watch, Vec<Subject>)>,
    by_subject: HashMap<Subject, HashSet<u64>>,
    /// Recent revocations: when, and why.
    revoked: HashMap<Subject, (Instant, Reason)>,
}

/// A connection's place in the registry; dropping it (the connection ended) removes it.
pub struct Registration {
    id: u64,
    table: Revocations,
    watch: Watch,
}

impl Registration {
    pub fn watch(&self) -> &Watch {
        &self.watch
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.with(|t| {
            if let Some((_, subjects)) = t.live.remove(&self.id) {
                for s in subjects {
                    if let Some(ids) = t.by_subject.get_mut(&s) {
                        ids.remove(&self.id);
                        if ids.is_empty() {
                            t.by_subject.remove(&s);
                        }
                    }
                }
            }
        });
    }
}

impl Revocations {
    pub fn new() -> Revocations {
        Revocations::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    }

    /// Registers a connection whose credentials were checked from `since` on: `watch` fires
    /// when one of `subjects` is revoked (at once, if one was revoked since then).
    pub fn register(&self, watch: Watch, subjects: Vec<Subject>, since: Instant) -> Registration {
        self.register_at(watch, subjects, since, Instant::now())
    }

    fn register_at(
        &self,
        watch: Watch,
        subjects: Vec<Subject>,
        since: Instant,
        now: Instant,
    ) -> Registration {
        let id = self.with(|t| {
            let id = t.next;
            t.next += 1;
            let missed = if now.saturating_duration_since(since) > REMEMBER {
                Some(Reason::Stale)
            } else {
                subjects.iter().find_map(|s| {
                    t.revoked
                        .get(s)
                        .filter(|(at, _)| *at >= since)
                        .map(|(_, why)| *why)
                })
            };
            if let Some(why) = missed {
                watch.fire(why);
            }
            for s in &subjects {
                t.by_subject.entry(s.clone()).or_default().insert(id);
            }
            t.live.insert(id, (watch.clone(), subjects));
            id
        });
        Registration {
            id,
            table: self.clone(),
            watch,
        }
    }

    /// Cuts every connection that depends on `subject`; how many.
    pub fn revoke(&self, subject: Subject, why: Reason) -> usize {
        self.revoke_at(subject, why, Instant::now())
    }

    fn revoke_at(&self, subject: Subject, why: Reason, now: Instant) -> usize {
        let watches: Vec<Watch> = self.with(|t| {
            t.revoked
                .retain(|_, (at, _)| now.saturating_duration_since(*at) <= REMEMBER);
            t.revoked.insert(subject.clone(), (now, why));
            t.by_subject
                .get(&subject)
                .into_iter()
                .flatten()
                .filter_map(|id| t.live.get(id).map(|(w, _)| w.clone()))
                .collect()
        });
        for w in &watches {
            w.fire(why);
        }
        if !watches.is_empty() {
            tracing::info!(
                ?subject,
                reason = why.as_str(),
                connections = watches.len(),
                "connections cut"
            );
        }
        watches.len()
    }

    /// Whether one of `subjects` was revoked at or after `since` (a check that began then
    /// may have read it before the revocation).
    pub fn revoked_since(&self, subjects: &[Subject], since: Instant) -> bool {
        self.with(|t| {
            subjects
                .iter()
                .any(|s| t.revoked.get(s).is_some_and(|(at, _)| *at >= since))
        })
    }

    /// Connections registered now (for tests and diagnostics).
    pub fn live(&self) -> usize {
        self.with(|t| t.live.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> Subject {
        Subject::Token(id.into())
    }

    #[test]
    fn revoking_a_subject_cuts_exactly_the_connections_that_depend_on_it() {
        let r = Revocations::new();
        let t0 = Instant::now();
        let a = r.register_at(
            Watch::new(),
            vec![token("t1"), Subject::User("u".into())],
            t0,
            t0,
        );
        let b = r.register_at(
            Watch::new(),
            vec![token("t2"), Subject::User("u".into())],
            t0,
            t0,
        );
        let c = r.register_at(Watch::new(), vec![Subject::Notebook("n".into())], t0, t0);
        assert_eq!(r.revoke_at(token("t1"), Reason::TokenRevoked, t0), 1);
        assert!(a.watch().is_revoked());
        assert_eq!(a.watch().reason(), Some(Reason::TokenRevoked));
        assert!(!b.watch().is_revoked() && !c.watch().is_revoked());
        assert_eq!(
            r.revoke_at(Subject::User("u".into()), Reason::UserDeleted, t0),
            2
        );
        assert!(b.watch().is_revoked());
        // The first reason stays.
        assert_eq!(a.watch().reason(), Some(Reason::TokenRevoked));
        assert!(!c.watch().is_revoked());
        // Unrelated subjects cut nothing.
        assert_eq!(
            r.revoke_at(
                Subject::NotebookKeyPair("n".into(), "k".into()),
                Reason::KeyPairRemoved,
                t0
            ),
            0
        );
        assert!(!c.watch().is_revoked());
    }

    #[test]
    fn a_dropped_registration_leaves_nothing_behind() {
        let r = Revocations::new();
        let t0 = Instant::now();
        let a = r.register_at(Watch::new(), vec![token("t1")], t0, t0);
        assert_eq!(r.live(), 1);
        drop(a);
        assert_eq!(r.live(), 0);
        assert!(r.with(|t| t.by_subject.is_empty()));
        assert_eq!(r.revoke_at(token("t1"), Reason::TokenRevoked, t0), 0);
    }

    #[test]
    fn a_revocation_during_the_credential_check_is_not_missed() {
        let r = Revocations::new();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // Revoked at 10 s; a check that began at 9 s registers at 11 s: cut at once.
        r.revoke_at(token("t1"), Reason::TokenRevoked, s(10));
        let late = r.register_at(Watch::new(), vec![token("t1")], s(9), s(11));
        assert_eq!(late.watch().reason(), Some(Reason::TokenRevoked));
        assert!(r.revoked_since(&[token("t1")], s(9)));
        // A check that began after the revocation saw it in the store: not affected.
        let after = r.register_at(Watch::new(), vec![token("t1")], s(12), s(12));
        assert!(!after.watch().is_revoked());
        assert!(!r.revoked_since(&[token("t1")], s(12)));
        // A registration long after its check is not trusted.
        let stale = r.register_at(Watch::new(), vec![token("t9")], s(12), s(13) + REMEMBER);
        assert_eq!(stale.watch().reason(), Some(Reason::Stale));
        // Old revocations are forgotten once another one comes.
        r.revoke_at(token("t2"), Reason::TokenRevoked, s(20) + REMEMBER);
        assert!(r.with(|t| !t.revoked.contains_key(&token("t1"))));
    }

    #[tokio::test]
    async fn a_watch_wakes_its_waiter() {
        let r = Revocations::new();
        let reg = r.register(
            Watch::new(),
            vec![Subject::Notebook("n".into())],
            Instant::now(),
        );
        let w = reg.watch().clone();
        let waiter = tokio::spawn(async move { w.revoked().await });
        r.revoke(Subject::Notebook("n".into()), Reason::NotebookStopped);
        assert_eq!(waiter.await.unwrap(), Reason::NotebookStopped);
    }
}
