//! The compile cache: a registration's checks (a component, not a core module; one of our
//! worlds; no import we do not grant), the component and its compiled form on disk by digest
//! (`components/<digest>.wasm`, `compiled/<digest>-<engine hash>.cwasm`), and the prepared
//! components in memory (a `moka` cache by digest).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::Runtime;
use crate::bindings::Prepared;
use crate::limits::CallError;
use crate::world::{self, World};

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "the component is {size} bytes; the largest accepted is {limit} bytes (ATELIER_PLUGIN_MAX_COMPONENT_MB)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    NotComponent(String),
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error("{0}")]
    UnknownWorld(String),
    #[error("{0}")]
    ForbiddenImports(String),
    #[error("{0}")]
    Host(String),
}

/// What registration learned about a component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub digest: String,
    pub world: World,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub size: u64,
    /// Milliseconds spent compiling now (0 when the compiled form was already on disk).
    pub compile_ms: f64,
    /// Whether this registration compiled the component.
    pub compiled: bool,
}

/// Where a call found its plugin's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// Pre-instantiated in memory.
    Memory,
    /// The compiled artifact from the disk cache (no compilation).
    Disk,
    /// Compiled now (first use under these engine settings).
    Compiled,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
    loaded: moka::sync::Cache<String, Arc<Prepared>>,
    compilations: AtomicU64,
}

impl CompileCache {
    /// The cache under `dir`, for compiled forms of an engine whose hash is `engine_hash`.
    pub fn new(dir: PathBuf, engine_hash: &str) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir.join("components"))?;
        std::fs::create_dir_all(dir.join("compiled"))?;
        Ok(CompileCache {
            dir,
            engine_hash: engine_hash.to_string(),
            loaded: moka::sync::Cache::builder().max_capacity(256).build(),
            compilations: AtomicU64::new(0),
        })
    }

    /// Components compiled since the host started.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    fn compiled_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("compiled")
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Checks a component, compiles it (or reads its compiled form) and keeps it prepared in
    /// memory; the component and its compiled form are written once it passed.
    pub fn register(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
        expected: Option<World>,
    ) -> Result<Registered, RegisterError> {
        check_header(bytes)?;
        let digest = sha256_hex(bytes);
        let compiled_path = self.compiled_path(&digest);
        let started = Instant::now();
        let (component, compiled) = if compiled_path.exists() {
            (
                deserialize(runtime.engine(), &compiled_path)
                    .map_err(|e| RegisterError::Host(e.to_string()))?,
                false,
            )
        } else {
            let c = Component::new(runtime.engine(), bytes)
                .map_err(|e| RegisterError::Invalid(format!("{e:#}")))?;
            (c, true)
        };
        let compile_ms = if compiled {
            started.elapsed().as_secs_f64() * 1e3
        } else {
            0.0
        };
        let (world, exports, imports) = check_types(runtime.engine(), &component, expected)?;
        let pre = runtime
            .pre(world, &component)
            .map_err(|e| RegisterError::UnknownWorld(e.to_string()))?;
        if compiled {
            self.compilations.fetch_add(1, Ordering::Relaxed);
            let artifact = component
                .serialize()
                .map_err(|e| RegisterError::Host(e.to_string()))?;
            write_atomic(&compiled_path, &artifact)
                .map_err(|e| RegisterError::Host(e.to_string()))?;
        }
        let component_path = self.component_path(&digest);
        if !component_path.exists() {
            write_atomic(&component_path, bytes).map_err(|e| RegisterError::Host(e.to_string()))?;
        }
        self.loaded.insert(digest.clone(), Arc::new(pre));
        Ok(Registered {
            digest,
            world,
            exports,
            imports,
            size: bytes.len() as u64,
            compile_ms,
            compiled,
        })
    }

    /// The prepared plugin, when it is in memory.
    pub fn get(&self, digest: &str) -> Option<Arc<Prepared>> {
        self.loaded.get(digest)
    }

    /// The prepared plugin: from memory, from the disk cache, or compiled now.
    pub fn load(
        &self,
        runtime: &Runtime,
        digest: &str,
        world: World,
    ) -> Result<(Arc<Prepared>, LoadSource), CallError> {
        if let Some(l) = self.loaded.get(digest) {
            return Ok((l, LoadSource::Memory));
        }
        let compiled_path = self.compiled_path(digest);
        let (component, source) = if compiled_path.exists() {
            (
                deserialize(runtime.engine(), &compiled_path).map_err(CallError::host)?,
                LoadSource::Disk,
            )
        } else {
            let bytes = std::fs::read(self.component_path(digest)).map_err(|e| {
                CallError::host(format!("the component {digest} is not stored: {e}"))
            })?;
            let c = Component::new(runtime.engine(), &bytes).map_err(CallError::host)?;
            self.compilations.fetch_add(1, Ordering::Relaxed);
            let artifact = c.serialize().map_err(CallError::host)?;
            write_atomic(&compiled_path, &artifact).map_err(CallError::host)?;
            (c, LoadSource::Compiled)
        };
        let loaded = Arc::new(runtime.pre(world, &component).map_err(CallError::host)?);
        self.loaded.insert(digest.to_string(), loaded.clone());
        Ok((loaded, source))
    }

    /// Forgets a digest: in memory and its files.
    pub fn forget(&self, digest: &str) {
        self.loaded.invalidate(digest);
        let _ = std::fs::remove_file(self.component_path(digest));
        let _ = std::fs::remove_file(self.compiled_path(digest));
    }
}

fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: the file was written by `Component::serialize` of an engine with the same
    // compatibility hash (it is in the file name), into a directory only the host writes.
    Ok(unsafe { Component::deserialize_file(engine, path)? })
}

fn check_header(bytes: &[u8]) -> Result<(), RegisterError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(RegisterError::NotComponent(
            "not a WebAssembly file (it does not start with \\0asm); upload the .wasm component"
                .into(),
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(RegisterError::NotComponent(
            "this is a core WebAssembly module, not a component; build with componentize-py or cargo-component, or wrap it with `wasm-tools component new`".into(),
        )),
        _ => Err(RegisterError::NotComponent(
            "an unsupported WebAssembly version or layer (components of the component model are expected)".into(),
        )),
    }
}

fn check_types(
    engine: &Engine,
    component: &Component,
    expected: Option<World>,
) -> Result<(World, Vec<String>, Vec<String>), RegisterError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let world = match (world::detect(&exports), expected) {
        (Some(w), Some(e)) if w != e => {
            return Err(RegisterError::UnknownWorld(format!(
                "the manifest says world {e} but the component exports {} ({w} world)",
                exports.join(", ")
            )));
        }
        (Some(w), _) => w,
        (None, _) => {
            return Err(RegisterError::UnknownWorld(format!(
                "the component targets none of Atelier's worlds: it exports [{}], and a plugin exports one of {} (package {} {})",
                exports.join(", "),
                World::ALL
                    .iter()
                    .map(|w| format!("{}/{}@0.1.x ({w})", world::PACKAGE, w.export()))
                    .collect::<Vec<_>>()
                    .join(", "),
                world::PACKAGE,
                world::VERSION
            )));
        }
    };
    let refused = world::refused_imports(world, &imports);
    if !refused.is_empty() {
        return Err(RegisterError::ForbiddenImports(format!(
            "the component imports what Atelier does not grant to a {world} plugin: {}",
            refused.join("; ")
        )));
    }
    Ok((world, exports, imports))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
