//! Cross-site request forgery: a browser sends the console's session cookie by itself, so a
//! write that rides on it must prove it comes from the console's own pages.
//!
//! - `/v1` writes (anything but GET, HEAD, OPTIONS) with the session cookie need
//!   `Origin: <the console's origin>` **and** `X-Atelier-CSRF: 1`. A page elsewhere cannot
//!   send that header cross-origin without a CORS preflight, which the gateway never grants,
//!   and a notebook page has an origin of its own. Bearer-token requests need neither.
//! - The login and logout forms (plain HTML forms cannot add headers) carry a double-submit
//!   token: a random value in a `SameSite=Strict`, `HttpOnly` cookie and in a hidden field,
//!   which must match; an `Origin`, when the browser sends one, must be the console's.
//! - `next` after login is a path on the console, never anything a browser would read as
//!   another origin ([`safe_next`]).

use http::{HeaderMap, Method, header};

use super::{CookieJar, cookie_values, digest, new_secret};
use crate::error::Error;

/// The header cookie-authenticated API writes carry, with the value `1`.
pub const HEADER: &str = "x-atelier-csrf";

/// Methods that change nothing, which need no CSRF check.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Origin` is exactly `console` (as browsers serialise origins:
/// lowercase scheme and host, the port only when not the default).
pub fn origin_is(headers: &HeaderMap, console: &str) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(v), None) => v.as_bytes().eq_ignore_ascii_case(console.as_bytes()),
        _ => false,
    }
}

/// The check for a write to `/v1` that rides on the session cookie.
pub fn check_api_write(headers: &HeaderMap, console: &str) -> Result<(), Error> {
    let header_ok = headers.get(HEADER).is_some_and(|v| v.as_bytes() == b"1");
    if origin_is(headers, console) && header_ok {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "a write with the session cookie must come from the console: send Origin: {console} and X-Atelier-CSRF: 1 (scripts use Authorization: Bearer <token> instead)"
    )))
}

/// A new double-submit token for the login and logout forms.
pub fn new_form_token() -> String {
    new_secret("atc_")
}

/// The form token the browser holds in its cookie, if it looks like one of ours.
pub fn form_token<'a>(jar: &CookieJar, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie_values(headers, jar.csrf()).find(|v| looks_like_token(v))
}

fn looks_like_token(v: &str) -> bool {
    v.len() == 47
        && v.starts_with("atc_")
        && v[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The check for a form POST (login, logout): the field matches the cookie, and the
/// `Origin`, when sent, is the console's. Browsers send `Origin` on every cross-origin POST,
/// so a page elsewhere fails the second part even where it could plant the cookie.
pub fn check_form(
    jar: &CookieJar,
    headers: &HeaderMap,
    field: Option<&str>,
    console: &str,
) -> Result<(), Error> {
    if headers.contains_key(header::ORIGIN) && !origin_is(headers, console) {
        return Err(Error::forbidden(format!(
            "this form must be sent from the console ({console})"
        )));
    }
    let matches = match (form_token(jar, headers), field) {
        // Compared as digests, so the time taken says nothing about the cookie's bytes.
        (Some(cookie), Some(field)) => digest(cookie) == digest(field),
        _ => false,
    };
    if !matches {
        return Err(Error::forbidden(
            "the form is out of date or came from another site; reload the page and try again",
        ));
    }
    Ok(())
}

/// `next` if it is a path on this site, else `None`. Refused: anything not starting with
/// one `/`, a second `/` or a `\` after it (`//evil.example`, `/\evil.example` are other
/// hosts to a browser), any `\`, control character, whitespace or non-ASCII byte (browsers
/// drop tabs and newlines, so `/\t/evil.example` becomes `//evil.example`).
pub fn safe_next(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    let ok = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'\\');
    ok.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const CONSOLE: &str = "http://127.0.0.1:8000";

    #[test]
    fn api_writes_need_the_origin_and_the_header() {
        let cases: &[(&[(&'static str, &'static str)], bool)] = &[
            (&[("origin", CONSOLE), ("x-atelier-csrf", "1")], true),
            (
                &[("origin", "HTTP://127.0.0.1:8000"), ("x-atelier-csrf", "1")],
                true,
            ),
            (&[("origin", CONSOLE)], false),
            (&[("x-atelier-csrf", "1")], false),
            (
                &[("origin", "http://evil.example"), ("x-atelier-csrf", "1")],
                false,
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:8000.evil.example"),
                    ("x-atelier-csrf", "1"),
                ],
                false,
            ),
            (
                &[("origin", "http://127.0.0.1:80"), ("x-atelier-csrf", "1")],
                false,
            ),
            (&[("origin", "null"), ("x-atelier-csrf", "1")], false),
            (&[("origin", CONSOLE), ("x-atelier-csrf", "0")], false),
            (
                &[
                    ("origin", CONSOLE),
                    ("origin", "http://evil.example"),
                    ("x-atelier-csrf", "1"),
                ],
                false,
            ),
            (
                &[
                    ("origin", "http://abc.nb.localhost:8000"),
                    ("x-atelier-csrf", "1"),
                ],
                false,
            ),
        ];
        for (pairs, ok) in cases {
            let r = check_api_write(&headers(pairs), CONSOLE);
            assert_eq!(r.is_ok(), *ok, "{pairs:?}");
            if let Err(e) = r {
                assert_eq!(e.kind, crate::error::Kind::Forbidden);
                assert!(e.message.contains("X-Atelier-CSRF"), "{}", e.message);
            }
        }
        assert!(is_safe(&Method::GET) && !is_safe(&Method::POST) && !is_safe(&Method::DELETE));
    }

    #[test]
    fn forms_need_the_matching_token() {
        let jar = CookieJar::new(false);
        let token = new_form_token();
        assert!(looks_like_token(&token), "{token}");
        let cookie = format!("atelier_csrf={token}");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        assert!(check_form(&jar, &h, Some(&token), CONSOLE).is_ok());
        assert!(check_form(&jar, &h, Some("atc_other"), CONSOLE).is_err());
        assert!(check_form(&jar, &h, None, CONSOLE).is_err());
        h.insert(header::ORIGIN, CONSOLE.parse().unwrap());
        assert!(check_form(&jar, &h, Some(&token), CONSOLE).is_ok());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_form(&jar, &h, Some(&token), CONSOLE).is_err());
        // No cookie: nothing to match, whatever the field says.
        let h = headers(&[("origin", CONSOLE)]);
        assert!(check_form(&jar, &h, Some(&token), CONSOLE).is_err());
        // Over https the cookie has its __Host- name; a plain one does not count.
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        assert!(check_form(&CookieJar::new(true), &h, Some(&token), CONSOLE).is_err());
    }

    #[test]
    fn next_is_a_path_on_this_site() {
        for good in [
            "/",
            "/nb/x/lab?a=1&b=%2F",
            "/v1/notebooks/x/open?path=%2Fnb%2Fx%2Flab",
        ] {
            assert_eq!(safe_next(good), Some(good));
        }
        for bad in [
            "",
            "x",
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/a\\b",
            "/\u{0}x",
            "/\u{7f}x",
            "/é",
            "javascript:alert(1)",
            " /x",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
