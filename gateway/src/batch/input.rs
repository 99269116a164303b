//! A batch service's input (seed 9.5): an object storage folder, every file under it, or a
//! `.manifest` of JSON lines each naming one file by `source`; and the safe, unique name of
//! each file's result. Pure: the listing and the manifest's text come from the caller.

use std::collections::HashSet;

use crate::object_storage::ObjectUri;

/// The seed's limit on one input file: "image < 12 MB; CSV ≤ 12 MB" (a file is read whole
/// and sent as one request, like a real-time call's 12 MB body).
pub const MAX_ITEM_BYTES: u64 = 12 * 1024 * 1024;
/// Files one batch service may have: every item is a row written in the deploy's
/// transaction and a manifest line built in memory at the end; a larger job is several
/// services.
pub const MAX_ITEMS: usize = 10_000;
/// The largest input manifest read (10,000 lines of a long key and more fit easily).
pub const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;
/// The longest result file name kept from an input's name (S3 keys are at most 1024 bytes).
const MAX_NAME: usize = 200;

/// Where the inputs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Every object under this folder.
    Folder(ObjectUri),
    /// The files a `.manifest` names.
    Manifest(ObjectUri),
}

impl Input {
    /// `obs://bucket/prefix/` (a folder) or `obs://bucket/x.manifest`.
    pub fn parse(text: &str) -> Result<Input, String> {
        let uri = ObjectUri::parse(text.trim()).map_err(|e| format!("input: {e}"))?;
        if uri.key.ends_with(".manifest") {
            Ok(Input::Manifest(uri))
        } else {
            Ok(Input::Folder(ObjectUri {
                key: uri.dir_prefix(),
                bucket: uri.bucket,
            }))
        }
    }

    pub fn bucket(&self) -> &str {
        match self {
            Input::Folder(u) | Input::Manifest(u) => &u.bucket,
        }
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As the input named it.
    pub text: String,
    pub uri: ObjectUri,
    /// Known from a folder's listing.
    pub size: Option<u64>,
}

/// The files a folder's listing holds: folder markers left out, and what lies under
/// `skip` (the output folder, when it is inside the input folder: results are no inputs).
pub fn folder_items(
    bucket: &str,
    listing: &[(String, u64)],
    skip: Option<&str>,
) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for (key, size) in listing {
        if key.ends_with('/') || skip.is_some_and(|s| !s.is_empty() && key.starts_with(s)) {
            continue;
        }
        if out.len() == MAX_ITEMS {
            return Err(format!(
                "input: more than {MAX_ITEMS} files under the folder; a batch service takes at most {MAX_ITEMS}"
            ));
        }
        out.push(Source {
            text: format!("obs://{bucket}/{key}"),
            uri: ObjectUri {
                bucket: bucket.to_string(),
                key: key.clone(),
            },
            size: Some(*size),
        });
    }
    Ok(out)
}

/// The files a `.manifest` names, each line checked (seed 9.5: JSON lines, each one file
/// by `source`, `obs://` or `s3://`). A refusal names the line. `bucket`: the only bucket
/// sources may be in (the connection's, when it names one).
pub fn manifest_items(text: &str, bucket: Option<&str>) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| format!("input manifest line {n}: {why}");
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not a JSON object ({e})")))?;
        let Some(obj) = value.as_object() else {
            return Err(at("not a JSON object".into()));
        };
        let source = match obj.get("source") {
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            Some(_) => return Err(at("\"source\" is not a string".into())),
            None => {
                return Err(at(
                    "no \"source\"; each line is {\"source\": \"obs://BUCKET/KEY\"}".into(),
                ));
            }
        };
        let lower = source.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Err(at(format!(
                "{source:?}: URL sources (such as presigned links) are not read: the gateway does not fetch addresses users give it; name the object as obs://BUCKET/KEY on the service's connection"
            )));
        }
        let uri = ObjectUri::parse(&source).map_err(at)?;
        if uri.key.is_empty() || uri.key.ends_with('/') {
            return Err(at(format!(
                "{source:?} is a folder; each line names one file"
            )));
        }
        if let Some(b) = bucket
            && uri.bucket != b
        {
            return Err(at(format!(
                "{source:?} is not in bucket {b:?}, the only one the connection is for"
            )));
        }
        if out.len() == MAX_ITEMS {
            return Err(at(format!(
                "more than {MAX_ITEMS} files; a batch service takes at most {MAX_ITEMS}"
            )));
        }
        out.push(Source {
            text: source,
            uri,
            size: None,
        });
    }
    Ok(out)
}

/// The last part of a key: the file's name.
pub fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// A file name safe as the last part of a result key: the input's name with anything but
/// `A-Z a-z 0-9 . _ -` replaced by `_`, never starting with a dot (no `.`, `..`, hidden
/// names), at most 200 bytes; `file` when nothing is left.
pub fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    out.truncate(MAX_NAME);
    if out.trim_matches('_').is_empty() {
        return "file".to_string();
    }
    out
}

/// `<file name>_result.txt` (seed 9.5), unique among `taken`: a second `x.jpg` (from
/// another folder) gets `x.jpg-2_result.txt`, so no result overwrites another.
pub fn result_name(key: &str, taken: &mut HashSet<String>) -> String {
    let base = safe_name(base_name(key));
    let mut name = format!("{base}_result.txt");
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}_result.txt");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_a_folder_or_a_manifest() {
        assert_eq!(
            Input::parse("obs://data/in").unwrap(),
            Input::Folder(ObjectUri {
                bucket: "data".into(),
                key: "in/".into()
            })
        );
        assert!(matches!(
            Input::parse("s3://data/list/test.manifest").unwrap(),
            Input::Manifest(u) if u.key == "list/test.manifest"
        ));
        assert!(
            Input::parse("/local/dir")
                .unwrap_err()
                .starts_with("input:")
        );
    }

    #[test]
    fn manifest_lines_are_checked_one_by_one() {
        let ok = "{\"source\": \"obs://test/data/1.jpg\"}\n\n{\"source\": \"s3://test/data/2.jpg\", \"x\": 1}\n";
        let items = manifest_items(ok, None).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text, "obs://test/data/1.jpg");
        assert_eq!(items[1].uri.key, "data/2.jpg");
        assert_eq!(items[1].size, None);

        let line2 = |second: &str| format!("{{\"source\": \"obs://test/a.jpg\"}}\n{second}\n");
        for (second, says) in [
            ("not json", "input manifest line 2: not a JSON object"),
            ("[1, 2]", "input manifest line 2: not a JSON object"),
            (
                "{\"src\": \"obs://test/a\"}",
                "input manifest line 2: no \"source\"",
            ),
            (
                "{\"source\": 7}",
                "input manifest line 2: \"source\" is not a string",
            ),
            (
                "{\"source\": \"obs://test/data/\"}",
                "input manifest line 2: \"obs://test/data/\" is a folder",
            ),
            ("{\"source\": \"obs://test\"}", "is a folder"),
            (
                "{\"source\": \"obs://test/a/../b\"}",
                "'.' and '..' are not allowed",
            ),
            (
                "{\"source\": \"/etc/passwd\"}",
                "not an object storage path",
            ),
            (
                "{\"source\": \"https://infers-data.obs.example.com/x.csv?AccessKeyId=a&Signature=b\"}",
                "URL sources (such as presigned links) are not read",
            ),
            (
                "{\"source\": \"http://169.254.169.254/latest\"}",
                "URL sources",
            ),
        ] {
            let e = manifest_items(&line2(second), None).unwrap_err();
            assert!(e.contains(says), "{second}: {e}");
            assert!(e.starts_with("input manifest line 2"), "{second}: {e}");
        }
        // The connection's bucket bounds the sources.
        let e = manifest_items("{\"source\": \"obs://other/a.jpg\"}", Some("mine")).unwrap_err();
        assert!(e.contains("not in bucket \"mine\""), "{e}");
        assert!(manifest_items("{\"source\": \"obs://mine/a.jpg\"}", Some("mine")).is_ok());
        // Too many lines: the first one past the limit is named.
        let many: String = (0..=MAX_ITEMS)
            .map(|i| format!("{{\"source\": \"obs://test/{i}.jpg\"}}\n"))
            .collect();
        let e = manifest_items(&many, None).unwrap_err();
        assert!(
            e.starts_with(&format!("input manifest line {}: more than", MAX_ITEMS + 1)),
            "{e}"
        );
    }

    #[test]
    fn folders_list_files_without_markers_or_the_output() {
        let listing = vec![
            ("in/".to_string(), 0),
            ("in/a.jpg".to_string(), 5),
            ("in/sub/".to_string(), 0),
            ("in/sub/b.jpg".to_string(), 7),
            ("in/out/infer-result-1/a.jpg_result.txt".to_string(), 9),
        ];
        let items = folder_items("data", &listing, Some("in/out/")).unwrap();
        let keys: Vec<_> = items.iter().map(|s| s.uri.key.as_str()).collect();
        assert_eq!(keys, ["in/a.jpg", "in/sub/b.jpg"]);
        assert_eq!(items[1].size, Some(7));
        assert_eq!(items[0].text, "obs://data/in/a.jpg");
    }

    #[test]
    fn result_names_are_safe_and_unique() {
        let mut taken = HashSet::new();
        for (key, want) in [
            ("a/x.jpg", "x.jpg_result.txt"),
            ("b/x.jpg", "x.jpg-2_result.txt"),
            ("c/x.jpg", "x.jpg-3_result.txt"),
            ("..", "_._result.txt"),
            ("a/..", "_.-2_result.txt"),
            ("/abs", "abs_result.txt"),
            ("d/", "file_result.txt"),
            ("e/.hidden", "_hidden_result.txt"),
            ("f/we ird\n\u{7f}名.png", "we_ird___.png_result.txt"),
            ("g/%2e%2e", "_2e_2e_result.txt"),
        ] {
            let got = result_name(key, &mut taken);
            assert_eq!(got, want, "{key:?}");
            assert!(!got.contains('/') && !got.starts_with('.'), "{got}");
        }
        let long = "y".repeat(500);
        assert_eq!(
            result_name(&long, &mut taken).len(),
            200 + "_result.txt".len()
        );
    }
}
