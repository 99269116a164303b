//! Settings: one TOML tree, overridden by `ATELIER_*` environment variables, overridden by
//! flags. Read once at start; [`Settings::load`] validates and the rest of the gateway trusts
//! the result.
//!
//! Fixed names operators and scripts depend on: `ATELIER_CONFIG` (the TOML file),
//! `ATELIER_DATA_DIR` (all state), `ATELIER_HTTP_ADDR` (default `127.0.0.1:8000`),
//! `ATELIER_SSH_ADDR` (default `127.0.0.1:2222`, or `off`), `ATELIER_SSH_PORTS`,
//! `ATELIER_ADMIN_TOKEN` (the admin's API token on first start), `ATELIER_JUPYTER_VENV`,
//! `ATELIER_SANDBOX`, `ATELIER_LOG` (tracing filter), `ATELIER_LOG_FORMAT` (`text`|`json`),
//! `ATELIER_BACKEND` (`process`|`docker`|`slurm`), `ATELIER_DOCKER_HOST`, `ATELIER_REGISTRY`,
//! `ATELIER_PUBLIC_URL` (the console's URL in browsers), `ATELIER_NOTEBOOK_DOMAIN` and
//! `ATELIER_NOTEBOOK_ORIGIN` (where browsers open notebooks), `ATELIER_TUNNEL_ADDR` and
//! `ATELIER_TUNNEL_PUBLIC_ADDR` (the connect-back tunnel; off by default),
//! `ATELIER_SLURM_CONF`, `ATELIER_SLURM_SHARED_DIR`, `ATELIER_SLURM_PARTITION`,
//! `ATELIER_SLURM_ACCOUNT`, `ATELIER_SLURM_QOS` (the slurm backend).

// The one place the gateway reads its environment.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Flags of `atelier serve`; each wins over the environment and the file.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML settings file (env ATELIER_CONFIG).
    #[arg(long, env = "ATELIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding all state (env ATELIER_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP front door (env ATELIER_HTTP_ADDR).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Address of the SSH front door, or `off` (env ATELIER_SSH_ADDR).
    #[arg(long, value_parser = parse_ssh_addr)]
    pub ssh_addr: Option<SshAddr>,
}

/// Where the SSH front door listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshAddr {
    Off,
    On(SocketAddr),
}

fn parse_ssh_addr(v: &str) -> Result<SshAddr, String> {
    match v.trim() {
        "off" | "" => Ok(SshAddr::Off),
        a => a
            .parse()
            .map(SshAddr::On)
            .map_err(|_| format!("{v:?} is not an address like 127.0.0.1:2222 (or `off`)")),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// All state: the database, notebook work dirs, the JupyterLab environment.
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    /// The SSH front door (notebook name or id as the user name); `None`: off. In TOML:
    /// `ssh_addr = "127.0.0.1:2222"` or `ssh_addr = "off"`.
    #[serde(with = "ssh_addr_serde")]
    pub ssh_addr: Option<SocketAddr>,
    /// Ports (`first-last`) from which each notebook with SSH on gets one of its own, on the
    /// SSH front door's IP, with user `ma-user` (env ATELIER_SSH_PORTS; `off`: none).
    #[serde(with = "port_range_serde")]
    pub ssh_ports: Option<(u16, u16)>,
    /// The admin's API token, used only when the database is created.
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// The key that seals stored secrets (object storage secret keys): 64 hex digits or
    /// base64 of 32 bytes (env ATELIER_SECRET_KEY). Unset: `<data dir>/secret.key`,
    /// created on first start.
    #[serde(skip_serializing)]
    pub secret_key: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Lifetime of a browser session.
    pub session_hours: u32,
    /// The URL browsers reach the console (`/login`, `/v1`) at, `scheme://host[:port]` (env
    /// ATELIER_PUBLIC_URL); default `http://<http_addr>`. Cookie-authenticated writes must
    /// come from this origin; `https` makes the cookies `Secure` with the `__Host-` prefix.
    pub public_url: Option<String>,
    /// The DNS name under which each notebook gets an origin of its own in browsers,
    /// `{id}.<notebook_domain>` on the public URL's scheme and port (env
    /// ATELIER_NOTEBOOK_DOMAIN). `*.localhost` resolves to loopback in browsers; elsewhere a
    /// wildcard DNS record (`*.nb.example.com`) points at the gateway.
    pub notebook_domain: String,
    /// Where browsers open notebooks (env ATELIER_NOTEBOOK_ORIGIN): `subdomain` (their own
    /// origin, the default) or `path` (`/nb/{id}/` on the console's origin with the session
    /// cookie, so a notebook page's JavaScript can act as its viewer; warned at start).
    pub notebook_origin: NotebookOrigin,
    /// What `public_url` and `notebook_domain` become after validation.
    #[serde(skip)]
    pub origins: Origins,
    /// Warning before any automatic stop, in seconds (env ATELIER_STOP_WARNING).
    pub stop_warning_secs: u64,
    /// How many seconds one hour of an auto-stop lease (notebooks, services) or of a training
    /// job's auto stop lasts (env ATELIER_LEASE_HOUR): 3600; less only for tests and demos.
    pub lease_hour_secs: u64,
    /// How many seconds one minute of a service's deploy timeout lasts (env
    /// ATELIER_DEPLOY_MINUTE): 60; less only for tests.
    pub deploy_minute_secs: u64,
    /// Whether workflow schedules may have a 6th, leading seconds field (env
    /// ATELIER_CRON_SECONDS=true): off; on only for tests and demos (announced at start).
    pub cron_seconds: bool,
    /// Idle timeout in seconds for notebooks that do not set their own (env
    /// ATELIER_IDLE_TIMEOUT); 0: no idle stops.
    pub idle_timeout_secs: u64,
    /// CPU use of a notebook's processes, in percent of one CPU, above which it counts as
    /// working (env ATELIER_IDLE_CPU_PERCENT).
    pub idle_cpu_percent: f64,
    /// GPU use (SM utilisation, percent) of any of a notebook's processes above which it
    /// counts as working (env ATELIER_IDLE_GPU_PERCENT); read where NVML is present.
    pub idle_gpu_percent: f64,
    pub quota: Quota,
    pub backend: BackendSettings,
    pub flavors: Vec<Flavor>,
    pub images: Vec<Image>,
    /// Saving a notebook as an image is refused above this container size, in GB (env
    /// ATELIER_SAVE_IMAGE_MAX_GB; seed: 35).
    pub save_image_max_gb: f64,
    /// … and when the image would have more layers than this (env
    /// ATELIER_SAVE_IMAGE_MAX_LAYERS; seed: 125).
    pub save_image_max_layers: u32,
    /// Where saved notebook images are pushed (`127.0.0.1:5000/atelier`; env
    /// ATELIER_REGISTRY); none: images are saved in the engine only.
    pub registry: Option<String>,
    pub plugins: PluginSettings,
    /// ONNX Runtime's shared library, which the built-in ONNX engine loads
    /// (`libonnxruntime.so`, as the `onnxruntime` wheel ships it; env
    /// ATELIER_ONNXRUNTIME_LIB; `scripts/serve.sh` finds one). None: ONNX models cannot be
    /// served (a deploy says so).
    pub onnxruntime_lib: Option<PathBuf>,
    pub batch: BatchSettings,
    pub training: TrainingSettings,
    /// Whether webhooks may call loopback, private and link-local addresses (env
    /// ATELIER_WEBHOOK_ALLOW_PRIVATE=true): off, so a user's webhook cannot reach the
    /// gateway's own network; on for a gateway whose receivers are on its network.
    pub webhook_allow_private: bool,
    /// The most connections the gateway keeps open to one instance of a container or
    /// process engine, shared by all calls to it; calls beyond wait for one (env
    /// ATELIER_ENGINE_CONNECTIONS; default 32).
    pub engine_connections: usize,
    /// The connect-back tunnel: where runtimes on other machines (a Slurm node) dial the
    /// gateway (`[tunnel]` in TOML; off by default).
    pub tunnel: TunnelSettings,
    /// The Slurm cluster of `backend.kind = "slurm"` (`[slurm]` in TOML).
    pub slurm: SlurmSettings,
}

/// Where and how notebooks run on a Slurm cluster (`[slurm]` in TOML).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSettings {
    /// The cluster's `slurm.conf` for Slurm's commands (env ATELIER_SLURM_CONF, else
    /// SLURM_CONF); `None`: Slurm's default.
    pub conf: Option<PathBuf>,
    /// Where `sbatch`, `scontrol` and `scancel` are; `None`: `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// A directory every compute node sees at this same path (NFS, Lustre, …): notebooks'
    /// work dirs and run dirs (env ATELIER_SLURM_SHARED_DIR). `None`:
    /// `<data_dir>/slurm`, which only a cluster whose nodes are this host sees.
    pub shared_dir: Option<PathBuf>,
    /// The partition, account and QoS of a notebook's job when its flavor names none (env
    /// ATELIER_SLURM_PARTITION, ATELIER_SLURM_ACCOUNT, ATELIER_SLURM_QOS); `None`: the
    /// cluster's defaults.
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
}
/// The connect-back tunnel's listener (`[tunnel]` in TOML).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// Where the tunnel listens for runtimes (env ATELIER_TUNNEL_ADDR: an address like
    /// `0.0.0.0:7443`, or `off`); `None`: off.
    pub listen: Option<SocketAddr>,
    /// The `host:port` runtimes dial, when it is not `listen` (env
    /// ATELIER_TUNNEL_PUBLIC_ADDR); needed when `listen` is `0.0.0.0` or `[::]`.
    pub public_address: Option<String>,
}

/// Training jobs (`[training]` in TOML).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSettings {
    /// The Python environment a job without an image runs in on the process backend (a
    /// virtualenv with the job's frameworks: PyTorch, …; env ATELIER_TRAINING_VENV). None:
    /// the notebooks' JupyterLab virtualenv.
    pub venv: Option<PathBuf>,
    /// Training jobs a user may have, in any status (env ATELIER_TRAINING_QUOTA).
    pub jobs_per_user: u32,
    /// Hyperparameter searches a user may have, in any status (env
    /// ATELIER_TRAINING_SEARCH_QUOTA).
    pub searches_per_user: u32,
    /// Jobs running at once on this gateway; more wait PENDING (env
    /// ATELIER_TRAINING_RUNNING).
    pub running_jobs: u32,
    /// The shortest hang detection a job may ask for, in seconds: the seed's 10 minutes
    /// (`MA_HANG_DETECT_TIME` is 10-720 minutes); lower only for tests (env
    /// ATELIER_TRAINING_MIN_HANG_SECS).
    pub min_hang_secs: u64,
    /// Bytes of one worker's log kept per attempt (env ATELIER_TRAINING_LOG_MB, in MiB).
    pub log_mb: u64,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        TrainingSettings {
            venv: None,
            jobs_per_user: 100,
            searches_per_user: 50,
            running_jobs: 8,
            min_hang_secs: 600,
            log_mb: 64,
        }
    }
}

/// Batch services (`[batch]` in TOML).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Lines of one output manifest; a job with more results writes
    /// `infer-result-{task_id}_1.manifest`, `_2`, … of this many lines each (env
    /// ATELIER_BATCH_MANIFEST_LINES).
    pub manifest_lines: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        // The seed splits "large jobs" without a number: 1,000 lines keeps a manifest
        // near 200 KB, easy to open and to page through.
        BatchSettings {
            manifest_lines: 1000,
        }
    }
}

/// Wasm plugins: defaults for plugins whose manifest sets no limits, and the most a manifest
/// may ask for (`[plugins]` in TOML; env `ATELIER_PLUGIN_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Memory of one instance, all linear memories together (default; env
    /// ATELIER_PLUGIN_MEMORY_MB) and the most a manifest may set (ATELIER_PLUGIN_MAX_MEMORY_MB).
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    /// Wall-clock time of one call (ATELIER_PLUGIN_TIMEOUT_MS, ATELIER_PLUGIN_MAX_TIMEOUT_MS).
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// Size of a call's result and of its kept logs (ATELIER_PLUGIN_OUTPUT_KB,
    /// ATELIER_PLUGIN_MAX_OUTPUT_KB).
    pub default_output_kb: u64,
    pub max_output_kb: u64,
    /// Instances of one plugin running at once; more calls queue
    /// (ATELIER_PLUGIN_CONCURRENCY, ATELIER_PLUGIN_MAX_CONCURRENCY).
    pub default_concurrency: u32,
    pub max_concurrency: u32,
    /// Instances alive at once across all plugins (ATELIER_PLUGIN_INSTANCES).
    pub total_instances: u32,
    /// Never-called instances each `fresh` plugin keeps ready once called, so that a call
    /// does not wait for instantiation (ATELIER_PLUGIN_STANDBY; 0 turns it off).
    pub standby_instances: u32,
    /// The largest component accepted (ATELIER_PLUGIN_MAX_COMPONENT_MB).
    pub max_component_mb: u64,
    /// The largest model file set uploaded with an inference processor, in MB
    /// (ATELIER_PLUGIN_MAX_FILES_MB).
    pub max_files_mb: u64,
    /// Where components and their compiled forms are kept, by digest (ATELIER_PLUGIN_CACHE_DIR);
    /// default: `<data_dir>/plugins/cache`. A directory shared by several gateways is never
    /// pruned by one of them.
    pub cache_dir: Option<PathBuf>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        let h = atelier_plugins::HostSettings::default();
        PluginSettings {
            default_memory_mb: h.default_memory_mb,
            max_memory_mb: h.max_memory_mb,
            default_timeout_ms: h.default_timeout_ms,
            max_timeout_ms: h.max_timeout_ms,
            default_output_kb: h.default_output_kb,
            max_output_kb: h.max_output_kb,
            default_concurrency: h.default_concurrency,
            max_concurrency: h.max_concurrency,
            total_instances: h.total_instances,
            standby_instances: h.standby_instances,
            max_component_mb: h.max_component_mb,
            max_files_mb: 64,
            cache_dir: None,
        }
    }
}

impl PluginSettings {
    pub fn host_settings(&self) -> atelier_plugins::HostSettings {
        atelier_plugins::HostSettings {
            default_memory_mb: self.default_memory_mb,
            max_memory_mb: self.max_memory_mb,
            default_timeout_ms: self.default_timeout_ms,
            max_timeout_ms: self.max_timeout_ms,
            default_output_kb: self.default_output_kb,
            max_output_kb: self.max_output_kb,
            default_concurrency: self.default_concurrency,
            max_concurrency: self.max_concurrency,
            total_instances: self.total_instances,
            standby_instances: self.standby_instances,
            max_component_mb: self.max_component_mb,
            shared_cache: self.cache_dir.is_some(),
            ..Default::default()
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn num<T: std::str::FromStr>(
            env: &dyn Fn(&str) -> Option<String>,
            key: &str,
            slot: &mut T,
        ) -> anyhow::Result<()> {
            if let Some(v) = env(key) {
                *slot = v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{key}={v:?} is not a whole number"))?;
            }
            Ok(())
        }
        num(env, "ATELIER_PLUGIN_MEMORY_MB", &mut self.default_memory_mb)?;
        num(env, "ATELIER_PLUGIN_MAX_MEMORY_MB", &mut self.max_memory_mb)?;
        num(
            env,
            "ATELIER_PLUGIN_TIMEOUT_MS",
            &mut self.default_timeout_ms,
        )?;
        num(
            env,
            "ATELIER_PLUGIN_MAX_TIMEOUT_MS",
            &mut self.max_timeout_ms,
        )?;
        num(env, "ATELIER_PLUGIN_OUTPUT_KB", &mut self.default_output_kb)?;
        num(env, "ATELIER_PLUGIN_MAX_OUTPUT_KB", &mut self.max_output_kb)?;
        num(
            env,
            "ATELIER_PLUGIN_CONCURRENCY",
            &mut self.default_concurrency,
        )?;
        num(
            env,
            "ATELIER_PLUGIN_MAX_CONCURRENCY",
            &mut self.max_concurrency,
        )?;
        num(env, "ATELIER_PLUGIN_INSTANCES", &mut self.total_instances)?;
        num(env, "ATELIER_PLUGIN_STANDBY", &mut self.standby_instances)?;
        num(
            env,
            "ATELIER_PLUGIN_MAX_COMPONENT_MB",
            &mut self.max_component_mb,
        )?;
        num(env, "ATELIER_PLUGIN_MAX_FILES_MB", &mut self.max_files_mb)?;
        if let Some(v) = env("ATELIER_PLUGIN_CACHE_DIR") {
            self.cache_dir = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        let pairs = [
            ("memory_mb", self.default_memory_mb, self.max_memory_mb, 16),
            (
                "timeout_ms",
                self.default_timeout_ms,
                self.max_timeout_ms,
                10,
            ),
            ("output_kb", self.default_output_kb, self.max_output_kb, 1),
            (
                "concurrency",
                u64::from(self.default_concurrency),
                u64::from(self.max_concurrency),
                1,
            ),
        ];
        for (name, default, max, min) in pairs {
            if default < min || default > max {
                bail!(
                    "plugins.default_{name} ({default}) must be between {min} and plugins.max_{name} ({max})"
                );
            }
        }
        if self.max_memory_mb > 65_536 {
            bail!("plugins.max_memory_mb must be at most 65536");
        }
        if !(1..=10_000).contains(&self.total_instances) {
            bail!("plugins.total_instances (ATELIER_PLUGIN_INSTANCES) must be between 1 and 10000");
        }
        if self.standby_instances > 8 {
            bail!("plugins.standby_instances (ATELIER_PLUGIN_STANDBY) must be between 0 and 8");
        }
        if !(1..=2048).contains(&self.max_component_mb) {
            bail!("plugins.max_component_mb must be between 1 and 2048");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// The seed's per-account limit (spec/notebook.md §4.1): 10 notebooks in any status.
    pub notebooks_per_user: u32,
    /// Real-time services a user may have, in any status (seed 9.4.2: 20; env
    /// ATELIER_SERVICE_QUOTA).
    pub services_per_user: u32,
    /// Batch services a user may have, in any status (seed 9.5: 1,000; env
    /// ATELIER_BATCH_QUOTA).
    pub batch_services_per_user: u32,
    /// Workflows a user may have (env ATELIER_WORKFLOW_QUOTA; the seed sets none).
    pub workflows_per_user: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Child processes on this machine (the embedded default).
    Process,
    /// Every notebook routes to one existing HTTP server (benchmarks, attaching a server
    /// that runs elsewhere).
    External,
    /// A container per notebook, through the Docker Engine API (Docker, or Podman's
    /// Docker-compatible service).
    Docker,
    /// A Slurm job per notebook on a cluster (`backends::slurm`); its runtime connects back
    /// through the tunnel (`[tunnel]`), its files are on `slurm.shared_dir`.
    Slurm,
}

/// Where browsers open notebooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotebookOrigin {
    /// `{id}.<notebook_domain>`: an origin per notebook, logged in with a one-time ticket.
    Subdomain,
    /// `/nb/{id}/` on the console's origin, with the console's session cookie.
    Path,
}

/// The origins browsers see, validated: the console's, and how notebooks' are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// `http` or `https`.
    scheme: &'static str,
    /// The console's host (lowercase; an IPv6 address in brackets).
    host: String,
    /// The public URL's port when it names one that is not the scheme's default.
    port: Option<u16>,
    /// Lowercase DNS name, no trailing dot.
    notebook_domain: String,
}

impl Default for Origins {
    fn default() -> Self {
        Origins {
            scheme: "http",
            host: "127.0.0.1".into(),
            port: Some(8000),
            notebook_domain: "nb.localhost".into(),
        }
    }
}

impl Origins {
    /// Validates a public URL (`http[s]://host[:port][/]`, nothing else) and a notebook domain.
    pub fn new(public_url: &str, notebook_domain: &str) -> anyhow::Result<Origins> {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "public_url (ATELIER_PUBLIC_URL) {public_url:?}: {why}; expected scheme://host[:port] like https://atelier.example.com"
            )
        };
        let uri: http::Uri = public_url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("the console is served at the root: no path or query"));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = authority.port_u16().filter(|p| *p != default_port);
        let domain = notebook_domain.to_ascii_lowercase();
        if !is_dns_name(&domain) {
            bail!(
                "notebook_domain (ATELIER_NOTEBOOK_DOMAIN) {notebook_domain:?} must be a DNS name like nb.example.com (labels of a-z, 0-9 and '-', no port, no trailing dot)"
            );
        }
        // The console must not look like one of the notebooks' hosts.
        if host == domain || host.ends_with(&format!(".{domain}")) {
            bail!(
                "the console's host {host:?} (ATELIER_PUBLIC_URL) is inside notebook_domain {domain:?} (ATELIER_NOTEBOOK_DOMAIN); notebooks need a domain of their own"
            );
        }
        Ok(Origins {
            scheme,
            host,
            port,
            notebook_domain: domain,
        })
    }

    /// Over https: cookies are `Secure` and named with the `__Host-` prefix.
    pub fn secure(&self) -> bool {
        self.scheme == "https"
    }

    fn port_suffix(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    /// The console's origin as browsers send it in `Origin`: `http://127.0.0.1:8000`.
    pub fn console(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.port_suffix())
    }

    /// The origin notebook `id` is served at in browsers: `http://{id}.nb.localhost:8000`.
    pub fn notebook(&self, id: &str) -> String {
        format!(
            "{}://{id}.{}{}",
            self.scheme,
            self.notebook_domain,
            self.port_suffix()
        )
    }

    /// The DNS name notebooks' hosts end in (after a dot).
    pub fn notebook_domain(&self) -> &str {
        &self.notebook_domain
    }
}

/// Lowercase DNS name: dot-separated labels of 1-63 `a-z0-9-`, not starting or ending with
/// `-`; at most 200 characters, so that `{36-character id}.` fits in a host name.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Use bubblewrap when it is installed and works.
    Auto,
    /// Require bubblewrap.
    Bwrap,
    /// No confinement.
    None,
}

/// The network of a sandboxed or container notebook: its own namespace either way (no route
/// to the host, the gateway or other notebooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Outgoing connections to the outside world: through a user-mode network (pasta) for
    /// process notebooks, a bridge of its own behind the host's firewall for containers.
    Egress,
    /// Only the notebook's own loopback.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    pub kind: BackendKind,
    /// Python virtualenv holding `jupyter-lab`; created on first need when missing.
    /// Default `<data_dir>/jupyter-venv`.
    pub jupyter_venv: Option<PathBuf>,
    /// Interpreter used to create that virtualenv.
    pub python: String,
    /// What `pip install` gets when the gateway creates the virtualenv.
    pub jupyterlab_requirement: String,
    /// The `atelier-notebook-runtime` binary; default: next to the `atelier` binary.
    pub runtime_bin: Option<PathBuf>,
    pub sandbox: SandboxMode,
    /// What network a sandboxed process notebook or a container has beyond its own loopback
    /// (ATELIER_NOTEBOOK_NETWORK).
    pub network: NetworkMode,
    /// How long a notebook may take to answer after it is launched.
    pub start_timeout_secs: u64,
    /// SIGTERM to SIGKILL.
    pub stop_grace_secs: u64,
    /// For `kind = "external"`: base URL of the server every notebook routes to.
    pub external_url: Option<String>,
    /// For `kind = "external"`: the token that server expects (sent upstream, never to clients).
    pub external_token: Option<String>,
    /// For `kind = "docker"`: the engine's socket or URL (`unix:///run/podman/podman.sock`,
    /// `tcp://…`); default `DOCKER_HOST`, else Docker's socket, else Podman's.
    pub docker_host: Option<String>,
    /// For `kind = "docker"`: a statically linked `atelier-notebook-runtime`, the containers'
    /// entrypoint; default: found next to the `atelier` binary (see backends::docker).
    pub container_runtime_bin: Option<PathBuf>,
    /// Size of a new notebook's work disk, in GB (the seed's default EVS size: 5).
    pub work_disk_gb: u32,
    /// `rclone`, which serves object-storage mounts in notebooks (ATELIER_RCLONE_BIN);
    /// default: found on `PATH`.
    pub rclone_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub vcpus: u32,
    pub memory_gib: u32,
    /// Accelerators a notebook of this flavor gets (GPUs for `gpu`, NPUs for `npu`); default
    /// 1 for those types, 0 for `cpu`.
    #[serde(default)]
    pub accelerators: Option<u32>,
    /// Processes and threads a notebook of this flavor may have at once (cgroup `pids.max`;
    /// containers' pids limit): a fork bomb stops there. Default [`Flavor::DEFAULT_MAX_PIDS`].
    #[serde(default)]
    pub max_pids: Option<u32>,
    #[serde(default)]
    pub description: String,
    /// Where notebooks of this flavor run; `None`: `backend.kind`. One gateway runs its
    /// default backend and `slurm` side by side (small notebooks here, big ones on the
    /// cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// Its Slurm jobs' partition, account and QoS (else `[slurm]`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<FlavorSlurm>,
}

/// A flavor's place on the Slurm cluster (`[flavors.slurm]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlavorSlurm {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub qos: Option<String>,
}

impl Flavor {
    /// The backend its notebooks run on.
    pub fn backend_or(&self, default: BackendKind) -> BackendKind {
        self.backend.unwrap_or(default)
    }

    /// Enough for JupyterLab, a few kernels and their thread pools (PyTorch starts a thread
    /// per core); Podman's default limit is 2048.
    pub const DEFAULT_MAX_PIDS: u32 = 4096;

    pub fn pids(&self) -> u32 {
        self.max_pids.unwrap_or(Self::DEFAULT_MAX_PIDS)
    }

    /// How many GPUs (type `gpu`) or NPUs (type `npu`) a notebook of this flavor gets.
    pub fn accelerator_count(&self) -> u32 {
        match self.kind.as_str() {
            "cpu" => 0,
            _ => self.accelerators.unwrap_or(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub id: String,
    /// For the docker backend: the image reference in the engine or a registry
    /// (`localhost/atelier-notebook:1`); default: the id.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl BackendKind {
    /// As in settings and messages.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Process => "process",
            BackendKind::External => "external",
            BackendKind::Docker => "docker",
            BackendKind::Slurm => "slurm",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: default_data_dir(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            ssh_addr: Some(SocketAddr::from(([127, 0, 0, 1], 2222))),
            ssh_ports: Some((30000, 32767)),
            admin_token: None,
            secret_key: None,
            log_format: "text".into(),
            session_hours: 24 * 7,
            public_url: None,
            notebook_domain: "nb.localhost".into(),
            notebook_origin: NotebookOrigin::Subdomain,
            origins: Origins::default(),
            stop_warning_secs: 300,
            lease_hour_secs: 3600,
            deploy_minute_secs: 60,
            idle_timeout_secs: 0,
            idle_cpu_percent: 10.0,
            idle_gpu_percent: 10.0,
            quota: Quota::default(),
            backend: BackendSettings::default(),
            flavors: vec![
                Flavor {
                    id: "cpu-2-8".into(),
                    kind: "cpu".into(),
                    vcpus: 2,
                    memory_gib: 8,
                    accelerators: None,
                    max_pids: None,
                    description:
                        "2vCPUs 8GB: general-purpose, for data exploration and experiments".into(),
                    backend: None,
                    slurm: None,
                },
                Flavor {
                    id: "cpu-8-32".into(),
                    kind: "cpu".into(),
                    vcpus: 8,
                    memory_gib: 32,
                    accelerators: None,
                    max_pids: None,
                    description: "8vCPUs 32GB: for compute-intensive work".into(),
                    backend: None,
                    slurm: None,
                },
            ],
            images: vec![Image {
                id: "jupyterlab".into(),
                reference: None,
                description: "JupyterLab 4 with Python 3".into(),
            }],
            registry: None,
            save_image_max_gb: 35.0,
            save_image_max_layers: 125,
            plugins: PluginSettings::default(),
            onnxruntime_lib: None,
            batch: BatchSettings::default(),
            training: TrainingSettings::default(),
            webhook_allow_private: false,
            engine_connections: 32,
            tunnel: TunnelSettings::default(),
            slurm: SlurmSettings::default(),
            cron_seconds: false,
        }
    }
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            notebooks_per_user: 10,
            services_per_user: 20,
            batch_services_per_user: 1000,
            workflows_per_user: 100,
        }
    }
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            kind: BackendKind::Process,
            jupyter_venv: None,
            python: "python3".into(),
            jupyterlab_requirement: "jupyterlab>=4.2,<5".into(),
            runtime_bin: None,
            sandbox: SandboxMode::Auto,
            network: NetworkMode::Egress,
            start_timeout_secs: 180,
            stop_grace_secs: 10,
            external_url: None,
            external_token: None,
            docker_host: None,
            container_runtime_bin: None,
            work_disk_gb: 5,
            rclone_bin: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        PathBuf::from(xdg).join("atelier")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".local/share/atelier")
    } else {
        PathBuf::from(".atelier")
    }
}

/// Where a setting's environment override is read from; a closure so tests need not touch
/// the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Settings {
    /// File, then environment, then flags; then validation.
    pub fn load(args: &ServeArgs, env: EnvLookup<'_>) -> anyhow::Result<Settings> {
        let mut settings = match &args.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        settings.apply_env(env)?;
        if let Some(dir) = &args.data_dir {
            settings.data_dir = dir.clone();
        }
        if let Some(addr) = args.http_addr {
            settings.http_addr = addr;
        }
        match args.ssh_addr {
            Some(SshAddr::On(a)) => settings.ssh_addr = Some(a),
            Some(SshAddr::Off) => settings.ssh_addr = None,
            None => {}
        }
        settings.validate()?;
        Ok(settings)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading settings file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("settings file {}", path.display()))
    }

    fn apply_env(&mut self, env: EnvLookup<'_>) -> anyhow::Result<()> {
        if let Some(v) = env("ATELIER_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("ATELIER_HTTP_ADDR") {
            self.http_addr = v.parse().with_context(|| {
                format!("ATELIER_HTTP_ADDR={v:?} is not an address like 127.0.0.1:8000")
            })?;
        }
        if let Some(v) = env("ATELIER_SSH_ADDR") {
            self.ssh_addr = match parse_ssh_addr(&v) {
                Ok(SshAddr::On(a)) => Some(a),
                Ok(SshAddr::Off) => None,
                Err(e) => bail!("ATELIER_SSH_ADDR={e}"),
            };
        }
        if let Some(v) = env("ATELIER_TUNNEL_ADDR") {
            self.tunnel.listen = match v.trim() {
                "off" | "" => None,
                a => Some(a.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "ATELIER_TUNNEL_ADDR={v:?} is not an address like 0.0.0.0:7443 (or `off`)"
                    )
                })?),
            };
        }
        if let Some(v) = env("ATELIER_TUNNEL_PUBLIC_ADDR") {
            let v = v.trim();
            self.tunnel.public_address = (!v.is_empty()).then(|| v.to_owned());
        }
        if let Some(v) = env("ATELIER_SSH_PORTS") {
            self.ssh_ports =
                parse_port_range(&v).map_err(|e| anyhow::anyhow!("ATELIER_SSH_PORTS={e}"))?;
        }
        if let Some(v) = env("ATELIER_ADMIN_TOKEN") {
            self.admin_token = Some(v);
        }
        if let Some(v) = env("ATELIER_SECRET_KEY") {
            self.secret_key = Some(v);
        }
        if let Some(v) = env("ATELIER_JUPYTER_VENV") {
            self.backend.jupyter_venv = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ATELIER_RUNTIME_BIN") {
            self.backend.runtime_bin = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ATELIER_BACKEND") {
            self.backend.kind = match v.as_str() {
                "process" => BackendKind::Process,
                "docker" => BackendKind::Docker,
                "external" => BackendKind::External,
                "slurm" => BackendKind::Slurm,
                other => bail!("ATELIER_BACKEND={other:?}: expected process, docker or slurm"),
            };
        }
        if let Some(v) = env("ATELIER_SLURM_CONF").or_else(|| env("SLURM_CONF")) {
            self.slurm.conf = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env("ATELIER_SLURM_SHARED_DIR") {
            self.slurm.shared_dir = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        for (name, field) in [
            ("ATELIER_SLURM_PARTITION", &mut self.slurm.partition),
            ("ATELIER_SLURM_ACCOUNT", &mut self.slurm.account),
            ("ATELIER_SLURM_QOS", &mut self.slurm.qos),
        ] {
            if let Some(v) = env(name) {
                *field = (!v.trim().is_empty()).then(|| v.trim().to_owned());
            }
        }
        if let Some(v) = env("ATELIER_DOCKER_HOST") {
            self.backend.docker_host = Some(v);
        }
        // Docker's own variable, where Atelier's names no engine.
        if self.backend.docker_host.is_none()
            && let Some(v) = env("DOCKER_HOST").filter(|v| !v.is_empty())
        {
            self.backend.docker_host = Some(v);
        }
        if let Some(v) = env("ATELIER_CONTAINER_RUNTIME_BIN") {
            self.backend.container_runtime_bin = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ATELIER_RCLONE_BIN") {
            self.backend.rclone_bin = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ATELIER_REGISTRY") {
            self.registry = Some(v);
        }
        if let Some(v) = env("ATELIER_ONNXRUNTIME_LIB") {
            self.onnxruntime_lib = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = env("ATELIER_SERVICE_QUOTA") {
            self.quota.services_per_user = v.trim().parse().with_context(|| {
                format!("ATELIER_SERVICE_QUOTA={v:?} is not a number of services")
            })?;
        }
        if let Some(v) = env("ATELIER_BATCH_QUOTA") {
            self.quota.batch_services_per_user = v.trim().parse().with_context(|| {
                format!("ATELIER_BATCH_QUOTA={v:?} is not a number of batch services")
            })?;
        }
        if let Some(v) = env("ATELIER_WORKFLOW_QUOTA") {
            self.quota.workflows_per_user = v.trim().parse().with_context(|| {
                format!("ATELIER_WORKFLOW_QUOTA={v:?} is not a number of workflows")
            })?;
        }
        if let Some(v) = env("ATELIER_ENGINE_CONNECTIONS") {
            self.engine_connections = v.trim().parse().with_context(|| {
                format!("ATELIER_ENGINE_CONNECTIONS={v:?} is not a number of connections")
            })?;
        }
        if let Some(v) = env("ATELIER_WEBHOOK_ALLOW_PRIVATE") {
            self.webhook_allow_private = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                other => anyhow::bail!("ATELIER_WEBHOOK_ALLOW_PRIVATE={other:?}: true or false"),
            };
        }
        if let Some(v) = env("ATELIER_CRON_SECONDS") {
            self.cron_seconds = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                other => anyhow::bail!("ATELIER_CRON_SECONDS={other:?}: true or false"),
            };
        }
        if let Some(v) = env("ATELIER_TRAINING_VENV") {
            self.training.venv = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        for (name, field) in [
            ("ATELIER_TRAINING_QUOTA", &mut self.training.jobs_per_user),
            (
                "ATELIER_TRAINING_SEARCH_QUOTA",
                &mut self.training.searches_per_user,
            ),
            ("ATELIER_TRAINING_RUNNING", &mut self.training.running_jobs),
        ] {
            if let Some(v) = env(name) {
                *field = v
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}={v:?} is not a number of jobs"))?;
            }
        }
        if let Some(v) = env("ATELIER_TRAINING_MIN_HANG_SECS") {
            self.training.min_hang_secs = v.trim().parse().with_context(|| {
                format!("ATELIER_TRAINING_MIN_HANG_SECS={v:?} is not a number of seconds")
            })?;
        }
        if let Some(v) = env("ATELIER_TRAINING_LOG_MB") {
            self.training.log_mb = v
                .trim()
                .parse()
                .with_context(|| format!("ATELIER_TRAINING_LOG_MB={v:?} is not a number of MiB"))?;
        }
        if let Some(v) = env("ATELIER_BATCH_MANIFEST_LINES") {
            self.batch.manifest_lines = v.trim().parse().with_context(|| {
                format!("ATELIER_BATCH_MANIFEST_LINES={v:?} is not a number of lines")
            })?;
        }
        if let Some(v) = env("ATELIER_SAVE_IMAGE_MAX_GB") {
            self.save_image_max_gb = v.parse().with_context(|| {
                format!("ATELIER_SAVE_IMAGE_MAX_GB={v:?} is not a number of GB")
            })?;
        }
        self.plugins.apply_env(env)?;
        if let Some(v) = env("ATELIER_SAVE_IMAGE_MAX_LAYERS") {
            self.save_image_max_layers = v.parse().with_context(|| {
                format!("ATELIER_SAVE_IMAGE_MAX_LAYERS={v:?} is not a whole number")
            })?;
        }
        if let Some(v) = env("ATELIER_SANDBOX") {
            self.backend.sandbox = match v.as_str() {
                "auto" => SandboxMode::Auto,
                "bwrap" => SandboxMode::Bwrap,
                "none" => SandboxMode::None,
                other => bail!("ATELIER_SANDBOX={other:?}: expected auto, bwrap or none"),
            };
        }
        if let Some(v) = env("ATELIER_NOTEBOOK_NETWORK") {
            self.backend.network = match v.as_str() {
                "egress" => NetworkMode::Egress,
                "none" => NetworkMode::None,
                other => bail!("ATELIER_NOTEBOOK_NETWORK={other:?}: expected egress or none"),
            };
        }
        if let Some(v) = env("ATELIER_PUBLIC_URL") {
            self.public_url = (!v.trim().is_empty()).then(|| v.trim().to_owned());
        }
        if let Some(v) = env("ATELIER_NOTEBOOK_DOMAIN") {
            self.notebook_domain = v.trim().to_owned();
        }
        if let Some(v) = env("ATELIER_NOTEBOOK_ORIGIN") {
            self.notebook_origin = match v.trim() {
                "subdomain" => NotebookOrigin::Subdomain,
                "path" => NotebookOrigin::Path,
                other => {
                    bail!("ATELIER_NOTEBOOK_ORIGIN={other:?}: expected subdomain or path")
                }
            };
        }
        if let Some(v) = env("ATELIER_LOG_FORMAT") {
            self.log_format = v;
        }
        if let Some(v) = env("ATELIER_STOP_WARNING") {
            self.stop_warning_secs = v.parse().with_context(|| {
                format!("ATELIER_STOP_WARNING={v:?} is not a number of seconds")
            })?;
        }
        if let Some(v) = env("ATELIER_IDLE_TIMEOUT") {
            self.idle_timeout_secs = v.parse().with_context(|| {
                format!("ATELIER_IDLE_TIMEOUT={v:?} is not a number of seconds (0: off)")
            })?;
        }
        if let Some(v) = env("ATELIER_IDLE_CPU_PERCENT") {
            self.idle_cpu_percent = v.parse().with_context(|| {
                format!("ATELIER_IDLE_CPU_PERCENT={v:?} is not a number (percent of one CPU)")
            })?;
        }
        if let Some(v) = env("ATELIER_IDLE_GPU_PERCENT") {
            self.idle_gpu_percent = v.parse().with_context(|| {
                format!("ATELIER_IDLE_GPU_PERCENT={v:?} is not a number (percent of a GPU)")
            })?;
        }
        if let Some(v) = env("ATELIER_LEASE_HOUR") {
            self.lease_hour_secs = v
                .parse()
                .with_context(|| format!("ATELIER_LEASE_HOUR={v:?} is not a number of seconds"))?;
        }
        if let Some(v) = env("ATELIER_DEPLOY_MINUTE") {
            self.deploy_minute_secs = v.parse().with_context(|| {
                format!("ATELIER_DEPLOY_MINUTE={v:?} is not a number of seconds")
            })?;
        }
        Ok(())
    }

    fn validate(&mut self) -> anyhow::Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        if self.data_dir.is_relative() {
            let cwd = std::env::current_dir().context("current directory")?;
            self.data_dir = cwd.join(&self.data_dir);
        }
        if let Some(listen) = self.tunnel.listen {
            let public = self.tunnel.public_address.as_deref();
            if public.is_none() && listen.ip().is_unspecified() {
                bail!(
                    "the tunnel listens on {listen}, which runtimes on other machines cannot dial: set tunnel.public_address (ATELIER_TUNNEL_PUBLIC_ADDR) to the host:port they reach the gateway at"
                );
            }
            if let Some(p) = public {
                let ok = p.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n != 0)
                });
                if !ok {
                    bail!(
                        "tunnel.public_address (ATELIER_TUNNEL_PUBLIC_ADDR) {p:?} must be host:port with a port from 1 to 65535"
                    );
                }
            }
        }
        let kinds: std::collections::BTreeSet<&'static str> = std::iter::once(self.backend.kind)
            .chain(self.flavors.iter().filter_map(|f| f.backend))
            .map(BackendKind::name)
            .collect();
        if kinds.len() > 2 || (kinds.len() == 2 && !kinds.contains("slurm")) {
            bail!(
                "flavors ask for the backends {}: one gateway runs its default backend (backend.kind) and, beside it, slurm",
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        if kinds.contains("external") && kinds.len() > 1 {
            bail!("the external backend runs no other beside it");
        }
        for f in &self.flavors {
            let words = f.slurm.iter().flat_map(|s| {
                [
                    ("partition", &s.partition),
                    ("account", &s.account),
                    ("qos", &s.qos),
                ]
            });
            for (what, v) in words.chain([
                ("partition", &self.slurm.partition),
                ("account", &self.slurm.account),
                ("qos", &self.slurm.qos),
            ]) {
                if let Some(v) = v
                    && (v.is_empty()
                        || v.len() > 64
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                {
                    bail!(
                        "Slurm {what} {v:?} (flavor {} or [slurm]): letters, digits, '_', '-' and '.' only",
                        f.id
                    );
                }
            }
        }
        if kinds.contains("slurm") && self.tunnel.listen.is_none() {
            bail!(
                "the slurm backend reaches notebooks through the connect-back tunnel: set tunnel.listen (ATELIER_TUNNEL_ADDR) to an address the compute nodes can dial"
            );
        }
        if let Some(d) = &self.slurm.shared_dir
            && d.is_relative()
        {
            bail!(
                "slurm.shared_dir (ATELIER_SLURM_SHARED_DIR) {} must be an absolute path, the same on every node",
                d.display()
            );
        }
        if self.engine_connections == 0 {
            bail!("engine_connections (ATELIER_ENGINE_CONNECTIONS) must be at least 1");
        }
        if self.training.running_jobs == 0 {
            bail!("training.running_jobs (ATELIER_TRAINING_RUNNING) must be at least 1");
        }
        if !(1..=43_200).contains(&self.training.min_hang_secs) {
            bail!(
                "training.min_hang_secs (ATELIER_TRAINING_MIN_HANG_SECS) must be between 1 and 43200"
            );
        }
        if !(1..=4096).contains(&self.training.log_mb) {
            bail!("training.log_mb (ATELIER_TRAINING_LOG_MB) must be between 1 and 4096");
        }
        if self.batch.manifest_lines == 0 {
            bail!("batch.manifest_lines (ATELIER_BATCH_MANIFEST_LINES) must be at least 1");
        }
        if !(self.idle_cpu_percent.is_finite() && self.idle_cpu_percent > 0.0) {
            bail!("idle_cpu_percent (ATELIER_IDLE_CPU_PERCENT) must be a positive number");
        }
        if !(self.idle_gpu_percent.is_finite()
            && self.idle_gpu_percent > 0.0
            && self.idle_gpu_percent <= 100.0)
        {
            bail!(
                "idle_gpu_percent (ATELIER_IDLE_GPU_PERCENT) must be a number above 0 and at most 100"
            );
        }
        if self.lease_hour_secs == 0 {
            bail!("lease_hour_secs (ATELIER_LEASE_HOUR) must be at least 1 second");
        }
        if self.deploy_minute_secs == 0 {
            bail!("deploy_minute_secs (ATELIER_DEPLOY_MINUTE) must be at least 1 second");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format {:?}: expected text or json", self.log_format);
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            bail!("ATELIER_ADMIN_TOKEN must be at least 16 characters");
        }
        if self.flavors.is_empty() {
            bail!("at least one [[flavors]] entry is needed");
        }
        if self.images.is_empty() {
            bail!("at least one [[images]] entry is needed");
        }
        let mut seen = HashSet::new();
        for f in &self.flavors {
            if !seen.insert(&f.id) {
                bail!("flavor {:?} is defined twice", f.id);
            }
            if f.max_pids.is_some_and(|p| p < 64) {
                bail!(
                    "flavor {:?}: max_pids must be at least 64 (JupyterLab alone needs a few dozen)",
                    f.id
                );
            }
            if f.vcpus == 0 || f.memory_gib == 0 {
                bail!("flavor {:?}: vcpus and memory_gib must be at least 1", f.id);
            }
            if !matches!(f.kind.as_str(), "cpu" | "gpu" | "npu") {
                bail!(
                    "flavor {:?}: type {:?} must be cpu, gpu or npu",
                    f.id,
                    f.kind
                );
            }
        }
        let mut seen = HashSet::new();
        for i in &self.images {
            if !seen.insert(&i.id) {
                bail!("image {:?} is defined twice", i.id);
            }
        }
        if self.backend.kind == BackendKind::External && self.backend.external_url.is_none() {
            bail!("backend.kind = \"external\" needs backend.external_url");
        }
        if !(self.save_image_max_gb.is_finite() && self.save_image_max_gb > 0.0) {
            bail!("save_image_max_gb (ATELIER_SAVE_IMAGE_MAX_GB) must be a positive number");
        }
        self.plugins.validate()?;
        if self.save_image_max_layers == 0 {
            bail!("save_image_max_layers (ATELIER_SAVE_IMAGE_MAX_LAYERS) must be at least 1");
        }
        if let Some(r) = &self.registry
            && (r.is_empty() || r.contains("://") || r.ends_with('/'))
        {
            bail!(
                "registry (ATELIER_REGISTRY) {r:?} must look like host:port/namespace, without a scheme"
            );
        }
        if !(1..=4096).contains(&self.backend.work_disk_gb) {
            bail!("backend.work_disk_gb must be between 1 and 4096");
        }
        if self.backend.start_timeout_secs == 0 {
            bail!("backend.start_timeout_secs must be at least 1");
        }
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr));
        self.origins = Origins::new(&public_url, &self.notebook_domain)?;
        Ok(())
    }

    pub fn jupyter_venv(&self) -> PathBuf {
        self.backend
            .jupyter_venv
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jupyter-venv"))
    }

    pub fn default_flavor(&self) -> &Flavor {
        &self.flavors[0]
    }

    pub fn default_image(&self) -> &Image {
        &self.images[0]
    }
}

/// `30000-32767`, or `off` / empty for none.
fn parse_port_range(v: &str) -> Result<Option<(u16, u16)>, String> {
    let t = v.trim();
    if t == "off" || t.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{v:?} is not a port range like 30000-32767 (or `off`)");
    let (a, b) = t.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

mod port_range_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<(u16, u16)>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some((a, b)) => s.serialize_str(&format!("{a}-{b}")),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u16, u16)>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_port_range(&text).map_err(serde::de::Error::custom)
    }
}

/// `ssh_addr` in TOML: an address, or `"off"`.
mod ssh_addr_serde {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        match super::parse_ssh_addr(&text).map_err(serde::de::Error::custom)? {
            super::SshAddr::On(a) => Ok(Some(a)),
            super::SshAddr::Off => Ok(None),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_validate() {
        let s = Settings::load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.quota.notebooks_per_user, 10);
        assert_eq!(s.default_flavor().id, "cpu-2-8");
    }

    #[test]
    fn flags_win_over_env() {
        let args = ServeArgs {
            http_addr: Some("127.0.0.1:9001".parse().unwrap()),
            data_dir: Some("/srv/a".into()),
            ..Default::default()
        };
        let env = env_of(&[
            ("ATELIER_HTTP_ADDR", "127.0.0.1:9000"),
            ("ATELIER_DATA_DIR", "/srv/b"),
        ]);
        let s = Settings::load(&args, &env).unwrap();
        assert_eq!(s.http_addr.port(), 9001);
        assert_eq!(s.data_dir, PathBuf::from("/srv/a"));
        let s = Settings::load(&ServeArgs::default(), &env).unwrap();
        assert_eq!(s.http_addr.port(), 9000);
        assert_eq!(s.data_dir, PathBuf::from("/srv/b"));
    }

    #[test]
    fn the_slurm_backend_needs_the_tunnel_and_reads_its_cluster() {
        let load = |pairs: &'static [(&'static str, &'static str)]| {
            Settings::load(&ServeArgs::default(), &env_of(pairs))
        };
        let e = load(&[("ATELIER_BACKEND", "slurm")]).unwrap_err();
        assert!(format!("{e:#}").contains("ATELIER_TUNNEL_ADDR"), "{e:#}");
        let s = load(&[
            ("ATELIER_BACKEND", "slurm"),
            ("ATELIER_TUNNEL_ADDR", "127.0.0.1:7443"),
            ("SLURM_CONF", "/etc/slurm/other.conf"),
            ("ATELIER_SLURM_PARTITION", " gpu "),
            ("ATELIER_SLURM_SHARED_DIR", "/shared/atelier"),
        ])
        .unwrap();
        assert_eq!(s.backend.kind, BackendKind::Slurm);
        assert_eq!(s.slurm.conf, Some(PathBuf::from("/etc/slurm/other.conf")));
        assert_eq!(s.slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(s.slurm.shared_dir, Some(PathBuf::from("/shared/atelier")));
        // Atelier's own name wins over Slurm's.
        let s = load(&[("ATELIER_SLURM_CONF", "/a.conf"), ("SLURM_CONF", "/b.conf")]).unwrap();
        assert_eq!(s.slurm.conf, Some(PathBuf::from("/a.conf")));
        let e = load(&[("ATELIER_SLURM_SHARED_DIR", "rel/dir")]).unwrap_err();
        assert!(format!("{e:#}").contains("absolute"), "{e:#}");
        let e = load(&[("ATELIER_BACKEND", "kubernetes")]).unwrap_err();
        assert!(
            format!("{e:#}").contains("process, docker or slurm"),
            "{e:#}"
        );
    }

    #[test]
    fn flavors_may_run_on_slurm_beside_the_default_backend() {
        let check = |toml: &str| {
            let mut s: Settings = toml::from_str(toml).unwrap();
            s.validate().map(|_| s)
        };
        const BIG: &str = "[[flavors]]\nid = \"small\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 1\n\
            [[flavors]]\nid = \"big\"\ntype = \"gpu\"\nvcpus = 16\nmemory_gib = 64\n\
            backend = \"slurm\"\nslurm = { partition = \"gpu\", account = \"ml-team\" }\n";
        let e = check(BIG).unwrap_err();
        assert!(format!("{e:#}").contains("tunnel.listen"), "{e:#}");
        let s = check(&format!("[tunnel]\nlisten = \"127.0.0.1:7443\"\n{BIG}")).unwrap();
        assert_eq!(s.flavors[1].backend_or(s.backend.kind), BackendKind::Slurm);
        assert_eq!(
            s.flavors[0].backend_or(s.backend.kind),
            BackendKind::Process
        );
        assert_eq!(
            s.flavors[1].slurm.as_ref().unwrap().account.as_deref(),
            Some("ml-team")
        );
        // Two backends beside slurm, or two without it: refused, naming them.
        let e = check(&format!(
            "[tunnel]\nlisten = \"127.0.0.1:7443\"\n{BIG}[[flavors]]\nid = \"c\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 1\nbackend = \"docker\"\n"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("docker, process, slurm"), "{e:#}");
        let e = check("[[flavors]]\nid = \"c\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 1\nbackend = \"docker\"\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("docker, process"), "{e:#}");
        // What reaches sbatch is checked here first.
        let bad = BIG.replace("ml-team", "ml team;rm");
        let e = check(&format!("[tunnel]\nlisten = \"127.0.0.1:7443\"\n{bad}")).unwrap_err();
        assert!(format!("{e:#}").contains("\"ml team;rm\""), "{e:#}");
    }

    #[test]
    fn the_tunnel_is_off_by_default_and_needs_a_public_address_on_a_wildcard() {
        let load = |pairs: &'static [(&'static str, &'static str)]| {
            Settings::load(&ServeArgs::default(), &env_of(pairs)).map(|s| s.tunnel)
        };
        assert_eq!(load(&[]).unwrap(), TunnelSettings::default());
        let t = load(&[("ATELIER_TUNNEL_ADDR", "127.0.0.1:7443")]).unwrap();
        assert_eq!(t.listen, Some("127.0.0.1:7443".parse().unwrap()));
        let t = load(&[("ATELIER_TUNNEL_ADDR", "off")]).unwrap();
        assert_eq!(t.listen, None);
        let e = load(&[("ATELIER_TUNNEL_ADDR", "7443")]).unwrap_err();
        assert!(format!("{e:#}").contains("ATELIER_TUNNEL_ADDR"), "{e:#}");
        let e = load(&[("ATELIER_TUNNEL_ADDR", "0.0.0.0:7443")]).unwrap_err();
        assert!(
            format!("{e:#}").contains("ATELIER_TUNNEL_PUBLIC_ADDR"),
            "{e:#}"
        );
        let t = load(&[
            ("ATELIER_TUNNEL_ADDR", "0.0.0.0:7443"),
            ("ATELIER_TUNNEL_PUBLIC_ADDR", "gw.cluster:7443"),
        ])
        .unwrap();
        assert_eq!(t.public_address.as_deref(), Some("gw.cluster:7443"));
        let e = load(&[
            ("ATELIER_TUNNEL_ADDR", "0.0.0.0:7443"),
            ("ATELIER_TUNNEL_PUBLIC_ADDR", "gw.cluster"),
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("host:port"), "{e:#}");
        let file: Settings = toml::from_str("[tunnel]\nlisten = \"127.0.0.1:7443\"\n").unwrap();
        assert_eq!(file.tunnel.listen.map(|a| a.port()), Some(7443));
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("ATELIER_HTTP_ADDR", "nope")], "ATELIER_HTTP_ADDR"),
            (&[("ATELIER_SANDBOX", "docker")], "ATELIER_SANDBOX"),
            (&[("ATELIER_ADMIN_TOKEN", "short")], "ATELIER_ADMIN_TOKEN"),
            (&[("ATELIER_SSH_ADDR", "2222")], "ATELIER_SSH_ADDR"),
            (&[("ATELIER_SSH_PORTS", "9-3")], "ATELIER_SSH_PORTS"),
        ];
        for (pairs, needle) in cases {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let env = move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let err = Settings::load(&ServeArgs::default(), &env).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
    }

    #[test]
    fn the_ssh_front_door_can_move_or_be_off() {
        let s = Settings::load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(s.ssh_addr, Some("127.0.0.1:2222".parse().unwrap()));
        let env = env_of(&[("ATELIER_SSH_ADDR", "0.0.0.0:2022")]);
        let s = Settings::load(&ServeArgs::default(), &env).unwrap();
        assert_eq!(s.ssh_addr, Some("0.0.0.0:2022".parse().unwrap()));
        let args = ServeArgs {
            ssh_addr: Some(SshAddr::Off),
            ..Default::default()
        };
        assert_eq!(Settings::load(&args, &env).unwrap().ssh_addr, None);
        let s = Settings::load(
            &ServeArgs::default(),
            &env_of(&[("ATELIER_SSH_ADDR", "off")]),
        );
        assert_eq!(s.unwrap().ssh_addr, None);
        let file: Settings = toml::from_str("ssh_addr = \"off\"\n").unwrap();
        assert_eq!(file.ssh_addr, None);
        let file: Settings = toml::from_str("ssh_addr = \"127.0.0.1:2200\"\n").unwrap();
        assert_eq!(file.ssh_addr.map(|a| a.port()), Some(2200));
        assert!(toml::from_str::<Settings>("ssh_addr = \"x\"\n").is_err());
        assert_eq!(parse_port_range("30000-30010"), Ok(Some((30000, 30010))));
        assert_eq!(parse_port_range("off"), Ok(None));
        for bad in ["30000", "a-b", "0-10", "10-9", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn browser_origins() {
        let s = Settings::load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(s.origins.console(), "http://127.0.0.1:8000");
        assert_eq!(s.origins.notebook("ab-1"), "http://ab-1.nb.localhost:8000");
        assert!(!s.origins.secure());
        assert_eq!(s.notebook_origin, NotebookOrigin::Subdomain);
        // The default follows the HTTP address.
        let s = Settings::load(
            &ServeArgs::default(),
            &env_of(&[("ATELIER_HTTP_ADDR", "[::1]:9000")]),
        )
        .unwrap();
        assert_eq!(s.origins.console(), "http://[::1]:9000");
        let s = Settings::load(
            &ServeArgs::default(),
            &env_of(&[
                ("ATELIER_PUBLIC_URL", "HTTPS://Atelier.Example.com:443/"),
                ("ATELIER_NOTEBOOK_DOMAIN", "NB.Example.NET"),
                ("ATELIER_NOTEBOOK_ORIGIN", "path"),
            ]),
        )
        .unwrap();
        assert_eq!(s.origins.console(), "https://atelier.example.com");
        assert_eq!(s.origins.notebook("x"), "https://x.nb.example.net");
        assert!(s.origins.secure());
        assert_eq!(s.notebook_origin, NotebookOrigin::Path);
        let o = Origins::new("http://gw.example:8080", "nb.gw.example").unwrap();
        assert_eq!(o.notebook("x"), "http://x.nb.gw.example:8080");

        let bad_urls = [
            "ftp://x.example",
            "x.example",
            "http://user@x.example",
            "http://x.example/atelier",
            "http://x.example/?a=1",
            "http://",
        ];
        for url in bad_urls {
            let err = Origins::new(url, "nb.localhost").unwrap_err();
            assert!(
                format!("{err:#}").contains("ATELIER_PUBLIC_URL"),
                "{url}: {err:#}"
            );
        }
        for domain in [
            "",
            "nb.localhost:80",
            "-nb.localhost",
            "nb..localhost",
            "nb.localhost.",
            "n_b.x",
            "*.nb.x",
        ] {
            let err = Origins::new("http://127.0.0.1:8000", domain).unwrap_err();
            assert!(
                format!("{err:#}").contains("ATELIER_NOTEBOOK_DOMAIN"),
                "{domain:?}: {err:#}"
            );
        }
        // A console inside the notebook domain would be taken for a notebook's host.
        for url in ["http://nb.localhost:8000", "http://x.nb.localhost:8000"] {
            let err = Origins::new(url, "nb.localhost").unwrap_err();
            assert!(format!("{err:#}").contains("inside"), "{url}: {err:#}");
        }
        let err = Settings::load(
            &ServeArgs::default(),
            &env_of(&[("ATELIER_NOTEBOOK_ORIGIN", "iframe")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("ATELIER_NOTEBOOK_ORIGIN"),
            "{err:#}"
        );
    }

    #[test]
    fn file_rejects_unknown_fields() {
        let err = toml::from_str::<Settings>("data_dir = \"/x\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let s: Settings = toml::from_str(
            "[quota]\nnotebooks_per_user = 3\n[[flavors]]\nid = \"g1\"\ntype = \"gpu\"\nvcpus = 8\nmemory_gib = 64\n",
        )
        .unwrap();
        assert_eq!(s.quota.notebooks_per_user, 3);
        assert_eq!(s.flavors.len(), 1);
    }
}
