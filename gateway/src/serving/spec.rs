//! What a real-time service is deployed with (spec/inference.md §2.8): the request's form,
//! checked, and the stored form with the model versions resolved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rules::CustomSetting;

/// The seed's deploy timeout: 20 minutes by default, 3 to 120.
pub const TIMEOUT_MINUTES: (u32, u32, u32) = (20, 3, 120);
/// The seed's request body limit (12 MB) and the most a service may raise it to.
pub const BODY_LIMIT_MB: (u32, u32) = (12, 64);
/// The seed's call timeout (40 s) and the bounds a service may set.
pub const CALL_TIMEOUT_SECONDS: (u32, u32, u32) = (40, 1, 600);
/// Auto-stop: on, 1 hour by default; 1 to 24 hours.
pub const AUTO_STOP_HOURS: (u32, u32, u32) = (1, 1, 24);
/// Versions one service may split its traffic over.
pub const MAX_VERSIONS: usize = 10;
/// Instances of one version.
pub const MAX_INSTANCES: u32 = 16;
/// Environment variables of one version, and their sizes.
pub const MAX_ENVS: usize = 64;

/// `POST /v1/services`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployService {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The model versions it runs, with their share of the calls.
    pub models: Vec<ModelChoice>,
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    /// `null` or absent: on, 1 hour; `{"enabled": false}`: off; `{"hours": 6}`.
    #[serde(default)]
    pub auto_stop: Option<AutoStopSpec>,
    /// Calls per second the service takes; more are answered 429.
    #[serde(default)]
    pub traffic_limit: Option<u32>,
    #[serde(default)]
    pub body_limit_mb: Option<u32>,
    #[serde(default)]
    pub call_timeout_seconds: Option<u32>,
    /// Whether apps bound to it may call it (the seed's AUTH-04); off unless said.
    #[serde(default)]
    pub app_auth: bool,
    /// Version routing rules (the seed's Custom Settings, `rules.rs`), in order.
    #[serde(default)]
    pub custom_settings: Vec<CustomSetting>,
}

/// `PATCH /v1/services/{service}`: what is given replaces what the service has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<ModelChoice>>,
    #[serde(default)]
    pub auto_stop: Option<AutoStopSpec>,
    #[serde(default)]
    pub traffic_limit: Option<Option<u32>>,
    #[serde(default)]
    pub body_limit_mb: Option<u32>,
    #[serde(default)]
    pub call_timeout_seconds: Option<u32>,
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    #[serde(default)]
    pub app_auth: Option<bool>,
    /// Replaces the rules; `[]` removes them.
    #[serde(default)]
    pub custom_settings: Option<Vec<CustomSetting>>,
}

/// One model version of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    /// The model: its id, or your model's name.
    pub model: String,
    pub version: String,
    /// Its share of the calls in percent; the shares sum to 100 (one version: 100).
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub instances: Option<u32>,
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    /// The flavor of each instance (a container or process engine's); the gateway's default
    /// flavor when absent. Built-in engine versions run in the gateway's process.
    #[serde(default)]
    pub flavor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoStopSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub hours: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A service's settings as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub models: Vec<VersionSpec>,
    pub timeout_minutes: u32,
    /// Seconds after each start; none: off.
    pub auto_stop_seconds: Option<u64>,
    pub traffic_limit: Option<u32>,
    pub body_limit_bytes: u64,
    pub call_timeout_ms: u64,
    /// Apps bound to the service may call it.
    #[serde(default)]
    pub app_auth: bool,
    #[serde(default)]
    pub custom_settings: Vec<CustomSetting>,
}

/// One model version as a service runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSpec {
    pub model_id: String,
    pub model: String,
    pub version_id: String,
    pub version: String,
    pub weight: u32,
    pub instances: u32,
    pub envs: BTreeMap<String, String>,
    /// `builtin` (ONNX, in the gateway) or `container` (a container or process engine).
    #[serde(default)]
    pub engine: EngineKind,
    /// The instances' flavor (container and process engines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
}

/// Where a version runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The built-in ONNX engine, in the gateway's process.
    #[default]
    Builtin,
    /// A container (docker backend) or process (process backend) engine: the model's own
    /// server on port 8080.
    Container,
}

/// Service names: 1-64 of `A-Z a-z 0-9 - _`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?}; 1-64 of A-Z a-z 0-9 - _, starting with a letter or digit"
        ))
    }
}

pub fn check_description(d: &str) -> Result<(), String> {
    if d.chars().count() > 512 {
        return Err("description: at most 512 characters".into());
    }
    Ok(())
}

/// A bounded number with its default: `field` names it in the error.
pub fn bounded(
    field: &str,
    value: Option<u32>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, String> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(format!("{field}: {v}; between {min} and {max}"));
    }
    Ok(v)
}

/// The auto-stop of a request: on for 1 hour unless it says otherwise.
pub fn auto_stop_seconds(
    spec: Option<&AutoStopSpec>,
    hour_secs: u64,
) -> Result<Option<u64>, String> {
    let (default, min, max) = AUTO_STOP_HOURS;
    match spec {
        None => Ok(Some(u64::from(default) * hour_secs)),
        Some(a) if !a.enabled => {
            if a.hours.is_some() {
                return Err("auto_stop: hours with enabled false".into());
            }
            Ok(None)
        }
        Some(a) => {
            let h = bounded("auto_stop.hours", a.hours, default, min, max)?;
            Ok(Some(u64::from(h) * hour_secs))
        }
    }
}

/// The versions' weights: one version takes 100 unless given; several must each be given
/// and sum to 100 (the seed's rule).
pub fn weights(models: &[ModelChoice]) -> Result<Vec<u32>, String> {
    if models.is_empty() {
        return Err("models: at least one model version".into());
    }
    if models.len() > MAX_VERSIONS {
        return Err(format!("models: at most {MAX_VERSIONS} versions"));
    }
    if models.len() == 1 {
        let w = models[0].weight.unwrap_or(100);
        if w != 100 {
            return Err(format!(
                "models[0].weight: {w}; a single version takes all the traffic (100)"
            ));
        }
        return Ok(vec![100]);
    }
    let mut out = Vec::with_capacity(models.len());
    for (i, m) in models.iter().enumerate() {
        let Some(w) = m.weight else {
            return Err(format!(
                "models[{i}].weight: required when a service runs several versions"
            ));
        };
        if w > 100 {
            return Err(format!("models[{i}].weight: {w}; at most 100"));
        }
        out.push(w);
    }
    let sum: u32 = out.iter().sum();
    if sum != 100 {
        return Err(format!(
            "models: the weights sum to {sum}; the traffic ratios must sum to 100"
        ));
    }
    Ok(out)
}

/// Environment variables: names as a shell takes them, values without NUL, bounded.
pub fn check_envs(i: usize, envs: &BTreeMap<String, String>) -> Result<(), String> {
    if envs.len() > MAX_ENVS {
        return Err(format!("models[{i}].envs: at most {MAX_ENVS} variables"));
    }
    for (k, v) in envs {
        let ok = !k.is_empty()
            && k.len() <= 128
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !k.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(format!(
                "models[{i}].envs: {k:?} is not a variable name (A-Z a-z 0-9 _, not starting with a digit)"
            ));
        }
        if v.len() > 4096 || v.contains('\0') {
            return Err(format!("models[{i}].envs.{k}: at most 4096 bytes, no NUL"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(weight: Option<u32>) -> ModelChoice {
        ModelChoice {
            model: "m".into(),
            version: "0.0.1".into(),
            weight,
            instances: None,
            envs: BTreeMap::new(),
            flavor: None,
        }
    }

    #[test]
    fn weights_follow_the_seed() {
        assert_eq!(weights(&[choice(None)]).unwrap(), [100]);
        assert_eq!(weights(&[choice(Some(100))]).unwrap(), [100]);
        assert!(weights(&[choice(Some(80))]).is_err());
        assert_eq!(
            weights(&[choice(Some(80)), choice(Some(20))]).unwrap(),
            [80, 20]
        );
        let e = weights(&[choice(Some(80)), choice(Some(30))]).unwrap_err();
        assert!(e.contains("sum to 110"), "{e}");
        assert!(weights(&[choice(Some(80)), choice(None)]).is_err());
        assert!(weights(&[]).is_err());
    }

    #[test]
    fn auto_stop_is_on_for_an_hour_unless_said() {
        assert_eq!(auto_stop_seconds(None, 3600).unwrap(), Some(3600));
        let off = AutoStopSpec {
            enabled: false,
            hours: None,
        };
        assert_eq!(auto_stop_seconds(Some(&off), 3600).unwrap(), None);
        let six = AutoStopSpec {
            enabled: true,
            hours: Some(6),
        };
        assert_eq!(auto_stop_seconds(Some(&six), 3600).unwrap(), Some(6 * 3600));
        let bad = AutoStopSpec {
            enabled: true,
            hours: Some(25),
        };
        assert!(auto_stop_seconds(Some(&bad), 3600).is_err());
    }

    #[test]
    fn names_and_envs() {
        assert!(check_name("iris-svc_1").is_ok());
        for bad in ["", "a b", "-a", &"a".repeat(65), "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let mut envs = BTreeMap::new();
        envs.insert("OMP_NUM_THREADS".to_string(), "1".to_string());
        assert!(check_envs(0, &envs).is_ok());
        envs.insert("1BAD".to_string(), "x".to_string());
        assert!(check_envs(0, &envs).is_err());
    }
}
