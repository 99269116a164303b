//! A model package's `config.json` (seed 9.3.2, Tables 9-8 … 9-15): parsed from bytes,
//! checked, and turned into a [`ModelConfig`] the rest of Atelier trusts.
//!
//! ```text
//! bytes ──► size cap ──► serde (RawConfig: shapes, unknown fields, JSON paths)
//!       ──► checks (first problem wins) ──► ParsedConfig { ModelConfig, warnings }
//!                                            │
//!        caller ◄── refusals() / health_url_ok_for_custom_engine() (import-time checks
//!                   whose seed events fail the import rather than the request)
//! ```
//!
//! Rules the seed leaves open, and what this module does:
//! - The first problem found is reported (in document order: top-level fields, then
//!   `metrics`, `apis`, `dependencies`, `health`); a user fixes one thing and retries.
//! - Unknown fields are refused at every level (a misspelt `Content-Type` is named, rather
//!   than silently losing the content type).
//! - An empty string is read as absent everywhere (the seed's own example writes
//!   `"restraint": ""`); `null` likewise.
//! - `Content-type` values are matched case-insensitively (media types are) and stored in
//!   lower case; the seed's typo `applicaton/json` is read as `application/json` with a
//!   [`ConfigWarning`].
//! - `apis[].data` (a JSON Schema in practice, a "String" in Table 9-11) is kept as given and
//!   not validated: the seed's own examples put example values where schemas belong.
//! - Numbers in `metrics` are parsed from their JSON text with the standard library's
//!   correctly rounded parser (serde_json's default float parser may be one ulp off), so a
//!   value serialises back to the same `f64`.
//! - `apis[].method` is one of the standard methods (a typo like `pots` is caught);
//!   `Image` URLs are plain absolute paths (no query, `%`, `.`/`..` or empty segments).
//! - Package names and versions also refuse spaces and a leading `-` (they end up as pip
//!   arguments); `restraint` without `package_version` is refused.
//! - A health field of the other `check_method` (`url` with `EXEC`, `command` with `HTTP`)
//!   is refused rather than ignored; `health` is mandatory for `Image` (Table 9-8), a
//!   parse error.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A `config.json` larger than this is refused before parsing. The seed's largest example is
/// under 3 KiB; schemas for a custom image's many APIs stay well under this, and the gateway
/// holds the whole file in memory.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// `model_algorithm` at most this many characters (seed Table 9-8).
pub const MAX_MODEL_ALGORITHM_CHARS: usize = 36;

/// API and health URLs are request paths the gateway forwards to a container: capped well
/// under what HTTP servers accept in a request line (8 KiB is common).
pub const MAX_URL_BYTES: usize = 1024;

/// The largest value of a health-check number (seed 9.2.3: "1–2147483647", a Java `int`).
pub const MAX_HEALTH_SECONDS: u32 = 2_147_483_647;

/// The path a custom engine's health check must use (seed 9.3.4, Table 9-5).
pub const CUSTOM_ENGINE_HEALTH_URL: &str = "/health";

/// Seed event (9.6.2): `swr_location` with a `model_type` other than `Image`.
pub const EVENT_SWR_LOCATION_NOT_IMAGE: &str = "Only custom images support swr_location.";
/// Seed event (9.6.2): `dependencies` with `model_type` `Image`.
pub const EVENT_IMAGE_DEPENDENCIES: &str =
    "The custom image does not support specified dependencies.";
/// Seed event (9.6.2) with its `xxx` placeholder: see [`custom_image_health_event`].
pub const EVENT_CUSTOM_IMAGE_HEALTH_API: &str =
    "The health check API of a custom image must be xxx.";

/// The seed's event for a custom engine whose health check is not at
/// [`CUSTOM_ENGINE_HEALTH_URL`]: "The health check API of a custom image must be /health."
pub fn custom_image_health_event() -> String {
    EVENT_CUSTOM_IMAGE_HEALTH_API.replacen("xxx", CUSTOM_ENGINE_HEALTH_URL, 1)
}

/// The engine a model runs on: Table 9-1's preset engines, `Image` (a custom image), and
/// Atelier's own `ONNX` (the built-in engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelType {
    TensorFlow,
    #[serde(rename = "Spark_MLlib")]
    SparkMllib,
    #[serde(rename = "Scikit_Learn")]
    ScikitLearn,
    XGBoost,
    PyTorch,
    MindSpore,
    Image,
    #[serde(rename = "ONNX")]
    Onnx,
}

impl ModelType {
    pub const ALL: [ModelType; 8] = [
        ModelType::TensorFlow,
        ModelType::SparkMllib,
        ModelType::ScikitLearn,
        ModelType::XGBoost,
        ModelType::PyTorch,
        ModelType::MindSpore,
        ModelType::Image,
        ModelType::Onnx,
    ];

    /// The name as `config.json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::TensorFlow => "TensorFlow",
            ModelType::SparkMllib => "Spark_MLlib",
            ModelType::ScikitLearn => "Scikit_Learn",
            ModelType::XGBoost => "XGBoost",
            ModelType::PyTorch => "PyTorch",
            ModelType::MindSpore => "MindSpore",
            ModelType::Image => "Image",
            ModelType::Onnx => "ONNX",
        }
    }

    fn from_name(name: &str) -> Option<ModelType> {
        ModelType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// A custom image: it serves its own APIs and needs an image reference.
    pub fn is_image(self) -> bool {
        self == ModelType::Image
    }

    /// The seed's machine-learning engines, which take only `application/json` (Table 9-11).
    pub fn is_machine_learning(self) -> bool {
        matches!(
            self,
            ModelType::SparkMllib | ModelType::ScikitLearn | ModelType::XGBoost
        )
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked `config.json`. Only [`ModelConfig::parse`] makes one; it serialises to the
/// normalised form (defaults filled in, names in their canonical case), which `parse`
/// reads back to an equal value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    model_algorithm: String,
    model_type: ModelType,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swr_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    apis: Vec<Api>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<Dependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
}

/// A parsed config and what was accepted with a remark.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    pub config: ModelConfig,
    pub warnings: Vec<ConfigWarning>,
}

/// Model metrics (Table 9-9), each kept as the `f64` its JSON text denotes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// One API the model serves (Table 9-10), with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Api {
    /// `/` for every preset engine; an absolute path in the image for `Image`.
    pub url: String,
    /// Upper case: `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`.
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Body>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Body>,
}

/// A request or response description (Tables 9-11, 9-12); the keys are literally
/// `Content-type` and `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Body {
    /// Absent means the seed's default, `application/json`; kept absent so a batch service,
    /// for which the field is mandatory, can tell.
    #[serde(rename = "Content-type", skip_serializing_if = "Option::is_none")]
    pub content_type: Option<ContentType>,
    /// The JSON Schema of the body, as given (not validated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ContentType {
    #[serde(rename = "application/json")]
    Json,
    /// File uploads; requests only.
    #[serde(rename = "multipart/form-data")]
    Multipart,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Multipart => "multipart/form-data",
        }
    }
}

/// Runtime dependencies installed in list order (Table 9-13).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dependency {
    pub installer: Installer,
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Installer {
    #[serde(rename = "pip")]
    Pip,
}

/// One package (Table 9-14). A version always comes with its restraint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Package {
    pub package_name: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub version: Option<PinnedVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PinnedVersion {
    pub package_version: String,
    pub restraint: Restraint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Restraint {
    Exact,
    AtLeast,
    AtMost,
}

impl Restraint {
    fn from_name(s: &str) -> Option<Restraint> {
        match s {
            "EXACT" => Some(Restraint::Exact),
            "ATLEAST" => Some(Restraint::AtLeast),
            "ATMOST" => Some(Restraint::AtMost),
            _ => None,
        }
    }
}

/// The health check (Table 9-15), numbers read from strings or numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    #[serde(flatten)]
    pub check: HealthCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// 1..=[`MAX_HEALTH_SECONDS`].
    pub period_seconds: u32,
    /// 1..=[`MAX_HEALTH_SECONDS`].
    pub failure_threshold: u32,
}

/// How the check runs; serialised as `check_method` and its own fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check_method")]
pub enum HealthCheck {
    #[serde(rename = "HTTP")]
    Http { url: String, protocol: Protocol },
    #[serde(rename = "EXEC")]
    Exec { command: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

/// Something accepted with a remark the import should show (as a Warning event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// The seed's typo `applicaton/json` at this path, read as `application/json`.
    ContentTypeTypo { field: String },
    /// `runtime` is ignored for `model_type` `Image` (Table 9-8).
    RuntimeIgnoredForImage,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::ContentTypeTypo { field } => write!(
                f,
                "config.json: {field} \"applicaton/json\" read as \"application/json\""
            ),
            ConfigWarning::RuntimeIgnoredForImage => {
                f.write_str("config.json: runtime is ignored for model_type Image")
            }
        }
    }
}

/// A config that parses but that the seed fails at import time with an event, not with a
/// 400 on the request: the caller fails the import and records [`ImportRefusal::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportRefusal {
    /// `swr_location` with a `model_type` other than `Image`.
    SwrLocationNotImage,
    /// Packages in `dependencies` with `model_type` `Image`.
    DependenciesOnImage,
}

impl ImportRefusal {
    /// The seed's event text (9.6.2), exactly.
    pub fn event(self) -> &'static str {
        match self {
            ImportRefusal::SwrLocationNotImage => EVENT_SWR_LOCATION_NOT_IMAGE,
            ImportRefusal::DependenciesOnImage => EVENT_IMAGE_DEPENDENCIES,
        }
    }
}

impl fmt::Display for ImportRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event())
    }
}

/// Why a `config.json` was refused. Every message starts with `config.json:` and names the
/// field by its JSON path (`apis[0].url`, `health.failure_threshold`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is {size} bytes, more than the {max} bytes allowed")]
    TooLarge { size: usize, max: usize },
    #[error("config.json: not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A value of the wrong JSON type, an unknown or duplicate field (serde's words).
    #[error("config.json: {}", at_path(.path, .message))]
    Shape { path: String, message: String },
    /// A value that breaks one of the rules: `{field} {problem}`.
    #[error("config.json: {field} {problem}")]
    Invalid { field: String, problem: String },
}

impl ConfigError {
    /// The JSON path of the field refused, where there is one (empty for the top level).
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Shape { path, .. } => Some(path),
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::TooLarge { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

fn at_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A user's value quoted in a message, cut short so a huge value does not make a huge error.
fn quoted(s: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 64;
    if s.chars().count() <= MAX_SHOWN_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{head:?}…")
    }
}

// ---- the document as written: shapes only ------------------------------------------

/// A JSON object read into `T`. serde's derived structs also take a JSON array, filled in
/// field order; a config written as `["a", "ONNX"]` must not parse.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjVisitor<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(ObjVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model_algorithm: Option<String>,
    model_type: Option<String>,
    runtime: Option<String>,
    swr_location: Option<String>,
    metrics: Option<Obj<RawMetrics>>,
    apis: Option<Vec<Obj<RawApi>>>,
    dependencies: Option<Vec<Obj<RawDependency>>>,
    health: Option<Obj<RawHealth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    f1: Option<Box<RawValue>>,
    recall: Option<Box<RawValue>>,
    precision: Option<Box<RawValue>>,
    accuracy: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    url: Option<String>,
    method: Option<String>,
    request: Option<Obj<RawBody>>,
    response: Option<Obj<RawBody>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    #[serde(rename = "Content-type")]
    content_type: Option<String>,
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    installer: Option<String>,
    packages: Option<Vec<Obj<RawPackage>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    package_name: Option<String>,
    package_version: Option<String>,
    restraint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check_method: Option<String>,
    command: Option<String>,
    url: Option<String>,
    protocol: Option<String>,
    initial_delay_seconds: Option<Value>,
    timeout_seconds: Option<Value>,
    period_seconds: Option<Value>,
    failure_threshold: Option<Value>,
}

/// `None` for an absent, null or empty string.
fn present(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl ModelConfig {
    /// Parses and checks a `config.json`. The first problem found is the error.
    ///
    /// A config that parses may still be refused at import: see [`ModelConfig::refusals`].
    /// For `model_type` `Image` the image itself is the caller's to require: `swr_location`
    /// here, or an image picked in the create form (seed 9.2.4).
    pub fn parse(bytes: &[u8]) -> Result<ParsedConfig, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                size: bytes.len(),
                max: MAX_CONFIG_BYTES,
            });
        }
        // Editors on Windows write a byte-order mark; JSON parsers need not accept one.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let Obj(raw): Obj<RawConfig> =
            serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
        // Characters after the object are a syntax error at their position.
        de.end().map_err(|e| syntax_error(&e))?;
        let mut warnings = Vec::new();
        let config = check(raw, &mut warnings)?;
        Ok(ParsedConfig { config, warnings })
    }

    pub fn model_algorithm(&self) -> &str {
        &self.model_algorithm
    }
    pub fn model_type(&self) -> ModelType {
        self.model_type
    }
    pub fn runtime(&self) -> Option<&str> {
        self.runtime.as_deref()
    }
    /// The image of a custom-image model (an OCI reference in Atelier). Kept when given with
    /// another `model_type` so that [`ModelConfig::refusals`] can refuse the import.
    pub fn swr_location(&self) -> Option<&str> {
        self.swr_location.as_deref()
    }
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }
    pub fn apis(&self) -> &[Api] {
        &self.apis
    }
    pub fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }
    /// Always present for `model_type` `Image`.
    pub fn health(&self) -> Option<&Health> {
        self.health.as_ref()
    }

    /// `swr_location` given with a `model_type` other than `Image`.
    pub fn swr_location_misplaced(&self) -> bool {
        self.swr_location.is_some() && !self.model_type.is_image()
    }

    /// Packages listed in `dependencies` with `model_type` `Image` (an empty list is fine).
    pub fn dependencies_misplaced(&self) -> bool {
        self.model_type.is_image() && self.dependencies.iter().any(|d| !d.packages.is_empty())
    }

    /// What makes the seed fail this model's import with an event, in that order; empty when
    /// the import may go on.
    pub fn refusals(&self) -> Vec<ImportRefusal> {
        let mut out = Vec::new();
        if self.swr_location_misplaced() {
            out.push(ImportRefusal::SwrLocationNotImage);
        }
        if self.dependencies_misplaced() {
            out.push(ImportRefusal::DependenciesOnImage);
        }
        out
    }

    /// For a model on a custom engine (a package with AI engine `Custom`, seed 9.3.4): the
    /// health check, if any, must be an HTTP check of [`CUSTOM_ENGINE_HEALTH_URL`]. `false`
    /// for any other URL or an `EXEC` check; the caller then fails the import with
    /// [`custom_image_health_event`]. Whether the model is on a custom engine is the
    /// caller's to know (it is a create-form choice, not a `config.json` field).
    pub fn health_url_ok_for_custom_engine(&self) -> bool {
        self.health
            .as_ref()
            .is_none_or(Health::ok_for_custom_engine)
    }
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => ConfigError::Shape {
            path: if path == "." { String::new() } else { path },
            message: message_alone(&inner),
        },
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => syntax_error(&inner),
    }
}

fn syntax_error(e: &serde_json::Error) -> ConfigError {
    ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: message_alone(e),
    }
}

/// serde_json appends the position to its message; the message alone.
fn message_alone(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

fn check(raw: RawConfig, warnings: &mut Vec<ConfigWarning>) -> Result<ModelConfig, ConfigError> {
    let model_algorithm = check_model_algorithm(present(raw.model_algorithm))?;
    let model_type = check_model_type(present(raw.model_type))?;
    let runtime = present(raw.runtime);
    if let Some(r) = &runtime {
        check_plain_text("runtime", r)?;
        if model_type.is_image() {
            warnings.push(ConfigWarning::RuntimeIgnoredForImage);
        }
    }
    let swr_location = present(raw.swr_location);
    if let Some(s) = &swr_location
        && let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "swr_location",
            format!("must be an image reference without spaces (got {c:?})"),
        ));
    }
    let metrics = raw.metrics.map(|Obj(m)| check_metrics(m)).transpose()?;
    let apis = check_apis(raw.apis.unwrap_or_default(), model_type, warnings)?;
    let dependencies = check_dependencies(raw.dependencies.unwrap_or_default())?;
    let health = raw
        .health
        .map(|Obj(h)| check_health(h, "health"))
        .transpose()?;
    if model_type.is_image() && health.is_none() {
        return Err(invalid(
            "health",
            "is required for model_type Image (the gateway needs it to know when the image serves)",
        ));
    }
    Ok(ModelConfig {
        model_algorithm,
        model_type,
        runtime,
        swr_location,
        metrics,
        apis,
        dependencies,
        health,
    })
}

fn check_model_algorithm(v: Option<String>) -> Result<String, ConfigError> {
    const FIELD: &str = "model_algorithm";
    let Some(s) = v else {
        return Err(invalid(
            FIELD,
            "is required (for example image_classification, object_detection, predict_analysis)",
        ));
    };
    if !s.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(invalid(
            FIELD,
            format!("must start with a letter (got {})", quoted(&s)),
        ));
    }
    let chars = s.chars().count();
    if chars > MAX_MODEL_ALGORITHM_CHARS {
        return Err(invalid(
            FIELD,
            format!("must be at most {MAX_MODEL_ALGORITHM_CHARS} characters (got {chars})"),
        ));
    }
    check_name_chars(FIELD, &s, &['&', '!', '"', '<', '>', '='])?;
    Ok(s)
}

/// The seed's character rule for names: ASCII only ("no Chinese"), none of `forbidden`.
/// Control characters are refused too (they have no place in a name).
fn check_name_chars(field: &str, s: &str, forbidden: &[char]) -> Result<(), ConfigError> {
    if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
        return Err(invalid(
            field,
            format!("must be ASCII; {c:?} is not allowed (got {})", quoted(s)),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| forbidden.contains(c) || c.is_ascii_control())
    {
        let list: String = forbidden.iter().map(|c| format!(" {c}")).collect();
        return Err(invalid(
            field,
            format!(
                "must not contain {c:?} (none of{list}, nor control characters; got {})",
                quoted(s)
            ),
        ));
    }
    Ok(())
}

fn check_plain_text(field: &str, s: &str) -> Result<(), ConfigError> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("must not contain control characters (got {c:?})"),
        ));
    }
    Ok(())
}

fn check_model_type(v: Option<String>) -> Result<ModelType, ConfigError> {
    let names = ModelType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(s) = v else {
        return Err(invalid(
            "model_type",
            format!("is required: one of {names}"),
        ));
    };
    ModelType::from_name(&s).ok_or_else(|| {
        invalid(
            "model_type",
            format!("must be one of {names} (got {})", quoted(&s)),
        )
    })
}

fn check_metrics(raw: RawMetrics) -> Result<Metrics, ConfigError> {
    Ok(Metrics {
        f1: metric("metrics.f1", raw.f1)?,
        recall: metric("metrics.recall", raw.recall)?,
        precision: metric("metrics.precision", raw.precision)?,
        accuracy: metric("metrics.accuracy", raw.accuracy)?,
    })
}

/// A JSON number's text to the nearest `f64` (correctly rounded, unlike serde_json's
/// default float parser).
fn metric(field: &str, raw: Option<Box<RawValue>>) -> Result<Option<f64>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    // The text is valid JSON; a number is the only JSON value that starts like this.
    let is_number = text
        .as_bytes()
        .first()
        .is_some_and(|b| *b == b'-' || b.is_ascii_digit());
    if !is_number {
        return Err(invalid(field, format!("must be a number (got {text})")));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(invalid(
            field,
            format!("must be a finite number (got {text})"),
        )),
    }
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn check_apis(
    raw: Vec<Obj<RawApi>>,
    model_type: ModelType,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Vec<Api>, ConfigError> {
    if raw.len() > 1 && !model_type.is_image() {
        return Err(invalid(
            "apis",
            format!(
                "must hold at most one API for model_type {model_type} (got {}): its engine serves one inference API at \"/\"",
                raw.len()
            ),
        ));
    }
    let mut apis: Vec<Api> = Vec::with_capacity(raw.len());
    for (i, Obj(a)) in raw.into_iter().enumerate() {
        let at = format!("apis[{i}]");
        let url = present(a.url).unwrap_or_else(|| "/".to_string());
        if model_type.is_image() {
            check_url_path(&format!("{at}.url"), &url)?;
        } else if url != "/" {
            return Err(invalid(
                format!("{at}.url"),
                format!(
                    "must be \"/\" for model_type {model_type} (got {}); only model_type Image serves other paths",
                    quoted(&url)
                ),
            ));
        }
        let method = present(a.method)
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_else(|| "POST".to_string());
        if !METHODS.contains(&method.as_str()) {
            return Err(invalid(
                format!("{at}.method"),
                format!(
                    "must be one of {} (got {})",
                    METHODS.join(", "),
                    quoted(&method)
                ),
            ));
        }
        if let Some(dup) = apis.iter().position(|o| o.url == url && o.method == method) {
            return Err(invalid(at, format!("repeats apis[{dup}] ({method} {url})")));
        }
        let request = a
            .request
            .map(|Obj(b)| check_body(&format!("{at}.request"), b, true, model_type, warnings))
            .transpose()?;
        let response = a
            .response
            .map(|Obj(b)| check_body(&format!("{at}.response"), b, false, model_type, warnings))
            .transpose()?;
        apis.push(Api {
            url,
            method,
            request,
            response,
        });
    }
    Ok(apis)
}

/// An absolute request path a gateway can forward as is: `/` first, visible ASCII, no
/// query or fragment, no `.` or `..` segment, no empty segment but a trailing one, and no
/// `%` (an encoded `..` would pass the segment check and be decoded by the container).
fn check_url_path(field: &str, url: &str) -> Result<(), ConfigError> {
    if !url.starts_with('/') {
        return Err(invalid(
            field,
            format!(
                "must be an absolute path starting with \"/\" (got {})",
                quoted(url)
            ),
        ));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_URL_BYTES} bytes (got {})", url.len()),
        ));
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '\\' | '%'))
    {
        return Err(invalid(
            field,
            format!(
                "must be a plain path of visible ASCII without ?, #, \\ or %; {c:?} is not allowed (got {})",
                quoted(url)
            ),
        ));
    }
    let segments: Vec<&str> = url[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if *seg == "." || *seg == ".." {
            return Err(invalid(
                field,
                format!("must not have a {seg:?} segment (got {})", quoted(url)),
            ));
        }
        if seg.is_empty() && i != last {
            return Err(invalid(
                field,
                format!(
                    "must not have an empty segment (\"//\") (got {})",
                    quoted(url)
                ),
            ));
        }
    }
    Ok(())
}

fn check_body(
    at: &str,
    raw: RawBody,
    is_request: bool,
    model_type: ModelType,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Body, ConfigError> {
    let field = format!("{at}.Content-type");
    let content_type = match present(raw.content_type) {
        None => None,
        Some(ct) => {
            let lower = ct.to_ascii_lowercase();
            let parsed = match lower.as_str() {
                "application/json" => ContentType::Json,
                "applicaton/json" => {
                    warnings.push(ConfigWarning::ContentTypeTypo {
                        field: field.clone(),
                    });
                    ContentType::Json
                }
                "multipart/form-data" => ContentType::Multipart,
                _ => {
                    let allowed = if is_request {
                        "\"application/json\" or \"multipart/form-data\""
                    } else {
                        "\"application/json\""
                    };
                    return Err(invalid(
                        field,
                        format!("must be {allowed} (got {})", quoted(&ct)),
                    ));
                }
            };
            if parsed == ContentType::Multipart && !is_request {
                return Err(invalid(
                    field,
                    "must be \"application/json\": multipart/form-data is for requests (file uploads)",
                ));
            }
            if parsed == ContentType::Multipart && model_type.is_machine_learning() {
                return Err(invalid(
                    field,
                    format!(
                        "must be \"application/json\" for model_type {model_type}: machine-learning models take JSON only"
                    ),
                ));
            }
            Some(parsed)
        }
    };
    Ok(Body {
        content_type,
        data: raw.data,
    })
}

fn check_dependencies(raw: Vec<Obj<RawDependency>>) -> Result<Vec<Dependency>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, Obj(d)) in raw.into_iter().enumerate() {
        let at = format!("dependencies[{i}]");
        let installer = match present(d.installer).as_deref() {
            Some("pip") => Installer::Pip,
            Some(other) => {
                return Err(invalid(
                    format!("{at}.installer"),
                    format!(
                        "must be \"pip\", the only installer supported (got {})",
                        quoted(other)
                    ),
                ));
            }
            None => {
                return Err(invalid(format!("{at}.installer"), "is required: \"pip\""));
            }
        };
        let Some(raw_packages) = d.packages else {
            return Err(invalid(format!("{at}.packages"), "is required"));
        };
        let mut packages = Vec::with_capacity(raw_packages.len());
        for (j, Obj(p)) in raw_packages.into_iter().enumerate() {
            packages.push(check_package(&format!("{at}.packages[{j}]"), p)?);
        }
        out.push(Dependency {
            installer,
            packages,
        });
    }
    Ok(out)
}

/// Table 9-14's rule (no Chinese, none of `& ! " ' < > =`), plus what keeps a name from
/// becoming something else on a pip command line: no whitespace, no leading `-`.
fn check_package_text(field: &str, s: &str) -> Result<(), ConfigError> {
    check_name_chars(field, s, &['&', '!', '"', '\'', '<', '>', '='])?;
    if s.contains(' ') {
        return Err(invalid(
            field,
            format!("must not contain spaces (got {})", quoted(s)),
        ));
    }
    if s.starts_with('-') {
        return Err(invalid(
            field,
            format!("must not start with '-' (got {})", quoted(s)),
        ));
    }
    Ok(())
}

fn check_package(at: &str, p: RawPackage) -> Result<Package, ConfigError> {
    let Some(package_name) = present(p.package_name) else {
        return Err(invalid(format!("{at}.package_name"), "is required"));
    };
    check_package_text(&format!("{at}.package_name"), &package_name)?;
    let version = present(p.package_version);
    if let Some(v) = &version {
        check_package_text(&format!("{at}.package_version"), v)?;
    }
    let restraint = match present(p.restraint) {
        None => None,
        Some(r) => Some(Restraint::from_name(&r).ok_or_else(|| {
            invalid(
                format!("{at}.restraint"),
                format!("must be one of EXACT, ATLEAST, ATMOST (got {})", quoted(&r)),
            )
        })?),
    };
    let version = match (version, restraint) {
        (None, None) => None,
        (Some(package_version), Some(restraint)) => Some(PinnedVersion {
            package_version,
            restraint,
        }),
        (Some(_), None) => {
            return Err(invalid(
                format!("{at}.restraint"),
                "is required when package_version is set: EXACT, ATLEAST or ATMOST",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                format!("{at}.restraint"),
                "needs a package_version to apply to (leave both empty for any version)",
            ));
        }
    };
    Ok(Package {
        package_name,
        version,
    })
}

impl Health {
    /// A health check given on its own rather than in a `config.json` (a model version's
    /// startup, readiness or liveness probe): the same fields and rules as `health`, errors
    /// naming `at` (`health_checks.readiness.url is required …`).
    pub fn from_json(at: &str, v: &serde_json::Value) -> Result<Health, String> {
        let raw: Obj<RawHealth> = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                format!("{at}: {inner}")
            } else {
                format!("{at}.{path}: {inner}")
            }
        })?;
        check_health(raw.0, at).map_err(|e| match e {
            ConfigError::Invalid { field, problem } => format!("{field} {problem}"),
            other => format!("{at}: {other}"),
        })
    }

    /// Whether a custom engine may use this check: an HTTP check of
    /// [`CUSTOM_ENGINE_HEALTH_URL`] (seed 9.3.4).
    pub fn ok_for_custom_engine(&self) -> bool {
        matches!(&self.check, HealthCheck::Http { url, .. } if url == CUSTOM_ENGINE_HEALTH_URL)
    }
}

fn check_health(raw: RawHealth, at: &str) -> Result<Health, ConfigError> {
    let url = present(raw.url);
    let command = present(raw.command);
    let protocol = present(raw.protocol);
    let check = match present(raw.check_method)
        .map(|m| m.to_ascii_uppercase())
        .as_deref()
    {
        Some("HTTP") => {
            if command.is_some() {
                return Err(invalid(
                    format!("{at}.command"),
                    "is for check_method EXEC; an HTTP check uses url",
                ));
            }
            let Some(url) = url else {
                return Err(invalid(
                    format!("{at}.url"),
                    "is required when check_method is HTTP (for example \"/health\")",
                ));
            };
            check_url_path(&format!("{at}.url"), &url)?;
            let protocol = match protocol.map(|p| p.to_ascii_lowercase()).as_deref() {
                None | Some("http") => Protocol::Http,
                Some("https") => Protocol::Https,
                Some(other) => {
                    return Err(invalid(
                        format!("{at}.protocol"),
                        format!("must be \"http\" or \"https\" (got {})", quoted(other)),
                    ));
                }
            };
            HealthCheck::Http { url, protocol }
        }
        Some("EXEC") => {
            if url.is_some() || protocol.is_some() {
                let f = if url.is_some() { "url" } else { "protocol" };
                return Err(invalid(
                    format!("{at}.{f}"),
                    "is for check_method HTTP; an EXEC check uses command",
                ));
            }
            let Some(command) = command else {
                return Err(invalid(
                    format!("{at}.command"),
                    "is required when check_method is EXEC",
                ));
            };
            check_plain_text(&format!("{at}.command"), &command)?;
            HealthCheck::Exec { command }
        }
        Some(other) => {
            return Err(invalid(
                format!("{at}.check_method"),
                format!("must be \"HTTP\" or \"EXEC\" (got {})", quoted(other)),
            ));
        }
        None => {
            return Err(invalid(
                format!("{at}.check_method"),
                "is required: \"HTTP\" or \"EXEC\"",
            ));
        }
    };
    Ok(Health {
        check,
        initial_delay_seconds: seconds(
            &format!("{at}.initial_delay_seconds"),
            raw.initial_delay_seconds,
            0,
        )?,
        timeout_seconds: seconds(&format!("{at}.timeout_seconds"), raw.timeout_seconds, 0)?,
        period_seconds: required_seconds(&format!("{at}.period_seconds"), raw.period_seconds)?,
        failure_threshold: required_seconds(
            &format!("{at}.failure_threshold"),
            raw.failure_threshold,
        )?,
    })
}

fn required_seconds(field: &str, v: Option<Value>) -> Result<u32, ConfigError> {
    seconds(field, v, 1)?.ok_or_else(|| {
        invalid(
            field,
            format!("is required: an integer between 1 and {MAX_HEALTH_SECONDS}"),
        )
    })
}

/// A health-check integer in `min..=MAX_HEALTH_SECONDS`, written as a JSON number (`10`) or,
/// as Table 9-15 types it, a string of digits (`"10"`). Absent, null and `""` are `None`.
fn seconds(field: &str, v: Option<Value>, min: u32) -> Result<Option<u32>, ConfigError> {
    let out_of_range = |got: &str| {
        invalid(
            field,
            format!("must be between {min} and {MAX_HEALTH_SECONDS} (got {got})"),
        )
    };
    let n: u64 = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => {
            let (negative, digits) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.as_str()),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    field,
                    format!(
                        "must be a whole number, written as a number or a string of digits (got {})",
                        quoted(&s)
                    ),
                ));
            }
            let significant = digits.trim_start_matches('0');
            if negative && !significant.is_empty() {
                return Err(out_of_range(&quoted(&s)));
            }
            // More than ten digits cannot be a 32-bit value; do not parse an unbounded number.
            if significant.len() > 10 {
                return Err(out_of_range(&quoted(&s)));
            }
            if significant.is_empty() {
                0
            } else {
                // At most ten ASCII digits: always a u64.
                significant.parse::<u64>().unwrap_or(u64::MAX)
            }
        }
        Some(Value::Number(num)) => match num.as_u64() {
            Some(n) => n,
            None if num.is_i64() => return Err(out_of_range(&num.to_string())),
            None => {
                return Err(invalid(
                    field,
                    format!("must be a whole number (got {num})"),
                ));
            }
        },
        Some(other) => {
            return Err(invalid(
                field,
                format!("must be a number or a string of digits (got {other})"),
            ));
        }
    };
    match u32::try_from(n) {
        Ok(n) if n >= min && n <= MAX_HEALTH_SECONDS => Ok(Some(n)),
        _ => Err(out_of_range(&n.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> Result<ParsedConfig, ConfigError> {
        ModelConfig::parse(v.to_string().as_bytes())
    }

    /// A valid config of `model_type` with `extra` merged into its top level.
    fn with(model_type: &str, extra: Value) -> Value {
        let mut base = json!({"model_algorithm": "image_classification", "model_type": model_type});
        if model_type == "Image" && extra.get("health").is_none() {
            base["health"] = json!({"check_method": "HTTP", "url": "/health",
                "period_seconds": 10, "failure_threshold": 3});
        }
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    }

    fn refused(v: &Value) -> ConfigError {
        match parse(v) {
            Ok(p) => panic!("accepted: {v}\n{p:?}"),
            Err(e) => e,
        }
    }

    /// The error names `field` and its message starts with `config.json: <field> <says>`.
    fn assert_refused(v: &Value, field: &str, says: &str) {
        let err = refused(v);
        assert_eq!(err.field(), Some(field), "{err}");
        let text = err.to_string();
        let want = format!("config.json: {field} {says}");
        assert!(text.starts_with(&want), "want {want:?}\n got {text:?}");
    }

    const EXAMPLES: [(&str, &str); 8] = [
        (
            "apis_example",
            include_str!("../testdata/config/apis_example.json"),
        ),
        (
            "object_detection",
            include_str!("../testdata/config/object_detection.json"),
        ),
        (
            "image_classification",
            include_str!("../testdata/config/image_classification.json"),
        ),
        (
            "mindspore_classification",
            include_str!("../testdata/config/mindspore_classification.json"),
        ),
        (
            "predictive_analytics",
            include_str!("../testdata/config/predictive_analytics.json"),
        ),
        (
            "custom_image",
            include_str!("../testdata/config/custom_image.json"),
        ),
        (
            "machine_learning",
            include_str!("../testdata/config/machine_learning.json"),
        ),
        (
            "custom_dependency",
            include_str!("../testdata/config/custom_dependency.json"),
        ),
    ];

    #[test]
    fn the_seeds_examples_parse_and_read_back_from_their_normal_form() {
        for (name, text) in EXAMPLES {
            let parsed =
                ModelConfig::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let c = &parsed.config;
            assert!(c.refusals().is_empty(), "{name}");
            // The normal form parses back to the same config, without new warnings.
            let normal = serde_json::to_vec(c).unwrap();
            let again = ModelConfig::parse(&normal).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&again.config, c, "{name}");
            assert!(again.warnings.is_empty(), "{name}: {:?}", again.warnings);
            // Every API is POST / (the seed writes "post").
            for api in c.apis() {
                assert_eq!(
                    (api.method.as_str(), api.url.as_str()),
                    ("POST", "/"),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_seeds_examples_keep_what_they_say() {
        let get = |name: &str| {
            let text = EXAMPLES.iter().find(|(n, _)| *n == name).unwrap().1;
            ModelConfig::parse(text.as_bytes()).unwrap()
        };

        let od = get("object_detection");
        assert_eq!(od.config.model_type(), ModelType::TensorFlow);
        assert_eq!(od.config.model_algorithm(), "object_detection");
        assert_eq!(
            od.config.metrics().copied(),
            Some(Metrics {
                f1: Some(0.345294),
                recall: Some(0.351852),
                precision: Some(0.338977),
                accuracy: Some(0.462963),
            })
        );
        let api = &od.config.apis()[0];
        assert_eq!(
            api.request.as_ref().unwrap().content_type,
            Some(ContentType::Multipart)
        );
        assert_eq!(
            api.response.as_ref().unwrap().data.as_ref().unwrap()["properties"]["detection_boxes"]
                ["items"][0]["minItems"],
            json!(4)
        );
        let deps = od.config.dependencies();
        assert_eq!(deps.len(), 1);
        assert_eq!(deps[0].installer, Installer::Pip);
        assert_eq!(
            deps[0].packages[1],
            Package {
                package_name: "Pillow".into(),
                version: Some(PinnedVersion {
                    package_version: "5.2.0".into(),
                    restraint: Restraint::Exact
                })
            }
        );
        assert!(od.warnings.is_empty());

        let ic = get("image_classification");
        assert_eq!(
            ic.config.dependencies()[0].packages[1],
            Package {
                package_name: "Pillow".into(),
                version: None
            }
        );
        assert_eq!(
            ic.config.dependencies()[0].packages[0]
                .version
                .as_ref()
                .map(|v| v.restraint),
            Some(Restraint::AtLeast)
        );

        let ms = get("mindspore_classification");
        assert_eq!(ms.config.model_type(), ModelType::MindSpore);
        assert_eq!(
            ms.config.metrics().and_then(|m| m.precision),
            Some(0.0023493892851938493)
        );
        assert!(ms.config.dependencies().is_empty());
        assert_eq!(
            ms.warnings,
            [ConfigWarning::ContentTypeTypo {
                field: "apis[0].response.Content-type".into()
            }]
        );
        assert_eq!(
            ms.warnings[0].to_string(),
            "config.json: apis[0].response.Content-type \"applicaton/json\" read as \"application/json\""
        );
        assert_eq!(
            ms.config.apis()[0].response.as_ref().unwrap().content_type,
            Some(ContentType::Json)
        );

        let ml = get("machine_learning");
        assert_eq!(ml.config.model_type(), ModelType::XGBoost);
        assert_eq!(ml.config.runtime(), Some("python2.7"));

        let image = get("custom_image");
        assert_eq!(image.config.model_type(), ModelType::Image);
        let health = image.config.health().unwrap();
        assert_eq!(
            health.check,
            HealthCheck::Http {
                url: "/health".into(),
                protocol: Protocol::Http
            }
        );
        assert_eq!(
            (
                health.initial_delay_seconds,
                health.timeout_seconds,
                health.period_seconds,
                health.failure_threshold
            ),
            (Some(12), Some(30), 10, 3)
        );

        let cd = get("custom_dependency");
        assert_eq!(cd.config.runtime(), Some("python3.6"));
        assert_eq!(
            cd.config.dependencies()[0].packages[0].version,
            Some(PinnedVersion {
                package_version: "1.16.4".into(),
                restraint: Restraint::Exact
            })
        );
    }

    #[test]
    fn model_algorithm_starts_with_a_letter_and_is_short_and_plain() {
        // §5 item 3.
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": "1abc"})),
            "model_algorithm",
            "must start with a letter (got \"1abc\")",
        );
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": "a".repeat(37)})),
            "model_algorithm",
            "must be at most 36 characters (got 37)",
        );
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": "a<b"})),
            "model_algorithm",
            "must not contain '<'",
        );
        for c in ['&', '!', '"', '>', '='] {
            assert_refused(
                &with("TensorFlow", json!({"model_algorithm": format!("ab{c}")})),
                "model_algorithm",
                &format!("must not contain {c:?}"),
            );
        }
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": "图像分类"})),
            "model_algorithm",
            "must start with a letter",
        );
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": "image_分类"})),
            "model_algorithm",
            "must be ASCII; '分' is not allowed",
        );
        assert_refused(
            &with("TensorFlow", json!({"model_algorithm": ""})),
            "model_algorithm",
            "is required",
        );
        let mut no_algorithm = with("TensorFlow", json!({}));
        no_algorithm
            .as_object_mut()
            .unwrap()
            .remove("model_algorithm");
        assert_refused(&no_algorithm, "model_algorithm", "is required");

        for ok in [
            "image_classification".to_string(),
            "xgboost_iris_test".into(),
            "a".repeat(36),
            "predict analysis-2.0".into(),
        ] {
            let p = parse(&with("TensorFlow", json!({ "model_algorithm": ok }))).unwrap();
            assert_eq!(p.config.model_algorithm(), ok);
        }
    }

    #[test]
    fn model_type_is_one_of_the_engines_or_image_or_onnx() {
        for t in ModelType::ALL {
            let p = parse(&with(t.as_str(), json!({}))).unwrap();
            assert_eq!(p.config.model_type(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_refused(
            &with("tensorflow", json!({})),
            "model_type",
            "must be one of TensorFlow, Spark_MLlib, Scikit_Learn, XGBoost, PyTorch, MindSpore, Image, ONNX (got \"tensorflow\")",
        );
        let mut none = with("TensorFlow", json!({}));
        none.as_object_mut().unwrap().remove("model_type");
        assert_refused(&none, "model_type", "is required");
    }

    #[test]
    fn a_preset_engine_serves_one_api_at_the_root() {
        // §5 item 4.
        assert_refused(
            &with("TensorFlow", json!({"apis": [{"url": "/predict"}]})),
            "apis[0].url",
            "must be \"/\" for model_type TensorFlow (got \"/predict\")",
        );
        assert_refused(
            &with(
                "ONNX",
                json!({"apis": [{"url": "/"}, {"url": "/", "method": "get"}]}),
            ),
            "apis",
            "must hold at most one API for model_type ONNX",
        );
        let p = parse(&with("Image", json!({"apis": [{"url": "/predict"}]}))).unwrap();
        assert_eq!(p.config.apis()[0].url, "/predict");
        // Defaults: url "/", method POST; methods are read case-insensitively.
        let p = parse(&with("PyTorch", json!({"apis": [{}]}))).unwrap();
        assert_eq!(
            (
                p.config.apis()[0].url.as_str(),
                p.config.apis()[0].method.as_str()
            ),
            ("/", "POST")
        );
        let p = parse(&with(
            "PyTorch",
            json!({"apis": [{"url": "", "method": "pOsT"}]}),
        ))
        .unwrap();
        assert_eq!(p.config.apis()[0].method, "POST");
        assert_eq!(p.config.apis()[0].url, "/");
        assert_refused(
            &with("PyTorch", json!({"apis": [{"method": "FETCH"}]})),
            "apis[0].method",
            "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (got \"FETCH\")",
        );
        assert!(
            parse(&with("PyTorch", json!({"apis": []})))
                .unwrap()
                .config
                .apis()
                .is_empty()
        );
    }

    #[test]
    fn an_image_serves_absolute_paths_without_dot_segments_or_repeats() {
        let p = parse(&with(
            "Image",
            json!({"apis": [
                {"url": "/predictions/poetry"},
                {"url": "/predictions/poetry", "method": "GET"},
                {"url": "/v1/models/m:predict"},
                {"url": "/trailing/"}
            ]}),
        ))
        .unwrap();
        assert_eq!(p.config.apis().len(), 4);
        for (url, says) in [
            ("predict", "must be an absolute path starting with \"/\""),
            ("/a/../b", "must not have a \"..\" segment"),
            ("/..", "must not have a \"..\" segment"),
            ("/a/./b", "must not have a \".\" segment"),
            ("/a//b", "must not have an empty segment"),
            ("/a?b=1", "must be a plain path"),
            ("/a#b", "must be a plain path"),
            ("/a b", "must be a plain path"),
            ("/a%2e%2e", "must be a plain path"),
            ("/a\\b", "must be a plain path"),
            ("/é", "must be a plain path"),
        ] {
            assert_refused(
                &with("Image", json!({"apis": [{"url": url}]})),
                "apis[0].url",
                says,
            );
        }
        let long = format!("/{}", "a".repeat(MAX_URL_BYTES));
        assert_refused(
            &with("Image", json!({"apis": [{"url": long}]})),
            "apis[0].url",
            "must be at most 1024 bytes",
        );
        assert_refused(
            &with(
                "Image",
                json!({"apis": [{"url": "/a"}, {"url": "/a", "method": "post"}]}),
            ),
            "apis[1]",
            "repeats apis[0] (POST /a)",
        );
    }

    #[test]
    fn content_types_are_json_or_multipart_requests() {
        let ct =
            |at: &str, v: &str, t: &str| with(t, json!({"apis": [{ at: {"Content-type": v} }]}));
        let p = parse(&ct("request", "Multipart/Form-Data", "TensorFlow")).unwrap();
        assert_eq!(
            p.config.apis()[0].request.as_ref().unwrap().content_type,
            Some(ContentType::Multipart)
        );
        assert!(p.warnings.is_empty());
        let p = parse(&ct("request", "applicaton/json", "TensorFlow")).unwrap();
        assert_eq!(
            p.warnings,
            [ConfigWarning::ContentTypeTypo {
                field: "apis[0].request.Content-type".into()
            }]
        );
        assert_refused(
            &ct("request", "text/plain", "TensorFlow"),
            "apis[0].request.Content-type",
            "must be \"application/json\" or \"multipart/form-data\" (got \"text/plain\")",
        );
        assert_refused(
            &ct("response", "multipart/form-data", "TensorFlow"),
            "apis[0].response.Content-type",
            "must be \"application/json\": multipart/form-data is for requests",
        );
        assert_refused(
            &ct("request", "multipart/form-data", "XGBoost"),
            "apis[0].request.Content-type",
            "must be \"application/json\" for model_type XGBoost",
        );
        // Absent stays absent (a batch service requires it; the default is JSON).
        let p = parse(&with(
            "TensorFlow",
            json!({"apis": [{"request": {"data": {}}}]}),
        ))
        .unwrap();
        assert_eq!(
            p.config.apis()[0].request.as_ref().unwrap().content_type,
            None
        );
        // The key is literally "Content-type".
        let err = refused(&with(
            "TensorFlow",
            json!({"apis": [{"request": {"Content-Type": "application/json"}}]}),
        ));
        assert_eq!(err.field(), Some("apis[0].request.Content-Type"), "{err}");
        assert!(
            err.to_string()
                .contains("unknown field `Content-Type`, expected `Content-type` or `data`"),
            "{err}"
        );
    }

    #[test]
    fn swr_location_outside_image_is_an_import_refusal_not_a_parse_error() {
        // §5 item 5.
        let p = parse(&with(
            "TensorFlow",
            json!({"swr_location": "registry.local/team/tf:1"}),
        ))
        .unwrap();
        assert!(p.config.swr_location_misplaced());
        assert_eq!(p.config.refusals(), [ImportRefusal::SwrLocationNotImage]);
        assert_eq!(
            p.config.refusals()[0].event(),
            "Only custom images support swr_location."
        );

        let p = parse(&with(
            "Image",
            json!({"swr_location": "registry.local/team/app:1"}),
        ))
        .unwrap();
        assert!(!p.config.swr_location_misplaced());
        assert!(p.config.refusals().is_empty());
        assert_eq!(p.config.swr_location(), Some("registry.local/team/app:1"));

        // An empty swr_location is no swr_location.
        let p = parse(&with("TensorFlow", json!({"swr_location": ""}))).unwrap();
        assert!(p.config.refusals().is_empty());

        assert_refused(
            &with("Image", json!({"swr_location": "a b"})),
            "swr_location",
            "must be an image reference without spaces",
        );
    }

    #[test]
    fn dependencies_on_a_custom_image_are_an_import_refusal() {
        let deps = json!([{"installer": "pip", "packages": [{"package_name": "numpy"}]}]);
        let p = parse(&with("Image", json!({ "dependencies": deps }))).unwrap();
        assert_eq!(p.config.refusals(), [ImportRefusal::DependenciesOnImage]);
        assert_eq!(
            p.config.refusals()[0].to_string(),
            "The custom image does not support specified dependencies."
        );
        let p = parse(&with("Image", json!({"dependencies": []}))).unwrap();
        assert!(p.config.refusals().is_empty());
        let p = parse(&with("TensorFlow", json!({ "dependencies": deps }))).unwrap();
        assert!(p.config.refusals().is_empty());
        // Both at once: both, in order.
        let p = parse(&with(
            "TensorFlow",
            json!({"swr_location": "r/x:1", "dependencies": deps}),
        ))
        .unwrap();
        assert_eq!(p.config.refusals(), [ImportRefusal::SwrLocationNotImage]);
    }

    fn packages(list: Value) -> Value {
        with(
            "TensorFlow",
            json!({"dependencies": [{"installer": "pip", "packages": list}]}),
        )
    }

    #[test]
    fn a_package_version_needs_a_known_restraint() {
        // §5 item 6.
        assert_refused(
            &packages(json!([
                {"package_name": "numpy"},
                {"package_name": "Pillow", "package_version": "5.2.0"}
            ])),
            "dependencies[0].packages[1].restraint",
            "is required when package_version is set",
        );
        assert_refused(
            &packages(
                json!([{"package_name": "numpy", "package_version": "1.0", "restraint": "ABOUT"}]),
            ),
            "dependencies[0].packages[0].restraint",
            "must be one of EXACT, ATLEAST, ATMOST (got \"ABOUT\")",
        );
        assert_refused(
            &packages(json!([{"package_name": "numpy", "restraint": "EXACT"}])),
            "dependencies[0].packages[0].restraint",
            "needs a package_version",
        );
        let p = parse(&packages(
            json!([{"restraint": "", "package_version": "", "package_name": "Pillow"}]),
        ))
        .unwrap();
        assert_eq!(
            p.config.dependencies()[0].packages,
            [Package {
                package_name: "Pillow".into(),
                version: None
            }]
        );
        let p = parse(&packages(
            json!([{"restraint": "ATMOST", "package_version": "2.0", "package_name": "numpy"}]),
        ))
        .unwrap();
        assert_eq!(
            p.config.dependencies()[0].packages[0].version,
            Some(PinnedVersion {
                package_version: "2.0".into(),
                restraint: Restraint::AtMost
            })
        );
    }

    #[test]
    fn the_installer_is_pip() {
        assert_refused(
            &with(
                "TensorFlow",
                json!({"dependencies": [{"installer": "conda", "packages": []}]}),
            ),
            "dependencies[0].installer",
            "must be \"pip\"",
        );
        assert_refused(
            &with("TensorFlow", json!({"dependencies": [{"packages": []}]})),
            "dependencies[0].installer",
            "is required",
        );
        assert_refused(
            &with(
                "TensorFlow",
                json!({"dependencies": [{"installer": "pip"}]}),
            ),
            "dependencies[0].packages",
            "is required",
        );
    }

    #[test]
    fn package_names_and_versions_follow_the_character_rule() {
        for c in ['&', '!', '"', '\'', '<', '>', '='] {
            assert_refused(
                &packages(json!([{ "package_name": format!("numpy{c}1") }])),
                "dependencies[0].packages[0].package_name",
                &format!("must not contain {c:?}"),
            );
            assert_refused(
                &packages(
                    json!([{ "package_name": "numpy", "package_version": format!("1{c}"), "restraint": "EXACT" }]),
                ),
                "dependencies[0].packages[0].package_version",
                &format!("must not contain {c:?}"),
            );
        }
        for (name, says) in [
            ("麻将", "must be ASCII"),
            ("numpy --index-url", "must not contain spaces"),
            ("--index-url=x", "must not contain '='"),
            ("-e", "must not start with '-'"),
        ] {
            assert_refused(
                &packages(json!([{ "package_name": name }])),
                "dependencies[0].packages[0].package_name",
                says,
            );
        }
        assert_refused(
            &packages(json!([{ "package_version": "1.0", "restraint": "EXACT" }])),
            "dependencies[0].packages[0].package_name",
            "is required",
        );
        parse(&packages(
            json!([{ "package_name": "opencv-python_headless.x" }]),
        ))
        .unwrap();
    }

    fn health(h: Value) -> Value {
        with("TensorFlow", json!({ "health": h }))
    }

    #[test]
    fn an_http_health_check_needs_a_url_and_an_exec_one_a_command() {
        // §5 item 7.
        assert_refused(
            &health(
                json!({"check_method": "HTTP", "period_seconds": "10", "failure_threshold": "3"}),
            ),
            "health.url",
            "is required when check_method is HTTP",
        );
        assert_refused(
            &health(json!({"check_method": "EXEC", "period_seconds": 1, "failure_threshold": 1})),
            "health.command",
            "is required when check_method is EXEC",
        );
        assert_refused(
            &health(json!({"check_method": "TCP", "period_seconds": 1, "failure_threshold": 1})),
            "health.check_method",
            "must be \"HTTP\" or \"EXEC\" (got \"TCP\")",
        );
        assert_refused(
            &health(json!({"period_seconds": 1, "failure_threshold": 1})),
            "health.check_method",
            "is required",
        );
        assert_refused(
            &health(
                json!({"check_method": "EXEC", "command": "true", "url": "/health", "period_seconds": 1, "failure_threshold": 1}),
            ),
            "health.url",
            "is for check_method HTTP",
        );
        assert_refused(
            &health(
                json!({"check_method": "HTTP", "command": "true", "url": "/health", "period_seconds": 1, "failure_threshold": 1}),
            ),
            "health.command",
            "is for check_method EXEC",
        );
        assert_refused(
            &health(
                json!({"check_method": "HTTP", "url": "/health", "protocol": "ftp", "period_seconds": 1, "failure_threshold": 1}),
            ),
            "health.protocol",
            "must be \"http\" or \"https\"",
        );
        assert_refused(
            &health(
                json!({"check_method": "HTTP", "url": "health", "period_seconds": 1, "failure_threshold": 1}),
            ),
            "health.url",
            "must be an absolute path",
        );

        let p = parse(&health(
            json!({"check_method": "exec", "command": "cat /tmp/ready", "period_seconds": 5, "failure_threshold": 2}),
        ))
        .unwrap();
        assert_eq!(
            p.config.health().unwrap().check,
            HealthCheck::Exec {
                command: "cat /tmp/ready".into()
            }
        );
        let p = parse(&health(
            json!({"check_method": "HTTP", "url": "/healthz", "protocol": "HTTPS", "period_seconds": 5, "failure_threshold": 2}),
        ))
        .unwrap();
        assert_eq!(
            p.config.health().unwrap().check,
            HealthCheck::Http {
                url: "/healthz".into(),
                protocol: Protocol::Https
            }
        );
    }

    #[test]
    fn health_numbers_are_strings_or_numbers_within_their_ranges() {
        let h = |field: &str, v: Value| {
            let mut h = json!({"check_method": "HTTP", "url": "/health",
                "period_seconds": "10", "failure_threshold": "3"});
            h[field] = v;
            health(h)
        };
        let p = parse(&h("period_seconds", json!("10"))).unwrap();
        let got = p.config.health().unwrap();
        assert_eq!((got.period_seconds, got.failure_threshold), (10, 3));
        assert_eq!(
            got.check,
            HealthCheck::Http {
                url: "/health".into(),
                protocol: Protocol::Http
            }
        );
        assert_eq!(
            parse(&h("period_seconds", json!(10)))
                .unwrap()
                .config
                .health()
                .unwrap()
                .period_seconds,
            10
        );
        for v in [
            json!("0"),
            json!(0),
            json!("2147483648"),
            json!(2147483648_u64),
            json!("-1"),
            json!(-1),
            json!("99999999999999999999999"),
        ] {
            assert_refused(
                &h("failure_threshold", v.clone()),
                "health.failure_threshold",
                "must be between 1 and 2147483647",
            );
            if v != json!("0") && v != json!(0) {
                assert_refused(
                    &h("timeout_seconds", v),
                    "health.timeout_seconds",
                    "must be between 0 and 2147483647",
                );
            }
        }
        for v in [
            json!("1.5"),
            json!(1.5),
            json!("ten"),
            json!(" 10"),
            json!("+10"),
            json!(true),
            json!([1]),
        ] {
            let err = refused(&h("period_seconds", v.clone()));
            assert_eq!(err.field(), Some("health.period_seconds"), "{v}: {err}");
        }
        let max = parse(&h("failure_threshold", json!("2147483647"))).unwrap();
        assert_eq!(
            max.config.health().unwrap().failure_threshold,
            MAX_HEALTH_SECONDS
        );
        // Delay and timeout may be 0 or absent; period and threshold may not.
        let p = parse(&h("initial_delay_seconds", json!("0"))).unwrap();
        assert_eq!(p.config.health().unwrap().initial_delay_seconds, Some(0));
        assert_eq!(p.config.health().unwrap().timeout_seconds, None);
        for required in ["period_seconds", "failure_threshold"] {
            assert_refused(
                &h(required, json!("")),
                &format!("health.{required}"),
                "is required",
            );
            assert_refused(
                &h(required, Value::Null),
                &format!("health.{required}"),
                "is required",
            );
        }
    }

    #[test]
    fn an_image_needs_a_health_check() {
        let mut v = with("Image", json!({}));
        v.as_object_mut().unwrap().remove("health");
        assert_refused(&v, "health", "is required for model_type Image");
    }

    #[test]
    fn a_custom_engines_health_check_must_be_at_slash_health() {
        let check = |h: Value| {
            parse(&health(h))
                .unwrap()
                .config
                .health_url_ok_for_custom_engine()
        };
        assert!(check(
            json!({"check_method": "HTTP", "url": "/health", "period_seconds": 1, "failure_threshold": 1})
        ));
        assert!(!check(
            json!({"check_method": "HTTP", "url": "/healthz", "period_seconds": 1, "failure_threshold": 1})
        ));
        assert!(!check(
            json!({"check_method": "EXEC", "command": "true", "period_seconds": 1, "failure_threshold": 1})
        ));
        assert!(
            parse(&with("TensorFlow", json!({})))
                .unwrap()
                .config
                .health_url_ok_for_custom_engine()
        );
        assert_eq!(
            custom_image_health_event(),
            "The health check API of a custom image must be /health."
        );
    }

    #[test]
    fn metrics_round_trip_as_the_f64_their_text_denotes() {
        // §5 item 12. serde_json's default float parser reads 0.9999999999999999 as 1.0 (an
        // accuracy a model may well report); the standard library's is correctly rounded.
        for text in [
            "0.123456789012345678",
            "0.345294",
            "0.0023493892851938493",
            "0.00746268656716417",
            "0.30000000000000004",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "9007199254740993",
            "0.9999999999999999",
            "1",
            "-0.5",
            "1E-7",
            "8.98846567431158e307",
        ] {
            let doc = format!(
                r#"{{"model_algorithm": "a", "model_type": "ONNX", "metrics": {{"f1": {text}, "accuracy": {text}}}}}"#
            );
            let want: f64 = text.parse().unwrap();
            let parsed = ModelConfig::parse(doc.as_bytes()).unwrap().config;
            let m = parsed.metrics().unwrap();
            assert_eq!(m.f1.map(f64::to_bits), Some(want.to_bits()), "{text}");
            assert_eq!(m.accuracy.map(f64::to_bits), Some(want.to_bits()), "{text}");
            assert_eq!((m.recall, m.precision), (None, None));
            // Serialised and read back (by us, or by any correct parser): the same f64.
            let stored = serde_json::to_string(&parsed).unwrap();
            let again = ModelConfig::parse(stored.as_bytes()).unwrap().config;
            assert_eq!(
                again.metrics().unwrap().f1.map(f64::to_bits),
                Some(want.to_bits()),
                "{text}"
            );
            let f1_text = stored
                .split("\"f1\":")
                .nth(1)
                .unwrap()
                .split([',', '}'])
                .next()
                .unwrap();
            assert_eq!(
                f1_text.parse::<f64>().unwrap().to_bits(),
                want.to_bits(),
                "{stored}"
            );
        }
        for (v, says) in [
            (json!("0.5"), "must be a number"),
            (json!(true), "must be a number"),
        ] {
            assert_refused(
                &with("ONNX", json!({"metrics": {"f1": v}})),
                "metrics.f1",
                says,
            );
        }
        let err = ModelConfig::parse(
            br#"{"model_algorithm": "a", "model_type": "ONNX", "metrics": {"recall": 1e400}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("metrics.recall"), "{err}");
        let p = parse(&with("ONNX", json!({"metrics": {"f1": null}}))).unwrap();
        assert_eq!(p.config.metrics(), Some(&Metrics::default()));
    }

    #[test]
    fn the_normal_form_fills_defaults_and_canonical_names() {
        let p = parse(&with(
            "TensorFlow",
            json!({
                "runtime": "",
                "apis": [{"method": "post", "request": {"Content-type": "APPLICATION/JSON"}}],
                "dependencies": [{"installer": "pip", "packages": [
                    {"package_name": "numpy", "package_version": "1.16.4", "restraint": "EXACT"},
                    {"package_name": "Pillow", "package_version": "", "restraint": ""}
                ]}],
                "health": {"check_method": "http", "url": "/health", "period_seconds": "10", "failure_threshold": 3}
            }),
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&p.config).unwrap(),
            json!({
                "model_algorithm": "image_classification",
                "model_type": "TensorFlow",
                "apis": [{"url": "/", "method": "POST", "request": {"Content-type": "application/json"}}],
                "dependencies": [{"installer": "pip", "packages": [
                    {"package_name": "numpy", "package_version": "1.16.4", "restraint": "EXACT"},
                    {"package_name": "Pillow"}
                ]}],
                "health": {"check_method": "HTTP", "url": "/health", "protocol": "http",
                    "period_seconds": 10, "failure_threshold": 3}
            })
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = refused(&with("TensorFlow", json!({"model_name": "x"})));
        assert_eq!(err.field(), Some("model_name"));
        let text = err.to_string();
        assert!(
            text.starts_with("config.json: model_name: unknown field `model_name`, expected one of `model_algorithm`"),
            "{text}"
        );
        let err = refused(&with("TensorFlow", json!({"metrics": {"loss": 0.1}})));
        assert_eq!(err.field(), Some("metrics.loss"), "{err}");
        assert!(err.to_string().contains("unknown field `loss`"), "{err}");
        let err = refused(&packages(json!([{"package_name": "a", "version": "1"}])));
        assert_eq!(
            err.field(),
            Some("dependencies[0].packages[0].version"),
            "{err}"
        );
        assert!(err.to_string().contains("unknown field `version`"), "{err}");
    }

    #[test]
    fn wrong_types_are_refused_at_their_path() {
        let err = refused(&with("TensorFlow", json!({"apis": [{"url": 5}]})));
        assert_eq!(err.field(), Some("apis[0].url"), "{err}");
        assert!(
            err.to_string().starts_with(
                "config.json: apis[0].url: invalid type: integer `5`, expected a string"
            ),
            "{err}"
        );
        let err = refused(&with("TensorFlow", json!({"apis": {"url": "/"}})));
        assert_eq!(err.field(), Some("apis"), "{err}");
        // An array is not an object, even one serde could fill field by field.
        let err = refused(&json!(["a", "ONNX"]));
        assert_eq!(
            err.to_string(),
            "config.json: invalid type: sequence, expected a JSON object"
        );
        let err = refused(&with("Image", json!({"apis": [["/x", "GET"]]})));
        assert_eq!(err.field(), Some("apis[0]"), "{err}");
        assert!(
            err.to_string()
                .ends_with("invalid type: sequence, expected a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_is_refused_with_its_line_and_column() {
        let err = ModelConfig::parse(b"{\n  \"model_algorithm\": \"a\",\n  \"model_type\": }")
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Syntax {
                    line: 3,
                    column: 17,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("config.json: not valid JSON at line 3, column 17: "),
            "{err}"
        );
        let err =
            ModelConfig::parse(br#"{"model_algorithm": "a", "model_type": "ONNX"} x"#).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("trailing characters"), "{err}");
        let err = ModelConfig::parse(b"").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        // The seed's own misplaced braces.
        let err = ModelConfig::parse(
            br#"{"model_algorithm": "a", "model_type": "ONNX", "apis": [{"url": "/"}}]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        // A duplicate key is a shape error at its object.
        let err = ModelConfig::parse(
            br#"{"model_algorithm": "a", "model_type": "ONNX", "model_type": "Image"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `model_type`"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_allowed_and_a_huge_file_is_not() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(br#"{"model_algorithm": "a", "model_type": "ONNX"}"#);
        ModelConfig::parse(&bytes).unwrap();
        let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            ModelConfig::parse(&huge).unwrap_err(),
            ConfigError::TooLarge {
                size: MAX_CONFIG_BYTES + 1,
                max: MAX_CONFIG_BYTES
            }
        );
    }

    #[test]
    fn runtime_is_kept_and_ignored_for_an_image_with_a_warning() {
        let p = parse(&with("Image", json!({"runtime": "python3.6"}))).unwrap();
        assert_eq!(p.warnings, [ConfigWarning::RuntimeIgnoredForImage]);
        let p = parse(&with("PyTorch", json!({"runtime": "python3.6"}))).unwrap();
        assert!(p.warnings.is_empty());
        assert_eq!(p.config.runtime(), Some("python3.6"));
    }
}
