//! Plugin fixtures: WAT wrapped into components for a world of `wit/` (the hostile cases),
//! and the Python and C examples built with `atelier plugin build` (cached by content hash).

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A component for `world` from a core module in WAT whose exports follow the canonical ABI
/// (see [`dummy_wat`] for the names and signatures).
pub fn wat_component(world: &str, wat: &str) -> Vec<u8> {
    wat_component_with(&[], world, wat)
}

/// Like [`wat_component`], with more WIT packages (`extra`, in order; the world is looked up
/// in the last one when given).
pub fn wat_component_with(extra: &[&str], world: &str, wat: &str) -> Vec<u8> {
    atelier_plugins::fixtures::wat_component(extra, world, wat)
        .unwrap_or_else(|e| panic!("wrapping the fixture into a component: {e:#}"))
}

/// The component of a `component.wat` conformance case (`tests/plugins/<world>/<case>/`):
/// wrapped for the case's `world.txt` (else the world its parent directory names), with its
/// `extra.wit` when it has one.
pub fn wat_case(dir: &Path) -> Vec<u8> {
    let path = dir.join("component.wat");
    let wat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let world = match std::fs::read_to_string(dir.join("world.txt")) {
        Ok(w) => w.trim().to_string(),
        Err(_) => dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("{}: no world.txt and no parent", dir.display())),
    };
    match std::fs::read_to_string(dir.join("extra.wit")) {
        Ok(extra) => wat_component_with(&[&extra], &world, &wat),
        Err(_) => wat_component(&world, &wat),
    }
}

/// The core module a component of `world` must be (imports and export signatures), as WAT.
pub fn dummy_wat(world: &str) -> String {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_dir(repo_root().join("wit"))
        .expect("wit/ parses");
    let world = resolve
        .select_world(&[pkg], Some(world))
        .expect("the world exists");
    let module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wasmprinter::print_bytes(module).expect("printing")
}

/// FNV-1a over file contents: a cache key, not a security boundary.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

fn hash_tree(dir: &Path, h: &mut Fnv) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == "build" || name == "storage" || name == "__pycache__" {
            continue;
        }
        h.update(name.as_bytes());
        if p.is_dir() {
            hash_tree(&p, h);
        } else if let Ok(bytes) = std::fs::read(&p) {
            h.update(&bytes);
        }
    }
}

/// A plugin project (Python, or C) built with `atelier plugin build`, cached by the hash of
/// its sources and the contracts: returns the component's path.
pub async fn built_python(project: &Path) -> PathBuf {
    let mut h = Fnv::new();
    hash_tree(project, &mut h);
    hash_tree(&repo_root().join("wit"), &mut h);
    let cache = crate::cache_dir().join("test-plugins");
    std::fs::create_dir_all(&cache).expect("creating the plugin cache");
    let name = project.file_name().unwrap().to_string_lossy().into_owned();
    let out = cache.join(format!("{name}-{:016x}.wasm", h.0));
    if out.exists() {
        return out;
    }
    let tmp = cache.join(format!(
        "{name}-{}.partial.wasm",
        uuid::Uuid::new_v4().simple()
    ));
    let r = crate::run_cli(
        &[
            "plugin",
            "build",
            &project.to_string_lossy(),
            "--output",
            &tmp.to_string_lossy(),
        ],
        &crate::plugin_cli_env(),
    )
    .await;
    r.assert_ok(&format!("atelier plugin build {}", project.display()));
    std::fs::rename(&tmp, &out).expect("moving the built component");
    out
}

/// A shared compile cache for the plugin tests' gateways (the restart test uses its own).
pub fn shared_cache() -> String {
    crate::cache_dir()
        .join("test-plugin-cache")
        .to_string_lossy()
        .into_owned()
}

/// A gateway with the shared plugin compile cache.
pub async fn gateway() -> crate::Gateway {
    crate::Gateway::start_with(&[("ATELIER_PLUGIN_CACHE_DIR", &shared_cache())]).await
}

/// `POST /v1/plugins` (multipart): the manifest, the component and extra files.
pub async fn upload(
    api: &crate::Api,
    manifest: &serde_json::Value,
    component: Vec<u8>,
    files: &[(&str, Vec<u8>)],
) -> crate::Reply {
    let mut form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("c.wasm"),
        );
    for (name, data) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name(name.to_string()),
        );
    }
    api.send(
        api.request(reqwest::Method::POST, "/v1/plugins")
            .multipart(form),
    )
    .await
}

/// A JSON file, read and parsed (a test fails naming the file otherwise).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies a directory tree (nothing when `from` does not exist).
pub fn copy_tree(from: &Path, to: &Path) {
    if !from.exists() {
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
