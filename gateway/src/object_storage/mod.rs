//! Object storage: S3-compatible stores reached through `aws-sdk-s3` (`s3.rs`), paths
//! written `obs://bucket/prefix` or `s3://bucket/prefix` (the seed's OBS is any S3 store
//! here), and the connections users register (`connections.rs`).

pub mod connections;
pub mod s3;
pub mod transfer;

/// A parsed `obs://bucket/key` or `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUri {
    pub bucket: String,
    /// The key or prefix, without a leading `/`; may be empty (the bucket's root).
    pub key: String,
}

impl ObjectUri {
    pub fn parse(text: &str) -> Result<ObjectUri, String> {
        let rest = text
            .strip_prefix("obs://")
            .or_else(|| text.strip_prefix("s3://"))
            .ok_or_else(|| {
                format!("{text:?} is not an object storage path: write obs://BUCKET/PATH or s3://BUCKET/PATH")
            })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket).map_err(|e| format!("{text:?}: {e}"))?;
        if key.split('/').any(|part| part == ".." || part == ".") {
            return Err(format!(
                "{text:?}: '.' and '..' are not allowed in object paths"
            ));
        }
        Ok(ObjectUri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The key as a folder prefix: empty, or ending in `/`.
    pub fn dir_prefix(&self) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            self.key.clone()
        } else {
            format!("{}/", self.key)
        }
    }
}

impl std::fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "obs://{}/{}", self.bucket, self.key)
    }
}

/// S3 bucket naming rules (3-63 of a-z, 0-9, '-', '.'; starting and ending with a letter or
/// digit), which every S3-compatible store accepts.
pub fn validate_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else if bucket.is_empty() {
        Err("the bucket name is missing".into())
    } else {
        Err(format!(
            "{bucket:?} is not a valid bucket name (3-63 of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = ObjectUri::parse("obs://my-bucket/data/train/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.key, "data/train/");
        assert_eq!(u.dir_prefix(), "data/train/");
        let u = ObjectUri::parse("s3://bkt").unwrap();
        assert_eq!(u.key, "");
        assert_eq!(u.dir_prefix(), "");
        assert_eq!(ObjectUri::parse("s3://bkt/a").unwrap().dir_prefix(), "a/");
        for bad in [
            "/local/path",
            "http://x/y",
            "obs://",
            "obs://UPPER/x",
            "obs://ab/x",
            "obs://bkt/a/../b",
            "obs://-bkt/x",
        ] {
            assert!(ObjectUri::parse(bad).is_err(), "{bad}");
        }
    }
}
