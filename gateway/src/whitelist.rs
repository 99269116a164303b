//! The SSH whitelist: IP addresses and CIDR ranges that may connect to a notebook.

use std::net::IpAddr;

/// One whitelist entry: an address with a prefix length (32 or 128 for a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `10.0.0.7`, `192.168.0.0/16`, `2001:db8::/32`. The error completes "<entry> …".
    pub fn parse(text: &str) -> Result<Net, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            "is not an IP address or CIDR range (such as 203.0.113.7 or 203.0.113.0/24)".to_string()
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("has an invalid prefix length; use 0-{max}")),
            },
        };
        Ok(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client seen on an IPv6 socket.
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        self.addr.is_ipv4() == ip.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Whether `ip` may connect under a stored whitelist (comma-separated; empty: anyone).
pub fn allows(stored: &str, ip: IpAddr) -> bool {
    let mut any = false;
    for entry in stored.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        any = true;
        if Net::parse(entry).is_ok_and(|n| n.contains(ip)) {
            return true;
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_normalise_and_match() {
        let n = Net::parse("192.168.7.9/16").unwrap();
        assert_eq!(n.to_string(), "192.168.0.0/16");
        assert!(n.contains("192.168.200.1".parse().unwrap()));
        assert!(!n.contains("192.169.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.168.1.1".parse().unwrap()));
        let one = Net::parse(" 127.0.0.2 ").unwrap();
        assert_eq!(one.to_string(), "127.0.0.2");
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let v6 = Net::parse("2001:db8::1/32").unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(
            Net::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in [
            "",
            "10.0.0",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "host.example",
            "::1/129",
        ] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_whitelist_allows_everyone() {
        let ip = "203.0.113.5".parse().unwrap();
        assert!(allows("", ip));
        assert!(allows("203.0.113.0/24", ip));
        assert!(!allows("10.0.0.1,198.51.100.0/24", ip));
        assert!(allows("10.0.0.1, 203.0.113.5", ip));
    }
}
