//! The gateway's tunnel certificate: self-signed, made once and kept in
//! `<data dir>/tunnel/` (`cert.der`, `key.der`, both 0600 in a 0700 directory). Runtimes
//! pin its SHA-256, so it is never renewed behind their back: a new one (both files
//! removed) strands every runtime started with the old pin until it is restarted.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::wire::{Fingerprint, SERVER_NAME};

pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{present} exists but {missing} does not: remove both to make a new tunnel certificate (runtimes started with the old one then need a restart)"
    )]
    Half { present: PathBuf, missing: PathBuf },
    #[error("making the tunnel certificate: {0}")]
    Generate(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` (0600), through a temporary name so a crash leaves no half file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Loads the certificate kept under `dir`, or makes one there.
pub fn load_or_create(dir: &Path) -> Result<Identity, IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let (cert_path, key_path) = (dir.join("cert.der"), dir.join("key.der"));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            Ok(Identity {
                fingerprint: Fingerprint::of(&cert),
                cert: CertificateDer::from(cert),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            })
        }
        (false, false) => {
            let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
                .map_err(|e| IdentityError::Generate(e.to_string()))?;
            let key = zeroize::Zeroizing::new(made.signing_key.serialize_der());
            let cert = made.cert.der().to_vec();
            write_private(&key_path, &key)?;
            write_private(&cert_path, &cert)?;
            Ok(Identity {
                fingerprint: Fingerprint::of(&cert),
                cert: CertificateDer::from(cert),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
            })
        }
        (true, false) => Err(IdentityError::Half {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(IdentityError::Half {
            present: key_path,
            missing: cert_path,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_kept_private_and_loaded_the_same() {
        let dir = std::env::temp_dir().join(format!("atelier-tunnel-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap();
        for f in ["cert.der", "key.der"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let again = load_or_create(&dir).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        std::fs::remove_file(dir.join("key.der")).unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("key.der"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
