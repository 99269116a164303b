//! Wasm plugins: registration under a name and version, listing, deletion and trial calls,
//! over the host in the `atelier-plugins` crate. The component and its compiled form are
//! kept by digest under `<data>/plugins/cache` (so a restart compiles nothing); model files
//! uploaded with an inference processor under `<data>/plugins/files/<name>/<version>/`;
//! the directory standing in for object storage under `<data>/plugins/storage/<user>/`.

use std::path::PathBuf;
use std::sync::Arc;

use atelier_plugins::{CallContext, CallReport, Host, LimitsSpec, PluginRef, RegisterError, World};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::config::Settings;
use crate::error::{Error, Kind};
use crate::store::plugins::PluginRow;
use crate::store::{self, Store};

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
}

impl Plugins {
    pub fn new(settings: Arc<Settings>, store: Store, host: Arc<Host>) -> Self {
        Plugins {
            settings,
            store,
            host,
        }
    }

    /// The Wasm host itself (metrics, diagnostics).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
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
        match inserted {
            Ok(()) => tx.commit().await?,
            Err(e) => {
                drop(tx);
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
        let mut conn = self.store.pool.acquire().await?;
        store::plugins::get(&mut conn, name, version)
            .await?
            .ok_or_else(|| Error::not_found(format!("no plugin {name} version {version}")))
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
