//! Secrets at rest (object-storage secret keys): AES-256-GCM under one gateway key, each
//! sealed value bound to the row it belongs to (a sealed secret copied to another row does
//! not open). The key comes from `ATELIER_SECRET_KEY` (64 hex digits or base64 of 32 bytes),
//! else from `<data dir>/secret.key`, created (mode 0600) on first start. Sealed values are
//! `v1:` + base64(nonce ‖ ciphertext ‖ tag).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// Parses a key given as 64 hex digits or as base64 of 32 bytes.
pub fn parse_key(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        B64.decode(text)
            .map_err(|_| "neither 64 hex digits nor base64".to_string())?
    };
    if bytes.len() != 32 {
        return Err(format!(
            "it holds {} bytes; a key is 32 bytes (64 hex digits, or 44 characters of base64)",
            bytes.len()
        ));
    }
    Ok(Zeroizing::new(bytes))
}

impl SecretBox {
    pub fn new(key: &[u8]) -> anyhow::Result<SecretBox> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| anyhow::anyhow!("the secret key must be 32 bytes"))?;
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// The gateway's box: the key from settings, else `<data_dir>/secret.key` (made once).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<SecretBox> {
        if let Some(text) = configured {
            let key = parse_key(text)
                .map_err(|e| anyhow::anyhow!("ATELIER_SECRET_KEY is not a usable key: {e}"))?;
            return SecretBox::new(&key);
        }
        let path = data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = parse_key(&text)
                    .map_err(|e| anyhow::anyhow!("{} is not a usable key: {e}", path.display()))?;
                SecretBox::new(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no system randomness for the secret key"))?;
                write_new(&path, &hex::encode(&*key))?;
                tracing::info!(
                    path = %path.display(),
                    "created the key that encrypts stored secrets; back it up with the database"
                );
                SecretBox::new(&key)
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Seals `plain`, bound to `context` (the owning row's id).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .expect("sealing cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("v1:{}", B64.encode(out))
    }

    /// Opens a sealed value; an error when it was sealed under another key or context.
    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<Zeroizing<String>> {
        let body = sealed
            .strip_prefix("v1:")
            .ok_or_else(|| anyhow::anyhow!("not a sealed secret"))?;
        let bytes = B64
            .decode(body)
            .map_err(|_| anyhow::anyhow!("not a sealed secret"))?;
        if bytes.len() < NONCE_LEN {
            anyhow::bail!("not a sealed secret");
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut data = Zeroizing::new(rest.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).expect("nonce length"),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "the secret does not open with this gateway's key (was ATELIER_SECRET_KEY or secret.key changed?)"
                )
            })?;
        Ok(Zeroizing::new(String::from_utf8(plain.to_vec())?))
    }
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_row() {
        let b = SecretBox::new(&[7u8; 32]).unwrap();
        let sealed = b.seal("wJalrXUtnFEMI/K7MDENG", "row-1");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("wJalr"));
        assert_ne!(
            sealed,
            b.seal("wJalrXUtnFEMI/K7MDENG", "row-1"),
            "fresh nonces"
        );
        assert_eq!(&*b.open(&sealed, "row-1").unwrap(), "wJalrXUtnFEMI/K7MDENG");
        assert!(b.open(&sealed, "row-2").is_err());
        let other = SecretBox::new(&[8u8; 32]).unwrap();
        let e = other.open(&sealed, "row-1").unwrap_err().to_string();
        assert!(e.contains("does not open with this gateway's key"), "{e}");
        assert!(b.open("plain", "row-1").is_err());
    }

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        assert!(parse_key(&"ab".repeat(32)).is_ok());
        assert!(parse_key(&B64.encode([1u8; 32])).is_ok());
        let e = parse_key(&B64.encode([1u8; 16])).unwrap_err();
        assert!(e.contains("holds 16 bytes"), "{e}");
        assert!(parse_key("not a key!").is_err());
    }

    #[test]
    fn the_key_file_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("atelier-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = SecretBox::load(None, &dir).unwrap();
        let sealed = a.seal("s3cr3t", "x");
        let b = SecretBox::load(None, &dir).unwrap();
        assert_eq!(&*b.open(&sealed, "x").unwrap(), "s3cr3t");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let configured = SecretBox::load(Some(&"cd".repeat(32)), &dir).unwrap();
        assert!(configured.open(&sealed, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
