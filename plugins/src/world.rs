//! The worlds of `atelier:plugin` and the checks a component passes at registration:
//! it exports one world's interface and imports only what that world (and the WASI
//! subset the host links) offers.

use serde::{Deserialize, Serialize};

/// The package and the version range the host links (0.1.x).
pub const PACKAGE: &str = "atelier:plugin";
pub const VERSION: &str = "0.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    InferenceProcessor,
    WorkflowStep,
    TrainingAlgorithm,
}

/// WASI 0.2 packages the host links. Sockets are linked so that toolchains which always
/// import them (componentize-py) load, but every socket operation is refused.
const WASI_OFFERED: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];

impl World {
    pub const ALL: [World; 3] = [
        World::InferenceProcessor,
        World::WorkflowStep,
        World::TrainingAlgorithm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            World::InferenceProcessor => "inference-processor",
            World::WorkflowStep => "workflow-step",
            World::TrainingAlgorithm => "training-algorithm",
        }
    }

    pub fn parse(s: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| w.name() == s)
    }

    /// The interface the world exports.
    pub fn export(self) -> &'static str {
        match self {
            World::InferenceProcessor => "processor",
            World::WorkflowStep => "step",
            World::TrainingAlgorithm => "algorithm",
        }
    }

    /// The `atelier:plugin` interfaces the world imports (type-only ones included).
    pub fn imports(self) -> &'static [&'static str] {
        match self {
            World::InferenceProcessor => &["types", "log", "metrics", "tensors", "inference-types"],
            World::WorkflowStep => &[
                "types",
                "log",
                "metrics",
                "tensors",
                "parameters",
                "storage",
                "step-types",
            ],
            World::TrainingAlgorithm => &[
                "types",
                "log",
                "metrics",
                "tensors",
                "parameters",
                "storage",
                "training-types",
                "checkpoints",
                "control",
            ],
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `atelier:plugin/log@0.1.0` → ("atelier:plugin", "log", Some("0.1.0")).
pub fn split_name(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (pkg, rest) = name.split_once('/')?;
    let (iface, version) = match rest.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (rest, None),
    };
    Some((pkg, iface, version))
}

/// True for `0.1.*`, the versions this host's `0.1.0` contracts link.
fn compatible_version(version: Option<&str>) -> bool {
    match version {
        Some(v) => {
            let mut parts = v.split('.');
            parts.next() == Some("0") && parts.next() == Some("1")
        }
        None => false,
    }
}

/// The world a component targets, from its exports: the first world whose interface it
/// exports.
pub fn detect(exports: &[String]) -> Option<World> {
    World::ALL.into_iter().find(|w| {
        exports.iter().any(|e| {
            split_name(e).is_some_and(|(pkg, iface, v)| {
                pkg == PACKAGE && iface == w.export() && compatible_version(v)
            })
        })
    })
}

/// Checks a component's imports against `world`; returns the imports the host does not
/// offer, each with the reason.
pub fn refused_imports(world: World, imports: &[String]) -> Vec<String> {
    let mut refused = Vec::new();
    for import in imports {
        let Some((pkg, iface, version)) = split_name(import) else {
            refused.push(format!(
                "{import} (a bare import; Atelier offers only the interfaces of its worlds)"
            ));
            continue;
        };
        if pkg == PACKAGE {
            if !world.imports().contains(&iface) {
                refused.push(format!("{import} (not part of the {world} world)"));
            } else if !compatible_version(version) {
                refused.push(format!(
                    "{import} (this gateway links {PACKAGE} {VERSION} and the 0.1.x versions before it)"
                ));
            }
        } else if WASI_OFFERED.contains(&pkg) {
            if !version.is_some_and(|v| v.starts_with("0.2.")) {
                refused.push(format!("{import} (only WASI 0.2.x is linked)"));
            }
        } else {
            refused.push(format!("{import} (a capability Atelier does not offer)"));
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_are_detected_and_imports_checked() {
        let exports = vec!["atelier:plugin/step@0.1.0".to_string()];
        assert_eq!(detect(&exports), Some(World::WorkflowStep));
        assert_eq!(detect(&["atelier:plugin/step@0.2.0".to_string()]), None);
        assert_eq!(
            detect(&["wasi:http/incoming-handler@0.2.0".to_string()]),
            None
        );
        let ok = vec![
            "atelier:plugin/log@0.1.0".to_string(),
            "atelier:plugin/storage@0.1.0".to_string(),
            "wasi:cli/environment@0.2.0".to_string(),
            "wasi:sockets/tcp@0.2.3".to_string(),
        ];
        assert!(refused_imports(World::WorkflowStep, &ok).is_empty());
        let bad = refused_imports(World::InferenceProcessor, &ok);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("storage"));
        let http = refused_imports(
            World::WorkflowStep,
            &["wasi:http/outgoing-handler@0.2.0".to_string()],
        );
        assert!(http[0].contains("does not offer"));
    }
}
