//! Test fixtures (feature `fixtures`): a core module in WAT wrapped into a component of a
//! world of `wit/`, as the conformance cases, the host tests and the benchmark need.

use std::path::Path;

/// The contracts (`wit/` of the repository).
pub fn wit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("plugins/ has a parent")
        .join("wit")
}

/// A component for `world` from a core module in WAT whose exports follow the canonical ABI.
/// `extra` are more WIT packages (in order); the world is looked up in the last one given.
pub fn wat_component(extra: &[&str], world: &str, wat: &str) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let (mut pkg, _) = resolve.push_dir(wit_dir())?;
    for (i, src) in extra.iter().enumerate() {
        pkg = resolve.push_str(format!("extra-{i}.wit"), src)?;
    }
    let world = resolve.select_world(&[pkg], Some(world))?;
    let mut module = wat::parse_str(wat)?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .encode()
}

/// A training-algorithm component from one of the WAT cases in tests/plugins/training-algorithm
/// (with the case's `extra.wit` and `world.txt` when it has them).
pub fn training_case(case: &str) -> Vec<u8> {
    let dir = wit_dir()
        .parent()
        .expect("the wit dir has a parent: the repository")
        .join("tests/plugins/training-algorithm")
        .join(case);
    let path = dir.join("component.wat");
    let wat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let world = std::fs::read_to_string(dir.join("world.txt"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "training-algorithm".into());
    let extra = std::fs::read_to_string(dir.join("extra.wit")).ok();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    wat_component(&extra, &world, &wat).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}
