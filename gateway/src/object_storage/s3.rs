//! S3 clients for the stores users connect, and the check a connection passes on create.

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::Builder as HttpBuilder;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

/// Where a store is and how to sign for it.
#[derive(Clone)]
pub struct Target {
    /// `http(s)://host[:port]`, no trailing `/`.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name: what
    /// self-hosted stores (MinIO, Ceph, s3s) expect.
    pub path_style: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// One HTTP client (connection pool, system CA roots, rustls with ring) for every store.
fn http_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            HttpBuilder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// Checks an endpoint URL and returns it without a trailing `/`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(endpoint.trim()).map_err(|e| {
        format!("endpoint: {endpoint:?} is not a URL ({e}); write http(s)://HOST[:PORT]")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "endpoint: {endpoint:?} must be an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "endpoint: {endpoint:?} must not carry a query, a fragment or credentials"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// A client for `t`; `attempt_timeout` bounds each request (a check wants a short one).
pub fn client(t: &Target, attempt_timeout: Duration, attempts: u32) -> aws_sdk_s3::Client {
    let credentials = aws_credential_types::Credentials::new(
        t.access_key_id.clone(),
        t.secret_access_key.as_str(),
        None,
        None,
        "atelier",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client())
        .credentials_provider(credentials)
        .region(Region::new(t.region.clone()))
        .endpoint_url(&t.endpoint)
        .force_path_style(t.path_style)
        // Checksums only where S3 requires them: many S3-compatible stores reject or
        // mishandle the newer default CRC headers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Why a store refused a connection check, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Nothing answered at the endpoint (refused, no such host, TLS failure, timeout).
    Unreachable(String),
    /// The store answered and refused the access key or the signature.
    Credentials(String),
    /// The bucket does not exist.
    NoBucket(String),
    /// The credentials are valid but may not list the bucket.
    Denied(String),
    /// Anything else the store said.
    Other(String),
}

/// A refused check as a 400 whose code says which part was wrong.
impl From<CheckError> for crate::error::Error {
    fn from(e: CheckError) -> Self {
        let code = match e {
            CheckError::Unreachable(_) => "storage_unreachable",
            CheckError::Credentials(_) => "storage_credentials_refused",
            CheckError::NoBucket(_) => "storage_bucket_missing",
            CheckError::Denied(_) => "storage_access_denied",
            CheckError::Other(_) => "storage_error",
        };
        crate::error::Error::new(crate::error::Kind::Invalid, code, e.message().to_string())
    }
}

impl CheckError {
    pub fn message(&self) -> &str {
        match self {
            CheckError::Unreachable(m)
            | CheckError::Credentials(m)
            | CheckError::NoBucket(m)
            | CheckError::Denied(m)
            | CheckError::Other(m) => m,
        }
    }
}

const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NotSignedUp",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "InvalidSecurity",
];

/// The messages of an error and its sources, outermost first, without repeats (the SDK's
/// wrappers repeat their sources' words) and without Debug dumps.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

fn classify<E>(e: &SdkError<E, HttpResponse>, t: &Target, bucket: Option<&str>) -> CheckError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let endpoint = &t.endpoint;
    match e {
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => CheckError::Unreachable(
            format!("cannot reach the object store at {endpoint}: {}", causes(e)),
        ),
        SdkError::TimeoutError(_) => CheckError::Unreachable(format!(
            "the object store at {endpoint} did not answer in time"
        )),
        _ => {
            let code = e.code().unwrap_or_default();
            let said = e.message().unwrap_or_default();
            let said = if said.is_empty() {
                code.to_string()
            } else {
                format!("{code}: {said}")
            };
            if CREDENTIAL_CODES.contains(&code) {
                CheckError::Credentials(format!(
                    "the object store at {endpoint} refused the credentials of access key {:?} ({said}); check access_key_id and secret_access_key",
                    t.access_key_id
                ))
            } else if code == "NoSuchBucket" {
                CheckError::NoBucket(format!(
                    "bucket {:?} does not exist at {endpoint}",
                    bucket.unwrap_or_default()
                ))
            } else if code == "AccessDenied" {
                CheckError::Denied(format!(
                    "access key {:?} may not list {} at {endpoint} ({said})",
                    t.access_key_id,
                    bucket.map_or("buckets".to_string(), |b| format!("bucket {b:?}"))
                ))
            } else if code.is_empty() {
                let status = e
                    .raw_response()
                    .map(|r| format!("HTTP {}", r.status().as_u16()))
                    .unwrap_or_else(|| "a reply".into());
                CheckError::Other(format!(
                    "{endpoint} did not answer like an S3 object store ({status} without an S3 error document)"
                ))
            } else {
                CheckError::Other(format!("the object store at {endpoint} said {said}"))
            }
        }
    }
}

/// Lists one object of `bucket` (or the buckets, without one): reachable, credentials
/// accepted, bucket present and readable.
pub async fn check(t: &Target, bucket: Option<&str>) -> Result<(), CheckError> {
    let c = client(t, Duration::from_secs(10), 1);
    match bucket {
        Some(b) => c
            .list_objects_v2()
            .bucket(b)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, t, bucket)),
        None => c
            .list_buckets()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, t, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            normalize_endpoint(" https://s3.example.org ").unwrap(),
            "https://s3.example.org"
        );
        for bad in [
            "127.0.0.1:9000",
            "ftp://x",
            "http://u:p@x",
            "http://x/?a=b",
            "",
        ] {
            let e = normalize_endpoint(bad).unwrap_err();
            assert!(e.starts_with("endpoint:"), "{bad}: {e}");
        }
    }

    #[test]
    fn targets_never_print_their_secret() {
        let t = Target {
            endpoint: "http://x".into(),
            region: "us-east-1".into(),
            access_key_id: "AK".into(),
            secret_access_key: Zeroizing::new("very-secret".into()),
            path_style: true,
        };
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
