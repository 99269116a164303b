//! The import graph of the gateway's top-level modules, checked: which modules take part in
//! an import cycle. The goal (issue 16) is none: `api/` → services → `store/`, `backends/`,
//! `lifecycle/`. Until the last cycle is broken, the modules still in it are listed here,
//! so that no other module joins it and the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules that are still in an import cycle. Remove a name when it leaves; never add.
const STILL_IN_A_CYCLE: &[&str] = &[
    "api",
    "auth",
    "images",
    "notebooks",
    "plugins",
    "proxy",
    "server",
    "ssh",
];

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
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
        if !modules.contains(&top) || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Tests may reach anywhere; comments are not imports.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
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
fn no_module_joins_an_import_cycle() {
    let edges = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(edges.len() > 10, "the gateway's modules were not found");
    let cyclic = in_cycles(&edges);
    let known: BTreeSet<String> = STILL_IN_A_CYCLE.iter().map(|s| s.to_string()).collect();
    let joined: Vec<_> = cyclic.difference(&known).collect();
    let left: Vec<_> = known.difference(&cyclic).collect();
    assert!(
        joined.is_empty(),
        "these modules are now in an import cycle: {joined:?}; the edges: {:?}",
        cyclic
            .iter()
            .map(|m| (m, edges[m].intersection(&cyclic).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );
    assert!(
        left.is_empty(),
        "these modules left the import cycle: take them off STILL_IN_A_CYCLE: {left:?}"
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
