//! Algorithm assets: create, list, show, delete, and the runtime a job of one sees. See the
//! module above for the flow.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AlgorithmError;
use super::runtime::{self, Runtime};
use super::schema::{self, Channel, HpType, Hyperparameter, ObtainedFrom};
use crate::auth::Principal;
use crate::error::Error;
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::plugins::Plugins;
use crate::secrets::SecretBox;
use crate::store::algorithms::{self as rows, AlgorithmRow};
use crate::store::audit::{self, Action, Target};
use crate::store::{Store, storage_connections};

/// Algorithms one user may have (generous: they are rows, not running things).
pub const MAX_PER_USER: i64 = 500;
/// A code dir's limits (seed T8-7/8/9): entries (files and folders), depth, bytes.
pub const MAX_CODE_ENTRIES: usize = 1000;
pub const MAX_CODE_DEPTH: usize = 32;
pub const MAX_CODE_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Bytes of a boot command, and of a boot file's path.
pub const MAX_BOOT_COMMAND: usize = 4096;
pub const MAX_BOOT_FILE: usize = 1024;
/// Metrics a Wasm algorithm may declare.
pub const MAX_METRICS: usize = 20;

/// `POST /v1/algorithms`. `plugin` makes a Wasm algorithm (its channels and hyperparameters
/// come from its `describe()`); otherwise a container (or command) algorithm.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAlgorithm {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub plugin: Option<PluginSpec>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub code_dir: Option<CodeDirSpec>,
    #[serde(default)]
    pub boot_file: Option<String>,
    #[serde(default)]
    pub boot_command: Option<String>,
    #[serde(default)]
    pub inputs: Option<Vec<Channel>>,
    #[serde(default)]
    pub outputs: Option<Vec<Channel>>,
    #[serde(default)]
    pub hyperparameters: Option<Vec<Hyperparameter>>,
}

/// A registered plugin of world `training-algorithm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    pub name: String,
    pub version: String,
}

/// A folder in object storage, read through one of the caller's storage connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeDirSpec {
    pub connection: String,
    pub path: String,
}

/// How an algorithm runs, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Engine {
    /// A component run by the plugin host.
    Wasm { plugin: PluginInfo },
    /// A command in a container (or, with no image, in the notebook environment on the
    /// process backend).
    Container {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code_dir: Option<CodeDir>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_file: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_command: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The name and version its `describe()` gave.
    pub algorithm: String,
    pub algorithm_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeDir {
    pub connection: String,
    pub connection_id: String,
    /// `obs://bucket/prefix/`.
    pub path: String,
    /// Files in it, and their bytes, when it was registered.
    pub files: u64,
    pub bytes: u64,
}

/// What the `spec` column holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    #[serde(flatten)]
    pub engine: Engine,
    pub inputs: Vec<Channel>,
    pub outputs: Vec<Channel>,
    pub hyperparameters: Vec<Hyperparameter>,
    /// What it reports; the first is the one to optimise (Wasm algorithms).
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// An algorithm as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlgorithmView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    #[serde(flatten)]
    pub spec: Spec,
    pub created_at: String,
    pub updated_at: String,
}

fn view(row: AlgorithmRow) -> Result<AlgorithmView, AlgorithmError> {
    let spec = serde_json::from_str(&row.spec).map_err(|e| AlgorithmError::Internal(e.into()))?;
    Ok(AlgorithmView {
        id: row.id,
        name: row.name,
        owner: row.owner_name,
        description: row.description,
        spec,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The algorithm registry.
#[derive(Clone)]
pub struct Algorithms {
    store: Store,
    plugins: Plugins,
    secrets: std::sync::Arc<SecretBox>,
}

impl Algorithms {
    pub fn new(store: Store, plugins: Plugins, secrets: std::sync::Arc<SecretBox>) -> Algorithms {
        Algorithms {
            store,
            plugins,
            secrets,
        }
    }

    pub async fn create(
        &self,
        who: &Principal,
        req: CreateAlgorithm,
    ) -> Result<AlgorithmView, AlgorithmError> {
        schema::check_name("name", &req.name).map_err(AlgorithmError::Invalid)?;
        schema::check_description("description", &req.description)
            .map_err(AlgorithmError::Invalid)?;
        let spec = match &req.plugin {
            Some(p) => self.wasm_spec(who, p, &req).await?,
            None => self.container_spec(who, &req).await?,
        };
        let (plugin_name, plugin_version) = match &spec.engine {
            Engine::Wasm { plugin } => (Some(plugin.name.clone()), Some(plugin.version.clone())),
            Engine::Container { .. } => (None, None),
        };
        let kind = match &spec.engine {
            Engine::Wasm { .. } => "wasm",
            Engine::Container { .. } => "container",
        };
        let now = crate::store::now();
        let row = AlgorithmRow {
            id: uuid::Uuid::new_v4().to_string(),
            owner_id: who.user_id.clone(),
            owner_name: who.name.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            kind: kind.into(),
            plugin_name,
            plugin_version,
            spec: serde_json::to_string(&spec).map_err(|e| AlgorithmError::Internal(e.into()))?,
            created_at: now.clone(),
            updated_at: now,
        };
        let mut tx = self.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &req.name)
            .await?
            .is_some()
        {
            return Err(AlgorithmError::Conflict(format!(
                "name: you already have an algorithm named {:?}",
                req.name
            )));
        }
        if rows::count(&mut tx, &who.user_id).await? >= MAX_PER_USER {
            return Err(AlgorithmError::Common(Error::quota(format!(
                "you have {MAX_PER_USER} algorithms, the most one user may have; delete one first"
            ))));
        }
        if let Some((name, version)) = row
            .plugin_name
            .as_deref()
            .zip(row.plugin_version.as_deref())
            && crate::store::plugins::get(&mut tx, name, version)
                .await?
                .is_none()
        {
            return Err(AlgorithmError::Invalid(format!(
                "plugin: {name} {version} was deleted meanwhile"
            )));
        }
        rows::insert(&mut tx, &row).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateAlgorithm,
            Target {
                kind: "algorithm",
                id: &row.id,
                name: &row.name,
            },
            "succeeded",
            Some(kind),
        )
        .await?;
        tx.commit().await?;
        view(row)
    }

    /// A Wasm algorithm: the plugin's `describe()`, checked as a request's fields would be.
    async fn wasm_spec(
        &self,
        who: &Principal,
        p: &PluginSpec,
        req: &CreateAlgorithm,
    ) -> Result<Spec, AlgorithmError> {
        for (field, given) in [
            ("image", req.image.is_some()),
            ("code_dir", req.code_dir.is_some()),
            ("boot_file", req.boot_file.is_some()),
            ("boot_command", req.boot_command.is_some()),
            ("inputs", req.inputs.is_some()),
            ("outputs", req.outputs.is_some()),
            ("hyperparameters", req.hyperparameters.is_some()),
        ] {
            if given {
                return Err(AlgorithmError::Invalid(format!(
                    "{field}: not for a Wasm algorithm (its describe() gives its channels and hyperparameters)"
                )));
            }
        }
        let (row, d) = self
            .plugins
            .describe_algorithm(who, &p.name, &p.version)
            .await?;
        let bad = |e: String| {
            AlgorithmError::Invalid(format!(
                "plugin: {} {}'s describe() returned an invalid spec: {e}",
                p.name, p.version
            ))
        };
        let mut hyperparameters = Vec::new();
        for h in &d.hyperparameters {
            let kind = HpType::parse(h.kind).ok_or_else(|| bad(format!("type {:?}", h.kind)))?;
            hyperparameters.push(Hyperparameter {
                name: h.name.clone(),
                kind,
                default: h.default.as_ref().map(|v| v.0.clone()),
                range: h.range,
                choices: h
                    .choices
                    .iter()
                    .map(|c| serde_json::Value::from(c.as_str()))
                    .collect(),
                required: h.required,
                description: h.description.clone(),
            });
        }
        let channel = |name: &String| Channel {
            name: name.clone(),
            description: String::new(),
            obtained_from: ObtainedFrom::Hyperparameters,
        };
        let inputs: Vec<Channel> = d.inputs.iter().map(channel).collect();
        let outputs: Vec<Channel> = d.outputs.iter().map(channel).collect();
        schema::check_hyperparameters(&hyperparameters).map_err(bad)?;
        schema::check_channels(&inputs, &outputs, &hyperparameters).map_err(bad)?;
        if d.metrics.len() > MAX_METRICS {
            return Err(bad(format!("metrics: at most {MAX_METRICS}")));
        }
        for (i, m) in d.metrics.iter().enumerate() {
            schema::check_name(&format!("metrics[{i}]"), m).map_err(bad)?;
        }
        schema::check_description("description", &d.description).map_err(bad)?;
        Ok(Spec {
            engine: Engine::Wasm {
                plugin: PluginInfo {
                    name: row.name,
                    version: row.version,
                    digest: row.digest,
                    algorithm: d.name.chars().take(64).collect(),
                    algorithm_version: d.version.chars().take(64).collect(),
                },
            },
            inputs,
            outputs,
            hyperparameters,
            metrics: d.metrics,
        })
    }

    /// A container (or command) algorithm: boot, image and code dir checked, the code dir
    /// listed through the caller's connection.
    pub(crate) async fn container_spec(
        &self,
        who: &Principal,
        req: &CreateAlgorithm,
    ) -> Result<Spec, AlgorithmError> {
        let inputs = req.inputs.clone().unwrap_or_default();
        let outputs = req.outputs.clone().unwrap_or_default();
        let hyperparameters = req.hyperparameters.clone().unwrap_or_default();
        schema::check_hyperparameters(&hyperparameters).map_err(AlgorithmError::Invalid)?;
        schema::check_channels(&inputs, &outputs, &hyperparameters)
            .map_err(AlgorithmError::Invalid)?;
        match (&req.boot_file, &req.boot_command) {
            (Some(_), Some(_)) => {
                return Err(AlgorithmError::Invalid(
                    "boot_command: give a boot file or a boot command, not both".into(),
                ));
            }
            (None, None) => {
                return Err(AlgorithmError::Invalid(
                    "boot_command: a boot file (in the code dir) or a boot command is needed"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(f) = &req.boot_file {
            check_boot_file(f).map_err(AlgorithmError::Invalid)?;
            if req.code_dir.is_none() {
                return Err(AlgorithmError::Invalid(
                    "code_dir: a boot file is run from the code dir; give one".into(),
                ));
            }
        }
        if let Some(c) = &req.boot_command {
            check_boot_command(c).map_err(AlgorithmError::Invalid)?;
        }
        if let Some(image) = &req.image {
            crate::images::check_reference(image)
                .map_err(|e| AlgorithmError::Invalid(format!("image: {}", e.message)))?;
        }
        let code_dir = match &req.code_dir {
            Some(c) => Some(
                self.check_code_dir(who, c, req.boot_file.as_deref())
                    .await?,
            ),
            None => None,
        };
        Ok(Spec {
            engine: Engine::Container {
                image: req.image.clone(),
                code_dir,
                boot_file: req.boot_file.clone(),
                boot_command: req.boot_command.clone(),
            },
            inputs,
            outputs,
            hyperparameters,
            metrics: Vec::new(),
        })
    }

    /// The code dir exists (holds something), within the seed's limits, and holds the boot
    /// file; listed without downloading anything.
    async fn check_code_dir(
        &self,
        who: &Principal,
        spec: &CodeDirSpec,
        boot_file: Option<&str>,
    ) -> Result<CodeDir, AlgorithmError> {
        let uri = ObjectUri::parse(&spec.path)
            .map_err(|e| AlgorithmError::Invalid(format!("code_dir.path: {e}")))?;
        let prefix = uri.dir_prefix();
        let mut conn = self.store.pool.acquire().await?;
        let c = storage_connections::by_name(&mut conn, &who.user_id, &spec.connection)
            .await?
            .ok_or_else(|| {
                AlgorithmError::Invalid(format!(
                    "code_dir.connection: you have no storage connection named {:?} (atelier storage list)",
                    spec.connection
                ))
            })?;
        drop(conn);
        let target = connections::target(&c, &self.secrets).map_err(AlgorithmError::Internal)?;
        let client = s3::client(&target, Duration::from_secs(30), 2);
        let path = format!("obs://{}/{prefix}", uri.bucket);
        let listing = transfer::list_at_most(&client, &uri.bucket, &prefix, MAX_CODE_ENTRIES + 1)
            .await
            .map_err(|e| AlgorithmError::Invalid(format!("code_dir.path: {e}")))?;
        let summary = summarize(&listing, &prefix)
            .map_err(|e| AlgorithmError::Invalid(format!("code_dir.path: {path}: {e}")))?;
        if summary.files == 0 {
            return Err(AlgorithmError::Invalid(format!(
                "code_dir.path: {path} holds no file (it must exist, with the code in it)"
            )));
        }
        if let Some(f) = boot_file
            && !listing
                .iter()
                .any(|(k, _)| k.strip_prefix(&prefix) == Some(f))
        {
            return Err(AlgorithmError::Invalid(format!(
                "boot_file: {f:?} is not in the code dir {path}"
            )));
        }
        Ok(CodeDir {
            connection: c.name,
            connection_id: c.id,
            path,
            files: summary.files,
            bytes: summary.bytes,
        })
    }

    /// The caller's algorithm `key` (its id or its name); another user's is not found (an
    /// admin finds it by id).
    async fn find(&self, who: &Principal, key: &str) -> Result<AlgorithmRow, AlgorithmError> {
        let mut conn = self.store.pool.acquire().await?;
        if let Some(a) = rows::by_key(&mut conn, &who.user_id, key).await? {
            return Ok(a);
        }
        if who.is_admin()
            && let Some(a) = rows::by_id(&mut conn, key).await?
        {
            return Ok(a);
        }
        Err(AlgorithmError::NotFound(format!(
            "algorithm {key} not found"
        )))
    }

    /// One owner's algorithms, or everyone's (`None`; the API lets admins only).
    pub async fn list(&self, owner: Option<&str>) -> Result<Vec<AlgorithmView>, AlgorithmError> {
        let mut conn = self.store.pool.acquire().await?;
        rows::list(&mut conn, owner)
            .await?
            .into_iter()
            .map(view)
            .collect()
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<AlgorithmView, AlgorithmError> {
        view(self.find(who, key).await?)
    }

    /// What a job of the algorithm sees: paths, boot command, arguments, environment.
    pub async fn runtime(&self, who: &Principal, key: &str) -> Result<Runtime, AlgorithmError> {
        let a = view(self.find(who, key).await?)?;
        let s = &a.spec;
        let boot = match &s.engine {
            Engine::Wasm { .. } => runtime::Boot {
                code_dir: None,
                boot_file: None,
                boot_command: None,
            },
            Engine::Container {
                code_dir,
                boot_file,
                boot_command,
                ..
            } => runtime::Boot {
                code_dir: code_dir
                    .as_ref()
                    .map(|c| c.path.strip_prefix("obs://").unwrap_or(&c.path)),
                boot_file: boot_file.as_deref(),
                boot_command: boot_command.as_deref(),
            },
        };
        Ok(runtime::runtime(
            boot,
            &s.inputs,
            &s.outputs,
            &s.hyperparameters,
        ))
    }

    /// Deletes an algorithm (its owner, or an admin); refused while a training job uses it.
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), AlgorithmError> {
        let a = self.find(who, key).await?;
        let mut tx = self.store.write().await?;
        let jobs = super::jobs_using_algorithm(&mut tx, &a.id).await?;
        if !jobs.is_empty() {
            return Err(AlgorithmError::Conflict(format!(
                "algorithm {} is used by the training jobs {}; delete them first",
                a.name,
                jobs.join(", ")
            )));
        }
        if !rows::delete(&mut tx, &a.id).await? {
            return Err(AlgorithmError::NotFound(format!(
                "algorithm {key} not found"
            )));
        }
        audit::record(
            &mut tx,
            &who.name,
            Action::DeleteAlgorithm,
            Target {
                kind: "algorithm",
                id: &a.id,
                name: &a.name,
            },
            "succeeded",
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A boot file: a relative path of plain names in the code dir, ending in `.py` (T8-7).
fn check_boot_file(f: &str) -> Result<(), String> {
    if f.is_empty() || f.len() > MAX_BOOT_FILE {
        return Err(format!("boot_file: 1-{MAX_BOOT_FILE} bytes"));
    }
    if !f.ends_with(".py") {
        return Err(format!(
            "boot_file: {:?} must be a Python file (end in .py); run anything else with a boot command",
            f.chars().take(70).collect::<String>()
        ));
    }
    if f.starts_with('/')
        || f.split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.chars().any(char::is_control))
    {
        return Err(format!(
            "boot_file: {:?} must be a path inside the code dir (relative, plain names, no '..')",
            f.chars().take(70).collect::<String>()
        ));
    }
    Ok(())
}

/// A boot command: one line (`;` and `&&` chain commands, T8-9), at most
/// [`MAX_BOOT_COMMAND`] bytes.
fn check_boot_command(c: &str) -> Result<(), String> {
    if c.trim().is_empty() {
        return Err("boot_command: empty".into());
    }
    if c.len() > MAX_BOOT_COMMAND {
        return Err(format!("boot_command: at most {MAX_BOOT_COMMAND} bytes"));
    }
    if c.chars().any(char::is_control) {
        return Err(
            "boot_command: control characters (newlines included) are not allowed; chain commands with ; or &&"
                .into(),
        );
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
struct Summary {
    files: u64,
    bytes: u64,
}

/// Counts a code dir's files and folders, its depth and bytes against the seed's limits.
fn summarize(listing: &[(String, u64)], prefix: &str) -> Result<Summary, String> {
    let mut folders = std::collections::BTreeSet::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for (key, size) in listing {
        let Some(rel) = key.strip_prefix(prefix) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let parts: Vec<&str> = rel.trim_end_matches('/').split('/').collect();
        if parts.len() > MAX_CODE_DEPTH {
            return Err(format!(
                "{rel:?} is {} levels deep; a code dir may be {MAX_CODE_DEPTH} deep at most",
                parts.len()
            ));
        }
        for i in 1..parts.len() {
            folders.insert(parts[..i].join("/"));
        }
        if rel.ends_with('/') {
            folders.insert(parts.join("/"));
        } else {
            files += 1;
            bytes += size;
        }
    }
    let entries = files as usize + folders.len();
    if entries > MAX_CODE_ENTRIES {
        return Err(format!(
            "more than {MAX_CODE_ENTRIES} files and folders; a code dir may hold {MAX_CODE_ENTRIES} at most (keep data out of it)"
        ));
    }
    if bytes > MAX_CODE_BYTES {
        return Err(format!(
            "{bytes} bytes; a code dir may hold 5 GiB at most (keep data out of it)"
        ));
    }
    Ok(Summary { files, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_dir_limits() {
        let p = "b/demo/";
        let ok = vec![
            ("b/demo/train.py".to_string(), 10),
            ("b/demo/sub/x.txt".to_string(), 5),
        ];
        assert_eq!(
            summarize(&ok, p),
            Ok(Summary {
                files: 2,
                bytes: 15
            })
        );
        // AC-05: 1,001 entries, depth 33, 5 GiB + 1 byte.
        let many: Vec<_> = (0..1000).map(|i| (format!("b/demo/d/{i}"), 1)).collect();
        assert!(summarize(&many, p).unwrap_err().contains("1000"));
        let deep = vec![(format!("b/demo/{}f", "d/".repeat(32)), 1)];
        assert!(summarize(&deep, p).unwrap_err().contains("deep"));
        let deep_ok = vec![(format!("b/demo/{}f", "d/".repeat(31)), 1)];
        summarize(&deep_ok, p).unwrap();
        let big = vec![
            ("b/demo/a".to_string(), MAX_CODE_BYTES),
            ("b/demo/b".to_string(), 1),
        ];
        assert!(summarize(&big, p).unwrap_err().contains("5 GiB"));
    }

    #[test]
    fn boot_files_and_commands() {
        // AC-04: main.sh refused, main.py fine; paths stay inside the code dir.
        assert!(check_boot_file("main.sh").unwrap_err().contains(".py"));
        check_boot_file("main.py").unwrap();
        check_boot_file("src/main.py").unwrap();
        for bad in ["/main.py", "../main.py", "a//main.py", "./main.py", ""] {
            assert!(check_boot_file(bad).is_err(), "{bad}");
        }
        check_boot_command("bash ${MA_JOB_DIR}/demo-code/main.sh && echo done; true").unwrap();
        assert!(check_boot_command("a\nb").is_err());
        assert!(check_boot_command("  ").is_err());
    }
}
