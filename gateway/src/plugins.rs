//! Wasm plugins: registration under a name and version, listing, deletion and trial calls,
//! over the host in the `atelier-plugins` crate. The component and its compiled form are
//! kept by digest under `<data>/plugins/cache` (so a restart compiles nothing); model files
//! uploaded with an inference processor under `<data>/plugins/files/<name>/<version>/`;
//! the directory standing in for object storage under `<data>/plugins/storage/<user>/`.

use std::path::PathBuf;
use std::sync::Arc;

use atelier_plugins::{
    CallContext, CallReport, Host, LimitsSpec, PluginRef, RegisterError, TrainReport, TrainRun,
    TrainWatch, World,
};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::config::Settings;
use crate::error::{Error, Kind};
use crate::store::plugins::PluginRow;
use crate::store::{self, Store};
use std::collections::HashMap;

use atelier_plugins::bindings::workflow::atelier::plugin::step_types;

/// Semantic versions in order (`1.10.0` after `1.9.0`); others by text.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

pub fn host_dir(settings: &Settings) -> PathBuf {
    settings
        .plugins
        .cache_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("plugins").join("cache"))
}

fn files_dir(settings: &Settings, name: &str, version: &str) -> PathBuf {
    settings
        .data_dir
        .join("plugins")
        .join("files")
        .join(name)
        .join(version)
}

/// The directory standing in for a user's object storage (until the S3 issue).
pub fn storage_dir(settings: &Settings, user_id: &str) -> PathBuf {
    settings
        .data_dir
        .join("plugins")
        .join("storage")
        .join(user_id)
}

pub fn open_host(settings: &Settings) -> anyhow::Result<Arc<Host>> {
    Host::new(host_dir(settings), settings.plugins.host_settings())
}

/// The manifest uploaded with a component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Checked against the component's exports; inferred from them when absent.
    #[serde(default)]
    pub world: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub limits: LimitsSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub owner: String,
    pub world: String,
    pub digest: String,
    pub description: String,
    pub size: i64,
    pub compile_ms: f64,
    pub limits: serde_json::Value,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub files: Vec<String>,
    pub created_at: String,
}

impl From<PluginRow> for PluginView {
    fn from(r: PluginRow) -> Self {
        PluginView {
            limits: serde_json::from_str(&r.limits).unwrap_or_default(),
            exports: serde_json::from_str(&r.exports).unwrap_or_default(),
            imports: serde_json::from_str(&r.imports).unwrap_or_default(),
            files: serde_json::from_str(&r.files).unwrap_or_default(),
            name: r.name,
            version: r.version,
            owner: r.owner_name,
            world: r.world,
            digest: r.digest,
            description: r.description,
            size: r.size_bytes,
            compile_ms: r.compile_ms,
            created_at: r.created_at,
        }
    }
}

/// What registration answers: the plugin, and whether this call created it.
pub struct Registration {
    pub view: PluginView,
    pub created: bool,
    pub compiled: bool,
}

/// Names: 1-64 of a-z 0-9 - _ starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "plugin name {name:?}: use 1-64 of a-z, 0-9, - and _, starting with a letter or digit"
        )))
    }
}

/// Versions: 1-32 of letters, digits and `.+-`, e.g. `1.0.0`.
pub fn check_version(version: &str) -> Result<(), Error> {
    let ok = !version.is_empty()
        && version.len() <= 32
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'))
        && version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "plugin version {version:?}: use 1-32 of letters, digits, '.', '+' and '-' (like 1.0.0)"
        )))
    }
}

/// A model file's name: a plain file name.
fn check_file_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "model file name {name:?}: give a plain file name (no directories)"
        )))
    }
}

fn register_error(e: RegisterError) -> Error {
    match e {
        RegisterError::TooLarge { .. } => {
            Error::new(Kind::TooLarge, "payload_too_large", e.to_string())
        }
        RegisterError::Host(m) => Error::internal(anyhow::anyhow!(m)),
        other => Error::invalid(other.to_string()),
    }
}

fn plugin_ref(settings: &Settings, row: &PluginRow) -> Result<PluginRef, Error> {
    let world = World::parse(&row.world).ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "stored plugin with unknown world {}",
            row.world
        ))
    })?;
    let limits =
        serde_json::from_str(&row.limits).map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    let files: Vec<String> = serde_json::from_str(&row.files).unwrap_or_default();
    let dir = files_dir(settings, &row.name, &row.version);
    Ok(PluginRef {
        key: format!("{}@{}", row.name, row.version),
        digest: row.digest.clone(),
        world,
        limits,
        model_dir: (world == World::InferenceProcessor && (!files.is_empty() || dir.exists()))
            .then_some(dir),
    })
}

/// A training job's run of a Wasm algorithm, as [`Plugins::train`] takes it: plain values,
/// so that the jobs module keeps its own types.
#[derive(Debug, Clone)]
pub struct TrainingCall {
    pub plugin_name: String,
    pub plugin_version: String,
    pub job_name: String,
    /// 0 on the first run; one more on each restart.
    pub attempt: u32,
    /// (channel name, storage prefix under the owner's storage): read-only.
    pub inputs: Vec<(String, String)>,
    /// (channel name, storage prefix): writable; must not overlap any input.
    pub outputs: Vec<(String, String)>,
    /// Checked against the algorithm's `describe()` (defaults filled in) before `train`.
    pub hyperparameters: serde_json::Map<String, serde_json::Value>,
    /// The checkpoint to resume from (a rebuilt job's); None: the newest one on a restart
    /// (attempt > 0), nothing on a first run.
    pub resume_from_step: Option<u64>,
    /// The job's maximum running duration: then `should-stop` turns true.
    pub time_limit: std::time::Duration,
    /// After a stop or the time limit, how long the guest may run on before it is
    /// interrupted ([`atelier_plugins::training::DEFAULT_GRACE`]: 30 s).
    pub grace: std::time::Duration,
}

/// A workflow step's run of a `workflow-step` component, as [`Plugins::run_step`] takes it:
/// plain values, so that the workflows module keeps its own types. Every path is a key
/// under the owner's plugin storage (`bucket/folder/`).
#[derive(Debug, Clone)]
pub struct StepCall {
    pub plugin_name: String,
    /// None: the newest version registered.
    pub plugin_version: Option<String>,
    pub workflow_name: String,
    pub execution_id: String,
    pub step_name: String,
    pub attempt: u32,
    /// (name, data): a storage prefix (granted read-only) or a value.
    pub inputs: Vec<(String, StepData)>,
    /// (name, storage prefix): granted read-write.
    pub outputs: Vec<(String, String)>,
    /// Further prefixes (prefix, writable).
    pub grants: Vec<(String, bool)>,
    /// What the component reads through its `parameters` import.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// When the step is stopped (its `max_execution_minutes`), or the plugin's own limit.
    pub deadline: std::time::Instant,
}

/// An input of a step: data under a storage prefix, or a value.
#[derive(Debug, Clone)]
pub enum StepData {
    Prefix(String),
    Value(serde_json::Value),
}

/// What a step's run gave back.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// The component's error, or why it could not run to its end.
    pub error: Option<String>,
    pub outputs: std::collections::BTreeMap<String, serde_json::Value>,
    pub variables: std::collections::BTreeMap<String, String>,
    /// Each scalar metric's last value.
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Its log lines, stdout and stderr (as much as the host kept).
    pub log: String,
}

/// The lock key of a plugin's registration (see [`Host::lock_key`]).
fn plugin_key(name: &str, version: &str) -> String {
    format!("plugin:{name}@{version}")
}

/// The lock key of a component's files (by digest).
pub(crate) fn digest_key(digest: &str) -> String {
    format!("digest:{digest}")
}

/// The plugin registry and calls, for the API (and the workflows, services and training
/// jobs that will call plugins): one value holding what every operation needs.
#[derive(Clone)]
pub struct Plugins {
    settings: Arc<Settings>,
    store: Store,
    host: Arc<Host>,
    rows: Arc<std::sync::Mutex<RowCache>>,
}

/// Registrations as last read, so a workflow's steps (a call each) do not read the same row
/// again and again. Every registration and deletion moves `generation` on (before its write
/// and after its commit), and a read that began under an older generation is not kept: the
/// cache never holds a row its database no longer has.
#[derive(Default)]
struct RowCache {
    generation: u64,
    exact: HashMap<(String, String), PluginRow>,
    newest: HashMap<String, PluginRow>,
}

impl Plugins {
    pub fn new(settings: Arc<Settings>, store: Store, host: Arc<Host>) -> Self {
        Plugins {
            settings,
            store,
            host,
            rows: Default::default(),
        }
    }

    /// The Wasm host itself (metrics, diagnostics).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Forgets every registration read (a registration or deletion is under way or done).
    fn forget_rows(&self) {
        if let Ok(mut c) = self.rows.lock() {
            c.generation += 1;
            c.exact.clear();
            c.newest.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.rows.lock().map(|c| c.generation).unwrap_or(u64::MAX)
    }

    fn cached(&self, name: &str, version: Option<&str>) -> Option<PluginRow> {
        let c = self.rows.lock().ok()?;
        match version {
            Some(v) => c.exact.get(&(name.to_owned(), v.to_owned())).cloned(),
            None => c.newest.get(name).cloned(),
        }
    }

    /// Keeps a row read under `generation`, unless a write came meanwhile.
    fn keep(&self, generation: u64, newest: bool, row: &PluginRow) {
        if let Ok(mut c) = self.rows.lock()
            && c.generation == generation
        {
            if newest {
                c.newest.insert(row.name.clone(), row.clone());
            } else {
                c.exact
                    .insert((row.name.clone(), row.version.clone()), row.clone());
            }
        }
    }

    /// Registers a component under the manifest's name and version. The same component and
    /// manifest again is a no-op (idempotent); another component under a taken name and version
    /// is refused.
    pub async fn register(
        &self,
        who: &Principal,
        manifest: Manifest,
        component: Vec<u8>,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Registration, Error> {
        let (settings, store, host) = (&*self.settings, &self.store, &self.host);
        check_name(&manifest.name)?;
        check_version(&manifest.version)?;
        if manifest.description.len() > 1024 {
            return Err(Error::invalid("description: at most 1024 bytes"));
        }
        let expected = match &manifest.world {
            Some(w) => Some(World::parse(w).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown world {w:?}; the worlds are {}",
                    World::ALL.map(|w| w.name()).join(", ")
                ))
            })?),
            None => None,
        };
        if component.is_empty() {
            return Err(Error::invalid(
                "no component: upload the .wasm as the multipart part `component`",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut total = 0u64;
        for (name, data) in &files {
            check_file_name(name)?;
            if !names.insert(name.clone()) {
                return Err(Error::invalid(format!(
                    "model file {name:?} is given twice"
                )));
            }
            total += data.len() as u64;
        }
        if total > settings.plugins.max_files_mb * 1024 * 1024 {
            return Err(Error::new(
                Kind::TooLarge,
                "payload_too_large",
                format!(
                    "the model files hold {total} bytes; at most {} MB (ATELIER_PLUGIN_MAX_FILES_MB)",
                    settings.plugins.max_files_mb
                ),
            ));
        }

        // One registration or deletion of this name and version at a time, and one at a time
        // working on the files of this digest (in that order, as `delete`): concurrent requests
        // never write, replace or delete each other's files. Held to the end.
        let _plugin_lock = host
            .lock_key(&plugin_key(&manifest.name, &manifest.version))
            .await;
        let _digest_lock = host
            .lock_key(&digest_key(&atelier_plugins::host::sha256_hex(&component)))
            .await;

        // Check the component (this compiles it once; a known digest compiles nothing).
        let h = host.clone();
        let registered = tokio::task::spawn_blocking(move || h.register(&component, expected))
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("registration thread: {e}")))?
            .map_err(register_error)?;
        if !files.is_empty() && registered.world != World::InferenceProcessor {
            return Err(Error::invalid(format!(
                "model files go with inference processors; this is a {} plugin",
                registered.world
            )));
        }
        let limits = settings
            .plugins
            .host_settings()
            .resolve(registered.world, &manifest.limits)
            .map_err(Error::invalid)?;
        let limits_json =
            serde_json::to_string(&limits).map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
        let manifest_json = serde_json::to_string(&manifest.limits)
            .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;

        let mut conn = store.pool.acquire().await?;
        if let Some(existing) =
            store::plugins::get(&mut conn, &manifest.name, &manifest.version).await?
        {
            let same_files: Vec<String> = serde_json::from_str(&existing.files).unwrap_or_default();
            if existing.digest == registered.digest
                && existing.manifest == manifest_json
                && existing.description == manifest.description
                && same_files == names.iter().cloned().collect::<Vec<_>>()
            {
                return Ok(Registration {
                    view: existing.into(),
                    created: false,
                    compiled: registered.compiled,
                });
            }
            return Err(Error::conflict(format!(
                "plugin {} {} is already registered with another component or manifest (digest {}); push a new version",
                manifest.name, manifest.version, existing.digest
            )));
        }
        drop(conn);

        // Model files first (written into a staging directory of this registration, which is then
        // renamed into place), then the row. Under the plugin's lock and with no row yet, a
        // directory already at the place is a leftover of a registration that did not finish.
        let dir = files_dir(settings, &manifest.name, &manifest.version);
        if !files.is_empty() {
            let staging = dir.with_extension(format!("staging-{}", uuid::Uuid::new_v4()));
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(&staging)?;
                for (name, data) in &files {
                    std::fs::write(staging.join(name), data)?;
                }
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                std::fs::rename(&staging, &dir)
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Error::internal(anyhow::anyhow!(
                    "writing model files to {}: {e}",
                    dir.display()
                )));
            }
        }
        let row = PluginRow {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            owner_id: who.user_id.clone(),
            owner_name: who.name.clone(),
            digest: registered.digest.clone(),
            world: registered.world.name().to_string(),
            description: manifest.description.clone(),
            limits: limits_json,
            manifest: manifest_json,
            exports: serde_json::to_string(&registered.exports).unwrap_or_default(),
            imports: serde_json::to_string(&registered.imports).unwrap_or_default(),
            files: serde_json::to_string(&names.iter().collect::<Vec<_>>()).unwrap_or_default(),
            size_bytes: registered.size as i64,
            compile_ms: registered.compile_ms,
            created_at: store::now(),
        };
        self.forget_rows();
        let mut tx = store.write().await?;
        let inserted = async {
            store::plugins::insert(&mut tx, &row).await?;
            crate::store::audit::record(
                &mut tx,
                &who.name,
                crate::store::audit::Action::RegisterPlugin,
                crate::store::audit::Target {
                    kind: "plugin",
                    id: &format!("{}@{}", row.name, row.version),
                    name: &row.name,
                },
                "ok",
                Some(&row.digest),
            )
            .await?;
            sqlx::Result::Ok(())
        }
        .await;
        let committed = match inserted {
            Ok(()) => tx.commit().await,
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        self.forget_rows();
        match committed {
            Ok(()) => {}
            Err(e) => {
                if !files.is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                // Registrations of one name and version are serialized, so only another gateway
                // on the same database gets here.
                if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
                    return Err(Error::conflict(format!(
                        "plugin {} {} was registered meanwhile",
                        row.name, row.version
                    )));
                }
                return Err(e.into());
            }
        }
        tracing::info!(plugin = %row.name, version = %row.version, digest = %row.digest, world = %row.world, compiled = registered.compiled, "plugin registered");
        Ok(Registration {
            view: row.into(),
            created: true,
            compiled: registered.compiled,
        })
    }

    pub async fn get(&self, name: &str, version: &str) -> Result<PluginRow, Error> {
        if let Some(row) = self.cached(name, Some(version)) {
            return Ok(row);
        }
        let generation = self.generation();
        let mut conn = self.store.pool.acquire().await?;
        let row = store::plugins::get(&mut conn, name, version)
            .await?
            .ok_or_else(|| Error::not_found(format!("no plugin {name} version {version}")))?;
        self.keep(generation, false, &row);
        Ok(row)
    }

    /// Deletes a registration (its owner or an admin). The component's files go with the last
    /// registration using them.
    pub async fn delete(&self, who: &Principal, name: &str, version: &str) -> Result<(), Error> {
        let (settings, store, host) = (&*self.settings, &self.store, &self.host);
        let _plugin_lock = host.lock_key(&plugin_key(name, version)).await;
        let row = self.get(name, version).await?;
        if row.owner_id != who.user_id && !who.is_admin() {
            return Err(Error::forbidden(format!(
                "plugin {name} {version} belongs to {}; only its owner or an admin may delete it",
                row.owner_name
            )));
        }
        // Another name registering the same component must not lose its files to this deletion.
        let _digest_lock = host.lock_key(&digest_key(&row.digest)).await;
        // A model version's processor with the same digest keeps the files (its service
        // runs from them). Later issues (workflows, training jobs) refuse here while they
        // reference it.
        let mut tx = store.write().await?;
        let algorithms = store::algorithms::using_plugin(&mut tx, name, version).await?;
        if !algorithms.is_empty() {
            let names: Vec<String> = algorithms
                .iter()
                .map(|(owner, algo)| format!("{owner}/{algo}"))
                .collect();
            return Err(Error::conflict(format!(
                "plugin {name} {version} runs the training algorithms {}; delete them first",
                names.join(", ")
            )));
        }
        self.forget_rows();
        store::plugins::delete(&mut tx, name, version).await?;
        let others = store::plugins::digest_users(&mut tx, &row.digest).await?
            + i64::from(crate::store::models::processor_in_use(&mut tx, &row.digest).await?);
        crate::store::audit::record(
            &mut tx,
            &who.name,
            crate::store::audit::Action::DeletePlugin,
            crate::store::audit::Target {
                kind: "plugin",
                id: &format!("{name}@{version}"),
                name,
            },
            "ok",
            Some(&row.digest),
        )
        .await?;
        tx.commit().await?;
        self.forget_rows();
        let plugin = plugin_ref(settings, &row)?;
        host.forget(&plugin, others == 0);
        let _ = std::fs::remove_dir_all(files_dir(settings, name, version));
        Ok(())
    }

    /// A registered training algorithm's `describe()` answer, called through the host under
    /// the plugin's limits. A plugin of another world, or a call that fails (a trap, a
    /// limit), is refused naming the problem.
    pub async fn describe_algorithm(
        &self,
        who: &Principal,
        name: &str,
        version: &str,
    ) -> Result<(PluginRow, atelier_plugins::dto::AlgorithmSpecDto), Error> {
        let row = self.get(name, version).await.map_err(|_| {
            Error::invalid(format!(
                "plugin: no plugin {name} version {version} (atelier plugin list)"
            ))
        })?;
        if row.world != World::TrainingAlgorithm.name() {
            return Err(Error::invalid(format!(
                "plugin: {name} {version} is a component of world {}, not {}",
                row.world,
                World::TrainingAlgorithm.name()
            )));
        }
        let plugin = plugin_ref(&self.settings, &row)?;
        // No storage: describe() reads nothing.
        let ctx = CallContext {
            tenant: who.user_id.clone(),
            call_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        };
        let report = self.host.describe(&plugin, ctx).await;
        match (report.output, report.error) {
            (Some(spec), None) => Ok((row, atelier_plugins::dto::AlgorithmSpecDto::from(&spec))),
            (_, Some(e)) => Err(Error::invalid(format!(
                "plugin: {name} {version}'s describe() failed: {e}"
            ))),
            (None, None) => Err(Error::invalid(format!(
                "plugin: {name} {version}'s describe() returned nothing"
            ))),
        }
    }

    /// Calls a plugin with JSON input on behalf of `who`, with storage under their directory.
    pub async fn invoke(
        &self,
        who: &Principal,
        name: &str,
        version: &str,
        input: &serde_json::Value,
    ) -> Result<CallReport<serde_json::Value>, Error> {
        let (settings, host) = (&*self.settings, &self.host);
        let row = self.get(name, version).await?;
        let plugin = plugin_ref(settings, &row)?;
        let root = storage_dir(settings, &who.user_id);
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::internal(anyhow::anyhow!("{}: {e}", root.display())))?;
        let ctx = CallContext {
            tenant: who.user_id.clone(),
            call_id: uuid::Uuid::now_v7().to_string(),
            storage: atelier_plugins::storage::Grant::new(
                root,
                host.settings().max_object_mb * 1024 * 1024,
            ),
            ..Default::default()
        };
        let report = host.invoke(&plugin, ctx, input).await;
        if let Some(atelier_plugins::CallError::BadInput { message }) = &report.error {
            return Err(Error::invalid(message.clone()));
        }
        Ok(report)
    }

    /// Runs a registered training algorithm's `train` for a training job (the jobs runner's
    /// entry point; see [`atelier_plugins::training`]): on behalf of the job's owner
    /// `owner_id`, with storage granted under the owner's storage to the job's channels
    /// only (inputs read-only, outputs writable; checkpoints under the first output's
    /// `checkpoints/`). The runner stops and observes the run through `watch`, while this
    /// future runs; it must not drop the future before it ends (the guest would run on until
    /// the grace after a stop). Err: the run cannot start (no such plugin, another world, no
    /// checkpoint of `resume_from_step`); everything after that is the report's outcome.
    /// The user's plugin storage (where a Wasm training job's channels are staged).
    pub fn storage_root(&self, user_id: &str) -> PathBuf {
        storage_dir(&self.settings, user_id)
    }

    pub async fn train(
        &self,
        owner_id: &str,
        call: TrainingCall,
        watch: Arc<TrainWatch>,
    ) -> Result<TrainReport, Error> {
        let (settings, host) = (&*self.settings, &self.host);
        let (name, version) = (&call.plugin_name, &call.plugin_version);
        let row = self.get(name, version).await?;
        if row.world != World::TrainingAlgorithm.name() {
            return Err(Error::invalid(format!(
                "plugin {name} {version} is a component of world {}, not {}",
                row.world,
                World::TrainingAlgorithm.name()
            )));
        }
        let plugin = plugin_ref(settings, &row)?;
        let root = storage_dir(settings, owner_id);
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::internal(anyhow::anyhow!("{}: {e}", root.display())))?;
        // The caller's storage root; the run grants its channels' prefixes only.
        let grant =
            atelier_plugins::storage::Grant::new(root, host.settings().max_object_mb * 1024 * 1024);
        let channels = |list: Vec<(String, String)>| {
            list.into_iter()
                .map(|(name, path)| atelier_plugins::training::Channel { name, path })
                .collect::<Vec<_>>()
        };
        let outputs = channels(call.outputs);
        let resume_from = match call.resume_from_step {
            None => None,
            Some(step) => {
                let found = outputs.first().and_then(|o| {
                    let prefix = atelier_plugins::storage::normalize_prefix(&o.path).ok()?;
                    let mut g = grant.clone();
                    g.allow(&prefix, false).ok()?;
                    atelier_plugins::storage::find_checkpoint(
                        &g,
                        &format!("{prefix}checkpoints/"),
                        step,
                    )
                });
                Some(found.ok_or_else(|| {
                    Error::invalid(format!(
                        "resume_from: no checkpoint of step {step} under the first output's checkpoints/"
                    ))
                })?)
            }
        };
        let run = TrainRun {
            job_name: call.job_name,
            attempt: call.attempt,
            inputs: channels(call.inputs),
            outputs,
            resume_from,
            hyperparameters: atelier_plugins::dto::parameters(Some(call.hyperparameters)),
            time_limit: call.time_limit,
            grace: call.grace,
        };
        let ctx = CallContext {
            tenant: owner_id.to_string(),
            call_id: uuid::Uuid::now_v7().to_string(),
            storage: grant,
            ..Default::default()
        };
        Ok(host.train_run(&plugin, ctx, run, watch).await)
    }

    /// The newest version of a plugin of `world` named `name` (by semantic version), or the
    /// one named.
    pub async fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        world: World,
    ) -> Result<PluginRow, Error> {
        let row = match version {
            Some(v) => self.get(name, v).await?,
            None => match self.cached(name, None) {
                Some(row) => row,
                None => {
                    let generation = self.generation();
                    let mut conn = self.store.pool.acquire().await?;
                    let rows = store::plugins::list(&mut conn, Some(name), None).await?;
                    let row = rows
                        .into_iter()
                        .max_by(|a, b| version_order(&a.version, &b.version))
                        .ok_or_else(|| Error::not_found(format!("no plugin named {name}")))?;
                    self.keep(generation, true, &row);
                    row
                }
            },
        };
        if row.world != world.name() {
            return Err(Error::invalid(format!(
                "plugin {} {} is a component of world {}, not {}",
                row.name,
                row.version,
                row.world,
                world.name()
            )));
        }
        Ok(row)
    }

    /// Runs a workflow step's component on behalf of `owner_id`, with storage under the
    /// owner's storage granted to the step's inputs (read-only), outputs (read-write) and
    /// grants only. Err: the step cannot start (no such plugin, another world, a path that
    /// is not a storage key); the component's own failure is the report's `error`.
    pub async fn run_step(&self, owner_id: &str, call: StepCall) -> Result<StepReport, Error> {
        let row = self
            .resolve(
                &call.plugin_name,
                call.plugin_version.as_deref(),
                World::WorkflowStep,
            )
            .await?;
        let (settings, host) = (&*self.settings, &self.host);
        let plugin = plugin_ref(settings, &row)?;
        let root = storage_dir(settings, owner_id);
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::internal(anyhow::anyhow!("{}: {e}", root.display())))?;
        let mut grant =
            atelier_plugins::storage::Grant::new(root, host.settings().max_object_mb * 1024 * 1024);
        let allow = |g: &mut atelier_plugins::storage::Grant, p: &str, w: bool| {
            g.allow(p, w)
                .map_err(|e| Error::invalid(format!("storage path {p:?}: {e}")))
        };
        let mut inputs = Vec::new();
        for (name, data) in call.inputs {
            inputs.push(match data {
                StepData::Prefix(p) => {
                    allow(&mut grant, &p, false)?;
                    step_types::Input {
                        name,
                        path: atelier_plugins::storage::normalize_prefix(&p)
                            .map_err(Error::invalid)?,
                        value: None,
                    }
                }
                StepData::Value(v) => step_types::Input {
                    name,
                    path: String::new(),
                    value: Some(atelier_plugins::dto::ValueDto(v).into()),
                },
            });
        }
        let mut outputs = Vec::new();
        for (name, p) in call.outputs {
            allow(&mut grant, &p, true)?;
            outputs.push(step_types::OutputSlot {
                name,
                path: atelier_plugins::storage::normalize_prefix(&p).map_err(Error::invalid)?,
            });
        }
        for (p, w) in &call.grants {
            allow(&mut grant, p, *w)?;
        }
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + call
                .deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64;
        let context = step_types::StepContext {
            workflow_name: call.workflow_name,
            execution_id: call.execution_id,
            step_name: call.step_name,
            attempt: call.attempt,
            deadline_unix_ms: deadline_ms,
        };
        let ctx = CallContext {
            tenant: owner_id.to_string(),
            call_id: uuid::Uuid::now_v7().to_string(),
            storage: grant,
            parameters: atelier_plugins::dto::parameters(Some(call.parameters)),
            deadline: Some(call.deadline),
            // A warm instance runs on the step task's own worker (the task awaits nothing
            // else meanwhile; tokio hands the worker's other tasks on): no two thread hops
            // per step.
            inline: true,
            ..Default::default()
        };
        let report = host.run_step(&plugin, ctx, context, inputs, outputs).await;
        let mut log = String::new();
        for l in &report.logs {
            log.push_str(&format!("[{}] {}\n", l.level, l.message));
        }
        if report.logs_dropped > 0 {
            log.push_str(&format!("({} log lines dropped)\n", report.logs_dropped));
        }
        log.push_str(&report.stdout);
        log.push_str(&report.stderr);
        let metrics = report
            .metrics
            .scalars
            .iter()
            .filter_map(|(k, points)| points.last().map(|p| (k.clone(), p.value)))
            .collect();
        let mut out = StepReport {
            error: report.error.as_ref().map(|e| e.to_string()),
            log,
            metrics,
            ..Default::default()
        };
        if let Some(r) = &report.output {
            let dto = atelier_plugins::dto::StepResultDto::from(r);
            out.outputs = dto.outputs.into_iter().map(|(k, v)| (k, v.0)).collect();
            out.variables = dto.variables;
        }
        Ok(out)
    }

    /// Loads every registered plugin's compiled form (from the disk cache) in the background,
    /// so first calls after a restart do not wait.
    pub fn preload(&self) {
        let (settings, store, host) =
            (self.settings.clone(), self.store.clone(), self.host.clone());
        // A warm-up: cut short at shutdown, nothing is lost.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let rows = match store.pool.acquire().await {
                Ok(mut conn) => store::plugins::list(&mut conn, None, None)
                    .await
                    .unwrap_or_default(),
                Err(_) => return,
            };
            for row in rows {
                let Ok(plugin) = plugin_ref(&settings, &row) else {
                    continue;
                };
                let h = host.clone();
                let r =
                    tokio::task::spawn_blocking(move || h.preload(&plugin.digest, plugin.world))
                        .await;
                match r {
                    Ok(Ok(source)) => {
                        tracing::debug!(plugin = %row.name, version = %row.version, ?source, "plugin loaded")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(plugin = %row.name, version = %row.version, "plugin does not load: {e}")
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    use atelier_plugins::{TrainOutcome, WatchLimits};

    /// A training algorithm that reads its input (metric 0: read), then writes to its input
    /// channel, to the owner's storage outside its channels and to its output, each result a
    /// metric (10 * error? + the storage error's case; 1 is `denied`), and completes.
    fn writer() -> Vec<u8> {
        atelier_plugins::fixtures::training_algorithm(
            r#"
    (call $read (i32.const 3000) (i32.const 21) (i32.const 5000))
    (call $metric (i32.const 3400) (i32.const 10) (f64.convert_i32_u (i32.load8_u (i32.const 5000))))
    (call $write (i32.const 3100) (i32.const 20) (i32.const 3600) (i32.const 4) (i32.const 5040))
    (call $metric (i32.const 3420) (i32.const 11)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5040)) (i32.const 10)) (i32.load8_u (i32.const 5048)))))
    (call $write (i32.const 3200) (i32.const 15) (i32.const 3600) (i32.const 4) (i32.const 5080))
    (call $metric (i32.const 3440) (i32.const 13)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5080)) (i32.const 10)) (i32.load8_u (i32.const 5088)))))
    (call $write (i32.const 3300) (i32.const 17) (i32.const 3600) (i32.const 4) (i32.const 5120))
    (call $metric (i32.const 3460) (i32.const 12)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5120)) (i32.const 10)) (i32.load8_u (i32.const 5128)))))
    (call $ok)"#,
            &[
                (3000, "datasets/d1/train.csv"),
                (3100, "datasets/d1/evil.csv"),
                (3200, "secret/keys.txt"),
                (3300, "jobs/j1/model.bin"),
                (3400, "read_input"),
                (3420, "write_input"),
                (3440, "write_outside"),
                (3460, "write_output"),
                (3600, "pwnd"),
            ],
        )
    }

    /// A registry on a fresh data dir (removed by the caller) with one user, alice.
    async fn with_alice(what: &str) -> (PathBuf, Arc<Settings>, Plugins, Principal) {
        let dir = std::env::temp_dir().join(format!("atelier-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = Arc::new(Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        });
        let store = Store::open(&dir).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        store::users::insert_user(&mut conn, "u-alice", "alice", "user", &store::now())
            .await
            .unwrap();
        drop(conn);
        let plugins = Plugins::new(settings.clone(), store, open_host(&settings).unwrap());
        let alice = Principal {
            user_id: "u-alice".into(),
            name: "alice".into(),
            role: crate::auth::Role::User,
            token_id: "t".into(),
        };
        (dir, settings, plugins, alice)
    }

    /// AC-50: a guest writing to an input channel or outside its channels gets `denied` and
    /// the job goes on; only its output is written. An unknown plugin, and an unknown
    /// checkpoint to resume from, are refused before anything runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_training_run_writes_its_outputs_only_and_goes_on_when_refused() {
        let (dir, settings, plugins, alice) = with_alice("train").await;
        let manifest = |name: &str| Manifest {
            name: name.into(),
            version: "1".into(),
            world: None,
            description: String::new(),
            limits: LimitsSpec::default(),
        };
        plugins
            .register(&alice, manifest("writer"), writer(), Vec::new())
            .await
            .unwrap();
        let root = storage_dir(&settings, "u-alice");
        std::fs::create_dir_all(root.join("datasets/d1")).unwrap();
        std::fs::write(root.join("datasets/d1/train.csv"), "1,2\n").unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();

        let call = TrainingCall {
            plugin_name: "writer".into(),
            plugin_version: "1".into(),
            job_name: "j1".into(),
            attempt: 0,
            inputs: vec![("data_url".into(), "datasets/d1".into())],
            outputs: vec![("train_url".into(), "jobs/j1/".into())],
            hyperparameters: Default::default(),
            resume_from_step: None,
            time_limit: std::time::Duration::from_secs(60),
            grace: std::time::Duration::from_secs(1),
        };
        let watch = TrainWatch::new(WatchLimits::default());
        let report = plugins
            .train("u-alice", call.clone(), watch.clone())
            .await
            .unwrap();
        assert!(
            matches!(report.outcome, TrainOutcome::Completed { .. }),
            "{:?}",
            report.outcome
        );
        let metrics = watch.snapshot().latest_metrics;
        let value = |name: &str| metrics[name].0;
        assert_eq!(value("read_input"), 0.0);
        assert_eq!(value("write_input"), 11.0);
        assert_eq!(value("write_outside"), 11.0);
        assert_eq!(value("write_output"), 0.0);
        assert_eq!(
            std::fs::read(root.join("jobs/j1/model.bin")).unwrap(),
            b"pwnd"
        );
        assert!(!root.join("datasets/d1/evil.csv").exists());
        assert!(!root.join("secret/keys.txt").exists());

        // Refused before running: an unknown checkpoint, an unknown plugin.
        let mut resume = call.clone();
        resume.resume_from_step = Some(3);
        let e = plugins
            .train("u-alice", resume, TrainWatch::new(WatchLimits::default()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no checkpoint of step 3"), "{e}");
        let mut unknown = call.clone();
        unknown.plugin_name = "nope".into();
        assert!(
            plugins
                .train("u-alice", unknown, TrainWatch::new(WatchLimits::default()))
                .await
                .is_err()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Rows are cached for calls (a workflow's steps), but a registration or deletion, made
    /// through any clone of the registry, is seen by the next resolution at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_registrations_follow_every_registration_and_deletion() {
        let (dir, _, plugins, alice) = with_alice("rows").await;
        let other = plugins.clone();
        let manifest = |version: &str| Manifest {
            name: "writer".into(),
            version: version.into(),
            world: None,
            description: String::new(),
            limits: LimitsSpec::default(),
        };
        let newest = |p: &Plugins| {
            let p = p.clone();
            async move {
                p.resolve("writer", None, World::TrainingAlgorithm)
                    .await
                    .map(|r| r.version)
            }
        };
        plugins
            .register(&alice, manifest("1.0.0"), writer(), Vec::new())
            .await
            .unwrap();
        assert_eq!(newest(&plugins).await.unwrap(), "1.0.0");
        assert_eq!(
            plugins.get("writer", "1.0.0").await.unwrap().version,
            "1.0.0"
        );
        // Another version, through another clone: the newest moves on for both.
        other
            .register(&alice, manifest("1.1.0"), writer(), Vec::new())
            .await
            .unwrap();
        assert_eq!(newest(&plugins).await.unwrap(), "1.1.0");
        assert_eq!(newest(&other).await.unwrap(), "1.1.0");
        // Deleted: gone from the cache of every clone.
        plugins.delete(&alice, "writer", "1.1.0").await.unwrap();
        assert_eq!(newest(&other).await.unwrap(), "1.0.0");
        assert!(other.get("writer", "1.1.0").await.is_err());
        other.delete(&alice, "writer", "1.0.0").await.unwrap();
        assert!(newest(&plugins).await.is_err());
        assert!(plugins.get("writer", "1.0.0").await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Model file names are joined to the plugin's files directory: an accepted name is
        /// one plain component in it.
        #[test]
        fn accepted_model_file_names_are_one_plain_component(
            name in prop_oneof![
                "\\PC{0,12}",
                "[a-z./\\\\]{0,6}",
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just("a\0b".to_owned()),
                Just("/etc/passwd".to_owned()),
            ],
        ) {
            if check_file_name(&name).is_ok() {
                let dir = Path::new("/data/plugins/files/p/1");
                let file = dir.join(&name);
                prop_assert_eq!(file.parent(), Some(dir));
                prop_assert!(matches!(Path::new(&name).components().collect::<Vec<_>>()[..], [Component::Normal(_)]), "{name:?}");
            }
        }

        /// Plugin names and versions become directory names (`files/<name>/<version>`).
        #[test]
        fn accepted_names_and_versions_are_plain_components(s in "\\PC{0,70}|[a-z0-9._+-]{0,70}") {
            for ok in [check_name(&s).is_ok(), check_version(&s).is_ok()] {
                if ok {
                    prop_assert!(!s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']), "{s:?}");
                    prop_assert!(!s.starts_with('.'), "{s:?}");
                }
            }
        }
    }
}
