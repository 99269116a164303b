//! The gateway's layers, checked from its source: the import graph of its top-level modules
//! has no cycle (`server` → the front doors `api/`, `proxy/`, `ssh/` → services such as
//! `notebooks/`, `images`, `plugins` → `auth/`, `routing`, `activity` → `lifecycle/`,
//! `store/`, `backends/`, `object_storage/`), and only the HTTP front doors (and `upstream`,
//! their client side) import `axum`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules that serve HTTP (and the CLI, its client side).
const FRONT_DOORS: &[&str] = &["api", "proxy", "server", "cli", "upstream"];

/// Every `.rs` file under `src`: (its top-level module, its path under `src`, its code
/// without tests and comments, which may reach anywhere and import nothing).
fn sources(src: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        // This file names what it looks for; a `tests.rs` is a test module (`#[cfg(test)]`).
        if path.extension().is_none_or(|e| e != "rs")
            || path.ends_with("layers.rs")
            || path.ends_with("tests.rs")
        {
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel.split('/').next().unwrap_or_default();
        let top = top.strip_suffix(".rs").unwrap_or(top).to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default()
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        out.push((top, rel, code));
    }
    out
}

/// Top-level module → the top-level modules its non-test code names (`crate::x`,
/// `use crate::{x, …}`).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            modules.insert(name);
        } else if let Some(m) = name.strip_suffix(".rs")
            && !matches!(m, "lib" | "main" | "layers")
        {
            modules.insert(m.to_owned());
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, _, code) in sources(src) {
        if !modules.contains(&top) {
            continue;
        }
        let mut named = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let head = item.trim().split("::").next().unwrap_or_default();
                    named.insert(head.trim().to_owned());
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                named.insert(rest[..end].to_owned());
            }
        }
        let out = edges.entry(top.clone()).or_default();
        out.extend(
            named
                .into_iter()
                .filter(|m| modules.contains(m) && *m != top),
        );
    }
    edges
}

/// The modules from which some other module is reachable and back.
fn in_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    edges
        .keys()
        .filter(|m| reach(m).contains(*m))
        .cloned()
        .collect()
}

#[test]
fn no_module_is_in_an_import_cycle() {
    let edges = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(edges.len() > 10, "the gateway's modules were not found");
    let cyclic = in_cycles(&edges);
    assert!(
        cyclic.is_empty(),
        "these modules are in an import cycle: {:?}",
        cyclic
            .iter()
            .map(|m| (m, edges[m].intersection(&cyclic).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn only_the_front_doors_import_axum() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found: BTreeSet<String> = sources(&src)
        .into_iter()
        .filter(|(top, _, code)| !FRONT_DOORS.contains(&top.as_str()) && code.contains("axum::"))
        .map(|(_, rel, _)| rel)
        .collect();
    assert!(
        found.is_empty(),
        "these files below the front doors import axum (return crate::error::Error and let api/ answer): {found:?}"
    );
}

#[test]
fn the_check_sees_a_cycle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        in_cycles(&edges).into_iter().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}
