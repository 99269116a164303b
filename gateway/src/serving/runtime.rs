//! What a deployed service holds while it serves: per model version, the built-in engine's
//! loaded model and the processor plugin's reference, and the service's traffic limit.
//! Deployments live in the gateway's memory; a gateway start deploys its serving services
//! again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use atelier_inference::config::ModelType;
use atelier_inference::onnx::{ModelOptions, OnnxModel, OnnxRuntime};
use atelier_plugins::{Host, PluginRef, World};

use super::rules::{Facts, Rules};
use super::spec::{ServiceSpec, VersionSpec};
use crate::models::VersionView;
use crate::models::processor::{self, ProcessorInfo};

/// The engines the gateway runs models on in its own process. ONNX Runtime is loaded once,
/// at the first deploy that needs it.
pub struct Engines {
    library: Option<PathBuf>,
    onnx: OnceLock<Result<OnnxRuntime, String>>,
}

impl Engines {
    pub fn new(library: Option<PathBuf>) -> Engines {
        Engines {
            library,
            onnx: OnceLock::new(),
        }
    }

    /// ONNX Runtime, or why the built-in ONNX engine cannot run here.
    pub fn onnx(&self) -> Result<&OnnxRuntime, String> {
        self.onnx
            .get_or_init(|| match &self.library {
                None => Err(format!(
                    "the built-in ONNX engine needs ONNX Runtime: set {} to the libonnxruntime.so the onnxruntime wheel ships (scripts/serve.sh finds one)",
                    atelier_inference::onnx::LIBRARY_SETTING
                )),
                Some(path) => OnnxRuntime::load(path).map_err(|e| e.to_string()),
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// What runs a version's model.
pub enum Engine {
    /// The built-in ONNX engine, in the gateway's process.
    Builtin(Arc<OnnxModel>),
    /// Instances of a container or process engine, called over HTTP.
    Instances(Arc<super::instances::Pool>),
}

/// One model version as a deployed service runs it.
pub struct Served {
    pub spec: VersionSpec,
    pub engine: Engine,
    pub processor: Option<PluginRef>,
}

impl Served {
    /// The built-in engine's model, when the version runs there.
    pub fn onnx(&self) -> Option<&Arc<OnnxModel>> {
        match &self.engine {
            Engine::Builtin(m) => Some(m),
            Engine::Instances(_) => None,
        }
    }

    /// The version's engine instances, when it runs on a container or process engine.
    pub fn pool(&self) -> Option<&Arc<super::instances::Pool>> {
        match &self.engine {
            Engine::Instances(p) => Some(p),
            Engine::Builtin(_) => None,
        }
    }
}

/// A deployed service.
pub struct Deployment {
    pub service_id: String,
    pub name: String,
    pub owner_id: String,
    pub spec: ServiceSpec,
    pub versions: Vec<Served>,
    /// The custom settings, compiled.
    pub rules: Rules,
    limiter: Option<Limiter>,
}

/// The version a call goes to, and the header a custom setting adds (name in lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub version: usize,
    pub header: Option<(String, String)>,
}

impl Deployment {
    pub fn new(
        service_id: &str,
        name: &str,
        owner_id: &str,
        spec: &ServiceSpec,
        versions: Vec<Served>,
    ) -> Result<Deployment, String> {
        let names: Vec<&str> = spec.models.iter().map(|m| m.version.as_str()).collect();
        let rules = Rules::compile(&spec.custom_settings, &names)?;
        Ok(Deployment {
            service_id: service_id.to_string(),
            name: name.to_string(),
            owner_id: owner_id.to_string(),
            limiter: spec.traffic_limit.map(Limiter::new),
            spec: spec.clone(),
            versions,
            rules,
        })
    }

    /// Stops the supervisors of its engine instances (the instances themselves are stopped
    /// through the store: `instances::stop_recorded`).
    pub async fn halt(&self) {
        for v in &self.versions {
            if let Some(p) = v.pool() {
                p.halt().await;
            }
        }
    }

    /// Whether every engine instance is in the rotation, and if not, why.
    pub fn health(&self) -> Result<(), String> {
        for v in &self.versions {
            if let Some(p) = v.pool()
                && !p.all_ready()
            {
                return Err(p
                    .trouble()
                    .unwrap_or_else(|| "an instance is not ready".into()));
            }
        }
        Ok(())
    }

    /// The version a call goes to: by the versions' weights.
    pub fn pick(&self, roll: u32) -> &Served {
        &self.versions[self.weighted(roll)]
    }

    /// The index of the version `roll` (0-99) falls on by the weights.
    fn weighted(&self, roll: u32) -> usize {
        let mut acc = 0;
        for (i, v) in self.versions.iter().enumerate() {
            acc += v.spec.weight;
            if roll < acc {
                return i;
            }
        }
        // Weights sum to 100 and `roll` < 100; the last one otherwise.
        self.versions.len() - 1
    }

    /// The version of a call: the first custom setting that holds for it (its header
    /// added), else the weights (`roll`, 0-99).
    pub fn route(&self, facts: &Facts<'_>, roll: u32) -> Route {
        match self.rules.route(facts) {
            Some(r) => Route {
                version: r.version,
                header: r.header.map(|(n, v)| (n.to_string(), v.to_string())),
            },
            None => Route {
                version: self.weighted(roll),
                header: None,
            },
        }
    }

    /// Whether a call may go now under the traffic limit.
    pub fn admit(&self) -> bool {
        self.limiter.as_ref().is_none_or(Limiter::take)
    }
}

/// A token bucket: `rate` calls a second, bursts of at most `rate`.
struct Limiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(rate: u32) -> Limiter {
        Limiter {
            rate: f64::from(rate),
            state: Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    fn take(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The deployed services, by id.
#[derive(Default, Clone)]
pub struct Deployments(Arc<RwLock<HashMap<String, Arc<Deployment>>>>);

impl Deployments {
    pub fn get(&self, id: &str) -> Option<Arc<Deployment>> {
        self.0.read().ok().and_then(|m| m.get(id).cloned())
    }

    /// Puts `d` in place; returns the deployment it replaces.
    pub fn put(&self, d: Deployment) -> Option<Arc<Deployment>> {
        self.0
            .write()
            .ok()
            .and_then(|mut m| m.insert(d.service_id.clone(), Arc::new(d)))
    }

    /// An owner's deployed service by name.
    pub fn by_owner_name(&self, owner_id: &str, name: &str) -> Option<Arc<Deployment>> {
        self.0.read().ok().and_then(|m| {
            m.values()
                .find(|d| d.owner_id == owner_id && d.name == name)
                .cloned()
        })
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Deployment>> {
        self.0.write().ok().and_then(|mut m| m.remove(id))
    }
}

/// What loading one version needs, read from the registry before the blocking work.
pub struct VersionFiles {
    pub spec: VersionSpec,
    pub view: VersionView,
    /// The version's folder in the model store (holding `model/`).
    pub tree: PathBuf,
}

/// Whether a version runs on the built-in engine (ONNX models) or on a container or process
/// engine (everything else: images, PyTorch, TensorFlow, …).
pub fn runs_builtin(view: &VersionView) -> bool {
    view.model_config.as_ref().map(|c| c.model_type()) == Some(ModelType::Onnx)
}

/// Loads one version on the built-in engine: the model (one session per instance), the
/// processor (registered again from the model store, which compiles nothing when the host
/// has it). Blocking (model loads); the error says which version failed and why.
pub fn load_builtin(
    engines: &Engines,
    host: &Arc<Host>,
    f: VersionFiles,
) -> Result<Served, String> {
    let label = format!("model {} {}", f.spec.model, f.spec.version);
    let onnx = engines.onnx()?;
    let model_dir = f.tree.join("model");
    let file =
        onnx_file(&f.tree).ok_or_else(|| format!("{label}: no .onnx file in the model store"))?;
    let options = ModelOptions {
        sessions: f.spec.instances as usize,
        ..ModelOptions::default()
    };
    let model =
        OnnxModel::load(onnx, file.as_path(), &options).map_err(|e| format!("{label}: {e}"))?;
    let processor = match &f.view.processor {
        Some(info) => Some(processor_ref(host, &f.spec.version_id, info, &model_dir)?),
        None => None,
    };
    Ok(Served {
        spec: f.spec,
        engine: Engine::Builtin(Arc::new(model)),
        processor,
    })
}

/// The `.onnx` file of an imported version (the import checked there is exactly one).
fn onnx_file(tree: &Path) -> Option<PathBuf> {
    let model = tree.join("model");
    let mut stack = vec![model];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                return Some(p);
            }
        }
    }
    None
}

fn processor_ref(
    host: &Arc<Host>,
    version_id: &str,
    info: &ProcessorInfo,
    model_dir: &Path,
) -> Result<PluginRef, String> {
    // The compiled form may have gone with a plugin of the same digest: register again from
    // the model store's copy (nothing is compiled when the host has it).
    let component = model_dir.join("customize_service.wasm");
    let bytes = std::fs::read(&component).map_err(|e| format!("{}: {e}", component.display()))?;
    host.register(&bytes, Some(World::InferenceProcessor))
        .map_err(|e| format!("the processor: {e}"))?;
    Ok(PluginRef {
        key: processor::plugin_key(version_id),
        digest: info.digest.clone(),
        world: World::InferenceProcessor,
        limits: info.limits.clone(),
        model_dir: Some(model_dir.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_lets_its_rate_through_and_refuses_the_rest() {
        let l = Limiter::new(5);
        let passed = (0..20).filter(|_| l.take()).count();
        assert!((5..=6).contains(&passed), "{passed}");
    }
}
