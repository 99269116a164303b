//! Who may log in where: the rules that turn an SSH user name and an offered public key into
//! one notebook, or a refusal.
//!
//! ```text
//! shared port:  offered key ─► holders (key pairs with its fingerprint)
//!                 none ─► UnknownKey   several users ─► KeyOfSeveralUsers
//!                 one user ─► that user's notebooks whose id or name is the SSH user name
//! own port:     user must be ma-user ─► the port's notebook
//!               ─► the notebook accepts the key? whitelist? SSH on? ─► Login
//! ```
//!
//! A public key belongs to one user (the API refuses a key another user holds), so at the
//! shared port the key decides whose notebooks the name is looked up among: whoever imports
//! someone else's public key cannot catch their logins, and a name never reaches another
//! user's notebook. A key that several users hold (a database from before the rule) is
//! refused there until all but one remove it. On a notebook's own port the port names the
//! notebook, and only the key pairs attached to it (its owner's) are accepted.

use std::net::IpAddr;

use crate::store::{self, keypairs, notebooks as rows};
use crate::whitelist;
use rows::{SshLookup, SshTarget};

/// The user name on a notebook's own port, as in the seed.
pub const MA_USER: &str = "ma-user";

/// Where the client connected.
#[derive(Debug, Clone, Copy)]
pub enum Door<'a> {
    /// `ATELIER_SSH_ADDR`: the user name picks the notebook.
    Shared,
    /// A notebook's own port (`ma-user`).
    Own(&'a str),
}

/// Why a login was refused; the text goes to the audit log, never to the client (which only
/// learns that its key was not accepted, so a notebook's existence is not revealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    UnknownKey,
    KeyOfSeveralUsers,
    UnknownNotebook,
    KeyNotAccepted,
    NotWhitelisted,
    SshDisabled,
    WrongUser,
    /// Too many failures from the client's address (`ssh::failures`).
    Throttled,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "the key is not registered by any user",
            Refusal::KeyOfSeveralUsers => {
                "the key is held by several users (from before a key was one user's); it logs in nowhere at the shared port until all but one remove it"
            }
            Refusal::UnknownNotebook => "no such notebook",
            Refusal::KeyNotAccepted => "the key is not one of the notebook's key pairs",
            Refusal::NotWhitelisted => "the source address is not in the notebook's whitelist",
            Refusal::SshDisabled => "SSH is not enabled for the notebook",
            Refusal::WrongUser => "a notebook's own port takes the user ma-user",
            Refusal::Throttled => "too many failed logins from this address",
        }
    }
}

/// A login the rules allow: the notebook, and the key pair that let the client in.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub target: SshTarget,
    pub key_pair_id: String,
}

/// The notebook a refusal concerned, for its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concerned {
    pub owner: String,
    pub id: String,
    pub name: String,
}

impl From<SshTarget> for Concerned {
    fn from(t: SshTarget) -> Concerned {
        Concerned {
            owner: t.owner,
            id: t.id,
            name: t.name,
        }
    }
}

/// Why no login: a refusal (with the notebook it concerned, when known), or a failure of the
/// store, which is the gateway's, not the client's.
#[derive(Debug)]
pub enum Denied {
    Refused(Refusal, Option<Concerned>),
    Store(sqlx::Error),
}

impl From<sqlx::Error> for Denied {
    fn from(e: sqlx::Error) -> Self {
        Denied::Store(e)
    }
}

/// The one user who holds a key, from `(key pair id, owner id)` of its holders.
pub fn key_owner(holders: &[(String, String)]) -> Result<&str, Refusal> {
    let Some((_, first)) = holders.first() else {
        return Err(Refusal::UnknownKey);
    };
    if holders.iter().any(|(_, owner)| owner != first) {
        return Err(Refusal::KeyOfSeveralUsers);
    }
    Ok(first)
}

/// Picks the login among the notebooks the name can mean (already only those of the key's
/// holder, or the port's notebook), first match first.
pub fn pick(
    candidates: Vec<SshTarget>,
    fingerprint: &str,
    peer: IpAddr,
) -> Result<Login, (Refusal, Option<Concerned>)> {
    let Some(target) = candidates.into_iter().next() else {
        return Err((Refusal::UnknownNotebook, None));
    };
    let Some(key_pair_id) = target
        .keys
        .iter()
        .find(|(_, f)| f == fingerprint)
        .map(|(id, _)| id.clone())
    else {
        return Err((Refusal::KeyNotAccepted, Some(target.into())));
    };
    if !whitelist::allows(&target.whitelist, peer) {
        return Err((Refusal::NotWhitelisted, Some(target.into())));
    }
    if !target.ssh_enabled {
        return Err((Refusal::SshDisabled, Some(target.into())));
    }
    Ok(Login {
        target,
        key_pair_id,
    })
}

/// Decides a login: `user` with the key of `fingerprint` from `peer`, at `door`.
pub async fn resolve(
    conn: &mut store::Conn,
    door: Door<'_>,
    user: &str,
    fingerprint: &str,
    peer: IpAddr,
) -> Result<Login, Denied> {
    let candidates = match door {
        Door::Own(_) if user != MA_USER => {
            return Err(Denied::Refused(Refusal::WrongUser, None));
        }
        Door::Own(id) => rows::ssh_targets(conn, SshLookup::Notebook(id)).await?,
        Door::Shared => {
            let holders = keypairs::holders(conn, fingerprint).await?;
            let owner_id = key_owner(&holders).map_err(|r| Denied::Refused(r, None))?;
            let lookup = SshLookup::OwnersNotebook { owner_id, user };
            rows::ssh_targets(conn, lookup).await?
        }
    };
    pick(candidates, fingerprint, peer).map_err(|(r, t)| Denied::Refused(r, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, now, users};

    fn holder(key: &str, owner: &str) -> (String, String) {
        (key.into(), owner.into())
    }

    #[test]
    fn a_key_has_one_owner_or_none() {
        assert_eq!(key_owner(&[]), Err(Refusal::UnknownKey));
        assert_eq!(key_owner(&[holder("k1", "alice")]), Ok("alice"));
        assert_eq!(
            key_owner(&[holder("k1", "alice"), holder("k2", "bob")]),
            Err(Refusal::KeyOfSeveralUsers)
        );
    }

    fn target(id: &str, keys: &[(&str, &str)]) -> SshTarget {
        SshTarget {
            id: id.into(),
            name: "dev".into(),
            owner_id: "alice".into(),
            owner: "alice".into(),
            status: crate::notebooks::status::RUNNING,
            ssh_enabled: true,
            whitelist: String::new(),
            keys: keys
                .iter()
                .map(|(k, f)| (k.to_string(), f.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_rules_in_order() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let ok = target("n1", &[("k1", "SHA256:a"), ("k2", "SHA256:b")]);
        let login = pick(vec![ok.clone()], "SHA256:b", peer).unwrap();
        assert_eq!(login.key_pair_id, "k2");
        assert_eq!(login.target.id, "n1");
        // The first candidate decides (an id match comes first from the store).
        let other = target("n2", &[("k3", "SHA256:c")]);
        let r = pick(vec![other.clone(), ok.clone()], "SHA256:a", peer);
        assert_eq!(
            r.unwrap_err(),
            (Refusal::KeyNotAccepted, Some(Concerned::from(other)))
        );
        assert_eq!(
            pick(Vec::new(), "SHA256:a", peer).unwrap_err(),
            (Refusal::UnknownNotebook, None)
        );
        let mut narrow = ok.clone();
        narrow.whitelist = "10.0.0.0/8".into();
        assert_eq!(
            pick(vec![narrow], "SHA256:a", peer).unwrap_err().0,
            Refusal::NotWhitelisted
        );
        let mut off = ok;
        off.ssh_enabled = false;
        assert_eq!(
            pick(vec![off], "SHA256:a", peer).unwrap_err().0,
            Refusal::SshDisabled
        );
    }

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("atelier-login-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir).await.unwrap(), dir)
    }

    async fn add_key(c: &mut store::Conn, id: &str, owner: &str, fingerprint: &str) {
        keypairs::insert(
            c,
            keypairs::NewKeyPair {
                id,
                owner_id: owner,
                name: id,
                algorithm: "ssh-ed25519",
                public_key: "ssh-ed25519 AAAA",
                fingerprint,
                now: &now(),
            },
        )
        .await
        .unwrap();
    }

    /// The hijack, at the store: Bob holds Alice's key on an older "dev" of his.
    #[tokio::test]
    async fn a_name_resolves_only_among_the_key_holders_notebooks() {
        let (s, dir) = store().await;
        let mut c = s.pool.acquire().await.unwrap();
        for (id, name) in [("ua", "alice"), ("ub", "bob")] {
            users::insert_user(&mut c, id, name, "user", &now())
                .await
                .unwrap();
        }
        let mut bobs = crate::store::notebooks::NotebookRow::example("nb", "ub", "dev");
        bobs.ssh_enabled = true;
        rows::insert(&mut c, &bobs).await.unwrap();
        let mut alices = crate::store::notebooks::NotebookRow::example("na", "ua", "dev");
        alices.ssh_enabled = true;
        rows::insert(&mut c, &alices).await.unwrap();
        add_key(&mut c, "ka", "ua", "SHA256:alice").await;
        add_key(&mut c, "kb", "ub", "SHA256:bob").await;
        rows::set_key_pairs(&mut c, "na", &["ka".into()])
            .await
            .unwrap();
        rows::set_key_pairs(&mut c, "nb", &["kb".into()])
            .await
            .unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let shared = |user: &'static str, fp: &'static str| (Door::Shared, user, fp);
        type Case<'a> = (
            (Door<'a>, &'a str, &'a str),
            Result<(&'a str, &'a str), Refusal>,
        );
        let cases: [Case<'_>; 8] = [
            (shared("dev", "SHA256:alice"), Ok(("na", "ka"))),
            (shared("dev", "SHA256:bob"), Ok(("nb", "kb"))),
            (shared("na", "SHA256:alice"), Ok(("na", "ka"))),
            // Another user's notebook, even by id, is not among the key holder's.
            (shared("nb", "SHA256:alice"), Err(Refusal::UnknownNotebook)),
            (shared("dev", "SHA256:nobody"), Err(Refusal::UnknownKey)),
            ((Door::Own("na"), MA_USER, "SHA256:alice"), Ok(("na", "ka"))),
            (
                (Door::Own("nb"), MA_USER, "SHA256:alice"),
                Err(Refusal::KeyNotAccepted),
            ),
            (
                (Door::Own("na"), "dev", "SHA256:alice"),
                Err(Refusal::WrongUser),
            ),
        ];
        for ((door, user, fp), want) in cases {
            let got = match resolve(&mut c, door, user, fp, peer).await {
                Ok(l) => Ok((l.target.id, l.key_pair_id)),
                Err(Denied::Refused(r, _)) => Err(r),
                Err(Denied::Store(e)) => panic!("{e}"),
            };
            let want = want.map(|(n, k)| (n.to_owned(), k.to_owned()));
            assert_eq!(got, want, "{door:?} {user} {fp}");
        }

        // A database from before: Bob also holds Alice's key, on his "dev". It now lands
        // nowhere at the shared port; Alice's own port still takes it.
        add_key(&mut c, "kb2", "ub", "SHA256:alice").await;
        rows::set_key_pairs(&mut c, "nb", &["kb".into(), "kb2".into()])
            .await
            .unwrap();
        for user in ["dev", "na", "nb"] {
            let r = resolve(&mut c, Door::Shared, user, "SHA256:alice", peer).await;
            assert!(
                matches!(r, Err(Denied::Refused(Refusal::KeyOfSeveralUsers, None))),
                "{user}: {r:?}"
            );
        }
        let r = resolve(&mut c, Door::Own("na"), MA_USER, "SHA256:alice", peer).await;
        assert_eq!(r.unwrap().key_pair_id, "ka");

        // A store that fails (here: one without the tables) is an error, not "no such
        // notebook" and not a refusal.
        use sqlx::Connection;
        let mut broken = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        for door in [Door::Shared, Door::Own("na")] {
            let r = resolve(&mut broken, door, MA_USER, "SHA256:alice", peer).await;
            assert!(matches!(r, Err(Denied::Store(_))), "{door:?}: {r:?}");
        }
        drop(c);
        std::fs::remove_dir_all(&dir).ok();
    }
}
