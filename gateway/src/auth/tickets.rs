//! Logging a browser in on a notebook's own host (`{id}.<notebook domain>`).
//!
//! ```text
//! console (session cookie) ── GET /v1/notebooks/{id}/open ──► ticket (one use, 60 s)
//!   └─ 303 ─► {id}.nb.host/?ticket=… ──► notebook-host session (cookie on that host only)
//!                                           └─ each request: parent credential still valid?
//! ```
//!
//! A ticket and a notebook-host session remember the notebook they were made for, the user,
//! and the SHA-256 of the credential they came from (the console session, or an API token).
//! A session is good only on its notebook's host and only while that parent credential
//! resolves to the same user, so logging out or revoking the parent ends it too, and the
//! [`Principal`](super::Principal) it yields is the parent's (same `token_id`).
//!
//! Both live in memory: they are short-lived or cheap to make again, and a gateway restart
//! just sends the browser through the console for a new ticket. Secrets are kept as hashes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{digest, new_secret};

/// How long a ticket may wait to be exchanged: one redirect's worth, with room for a slow
/// machine.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Tickets not yet exchanged, all users together, and per parent credential: a browser uses
/// one at a time; the bound keeps a script that mints in a loop from filling memory.
const MAX_TICKETS: usize = 10_000;
const MAX_TICKETS_PER_PARENT: usize = 16;
/// Notebook-host sessions, all together and per parent credential (one per notebook opened
/// in a browser; a parent's oldest goes first).
const MAX_SESSIONS: usize = 100_000;
const MAX_SESSIONS_PER_PARENT: usize = 64;

/// What a ticket or a notebook-host session stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub notebook_id: String,
    pub user_id: String,
    /// SHA-256 of the credential it came from.
    pub parent: [u8; 32],
}

#[derive(Debug)]
struct Entry {
    grant: Grant,
    /// Where the browser goes after the exchange (tickets only).
    next: String,
    made: Instant,
    expires: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum MintError {
    /// Too many tickets or sessions in memory; try again shortly.
    Full,
}

/// Tickets and notebook-host sessions.
pub struct NotebookLogins {
    session_lifetime: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// SHA-256 of the ticket → entry.
    tickets: HashMap<[u8; 32], Entry>,
    /// SHA-256 of the cookie's value → entry.
    sessions: HashMap<[u8; 32], Entry>,
}

impl NotebookLogins {
    pub fn new(session_lifetime: Duration) -> Self {
        NotebookLogins {
            session_lifetime,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent (each change is
        // one insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new ticket for `grant`, to be exchanged on the notebook's host within
    /// [`TICKET_LIFETIME`]; the browser lands on `next` (a path on that host).
    pub fn mint_ticket(&self, grant: Grant, next: String) -> Result<String, MintError> {
        self.mint_ticket_at(grant, next, Instant::now())
    }

    fn mint_ticket_at(
        &self,
        grant: Grant,
        next: String,
        now: Instant,
    ) -> Result<String, MintError> {
        let ticket = new_secret("atk_");
        let entry = Entry {
            grant,
            next,
            made: now,
            expires: now + TICKET_LIFETIME,
        };
        let mut inner = self.lock();
        insert_bounded(
            &mut inner.tickets,
            digest(&ticket),
            entry,
            now,
            MAX_TICKETS,
            MAX_TICKETS_PER_PARENT,
        )?;
        Ok(ticket)
    }

    /// Exchanges a ticket on notebook `id`'s host for a new session there: the cookie's
    /// value, the grant and where to go. A ticket works once, whatever the outcome; one made
    /// for another notebook, expired or unknown gives `None`.
    pub fn redeem(&self, ticket: &str, id: &str) -> Option<(String, Grant, String)> {
        self.redeem_at(ticket, id, Instant::now())
    }

    fn redeem_at(&self, ticket: &str, id: &str, now: Instant) -> Option<(String, Grant, String)> {
        let mut inner = self.lock();
        let entry = inner.tickets.remove(&digest(ticket))?;
        if entry.expires <= now || entry.grant.notebook_id != id {
            return None;
        }
        let secret = new_secret("atn_");
        let session = Entry {
            grant: entry.grant.clone(),
            next: String::new(),
            made: now,
            expires: now + self.session_lifetime,
        };
        insert_bounded(
            &mut inner.sessions,
            digest(&secret),
            session,
            now,
            MAX_SESSIONS,
            MAX_SESSIONS_PER_PARENT,
        )
        .ok()?;
        Some((secret, entry.grant, entry.next))
    }

    /// The session a notebook-host cookie's value stands for, if it is one for notebook `id`
    /// and has not expired.
    pub fn session(&self, value: &str, id: &str) -> Option<Grant> {
        self.session_at(value, id, Instant::now())
    }

    fn session_at(&self, value: &str, id: &str, now: Instant) -> Option<Grant> {
        let key = digest(value);
        let mut inner = self.lock();
        let entry = inner.sessions.get(&key)?;
        if entry.expires <= now {
            inner.sessions.remove(&key);
            return None;
        }
        (entry.grant.notebook_id == id).then(|| entry.grant.clone())
    }

    /// Forgets a notebook-host session (its parent is gone).
    pub fn end_session(&self, value: &str) {
        self.lock().sessions.remove(&digest(value));
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.tickets.len(), inner.sessions.len())
    }
}

/// Inserts `entry`, first dropping expired entries when the map is full and the parent's
/// oldest when it holds `per_parent` already.
fn insert_bounded(
    map: &mut HashMap<[u8; 32], Entry>,
    key: [u8; 32],
    entry: Entry,
    now: Instant,
    max: usize,
    per_parent: usize,
) -> Result<(), MintError> {
    if map.len() >= max {
        map.retain(|_, e| e.expires > now);
    }
    let mut mine: Vec<([u8; 32], Instant)> = map
        .iter()
        .filter(|(_, e)| e.grant.parent == entry.grant.parent)
        .map(|(k, e)| (*k, e.made))
        .collect();
    if mine.len() >= per_parent {
        mine.sort_by_key(|(_, made)| *made);
        for (k, _) in &mine[..=mine.len() - per_parent] {
            map.remove(k);
        }
    }
    if map.len() >= max {
        return Err(MintError::Full);
    }
    map.insert(key, entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(nb: &str, user: &str, parent: u8) -> Grant {
        Grant {
            notebook_id: nb.into(),
            user_id: user.into(),
            parent: [parent; 32],
        }
    }

    #[test]
    fn a_ticket_works_once_on_its_own_notebook_only() {
        let logins = NotebookLogins::new(Duration::from_secs(3600));
        let t = logins
            .mint_ticket(grant("nb1", "alice", 1), "/nb/nb1/lab".into())
            .unwrap();
        assert!(t.starts_with("atk_"));
        let (cookie, g, next) = logins.redeem(&t, "nb1").expect("first use");
        assert_eq!(
            (g, next.as_str()),
            (grant("nb1", "alice", 1), "/nb/nb1/lab")
        );
        assert!(logins.redeem(&t, "nb1").is_none(), "second use");
        assert_eq!(
            logins.session(&cookie, "nb1"),
            Some(grant("nb1", "alice", 1))
        );
        assert_eq!(logins.session(&cookie, "nb2"), None);
        assert_eq!(logins.session(&t, "nb1"), None, "a ticket is no cookie");

        // Presented on another notebook's host, a ticket is refused and spent.
        let t = logins
            .mint_ticket(grant("nb1", "alice", 1), "/nb/nb1/lab".into())
            .unwrap();
        assert!(logins.redeem(&t, "nb2").is_none());
        assert!(logins.redeem(&t, "nb1").is_none());
        assert!(logins.redeem("atk_made-up", "nb1").is_none());
        logins.end_session(&cookie);
        assert_eq!(logins.session(&cookie, "nb1"), None);
    }

    #[test]
    fn tickets_and_sessions_expire() {
        let logins = NotebookLogins::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        let t = logins
            .mint_ticket_at(grant("nb1", "alice", 1), "/".into(), t0)
            .unwrap();
        assert!(
            logins
                .redeem_at(&t, "nb1", t0 + TICKET_LIFETIME + Duration::from_secs(1))
                .is_none()
        );
        let t = logins
            .mint_ticket_at(grant("nb1", "alice", 1), "/".into(), t0)
            .unwrap();
        let (cookie, _, _) = logins
            .redeem_at(&t, "nb1", t0 + Duration::from_secs(59))
            .unwrap();
        assert!(
            logins
                .session_at(&cookie, "nb1", t0 + Duration::from_secs(3000))
                .is_some()
        );
        assert!(
            logins
                .session_at(&cookie, "nb1", t0 + Duration::from_secs(3700))
                .is_none()
        );
        assert_eq!(
            logins.counts().1,
            0,
            "an expired session is dropped when seen"
        );
    }

    #[test]
    fn one_parent_cannot_fill_memory() {
        let logins = NotebookLogins::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        let mut first = None;
        for i in 0..(MAX_TICKETS_PER_PARENT + 5) {
            let t = logins
                .mint_ticket_at(
                    grant("nb1", "alice", 1),
                    "/".into(),
                    t0 + Duration::from_millis(i as u64),
                )
                .unwrap();
            first.get_or_insert(t);
        }
        assert_eq!(logins.counts().0, MAX_TICKETS_PER_PARENT);
        // The oldest went first.
        assert!(
            logins
                .redeem_at(first.as_deref().unwrap(), "nb1", t0)
                .is_none()
        );
        // Another parent is not affected.
        let other = logins
            .mint_ticket_at(grant("nb1", "alice", 2), "/".into(), t0)
            .unwrap();
        assert!(logins.redeem_at(&other, "nb1", t0).is_some());
    }

    #[test]
    fn a_full_table_refuses_after_dropping_what_expired() {
        let mut map = HashMap::new();
        let t0 = Instant::now();
        let entry = |parent: u8, expires: Instant| Entry {
            grant: grant("nb", "u", parent),
            next: String::new(),
            made: t0,
            expires,
        };
        insert_bounded(&mut map, [1; 32], entry(1, t0 + TICKET_LIFETIME), t0, 2, 10).unwrap();
        insert_bounded(&mut map, [2; 32], entry(2, t0 + TICKET_LIFETIME), t0, 2, 10).unwrap();
        assert_eq!(
            insert_bounded(&mut map, [3; 32], entry(3, t0 + TICKET_LIFETIME), t0, 2, 10),
            Err(MintError::Full)
        );
        let later = t0 + TICKET_LIFETIME + Duration::from_secs(1);
        insert_bounded(
            &mut map,
            [3; 32],
            entry(3, later + TICKET_LIFETIME),
            later,
            2,
            10,
        )
        .unwrap();
        assert_eq!(map.len(), 1);
    }
}
