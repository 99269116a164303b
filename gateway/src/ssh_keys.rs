//! SSH keys: generating a user's key pair, and checking an imported public key.
//!
//! Accepted for login: Ed25519, ECDSA (P-256, P-384, P-521) and RSA of at least 2048 bits,
//! which is what OpenSSH, VS Code and PyCharm use. DSA and certificates are refused.

use rand::RngCore;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::{LineEnding, public::KeyData};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Smallest RSA modulus accepted, as OpenSSH (since 9.x) requires.
pub const MIN_RSA_BITS: u32 = 2048;

/// A generated key pair: the private key in OpenSSH form (shown to the user once, never
/// stored) and its public key.
pub struct Generated {
    pub private_openssh: Zeroizing<String>,
    pub public: PublicKey,
}

pub fn generate_ed25519(comment: &str) -> anyhow::Result<Generated> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let keypair = Ed25519Keypair::from_seed(&seed);
    let private = PrivateKey::new(KeypairData::from(keypair), comment)?;
    Ok(Generated {
        private_openssh: private.to_openssh(LineEnding::LF)?,
        public: private.public_key().clone(),
    })
}

/// Parses one public key in OpenSSH's one-line form (`ssh-ed25519 AAAA… comment`), as in
/// `~/.ssh/id_ed25519.pub` or an `authorized_keys` line without options.
pub fn parse_public(text: &str) -> Result<PublicKey, String> {
    let line = text.trim();
    if line.is_empty() {
        return Err("the public key is empty".into());
    }
    if line.starts_with("-----BEGIN") {
        return Err(
            "that is a private key; give the public key (the .pub file, one line starting with ssh-ed25519, ecdsa-sha2-… or ssh-rsa)"
                .into(),
        );
    }
    if line.lines().count() > 1 {
        return Err("give one public key (one line), not several".into());
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        format!(
            "not an OpenSSH public key ({e}); expected one line such as \"ssh-ed25519 AAAA… you@host\""
        )
    })?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => Ok(key),
        KeyData::Rsa(rsa) if rsa.key_size() >= MIN_RSA_BITS => Ok(key),
        KeyData::Rsa(rsa) => Err(format!(
            "an RSA key of {} bits is too weak; use at least {MIN_RSA_BITS} bits, or ed25519",
            rsa.key_size()
        )),
        _ => Err(format!(
            "{} keys are not accepted; use ed25519, ecdsa or rsa",
            key.algorithm()
        )),
    }
}

/// `SHA256:…`, as `ssh-keygen -l` and OpenSSH's logs print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The algorithm's SSH name, e.g. `ssh-ed25519`.
pub fn algorithm(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ssh-ed25519".into(),
        other => other.to_string(),
    }
}

/// The one-line OpenSSH form.
pub fn to_openssh(key: &PublicKey) -> anyhow::Result<String> {
    Ok(key.to_openssh()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_pair_round_trips() {
        let g = generate_ed25519("alice@atelier").unwrap();
        assert!(
            g.private_openssh
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        let private = PrivateKey::from_openssh(g.private_openssh.as_bytes()).unwrap();
        assert_eq!(private.public_key(), &g.public);
        let line = to_openssh(&g.public).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" alice@atelier"), "{line}");
        let back = parse_public(&line).unwrap();
        assert_eq!(fingerprint(&back), fingerprint(&g.public));
        assert!(fingerprint(&back).starts_with("SHA256:"));
        assert_eq!(algorithm(&back), "ssh-ed25519");
        let other = generate_ed25519("").unwrap();
        assert_ne!(fingerprint(&other.public), fingerprint(&g.public));
    }

    #[test]
    fn bad_public_keys_are_refused_with_reasons() {
        let g = generate_ed25519("x").unwrap();
        let cases = [
            ("", "empty"),
            ("ssh-ed25519 not-base64", "not an OpenSSH public key"),
            ("hello", "not an OpenSSH public key"),
            (g.private_openssh.as_str(), "that is a private key"),
        ];
        for (input, want) in cases {
            let e = parse_public(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
        let line = to_openssh(&g.public).unwrap();
        let two = format!("{line}\n{line}");
        assert!(parse_public(&two).unwrap_err().contains("one public key"));
        // A 1024-bit RSA key (ssh-keygen -t rsa -b 1024).
        let weak = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDmzQBaq9jk0HkuSnqwE4JxsPv3mvHfDmgoNOpW2hMRzfDqPfuOC8zuX915KXWQKJYjMZM2jE9hVYlbUuZlVJ3FjvksBXSdu6tF97e6UBjysg/yd7YK4cpqlsmk0iUfi5cZnscxJ1jQdGiwFSaejsVDBa37JRgCVq6DJrXQ9SV+EQ== weak";
        let e = parse_public(weak).unwrap_err();
        assert!(e.contains("1024 bits is too weak"), "{e}");
    }
}
