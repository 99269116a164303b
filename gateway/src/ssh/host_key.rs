//! The gateway's SSH host key: created once under the data dir and then always reused, so
//! its fingerprint never changes across restarts and clients' `known_hosts` stay valid.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use russh::keys::PrivateKey;

use super::keys;

pub const FILE_NAME: &str = "ssh_host_ed25519_key";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh").join(FILE_NAME)
}

/// The host key under `data_dir`, created (mode 0600, written atomically) when missing.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<PrivateKey> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).with_context(|| {
            format!(
                "reading the SSH host key {}; restore it from a backup, or delete it to create a new one (clients will then warn that the host key changed)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("reading the SSH host key {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<PrivateKey> {
    let dir = path.parent().context("host key path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated = keys::generate_ed25519("atelier-gateway")?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(generated.private_openssh.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing the SSH host key {}", path.display()));
    }
    let key = PrivateKey::from_openssh(generated.private_openssh.as_bytes())?;
    tracing::info!(
        path = %path.display(),
        fingerprint = %keys::fingerprint(key.public_key()),
        "created the SSH host key"
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_host_key_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("atelier-hostkey-{}", uuid::Uuid::new_v4()));
        let first = load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&dir).unwrap();
        assert_eq!(
            keys::fingerprint(first.public_key()),
            keys::fingerprint(again.public_key())
        );
        // A damaged file is an error that says what to do, never silently replaced.
        std::fs::write(path(&dir), "garbage").unwrap();
        let e = format!("{:#}", load_or_create(&dir).unwrap_err());
        assert!(e.contains("delete it to create a new one"), "{e}");
        assert_eq!(std::fs::read_to_string(path(&dir)).unwrap(), "garbage");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
