//! Which front a request came to, from its `Host`: the console (`/v1`, the pages and the
//! `/nb/{id}/` path form) or one notebook's own host, `{id}.<notebook domain>[:port]`.
//!
//! The bytes are the client's, so the parse is strict: one `Host` header (or the HTTP/2
//! authority), matching the request target's authority when it has one; visible ASCII; a
//! host name of DNS labels or an IP literal; a decimal port. A name inside the notebook
//! domain is a notebook's host only when it is exactly one label (a notebook id's shape)
//! before the domain; any other name there, with a trailing dot too, is nobody's.

use axum::http::{HeaderMap, Uri, header};

use crate::config::Origins;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Front {
    /// The console: the API, the pages, and `/nb/{id}/…` by path.
    Console,
    /// Notebook `id`'s own host (the id as written in the host, lowercase).
    Notebook(String),
    /// A name in the notebook domain that is no notebook's host: 404.
    Nobody,
    /// A `Host` that does not parse: 400, with why.
    Bad(&'static str),
}

/// Decides the front for a request with `headers` and target `uri`.
pub fn front(origins: &Origins, headers: &HeaderMap, uri: &Uri) -> Front {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Front::Bad("more than one Host header"),
        (Some(v), None) => match std::str::from_utf8(v.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => return Front::Bad("the Host header is not ASCII"),
        },
        (None, None) => None,
    };
    // HTTP/2 (and an absolute-form HTTP/1 target) carry the authority in the URI.
    let authority = uri.authority().map(|a| a.as_str());
    let name = match (host, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            return Front::Bad("the Host header and the request target name different hosts");
        }
        (Some(h), _) => h,
        (None, Some(a)) => a,
        // HTTP/1.0 without a Host: only the console can be meant.
        (None, None) => return Front::Console,
    };
    // An empty Host (allowed for targets without an authority) names no notebook either.
    if name.is_empty() {
        return Front::Console;
    }
    let Some(hostname) = hostname(name) else {
        return Front::Bad("the Host header is not a host name with an optional port");
    };
    let domain = origins.notebook_domain();
    let lower = hostname.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    let Some(label) = trimmed
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return if trimmed == domain {
            Front::Nobody
        } else {
            Front::Console
        };
    };
    if trimmed.len() != lower.len() || !is_id_label(label) {
        return Front::Nobody;
    }
    Front::Notebook(label.to_owned())
}

/// The host part of `host[:port]`, if the whole value is well formed: a DNS name or IPv4
/// address of `A-Za-z0-9.-_` (a final dot allowed), or an IPv6 literal in brackets; a port
/// of 1-5 digits.
fn hostname(value: &str) -> Option<&str> {
    if value.is_empty() || value.len() > 300 {
        return None;
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&value[..inner.len() + 2], port)
    } else {
        let (host, port) = match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        };
        let labels_ok = !host.is_empty()
            // `_` is no DNS character, but some internal names (container services) have it.
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && host
                .strip_suffix('.')
                .unwrap_or(host)
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63);
        if !labels_ok {
            return None;
        }
        (host, port)
    };
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u16>().is_err())
    {
        return None;
    }
    Some(host)
}

/// A notebook id's shape as a host label: 1-63 of `a-z0-9-`, not starting or ending with `-`.
fn is_id_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5c4f1a2b-0000-4000-8000-000000000001";

    fn decide(host: &[&str], uri: &str) -> Front {
        let origins = Origins::new("http://127.0.0.1:8000", "nb.localhost").unwrap();
        let mut h = HeaderMap::new();
        for v in host {
            h.append(
                header::HOST,
                axum::http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        front(&origins, &h, &uri.parse().unwrap())
    }

    #[test]
    fn hosts_pick_the_front() {
        let nb = |id: &str| Front::Notebook(id.to_owned());
        let absolute = format!("http://{ID}.nb.localhost:8000/x");
        let cases: Vec<(Vec<String>, &str, Front)> = vec![
            (vec!["127.0.0.1:8000".into()], "/v1/whoami", Front::Console),
            (vec!["localhost".into()], "/", Front::Console),
            (vec!["[::1]:8000".into()], "/", Front::Console),
            (vec!["atelier.example.com".into()], "/", Front::Console),
            (vec![], "/", Front::Console),
            (vec!["".into()], "/", Front::Console),
            (vec![format!("{ID}.nb.localhost:8000")], "/nb/x/lab", nb(ID)),
            (vec![format!("{ID}.nb.localhost")], "/", nb(ID)),
            (
                vec![format!("{}.NB.LocalHost:8000", ID.to_uppercase())],
                "/",
                nb(ID),
            ),
            (vec![format!("{ID}.nb.localhost:8000")], &absolute, nb(ID)),
            // Inside the notebook domain but nobody's host.
            (vec!["nb.localhost:8000".into()], "/", Front::Nobody),
            (vec![format!("{ID}.nb.localhost.:8000")], "/", Front::Nobody),
            (
                vec![format!("a.{ID}.nb.localhost:8000")],
                "/",
                Front::Nobody,
            ),
            (vec!["-x.nb.localhost".into()], "/", Front::Nobody),
            (vec!["x_y.nb.localhost".into()], "/", Front::Nobody),
            (vec!["atelier_gateway:8000".into()], "/", Front::Console),
            (
                vec![".nb.localhost".into()],
                "/",
                Front::Bad("the Host header is not a host name with an optional port"),
            ),
            // Names that only look alike are the console's (and serve no notebook).
            (
                vec![format!("{ID}.nb.localhost.evil.example")],
                "/",
                Front::Console,
            ),
            (vec![format!("{ID}nb.localhost")], "/", Front::Console),
            (vec![format!("{ID}.xnb.localhost")], "/", Front::Console),
        ];
        for (host, uri, want) in cases {
            let host: Vec<&str> = host.iter().map(String::as_str).collect();
            assert_eq!(decide(&host, uri), want, "{host:?} {uri}");
        }
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let nb_host = format!("{ID}.nb.localhost:8000");
        for bad in [
            vec![nb_host.as_str(), "127.0.0.1:8000"],
            vec!["evil.example@x.nb.localhost"],
            vec!["x.nb.localhost:80a"],
            vec!["x.nb.localhost:"],
            vec!["x.nb.localhost:123456"],
            vec!["x.nb.localhost:99999"],
            vec!["x.nb.localhost\t"],
            vec!["x nb.localhost"],
            vec!["x..nb.localhost"],
            vec!["x.nb.localhost/"],
            vec!["[::1"],
            vec!["[zz]:1"],
        ] {
            assert!(matches!(decide(&bad, "/"), Front::Bad(_)), "{bad:?}");
        }
        // The target's authority and the Host must agree.
        assert!(matches!(
            decide(
                &["127.0.0.1:8000"],
                &format!("http://{ID}.nb.localhost:8000/")
            ),
            Front::Bad(_)
        ));
        // Bytes that are not ASCII.
        let origins = Origins::default();
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            axum::http::HeaderValue::from_bytes(b"x\xff.nb.localhost").unwrap(),
        );
        assert!(matches!(
            front(&origins, &h, &"/".parse().unwrap()),
            Front::Bad(_)
        ));
    }
}
