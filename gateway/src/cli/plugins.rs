//! `atelier plugin …`: the plugin authors' toolchain. `new`, `build` and `test` work
//! locally without a gateway (`test` runs the same host, with the same limits, in-process);
//! `push`, `list`, `get`, `delete` and `invoke` talk to the gateway.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize};
use super::{ClientOpts, Ctx};

const COMPONENTIZE_PY: &str = "0.25.1";
/// wit-bindgen-cli, whose C generator writes a C plugin's bindings (scripts/lib.sh pins the
/// same version and installs it at the same place).
const WIT_BINDGEN: &str = "0.63.0";
/// What a C plugin's build needs on Debian (bookworm and later).
const C_DEBS: &str = "clang lld wasi-libc libclang-rt-dev-wasm32";

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Start a plugin project: sources, a manifest (plugin.json), a sample input and the WIT
    /// contracts (works without a gateway).
    New(NewArgs),
    /// Build a project into a component, build/<name>.wasm (Python: componentize-py, found
    /// on PATH or installed on first use; Rust: cargo for wasm32-wasip2; C: wit-bindgen,
    /// installed on first use, and clang for wasm32-wasi).
    Build(BuildArgs),
    /// Run a component locally with the gateway's host and limits, and print its output,
    /// logs, metrics, timings and any limit it hit (works without a gateway).
    Test(TestArgs),
    /// Register a component with the gateway.
    Push(PushArgs),
    /// List the gateway's plugins.
    List(ListArgs),
    /// Show one plugin.
    Get(NameVersion),
    /// Delete a plugin (its owner or an admin).
    Delete(NameVersion),
    /// Call a plugin on the gateway with a JSON input.
    Invoke(InvokeArgs),
}

impl PluginCommand {
    /// Commands that need no gateway.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            PluginCommand::New(_) | PluginCommand::Build(_) | PluginCommand::Test(_)
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The directory to create (its name becomes the plugin's name).
    pub dir: PathBuf,
    /// python, rust or c (rust: workflow-step only, built with the wasm32-wasip2 target;
    /// c: inference-processor only, built with clang for wasm32-wasi).
    #[arg(long, default_value = "python")]
    pub lang: String,
    /// inference-processor, workflow-step or training-algorithm.
    #[arg(long)]
    pub world: String,
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The project directory (with plugin.json).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the component [default: DIR/build/<name>.wasm].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// A component (.wasm), or a project directory (its build/<name>.wasm, plugin.json,
    /// input.json, model/ and storage/).
    pub component: PathBuf,
    /// The JSON input [default: the project's input.json].
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The manifest with the limits [default: the project's plugin.json].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// An inference processor's model directory, seen by the plugin at /model
    /// [default: the project's model/].
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// The directory standing in for object storage [default: the project's storage/, else
    /// a new temporary directory].
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// Call this many times (warm instances show their reuse in the timings).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// A component (.wasm) or a project directory.
    pub component: PathBuf,
    /// [default: the manifest's]
    #[arg(long)]
    pub name: Option<String>,
    /// [default: the manifest's]
    #[arg(long)]
    pub version: Option<String>,
    /// [default: the project's plugin.json]
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Model files to upload with an inference processor [default: the project's model/*].
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only plugins of this world.
    #[arg(long)]
    pub world: Option<String>,
    /// Only versions of this plugin.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct NameVersion {
    pub name: String,
    pub version: String,
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    pub name: String,
    pub version: String,
    /// The JSON input file (`-`: stdin).
    #[arg(long)]
    pub input: PathBuf,
}

// ---- templates (the examples and the contracts, compiled in) ----

struct Template {
    files: &'static [(&'static str, &'static str)],
}

const WIT: &[(&str, &str)] = &[
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    (
        "wit/inference.wit",
        include_str!("../../../wit/inference.wit"),
    ),
    (
        "wit/workflow.wit",
        include_str!("../../../wit/workflow.wit"),
    ),
    (
        "wit/training.wit",
        include_str!("../../../wit/training.wit"),
    ),
];

fn template(lang: &str, world: &str) -> Option<Template> {
    let files: &'static [(&str, &str)] = match (lang, world) {
        ("python", "inference-processor") => &[
            (
                "app.py",
                include_str!("../../../examples/plugins/python-inference-processor/app.py"),
            ),
            (
                "plugin.json",
                include_str!("../../../examples/plugins/python-inference-processor/plugin.json"),
            ),
            (
                "input.json",
                include_str!("../../../examples/plugins/python-inference-processor/input.json"),
            ),
            (
                "model/labels.txt",
                include_str!(
                    "../../../examples/plugins/python-inference-processor/model/labels.txt"
                ),
            ),
        ],
        ("python", "workflow-step") => &[
            (
                "app.py",
                include_str!("../../../examples/plugins/python-workflow-step/app.py"),
            ),
            (
                "plugin.json",
                include_str!("../../../examples/plugins/python-workflow-step/plugin.json"),
            ),
            (
                "input.json",
                include_str!("../../../examples/plugins/python-workflow-step/input.json"),
            ),
            (
                "storage/data/iris/part-1.csv",
                include_str!(
                    "../../../examples/plugins/python-workflow-step/storage/data/iris/part-1.csv"
                ),
            ),
            (
                "storage/data/iris/part-2.csv",
                include_str!(
                    "../../../examples/plugins/python-workflow-step/storage/data/iris/part-2.csv"
                ),
            ),
        ],
        ("python", "training-algorithm") => &[
            (
                "app.py",
                include_str!("../../../examples/plugins/python-training-algorithm/app.py"),
            ),
            (
                "plugin.json",
                include_str!("../../../examples/plugins/python-training-algorithm/plugin.json"),
            ),
            (
                "input.json",
                include_str!("../../../examples/plugins/python-training-algorithm/input.json"),
            ),
            (
                "storage/data/line/points.csv",
                include_str!(
                    "../../../examples/plugins/python-training-algorithm/storage/data/line/points.csv"
                ),
            ),
        ],
        ("rust", "workflow-step") => &[
            (
                "Cargo.toml",
                include_str!("../../../examples/plugins/rust-workflow-step/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../examples/plugins/rust-workflow-step/src/lib.rs"),
            ),
            (
                "plugin.json",
                include_str!("../../../examples/plugins/rust-workflow-step/plugin.json"),
            ),
            (
                "input.json",
                include_str!("../../../examples/plugins/rust-workflow-step/input.json"),
            ),
            (
                "storage/data/words/a.txt",
                include_str!(
                    "../../../examples/plugins/rust-workflow-step/storage/data/words/a.txt"
                ),
            ),
        ],
        ("c", "inference-processor") => &[
            (
                "processor.c",
                include_str!("../../../examples/plugins/c-inference-processor/processor.c"),
            ),
            (
                "json.c",
                include_str!("../../../examples/plugins/c-inference-processor/json.c"),
            ),
            (
                "json.h",
                include_str!("../../../examples/plugins/c-inference-processor/json.h"),
            ),
            (
                "plugin.json",
                include_str!("../../../examples/plugins/c-inference-processor/plugin.json"),
            ),
            (
                "input.json",
                include_str!("../../../examples/plugins/c-inference-processor/input.json"),
            ),
            (
                "model/labels.txt",
                include_str!("../../../examples/plugins/c-inference-processor/model/labels.txt"),
            ),
        ],
        _ => return None,
    };
    Some(Template { files })
}

const WORLDS: [&str; 3] = ["inference-processor", "workflow-step", "training-algorithm"];

fn new_project(a: &NewArgs) -> Result<(), CliError> {
    if !WORLDS.contains(&a.world.as_str()) {
        return Err(CliError::other(format!(
            "unknown world {:?}; the worlds are {}",
            a.world,
            WORLDS.join(", ")
        )));
    }
    let Some(t) = template(&a.lang, &a.world) else {
        return Err(CliError::other(match a.lang.as_str() {
            "python" | "rust" | "c" => format!(
                "there is no {} template for {}: the Rust template is a workflow step and the C template an inference processor (docs/plugins.md shows the other worlds' exports)",
                a.lang, a.world
            ),
            other => format!("unknown language {other:?}; use python, rust or c"),
        }));
    };
    if a.dir.exists()
        && std::fs::read_dir(&a.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::other(format!(
            "{} exists and is not empty",
            a.dir.display()
        )));
    }
    let base = a
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin");
    let name: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_start_matches(['-', '_'])
        .chars()
        .take(64)
        .collect();
    let name = if name.is_empty() {
        "plugin".to_string()
    } else {
        name
    };
    let write = |rel: &str, text: &str| -> Result<(), CliError> {
        let path = a.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::other(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| CliError::other(format!("{}: {e}", path.display())))
    };
    for (rel, text) in t.files {
        if *rel == "plugin.json" {
            let mut m: Value = serde_json::from_str(text).expect("template manifest is JSON");
            m["name"] = json!(name);
            write(
                rel,
                &format!("{}\n", serde_json::to_string_pretty(&m).expect("JSON")),
            )?;
        } else if *rel == "Cargo.toml" {
            write(
                rel,
                &text.replace("name = \"word-count\"", &format!("name = \"{name}\"")),
            )?;
        } else {
            write(rel, text)?;
        }
    }
    for (rel, text) in WIT {
        write(rel, text)?;
    }
    write(
        "README.md",
        &format!(
            "# {name}\n\nAn Atelier {world} plugin ({lang}).\n\n```sh\natelier plugin build .            # -> build/{name}.wasm\natelier plugin test .             # runs input.json locally, with the gateway's limits\natelier plugin push .             # registers it (ATELIER_URL, ATELIER_TOKEN)\natelier plugin invoke {name} 0.1.0 --input input.json\n```\n\n`wit/` holds the contracts (package atelier:plugin@0.1.0); see Atelier's docs/plugins.md.\n",
            world = a.world,
            lang = a.lang
        ),
    )?;
    out(&format!(
        "created {} ({} {} plugin {name}); next: atelier plugin build {}",
        a.dir.display(),
        a.lang,
        a.world,
        a.dir.display()
    ));
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, CliError> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::other(format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::other(format!("{}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::other(format!("{} is not JSON: {e}", path.display())))
}

fn manifest_of(dir: &Path) -> Result<Value, CliError> {
    let path = dir.join("plugin.json");
    if !path.exists() {
        return Err(CliError::other(format!(
            "{} has no plugin.json; create a project with `atelier plugin new`",
            dir.display()
        )));
    }
    read_json(&path)
}

fn str_of<'a>(m: &'a Value, key: &str, path: &Path) -> Result<&'a str, CliError> {
    m.get(key).and_then(Value::as_str).ok_or_else(|| {
        CliError::other(format!(
            "{}: plugin.json needs a string {key:?}",
            path.display()
        ))
    })
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ATELIER_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("atelier");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("atelier")
}

fn on_path(program: &str) -> Option<PathBuf> {
    which::which(program).ok()
}

/// The lock of a tool's installation (its directory created): one installer at a time,
/// parallel builds wait for the first. Released when dropped.
fn tool_lock(path: &Path) -> Result<std::fs::File, CliError> {
    let parent = path.parent().expect("a tools dir");
    std::fs::create_dir_all(parent)
        .map_err(|e| CliError::other(format!("{}: {e}", parent.display())))?;
    let lock = std::fs::File::create(path)
        .map_err(|e| CliError::other(format!("{}: {e}", path.display())))?;
    lock.lock()
        .map_err(|e| CliError::other(format!("locking {}: {e}", path.display())))?;
    Ok(lock)
}

/// componentize-py: $ATELIER_COMPONENTIZE_PY, on PATH, or installed (once) into a venv in
/// the cache dir.
fn componentize_py() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("ATELIER_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = on_path("componentize-py") {
        return Ok(p);
    }
    let venv = cache_dir()
        .join("tools")
        .join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let bin = venv.join("bin").join("componentize-py");
    let done = venv.join(".complete");
    if done.is_file() {
        return Ok(bin);
    }
    let lock = tool_lock(&venv.with_extension("lock"))?;
    if done.is_file() {
        return Ok(bin);
    }
    err(&format!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once)",
        venv.display()
    ));
    let _ = std::fs::remove_dir_all(&venv);
    let run = |cmd: &mut Command, what: &str| -> Result<(), CliError> {
        let status = cmd
            .status()
            .map_err(|e| CliError::other(format!("{what}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(CliError::other(format!(
                "{what} failed ({status}); install componentize-py yourself (pip install componentize-py=={COMPONENTIZE_PY}) and put it on PATH"
            )))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("componentize-py=={COMPONENTIZE_PY}"),
        ]),
        "pip install componentize-py",
    )?;
    std::fs::write(&done, b"").map_err(|e| CliError::other(format!("{}: {e}", done.display())))?;
    drop(lock);
    Ok(bin)
}

/// The project's contracts (relative to `dir`), or (without a wit/ dir) the ones this
/// atelier was built with, written under build/wit.
fn project_wit(dir: &Path) -> Result<PathBuf, CliError> {
    if dir.join("wit").is_dir() {
        return Ok(PathBuf::from("wit"));
    }
    for (rel, text) in WIT {
        let path = dir.join("build").join(rel);
        let parent = path.parent().expect("wit/ file");
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::other(format!("{}: {e}", parent.display())))?;
        std::fs::write(&path, text)
            .map_err(|e| CliError::other(format!("{}: {e}", path.display())))?;
    }
    Ok(PathBuf::from("build").join("wit"))
}

/// wit-bindgen: $ATELIER_WIT_BINDGEN, else version WIT_BINDGEN in the cache's tools dir
/// (where scripts/lib.sh puts it too), built there with `cargo install` once.
fn wit_bindgen() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("ATELIER_WIT_BINDGEN") {
        return Ok(PathBuf::from(p));
    }
    let tools = cache_dir().join("tools");
    let dir = tools.join(format!("wit-bindgen-{WIT_BINDGEN}"));
    let bin = dir.join("bin").join("wit-bindgen");
    if bin.is_file() {
        return Ok(bin);
    }
    // The lock scripts/lib.sh's cargo_tool takes (flock) as well.
    let lock = tool_lock(&tools.join("wit-bindgen.lock"))?;
    if bin.is_file() {
        return Ok(bin);
    }
    if on_path("cargo").is_none() {
        return Err(CliError::other(format!(
            "a C plugin's bindings need wit-bindgen {WIT_BINDGEN}: install Rust's cargo (it is built once with `cargo install`), or install wit-bindgen-cli {WIT_BINDGEN} yourself and set ATELIER_WIT_BINDGEN to it"
        )));
    }
    err(&format!(
        "building wit-bindgen {WIT_BINDGEN} into {} (once; a few minutes)",
        dir.display()
    ));
    let partial = tools.join(format!("wit-bindgen-{WIT_BINDGEN}.partial"));
    let build_dir = tools.join("wit-bindgen-build");
    let _ = std::fs::remove_dir_all(&partial);
    let status = Command::new("cargo")
        .env("CARGO_TARGET_DIR", &build_dir)
        .args([
            "install",
            "--quiet",
            "--locked",
            "--version",
            WIT_BINDGEN,
            "--no-default-features",
            "--features",
            "c",
            "--root",
        ])
        .arg(&partial)
        .arg("wit-bindgen-cli")
        .status()
        .map_err(|e| CliError::other(format!("cargo install wit-bindgen-cli: {e}")))?;
    if !status.success() {
        return Err(CliError::other(format!(
            "cargo install wit-bindgen-cli {WIT_BINDGEN} failed ({status}); its messages are above"
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&build_dir);
    std::fs::rename(&partial, &dir)
        .map_err(|e| CliError::other(format!("{}: {e}", dir.display())))?;
    drop(lock);
    Ok(bin)
}

/// The C sources of a project: its top-level `*.c` files, sorted.
fn c_sources(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::other(format!("{}: {e}", dir.display())))?;
    let mut sources: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c") && p.is_file())
        .collect();
    sources.sort();
    Ok(sources)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A C project: wit-bindgen's C bindings of the world, the project's `*.c` and the bindings
/// compiled by clang into a wasm32-wasi reactor module, and that module made a component
/// with the WASI preview1 reactor adapter. The work happens in a temporary directory (so
/// builds of one project may run at once); without `--output`, the bindings are copied to
/// the project's build/bindings for its author to read.
fn build_c(
    dir: &Path,
    name: &str,
    world: &str,
    output: &Path,
    keep_bindings: bool,
) -> Result<(), CliError> {
    let io = |p: &Path, e: std::io::Error| CliError::other(format!("{}: {e}", p.display()));
    let work = TempDir(
        std::env::temp_dir().join(format!("atelier-c-build-{}", uuid::Uuid::new_v4().simple())),
    );
    let bindings = work.0.join("bindings");
    std::fs::create_dir_all(&bindings).map_err(|e| io(&bindings, e))?;
    // The project's contracts, or (without a wit/ dir) the ones this atelier was built with.
    let wit = if dir.join("wit").is_dir() {
        std::path::absolute(dir.join("wit")).map_err(|e| io(dir, e))?
    } else {
        for (rel, text) in WIT {
            let path = work.0.join(rel);
            std::fs::create_dir_all(path.parent().expect("wit/ file")).map_err(|e| io(&path, e))?;
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        work.0.join("wit")
    };
    let wb = wit_bindgen()?;
    let status = Command::new(&wb)
        .args(["c", "--world", world, "--out-dir"])
        .arg(&bindings)
        .arg(&wit)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| io(&wb, e))?;
    if !status.success() {
        return Err(CliError::other(format!(
            "wit-bindgen failed ({status}); its messages are above"
        )));
    }
    let snake = world.replace('-', "_");
    let clang = std::env::var_os("ATELIER_CLANG")
        .map(PathBuf::from)
        .or_else(|| on_path("clang"))
        .ok_or_else(|| {
            CliError::other(format!(
                "no clang on PATH: a C plugin is built with clang for wasm32-wasi (on Debian: apt-get install {C_DEBS}; or set ATELIER_CLANG)"
            ))
        })?;
    let core = work.0.join(format!("{name}.core.wasm"));
    let mut cmd = Command::new(&clang);
    cmd.current_dir(dir).args([
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-O2",
        "-Wall",
    ]);
    cmd.arg("-I").arg(&bindings);
    if let Some(sysroot) = std::env::var_os("ATELIER_WASI_SYSROOT") {
        let mut arg = std::ffi::OsString::from("--sysroot=");
        arg.push(sysroot);
        cmd.arg(arg);
    }
    for src in c_sources(dir)? {
        cmd.arg(src.file_name().expect("a file"));
    }
    let status = cmd
        .arg(bindings.join(format!("{snake}.c")))
        .arg(bindings.join(format!("{snake}_component_type.o")))
        .arg("-o")
        .arg(&core)
        .status()
        .map_err(|e| io(&clang, e))?;
    if !status.success() {
        return Err(CliError::other(format!(
            "clang failed ({status}); its messages are above (missing headers or libc: on Debian apt-get install {C_DEBS}; elsewhere point ATELIER_WASI_SYSROOT at a wasi-libc sysroot)"
        )));
    }
    let module = std::fs::read(&core).map_err(|e| io(&core, e))?;
    let component = componentize(&module)
        .map_err(|e| CliError::other(format!("making the core module a component: {e:#}")))?;
    std::fs::write(output, component).map_err(|e| io(output, e))?;
    if keep_bindings {
        let kept = dir.join("build").join("bindings");
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::create_dir_all(&kept).map_err(|e| io(&kept, e))?;
        let entries = std::fs::read_dir(&bindings).map_err(|e| io(&bindings, e))?;
        for e in entries.flatten() {
            let to = kept.join(e.file_name());
            std::fs::copy(e.path(), &to).map_err(|e| io(&to, e))?;
        }
    }
    Ok(())
}

/// A core module with the component type wit-bindgen embedded (its custom section) and
/// preview1 imports, as a component: the imports go through the reactor adapter of the
/// wasmtime the host runs.
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
}

fn build(a: &BuildArgs) -> Result<PathBuf, CliError> {
    let dir = &a.dir;
    let m = manifest_of(dir)?;
    let mpath = dir.join("plugin.json");
    let name = str_of(&m, "name", &mpath)?;
    let world = str_of(&m, "world", &mpath)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| dir.join("build").join(format!("{name}.wasm")));
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::other(format!("{}: {e}", parent.display())))?;
    }
    let output = std::path::absolute(&output).unwrap_or(output);
    if dir.join("app.py").exists() {
        let wit = project_wit(dir)?;
        let cpy = componentize_py()?;
        let status = Command::new(&cpy)
            .current_dir(dir)
            .arg("-d")
            .arg(&wit)
            .args(["-w", world, "componentize", "app", "-p", ".", "-o"])
            .arg(&output)
            .status()
            .map_err(|e| CliError::other(format!("{}: {e}", cpy.display())))?;
        if !status.success() {
            return Err(CliError::other(format!(
                "componentize-py failed ({status}); its messages are above"
            )));
        }
    } else if dir.join("Cargo.toml").exists() {
        let targets = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output();
        let has_target = targets
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == "wasm32-wasip2")
            })
            .unwrap_or(false);
        if !has_target {
            return Err(CliError::other(
                "the Rust toolchain has no wasm32-wasip2 target: run `rustup target add wasm32-wasip2`",
            ));
        }
        let status = Command::new("cargo")
            .current_dir(dir)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .status()
            .map_err(|e| CliError::other(format!("cargo: {e}")))?;
        if !status.success() {
            return Err(CliError::other(format!("cargo build failed ({status})")));
        }
        let built = dir
            .join("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::copy(&built, &output)
            .map_err(|e| CliError::other(format!("{}: {e}", built.display())))?;
    } else if !c_sources(dir)?.is_empty() {
        build_c(dir, name, world, &output, a.output.is_none())?;
    } else {
        return Err(CliError::other(format!(
            "{} has neither app.py (Python), Cargo.toml (Rust) nor *.c files (C)",
            dir.display()
        )));
    }
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    out(&format!(
        "built {} ({:.1} MB)",
        output.display(),
        size as f64 / 1e6
    ));
    Ok(output)
}

/// A component argument: the file, or a project dir's build/<name>.wasm.
struct Resolved {
    component: PathBuf,
    project: Option<PathBuf>,
    manifest: Option<Value>,
}

fn resolve(path: &Path, manifest: Option<&Path>) -> Result<Resolved, CliError> {
    let manifest_value = match manifest {
        Some(m) => Some(read_json(m)?),
        None => None,
    };
    if path.is_dir() {
        let m = match manifest_value {
            Some(m) => m,
            None => manifest_of(path)?,
        };
        let name = str_of(&m, "name", &path.join("plugin.json"))?.to_string();
        let component = path.join("build").join(format!("{name}.wasm"));
        if !component.exists() {
            return Err(CliError::other(format!(
                "{} is not built yet: run `atelier plugin build {}`",
                component.display(),
                path.display()
            )));
        }
        return Ok(Resolved {
            component,
            project: Some(path.to_path_buf()),
            manifest: Some(m),
        });
    }
    if !path.exists() {
        return Err(CliError::other(format!(
            "{} does not exist",
            path.display()
        )));
    }
    Ok(Resolved {
        component: path.to_path_buf(),
        project: None,
        manifest: manifest_value,
    })
}

async fn test(a: &TestArgs, json_out: bool) -> Result<(), CliError> {
    use atelier_plugins::{CallContext, Host, HostSettings, LimitsSpec, PluginRef, World};
    let r = resolve(&a.component, a.manifest.as_deref())?;
    let bytes = std::fs::read(&r.component)
        .map_err(|e| CliError::other(format!("{}: {e}", r.component.display())))?;
    let input_path = match (&a.input, &r.project) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join("input.json"),
        (None, None) => return Err(CliError::other("give the input with --input FILE")),
    };
    let input = read_json(&input_path)?;
    let manifest = r.manifest.clone().unwrap_or_else(|| json!({}));
    let limits_spec: LimitsSpec = match manifest.get("limits") {
        Some(l) => serde_json::from_value(l.clone())
            .map_err(|e| CliError::other(format!("manifest limits: {e}")))?,
        None => LimitsSpec::default(),
    };
    let expected = match manifest.get("world").and_then(Value::as_str) {
        Some(w) => Some(
            World::parse(w)
                .ok_or_else(|| CliError::other(format!("manifest: unknown world {w:?}")))?,
        ),
        None => None,
    };
    let host = Host::new(cache_dir().join("plugin-test"), HostSettings::default())
        .map_err(|e| CliError::other(format!("cannot start the plugin host: {e:#}")))?;
    let h = host.clone();
    let registered = tokio::task::spawn_blocking(move || h.register(&bytes, expected))
        .await
        .map_err(|e| CliError::other(e.to_string()))?
        .map_err(|e| CliError::other(e.to_string()))?;
    let limits = host
        .settings()
        .resolve(registered.world, &limits_spec)
        .map_err(CliError::other)?;
    let model_dir = match (&a.model_dir, &r.project) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(p))
            if registered.world == World::InferenceProcessor && p.join("model").is_dir() =>
        {
            Some(p.join("model"))
        }
        _ => None,
    };
    let storage = match (&a.storage, &r.project) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.join("storage"),
        (None, None) => {
            std::env::temp_dir().join(format!("atelier-plugin-test-{}", uuid::Uuid::new_v4()))
        }
    };
    std::fs::create_dir_all(&storage)
        .map_err(|e| CliError::other(format!("{}: {e}", storage.display())))?;
    let name = manifest
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("local");
    let version = manifest
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let plugin = PluginRef {
        key: format!("{name}@{version}"),
        digest: registered.digest.clone(),
        world: registered.world,
        limits: limits.clone(),
        model_dir,
    };
    if !json_out {
        err(&format!(
            "{} plugin, {:.1} MB, sha256:{}; {}",
            registered.world,
            registered.size as f64 / 1e6,
            &registered.digest[..12],
            if registered.compiled {
                format!("compiled in {:.0} ms", registered.compile_ms)
            } else {
                "compiled form from the cache".to_string()
            }
        ));
        err(&format!(
            "limits: memory {} MiB, timeout {} ms, output {} KiB, concurrency {}, {:?} instances",
            limits.memory_mb,
            limits.timeout_ms,
            limits.output_kb,
            limits.concurrency,
            limits.instance_policy
        ));
    }
    let mut failed = false;
    for _ in 0..a.repeat.max(1) {
        let ctx = CallContext {
            tenant: "local".into(),
            storage: atelier_plugins::storage::Grant::new(
                storage.clone(),
                host.settings().max_object_mb * 1024 * 1024,
            ),
            ..Default::default()
        };
        let report = host.invoke(&plugin, ctx, &input).await;
        failed |= report.error.is_some();
        let v = serde_json::to_value(&report).map_err(|e| CliError::other(e.to_string()))?;
        print_report(&v, json_out)?;
    }
    if failed {
        return Err(CliError::other("the call failed (above)"));
    }
    Ok(())
}

/// Prints a call report: output, logs, stdout/stderr, metrics, timings, error.
fn print_report(v: &Value, json_out: bool) -> Result<(), CliError> {
    if json_out {
        return print_json(&v.to_string(), None);
    }
    if let Some(o) = v.get("output").filter(|o| !o.is_null()) {
        out(&serde_json::to_string_pretty(o).unwrap_or_default());
    }
    for l in v
        .get("logs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        err(&sanitize(&format!(
            "[{}] {}",
            cell(l, "level"),
            cell(l, "message")
        )));
    }
    for stream in ["stdout", "stderr"] {
        let text = v.get(stream).and_then(Value::as_str).unwrap_or_default();
        if !text.is_empty() {
            err(&format!("--- {stream}\n{}", text.trim_end()));
        }
    }
    if let Some(scalars) = v.pointer("/metrics/scalars").and_then(Value::as_object)
        && !scalars.is_empty()
    {
        let parts: Vec<String> = scalars
            .iter()
            .map(|(k, pts)| {
                let last = pts
                    .as_array()
                    .and_then(|a| a.last())
                    .and_then(|p| p.get("value"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let n = pts.as_array().map_or(0, Vec::len);
                if n > 1 {
                    format!("{k}={last} ({n} points)")
                } else {
                    format!("{k}={last}")
                }
            })
            .collect();
        err(&format!("metrics: {}", parts.join(", ")));
    }
    let t = |k: &str| {
        v.pointer(&format!("/timings/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as f64
            / 1000.0
    };
    let mut timing = vec![];
    if t("instantiate_us") > 0.0 {
        timing.push(format!("instantiate {:.2} ms", t("instantiate_us")));
    }
    if t("init_us") > 0.0 {
        timing.push(format!("init {:.2} ms", t("init_us")));
    }
    for c in v
        .pointer("/timings/calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(us)) = (
            c.get(0).and_then(Value::as_str),
            c.get(1).and_then(Value::as_u64),
        ) {
            timing.push(format!("{name} {:.2} ms", us as f64 / 1000.0));
        }
    }
    timing.push(format!("total {:.2} ms", t("total_us")));
    err(&format!(
        "timings: {} ({} instance)",
        timing.join(", "),
        cell(v, "instance")
    ));
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let kind = cell(e, "type");
        let message = match kind.as_str() {
            "limit" => format!(
                "limit hit: {} (limit {} {unit}, observed {} {unit}); {}",
                cell(e, "kind"),
                cell(e, "limit"),
                cell(e, "observed"),
                cell(e, "hint"),
                unit = cell(e, "unit")
            ),
            "guest" => format!(
                "the plugin returned an error ({}): {}",
                cell(e, "kind"),
                cell(e, "message")
            ),
            "trap" => format!("the plugin trapped: {}", cell(e, "message")),
            _ => cell(e, "message"),
        };
        err(&sanitize(&format!("error: {message}")));
    }
    Ok(())
}

pub fn run_local(opts: &ClientOpts, cmd: PluginCommand) -> Result<(), CliError> {
    match cmd {
        PluginCommand::New(a) => new_project(&a),
        PluginCommand::Build(a) => build(&a).map(|_| ()),
        PluginCommand::Test(a) => {
            let rt = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| rt.block_on(test(&a, opts.json)))
        }
        _ => unreachable!("remote commands go through run"),
    }
}

pub async fn run(ctx: &Ctx, cmd: PluginCommand) -> Result<(), CliError> {
    match cmd {
        PluginCommand::Push(a) => {
            let r = resolve(&a.component, a.manifest.as_deref())?;
            let mut manifest = r.manifest.unwrap_or_else(|| json!({}));
            if let Some(n) = &a.name {
                manifest["name"] = json!(n);
            }
            if let Some(v) = &a.version {
                manifest["version"] = json!(v);
            }
            if manifest.get("name").is_none() || manifest.get("version").is_none() {
                return Err(CliError::other(
                    "give --name and --version (or a manifest with them)",
                ));
            }
            let bytes = std::fs::read(&r.component)
                .map_err(|e| CliError::other(format!("{}: {e}", r.component.display())))?;
            let mut files = a.files.clone();
            if files.is_empty()
                && let Some(dir) = &r.project
                && manifest.get("world").and_then(Value::as_str) == Some("inference-processor")
                && let Ok(entries) = std::fs::read_dir(dir.join("model"))
            {
                let mut found: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                found.sort();
                files = found;
            }
            let mut form = reqwest::multipart::Form::new()
                .part(
                    "manifest",
                    reqwest::multipart::Part::text(manifest.to_string())
                        .mime_str("application/json")
                        .expect("mime"),
                )
                .part(
                    "component",
                    reqwest::multipart::Part::bytes(bytes).file_name(
                        r.component
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "component.wasm".into()),
                    ),
                );
            for f in &files {
                let data = std::fs::read(f)
                    .map_err(|e| CliError::other(format!("{}: {e}", f.display())))?;
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                form = form.part(
                    "file",
                    reqwest::multipart::Part::bytes(data).file_name(name),
                );
            }
            let reply = ctx.api.post_multipart(&["v1", "plugins"], form).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            out(&sanitize(&format!(
                "registered {} {} ({}, sha256:{}, {})",
                cell(v, "name"),
                cell(v, "version"),
                cell(v, "world"),
                cell(v, "digest").chars().take(12).collect::<String>(),
                if v.get("compiled").and_then(Value::as_bool) == Some(true) {
                    format!(
                        "compiled in {:.0} ms",
                        v.get("compile_ms").and_then(Value::as_f64).unwrap_or(0.0)
                    )
                } else {
                    "already compiled".to_string()
                }
            )));
        }
        PluginCommand::List(a) => {
            let mut q = Vec::new();
            if let Some(w) = a.world {
                q.push(("world", w));
            }
            if let Some(n) = a.name {
                q.push(("name", n));
            }
            let reply = ctx.api.get(&["v1", "plugins"], &q).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&[
                "NAME", "VERSION", "WORLD", "OWNER", "SIZE", "DIGEST", "CREATED",
            ]);
            for p in items(&reply.value)? {
                t.row([
                    cell(p, "name"),
                    cell(p, "version"),
                    cell(p, "world"),
                    cell(p, "owner"),
                    format!(
                        "{:.1} MB",
                        p.get("size").and_then(Value::as_f64).unwrap_or(0.0) / 1e6
                    ),
                    cell(p, "digest").chars().take(12).collect(),
                    cell(p, "created_at"),
                ]);
            }
            out(&t.render());
        }
        PluginCommand::Get(a) => {
            let reply = ctx
                .api
                .get(&["v1", "plugins", &a.name, &a.version], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            out(&serde_json::to_string_pretty(&reply.value).unwrap_or_default());
        }
        PluginCommand::Delete(a) => {
            ctx.api
                .delete(&["v1", "plugins", &a.name, &a.version])
                .await?;
            if !ctx.json {
                out(&format!(
                    "deleted plugin {} {}",
                    sanitize(&a.name),
                    sanitize(&a.version)
                ));
            }
        }
        PluginCommand::Invoke(a) => {
            let input = read_json(&a.input)?;
            let reply = ctx
                .api
                .post(
                    &["v1", "plugins", &a.name, &a.version, "invoke"],
                    Some(&input),
                )
                .await?;
            print_report(&reply.value, ctx.json)?;
            if reply.value.get("error").is_some_and(|e| !e.is_null()) {
                return Err(CliError::other("the call failed (above)"));
            }
        }
        PluginCommand::New(_) | PluginCommand::Build(_) | PluginCommand::Test(_) => {
            unreachable!("local")
        }
    }
    Ok(())
}
