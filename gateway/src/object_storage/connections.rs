//! Connections: an S3 endpoint, a region, an optional default bucket and credentials,
//! registered by a user under a name. The secret key is sealed at rest and opened only to
//! build a client.

use zeroize::Zeroizing;

use super::s3::Target;
use crate::secrets::SecretBox;
use crate::store::storage_connections::ConnectionRow;

/// The region signed for when a connection names none (what S3-compatible stores accept).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Connection names appear in paths and commands (`--connection NAME`): keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    if crate::lifecycle::is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} is not a valid connection name; use 1-64 of A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        ))
    }
}

pub fn validate_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "region: {region:?} is not a region name (letters, digits, '-' and '_', such as us-east-1)"
        ))
    }
}

/// Access key ids and secrets are printable ASCII without spaces in every S3 dialect.
pub fn validate_key(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field}: must be 1-256 printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// The client target of a stored connection.
pub fn target(row: &ConnectionRow, secrets: &SecretBox) -> anyhow::Result<Target> {
    let secret = secrets.open(&row.secret_sealed, &row.id)?;
    Ok(Target {
        endpoint: row.endpoint.clone(),
        region: row.region.clone(),
        access_key_id: row.access_key_id.clone(),
        secret_access_key: Zeroizing::new(secret.to_string()),
        path_style: row.path_style,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_regions_keys() {
        assert!(validate_name("minio-local").is_ok());
        assert!(validate_name("a/b").unwrap_err().starts_with("name:"));
        assert!(validate_region("us-east-1").is_ok());
        assert!(validate_region("cn north").is_err());
        assert!(validate_key("access_key_id", "AKIA123").is_ok());
        assert!(
            validate_key("access_key_id", "")
                .unwrap_err()
                .contains("empty")
        );
        assert!(validate_key("secret_access_key", "a b").is_err());
    }
}
