//! A launched notebook's handle: the backend's own record of what it started (a pid and its
//! start time, a container id, …), persisted with the notebook the moment it exists. Stored
//! as JSON TEXT and decoded once, when the row is read (`store::notebooks::NotebookRow`), not
//! at each use. **Invariant:** reading a row never fails on its handle: an unreadable one (a
//! hand-edited or damaged database) reads as `Handle(null)`, which every backend refuses to
//! act on with its error, so the notebook can still be listed, stopped and deleted.

use serde::{Deserialize, Serialize};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};

/// The persisted, backend-specific record of a launched notebook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle(pub serde_json::Value);

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
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buf)
    }
}

impl Handle {
    /// The stored text as a handle; what is not JSON is `Handle(null)` (see the invariant).
    pub fn parse(text: &str) -> Handle {
        serde_json::from_str(text).map(Handle).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a stored notebook handle is not JSON; treating it as unusable");
            Handle(serde_json::Value::Null)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handles_round_trip_and_an_unreadable_one_still_reads() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (h TEXT)")
            .execute(&mut db)
            .await
            .unwrap();
        let h = Handle(serde_json::json!({"pid": 7, "start_ticks": 12}));
        sqlx::query("INSERT INTO t VALUES ($1), ('not json'), (NULL)")
            .bind(&h)
            .execute(&mut db)
            .await
            .unwrap();
        let got: Vec<Option<Handle>> = sqlx::query_scalar("SELECT h FROM t ORDER BY rowid")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(got, [Some(h), Some(Handle(serde_json::Value::Null)), None]);
    }
}
