//! A package's processor component (`model/customize_service.wasm`, world
//! `inference-processor`, in place of the seed's `customize_service.py`): registered with
//! the plugin host at import, so a component that is no component, targets another world
//! or imports what the world does not offer fails the import, not the first call.

use std::path::Path;
use std::sync::Arc;

use atelier_plugins::{Host, HostSettings, Limits, LimitsSpec, World};
use serde::{Deserialize, Serialize};

/// What the import learned of the processor; stored with the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessorInfo {
    pub digest: String,
    /// The limits it runs with (its manifest's, within the host's bounds).
    pub limits: Limits,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

/// The key a version's processor has in the plugin host (warm instances, concurrency).
pub fn plugin_key(version_id: &str) -> String {
    format!("model:{version_id}")
}

/// `model/plugin.json` beside a processor: the plugin manifest (`atelier plugin new`
/// writes one); only `world` and `limits` matter for a model's processor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessorManifest {
    #[serde(default, rename = "name")]
    _name: Option<String>,
    #[serde(default, rename = "version")]
    _version: Option<String>,
    #[serde(default)]
    world: Option<String>,
    #[serde(default, rename = "description")]
    _description: String,
    #[serde(default)]
    limits: LimitsSpec,
}

/// Registers the staged processor (`component`, with `manifest` when the package has one);
/// the error says what is wrong with it, in words for the version's event.
pub async fn register(
    host: &Arc<Host>,
    settings: &HostSettings,
    component: &Path,
    manifest: Option<&Path>,
) -> Result<ProcessorInfo, String> {
    let spec = match manifest {
        Some(m) => {
            let text = std::fs::read(m).map_err(|e| format!("model/plugin.json: {e}"))?;
            let parsed: ProcessorManifest =
                serde_json::from_slice(&text).map_err(|e| format!("model/plugin.json: {e}"))?;
            if let Some(w) = &parsed.world
                && World::parse(w) != Some(World::InferenceProcessor)
            {
                return Err(format!(
                    "model/plugin.json: world {w:?}; a model's processor is an inference-processor"
                ));
            }
            parsed.limits
        }
        None => LimitsSpec::default(),
    };
    let limits = settings
        .resolve(World::InferenceProcessor, &spec)
        .map_err(|e| format!("model/plugin.json: {e}"))?;
    let bytes = std::fs::read(component).map_err(|e| format!("customize_service.wasm: {e}"))?;
    let _digest = host
        .lock_key(&crate::plugins::digest_key(
            &atelier_plugins::host::sha256_hex(&bytes),
        ))
        .await;
    let h = host.clone();
    let registered =
        tokio::task::spawn_blocking(move || h.register(&bytes, Some(World::InferenceProcessor)))
            .await
            .map_err(|e| format!("customize_service.wasm: registration thread: {e}"))?
            .map_err(|e| format!("customize_service.wasm: {e}"))?;
    Ok(ProcessorInfo {
        digest: registered.digest,
        limits,
        exports: registered.exports,
        imports: registered.imports,
    })
}
