//! Failed SSH logins before authentication: counted per client address in fixed windows,
//! throttled, and written to the audit log in aggregate, so a client hammering wrong keys or
//! unknown users costs neither CPU for key exchanges nor one audit row per attempt.
//!
//! ```text
//! accept ─► admit(peer)?  over MAX_FAILURES in its window ─► closed before the handshake
//! refusal ─► failed(peer, reason, user)
//!   first (peer, reason) of the window ─► audit row now (with the user and notebook)
//!   later ones ─► counted ─► one row per (peer, reason) when the window ends: "N more times"
//! ```
//!
//! IPv6 clients are counted per /64, the block one host usually has.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::ssh::login::Refusal;
use crate::store::Store;
use crate::store::audit::{self, Action, Target};

/// One counting window per client address. A minute: a scanner's burst falls into one or
/// two windows (a few rows), and someone behind the same address as a misbehaving client
/// waits at most this long.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failed logins per address and window before its new connections are closed unanswered.
/// A person mistyping a notebook name, or a client offering each of several keys over a few
/// connections, stays far below; a client guessing keys or names gets 20 tries a minute
/// instead of as many as the CPU allows.
pub const MAX_FAILURES: u32 = 20;
/// Addresses tracked at once (a few hundred bytes each). Beyond, failures from new
/// addresses are counted together (never throttled), so many addresses cannot grow memory
/// or the audit log without bound.
pub const MAX_PEERS: usize = 10_000;
/// User names kept per summary row, as examples of what was tried.
const NAMES_KEPT: usize = 5;
/// How often ended windows are written to the audit log.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// A client address as counted: IPv4 as is, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(ip: IpAddr) -> Peer {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Peer(IpAddr::V6(Ipv6Addr::from(bits)))
                }
            },
            v4 => Peer(v4),
        }
    }

    /// Where failures from addresses beyond [`MAX_PEERS`] are counted.
    const OTHERS: Peer = Peer(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            _ if *self == Peer::OTHERS => f.write_str("other addresses"),
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What to do about one failure (or one throttled connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first of its (address, reason) in the window: write its audit row now.
    Record,
    /// Counted into the window's summary row.
    Counted,
}

/// One audit row for the failures of a window after the first: `more` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub peer: Peer,
    pub refusal: Refusal,
    pub more: u64,
    pub users: Vec<String>,
}

impl Summary {
    pub fn detail(&self) -> String {
        let mut d = format!(
            "ssh from {}: {}: {} more times in {} s",
            self.peer,
            self.refusal.as_str(),
            self.more,
            WINDOW.as_secs()
        );
        if !self.users.is_empty() {
            d.push_str(&format!(" (users tried: {})", self.users.join(", ")));
        }
        d
    }
}

#[derive(Default)]
pub struct Failures {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    windows: HashMap<Peer, Window>,
    /// Summaries of windows that ended, not yet written.
    ended: Vec<Summary>,
}

struct Window {
    started: Instant,
    failures: u32,
    tallies: HashMap<Refusal, Tally>,
}

#[derive(Default)]
struct Tally {
    more: u64,
    users: Vec<String>,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            failures: 0,
            tallies: HashMap::new(),
        }
    }

    fn over(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= WINDOW
    }

    fn count(&mut self, refusal: Refusal, user: Option<&str>) -> Verdict {
        let verdict = if self.tallies.contains_key(&refusal) {
            Verdict::Counted
        } else {
            Verdict::Record
        };
        let tally = self.tallies.entry(refusal).or_default();
        if verdict == Verdict::Counted {
            tally.more += 1;
            if let Some(u) = user
                && tally.users.len() < NAMES_KEPT
                && !tally.users.iter().any(|x| x == u)
            {
                tally.users.push(u.to_owned());
            }
        }
        verdict
    }

    fn summaries(self, peer: Peer) -> impl Iterator<Item = Summary> {
        self.tallies
            .into_iter()
            .filter(|(_, t)| t.more > 0)
            .map(move |(refusal, t)| Summary {
                peer,
                refusal,
                more: t.more,
                users: t.users,
            })
    }
}

impl Table {
    /// The current window of `peer`, a new one if its last ended (summarised), or the
    /// shared one of untracked addresses when the table is full.
    fn window(&mut self, peer: Peer, now: Instant) -> (&mut Window, Peer) {
        if let Some(w) = self.windows.get(&peer)
            && w.over(now)
            && let Some(old) = self.windows.remove(&peer)
        {
            self.ended.extend(old.summaries(peer));
        }
        let peer = if self.windows.contains_key(&peer) || self.windows.len() < MAX_PEERS {
            peer
        } else {
            self.end_windows(now);
            if self.windows.len() < MAX_PEERS {
                peer
            } else {
                Peer::OTHERS
            }
        };
        (
            self.windows.entry(peer).or_insert_with(|| Window::new(now)),
            peer,
        )
    }

    fn end_windows(&mut self, now: Instant) {
        let over: Vec<Peer> = self
            .windows
            .iter()
            .filter(|(_, w)| w.over(now))
            .map(|(p, _)| *p)
            .collect();
        for p in over {
            if let Some(w) = self.windows.remove(&p) {
                self.ended.extend(w.summaries(p));
            }
        }
    }
}

impl Failures {
    pub fn new() -> Failures {
        Failures::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    }

    /// At accept: `None` lets the connection in; `Some` means it is closed unanswered (the
    /// address failed too often in its window), and whether to record that now.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Option<Verdict> {
        let peer = Peer::of(ip);
        self.with(|t| {
            let w = t.windows.get_mut(&peer)?;
            if w.over(now) || w.failures < MAX_FAILURES {
                return None;
            }
            Some(w.count(Refusal::Throttled, None))
        })
    }

    /// A refused login (or a connection refused at accept, such as by a whitelist).
    pub fn failed(&self, ip: IpAddr, refusal: Refusal, user: &str, now: Instant) -> Verdict {
        self.with(|t| {
            let (w, _) = t.window(Peer::of(ip), now);
            w.failures = w.failures.saturating_add(1);
            w.count(refusal, Some(user))
        })
    }

    /// Summaries of the windows that ended by `now`.
    pub fn due(&self, now: Instant) -> Vec<Summary> {
        self.with(|t| {
            t.end_windows(now);
            std::mem::take(&mut t.ended)
        })
    }

    /// Every summary, ended or not (at shutdown).
    pub fn drain(&self) -> Vec<Summary> {
        self.with(|t| {
            let windows = std::mem::take(&mut t.windows);
            let mut out = std::mem::take(&mut t.ended);
            for (p, w) in windows {
                out.extend(w.summaries(p));
            }
            out
        })
    }
}

/// Writes summaries as windows end, and what is left at shutdown.
pub async fn flush_loop(store: Store, failures: Arc<Failures>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => write(&store, failures.due(Instant::now())).await,
        }
    }
    write(&store, failures.drain()).await;
}

async fn write(store: &Store, summaries: Vec<Summary>) {
    if summaries.is_empty() {
        return;
    }
    let result = async {
        let mut tx = store.write().await?;
        for s in &summaries {
            let peer = s.peer.to_string();
            audit::record(
                &mut tx,
                "-",
                Action::SshLoginRefused,
                Target {
                    kind: "peer",
                    id: &peer,
                    name: &peer,
                },
                "refused",
                Some(&s.detail()),
            )
            .await?;
        }
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, rows = summaries.len(), "writing SSH failure summaries to the audit log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_counted_per_host() {
        assert_eq!(Peer::of(ip("10.1.2.3")).to_string(), "10.1.2.3");
        assert_eq!(
            Peer::of(ip("2001:db8:1:2:aaaa::1")),
            Peer::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            Peer::of(ip("2001:db8:1:2::1")),
            Peer::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Peer::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(Peer::of(ip("::ffff:10.0.0.1")), Peer::of(ip("10.0.0.1")));
    }

    #[test]
    fn one_row_per_address_and_reason_per_window_with_the_count() {
        let f = Failures::new();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        assert_eq!(f.failed(a, Refusal::UnknownKey, "dev", t0), Verdict::Record);
        for i in 0..5 {
            let user = format!("u{i}");
            assert_eq!(
                f.failed(a, Refusal::UnknownKey, &user, t0),
                Verdict::Counted
            );
        }
        assert_eq!(
            f.failed(a, Refusal::UnknownNotebook, "x", t0),
            Verdict::Record
        );
        assert_eq!(f.failed(b, Refusal::UnknownKey, "dev", t0), Verdict::Record);
        assert!(
            f.due(t0 + WINDOW / 2).is_empty(),
            "the window is still open"
        );
        let due = f.due(t0 + WINDOW);
        assert_eq!(
            due,
            vec![Summary {
                peer: Peer::of(a),
                refusal: Refusal::UnknownKey,
                more: 5,
                users: (0..NAMES_KEPT).map(|i| format!("u{i}")).collect(),
            }]
        );
        assert!(
            due[0].detail().contains(": 5 more times in 60 s"),
            "{}",
            due[0].detail()
        );
        assert!(f.due(t0 + WINDOW * 2).is_empty(), "written once");
        // A new window records its first failure again.
        assert_eq!(
            f.failed(a, Refusal::UnknownKey, "dev", t0 + WINDOW),
            Verdict::Record
        );
    }

    #[test]
    fn an_address_over_the_limit_is_throttled_until_its_window_ends() {
        let f = Failures::new();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..MAX_FAILURES {
            assert_eq!(f.admit(a, t0), None);
            f.failed(a, Refusal::KeyNotAccepted, "dev", t0);
        }
        assert_eq!(f.admit(a, t0), Some(Verdict::Record));
        assert_eq!(f.admit(a, t0), Some(Verdict::Counted));
        assert_eq!(
            f.admit(a, t0 + WINDOW - Duration::from_millis(1)),
            Some(Verdict::Counted)
        );
        // Other addresses are not affected.
        assert_eq!(f.admit(ip("10.0.0.2"), t0), None);
        // The window ends: admitted again, and the summaries say how many.
        assert_eq!(f.admit(a, t0 + WINDOW), None);
        let mut due = f.due(t0 + WINDOW);
        due.sort_by_key(|s| s.more);
        let counts: Vec<(Refusal, u64)> = due.iter().map(|s| (s.refusal, s.more)).collect();
        assert_eq!(
            counts,
            vec![
                (Refusal::Throttled, 2),
                (Refusal::KeyNotAccepted, u64::from(MAX_FAILURES) - 1)
            ]
        );
    }

    #[test]
    fn a_window_that_rolls_over_is_summarised_not_lost() {
        let f = Failures::new();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        f.failed(a, Refusal::UnknownKey, "dev", t0);
        f.failed(a, Refusal::UnknownKey, "dev", t0);
        // The next failure comes after the window, before any flush.
        assert_eq!(
            f.failed(a, Refusal::UnknownKey, "dev", t0 + WINDOW),
            Verdict::Record
        );
        f.failed(a, Refusal::UnknownKey, "dev", t0 + WINDOW);
        let due = f.due(t0 + WINDOW);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].more, 1);
        let left = f.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].more, 1);
        assert!(f.drain().is_empty());
    }

    #[test]
    fn many_addresses_share_one_bucket_beyond_the_limit() {
        let f = Failures::new();
        let t0 = Instant::now();
        for i in 0..MAX_PEERS as u32 {
            f.failed(
                IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()),
                Refusal::UnknownKey,
                "x",
                t0,
            );
        }
        let over = |i: u32| IpAddr::from((0x0b00_0000u32 + i).to_be_bytes());
        assert_eq!(
            f.failed(over(0), Refusal::UnknownKey, "x", t0),
            Verdict::Record
        );
        for i in 1..100 {
            assert_eq!(
                f.failed(over(i), Refusal::UnknownKey, "x", t0),
                Verdict::Counted
            );
            // Untracked addresses are never throttled.
            assert_eq!(f.admit(over(i), t0), None);
        }
        assert_eq!(f.with(|t| t.windows.len()), MAX_PEERS + 1);
        let others: Vec<Summary> = f
            .drain()
            .into_iter()
            .filter(|s| s.peer == Peer::OTHERS)
            .collect();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].more, 99);
        assert!(others[0].detail().starts_with("ssh from other addresses:"));
        // Once windows end, new addresses get windows of their own again.
        assert_eq!(
            f.failed(over(500), Refusal::UnknownKey, "x", t0 + WINDOW),
            Verdict::Record
        );
        assert!(f.with(|t| t.windows.contains_key(&Peer::of(over(500)))));
    }
}
