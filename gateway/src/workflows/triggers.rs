//! A workflow's webhook trigger: a token of its own (`POST /v1/workflows/{wf}/trigger-token`,
//! shown once, stored as its SHA-256 like API tokens) that starts the workflow's runs at
//! `POST /v1/workflows/{id}/trigger` and does nothing else.
//!
//! ```text
//! POST …/{id}/trigger  (Authorization: Bearer atw_… | X-Atelier-Trigger-Token: atw_…)
//!      ─► the workflow's token row (by the id in the path) ─► SHA-256 of the presented
//!         token compared in constant time ─► Workflows::start as the owner, trigger
//!         `webhook` (the same checks as POST …/runs; 409 while a run is under way)
//! ```
//!
//! A trigger token is not an API token: it is in another table, so it authenticates no
//! other call, and an API token is not looked for here. Any refusal is the same 401,
//! whether the workflow exists or not.

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::runs::{RunView, StartRun};
use super::schedule::{audited, owner};
use super::service::{WorkflowError, Workflows};
use crate::auth::{digest, hash_secret, new_secret};
use crate::error::{Error, ResourceError};
use crate::store::audit::Action;
use crate::store::now;
use crate::store::workflow_triggers as rows;
use crate::store::workflows::{self as wf_rows, WorkflowRow};

/// A trigger token's prefix (API tokens' is `atl_`).
pub const TOKEN_PREFIX: &str = "atw_";

/// A presented token longer than this is refused unread (ours are 47 characters).
const MAX_TOKEN: usize = 256;

/// A new trigger token: the only time it is shown.
#[derive(Debug, Clone, Serialize)]
pub struct NewTriggerToken {
    pub workflow: String,
    pub workflow_id: String,
    pub token: String,
    /// Where to send it: `POST` with the token, the body a run's (`parameters`, `storages`…).
    pub url: String,
    pub created_at: String,
}

/// Whether a workflow has a trigger token, and since when (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct TriggerTokenView {
    pub workflow: String,
    pub workflow_id: String,
    pub url: String,
    pub created_at: String,
    pub created_by: String,
}

/// A workflow whose trigger token a caller presented: only [`Workflows::trigger_check`]
/// makes one.
pub struct Triggered(WorkflowRow);

fn trigger_url(workflow_id: &str) -> String {
    format!("/v1/workflows/{workflow_id}/trigger")
}

fn refused() -> WorkflowError {
    ResourceError::Common(Error::unauthenticated(
        "not a valid trigger token for this workflow (revoked, rotated or mistyped); \
         the URL names the workflow by its id",
    ))
}

/// Whether `presented`'s SHA-256 is `stored_hex`, in time independent of where they differ.
fn matches(stored_hex: &str, presented: &str) -> bool {
    let mut stored = [0u8; 32];
    if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
        return false;
    }
    bool::from(stored.ct_eq(&digest(presented)))
}

impl Workflows {
    /// Creates the workflow's trigger token, or replaces it (the old one stops working).
    pub async fn create_trigger_token(
        &self,
        who: &crate::auth::Principal,
        key: &str,
    ) -> Result<NewTriggerToken, WorkflowError> {
        let w = self.find(who, key).await?;
        let token = new_secret(TOKEN_PREFIX);
        let t = now();
        let mut tx = self.inner.store.write().await?;
        let rotated = rows::token(&mut tx, &w.id).await?.is_some();
        rows::put_token(&mut tx, &w.id, &hash_secret(&token), &who.name, &t).await?;
        let detail = rotated.then_some("replaced the previous token");
        audited(tx, who, Action::CreateWorkflowTriggerToken, &w, detail).await?;
        Ok(NewTriggerToken {
            workflow: w.name.clone(),
            url: trigger_url(&w.id),
            workflow_id: w.id,
            token,
            created_at: t,
        })
    }

    /// Whether the workflow has a trigger token.
    pub async fn trigger_token(
        &self,
        who: &crate::auth::Principal,
        key: &str,
    ) -> Result<TriggerTokenView, WorkflowError> {
        let w = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let t = rows::token(&mut conn, &w.id).await?.ok_or_else(|| {
            ResourceError::NotFound(format!("workflow {} has no trigger token", w.name))
        })?;
        Ok(TriggerTokenView {
            workflow: w.name.clone(),
            url: trigger_url(&w.id),
            workflow_id: w.id,
            created_at: t.created_at,
            created_by: t.created_by,
        })
    }

    /// Revokes the workflow's trigger token.
    pub async fn revoke_trigger_token(
        &self,
        who: &crate::auth::Principal,
        key: &str,
    ) -> Result<(), WorkflowError> {
        let w = self.find(who, key).await?;
        let mut tx = self.inner.store.write().await?;
        if !rows::delete_token(&mut tx, &w.id).await? {
            return Err(ResourceError::NotFound(format!(
                "workflow {} has no trigger token",
                w.name
            )));
        }
        audited(tx, who, Action::RevokeWorkflowTriggerToken, &w, None).await?;
        Ok(())
    }

    /// Whether `presented` is workflow `workflow_id`'s trigger token: the only way to a
    /// [`Triggered`].
    pub async fn trigger_check(
        &self,
        workflow_id: &str,
        presented: &str,
    ) -> Result<Triggered, WorkflowError> {
        if presented.is_empty() || presented.len() > MAX_TOKEN {
            return Err(refused());
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let token = rows::token(&mut conn, workflow_id).await?;
        let w = wf_rows::by_id(&mut conn, workflow_id).await?;
        let ok = token.is_some_and(|t| matches(&t.token_hash, presented));
        match (ok, w) {
            (true, Some(w)) => Ok(Triggered(w)),
            _ => Err(refused()),
        }
    }

    /// Starts a run of the workflow a trigger token was checked for, as its owner.
    pub async fn trigger(&self, t: Triggered, req: StartRun) -> Result<RunView, WorkflowError> {
        let w = t.0;
        self.start(&owner(&w, "trigger"), &w, req, "webhook").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_its_own_hash() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert!(a.starts_with("atw_") && a.len() < MAX_TOKEN);
        assert!(matches(&hash_secret(&a), &a));
        assert!(!matches(&hash_secret(&a), &b));
        assert!(!matches(&hash_secret(&a), ""));
        assert!(!matches("not hex", &a));
        assert!(!matches(&hash_secret(&a)[..62], &a));
    }
}
