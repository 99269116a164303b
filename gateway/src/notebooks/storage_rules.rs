//! A notebook's storage chosen at create (seed 6.2 Table 6-2, spec/notebook.md §2.1, §2.5):
//! the primary storage (the work disk, or an object-storage folder mounted at
//! `/home/ma-user/work`) and up to five extended object-storage folders per type, each at a
//! path of the user's choosing with the seed's rules: unique, nesting allowed, none under
//! the 17 reserved prefixes, never a bucket's root.

use serde::Deserialize;

use crate::error::Error;
use crate::object_storage::ObjectUri;

/// Prefixes extended storage may not use (spec/notebook.md §2.5, verbatim).
pub const FORBIDDEN_PREFIXES: [&str; 17] = [
    "/data/",
    "/cache/",
    "/dev/",
    "/etc/",
    "/bin/",
    "/lib/",
    "/sbin/",
    "/modelarts/",
    "/train-worker1-log/",
    "/var/",
    "/resource_info/",
    "/usr/",
    "/sys/",
    "/run/",
    "/tmp/",
    "/infer/",
    "/opt/",
];

/// Extended storage folders per type.
pub const MAX_PER_TYPE: usize = 5;

pub use crate::backends::WORK_DIR;

/// Whether `path` is the work dir or in it (its folders come with the work dir).
pub fn in_work_dir(path: &str) -> bool {
    path.strip_prefix(WORK_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `storage` of a create request: the work disk (`evs`, the default) or a folder of an
/// object store (`obs`, or `pfs`, the seed's parallel file system: the same here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub uri: Option<String>,
    pub connection: Option<String>,
}

/// One entry of `extended_storage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendedRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub uri: String,
    pub connection: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A validated object-storage mount chosen at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateMount {
    /// `primary` or `extended`.
    pub kind: &'static str,
    /// `obs` or `pfs`.
    pub fs: String,
    /// Where the notebook sees it, without a trailing `/`.
    pub path: String,
    /// The folder, always with its trailing `/`.
    pub uri: ObjectUri,
    pub connection: String,
    pub read_only: bool,
}

fn object_type(field: &str, kind: &str) -> Result<String, Error> {
    match kind.to_ascii_lowercase().as_str() {
        t @ ("obs" | "pfs") => Ok(t.to_owned()),
        "sfs" => Err(Error::invalid(format!(
            "{field}: SFS (NFS) storage is not supported here; use \"obs\" (or \"pfs\") with an object-storage connection"
        ))),
        other => Err(Error::invalid(format!(
            "{field}: unknown storage type {other:?}; use \"obs\" or \"pfs\""
        ))),
    }
}

/// An object-storage folder: parsed, and not a bucket's root (seed: "a specific directory in
/// an OBS bucket rather than the root directory").
fn folder(field: &str, uri: &str) -> Result<ObjectUri, Error> {
    let u = ObjectUri::parse(uri).map_err(|e| Error::invalid(format!("{field}: {e}")))?;
    if u.key.trim_matches('/').is_empty() {
        return Err(Error::invalid(format!(
            "{field}: {uri:?} is the root of bucket {}; give a folder inside it, such as obs://{}/data/",
            u.bucket, u.bucket
        )));
    }
    Ok(ObjectUri {
        key: u.dir_prefix(),
        ..u
    })
}

/// An absolute, plain path, returned without its trailing `/`.
fn mount_path(field: &str, path: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::invalid(format!("{field}: {path:?} {why}"));
    if !path.starts_with('/') {
        return Err(bad("is not an absolute path"));
    }
    if path.len() > 255 {
        return Err(bad("is longer than 255 characters"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')))
    {
        return Err(bad(&format!(
            "has {c:?}; use letters, digits, '/', '-', '_' and '.'"
        )));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("is the root directory"));
    }
    if trimmed[1..]
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("has an empty, '.' or '..' part"));
    }
    let with_slash = format!("{trimmed}/");
    if let Some(p) = FORBIDDEN_PREFIXES
        .iter()
        .find(|p| with_slash.starts_with(*p))
    {
        let hint = if *p == "/data/" {
            " (folders under /data are mounted while the notebook runs: POST /v1/notebooks/{id}/mounts)"
        } else {
            ""
        };
        return Err(bad(&format!(
            "is under {p}, which extended storage may not use{hint}; reserved: {}",
            FORBIDDEN_PREFIXES.join(" ")
        )));
    }
    Ok(trimmed.to_owned())
}

/// Checks a create request's storage and returns the object-storage mounts it asks for
/// (primary first, then extended by path, so that a folder is mounted before one nested in
/// it).
pub fn validate(
    primary: Option<&PrimaryRequest>,
    extended: &[ExtendedRequest],
) -> Result<Vec<CreateMount>, Error> {
    let mut out = Vec::new();
    if let Some(p) = primary {
        match p.kind.to_ascii_lowercase().as_str() {
            "evs" => {
                if p.uri.is_some() || p.connection.is_some() {
                    return Err(Error::invalid(
                        "storage: the work disk (evs) takes no uri or connection",
                    ));
                }
            }
            _ => {
                let fs = object_type("storage.type", &p.kind)?;
                let (Some(uri), Some(connection)) = (&p.uri, &p.connection) else {
                    return Err(Error::invalid(format!(
                        "storage: {fs} storage needs a uri (obs://bucket/folder/) and a connection"
                    )));
                };
                out.push(CreateMount {
                    kind: "primary",
                    fs,
                    path: WORK_DIR.to_owned(),
                    uri: folder("storage.uri", uri)?,
                    connection: connection.clone(),
                    read_only: false,
                });
            }
        }
    }
    let mut per_type = std::collections::HashMap::<String, usize>::new();
    for (i, e) in extended.iter().enumerate() {
        let field = |f: &str| format!("extended_storage[{i}].{f}");
        let fs = object_type(&field("type"), &e.kind)?;
        let n = per_type.entry(fs.clone()).or_default();
        *n += 1;
        if *n > MAX_PER_TYPE {
            return Err(Error::invalid(format!(
                "extended_storage: at most {MAX_PER_TYPE} {} folders; this is the {}th",
                fs.to_uppercase(),
                n
            )));
        }
        let path = mount_path(&field("path"), &e.path)?;
        if let Some(same) = out.iter().find(|m| m.path == path) {
            return Err(Error::invalid(format!(
                "{}: {path} is already the mount path of the {} storage; mount paths must be unique",
                field("path"),
                same.kind
            )));
        }
        out.push(CreateMount {
            kind: "extended",
            fs,
            path,
            uri: folder(&field("uri"), &e.uri)?,
            connection: e.connection.clone(),
            read_only: e.read_only,
        });
    }
    out.sort_by_key(|m| (m.kind != "primary", m.path.matches('/').count()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(path: &str) -> ExtendedRequest {
        ExtendedRequest {
            kind: "obs".into(),
            path: path.into(),
            uri: "obs://bucket/dir/".into(),
            connection: "c".into(),
            read_only: false,
        }
    }

    fn message(r: Result<Vec<CreateMount>, Error>) -> String {
        r.unwrap_err().message
    }

    /// AC-ST-10: five per type; the sixth OBS is refused; five OBS and five PFS are fine.
    #[test]
    fn at_most_five_per_type() {
        let five: Vec<_> = (0..5)
            .map(|i| ext(&format!("/home/ma-user/work/d{i}")))
            .collect();
        assert_eq!(validate(None, &five).unwrap().len(), 5);
        let mut six = five.clone();
        six.push(ext("/home/ma-user/work/d5"));
        assert!(message(validate(None, &six)).contains("at most 5 OBS"));
        let mut ten = five.clone();
        ten.extend((0..5).map(|i| ExtendedRequest {
            kind: "PFS".into(),
            ..ext(&format!("/home/ma-user/work/p{i}"))
        }));
        assert_eq!(validate(None, &ten).unwrap().len(), 10);
    }

    /// AC-ST-11: each reserved prefix refused; duplicates refused; nesting accepted.
    #[test]
    fn reserved_prefixes_duplicates_and_nesting() {
        for p in FORBIDDEN_PREFIXES {
            let path = format!("{p}x");
            let m = message(validate(None, &[ext(&path)]));
            assert!(m.contains(&format!("is under {p}")), "{path}: {m}");
            // The prefix itself, without the slash, is refused too.
            assert!(validate(None, &[ext(p.trim_end_matches('/'))]).is_err());
        }
        // A name that merely starts like a reserved one is fine.
        assert!(validate(None, &[ext("/database")]).is_ok());
        assert!(validate(None, &[ext("/home/ma-user/work/ds")]).is_ok());
        let m = message(validate(
            None,
            &[ext("/home/ma-user/work/ds"), ext("/home/ma-user/work/ds/")],
        ));
        assert!(m.contains("must be unique"), "{m}");
        let nested = validate(
            None,
            &[
                ext("/home/ma-user/work/ds/sub"),
                ext("/home/ma-user/work/ds"),
            ],
        )
        .unwrap();
        // Parents first, whatever the order asked.
        assert_eq!(nested[0].path, "/home/ma-user/work/ds");
        assert_eq!(nested[1].path, "/home/ma-user/work/ds/sub");
        for bad in ["relative/x", "/", "/a//b", "/a/../etc", "/a b", "/a/./b"] {
            assert!(validate(None, &[ext(bad)]).is_err(), "{bad}");
        }
    }

    /// AC-ST-12: primary OBS storage must be a folder, never a bucket's root, and needs a
    /// connection.
    #[test]
    fn primary_object_storage() {
        let p = |uri: Option<&str>, conn: Option<&str>| PrimaryRequest {
            kind: "obs".into(),
            uri: uri.map(Into::into),
            connection: conn.map(Into::into),
        };
        let m = message(validate(Some(&p(Some("obs://bucket"), Some("c"))), &[]));
        assert!(m.contains("root of bucket"), "{m}");
        assert!(validate(Some(&p(Some("obs://bucket/"), Some("c"))), &[]).is_err());
        let ok = validate(Some(&p(Some("obs://bucket/dir"), Some("c"))), &[]).unwrap();
        assert_eq!(ok[0].path, WORK_DIR);
        assert_eq!(ok[0].uri.key, "dir/");
        assert!(
            message(validate(Some(&p(Some("obs://bucket/dir/"), None)), &[]))
                .contains("connection")
        );
        // The work dir cannot also be an extended path.
        let m = message(validate(
            Some(&p(Some("obs://bucket/dir/"), Some("c"))),
            &[ext("/home/ma-user/work/")],
        ));
        assert!(m.contains("primary storage"), "{m}");
        // Extended folders are not bucket roots either; SFS is refused by name.
        let mut root = ext("/home/ma-user/work/x");
        root.uri = "s3://bucket".into();
        assert!(message(validate(None, &[root])).contains("root of bucket"));
        let sfs = ExtendedRequest {
            kind: "SFS".into(),
            ..ext("/home/ma-user/work/x")
        };
        assert!(message(validate(None, &[sfs])).contains("SFS"));
        let evs = PrimaryRequest {
            kind: "evs".into(),
            uri: None,
            connection: None,
        };
        assert!(validate(Some(&evs), &[]).unwrap().is_empty());
    }

    /// Property tests: mount paths and folders from generated input (`..`, `.`, empty parts,
    /// reserved prefixes, NUL, unicode) are refused or land where the rules allow.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::path::{Component, Path};

        fn part() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just(String::new()),
                Just("a\0b".to_owned()),
                Just("é".to_owned()),
                prop::sample::select(vec!["data", "etc", "tmp", "home", "ma-user", "work", "opt"])
                    .prop_map(str::to_owned),
                "[a-zA-Z0-9_.-]{1,8}",
                "\\PC{1,4}",
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            (
                any::<bool>(),
                prop::collection::vec(part(), 0..6),
                any::<bool>(),
            )
                .prop_map(|(absolute, parts, trailing)| {
                    let mut p = parts.join("/");
                    if absolute {
                        p.insert(0, '/');
                    }
                    if trailing {
                        p.push('/');
                    }
                    p
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn accepted_mount_paths_are_plain_absolute_and_unreserved(p in path()) {
                let Ok(mounts) = validate(None, &[ext(&p)]) else {
                    return Ok(());
                };
                let got = &mounts[0].path;
                prop_assert!(got.is_ascii() && got.starts_with('/') && !got.ends_with('/'), "{got:?}");
                prop_assert!(got[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{got:?}");
                prop_assert!(Path::new(got).components().skip(1).all(|c| matches!(c, Component::Normal(_))));
                let with_slash = format!("{got}/");
                prop_assert!(!FORBIDDEN_PREFIXES.iter().any(|f| with_slash.starts_with(f)), "{got:?}");
                prop_assert_eq!(got.as_str(), p.trim_end_matches('/'));
            }

            #[test]
            fn folders_are_never_a_bucket_root_and_keep_no_dot_parts(
                bucket in "[a-z0-9.-]{0,8}",
                key in prop::collection::vec(part(), 0..5),
                scheme in prop::sample::select(vec!["obs://", "s3://", "http://", ""]),
            ) {
                let uri = format!("{scheme}{bucket}/{}", key.join("/"));
                let Ok(f) = folder("uri", &uri) else {
                    return Ok(());
                };
                prop_assert!(!f.key.trim_matches('/').is_empty());
                prop_assert!(f.key.ends_with('/'));
                prop_assert!(f.key.split('/').all(|c| c != "." && c != ".."), "{:?}", f.key);
            }
        }
    }
}
