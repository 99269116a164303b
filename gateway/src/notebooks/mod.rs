//! The notebook lifecycle: validation, state transitions and the background tasks that
//! drive a backend.
//!
//! ```text
//! request ─► validate ─► transaction { status CAS, event, audit } ─► task ─► backend
//!                                                                      │
//!            RUNNING / STOPPED / *_FAILED ◄── transaction { status, event } ◄┘
//! ```
//!
//! Every transition is a compare-and-set on the stored status, so two requests cannot both
//! move a notebook out of one state. Tasks are resumable: a gateway that restarts in the
//! middle of one runs it again from the stored status ([`Lifecycle::resume`]).

pub mod autostop;
pub mod files;
pub mod health;
pub mod mounts;
pub mod save;
pub mod storage_rules;
pub mod uploads;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::activity::ActivityClocks;
use crate::auth::Principal;
use crate::auth::authz::NotebookGrant;
use crate::auth::revoke::{Reason, Revocations, Subject};
use crate::backends::{Backend, BackendError, Handle, NotebookSpec, Progress, StopMode};
use crate::config::Settings;
use crate::error::{Error, Kind};
use crate::lifecycle::Operation;
use crate::lifecycle::clock::Clock;
use crate::metrics::{NotebookMetrics, ReasonLabel};
use crate::routing::RouteTable;
use crate::store::audit::{self, Action, Target};
use crate::store::events::{self, EventKind};
use crate::store::notebooks::{self as rows, NotebookRow};
use crate::store::operations;
use crate::store::transition::{Denied, Transition};
use crate::store::{self, Store};

pub use crate::lifecycle::notebook::{NotebookOp, NotebookStatus, status};
use status::*;

/// The API's view of a notebook.
#[derive(Debug, Clone, Serialize)]
pub struct NotebookView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub status: NotebookStatus,
    pub status_reason: Option<String>,
    pub flavor: String,
    pub image: String,
    pub auto_stop: AutoStopView,
    pub ssh: SshView,
    /// How to reach the notebook besides `url` (filled by the API, which knows the gateway's
    /// addresses).
    pub endpoints: Endpoints,
    /// The work disk (`/home/ma-user/work` in containers): `{kind, fs?, size_gb, note?}`;
    /// `null` on backends without one.
    pub storage: Option<crate::backends::workdisk::DiskInfo>,
    pub url: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: Option<String>,
    /// What its user should know about how it runs (unconfined, say); absent when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoStop {
    pub enabled: bool,
    #[serde(default = "default_hours")]
    pub duration_hours: i64,
    /// Stop after this many seconds without activity (0: never); left out: the gateway's
    /// default (`ATELIER_IDLE_TIMEOUT`), or what the notebook had.
    #[serde(default)]
    pub idle_timeout_seconds: Option<i64>,
}

fn default_hours() -> i64 {
    1
}

/// Auto-stop as the API shows it: the choice, and while running the deadline.
#[derive(Debug, Clone, Serialize)]
pub struct AutoStopView {
    pub enabled: bool,
    pub duration_hours: i64,
    /// When the notebook stops by itself unless renewed (running with auto-stop on).
    pub stop_at: Option<String>,
    /// Seconds until `stop_at` (0 once it passed and the stop is under way).
    pub remaining_seconds: Option<i64>,
    /// Idle stop after this many seconds without activity (0: off).
    pub idle_timeout_seconds: i64,
}

/// A notebook's SSH settings as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct SshView {
    pub enabled: bool,
    /// Names of the owner's key pairs that may log in.
    pub key_pairs: Vec<String>,
    /// IPs and CIDRs that may connect; empty: any address.
    pub whitelist: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Endpoints {
    /// When the notebook has SSH on and the gateway's SSH front door is on: the shared port
    /// (user = the notebook's name) and the notebook's own port (user `ma-user`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<SshEndpoint>,
}

/// `ssh -p {port} {user}@{host}`.
#[derive(Debug, Clone, Serialize)]
pub struct SshEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The gateway's host key (`SHA256:…`), the same for every notebook and every restart.
    pub host_key_fingerprint: String,
}

/// SSH settings in a create or update request; what is left out stays as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRequest {
    pub enabled: Option<bool>,
    pub key_pairs: Option<Vec<String>>,
    pub whitelist: Option<Vec<String>>,
}

fn split_whitelist(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

impl From<NotebookRow> for NotebookView {
    fn from(r: NotebookRow) -> Self {
        let running = r.status == RUNNING;
        NotebookView {
            url: format!("/nb/{}/lab", r.id),
            id: r.id,
            name: r.name,
            description: r.description,
            owner: r.owner,
            status: r.status,
            status_reason: r.status_reason,
            flavor: r.flavor,
            image: r.image,
            auto_stop: {
                let stop_at = r.stop_at.filter(|_| r.auto_stop_enabled && running);
                AutoStopView {
                    // The gateway's default fills in for `None` (api::notebooks::view).
                    idle_timeout_seconds: r.idle_timeout_seconds.unwrap_or(0),
                    enabled: r.auto_stop_enabled,
                    duration_hours: r.auto_stop_hours,
                    remaining_seconds: stop_at
                        .as_deref()
                        .and_then(autostop::remaining_seconds)
                        .map(|s| s.max(0)),
                    stop_at,
                }
            },
            ssh: SshView {
                enabled: r.ssh_enabled,
                key_pairs: r.ssh_key_pairs,
                whitelist: split_whitelist(&r.ssh_whitelist),
            },
            endpoints: Endpoints::default(),
            storage: None,
            warnings: Vec::new(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_activity_at: r.last_activity_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNotebook {
    pub name: Option<String>,
    pub description: Option<String>,
    pub flavor: Option<String>,
    pub image: Option<String>,
    pub auto_stop: Option<AutoStop>,
    pub ssh: Option<SshRequest>,
    /// Primary storage: the work disk (`{"type": "evs"}`, the default) or an object-storage
    /// folder mounted at /home/ma-user/work.
    pub storage: Option<storage_rules::PrimaryRequest>,
    /// Object-storage folders mounted at paths of the user's choosing.
    #[serde(default)]
    pub extended_storage: Vec<storage_rules::ExtendedRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNotebook {
    pub name: Option<String>,
    pub description: Option<String>,
    pub flavor: Option<String>,
    pub image: Option<String>,
    pub ssh: Option<SshRequest>,
}

#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    settings: Arc<Settings>,
    routes: RouteTable,
    /// What auto-stop knows of each notebook's activity.
    clocks: ActivityClocks,
    tasks: TaskTracker,
    /// Serialises creates so the per-user quota check and the insert cannot interleave.
    create_lock: tokio::sync::Mutex<()>,
    /// Notebooks whose work disk is being expanded: one expansion at a time, a second refused.
    expanding: crate::lifecycle::KeyedLocks,
    /// The services beside the core: it calls them as a notebook starts, stops and goes.
    mounts: mounts::Mounts,
    uploads: uploads::Uploads,
    files: files::Files,
    saves: save::Saves,
    /// Cuts the WebSockets and SSH connections of a notebook that stops or goes, and of a
    /// key pair removed from it.
    revocations: Revocations,
    metrics: NotebookMetrics,
    clock: Arc<dyn Clock>,
}

/// What the lifecycle is built from.
pub struct LifecycleParts {
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub settings: Arc<Settings>,
    pub routes: RouteTable,
    pub clocks: ActivityClocks,
    pub secrets: Arc<crate::secrets::SecretBox>,
    pub revocations: Revocations,
    pub metrics: NotebookMetrics,
    /// Deadlines are read against it (tests move a manual one).
    pub clock: Arc<dyn Clock>,
    /// The `atelier.file` front door (`api::files::FileApi`); `None`: no file API.
    pub file_server: Option<Arc<dyn files::FileServer>>,
}

impl Lifecycle {
    pub fn new(parts: LifecycleParts) -> Self {
        let LifecycleParts {
            store,
            backend,
            settings,
            routes,
            clocks,
            secrets,
            revocations,
            metrics,
            clock,
            file_server,
        } = parts;
        // Every reason shows in `/metrics` from the start, at 0.
        for r in autostop::Reason::ALL {
            drop(
                metrics
                    .auto_stops
                    .get_or_create(&ReasonLabel { reason: r.as_str() }),
            );
        }
        let tasks = TaskTracker::new();
        let mounts =
            mounts::Mounts::new(store.clone(), backend.clone(), &settings, secrets.clone());
        let uploads = uploads::Uploads::new(
            store.clone(),
            backend.clone(),
            secrets.clone(),
            tasks.clone(),
            mounts.clone(),
        );
        let files = files::Files::new(store.clone(), backend.clone(), secrets, file_server);
        let saves = save::Saves::new(
            store.clone(),
            backend.clone(),
            settings.clone(),
            routes.clone(),
            tasks.clone(),
        );
        Lifecycle {
            inner: Arc::new(Inner {
                store,
                backend,
                settings,
                routes,
                clocks,
                tasks,
                create_lock: tokio::sync::Mutex::new(()),
                expanding: Default::default(),
                mounts,
                uploads,
                files,
                saves,
                revocations,
                metrics,
                clock,
            }),
        }
    }

    /// The notebooks' object-storage mounts.
    pub fn mounts(&self) -> &mounts::Mounts {
        &self.inner.mounts
    }

    /// Large uploads into the notebooks' work dirs.
    pub fn uploads(&self) -> &uploads::Uploads {
        &self.inner.uploads
    }

    /// The `atelier.file` sockets of running notebooks.
    pub(crate) fn files(&self) -> &files::Files {
        &self.inner.files
    }

    /// Saving running notebooks as images.
    pub fn saves(&self) -> &save::Saves {
        &self.inner.saves
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Notebooks cannot run here at all (no working sandbox): said before anything is made.
    fn refuse_if_backend_cannot(&self) -> Result<(), Error> {
        match self.inner.backend.refusal() {
            Some(why) => Err(Error::new(Kind::Unavailable, "sandbox_unavailable", why)),
            None => Ok(()),
        }
    }

    pub async fn create(&self, who: &Principal, req: CreateNotebook) -> Result<NotebookRow, Error> {
        self.refuse_if_backend_cannot()?;
        let s = &self.inner.settings;
        let name = match &req.name {
            Some(n) => validate::name(n)?.to_owned(),
            None => validate::generated_name(),
        };
        let description =
            validate::description(req.description.as_deref().unwrap_or(""))?.to_owned();
        let flavor = match &req.flavor {
            Some(f) => validate::flavor(s, f)?.id.clone(),
            None => s.default_flavor().id.clone(),
        };
        // The backend its flavor names: where its files will be for good.
        let placed_on = s
            .flavors
            .iter()
            .find(|f| f.id == flavor)
            .map_or(s.backend.kind, |f| f.backend_or(s.backend.kind))
            .name();
        let image = match &req.image {
            Some(i) => {
                let mut conn = self.inner.store.pool.acquire().await?;
                crate::images::resolve(s, &mut conn, &who.user_id, i)
                    .await?
                    .id
            }
            None => s.default_image().id.clone(),
        };
        let auto_stop = req.auto_stop.unwrap_or(AutoStop {
            enabled: true,
            duration_hours: 1,
            idle_timeout_seconds: None,
        });
        validate::auto_stop_hours(auto_stop.duration_hours)?;
        if let Some(t) = auto_stop.idle_timeout_seconds {
            validate::idle_timeout(t)?;
        }
        let ssh = req.ssh.unwrap_or_default();
        let ssh_enabled = ssh.enabled.unwrap_or(false);
        let key_pairs = validate::key_pair_names(ssh.key_pairs.as_deref().unwrap_or_default())?;
        let whitelist = validate::whitelist(ssh.whitelist.as_deref().unwrap_or_default())?;
        if ssh_enabled && key_pairs.is_empty() {
            return Err(no_key_pairs());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let storage = self
            .inner
            .mounts
            .check_create_storage(who, &id, req.storage.as_ref(), &req.extended_storage)
            .await?;

        let _guard = self.inner.create_lock.lock().await;
        let mut tx = self.inner.store.write().await?;
        let count = rows::count_for_owner(&mut tx, &who.user_id).await?;
        let limit = i64::from(s.quota.notebooks_per_user);
        if count >= limit {
            return Err(Error::quota(format!(
                "notebook quota reached: you have {count} notebooks and the limit is {limit}; delete one first"
            )));
        }
        if rows::name_taken(&mut tx, &who.user_id, &name, "").await? {
            return Err(Error::conflict(format!(
                "you already have a notebook named {name:?}"
            )));
        }
        let now = store::now();
        let row = NotebookRow {
            id,
            owner_id: who.user_id.clone(),
            owner: who.name.clone(),
            name,
            description,
            flavor,
            image,
            status: CREATING,
            status_reason: None,
            unhealthy: false,
            auto_stop_enabled: auto_stop.enabled,
            auto_stop_hours: auto_stop.duration_hours,
            backend: placed_on.into(),
            handle: None,
            created_at: now.clone(),
            updated_at: now,
            last_activity_at: None,
            ssh_enabled,
            ssh_whitelist: whitelist.join(","),
            ssh_port: None,
            stop_at: None,
            stop_warned_at: None,
            idle_timeout_seconds: auto_stop.idle_timeout_seconds,
            activity: None,
            idle_warned_at: None,
            ssh_key_pairs: key_pairs,
        };
        let key_ids = resolve_key_pairs(&mut tx, &who.user_id, &row.ssh_key_pairs).await?;
        rows::insert(&mut tx, &row).await?;
        operations::begin(&mut tx, &row.id, CREATING).await?;
        rows::set_key_pairs(&mut tx, &row.id, &key_ids).await?;
        self.inner
            .mounts
            .insert_create_storage(&mut tx, &row.id, &storage)
            .await?;
        events::record(&mut tx, &row.id, EventKind::Scheduled, None).await?;
        if !row.ssh_key_pairs.is_empty() {
            let detail = key_pair_detail(&who.name, &[], &row.ssh_key_pairs);
            events::record(&mut tx, &row.id, EventKind::ConfigureKeyPair, Some(&detail)).await?;
        }
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateNotebook,
            target(&row),
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        drop(_guard);
        self.spawn_bring_up(row.id.clone(), true);
        Ok(row)
    }

    /// Start; `auto_stop` (seed AS-05: "when you created or started") replaces the
    /// notebook's choice.
    pub async fn start(
        &self,
        grant: NotebookGrant,
        auto_stop: Option<AutoStop>,
    ) -> Result<NotebookRow, Error> {
        self.refuse_if_backend_cannot()?;
        if let Some(a) = &auto_stop {
            validate::auto_stop_hours(a.duration_hours)?;
            if let Some(t) = a.idle_timeout_seconds {
                validate::idle_timeout(t)?;
            }
        }
        self.request_transition_with(
            &grant,
            NotebookOp::Start,
            STARTING,
            Action::StartNotebook,
            auto_stop.as_ref(),
        )
        .await?;
        self.spawn_bring_up(grant.notebook().id.clone(), false);
        self.reload(&grant.notebook().id).await
    }

    pub async fn stop(&self, grant: NotebookGrant) -> Result<NotebookRow, Error> {
        self.request_transition(&grant, NotebookOp::Stop, STOPPING, Action::StopNotebook)
            .await?;
        self.spawn_stop(grant.notebook().id.clone());
        self.reload(&grant.notebook().id).await
    }

    pub async fn delete(&self, grant: NotebookGrant) -> Result<NotebookRow, Error> {
        self.request_transition(&grant, NotebookOp::Delete, DELETING, Action::DeleteNotebook)
            .await?;
        // Read before the background delete starts: it may remove the row before a read
        // after it (the request then answered 404 for a delete it had accepted).
        let row = self.reload(&grant.notebook().id).await?;
        self.spawn_delete(grant.notebook().id.clone());
        Ok(row)
    }

    pub async fn update(
        &self,
        grant: NotebookGrant,
        req: UpdateNotebook,
    ) -> Result<NotebookRow, Error> {
        let s = &self.inner.settings;
        let old = grant.notebook().clone();
        let mut new = old.clone();
        let mut changes: Vec<(EventKind, String)> = Vec::new();
        if let Some(n) = &req.name {
            let n = validate::name(n)?;
            if n != old.name {
                changes.push((EventKind::UpdateName, format!("{} -> {}", old.name, n)));
                new.name = n.to_owned();
            }
        }
        if let Some(d) = &req.description {
            let d = validate::description(d)?;
            if d != old.description {
                changes.push((EventKind::UpdateDescription, String::new()));
                new.description = d.to_owned();
            }
        }
        if let Some(f) = &req.flavor {
            let to = validate::flavor(s, f)?;
            let f = &to.id;
            if *f != old.flavor {
                allow(&old, NotebookOp::ChangeFlavor)?;
                let there = to.backend_or(s.backend.kind).name();
                if there != old.backend {
                    return Err(Error::conflict(format!(
                        "flavor {f} runs notebooks on the {there} backend and notebook {} is on the {} backend, where its files are: pick a flavor of the {} backend, or create a notebook with flavor {f}",
                        old.name, old.backend, old.backend
                    )));
                }
                let note = if old.status == RUNNING {
                    " (takes effect at the next start)"
                } else {
                    ""
                };
                changes.push((
                    EventKind::UpdateFlavor,
                    format!("{} -> {}{note}", old.flavor, f),
                ));
                new.flavor = f.clone();
            }
        }
        if let Some(i) = &req.image {
            let i = &{
                let mut conn = self.inner.store.pool.acquire().await?;
                crate::images::resolve(s, &mut conn, &old.owner_id, i)
                    .await?
                    .id
            };
            if *i != old.image {
                allow(&old, NotebookOp::ChangeImage)?;
                changes.push((EventKind::UpdateImage, format!("{} -> {}", old.image, i)));
                new.image = i.clone();
            }
        }
        let mut keys_changed = false;
        if let Some(ssh) = &req.ssh {
            let who = &grant.principal().name;
            if let Some(enabled) = ssh.enabled
                && enabled != old.ssh_enabled
            {
                if !enabled {
                    return Err(Error::invalid(
                        "ssh.enabled: SSH cannot be turned off once a notebook has it (as in ModelArts); remove key pairs or narrow the whitelist instead",
                    ));
                }
                allow(&old, NotebookOp::EnableSsh)?;
                new.ssh_enabled = true;
            }
            if let Some(k) = &ssh.key_pairs {
                let k = validate::key_pair_names(k)?;
                if k != old.ssh_key_pairs {
                    allow(&old, NotebookOp::ChangeSshKeys)?;
                    let kind = if old.ssh_key_pairs.is_empty() {
                        EventKind::ConfigureKeyPair
                    } else {
                        EventKind::UpdateKeyPair
                    };
                    changes.push((kind, key_pair_detail(who, &old.ssh_key_pairs, &k)));
                    new.ssh_key_pairs = k;
                    keys_changed = true;
                }
            }
            if let Some(w) = &ssh.whitelist {
                let w = validate::whitelist(w)?.join(",");
                if w != old.ssh_whitelist {
                    changes.push((
                        EventKind::UpdateWhitelist,
                        format!(
                            "User {who} updated the whitelist from [{}] to [{}].",
                            old.ssh_whitelist, w
                        ),
                    ));
                    new.ssh_whitelist = w;
                }
            }
            if new.ssh_enabled && new.ssh_key_pairs.is_empty() {
                return Err(no_key_pairs());
            }
            if new.ssh_enabled != old.ssh_enabled && !keys_changed {
                // Turned on with the key pairs it already had.
                changes.push((
                    EventKind::ConfigureKeyPair,
                    key_pair_detail(who, &[], &new.ssh_key_pairs),
                ));
            }
        }
        if changes.is_empty() {
            return Ok(old);
        }
        if old.status == DELETING {
            return Err(Error::conflict(format!(
                "notebook {} is being deleted",
                old.name
            )));
        }
        let mut tx = self.inner.store.write().await?;
        if new.name != old.name
            && rows::name_taken(&mut tx, &old.owner_id, &new.name, &old.id).await?
        {
            return Err(Error::conflict(format!(
                "a notebook named {:?} already exists",
                new.name
            )));
        }
        // Re-check the status inside the transaction: the row may have moved since it was read.
        let current = rows::get(&mut tx, &old.id)
            .await?
            .ok_or_else(|| crate::auth::authz::not_found(&old.id))?;
        if current.status != old.status {
            return Err(Denied::moved(NotebookOp::KIND, &old.name, current.status).into());
        }
        let mut removed_keys = Vec::new();
        if keys_changed {
            let ids = resolve_key_pairs(&mut tx, &old.owner_id, &new.ssh_key_pairs).await?;
            removed_keys = rows::set_key_pairs(&mut tx, &old.id, &ids).await?;
        }
        rows::update_fields(&mut tx, &new, &store::now()).await?;
        for (kind, detail) in &changes {
            let detail = (!detail.is_empty()).then_some(detail.as_str());
            events::record(&mut tx, &old.id, *kind, detail).await?;
        }
        let summary = changes
            .iter()
            .map(|(k, _)| k.name())
            .collect::<Vec<_>>()
            .join(",");
        audit::record(
            &mut tx,
            &grant.principal().name,
            Action::UpdateNotebook,
            target(&new),
            "ok",
            Some(&summary),
        )
        .await?;
        tx.commit().await?;
        for key in removed_keys {
            self.inner.revocations.revoke(
                Subject::NotebookKeyPair(old.id.clone(), key),
                Reason::KeyPairRemoved,
            );
        }
        self.reload(&old.id).await
    }

    async fn reload(&self, id: &str) -> Result<NotebookRow, Error> {
        reload(&self.inner.store, id).await
    }

    /// The request half of start/stop/delete: compare-and-set the status, with audit row.
    async fn request_transition(
        &self,
        grant: &NotebookGrant,
        op: NotebookOp,
        to: NotebookStatus,
        action: Action,
    ) -> Result<(), Error> {
        self.request_transition_with(grant, op, to, action, None)
            .await
    }

    async fn request_transition_with(
        &self,
        grant: &NotebookGrant,
        op: NotebookOp,
        to: NotebookStatus,
        action: Action,
        auto_stop: Option<&AutoStop>,
    ) -> Result<(), Error> {
        let nb = grant.notebook();
        let mut tx = self.inner.store.write().await?;
        Transition::of(&nb.id, op, to)
            .audit(
                &grant.principal().name,
                action,
                target(nb),
                "accepted",
                None,
            )
            .request(&mut tx, op, &nb.name)
            .await?;
        if let Some(a) = auto_stop {
            rows::set_auto_stop(
                &mut tx,
                &nb.id,
                a.enabled,
                a.duration_hours,
                a.idle_timeout_seconds,
            )
            .await?;
        }
        tx.commit().await?;
        self.inner.routes.invalidate(&nb.id);
        Ok(())
    }

    fn spec(&self, row: &NotebookRow) -> NotebookSpec {
        let s = &self.inner.settings;
        let flavor = s
            .flavors
            .iter()
            .find(|f| f.id == row.flavor)
            .unwrap_or_else(|| s.default_flavor())
            .clone();
        NotebookSpec {
            id: row.id.clone(),
            owner: row.owner.clone(),
            flavor,
            image: row.image.clone(),
            image_ref: row.image.clone(),
            base_url: format!("/nb/{}/", row.id),
            work_on_object_storage: false,
            extended_storage: Vec::new(),
            lease: row.auto_stop_enabled.then(|| {
                Duration::from_secs(
                    s.lease_hour_secs
                        .saturating_mul(u64::try_from(row.auto_stop_hours).unwrap_or(0)),
                )
            }),
        }
    }

    fn spawn_bring_up(&self, id: String, creating: bool) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.bring_up(&id, creating).await {
                tracing::error!(notebook = %id, error = format!("{e:#}"), "bringing up a notebook failed");
            }
        });
    }

    fn spawn_stop(&self, id: String) {
        // Whatever stops a notebook (a user, auto-stop, a resumed stop) cuts its connections
        // now, not when its processes are finally gone.
        self.inner
            .revocations
            .revoke(Subject::Notebook(id.clone()), Reason::NotebookStopped);
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.finish_stop(&id).await {
                tracing::error!(notebook = %id, error = format!("{e:#}"), "stopping a notebook failed");
            }
        });
    }

    fn spawn_delete(&self, id: String) {
        self.inner
            .revocations
            .revoke(Subject::Notebook(id.clone()), Reason::NotebookStopped);
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.finish_delete(&id).await {
                tracing::error!(notebook = %id, error = format!("{e:#}"), "deleting a notebook failed");
            }
        });
    }

    /// CREATING or STARTING → RUNNING, or → CREATE_FAILED / START_FAILED.
    async fn bring_up(&self, id: &str, creating: bool) -> anyhow::Result<()> {
        let from = if creating { CREATING } else { STARTING };
        let row = {
            let mut conn = self.inner.store.pool.acquire().await?;
            match rows::get(&mut conn, id).await? {
                Some(r) if r.status == from => r,
                _ => return Ok(()),
            }
        };
        let image_ref = {
            let mut conn = self.inner.store.pool.acquire().await?;
            crate::images::reference_of(&self.inner.settings, &mut conn, &row.owner_id, &row.image)
                .await
        };
        let mut spec = self.spec(&row);
        if let Some(r) = &image_ref {
            spec.image_ref = r.clone();
        }
        spec.work_on_object_storage = self.inner.mounts.work_on_object_storage(id).await?;
        spec.extended_storage = self.inner.mounts.extended_storage(id).await?;
        let backend = &self.inner.backend;
        let progress = StoreProgress {
            store: self.inner.store.clone(),
            notebook_id: id.to_owned(),
        };
        let mut handle: Option<Handle> = row.handle.clone();
        let result: Result<(), BackendError> = async {
            if image_ref.is_none() {
                return Err(BackendError::Image(format!(
                    "the image {:?} is not registered any more; pick another one (atelier notebook update --image)",
                    row.image
                )));
            }
            backend.prepare(&spec, &progress).await?;
            // Object-storage mounts before Jupyter starts, so its first listing shows them;
            // without the storage chosen at create it does not start.
            let failed = self
                .inner
                .mounts
                .ensure_mounts(id)
                .await
                .map_err(|e| BackendError::Start(format!("mounting object storage: {e:#}")))?;
            if !failed.is_empty() {
                return Err(BackendError::Start(format!(
                    "Mount volume failed: {}",
                    failed.join("; ")
                )));
            }
            // Re-attach to what an interrupted attempt launched, or launch anew.
            let reusable = match &handle {
                Some(h) => !matches!(backend.poll(h).await, crate::backends::Observed::Exited(_)),
                None => false,
            };
            if !reusable {
                let h = backend.launch(&spec).await?;
                self.persist_handle(id, Some(&h))
                    .await
                    .map_err(BackendError::Other)?;
                handle = Some(h);
            }
            let h = handle
                .as_ref()
                .ok_or_else(|| BackendError::Start("no handle".into()))?;
            self.inner.files.serve_files(id, &row.owner_id, h);
            let timeout = Duration::from_secs(self.inner.settings.backend.start_timeout_secs);
            backend.wait_ready(&spec, h, timeout, &progress).await?;
            // `atelier.file` answers from the first kernel on (its link's own log says why
            // when it does not).
            self.inner
                .files
                .wait_serving(id, Duration::from_secs(10))
                .await;
            Ok(())
        }
        .await;

        let mut tx = self.inner.store.write().await?;
        match result {
            Ok(()) => {
                if Transition::new(id, &[from], RUNNING)
                    .event(id, EventKind::NotebookHealthy, None)
                    .apply(&mut tx)
                    .await?
                {
                    // The lease counts from now (seed: "when you created or started").
                    let stop_at = row.auto_stop_enabled.then(|| {
                        store::format_time(autostop::deadline(
                            self.now(),
                            row.auto_stop_hours,
                            self.inner.settings.lease_hour_secs,
                        ))
                    });
                    rows::set_stop_at(&mut tx, id, stop_at.as_deref()).await?;
                    rows::set_unhealthy(&mut tx, id, false).await?;
                }
                tx.commit().await?;
            }
            Err(e) => {
                drop(tx);
                let message = e.to_string();
                if let Some(h) = &handle {
                    let _ = backend.stop(h, self.stop_mode()).await;
                }
                let (to, kind) = if creating {
                    (CREATE_FAILED, EventKind::CreateNotebookFailed)
                } else {
                    (START_FAILED, EventKind::StartNotebookFailed)
                };
                let mut tx = self.inner.store.write().await?;
                rows::set_handle(&mut tx, id, None).await?;
                Transition::new(id, &[from], to)
                    .reason(Some(&message))
                    .event(id, kind, Some(&message))
                    .apply(&mut tx)
                    .await?;
                tx.commit().await?;
            }
        }
        self.inner.routes.invalidate(id);
        Ok(())
    }

    async fn finish_stop(&self, id: &str) -> anyhow::Result<()> {
        let Some(row) = self.load_in(id, STOPPING).await? else {
            return Ok(());
        };
        let result = match row.handle.as_ref() {
            Some(h) => self.inner.backend.stop(h, self.stop_mode()).await,
            None => Ok(()),
        };
        self.inner.files.stop_files(id);
        // After the notebook's processes are gone, nothing holds files open in the mounts.
        let result = match result {
            Ok(()) => self
                .inner
                .mounts
                .release_mounts(id)
                .await
                .map_err(|e| BackendError::Other(e.context("unmounting object storage"))),
            e => e,
        };
        let mut tx = self.inner.store.write().await?;
        match result {
            Ok(()) => {
                rows::set_handle(&mut tx, id, None).await?;
                rows::set_stop_at(&mut tx, id, None).await?;
                // An automatic stop keeps its reason ("auto-stopped: …") on the stopped notebook.
                let reason = row.status_reason.as_deref();
                Transition::new(id, &[STOPPING], STOPPED)
                    .reason(reason)
                    .event(id, EventKind::StopNotebook, reason)
                    .apply(&mut tx)
                    .await?;
            }
            Err(e) => {
                let msg = format!("stopping failed: {e}");
                Transition::new(id, &[STOPPING], ERROR)
                    .reason(Some(&msg))
                    .apply(&mut tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.inner.routes.invalidate(id);
        Ok(())
    }

    async fn finish_delete(&self, id: &str) -> anyhow::Result<()> {
        let Some(row) = self.load_in(id, DELETING).await? else {
            return Ok(());
        };
        let backend = &self.inner.backend;
        let mut result = match row.handle.as_ref() {
            Some(h) => backend.stop(h, self.stop_mode()).await,
            None => Ok(()),
        };
        self.inner.files.stop_files(id);
        if result.is_ok()
            && let Err(e) = self.inner.uploads.discard_uploads(id).await
        {
            tracing::warn!(notebook = %id, error = format!("{e:#}"), "discarding uploads in flight");
        }
        if result.is_ok() {
            result = self
                .inner
                .mounts
                .release_mounts(id)
                .await
                .map_err(|e| BackendError::Other(e.context("unmounting object storage")));
        }
        if result.is_ok() {
            result = backend.delete(id).await;
        }
        let mut tx = self.inner.store.write().await?;
        match result {
            Ok(()) => {
                rows::delete(&mut tx, id).await?;
                operations::end::<NotebookStatus>(&mut tx, id).await?;
                self.inner.clocks.forget(id);
            }
            Err(e) => {
                let msg = format!("deleting failed: {e}; delete again to retry");
                Transition::new(id, &[DELETING], ERROR)
                    .reason(Some(&msg))
                    .apply(&mut tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.inner.routes.invalidate(id);
        Ok(())
    }

    async fn load_in(
        &self,
        id: &str,
        status: NotebookStatus,
    ) -> anyhow::Result<Option<NotebookRow>> {
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::get(&mut conn, id)
            .await?
            .filter(|r| r.status == status))
    }

    async fn persist_handle(&self, id: &str, handle: Option<&Handle>) -> anyhow::Result<()> {
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::set_handle(&mut conn, id, handle).await?;
        Ok(())
    }

    fn stop_mode(&self) -> StopMode {
        StopMode {
            grace: Duration::from_secs(self.inner.settings.backend.stop_grace_secs),
        }
    }

    /// Stops a running notebook by the gateway's own decision: RUNNING → STOPPING with the
    /// reason on the notebook, the reason's event and an audit row, then the usual stop.
    pub(crate) async fn auto_stop(
        &self,
        row: &NotebookRow,
        reason: autostop::Reason,
        detail: &str,
    ) -> anyhow::Result<()> {
        let status_reason = format!("auto-stopped: {}", reason.as_str());
        let mut tx = self.inner.store.write().await?;
        if !Transition::new(&row.id, &[RUNNING], STOPPING)
            .reason(Some(&status_reason))
            .event(&row.id, reason.event(), Some(detail))
            .audit(
                audit::SYSTEM,
                Action::StopNotebook,
                target(row),
                "accepted",
                Some(detail),
            )
            .apply(&mut tx)
            .await?
        {
            return Ok(());
        }
        tx.commit().await?;
        self.inner
            .metrics
            .auto_stops
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        tracing::info!(notebook = %row.id, reason = reason.as_str(), "stopping a notebook automatically");
        self.inner.routes.invalidate(&row.id);
        self.spawn_stop(row.id.clone());
        Ok(())
    }

    /// Moves a running notebook's auto-stop deadline `hours` (default: its duration) later,
    /// counted from the current deadline (or now, once it passed), at most 72 hours ahead.
    pub async fn renew(
        &self,
        grant: NotebookGrant,
        hours: Option<i64>,
    ) -> Result<NotebookRow, Error> {
        let nb = grant.notebook();
        if let Some(h) = hours {
            validate::renew_hours(h)?;
        }
        let mut tx = self.inner.store.write().await?;
        let row = rows::get(&mut tx, &nb.id)
            .await?
            .ok_or_else(|| crate::auth::authz::not_found(&nb.id))?;
        allow(&row, NotebookOp::Renew)?;
        if !row.auto_stop_enabled {
            return Err(Error::conflict(format!(
                "notebook {} has auto-stop off, so there is nothing to renew; turn it on when starting it (auto_stop.enabled)",
                row.name
            )));
        }
        let hours = hours.unwrap_or(row.auto_stop_hours);
        let now = self.now();
        let lease_hour = self.inner.settings.lease_hour_secs;
        let current = row
            .stop_at
            .as_deref()
            .and_then(autostop::parse_time)
            .unwrap_or(now);
        let new = autostop::deadline(current.max(now), hours, lease_hour).min(autostop::deadline(
            now,
            validate::MAX_AUTO_STOP_HOURS,
            lease_hour,
        ));
        let new_text = store::format_time(new);
        rows::set_stop_at(&mut tx, &row.id, Some(&new_text)).await?;
        let detail = format!(
            "auto-stop moved from {} to {new_text}",
            store::format_time(current)
        );
        events::record(&mut tx, &row.id, EventKind::RenewNotebook, Some(&detail)).await?;
        audit::record(
            &mut tx,
            &grant.principal().name,
            Action::RenewNotebook,
            target(&row),
            "ok",
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        // A scheduler's time limit follows the lease (after the commit: the cluster may be
        // slow; what it refuses is said as an event).
        if let Some(h) = &row.handle {
            let left = (new - now).try_into().unwrap_or_default();
            if let Err(e) = self.inner.backend.extend(h, left).await {
                tracing::warn!(notebook = %row.id, error = %e, "the backend did not follow the renewed lease");
                let mut tx = self.inner.store.write().await?;
                let detail = format!("auto-stop moved to {new_text}, but {e}");
                events::record(&mut tx, &row.id, EventKind::RenewNotebook, Some(&detail)).await?;
                tx.commit().await?;
            }
        }
        self.inner.routes.invalidate(&row.id);
        self.reload(&row.id).await
    }

    /// Grows a running notebook's work disk to `size_gb` (seed: at most +100 GB a time,
    /// 4,096 GB in all), with `UpdateStorageSize` events before and after.
    pub async fn expand_storage(
        &self,
        grant: NotebookGrant,
        size_gb: i64,
    ) -> Result<NotebookRow, Error> {
        use crate::backends::workdisk::{MAX_SIZE_GB, MAX_STEP_GB};
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        allow(&nb, NotebookOp::ExpandStorage)?;
        let Some(disk) = self.inner.backend.work_disk(&nb.id) else {
            return Err(Error::conflict(format!(
                "notebook {} has no work disk to expand: the {} backend keeps its files in a plain directory",
                nb.name,
                self.inner.backend.name()
            )));
        };
        if disk.kind != "disk" {
            return Err(Error::conflict(format!(
                "notebook {}'s work dir is a plain directory with no size limit, so there is nothing to expand{}",
                nb.name,
                disk.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )));
        }
        let current = i64::from(disk.size_gb);
        if size_gb <= current {
            return Err(Error::invalid(format!(
                "size_gb: the work disk has {current} GB; ask for more (a disk only grows)"
            )));
        }
        if size_gb > i64::from(MAX_SIZE_GB) {
            return Err(Error::invalid(format!(
                "size_gb: {size_gb} is above the largest work disk, {MAX_SIZE_GB} GB"
            )));
        }
        if size_gb - current > i64::from(MAX_STEP_GB) {
            return Err(Error::invalid(format!(
                "size_gb: at most {MAX_STEP_GB} GB more at a time: from {current} GB up to {} GB",
                current + i64::from(MAX_STEP_GB)
            )));
        }
        let Some(handle) = nb.handle.as_ref() else {
            return Err(Error::conflict(format!(
                "notebook {} is not running yet",
                nb.name
            )));
        };
        // One expansion at a time per notebook.
        let Some(_guard) = self.inner.expanding.try_lock(&nb.id) else {
            return Err(Error::conflict(format!(
                "notebook {}'s storage is already being expanded",
                nb.name
            )));
        };
        let detail =
            format!("User {user} is updating storage size from {current} GB to {size_gb} GB.");
        let mut tx = self.inner.store.write().await?;
        events::record(
            &mut tx,
            &nb.id,
            EventKind::UpdatingStorageSize,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        let outcome = self
            .inner
            .backend
            .expand_work_disk(handle, size_gb as u32)
            .await;
        let mut tx = self.inner.store.write().await?;
        let result = match &outcome {
            Ok(_) => {
                let done = format!("User {user} updated the storage size.");
                events::record(&mut tx, &nb.id, EventKind::UpdateStorageSize, Some(&done)).await?;
                "ok"
            }
            Err(e) => {
                tracing::error!(notebook = %nb.id, error = format!("{e:#}"), "expanding the work disk");
                let why = format!("Updating the disk size failed: {e}");
                events::record(
                    &mut tx,
                    &nb.id,
                    EventKind::UpdateStorageSizeFailed,
                    Some(&why),
                )
                .await?;
                "failed"
            }
        };
        audit::record(
            &mut tx,
            &user,
            Action::UpdateNotebook,
            target(&nb),
            result,
            Some(&format!("storage from {current} GB to {size_gb} GB")),
        )
        .await?;
        tx.commit().await?;
        match outcome {
            Ok(_) => self.reload(&nb.id).await,
            Err(e) => Err(Error::new(
                Kind::Internal,
                "storage_expand_failed",
                format!("expanding the work disk failed (it keeps {current} GB): {e}"),
            )),
        }
    }

    /// After a gateway start: every operation a previous gateway left unfinished runs
    /// again (or, after [`operations::MAX_RESUMES`] starts, is given up with its failure
    /// event), and notebooks recorded as running are checked.
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.inner.mounts.forget_interrupted_mounts().await?;
        self.inner.uploads.resume_uploads().await?;
        let pending = operations::resume::<NotebookStatus>(&self.inner.store).await?;
        for op in pending {
            let current = {
                let mut conn = self.inner.store.pool.acquire().await?;
                rows::get(&mut conn, &op.resource_id).await?
            };
            let Some(row) = current.filter(|r| r.status == op.status) else {
                // The resource moved on or went without ending its operation (an upgrade).
                let mut conn = self.inner.store.pool.acquire().await?;
                operations::end::<NotebookStatus>(&mut conn, &op.resource_id).await?;
                continue;
            };
            if op.status == SNAPSHOTTING {
                // A save is never resumed: its container commit died with the gateway.
                self.inner.saves.abandon_save(&row).await?;
            } else if op.exhausted() {
                tracing::error!(notebook = %row.id, status = %row.status, attempts = op.attempts, "giving up an operation that did not survive earlier gateway starts");
                self.give_up(&row, op.attempts).await?;
            } else {
                tracing::info!(notebook = %row.id, status = %row.status, attempt = op.attempts, "resuming an unfinished operation");
                match row.status {
                    CREATING => self.spawn_bring_up(row.id, true),
                    STARTING => self.spawn_bring_up(row.id, false),
                    STOPPING => self.spawn_stop(row.id),
                    _ => self.spawn_delete(row.id),
                }
            }
        }
        health::check_running(self).await
    }

    /// Ends an operation that keeps being cut short by gateway restarts: its failure status,
    /// with the reason and the failure event.
    async fn give_up(&self, row: &NotebookRow, attempts: i64) -> anyhow::Result<()> {
        let (to, event, what, retry) = match row.status {
            CREATING => (
                CREATE_FAILED,
                Some(EventKind::CreateNotebookFailed),
                "creating",
                "delete it and create it again",
            ),
            STARTING => (
                START_FAILED,
                Some(EventKind::StartNotebookFailed),
                "starting",
                "start it again",
            ),
            STOPPING => (ERROR, None, "stopping", "stop it again"),
            _ => (ERROR, None, "deleting", "delete it again"),
        };
        let reason = format!(
            "{what} was cut short by {} gateway restarts in a row and is given up (the gateway's log says why); {retry} to retry",
            attempts - 1
        );
        let mut tx = self.inner.store.write().await?;
        let from = [row.status];
        let mut change = Transition::new(&row.id, &from, to).reason(Some(&reason));
        if let Some(kind) = event {
            change = change.event(&row.id, kind, Some(&reason));
        }
        change.apply(&mut tx).await?;
        tx.commit().await?;
        self.inner.routes.invalidate(&row.id);
        Ok(())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.inner.routes
    }

    pub(crate) fn clocks(&self) -> &ActivityClocks {
        &self.inner.clocks
    }

    /// Now, by the lifecycle's clock.
    pub fn now(&self) -> time::OffsetDateTime {
        self.inner.clock.now()
    }
}

fn target(row: &NotebookRow) -> Target<'_> {
    Target {
        kind: "notebook",
        id: &row.id,
        name: &row.name,
    }
}

/// Refuses `op` unless the notebook's status allows it: a 409 that names the notebook, its
/// status and where the operation is allowed.
pub fn allow(row: &NotebookRow, op: NotebookOp) -> Result<(), Error> {
    Ok(op.check(&row.name, row.status)?)
}

/// The notebook as stored now; not found (as authz says it) when it went meanwhile.
async fn reload(store: &Store, id: &str) -> Result<NotebookRow, Error> {
    let mut conn = store.pool.acquire().await?;
    rows::get(&mut conn, id)
        .await?
        .ok_or_else(|| crate::auth::authz::not_found(id))
}

/// Backend progress written as events of the notebook.
struct StoreProgress {
    store: Store,
    notebook_id: String,
}

#[async_trait]
impl Progress for StoreProgress {
    async fn event(&self, kind: EventKind, detail: Option<&str>) {
        self.event_text(kind, kind.description(), detail).await;
    }

    async fn event_text(&self, kind: EventKind, description: &str, detail: Option<&str>) {
        let result = async {
            let mut conn = self.store.pool.acquire().await?;
            events::record_text(&mut conn, &self.notebook_id, kind, description, detail).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(notebook = %self.notebook_id, error = %e, "recording a progress event failed");
        }
    }
}

fn no_key_pairs() -> Error {
    Error::invalid(
        "ssh.key_pairs: SSH needs at least one key pair; create one with `atelier keypair create NAME` (POST /v1/keypairs) and name it here",
    )
}

/// The seed's `UpdateKeyPair` detail texts.
fn key_pair_detail(who: &str, old: &[String], new: &[String]) -> String {
    if old.is_empty() {
        format!(
            "User {who} updated the instance key pair to {{ {}}}.",
            new.join(", ")
        )
    } else {
        format!(
            "User {who} updated the instance key pair from {} to {}.",
            old.join(", "),
            new.join(", ")
        )
    }
}

/// The ids of `owner_id`'s key pairs by name; a missing one is the seed's error.
async fn resolve_key_pairs(
    conn: &mut store::Conn,
    owner_id: &str,
    names: &[String],
) -> Result<Vec<String>, Error> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        match store::keypairs::by_name(conn, owner_id, name).await? {
            Some(k) => ids.push(k.id),
            None => {
                return Err(Error::invalid(format!(
                    "ssh.key_pairs: Failed to find SSH key pair {name}. Create or import it first (atelier keypair create {name}), or name one of yours (atelier keypair list)"
                )));
            }
        }
    }
    Ok(ids)
}
#[cfg(test)]
mod tests {
    //! Lifecycle against backends that fail on purpose (fault injection); the real process
    //! backend is exercised end to end in `tests/`.
    use super::*;
    use crate::auth::Role;
    use crate::backends::fake::{FakeBackend, Faults};
    use crate::store::users;

    async fn setup(fail_prepare: bool) -> (Lifecycle, Principal, std::path::PathBuf) {
        let backend = FakeBackend::new(Faults {
            prepare: fail_prepare,
            never_ready: true,
            hold: false,
        });
        setup_with(
            Arc::new(backend),
            Arc::new(crate::lifecycle::clock::SystemClock),
        )
        .await
    }

    async fn setup_with(
        backend: Arc<FakeBackend>,
        clock: Arc<dyn Clock>,
    ) -> (Lifecycle, Principal, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("atelier-lc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).await.unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        users::insert_user(&mut c, "u1", "alice", "user", &store::now())
            .await
            .unwrap();
        drop(c);
        let backend: Arc<dyn Backend> = backend;
        let settings = Arc::new(Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        });
        let routes = RouteTable::new(store.clone(), backend.clone());
        let clocks = ActivityClocks::new(store.clone(), clock.clone());
        let secrets = Arc::new(crate::secrets::SecretBox::new(&[7u8; 32]).unwrap());
        let lc = Lifecycle::new(LifecycleParts {
            store,
            backend,
            settings,
            routes,
            clocks,
            secrets,
            revocations: crate::auth::revoke::Revocations::new(),
            metrics: Default::default(),
            clock,
            file_server: None,
        });
        let who = Principal {
            user_id: "u1".into(),
            name: "alice".into(),
            role: Role::User,
            token_id: "t".into(),
        };
        (lc, who, dir)
    }

    async fn settle(lc: &Lifecycle, id: &str) -> (NotebookRow, Vec<String>) {
        lc.tasks().close();
        lc.tasks().wait().await;
        let mut c = lc.store().pool.acquire().await.unwrap();
        let row = rows::get(&mut c, id).await.unwrap().unwrap();
        let names = events::list(&mut c, id, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        (row, names)
    }

    fn request(name: &str) -> CreateNotebook {
        CreateNotebook {
            name: Some(name.into()),
            description: None,
            flavor: None,
            image: None,
            auto_stop: None,
            ssh: None,
            storage: None,
            extended_storage: Vec::new(),
        }
    }

    /// A notebook brought up (RUNNING) by a backend that stays up, on a clock the test moves.
    async fn running_on_a_manual_clock(
        auto_stop: AutoStop,
    ) -> (
        Lifecycle,
        crate::lifecycle::clock::ManualClock,
        NotebookRow,
        std::path::PathBuf,
    ) {
        let clock = crate::lifecycle::clock::ManualClock::new();
        let backend = Arc::new(FakeBackend::new(Faults::default()));
        let (lc, who, dir) = setup_with(backend, Arc::new(clock.clone())).await;
        let mut req = request("nb");
        req.auto_stop = Some(auto_stop);
        let row = lc.create(&who, req).await.unwrap();
        let (row, _) = settle(&lc, &row.id).await;
        lc.tasks().reopen();
        assert_eq!(row.status, RUNNING);
        (lc, clock, row, dir)
    }

    /// `passes` auto-stop passes, then the notebook and its event names once what they
    /// started has finished.
    async fn pass(
        lc: &Lifecycle,
        sampler: &mut autostop::Sampler,
        passes: usize,
        id: &str,
    ) -> (NotebookRow, Vec<String>) {
        for _ in 0..passes {
            autostop::check(lc, sampler).await.unwrap();
        }
        let seen = settle(lc, id).await;
        lc.tasks().reopen();
        seen
    }

    /// A lease with a clock moved by hand: no sleep, and the warning and the stop land at
    /// their times exactly.
    #[tokio::test]
    async fn a_lease_warns_once_then_stops_the_notebook_when_the_clock_reaches_it() {
        use time::Duration as D;
        let (lc, clock, row, dir) = running_on_a_manual_clock(AutoStop {
            enabled: true,
            duration_hours: 2,
            idle_timeout_seconds: Some(0),
        })
        .await;
        let stop_at = autostop::parse_time(row.stop_at.as_deref().unwrap()).unwrap();
        assert_eq!(
            stop_at - lc.now(),
            D::hours(2),
            "the lease counts from the start"
        );
        let lease_events = |names: &[String]| {
            names
                .iter()
                .filter(|n| *n == "StopNotebookLeaseExpired")
                .count()
        };
        let mut sampler = autostop::Sampler::default();

        // 1 h 55 min in, just before the 5 min warning window: nothing.
        clock.advance(D::minutes(115) - D::seconds(1));
        autostop::check(&lc, &mut sampler).await.unwrap();
        let (row, names) = settle(&lc, &row.id).await;
        lc.tasks().reopen();
        assert_eq!(
            (row.status, lease_events(&names)),
            (RUNNING, 0),
            "{names:?}"
        );

        // In the window: one warning, however many passes see it.
        clock.advance(D::seconds(1));
        for _ in 0..3 {
            autostop::check(&lc, &mut sampler).await.unwrap();
        }
        let (row, names) = settle(&lc, &row.id).await;
        lc.tasks().reopen();
        assert_eq!(
            (row.status, lease_events(&names)),
            (RUNNING, 1),
            "{names:?}"
        );
        assert!(row.stop_warned_at.is_some());

        // At the deadline: stopped by the gateway, with the reason.
        clock.advance(D::minutes(5));
        let (row, names) = pass(&lc, &mut sampler, 1, &row.id).await;
        assert_eq!(row.status, STOPPED, "{names:?}");
        assert_eq!(lease_events(&names), 2, "{names:?}");
        assert!(
            row.status_reason
                .as_deref()
                .is_some_and(|r| r.contains("lease_expired")),
            "{:?}",
            row.status_reason
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An idle timeout with a clock moved by hand: a warning before, the stop at the timeout.
    #[tokio::test]
    async fn an_idle_notebook_is_warned_then_stopped_by_the_clock() {
        use time::Duration as D;
        let (lc, clock, row, dir) = running_on_a_manual_clock(AutoStop {
            enabled: false,
            duration_hours: 1,
            idle_timeout_seconds: Some(600),
        })
        .await;
        let idle_events = |names: &[String]| {
            names
                .iter()
                .filter(|n| *n == "StopNotebookResourceIdle")
                .count()
        };
        let mut sampler = autostop::Sampler::default();
        // The warning comes 5 min (stop_warning_secs) before the 10 min timeout; the clock
        // started at most a second before the notebook's last change. Activity at 301 s
        // starts a new idle period: a new warning at 601 s, the stop at 901 s.
        let steps = [
            (299, RUNNING, 0, false),
            (2, RUNNING, 1, true),
            (299, RUNNING, 1, false),
            (1, RUNNING, 2, false),
            (299, RUNNING, 2, false),
            (1, STOPPED, 3, false),
        ];
        for (secs, status, events, touch) in steps {
            clock.advance(D::seconds(secs));
            let (row, names) = pass(&lc, &mut sampler, 1, &row.id).await;
            assert_eq!(
                (row.status, idle_events(&names)),
                (status, events),
                "after {secs} more s: {names:?}"
            );
            if touch {
                lc.clocks()
                    .touch_notebook(&row.id, crate::activity::Source::Proxy);
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_notebook_that_never_answers_ends_create_failed() {
        let (lc, who, dir) = setup(false).await;
        let row = lc.create(&who, request("nb")).await.unwrap();
        assert_eq!(row.status, CREATING);
        let (row, names) = settle(&lc, &row.id).await;
        assert_eq!(row.status, CREATE_FAILED);
        assert_eq!(row.status_reason.as_deref(), Some("never became ready"));
        assert_eq!(
            row.handle, None,
            "what was launched is forgotten after it is stopped"
        );
        assert_eq!(names, ["Scheduled", "CreateNotebookFailed"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_image_failure_is_reported_with_its_event() {
        let (lc, who, dir) = setup(true).await;
        let row = lc.create(&who, request("nb")).await.unwrap();
        let (row, names) = settle(&lc, &row.id).await;
        assert_eq!(row.status, CREATE_FAILED);
        assert_eq!(
            names,
            ["Scheduled", "PullImageFailed", "CreateNotebookFailed"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Puts notebook `id` in `status` with its operation resumed `attempts` times before.
    async fn interrupted(lc: &Lifecycle, id: &str, status: NotebookStatus, attempts: i64) {
        let mut c = lc.store().pool.acquire().await.unwrap();
        sqlx::query("UPDATE notebooks SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&mut *c)
            .await
            .unwrap();
        operations::begin(&mut c, id, status).await.unwrap();
        sqlx::query("UPDATE operations SET attempts = $1 WHERE resource_id = $2")
            .bind(attempts)
            .bind(id)
            .execute(&mut *c)
            .await
            .unwrap();
    }

    async fn operations_left(lc: &Lifecycle) -> i64 {
        let mut c = lc.store().pool.acquire().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM operations")
            .fetch_one(&mut *c)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn unfinished_operations_resume_until_restarts_keep_cutting_them_short() {
        // Held in `prepare` until both creates are seen in flight.
        let backend = Arc::new(FakeBackend::new(Faults {
            prepare: false,
            never_ready: true,
            hold: true,
        }));
        let (lc, who, dir) = setup_with(
            backend.clone(),
            Arc::new(crate::lifecycle::clock::SystemClock),
        )
        .await;
        let (a, b) = (
            lc.create(&who, request("a")).await.unwrap(),
            lc.create(&who, request("b")).await.unwrap(),
        );
        assert_eq!(operations_left(&lc).await, 2, "a create is an operation");
        backend.release();
        lc.tasks().close();
        lc.tasks().wait().await;
        lc.tasks().reopen();
        assert_eq!(operations_left(&lc).await, 0, "ended with its final status");
        // As a gateway that died while starting them left them: `a` resumed twice already,
        // `b` as often as it may be.
        interrupted(&lc, &a.id, STARTING, 2).await;
        interrupted(&lc, &b.id, STARTING, operations::MAX_RESUMES).await;
        // An operation whose notebook went (a crash before the row was cleaned) is dropped.
        {
            let mut c = lc.store().pool.acquire().await.unwrap();
            operations::begin(&mut c, "gone", DELETING).await.unwrap();
        }
        lc.resume().await.unwrap();
        let (a, a_events) = settle(&lc, &a.id).await;
        assert_eq!(
            (a.status, a.status_reason.as_deref()),
            (START_FAILED, Some("never became ready")),
            "resumed: the backend was asked again"
        );
        assert_eq!(
            a_events.last().map(String::as_str),
            Some("StartNotebookFailed")
        );
        let (b, b_events) = settle(&lc, &b.id).await;
        assert_eq!(b.status, START_FAILED);
        assert_eq!(
            b.status_reason.as_deref(),
            Some(
                "starting was cut short by 3 gateway restarts in a row and is given up (the gateway's log says why); start it again to retry"
            )
        );
        assert_eq!(
            b_events.last().map(String::as_str),
            Some("StartNotebookFailed")
        );
        assert_eq!(operations_left(&lc).await, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn rejected_creates_leave_nothing_behind() {
        let (lc, who, dir) = setup(false).await;
        let mut bad = request("ok");
        bad.auto_stop = Some(AutoStop {
            enabled: true,
            duration_hours: 73,
            idle_timeout_seconds: None,
        });
        assert_eq!(lc.create(&who, bad).await.unwrap_err().kind, Kind::Invalid);
        let mut bad = request("ok");
        bad.flavor = Some("gpu-x".into());
        assert_eq!(lc.create(&who, bad).await.unwrap_err().kind, Kind::Invalid);
        lc.create(&who, request("dup")).await.unwrap();
        let e = lc.create(&who, request("dup")).await.unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::Conflict, "conflict"));
        let mut c = lc.store().pool.acquire().await.unwrap();
        assert_eq!(rows::count_for_owner(&mut c, "u1").await.unwrap(), 1);
        drop(c);
        lc.tasks().close();
        lc.tasks().wait().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
