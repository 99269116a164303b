//! The lifecycle core that every long-lived resource kind shares (notebooks today; uploads,
//! mounts, and next inference services, training jobs and workflow runs): typed statuses
//! stored as TEXT, and a pure transition table per kind that says where each operation is
//! allowed and what a refusal says. IO-free: the compare-and-set that applies a transition,
//! with its event, audit row and durable operation, is `store::transition::Transition`.
//!
//! ```text
//! request ─► Operation::check(current) ─► store: UPDATE … SET status = to
//!             │ refused: 409 "cannot stop notebook x     WHERE id = ? AND status IN (from…)
//!             │ while it is STOPPED; allowed when it      (bound parameters, one row or none)
//!             │ is RUNNING, ERROR"
//! ```
//!
//! A new kind: declare its statuses with [`status_enum!`], its operations as an enum that
//! implements [`Operation`], and table-test them with [`table`] (every status × operation).

use std::fmt::Debug;

pub use atelier_plugins::locks::{KeyGuard, KeyedLocks};

pub mod batch;
pub mod clock;
pub mod handle;
pub mod model;
pub mod mount;
pub mod notebook;
pub mod search;
pub mod service;
pub mod training;
pub mod upload;
pub mod workflow;

/// Names that appear in paths, commands and file names: 1-64 of A-Z, a-z, 0-9, '-', '_'
/// and '.', starting with a letter or digit.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A resource's status: a closed set of names, stored as TEXT in its table.
pub trait Status: Copy + Eq + Debug + Send + Sync + 'static {
    /// Every status, in the order the API documents them.
    const ALL: &'static [Self];

    /// The stored and displayed name (`RUNNING`).
    fn as_str(self) -> &'static str;

    /// The status named `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|x| x.as_str() == s)
    }

    /// `A, B, C`: for messages.
    fn join(list: &[Self]) -> String {
        list.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Declares a status enum: `Copy`, serialized and stored (`sqlx::Type`, TEXT) under the given
/// names, with [`Status`], `Display` and `FromStr`; and a module of constants by those names
/// (`Creating = "CREATING" as CREATING`: `status::CREATING`) for call sites and patterns.
#[macro_export]
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $consts:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal as $konst:ident ),+ $(,)?
        }
    ) => {
        /// The statuses by their names.
        pub mod $consts {
            $( pub const $konst: super::$name = super::$name::$variant; )+
        }

        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
            sqlx::Type,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] #[sqlx(rename = $text)] $variant ),+
        }

        impl $crate::lifecycle::Status for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::lifecycle::Status::as_str(*self))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::lifecycle::UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as $crate::lifecycle::Status>::parse(s).ok_or_else(|| {
                    $crate::lifecycle::UnknownStatus {
                        given: s.to_owned(),
                        known: <Self as $crate::lifecycle::Status>::join(
                            <Self as $crate::lifecycle::Status>::ALL,
                        ),
                    }
                })
            }
        }
    };
}

/// A status name that is none of its kind's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {given:?}; one of {known}")]
pub struct UnknownStatus {
    pub given: String,
    pub known: String,
}

/// An operation a user asks of a resource: where it is allowed.
pub trait Operation: Copy + Eq + Debug + 'static {
    type Status: Status;
    /// The resource kind in messages (`notebook`).
    const KIND: &'static str;
    /// Every operation (for table tests).
    const ALL: &'static [Self];

    /// The verb in refusals: "cannot {verb} notebook …".
    fn verb(self) -> &'static str;

    /// The statuses the operation is allowed from.
    fn allowed_from(self) -> &'static [Self::Status];

    /// Whether the operation may run on a resource in `current`; a refusal names the
    /// resource, its status and where the operation is allowed (the API's 409).
    fn check(self, name: &str, current: Self::Status) -> Result<(), Refused> {
        if self.allowed_from().contains(&current) {
            return Ok(());
        }
        Err(Refused {
            message: format!(
                "cannot {} {} {name} while it is {}; allowed when it is {}",
                self.verb(),
                Self::KIND,
                current.as_str(),
                Self::Status::join(self.allowed_from()),
            ),
        })
    }
}

/// An operation refused in the resource's current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub message: String,
}

/// Every status × operation of a kind, as `(operation, status, allowed)`, for table tests:
/// a test writes the expected table out in full and compares, so a new status or operation
/// cannot slip in without a decision for every cell.
pub fn table<O: Operation>() -> Vec<(O, O::Status, bool)> {
    let mut out = Vec::new();
    for &op in O::ALL {
        for &s in <O::Status as Status>::ALL {
            out.push((op, s, op.check("x", s).is_ok()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    status_enum! {
        /// A kind for the tests.
        pub enum Light in light {
            Off = "OFF" as OFF,
            On = "ON" as ON,
            Broken = "BROKEN" as BROKEN,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Switch {
        TurnOn,
        Repair,
    }

    impl Operation for Switch {
        type Status = Light;
        const KIND: &'static str = "light";
        const ALL: &'static [Self] = &[Self::TurnOn, Self::Repair];
        fn verb(self) -> &'static str {
            match self {
                Self::TurnOn => "turn on",
                Self::Repair => "repair",
            }
        }
        fn allowed_from(self) -> &'static [Light] {
            match self {
                Self::TurnOn => &[Light::Off],
                Self::Repair => &[Light::Broken, Light::Off],
            }
        }
    }

    #[test]
    fn statuses_round_trip_through_text_serde_and_parse() {
        for &s in Light::ALL {
            assert_eq!(s.as_str().parse::<Light>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Light>(&json).unwrap(), s);
        }
        let e = "on".parse::<Light>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown status \"on\"; one of OFF, ON, BROKEN"
        );
    }

    #[test]
    fn refusals_name_the_resource_its_status_and_where_it_is_allowed() {
        assert_eq!(Switch::TurnOn.check("desk", Light::Off), Ok(()));
        assert_eq!(
            Switch::Repair.check("desk", Light::On).unwrap_err().message,
            "cannot repair light desk while it is ON; allowed when it is BROKEN, OFF"
        );
        // The generated constants are the variants.
        use Switch::*;
        use light::*;
        assert_eq!(
            table::<Switch>(),
            vec![
                (TurnOn, OFF, true),
                (TurnOn, ON, false),
                (TurnOn, BROKEN, false),
                (Repair, OFF, true),
                (Repair, ON, false),
                (Repair, BROKEN, true),
            ]
        );
    }

    #[tokio::test]
    async fn statuses_are_stored_as_their_names() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (status TEXT NOT NULL)")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(Light::Broken)
            .execute(&mut db)
            .await
            .unwrap();
        let raw: String = sqlx::query_scalar("SELECT status FROM t")
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(raw, "BROKEN");
        let typed: Light = sqlx::query_scalar("SELECT status FROM t")
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(typed, Light::Broken);
        // A name that is no status is an error, never a default.
        sqlx::query("UPDATE t SET status = 'MELTED'")
            .execute(&mut db)
            .await
            .unwrap();
        assert!(
            sqlx::query_scalar::<_, Light>("SELECT status FROM t")
                .fetch_one(&mut db)
                .await
                .is_err()
        );
    }
}
