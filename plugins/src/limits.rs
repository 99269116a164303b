//! Per-plugin limits, the host's settings (defaults and upper bounds) and the typed errors
//! calls end with.

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// How a plugin's calls get instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancePolicy {
    /// A new instance from the pooling allocator for every call (strongest isolation).
    Fresh,
    /// A few live instances per plugin and tenant, reused for sequential calls and recycled
    /// after `recycle_after_calls` calls, after a trap, or past `recycle_memory_mb`.
    Warm,
}

/// The limits a plugin's manifest may set. Missing fields take the host's defaults; values
/// above the host's bounds are refused at registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub output_kb: Option<u64>,
    pub concurrency: Option<u32>,
    pub instance_policy: Option<InstancePolicy>,
    pub warm_instances: Option<u32>,
    pub recycle_after_calls: Option<u64>,
    pub recycle_memory_mb: Option<u64>,
    pub deterministic: Option<bool>,
}

/// Limits in force for one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// All linear memories of an instance together.
    pub memory_mb: u64,
    /// Wall-clock time of one call (for an inference request: preprocess and postprocess each).
    pub timeout_ms: u64,
    /// The size of a call's result (strings, bytes, tensor data), and of the log and
    /// stdout/stderr kept per call.
    pub output_kb: u64,
    /// Instances of this plugin running at once; further calls queue.
    pub concurrency: u32,
    pub instance_policy: InstancePolicy,
    /// Idle warm instances kept per tenant.
    pub warm_instances: u32,
    pub recycle_after_calls: u64,
    pub recycle_memory_mb: u64,
    /// Where determinism matters: the wall clock reads 1970-01-01T00:00:00Z and random
    /// numbers come from a seed fixed by the component's digest (monotonic clocks stay real).
    #[serde(default)]
    pub deterministic: bool,
}

impl Limits {
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb * MIB
    }
    pub fn output_bytes(&self) -> u64 {
        self.output_kb * 1024
    }
}

/// The host's settings: defaults for plugins that set nothing, and the most a manifest may
/// ask for.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub default_output_kb: u64,
    pub max_output_kb: u64,
    pub default_concurrency: u32,
    pub max_concurrency: u32,
    /// Component instances alive at once across all plugins (pooling allocator slots).
    pub total_instances: u32,
    /// The largest component accepted at registration.
    pub max_component_mb: u64,
    /// The largest object a call may read or write through `storage`.
    pub max_object_mb: u64,
    /// Native stack of a call; deeper recursion traps as a stack overflow.
    pub max_wasm_stack_kb: usize,
    /// Never-called instances each `fresh` plugin keeps ready once it has been called, made
    /// off the call path (0: every call instantiates).
    pub standby_instances: u32,
    /// The cache directory is shared with other hosts: deleting a plugin leaves its files.
    pub shared_cache: bool,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            default_memory_mb: 512,
            max_memory_mb: 4096,
            default_timeout_ms: 30_000,
            max_timeout_ms: 3_600_000,
            default_output_kb: 16 * 1024,
            max_output_kb: 256 * 1024,
            default_concurrency: 4,
            max_concurrency: 64,
            total_instances: 256,
            max_component_mb: 128,
            max_object_mb: 256,
            max_wasm_stack_kb: 1024,
            standby_instances: 1,
            shared_cache: false,
        }
    }
}

impl HostSettings {
    /// The limits for a plugin of `world` with the manifest's `spec`, or what is out of bounds.
    pub fn resolve(&self, world: crate::World, spec: &LimitsSpec) -> Result<Limits, String> {
        fn bounded(
            name: &str,
            value: Option<u64>,
            default: u64,
            min: u64,
            max: u64,
            setting: &str,
        ) -> Result<u64, String> {
            let v = value.unwrap_or(default);
            if v < min || v > max {
                return Err(format!(
                    "limits.{name} is {v}; it must be between {min} and {max} (the upper bound is the gateway setting {setting})"
                ));
            }
            Ok(v)
        }
        let memory_mb = bounded(
            "memory_mb",
            spec.memory_mb,
            self.default_memory_mb,
            16,
            self.max_memory_mb,
            "ATELIER_PLUGIN_MAX_MEMORY_MB",
        )?;
        let timeout_ms = bounded(
            "timeout_ms",
            spec.timeout_ms,
            self.default_timeout_ms,
            10,
            self.max_timeout_ms,
            "ATELIER_PLUGIN_MAX_TIMEOUT_MS",
        )?;
        let output_kb = bounded(
            "output_kb",
            spec.output_kb,
            self.default_output_kb,
            1,
            self.max_output_kb,
            "ATELIER_PLUGIN_MAX_OUTPUT_KB",
        )?;
        let concurrency = bounded(
            "concurrency",
            spec.concurrency.map(u64::from),
            u64::from(self.default_concurrency),
            1,
            u64::from(self.max_concurrency),
            "ATELIER_PLUGIN_MAX_CONCURRENCY",
        )? as u32;
        let instance_policy = spec.instance_policy.unwrap_or(match world {
            crate::World::InferenceProcessor => InstancePolicy::Warm,
            _ => InstancePolicy::Fresh,
        });
        let warm_instances = bounded(
            "warm_instances",
            spec.warm_instances.map(u64::from),
            u64::from(concurrency),
            1,
            u64::from(concurrency),
            "limits.concurrency",
        )? as u32;
        let recycle_after_calls = bounded(
            "recycle_after_calls",
            spec.recycle_after_calls,
            10_000,
            1,
            u64::MAX,
            "-",
        )?;
        let recycle_memory_mb = bounded(
            "recycle_memory_mb",
            spec.recycle_memory_mb,
            memory_mb * 3 / 4,
            1,
            memory_mb,
            "limits.memory_mb",
        )?;
        Ok(Limits {
            memory_mb,
            timeout_ms,
            output_kb,
            concurrency,
            instance_policy,
            warm_instances,
            recycle_after_calls,
            recycle_memory_mb,
            deterministic: spec.deterministic.unwrap_or(false),
        })
    }
}

/// Which limit a call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Memory,
    Timeout,
    Output,
    Stack,
    Table,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Timeout => "timeout",
            LimitKind::Output => "output",
            LimitKind::Stack => "stack",
            LimitKind::Table => "table",
        }
    }
}

/// How a call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallError {
    /// A limit stopped the call. `limit` and `observed` are in `unit`.
    #[error("the plugin hit its {} limit ({limit} {unit}; observed {observed} {unit}); {hint}", kind.as_str())]
    Limit {
        kind: LimitKind,
        limit: u64,
        observed: u64,
        unit: String,
        hint: String,
    },
    /// The guest trapped (a Rust panic, `unreachable`, an uncaught Python exception, a
    /// bad memory access).
    #[error("the plugin trapped: {message}")]
    Trap { message: String },
    /// The guest returned an error.
    #[error("the plugin returned an error ({kind}): {message}")]
    Guest { kind: String, message: String },
    /// The input could not be turned into the world's call.
    #[error("{message}")]
    BadInput { message: String },
    /// The host failed (instantiation, I/O).
    #[error("the plugin host failed: {message}")]
    Host { message: String },
}

impl CallError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        CallError::BadInput {
            message: message.into(),
        }
    }
    pub fn host(message: impl std::fmt::Display) -> Self {
        CallError::Host {
            message: message.to_string(),
        }
    }
}
