//! A model package's layout (seed 9.3.1), checked over a listing of its files before
//! anything is copied: the gateway lists an object-storage prefix or a folder and passes
//! `(relative path, size)` pairs, paths `/`-separated and relative to the folder the user
//! pointed at.
//!
//! ```text
//! <the folder pointed at>/
//! └── model/                          mandatory, fixed name
//!     ├── config.json                 mandatory, exactly one (see `config`)
//!     ├── customize_service.wasm      optional: the pre/post-processing component
//!     │                               (world `inference-processor`, docs/plugins.md)
//!     ├── plugin.json                 optional, only beside it: the component's manifest
//!     └── …                           model files (saved_model.pb, variables/, *.onnx, …)
//! ```
//!
//! Atelier's departure from the seed: the processor is a WebAssembly component, not
//! `customize_service.py`, which is refused with a pointer to docs/plugins.md. Its manifest
//! is named `plugin.json` as in every plugin project (`atelier plugin new`).
//!
//! Rules the seed leaves open, and what this module does:
//! - Only `model/` is imported. Other files in the folder (a training job's logs, say) are
//!   listed in [`PackageLayout::ignored`] so the caller can say so; they do not count
//!   towards the limits.
//! - A zero-byte entry whose path ends in `/` is a folder marker (object stores' consoles
//!   create them) and is skipped; any other path ending in `/` is refused.
//! - Every path is checked, `model/` or not: one hostile name refuses the package.
//! - The first problem found is reported, in this order: paths, the `model/` folder,
//!   `config.json`, the processor, the number of files, each file's size, the total.

use std::collections::HashSet;

/// The package's configuration file.
pub const CONFIG_PATH: &str = "model/config.json";
/// The pre/post-processing component.
pub const PROCESSOR_PATH: &str = "model/customize_service.wasm";
/// The component's manifest (`plugin.json`, as in a plugin project), optional.
pub const PROCESSOR_MANIFEST_PATH: &str = "model/plugin.json";
/// The seed's Python processor, which Atelier does not run.
pub const PYTHON_PROCESSOR_PATH: &str = "model/customize_service.py";

/// At most this many files under `model/`: a model is a handful of files (a TF SavedModel
/// is three); the cap bounds the copy and the rows of its listing.
pub const DEFAULT_MAX_FILES: usize = 10_000;
/// The default cap on the package's total size: the seed's 30 GB for a custom engine's
/// image and package on a public pool (seed 9.3.4).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 30 * GIB;
/// One file larger than this is refused (seed 9.2.2: "5 GB", unless dynamic loading, which
/// Atelier does not have yet).
pub const MAX_FILE_BYTES: u64 = 5 * GIB;
/// A path segment longer than this is refused: the longest file name Linux file systems
/// (ext4, XFS) take.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// A relative path longer than this is refused: an S3 key is at most 1024 bytes, prefix
/// included.
pub const MAX_PATH_BYTES: usize = 1024;

const GIB: u64 = 1024 * 1024 * 1024;

/// Seed event (9.6.2) with its `xxx` placeholder: see [`PackageError::FileTooLarge`].
pub const EVENT_FILE_TOO_LARGE: &str =
    "Failed to import model file xxx because it is larger than 5 GB.";

/// Limits a deployment may set (the gateway's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    pub max_files: usize,
    pub max_total_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            max_files: DEFAULT_MAX_FILES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// One file of the package, its path relative to the folder pointed at (`model/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub path: String,
    pub size: u64,
}

/// The pre/post-processing component and its manifest, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processor {
    /// Always [`PROCESSOR_PATH`].
    pub component: String,
    /// [`PROCESSOR_MANIFEST_PATH`] when the package has one.
    pub manifest: Option<String>,
}

/// A package whose layout passed [`PackageLayout::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLayout {
    config: String,
    processor: Option<Processor>,
    files: Vec<PackageFile>,
    total_size: u64,
    ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("the package is empty: no files found; point at the folder that holds model/")]
    Empty,
    #[error("the package has no model/ folder: found {found}; {hint}")]
    NoModelFolder { found: String, hint: String },
    #[error("model file path {path:?} is refused: {reason}")]
    BadPath { path: String, reason: String },
    #[error("model file path {path:?} is listed twice")]
    Duplicate { path: String },
    #[error("the package has no {CONFIG_PATH}: every model package needs exactly one{}", similar_note(.similar))]
    NoConfig { similar: Option<String> },
    #[error(
        "{PYTHON_PROCESSOR_PATH} is refused: Atelier runs pre- and post-processing as a WebAssembly component, {PROCESSOR_PATH} (world inference-processor); see docs/plugins.md"
    )]
    PythonProcessor,
    #[error(
        "{PROCESSOR_MANIFEST_PATH} is the manifest of a processor component, but {PROCESSOR_PATH} is missing; see docs/plugins.md"
    )]
    ManifestWithoutComponent,
    #[error("the package has {count} files under model/, more than the {max} allowed")]
    TooManyFiles { count: usize, max: usize },
    /// The seed's event text, [`EVENT_FILE_TOO_LARGE`], with the file's path.
    #[error("{}", EVENT_FILE_TOO_LARGE.replacen("xxx", .path, 1))]
    FileTooLarge { path: String, size: u64 },
    #[error(
        "the package holds {total} bytes under model/, more than the {max} bytes ({}) allowed",
        gib(*.max)
    )]
    TooLarge { total: u64, max: u64 },
}

fn similar_note(similar: &Option<String>) -> String {
    match similar {
        Some(p) => format!(" (found {p}; the name and place are fixed: {CONFIG_PATH})"),
        None => String::new(),
    }
}

fn gib(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

impl PackageLayout {
    /// Checks a listing of `(relative path, size)` pairs against the layout and `limits`.
    /// The first problem found is the error.
    pub fn check(
        listing: &[(String, u64)],
        limits: &PackageLimits,
    ) -> Result<PackageLayout, PackageError> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(listing.len());
        let mut model: Vec<PackageFile> = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        for (path, size) in listing {
            if let Some(folder) = path.strip_suffix('/') {
                if *size != 0 {
                    return Err(bad(path, "ends with '/' but is not an empty folder marker"));
                }
                if !folder.is_empty() {
                    check_path(path, folder)?;
                }
                continue;
            }
            check_path(path, path)?;
            if !seen.insert(path.as_str()) {
                return Err(PackageError::Duplicate { path: path.clone() });
            }
            if path.starts_with("model/") {
                model.push(PackageFile {
                    path: path.clone(),
                    size: *size,
                });
            } else {
                ignored.push(path.clone());
            }
        }
        model.sort_by(|a, b| a.path.cmp(&b.path));
        ignored.sort();

        if model.is_empty() {
            return Err(no_model_folder(&ignored));
        }
        if !seen.contains(CONFIG_PATH) {
            let similar = model
                .iter()
                .map(|f| f.path.as_str())
                .find(|p| {
                    p.rsplit('/')
                        .next()
                        .is_some_and(|name| name.eq_ignore_ascii_case("config.json"))
                })
                .map(str::to_string);
            return Err(PackageError::NoConfig { similar });
        }
        if seen.contains(PYTHON_PROCESSOR_PATH) {
            return Err(PackageError::PythonProcessor);
        }
        let processor = match (
            seen.contains(PROCESSOR_PATH),
            seen.contains(PROCESSOR_MANIFEST_PATH),
        ) {
            (true, has_manifest) => Some(Processor {
                component: PROCESSOR_PATH.to_string(),
                manifest: has_manifest.then(|| PROCESSOR_MANIFEST_PATH.to_string()),
            }),
            (false, true) => return Err(PackageError::ManifestWithoutComponent),
            (false, false) => None,
        };
        if model.len() > limits.max_files {
            return Err(PackageError::TooManyFiles {
                count: model.len(),
                max: limits.max_files,
            });
        }
        let mut total: u64 = 0;
        for f in &model {
            if f.size > MAX_FILE_BYTES {
                return Err(PackageError::FileTooLarge {
                    path: f.path.clone(),
                    size: f.size,
                });
            }
            // Each size is at most 5 GiB and there are at most `max_files` of them; saturate
            // anyway rather than trust a caller's limits.
            total = total.saturating_add(f.size);
        }
        if total > limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                total,
                max: limits.max_total_bytes,
            });
        }
        Ok(PackageLayout {
            config: CONFIG_PATH.to_string(),
            processor,
            files: model,
            total_size: total,
            ignored,
        })
    }

    /// The path of `config.json`: [`CONFIG_PATH`].
    pub fn config(&self) -> &str {
        &self.config
    }
    pub fn processor(&self) -> Option<&Processor> {
        self.processor.as_ref()
    }
    /// Every file under `model/` (config and processor included), sorted by path.
    pub fn files(&self) -> &[PackageFile] {
        &self.files
    }
    /// The sum of [`PackageLayout::files`]' sizes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }
    /// Files outside `model/`, not imported, sorted.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

fn bad(path: &str, reason: impl Into<String>) -> PackageError {
    PackageError::BadPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// A relative path that names one place under the package on every file system and object
/// store: no absolute path, `\`, control character (NUL included), empty, `.` or `..`
/// segment, and segments and the whole within the length caps. `shown` is the path as
/// listed (with a folder marker's `/`), for the message.
fn check_path(shown: &str, path: &str) -> Result<(), PackageError> {
    if path.is_empty() {
        return Err(bad(shown, "is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(
            shown,
            format!("is {} bytes long, more than {MAX_PATH_BYTES}", path.len()),
        ));
    }
    if path.starts_with('/') {
        return Err(bad(
            shown,
            "is absolute; paths are relative to the package folder",
        ));
    }
    if path.contains('\\') {
        return Err(bad(shown, "contains '\\'; separate folders with '/'"));
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(bad(shown, format!("contains the control character {c:?}")));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(bad(shown, "has an empty segment (\"//\")")),
            "." | ".." => {
                return Err(bad(shown, format!("has a {segment:?} segment")));
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(bad(
                    shown,
                    format!(
                        "has a name of {} bytes, more than {MAX_SEGMENT_BYTES}",
                        s.len()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn no_model_folder(files: &[String]) -> PackageError {
    let Some(first) = files.first() else {
        return PackageError::Empty;
    };
    let found = match files.len() {
        1 => first.clone(),
        n => format!("{first} and {} more", n - 1),
    };
    let pointed_at_model = files.iter().any(|p| {
        matches!(
            p.as_str(),
            "config.json" | "customize_service.wasm" | "customize_service.py"
        )
    });
    // `ocr/model/config.json`: the model folder is one or more levels down.
    let deeper = files.iter().find_map(|p| {
        p.find("/model/")
            .filter(|_| p.ends_with("/config.json"))
            .map(|i| &p[..=i])
    });
    let hint = if pointed_at_model {
        "this looks like the model/ folder itself; point at the folder that holds it".to_string()
    } else if let Some(parent) = deeper {
        format!("point at {parent}, the folder that holds model/")
    } else {
        "point at the folder that holds model/".to_string()
    };
    PackageError::NoModelFolder { found, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, u64)]) -> Vec<(String, u64)> {
        entries.iter().map(|(p, s)| (p.to_string(), *s)).collect()
    }

    fn check(entries: &[(&str, u64)]) -> Result<PackageLayout, PackageError> {
        PackageLayout::check(&listing(entries), &PackageLimits::default())
    }

    #[test]
    fn a_package_with_config_and_component_is_accepted() {
        let layout = check(&[
            ("model/saved_model.pb", 1000),
            ("model/", 0),
            ("model/config.json", 20),
            ("model/customize_service.wasm", 300),
            ("model/variables/variables.index", 4),
            ("model/variables/", 0),
            ("model/variables/variables.data-00000-of-00001", 5),
        ])
        .unwrap();
        assert_eq!(layout.config(), "model/config.json");
        assert_eq!(
            layout.processor(),
            Some(&Processor {
                component: "model/customize_service.wasm".into(),
                manifest: None
            })
        );
        let paths: Vec<&str> = layout.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "model/config.json",
                "model/customize_service.wasm",
                "model/saved_model.pb",
                "model/variables/variables.data-00000-of-00001",
                "model/variables/variables.index",
            ]
        );
        assert_eq!(layout.total_size(), 1000 + 20 + 300 + 4 + 5);
        assert!(layout.ignored().is_empty());
    }

    #[test]
    fn the_processor_is_optional_and_its_manifest_comes_with_it() {
        let bare = check(&[("model/config.json", 2), ("model/m.onnx", 9)]).unwrap();
        assert_eq!(bare.processor(), None);

        let with_manifest = check(&[
            ("model/config.json", 2),
            ("model/customize_service.wasm", 9),
            ("model/plugin.json", 3),
        ])
        .unwrap();
        assert_eq!(
            with_manifest
                .processor()
                .and_then(|p| p.manifest.as_deref()),
            Some("model/plugin.json")
        );

        let err = check(&[("model/config.json", 2), ("model/plugin.json", 3)]).unwrap_err();
        assert_eq!(err, PackageError::ManifestWithoutComponent);
        assert!(
            err.to_string()
                .contains("model/customize_service.wasm is missing")
        );
    }

    #[test]
    fn files_outside_model_are_ignored_and_listed() {
        let layout = check(&[
            ("model/config.json", 2),
            ("train.log", 5_000_000),
            ("eval/report.txt", 7),
        ])
        .unwrap();
        assert_eq!(layout.ignored(), ["eval/report.txt", "train.log"]);
        assert_eq!(layout.total_size(), 2);
    }

    #[test]
    fn a_prefix_without_model_is_refused_with_where_to_point() {
        // §5 item 1: no model/ ⇒ refused.
        let err = check(&[("ocr/config.json", 2)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the package has no model/ folder: found ocr/config.json; point at the folder that holds model/"
        );

        let err = check(&[("ocr/model/config.json", 2), ("ocr/model/a.pb", 2)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the package has no model/ folder: found ocr/model/a.pb and 1 more; point at ocr/, the folder that holds model/"
        );

        let err = check(&[("config.json", 2), ("saved_model.pb", 2)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("this looks like the model/ folder itself"),
            "{err}"
        );

        assert_eq!(check(&[]).unwrap_err(), PackageError::Empty);
        assert_eq!(check(&[("model/", 0)]).unwrap_err(), PackageError::Empty);
        // A file called `model` is not the folder.
        assert!(matches!(
            check(&[("model", 3)]).unwrap_err(),
            PackageError::NoModelFolder { .. }
        ));
    }

    #[test]
    fn config_json_is_mandatory_at_its_fixed_place() {
        let err = check(&[("model/a.pb", 2)]).unwrap_err();
        assert_eq!(err, PackageError::NoConfig { similar: None });
        assert_eq!(
            err.to_string(),
            "the package has no model/config.json: every model package needs exactly one"
        );
        for elsewhere in ["model/Config.json", "model/sub/config.json"] {
            let err = check(&[("model/a.pb", 2), (elsewhere, 2)]).unwrap_err();
            assert_eq!(
                err,
                PackageError::NoConfig {
                    similar: Some(elsewhere.into())
                }
            );
            assert!(err.to_string().contains(&format!("found {elsewhere}")));
        }
    }

    #[test]
    fn a_path_listed_twice_is_refused() {
        let err = check(&[("model/config.json", 2), ("model/config.json", 3)]).unwrap_err();
        assert_eq!(
            err,
            PackageError::Duplicate {
                path: "model/config.json".into()
            }
        );
    }

    #[test]
    fn a_python_processor_is_refused_pointing_at_the_wasm_docs() {
        for also_wasm in [false, true] {
            let mut entries = vec![("model/config.json", 2), ("model/customize_service.py", 2)];
            if also_wasm {
                entries.push(("model/customize_service.wasm", 2));
            }
            let err = check(&entries).unwrap_err();
            assert_eq!(err, PackageError::PythonProcessor);
            let text = err.to_string();
            assert!(text.contains("WebAssembly component"), "{text}");
            assert!(text.contains("model/customize_service.wasm"), "{text}");
            assert!(text.contains("docs/plugins.md"), "{text}");
        }
        // A Python file deeper down is just a model file.
        check(&[
            ("model/config.json", 2),
            ("model/pkg/customize_service.py", 2),
        ])
        .unwrap();
    }

    #[test]
    fn hostile_or_unportable_paths_are_refused_by_name() {
        let long_name = format!("model/{}", "a".repeat(256));
        let long_path = format!("model/{}x", "a/".repeat(510));
        for (path, says) in [
            ("model/../etc/passwd", "\"..\" segment"),
            ("../model/config.json", "\"..\" segment"),
            ("model/./config.json", "\".\" segment"),
            ("/model/a.pb", "absolute"),
            ("model\\a.pb", "'\\'"),
            ("model/a\0.pb", "control character"),
            ("model/a\n.pb", "control character"),
            ("model//a.pb", "empty segment"),
            ("", "is empty"),
            (long_name.as_str(), "256 bytes"),
            (long_path.as_str(), "more than 1024"),
        ] {
            let err = check(&[("model/config.json", 2), (path, 1)]).unwrap_err();
            match &err {
                PackageError::BadPath { path: p, reason } => {
                    assert_eq!(p, path);
                    assert!(reason.contains(says), "{path:?}: {reason}");
                }
                other => panic!("{path:?}: {other:?}"),
            }
        }
        // 255 bytes is fine.
        let ok = format!("model/{}", "a".repeat(255));
        check(&[("model/config.json", 2), (ok.as_str(), 1)]).unwrap();
        // A folder marker with content, or with a bad name, is refused too.
        assert!(matches!(
            check(&[("model/config.json", 2), ("model/x/", 5)]).unwrap_err(),
            PackageError::BadPath { .. }
        ));
        assert!(matches!(
            check(&[("model/config.json", 2), ("model/../", 0)]).unwrap_err(),
            PackageError::BadPath { .. }
        ));
    }

    #[test]
    fn a_file_over_5_gib_is_refused_with_the_seeds_event() {
        let err = check(&[
            ("model/config.json", 2),
            ("model/big.bin", MAX_FILE_BYTES + 1),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to import model file model/big.bin because it is larger than 5 GB."
        );
        check(&[("model/config.json", 2), ("model/big.bin", MAX_FILE_BYTES)]).unwrap();
    }

    #[test]
    fn the_total_and_the_file_count_have_caps() {
        let limits = PackageLimits {
            max_files: 3,
            max_total_bytes: 100,
        };
        let ok = listing(&[("model/config.json", 50), ("model/a", 25), ("model/b", 25)]);
        assert_eq!(
            PackageLayout::check(&ok, &limits).unwrap().total_size(),
            100
        );

        let over = listing(&[("model/config.json", 50), ("model/a", 25), ("model/b", 26)]);
        assert_eq!(
            PackageLayout::check(&over, &limits).unwrap_err(),
            PackageError::TooLarge {
                total: 101,
                max: 100
            }
        );

        let many = listing(&[
            ("model/config.json", 1),
            ("model/a", 1),
            ("model/b", 1),
            ("model/c", 1),
        ]);
        assert_eq!(
            PackageLayout::check(&many, &limits).unwrap_err(),
            PackageError::TooManyFiles { count: 4, max: 3 }
        );

        // The default: 30 GiB in all.
        let seven = vec![
            ("model/config.json".to_string(), 1),
            ("model/1".to_string(), 5 * GIB),
            ("model/2".to_string(), 5 * GIB),
            ("model/3".to_string(), 5 * GIB),
            ("model/4".to_string(), 5 * GIB),
            ("model/5".to_string(), 5 * GIB),
            ("model/6".to_string(), 5 * GIB),
        ];
        let err = PackageLayout::check(&seven, &PackageLimits::default()).unwrap_err();
        assert_eq!(
            err,
            PackageError::TooLarge {
                total: 30 * GIB + 1,
                max: 30 * GIB
            }
        );
        assert!(err.to_string().contains("(30 GiB)"), "{err}");
    }
}
