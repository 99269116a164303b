//! What both ends agree on: the hello that proves a launch, the targets a stream may name,
//! the limits, and the HTTP/2 settings the multiplexed session runs with.
//!
//! ```text
//! runtime ──TCP──► gateway
//!   TLS 1.3 (ALPN atelier-tunnel/1; the runtime pins the gateway's certificate)
//!   runtime: "ATL1" | version u8 | id length u16 BE | launch id | secret (32 bytes)
//!   gateway: one reply byte (ACCEPTED, REFUSED or MALFORMED), then closes unless accepted
//!   HTTP/2: the gateway is the client and opens every stream (`POST /<target>`); the
//!           runtime answers 200 and relays the stream to its local socket, or refuses
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// The protocol both ends must negotiate in TLS: another version is refused at once.
pub const ALPN: &[u8] = b"atelier-tunnel/1";
/// The name the runtime asks for in TLS; the certificate is pinned, so it is only a label.
pub const SERVER_NAME: &str = "atelier-gateway";
/// The first bytes of a hello.
pub const MAGIC: [u8; 4] = *b"ATL1";
pub const VERSION: u8 = 1;
/// A launch's secret: 32 random bytes (256 bits, beyond guessing).
pub const SECRET_LEN: usize = 32;
/// The longest launch id: ids are names the gateway makes (a notebook id and a launch
/// counter fit in 80); the bound keeps an unauthenticated hello small.
pub const MAX_LAUNCH_ID: usize = 128;

/// The gateway's answer to a hello.
pub const ACCEPTED: u8 = 0;
/// The launch is not registered, or the secret is not its.
pub const REFUSED: u8 = 1;
/// Not a hello of this version.
pub const MALFORMED: u8 = 2;

/// TCP connect, TLS and the hello together, on either side: a peer that stalls is dropped
/// after this, holding nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each end pings an idle session, and how long it waits for the answer: a
/// session whose other end vanished (a node lost, a cut network) ends within twice this.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long the runtime may take to connect a stream to its local socket before the
/// stream is refused.
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 flow control: a stream may have this much unread data in flight. Large enough
/// for full speed over a LAN (bandwidth × delay of 10 Gbit/s × 1 ms is 1.25 MB), small
/// enough that a reader that stops holds little.
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// … and a whole session this much: what a peer can make the other buffer, at most.
pub const SESSION_WINDOW: u32 = 16 * 1024 * 1024;
/// The largest HTTP/2 frame either end accepts: a quarter of the frames per MiB of the
/// 16 KiB default, and each frame's buffer stays below the allocator's mmap threshold.
pub const MAX_FRAME: u32 = 64 * 1024;
/// The largest header block a stream may carry (`POST /jupyter` needs a few dozen bytes).
pub const MAX_HEADER_LIST: u32 = 4096;
/// What each end reads from its socket at once: TLS asks for 4 KiB at a time, and a system
/// call per 4 KiB made bulk transfers a quarter of their speed.
pub const READ_BUF: usize = 256 * 1024;
/// Streams open at once in one session (Jupyter's WebSockets, SSH links, HTTP requests).
pub const MAX_STREAMS: u32 = 1024;

/// What a stream leads to on the node. Unknown names are refused by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The notebook's Jupyter server (HTTP and WebSocket).
    Jupyter,
    /// The notebook's SSH agent: the SSH front door's sessions and the file API
    /// (`atelier.file` is relayed back over this same SSH link).
    Agent,
    /// A model engine instance's server (batch inference, services).
    Engine,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Jupyter, Target::Agent, Target::Engine];

    pub fn name(self) -> &'static str {
        match self {
            Target::Jupyter => "jupyter",
            Target::Agent => "agent",
            Target::Engine => "engine",
        }
    }

    /// The `:path` of the stream's request.
    pub fn path(self) -> &'static str {
        match self {
            Target::Jupyter => "/jupyter",
            Target::Agent => "/agent",
            Target::Engine => "/engine",
        }
    }

    pub fn from_path(path: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.path() == path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A launch's name at the hub: 1 to [`MAX_LAUNCH_ID`] of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaunchId(String);

impl LaunchId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LaunchId {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, WireError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LAUNCH_ID
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(LaunchId(s.to_owned()))
        } else {
            Err(WireError::LaunchId)
        }
    }
}

impl fmt::Display for LaunchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A launch's secret (32 random bytes), wiped when dropped; never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<[u8; SECRET_LEN]>);

impl Secret {
    /// 32 bytes from the system's random source.
    pub fn random() -> Result<Secret, WireError> {
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..])
            .map_err(|_| WireError::Random)?;
        Ok(Secret(bytes))
    }

    /// 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Secret, WireError> {
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| WireError::Secret)?;
        Ok(Secret(bytes))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    pub fn hash(&self) -> SecretHash {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0[..]);
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        SecretHash(h)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// SHA-256 of a launch's secret: what the gateway keeps (and may persist in a notebook's
/// handle to take a running launch back after a restart); it does not let anyone connect.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Whether `secret` is the one this is the hash of, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, secret: &Secret) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &secret.hash().0[..]).into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<SecretHash, WireError> {
        let mut h = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut h).map_err(|_| WireError::SecretHash)?;
        Ok(SecretHash(h))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({})", self.to_hex())
    }
}

impl Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SecretHash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of the gateway's certificate (DER): what the runtime pins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        Fingerprint(h)
    }
}

impl FromStr for Fingerprint {
    type Err = WireError;

    /// 64 hex digits, optionally after `sha256:` (as the gateway prints it).
    fn from_str(s: &str) -> Result<Self, WireError> {
        let s = s.trim();
        let hexpart = s.strip_prefix("sha256:").unwrap_or(s);
        let mut h = [0u8; 32];
        hex::decode_to_slice(hexpart, &mut h).map_err(|_| WireError::Fingerprint)?;
        Ok(Fingerprint(h))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a runtime needs to dial its gateway: the `connect_back` section of its launch
/// spec, as the hub hands it out ([`crate::hub::TunnelHub::register`]). The secret is in
/// here: the file holding it must be readable by the launch alone.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectBack {
    /// `host:port` of the gateway's tunnel listener as the node reaches it.
    pub address: String,
    /// The gateway certificate's SHA-256 (`sha256:` and 64 hex digits).
    pub fingerprint: String,
    pub launch: String,
    /// 64 hex digits.
    pub secret: String,
}

impl fmt::Debug for ConnectBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectBack")
            .field("address", &self.address)
            .field("fingerprint", &self.fingerprint)
            .field("launch", &self.launch)
            .finish_non_exhaustive()
    }
}

/// A [`ConnectBack`] checked field by field.
#[derive(Debug, Clone)]
pub struct Dial {
    pub address: String,
    pub fingerprint: Fingerprint,
    pub launch: LaunchId,
    pub secret: Secret,
}

impl ConnectBack {
    /// Checks every field; the error names the first one wrong.
    pub fn validate(&self) -> Result<Dial, WireError> {
        let address = self.address.trim();
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok {
            return Err(WireError::Address(self.address.clone()));
        }
        Ok(Dial {
            address: address.to_owned(),
            fingerprint: self.fingerprint.parse()?,
            launch: self.launch.parse()?,
            secret: Secret::from_hex(&self.secret)?,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error(
        "connect_back.launch must be 1 to {MAX_LAUNCH_ID} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    LaunchId,
    #[error("connect_back.secret must be 64 hex digits")]
    Secret,
    #[error("a secret hash must be 64 hex digits")]
    SecretHash,
    #[error("connect_back.fingerprint must be `sha256:` and 64 hex digits")]
    Fingerprint,
    #[error("connect_back.address must be host:port with a port from 1 to 65535 (got {0:?})")]
    Address(String),
    #[error("the system's random source failed")]
    Random,
}

/// Why a hello was not read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("not a tunnel hello of version {VERSION}")]
    Malformed,
    #[error("the launch id is {0} bytes; at most {MAX_LAUNCH_ID} are allowed")]
    Oversize(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes the runtime's hello.
pub async fn write_hello<W: AsyncWrite + Unpin>(
    w: &mut W,
    launch: &LaunchId,
    secret: &Secret,
) -> std::io::Result<()> {
    let id = launch.as_str().as_bytes();
    let mut msg = Zeroizing::new(Vec::with_capacity(7 + id.len() + SECRET_LEN));
    msg.extend_from_slice(&MAGIC);
    msg.push(VERSION);
    // At most MAX_LAUNCH_ID (checked by LaunchId), so it fits.
    msg.extend_from_slice(&(id.len() as u16).to_be_bytes());
    msg.extend_from_slice(id);
    msg.extend_from_slice(&secret.0[..]);
    w.write_all(&msg).await?;
    w.flush().await
}

/// Reads a hello; a length beyond [`MAX_LAUNCH_ID`] is refused before anything more is
/// read. The caller bounds the time.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<(LaunchId, Secret), HelloError> {
    let mut head = [0u8; 7];
    r.read_exact(&mut head).await?;
    if head[..4] != MAGIC || head[4] != VERSION {
        return Err(HelloError::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([head[5], head[6]]));
    if len > MAX_LAUNCH_ID {
        return Err(HelloError::Oversize(len));
    }
    let mut id = vec![0u8; len];
    r.read_exact(&mut id).await?;
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    r.read_exact(&mut secret[..]).await?;
    let launch = std::str::from_utf8(&id)
        .ok()
        .and_then(|s| s.parse::<LaunchId>().ok())
        .ok_or(HelloError::Malformed)?;
    Ok((launch, Secret(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_unknown_paths_are_none() {
        for t in Target::ALL {
            assert_eq!(Target::from_path(t.path()), Some(t));
        }
        for bad in [
            "",
            "/",
            "/files",
            "/Jupyter",
            "/jupyter/",
            "jupyter",
            "/agent?x",
        ] {
            assert_eq!(Target::from_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn launch_ids_are_short_plain_names() {
        for ok in ["a", "nb-0123.4_x", &"x".repeat(MAX_LAUNCH_ID)] {
            assert!(ok.parse::<LaunchId>().is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "é",
            "../x",
            &"x".repeat(MAX_LAUNCH_ID + 1),
        ] {
            assert_eq!(bad.parse::<LaunchId>(), Err(WireError::LaunchId), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_matches_only_its_hash() {
        let (a, b) = (Secret::random().unwrap(), Secret::random().unwrap());
        assert!(a.hash().matches(&a));
        assert!(!a.hash().matches(&b));
        let back = Secret::from_hex(&a.to_hex()).unwrap();
        assert!(a.hash().matches(&back));
        assert_eq!(SecretHash::from_hex(&a.hash().to_hex()).unwrap(), a.hash());
        assert!(!format!("{a:?}").contains(&a.to_hex()[..8]));
    }

    #[test]
    fn connect_back_names_the_wrong_field() {
        let good = ConnectBack {
            address: "10.0.0.1:7443".into(),
            fingerprint: format!("sha256:{}", "ab".repeat(32)),
            launch: "nb-1".into(),
            secret: "cd".repeat(32),
        };
        assert!(good.validate().is_ok());
        type Change = fn(&mut ConnectBack);
        let cases: [(Change, &str); 5] = [
            (|c| c.address = "10.0.0.1".into(), "connect_back.address"),
            (|c| c.address = "h:0".into(), "connect_back.address"),
            (|c| c.fingerprint = "ab".into(), "connect_back.fingerprint"),
            (|c| c.launch = "a/b".into(), "connect_back.launch"),
            (|c| c.secret = "zz".repeat(32), "connect_back.secret"),
        ];
        for (change, field) in cases {
            let mut c = good.clone();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(!format!("{good:?}").contains(&good.secret));
    }

    #[tokio::test]
    async fn hellos_round_trip_and_oversize_ids_are_refused_unread() {
        let (launch, secret) = (
            "nb-1".parse::<LaunchId>().unwrap(),
            Secret::random().unwrap(),
        );
        let mut buf = Vec::new();
        write_hello(&mut buf, &launch, &secret).await.unwrap();
        let (l, s) = read_hello(&mut &buf[..]).await.unwrap();
        assert_eq!(l, launch);
        assert!(secret.hash().matches(&s));

        let mut big = MAGIC.to_vec();
        big.push(VERSION);
        big.extend_from_slice(&60000u16.to_be_bytes());
        assert!(matches!(
            read_hello(&mut &big[..]).await,
            Err(HelloError::Oversize(60000))
        ));
        let mut wrong = buf.clone();
        wrong[4] = 9;
        assert!(matches!(
            read_hello(&mut &wrong[..]).await,
            Err(HelloError::Malformed)
        ));
    }
}
