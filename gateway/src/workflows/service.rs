//! The workflows a user keeps (`/v1/workflows`): definitions loaded, validated and stored
//! as versions. A definition is checked whole before anything is written; publishing one
//! that means the same as the newest version (the same digest of its canonical form) makes
//! no new version.
//!
//! ```text
//! POST /v1/workflows (JSON or YAML) ─► load (parse, normalise, validate: every problem
//!      named) ─► one transaction: the name free (409), the quota, the row, version 1,
//!      the audit row
//! PUT /v1/workflows/{wf} ─► load ─► its name is the workflow's ─► one transaction: a new
//!      version when the digest differs from the newest one's, the audit row
//! DELETE /v1/workflows/{wf} ─► refused while a run is under way ─► the row, its versions,
//!      its run records and their scratch outputs (jobs, models and services a run started
//!      are left as they are)
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::definition::Format;
use crate::auth::Principal;
use crate::error::{Error, ResourceError};
use crate::store::audit::{self, Action, Target};
use crate::store::workflows::{self as rows, VersionRow, WorkflowRow};
use crate::store::{Store, now};

pub type WorkflowError = ResourceError;

/// A workflow as the API shows it: its newest definition.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    /// The newest version (1, 2, …).
    pub version: i64,
    pub digest: String,
    /// The newest definition, in its canonical form.
    pub definition: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// One published version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub version: i64,
    pub digest: String,
    pub definition: Value,
    pub created_at: String,
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub workflow: WorkflowView,
    /// Whether it made a new version (false: the definition means the same as the newest).
    pub changed: bool,
}

#[derive(Clone)]
pub struct Workflows {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) engine: super::runner::Engine,
    per_user: u32,
    /// The schedules' loop wake-up and setting (`schedule`).
    pub(super) scheduling: super::schedule::Scheduling,
    /// Creates one at a time: the quota check and the insert cannot interleave.
    create: tokio::sync::Mutex<()>,
}

pub(super) fn target(w: &WorkflowRow) -> Target<'_> {
    Target {
        kind: "workflow",
        id: &w.id,
        name: &w.name,
    }
}

/// Every problem of a refused definition, one per line, each naming its field.
pub(super) fn refused(errors: Vec<super::DefinitionError>) -> WorkflowError {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    ResourceError::Invalid(lines.join("\n"))
}

impl Workflows {
    /// `cron_seconds`: schedules may have a seconds field (tests and demos).
    pub fn new(
        store: Store,
        per_user: u32,
        engine: super::runner::Engine,
        cron_seconds: bool,
    ) -> Workflows {
        Workflows {
            inner: Arc::new(Inner {
                store,
                engine,
                per_user,
                scheduling: super::schedule::Scheduling::new(cron_seconds),
                create: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The run engine (resumed at start, shut down at exit).
    pub fn engine(&self) -> &super::runner::Engine {
        &self.inner.engine
    }

    /// Creates a workflow from a definition (version 1).
    pub async fn create(
        &self,
        who: &Principal,
        body: &[u8],
        format: Format,
    ) -> Result<WorkflowView, WorkflowError> {
        let wf = super::load(body, format).map_err(refused)?;
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &wf.name)
            .await?
            .is_some()
        {
            return Err(ResourceError::Conflict(format!(
                "you already have a workflow named {:?}; PUT /v1/workflows/{} (atelier workflow publish) publishes a new version of it",
                wf.name, wf.name
            )));
        }
        let count = rows::count(&mut tx, &who.user_id).await?;
        let quota = self.inner.per_user;
        if count >= i64::from(quota) {
            return Err(ResourceError::Conflict(format!(
                "you have {count} workflows, the most allowed ({quota}); delete one first"
            )));
        }
        rows::insert(
            &mut tx,
            rows::NewWorkflow {
                id: &id,
                owner_id: &who.user_id,
                name: &wf.name,
                description: &wf.desc,
                tags: "{}",
                digest: &wf.digest(),
                definition: &wf.canonical_json(),
                now: &t,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateWorkflow,
            Target {
                kind: "workflow",
                id: &id,
                name: &wf.name,
            },
            "accepted",
            Some("version 1"),
        )
        .await?;
        tx.commit().await?;
        self.view_by_id(&id).await
    }

    /// Publishes a definition of the workflow `key`: a new version when it changed.
    pub async fn publish(
        &self,
        who: &Principal,
        key: &str,
        body: &[u8],
        format: Format,
    ) -> Result<Published, WorkflowError> {
        let w = self.find(who, key).await?;
        let wf = super::load(body, format).map_err(refused)?;
        if wf.name != w.name {
            return Err(ResourceError::Invalid(format!(
                "name: {:?}; this is the workflow {:?} (a definition keeps its workflow's name; create another workflow for a new name)",
                wf.name, w.name
            )));
        }
        let t = now();
        let mut tx = self.inner.store.write().await?;
        let definition = wf.canonical_json();
        let digest = wf.digest();
        let d = rows::Definition {
            digest: &digest,
            definition: &definition,
            description: &wf.desc,
        };
        let version = match rows::publish(&mut tx, &w.id, d, &t).await {
            Ok(v) => v,
            Err(sqlx::Error::RowNotFound) => {
                return Err(ResourceError::NotFound(format!("workflow {key} not found")));
            }
            Err(e) => return Err(e.into()),
        };
        let changed = version != w.latest_version;
        if changed {
            audit::record(
                &mut tx,
                &who.name,
                Action::PublishWorkflow,
                target(&w),
                "accepted",
                Some(&format!("version {version}")),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Published {
            workflow: self.view_by_id(&w.id).await?,
            changed,
        })
    }

    /// The caller's workflow whose id or name is `key` (any workflow by id for an admin).
    pub(super) async fn find(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<WorkflowRow, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(w) = rows::by_key(&mut conn, &who.user_id, key).await? {
            return Ok(w);
        }
        if who.is_admin()
            && let Some(w) = rows::by_id(&mut conn, key).await?
        {
            return Ok(w);
        }
        Err(ResourceError::NotFound(format!("workflow {key} not found")))
    }

    async fn view_by_id(&self, id: &str) -> Result<WorkflowView, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let w = rows::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| ResourceError::NotFound(format!("workflow {id} not found")))?;
        drop(conn);
        self.view(w).await
    }

    async fn view(&self, w: WorkflowRow) -> Result<WorkflowView, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = rows::version(&mut conn, &w.id, w.latest_version)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("workflow {} has no version {}", w.id, w.latest_version)
            })?;
        view_of(w, v)
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<WorkflowView, WorkflowError> {
        let w = self.find(who, key).await?;
        self.view(w).await
    }

    /// The caller's workflows by name, or everyone's (`all`, admins).
    pub async fn list(
        &self,
        who: &Principal,
        all: bool,
    ) -> Result<Vec<WorkflowView>, WorkflowError> {
        if all && !who.is_admin() {
            return Err(Error::forbidden("listing every user's workflows is for admins").into());
        }
        let owner = (!all).then_some(who.user_id.as_str());
        let mut conn = self.inner.store.pool.acquire().await?;
        let found = rows::list(&mut conn, owner).await?;
        // Every newest version in one query, not one per workflow.
        let mut latest: std::collections::HashMap<String, VersionRow> =
            rows::latest_versions(&mut conn, owner)
                .await?
                .into_iter()
                .collect();
        found
            .into_iter()
            .map(|w| {
                let v = latest.remove(&w.id).ok_or_else(|| {
                    anyhow::anyhow!("workflow {} has no version {}", w.id, w.latest_version)
                })?;
                view_of(w, v)
            })
            .collect()
    }

    /// What a run of the workflow takes (AC-11): each parameter with its type, default,
    /// `delay`, `required`, choices and format, each storage with its flags and default
    /// root, the scenes; of the newest version or `version`.
    pub async fn config(
        &self,
        who: &Principal,
        key: &str,
        version: Option<i64>,
    ) -> Result<Value, WorkflowError> {
        let w = self.find(who, key).await?;
        let version = version.unwrap_or(w.latest_version);
        let v = self.version(who, &w.id, version).await?;
        let d = &v.definition;
        Ok(serde_json::json!({
            "workflow": w.name,
            "version": v.version,
            "parameters": d.get("parameters").cloned().unwrap_or_default(),
            "storages": d.get("storages").cloned().unwrap_or_default(),
            "scenes": d.pointer("/policy/scenes").cloned().unwrap_or(Value::Array(vec![])),
        }))
    }

    /// A copy of the workflow under `name` (its newest definition as version 1): the seed's
    /// way to run a workflow twice at once.
    pub async fn copy(
        &self,
        who: &Principal,
        key: &str,
        name: Option<&str>,
    ) -> Result<WorkflowView, WorkflowError> {
        let w = self.find(who, key).await?;
        let v = self.version(who, &w.id, w.latest_version).await?;
        let mut definition = v.definition;
        let name = match name {
            Some(n) => n.to_owned(),
            None => format!("{}_copy", w.name),
        };
        definition["name"] = Value::String(name);
        let body = serde_json::to_vec(&definition).map_err(anyhow::Error::from)?;
        self.create(who, &body, Format::Json).await
    }

    /// The workflow's versions, oldest first.
    pub async fn versions(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<Vec<VersionView>, WorkflowError> {
        let w = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::versions(&mut conn, &w.id)
            .await?
            .into_iter()
            .map(version_view)
            .collect()
    }

    pub async fn version(
        &self,
        who: &Principal,
        key: &str,
        version: i64,
    ) -> Result<VersionView, WorkflowError> {
        let w = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = rows::version(&mut conn, &w.id, version)
            .await?
            .ok_or_else(|| {
                ResourceError::NotFound(format!(
                    "workflow {} has no version {version} (its versions are 1 to {})",
                    w.name, w.latest_version
                ))
            })?;
        version_view(v)
    }

    /// Deletes a workflow, its versions and its run records; refused while a run is under
    /// way (stop it first).
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), WorkflowError> {
        let w = self.find(who, key).await?;
        let mut tx = self.inner.store.write().await?;
        if let Some(n) = rows::active_run(&mut tx, &w.id).await? {
            return Err(ResourceError::Conflict(format!(
                "workflow {} has run {n} under way; stop it first",
                w.name
            )));
        }
        let runs: Vec<String> = rows::runs(&mut tx, &w.id)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        rows::delete(&mut tx, &w.id).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::DeleteWorkflow,
            target(&w),
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        for id in runs {
            self.inner.engine.remove_scratch(&w.owner_id, &id).await;
        }
        Ok(())
    }
}

fn view_of(w: WorkflowRow, v: VersionRow) -> Result<WorkflowView, WorkflowError> {
    let v = version_view(v)?;
    Ok(WorkflowView {
        id: w.id,
        name: w.name,
        owner: w.owner_name,
        description: w.description,
        version: v.version,
        digest: v.digest,
        definition: v.definition,
        created_at: w.created_at,
        updated_at: w.updated_at,
    })
}

fn version_view(v: VersionRow) -> Result<VersionView, WorkflowError> {
    let definition: Value = serde_json::from_str(&v.definition)
        .map_err(|e| anyhow::anyhow!("a stored workflow definition: {e}"))?;
    Ok(VersionView {
        version: v.version,
        digest: v.digest,
        definition,
        created_at: v.created_at,
    })
}
