//! APIG's `SDK-HMAC-SHA256` request signing (spec/inference.md §2.10, AUTH-02/03): an app
//! signs a call with its AppSecret, as the seed's API Gateway SDKs do, so the secret never
//! travels and a changed path, query, signed header or body fails the call.
//!
//! ```text
//! Authorization: SDK-HMAC-SHA256 Access=<AppKey>, SignedHeaders=host;x-sdk-date, Signature=<hex>
//! X-Sdk-Date: 20261207T103000Z                      (within 15 minutes of the gateway's clock)
//!
//! canonical = METHOD \n URI (each segment %-encoded, ending in /) \n sorted query \n
//!             name:value \n for each signed header \n signed;headers \n hex(SHA-256(body))
//! signature = hex(HMAC-SHA256(AppSecret, "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(SHA-256(canonical))))
//! ```
//!
//! `x-sdk-content-sha256: UNSIGNED-PAYLOAD` stands for the body's hash where the client
//! does not hash it (the SDKs do so for multipart uploads): the body is then not covered.
//! Pure functions: the caller reads the body (bounded by the service's limit) and finds the
//! app's secret.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// The scheme's name in `Authorization` and in the string to sign.
pub const SCHEME: &str = "SDK-HMAC-SHA256";
/// The signing time header.
pub const DATE_HEADER: &str = "x-sdk-date";
/// The header that may replace the body's hash.
pub const CONTENT_SHA256_HEADER: &str = "x-sdk-content-sha256";
/// How far a signing time may be from the gateway's clock (the seed: 15 minutes).
pub const MAX_SKEW: time::Duration = time::Duration::minutes(15);
/// Signed headers a request may list: a bound on the work one request can ask for.
const MAX_SIGNED_HEADERS: usize = 64;

/// `Authorization`'s parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The AppKey.
    pub access: String,
    /// Lower-case header names, as listed.
    pub signed_headers: Vec<String>,
    /// Lower-case hex.
    pub signature: String,
}

/// Whether a request says it is signed (its `Authorization` names the scheme).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..SCHEME.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
        })
}

/// Reads `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…` (commas with or without
/// spaces, in any order).
pub fn parse_authorization(value: &str) -> Result<Presented, String> {
    let value = value.trim();
    let rest = value
        .get(..SCHEME.len())
        .filter(|s| s.eq_ignore_ascii_case(SCHEME))
        .map(|_| &value[SCHEME.len()..])
        .ok_or_else(|| format!("Authorization: not an {SCHEME} signature"))?;
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "Authorization: {:?} is not name=value",
                short(part)
            ));
        };
        let slot = match k.trim() {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => {
                return Err(format!(
                    "Authorization: unknown part {:?} (Access, SignedHeaders and Signature)",
                    short(other)
                ));
            }
        };
        if slot.replace(v.trim().to_owned()).is_some() {
            return Err(format!("Authorization: {} given twice", k.trim()));
        }
    }
    let access = access
        .filter(|a| !a.is_empty())
        .ok_or("Authorization: Access (the AppKey) is missing")?;
    let signed = signed
        .filter(|s| !s.is_empty())
        .ok_or("Authorization: SignedHeaders is missing")?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or("Authorization: Signature is missing")?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if signed_headers.len() > MAX_SIGNED_HEADERS {
        return Err(format!(
            "Authorization: more than {MAX_SIGNED_HEADERS} signed headers"
        ));
    }
    if signed_headers.iter().any(String::is_empty) {
        return Err("Authorization: SignedHeaders has an empty name".into());
    }
    if !signed_headers.iter().any(|h| h == DATE_HEADER) {
        return Err(format!(
            "Authorization: SignedHeaders must include {DATE_HEADER} (the signing time)"
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("Authorization: Signature is not 64 hex digits".into());
    }
    Ok(Presented {
        access,
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The signing time (`X-Sdk-Date`, `YYYYMMDDTHHMMSSZ`), refused when further than
/// [`MAX_SKEW`] from `now`.
pub fn check_date(headers: &HeaderMap, now: OffsetDateTime) -> Result<String, String> {
    let raw = headers
        .get(DATE_HEADER)
        .ok_or("X-Sdk-Date is missing: a signed call says when it was signed")?
        .to_str()
        .map_err(|_| "X-Sdk-Date is not text".to_owned())?
        .trim()
        .to_owned();
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(&raw, &format)
        .map_err(|_| format!("X-Sdk-Date {:?}: not YYYYMMDDTHHMMSSZ (UTC)", short(&raw)))?
        .assume_utc();
    let skew = (now - at).abs();
    if skew > MAX_SKEW {
        return Err(format!(
            "X-Sdk-Date {raw} is {} minutes from the gateway's clock; a signature is good for {} minutes",
            skew.whole_minutes(),
            MAX_SKEW.whole_minutes()
        ));
    }
    Ok(raw)
}

/// APIG's URL encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`.
fn encode(s: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// The path with each segment decoded and encoded again, ending in `/`.
fn canonical_uri(path: &str) -> String {
    let mut out: Vec<String> = path.split('/').map(|seg| encode(&decode(seg))).collect();
    if out.len() == 1 && out[0].is_empty() {
        out.push(String::new());
    }
    let mut uri = out.join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The query's pairs decoded, sorted by name then value, and encoded again.
fn canonical_query(query: Option<&str>) -> String {
    // Sorted as the SDKs sort them: decoded (UTF-8 byte order is code point order).
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What a signature covers. `host` is the request's `Host` header, or `authority` where it
/// has none (HTTP/2).
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    authority: Option<&str>,
    signed: &[String],
    body: &[u8],
) -> Result<String, String> {
    let mut canonical_headers = String::new();
    for name in signed {
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| std::str::from_utf8(v.as_bytes()).map(str::trim))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("signed header {:?} is not UTF-8 text", short(name)))?;
        let value = match (values.is_empty(), name.as_str()) {
            (false, _) => values.join(","),
            (true, "host") => authority
                .ok_or("signed header host is not in the request")?
                .to_owned(),
            (true, _) => {
                return Err(format!(
                    "signed header {:?} is not in the request",
                    short(name)
                ));
            }
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&value);
        canonical_headers.push('\n');
    }
    // As the SDKs: an empty body is always the empty hash.
    let body_hash = match headers
        .get(CONTENT_SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !body.is_empty())
    {
        Some(given) => given.trim().to_owned(),
        None => hex::encode(Sha256::digest(body)),
    };
    Ok(format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{body_hash}",
        canonical_uri(path),
        canonical_query(query),
        signed.join(";")
    ))
}

/// The hex signature of `canonical` signed at `date` with `secret`.
pub fn sign(secret: &[u8], date: &str, canonical: &str) -> String {
    let to_sign = format!(
        "{SCHEME}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the signature of the request with `secret` (constant time).
pub fn matches(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_canonical_request_is_apigs() {
        let h = headers(&[
            ("host", " gw.example:8000 "),
            ("x-sdk-date", "20261207T103000Z"),
            ("content-type", "application/json"),
        ]);
        let signed: Vec<String> = ["content-type", "host", "x-sdk-date"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = canonical_request(
            "POST",
            "/v1/infers/svc/a%20b/c",
            Some("z=1&a=%2F&a=0&flag"),
            &h,
            None,
            &signed,
            b"{}",
        )
        .unwrap();
        assert_eq!(
            c,
            "POST\n/v1/infers/svc/a%20b/c/\na=%2F&a=0&flag=&z=1\n\
             content-type:application/json\nhost:gw.example:8000\nx-sdk-date:20261207T103000Z\n\n\
             content-type;host;x-sdk-date\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        // An unsigned payload: the header's value stands for the hash.
        let mut h2 = h.clone();
        h2.insert(
            CONTENT_SHA256_HEADER,
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let c2 = canonical_request("POST", "/", None, &h2, None, &signed, b"anything").unwrap();
        assert!(c2.starts_with("POST\n/\n\n"), "{c2}");
        assert!(c2.ends_with("\nUNSIGNED-PAYLOAD"), "{c2}");
        // ... but an empty body is the empty hash, whatever the header says.
        let c2 = canonical_request("POST", "/", None, &h2, None, &signed, b"").unwrap();
        assert!(
            c2.ends_with("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "{c2}"
        );
        // The query sorts by decoded names: \u{e9} after z, though %C3 sorts before it.
        let c4 =
            canonical_request("GET", "/", Some("%C3%A9=1&z=2"), &h, None, &signed, b"").unwrap();
        assert!(c4.contains("\nz=2&%C3%A9=1\n"), "{c4}");
        // A signed header the request lacks.
        let e =
            canonical_request("GET", "/", None, &HeaderMap::new(), None, &signed, b"").unwrap_err();
        assert!(e.contains("content-type"), "{e}");
        // HTTP/2: the authority stands for host.
        let only_host = vec!["host".to_string()];
        let c3 = canonical_request(
            "GET",
            "/x",
            None,
            &HeaderMap::new(),
            Some("gw:1"),
            &only_host,
            b"",
        )
        .unwrap();
        assert!(c3.contains("\nhost:gw:1\n"), "{c3}");
    }

    #[test]
    fn a_signature_is_hmac_sha256_of_the_string_to_sign() {
        // Computed apart: printf 'SDK-HMAC-SHA256\n20261207T103000Z\n%s' "$(printf 'GET\n/\n\n\n\n' |
        // sha256sum)" | openssl dgst -sha256 -hmac secret
        let canonical = "GET\n/\n\n\n\n";
        let sig = sign(b"secret", "20261207T103000Z", canonical);
        let to_sign = format!(
            "SDK-HMAC-SHA256\n20261207T103000Z\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(to_sign.as_bytes());
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig.len(), 64);
        assert!(matches(&sig, &sig));
        assert!(!matches(
            &sig,
            &sign(b"other", "20261207T103000Z", canonical)
        ));
        assert!(!matches(&sig, "short"));
    }

    #[test]
    fn authorization_is_read_strictly() {
        let sig = "a".repeat(64);
        let p = parse_authorization(&format!(
            "SDK-HMAC-SHA256 Access=k1, SignedHeaders=Host;X-Sdk-Date, Signature={sig}"
        ))
        .unwrap();
        assert_eq!(p.access, "k1");
        assert_eq!(p.signed_headers, vec!["host", "x-sdk-date"]);
        let p2 = parse_authorization(&format!(
            "SDK-HMAC-SHA256 Signature={sig},Access=k1,SignedHeaders=x-sdk-date"
        ))
        .unwrap();
        assert_eq!(p2.access, "k1");
        for (bad, says) in [
            ("Bearer abc".to_string(), "not an SDK-HMAC-SHA256"),
            (
                format!("SDK-HMAC-SHA256 SignedHeaders=x-sdk-date, Signature={sig}"),
                "Access",
            ),
            (
                format!("SDK-HMAC-SHA256 Access=k, SignedHeaders=host, Signature={sig}"),
                "x-sdk-date",
            ),
            (
                "SDK-HMAC-SHA256 Access=k, SignedHeaders=x-sdk-date, Signature=zz".to_string(),
                "64 hex",
            ),
            (
                format!(
                    "SDK-HMAC-SHA256 Access=k, Access=j, SignedHeaders=x-sdk-date, Signature={sig}"
                ),
                "twice",
            ),
            (
                format!(
                    "SDK-HMAC-SHA256 Access=k, Nonce=1, SignedHeaders=x-sdk-date, Signature={sig}"
                ),
                "unknown part",
            ),
            (
                format!(
                    "SDK-HMAC-SHA256 Access=k, SignedHeaders={}, Signature={sig}",
                    vec!["h"; 65].join(";")
                ),
                "more than",
            ),
        ] {
            let e = parse_authorization(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(is_signed(&headers(&[(
            "authorization",
            "sdk-hmac-sha256 Access=x"
        )])));
        assert!(!is_signed(&headers(&[("authorization", "Bearer x")])));
    }

    #[test]
    fn the_signing_time_must_be_within_fifteen_minutes() {
        let now = time::macros::datetime!(2026-12-07 10:30:00 UTC);
        let at = |d: &str| check_date(&headers(&[("x-sdk-date", d)]), now);
        assert_eq!(at("20261207T103000Z").unwrap(), "20261207T103000Z");
        assert!(at("20261207T104500Z").is_ok());
        assert!(at("20261207T101500Z").is_ok());
        let e = at("20261207T101400Z").unwrap_err();
        assert!(e.contains("16 minutes"), "{e}");
        assert!(at("20261207T104601Z").is_err());
        assert!(
            at("2026-12-07T10:30:00Z")
                .unwrap_err()
                .contains("YYYYMMDDTHHMMSSZ")
        );
        assert!(
            check_date(&HeaderMap::new(), now)
                .unwrap_err()
                .contains("missing")
        );
    }
}
