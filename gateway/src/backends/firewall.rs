//! The host's firewall for container notebooks: one nftables table that keeps them off the
//! host and away from each other, whatever the engine's own rules say.
//!
//! ```text
//! notebook container ── eth0 ══ atnb<hash> (its own bridge, one per notebook)
//!   ├─► the host (any of its addresses: the bridge's, its LAN's, its loopback): INPUT
//!   │     replies to connections the host opened (the proxy to Jupyter)   accept
//!   │     DNS to the bridge's own address (the engine's resolver)        accept
//!   │     anything else                                                   reject
//!   ├─► another notebook's bridge: FORWARD                                 drop
//!   └─► the outside world: FORWARD, masqueraded by the engine              (untouched)
//! ```
//!
//! Every notebook network's bridge is named `atnb…` ([`bridge_name`]), so the rules are
//! fixed: the table never changes with the notebooks and is installed (replaced atomically)
//! before each container starts. It is a table of its own in the `inet` family (IPv4 and
//! IPv6: a bridge has an IPv6 link-local address even where the engine gives containers no
//! IPv6), hooked in at a priority before the `iptables` tables that Docker and netavark
//! manage. A `reject`/`drop` in any nftables base chain is final, so no `accept` of the
//! engine's (Docker's `DOCKER-USER`, netavark's forward rules) can undo it.
//!
//! Why a bridge per notebook and a table of our own, tried on Podman 4.3 (netavark 1.4):
//! the engine's own isolation (Podman's `isolate`, Docker's separate bridges) stops traffic
//! between notebooks but not to the host, whose INPUT chain neither engine touches; an
//! `internal` network has no way out and, on Podman 4, no published port; Podman 4.3 has no
//! `pasta` network (4.4 does); `slirp4netns:allow_host_loopback=false` hides the host's
//! loopback but still reaches every other host address (the bridge's, the LAN's), because
//! slirp4netns connects from the host's namespace, and Docker has no per-container
//! slirp4netns at all.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest;

/// The first letters of every notebook bridge's name; the rules match `atnb*`.
pub const BRIDGE_PREFIX: &str = "atnb";
/// The nftables table (family `inet`).
pub const TABLE: &str = "atelier_notebooks";

/// The bridge of notebook `id`'s network: [`BRIDGE_PREFIX`] and 11 hex digits of a hash of
/// the id (Linux interface names have at most 15 characters).
pub fn bridge_name(id: &str) -> String {
    let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    format!("{BRIDGE_PREFIX}{}", &digest[..11])
}

/// The table, as one `nft -f` transaction that replaces any earlier version of it (the
/// `table`/`delete table` pair makes the delete succeed when there was none).
pub fn ruleset() -> String {
    format!(
        r#"table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
	chain input {{
		type filter hook input priority filter - 10; policy accept;
		iifname "{BRIDGE_PREFIX}*" ct state established,related accept
		iifname "{BRIDGE_PREFIX}*" meta l4proto {{ tcp, udp }} th dport 53 fib daddr . iif type local accept
		iifname "{BRIDGE_PREFIX}*" meta l4proto tcp reject with tcp reset
		iifname "{BRIDGE_PREFIX}*" reject with icmpx type admin-prohibited
	}}
	chain forward {{
		type filter hook forward priority filter - 10; policy accept;
		iifname "{BRIDGE_PREFIX}*" oifname "{BRIDGE_PREFIX}*" drop
	}}
}}
"#
    )
}

/// Installs (or replaces) the table with `nft -f -` (blocking: a few milliseconds); the error
/// says what to fix.
pub fn install() -> Result<(), String> {
    const WHY: &str = "container notebooks need it to keep them off the host and each other";
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("the nftables command `nft` is not installed ({WHY}): install nftables")
            }
            _ => format!("running nft ({WHY}): {e}"),
        })?;
    // Written whole, then closed, before the output is read: nft reads all of it first.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(ruleset().as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(Err(e)) = written {
        return Err(format!("writing to nft: {e}"));
    }
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let hint = if err.contains("Operation not permitted") {
        " (the gateway must run as root, in the host's network namespace)"
    } else {
        ""
    };
    Err(format!(
        "installing the nftables table {TABLE} failed{hint} ({WHY}): {}",
        err.trim()
    ))
}

/// Whether the network interface `name` is in this process's network namespace, where the
/// table applies (a gateway in a container of its own would install it in the wrong one).
pub fn bridge_visible(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_an_interface_name_and_match_the_rules() {
        let a = bridge_name("0b5a5c2e-8f0e-4e57-9a55-3c1a0f6f2c11");
        let b = bridge_name("0b5a5c2e-8f0e-4e57-9a55-3c1a0f6f2c12");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with(BRIDGE_PREFIX) && a.is_ascii(), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, bridge_name("0b5a5c2e-8f0e-4e57-9a55-3c1a0f6f2c11"));
    }

    #[test]
    fn the_ruleset_rejects_what_notebooks_send_the_host_and_each_other() {
        let r = ruleset();
        assert!(r.starts_with(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")));
        for rule in [
            "hook input priority filter - 10; policy accept;",
            r#"iifname "atnb*" ct state established,related accept"#,
            r#"th dport 53 fib daddr . iif type local accept"#,
            r#"iifname "atnb*" reject with icmpx type admin-prohibited"#,
            r#"iifname "atnb*" oifname "atnb*" drop"#,
        ] {
            assert!(r.contains(rule), "{rule} missing from {r}");
        }
    }
}
