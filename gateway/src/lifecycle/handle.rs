//! A launched notebook's handle: the backend's own record of what it started (a pid and its
//! start time, a container id, …), persisted with the notebook the moment it exists. A typed
//! value per backend, stored as JSON TEXT with the backend's name and a version
//! (`{"backend": "process", "v": 1, …}`) and decoded once, when the row is read
//! (`store::notebooks::NotebookRow`), not at each use. Rows written before the tag existed
//! (the same fields, untagged) still read.
//!
//! **Invariant:** reading a row never fails on its handle: an unreadable one (a hand-edited
//! or damaged database, a newer gateway's version) reads as [`Handle::Unreadable`] with the
//! reason, which every backend refuses to act on with its error, so the notebook can still
//! be listed, stopped and deleted. A backend given another backend's handle says so.

use serde::{Deserialize, Serialize};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};

/// The version this gateway writes; a stored handle of a later one is unreadable here.
pub const VERSION: u32 = 1;

/// The persisted, backend-specific record of a launched notebook; stored with the backend's
/// name as the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Handle {
    Process(ProcessHandle),
    Docker(ContainerHandle),
    External(ExternalHandle),
    Slurm(SlurmHandle),
    /// The fake backend's (tests).
    Fake(FakeHandle),
    /// What could not be read, and why (see the invariant); never stored.
    #[serde(skip)]
    Unreadable(String),
}

/// The `process` backend's: the runtime process it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessHandle {
    pub notebook_id: String,
    pub runtime_pid: i32,
    /// `/proc/<pid>/stat` field 22: tells our runtime from a process that reused its pid.
    pub runtime_start_ticks: u64,
    /// Unconfined notebooks (and those launched before the sandbox had its own network):
    /// Jupyter's loopback port. Sandboxed ones listen on `run/agent/jupyter.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub token: String,
    /// A model engine's instance (`notebook_id` is the instance's id), not a notebook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub engine: bool,
}

/// The `docker` backend's: the container it created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHandle {
    pub notebook_id: String,
    pub container: String,
    /// Jupyter's published loopback port; `None`: a container without a network, whose
    /// Jupyter listens on `jupyter.sock` in the agent dir.
    #[serde(default)]
    pub port: Option<u16>,
    pub token: String,
    /// A model engine's instance (`notebook_id` is the instance's id), not a notebook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub engine: bool,
}

/// The `slurm` backend's: the batch job running the notebook's runtime on a compute node,
/// and the connect-back registration that runtime authenticates with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmHandle {
    pub notebook_id: String,
    pub job_id: u64,
    /// The tunnel's launch id (unique per launch).
    pub launch: String,
    /// SHA-256 of the launch's secret, hex: a restarted gateway accepts the runtime again
    /// with it (the secret itself is only in the runtime's spec).
    pub secret_hash: String,
    /// Unconfined notebooks: Jupyter's loopback port on the node. Sandboxed ones listen on
    /// `run/agent/jupyter.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub token: String,
    /// A training job's worker of this rank (`notebook_id` is the worker's id): one task of
    /// the job's Slurm job; it has no tunnel launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// A model engine's instance (`notebook_id` is the instance's id), not a notebook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub engine: bool,
}

/// The `external` backend's: the Jupyter server it was pointed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalHandle {
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeHandle {
    pub fake: String,
}

impl Handle {
    /// The stored text as a handle; what cannot be read is [`Handle::Unreadable`].
    pub fn parse(text: &str) -> Handle {
        let handle = Handle::read(text);
        if let Handle::Unreadable(why) = &handle {
            tracing::warn!(error = %why, "a stored notebook handle cannot be read; treating it as unusable");
        }
        handle
    }

    fn read(text: &str) -> Handle {
        let mut value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Handle::Unreadable(format!("the stored handle is not JSON: {e}")),
        };
        if value.get("backend").is_none() {
            // A row from before the tag: its fields say whose it is.
            let Some(backend) = [
                ("runtime_pid", "process"),
                ("container", "docker"),
                ("addr", "external"),
                ("fake", "fake"),
            ]
            .into_iter()
            .find(|(field, _)| value.get(field).is_some())
            .map(|(_, backend)| backend) else {
                return Handle::Unreadable("the stored handle is no backend's handle".into());
            };
            value["backend"] = backend.into();
            value["v"] = VERSION.into();
        }
        let v = value.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
        if v != u64::from(VERSION) {
            return Handle::Unreadable(format!(
                "the stored handle is version {v}; this gateway reads version {VERSION}"
            ));
        }
        serde_json::from_value::<Handle>(value)
            .unwrap_or_else(|e| Handle::Unreadable(format!("the stored handle: {e}")))
    }

    /// The stored text (`None` for an unreadable handle: it is never written back).
    fn text(&self) -> Option<String> {
        if let Handle::Unreadable(_) = self {
            return None;
        }
        let mut value = serde_json::to_value(self).ok()?;
        value["v"] = VERSION.into();
        Some(value.to_string())
    }

    /// The backend that wrote it, for messages.
    pub fn backend(&self) -> &'static str {
        match self {
            Handle::Process(_) => "process",
            Handle::Docker(_) => "docker",
            Handle::External(_) => "external",
            Handle::Slurm(_) => "slurm",
            Handle::Fake(_) => "fake",
            Handle::Unreadable(_) => "unknown",
        }
    }

    /// Why `backend` cannot act on this handle (it is another backend's, or unreadable).
    pub fn not_for(&self, backend: &str) -> String {
        match self {
            Handle::Unreadable(why) => format!("the notebook's handle cannot be read: {why}"),
            other => format!(
                "the notebook was launched by the {} backend; this gateway runs the {backend} backend",
                other.backend()
            ),
        }
    }
}

impl Type<Sqlite> for Handle {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for Handle {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Handle::parse(text))
    }
}

impl<'q> Encode<'q, Sqlite> for Handle {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, BoxDynError> {
        match self.text() {
            Some(text) => <String as Encode<Sqlite>>::encode(text, buf),
            None => Err("an unreadable handle is never written".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Handle {
        Handle::Process(ProcessHandle {
            notebook_id: "nb".into(),
            runtime_pid: 7,
            runtime_start_ticks: 12,
            port: None,
            token: "t".into(),
            engine: false,
        })
    }

    #[test]
    fn handles_are_tagged_and_versioned_and_read_back() {
        let docker = Handle::Docker(ContainerHandle {
            notebook_id: "nb".into(),
            container: "c1".into(),
            port: Some(8888),
            engine: false,
            token: "t".into(),
        });
        for h in [
            process(),
            docker,
            Handle::External(ExternalHandle {
                addr: "127.0.0.1:9".into(),
            }),
            Handle::Slurm(SlurmHandle {
                notebook_id: "nb".into(),
                job_id: 42,
                launch: "nb-0a1b2c3d".into(),
                secret_hash: "ab".repeat(32),
                port: None,
                token: "t".into(),
                rank: None,
                engine: false,
            }),
        ] {
            let text = h.text().unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["backend"], h.backend(), "{text}");
            assert_eq!(v["v"], VERSION, "{text}");
            assert_eq!(Handle::read(&text), h);
        }
    }

    #[test]
    fn rows_written_before_the_tag_still_read() {
        let old = r#"{"runtime_pid":7,"runtime_start_ticks":12,"token":"t","notebook_id":"nb"}"#;
        assert_eq!(Handle::read(old), process());
        let old = r#"{"notebook_id":"nb","container":"c1","port":null,"token":"t"}"#;
        assert!(matches!(Handle::read(old), Handle::Docker(h) if h.container == "c1"));
        let old = r#"{"addr":"127.0.0.1:9"}"#;
        assert!(matches!(Handle::read(old), Handle::External(_)));
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        for (text, why) in [
            ("not json", "not JSON"),
            (r#"{"pid": 7}"#, "no backend's handle"),
            (r#"{"backend":"process","v":2}"#, "version 2"),
            (
                r#"{"backend":"process","v":1,"token":"t"}"#,
                "missing field",
            ),
            (r#"{"backend":"kubernetes","v":1}"#, "kubernetes"),
        ] {
            match Handle::read(text) {
                Handle::Unreadable(w) => assert!(w.contains(why), "{text}: {w}"),
                other => panic!("{text} read as {other:?}"),
            }
        }
        assert!(
            Handle::Unreadable("x".into())
                .not_for("docker")
                .contains("cannot be read")
        );
        assert!(process().not_for("docker").contains("process backend"));
    }

    #[tokio::test]
    async fn handles_round_trip_through_sqlite_and_an_unreadable_one_still_reads() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (h TEXT)")
            .execute(&mut db)
            .await
            .unwrap();
        let h = process();
        sqlx::query("INSERT INTO t VALUES ($1), ('not json'), (NULL)")
            .bind(&h)
            .execute(&mut db)
            .await
            .unwrap();
        let got: Vec<Option<Handle>> = sqlx::query_scalar("SELECT h FROM t ORDER BY rowid")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(got[0], Some(h));
        assert!(matches!(got[1], Some(Handle::Unreadable(_))));
        assert_eq!(got[2], None);
        // Never written back: the row keeps what it had.
        let e = sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(Handle::Unreadable("x".into()))
            .execute(&mut db)
            .await;
        assert!(e.is_err());
    }
}
