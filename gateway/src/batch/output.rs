//! What a batch service writes into its output folder (seed 9.5):
//!
//! ```text
//! obs://bucket/out/infer-result-{task_id}/<file name>_result.txt   one per successful input
//! obs://bucket/out/infer-result-{task_id}.manifest                 one line per input, or,
//! obs://bucket/out/infer-result-{task_id}_1.manifest, _2, …        past `lines_per_manifest`
//! ```
//!
//! The seed names the results folder `infer-result-{task_id}` in its rules and
//! `infer-result` in its example; the rules win. A manifest line is
//! `{"source", "result": "SUCCESSFUL", "inference-loc"}` or
//! `{"source", "result": "FAILED", "error_message"}`, the keys exactly as the seed spells
//! them (a hyphen in one, an underscore in the other).

use serde::Serialize;

use crate::object_storage::ObjectUri;

/// Where one run of a service writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub bucket: String,
    /// The output folder's key prefix: empty or ending in `/`.
    pub prefix: String,
    pub task_id: String,
}

impl Output {
    pub fn new(folder: &ObjectUri, task_id: &str) -> Output {
        Output {
            bucket: folder.bucket.clone(),
            prefix: folder.dir_prefix(),
            task_id: task_id.to_string(),
        }
    }

    /// The key of a result (`result_name` is one of `input::result_name`'s).
    pub fn result_key(&self, result_name: &str) -> String {
        format!("{}infer-result-{}/{result_name}", self.prefix, self.task_id)
    }

    /// The result's location as a manifest line gives it.
    pub fn result_uri(&self, result_name: &str) -> String {
        format!("obs://{}/{}", self.bucket, self.result_key(result_name))
    }

    /// The manifests' keys and texts for `lines` (in input order): one manifest when they
    /// fit in `per_manifest`, else `_1`, `_2`, … of `per_manifest` lines each.
    pub fn manifests(&self, lines: &[String], per_manifest: usize) -> Vec<(String, String)> {
        let per = per_manifest.max(1);
        let base = format!("{}infer-result-{}", self.prefix, self.task_id);
        let text = |chunk: &[String]| {
            let mut t = chunk.join("\n");
            t.push('\n');
            t
        };
        if lines.len() <= per {
            return vec![(format!("{base}.manifest"), text(lines))];
        }
        lines
            .chunks(per)
            .enumerate()
            .map(|(i, chunk)| (format!("{base}_{}.manifest", i + 1), text(chunk)))
            .collect()
    }

    /// The manifests' keys for `n` lines (what a view lists).
    pub fn manifest_keys(&self, n: usize, per_manifest: usize) -> Vec<String> {
        let per = per_manifest.max(1);
        let base = format!("{}infer-result-{}", self.prefix, self.task_id);
        if n <= per {
            return vec![format!("{base}.manifest")];
        }
        (1..=n.div_ceil(per))
            .map(|i| format!("{base}_{i}.manifest"))
            .collect()
    }
}

/// One line of an output manifest.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub source: &'a str,
    pub result: &'static str,
    #[serde(rename = "inference-loc", skip_serializing_if = "Option::is_none")]
    pub inference_loc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<&'a str>,
}

impl<'a> Line<'a> {
    pub fn succeeded(source: &'a str, location: String) -> Line<'a> {
        Line {
            source,
            result: "SUCCESSFUL",
            inference_loc: Some(location),
            error_message: None,
        }
    }

    pub fn failed(source: &'a str, error: &'a str) -> Line<'a> {
        Line {
            source,
            result: "FAILED",
            inference_loc: None,
            error_message: Some(error),
        }
    }

    /// The line's JSON text (keys in the seed's order).
    pub fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> Output {
        Output::new(
            &ObjectUri {
                bucket: "test-bucket".into(),
                key: "test".into(),
            },
            "t1",
        )
    }

    #[test]
    fn lines_are_the_seeds() {
        let o = out();
        assert_eq!(
            Line::succeeded(
                "obs://obs-data-bucket/test/data/1.jpg",
                o.result_uri("1.jpg_result.txt")
            )
            .text(),
            r#"{"source":"obs://obs-data-bucket/test/data/1.jpg","result":"SUCCESSFUL","inference-loc":"obs://test-bucket/test/infer-result-t1/1.jpg_result.txt"}"#
        );
        assert_eq!(
            Line::failed(
                "s3://obs-data-bucket/test/data/2.jpg",
                "Download file failed."
            )
            .text(),
            r#"{"source":"s3://obs-data-bucket/test/data/2.jpg","result":"FAILED","error_message":"Download file failed."}"#
        );
    }

    #[test]
    fn manifests_split_past_their_size() {
        let o = out();
        let lines: Vec<String> = (1..=5).map(|i| format!("l{i}")).collect();
        assert_eq!(
            o.manifests(&lines, 10),
            vec![(
                "test/infer-result-t1.manifest".to_string(),
                "l1\nl2\nl3\nl4\nl5\n".to_string()
            )]
        );
        assert_eq!(
            o.manifests(&lines, 2),
            vec![
                (
                    "test/infer-result-t1_1.manifest".to_string(),
                    "l1\nl2\n".to_string()
                ),
                (
                    "test/infer-result-t1_2.manifest".to_string(),
                    "l3\nl4\n".to_string()
                ),
                (
                    "test/infer-result-t1_3.manifest".to_string(),
                    "l5\n".to_string()
                ),
            ]
        );
        assert_eq!(
            o.manifest_keys(5, 2),
            [
                "test/infer-result-t1_1.manifest",
                "test/infer-result-t1_2.manifest",
                "test/infer-result-t1_3.manifest"
            ]
        );
        // Exactly full: one manifest, no suffix.
        assert_eq!(o.manifests(&lines[..2], 2).len(), 1);
        assert_eq!(o.manifest_keys(2, 2), ["test/infer-result-t1.manifest"]);
        // The bucket's root as the output folder.
        let root = Output::new(
            &ObjectUri {
                bucket: "b".into(),
                key: String::new(),
            },
            "t",
        );
        assert_eq!(
            root.result_key("x_result.txt"),
            "infer-result-t/x_result.txt"
        );
    }
}
