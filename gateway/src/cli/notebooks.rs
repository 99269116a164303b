//! `atelier notebook …` (alias `nb`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{Api, CliError, items};
use super::output::{err, out, print_json};
use super::prompt::{ask, stdin_is_terminal};
use super::table::{Table, cell, sanitize, short_time, text, time_secs};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_WAIT_SECS: u64 = 600;

#[derive(clap::Subcommand, Debug)]
pub enum NotebookCommand {
    /// List your notebooks, newest first (--all: everyone's, admins only).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create a notebook; it starts by itself.
    Create(Box<CreateArgs>),
    /// Show one notebook.
    Get(Target),
    /// Start a stopped or failed notebook.
    Start(StartArgs),
    /// Stop a running notebook.
    Stop(StartStopArgs),
    /// Delete a notebook and its files.
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Change a notebook's name, description, flavor or image.
    Update(UpdateArgs),
    /// Push a running notebook's auto-stop time back (by its auto-stop duration, or --hours).
    Renew(RenewArgs),
    /// Grow a running notebook's work disk (at most 100 GB more at a time, 4096 GB in all).
    Expand(ExpandArgs),
    /// Save a running notebook as an image (not its work disk or mounts); new notebooks can
    /// then be created from it (`--image NAMESPACE/NAME:TAG`).
    SaveImage(SaveImageArgs),
    /// Show a notebook's events, oldest first.
    Events(Target),
    /// Mount an object-storage folder at /data/NAME/ of a running notebook.
    Mount(MountArgs),
    /// Unmount /data/NAME/ of a notebook (the objects stay in the store).
    Unmount(UnmountArgs),
    /// List a notebook's object-storage mounts and their status.
    Mounts(Target),
    /// Upload a large file (up to 50 GB) into the work dir, staged through object storage.
    Upload(super::uploads::UploadArgs),
    /// List a notebook's staged uploads.
    Uploads(Target),
    /// Cancel a staged upload that has not landed.
    UploadCancel(super::uploads::CancelArgs),
    /// Print the notebook's URL to open in a browser.
    Open(Target),
    /// Print a ~/.ssh/config block for the notebook (VS Code Remote-SSH, PyCharm, ssh).
    SshConfig(SshConfigArgs),
}

#[derive(clap::Args, Debug)]
pub struct SshConfigArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The private key file [default: ~/.ssh/KEYPAIR.pem for the notebook's first key pair].
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<String>,
    /// The `Host` alias [default: the notebook's name].
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Everyone's notebooks (admins only).
    #[arg(long)]
    pub all: bool,
    /// Only notebooks in this status (e.g. RUNNING).
    #[arg(long)]
    pub status: Option<String>,
    /// Only notebooks whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only notebooks with this image.
    #[arg(long)]
    pub image: Option<String>,
    /// Only notebooks with this flavor.
    #[arg(long)]
    pub flavor: Option<String>,
    /// At most this many (1-500; server default 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Skip this many.
    #[arg(long)]
    pub offset: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Wait until the operation finishes (or fails), showing status changes on stderr.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds [default: 600].
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Notebook name (1-128 of [0-9A-Za-z_-]); generated when omitted.
    pub name: Option<String>,
    /// Free text, up to 512 characters.
    #[arg(long)]
    pub description: Option<String>,
    /// Flavor (see `atelier flavor list`); the default flavor when omitted.
    #[arg(long)]
    pub flavor: Option<String>,
    /// Image (see `atelier image list`); the default image when omitted.
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub auto_stop: AutoStopArgs,
    #[command(flatten)]
    pub ssh: SshArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Object storage chosen at create (`atelier storage connection` makes connections).
#[derive(clap::Args, Debug)]
pub struct StorageArgs {
    /// Work dir on an object-storage folder instead of a work disk: obs://BUCKET/FOLDER/.
    #[arg(long = "storage", value_name = "URI")]
    pub primary: Option<String>,
    /// An object-storage folder at PATH (at most 5; on the process backend /home/ma-user/work
    /// or below): PATH=URI, or PATH=URI,ro for read-only. Repeat for several.
    #[arg(long = "extended-storage", value_name = "PATH=URI[,ro]")]
    pub extended: Vec<String>,
    /// The storage connection for --storage and --extended-storage.
    #[arg(long, value_name = "NAME")]
    pub connection: Option<String>,
}

impl StorageArgs {
    /// (`storage`, `extended_storage`) of the create request.
    fn body(&self) -> Result<(Option<Value>, Option<Value>), CliError> {
        if self.primary.is_none() && self.extended.is_empty() {
            return Ok((None, None));
        }
        let Some(connection) = &self.connection else {
            return Err(CliError::other(
                "--storage and --extended-storage need --connection NAME (atelier storage connection list)",
            ));
        };
        let primary = self
            .primary
            .as_ref()
            .map(|uri| json!({"type": "obs", "uri": uri, "connection": connection}));
        let mut extended = Vec::new();
        for e in &self.extended {
            let Some((path, rest)) = e.split_once('=') else {
                return Err(CliError::other(format!(
                    "--extended-storage {e:?}: write PATH=URI, such as /home/ma-user/work/ds=obs://bucket/ds/"
                )));
            };
            let (uri, read_only) = match rest.strip_suffix(",ro") {
                Some(uri) => (uri, true),
                None => (rest, false),
            };
            extended.push(json!({
                "type": "obs",
                "path": path,
                "uri": uri,
                "connection": connection,
                "read_only": read_only,
            }));
        }
        Ok((
            primary,
            (!extended.is_empty()).then_some(Value::Array(extended)),
        ))
    }
}

/// SSH settings (key pairs: `atelier keypair`).
#[derive(clap::Args, Debug)]
pub struct SshArgs {
    /// Turn on SSH access (needs --key-pair). It cannot be turned off later.
    #[arg(long)]
    pub ssh: bool,
    /// A key pair that may log in over SSH; repeat for several. Replaces the list on update.
    #[arg(long = "key-pair", value_name = "NAME")]
    pub key_pairs: Vec<String>,
    /// An IP or CIDR that may connect over SSH (at most 5); repeat for several. Replaces the
    /// list on update; none: any address.
    #[arg(long = "whitelist", value_name = "IP_OR_CIDR")]
    pub whitelist: Vec<String>,
    /// Update only: empty the whitelist, so any address may connect.
    #[arg(long, conflicts_with = "whitelist")]
    pub clear_whitelist: bool,
}

impl SshArgs {
    /// The request's `ssh` object, or None when no SSH flag was given.
    fn body(&self) -> Option<Value> {
        let mut ssh = Map::new();
        if self.ssh {
            ssh.insert("enabled".into(), true.into());
        }
        if !self.key_pairs.is_empty() {
            ssh.insert("key_pairs".into(), json!(self.key_pairs));
        }
        if !self.whitelist.is_empty() || self.clear_whitelist {
            ssh.insert("whitelist".into(), json!(self.whitelist));
        }
        (!ssh.is_empty()).then_some(Value::Object(ssh))
    }
}

/// The auto-stop lease, at create and at start.
#[derive(clap::Args, Debug)]
pub struct AutoStopArgs {
    /// Stop the notebook after it has run this many hours (1-72; default 1), unless renewed.
    #[arg(long, value_name = "N", conflicts_with = "no_auto_stop")]
    pub auto_stop_hours: Option<u32>,
    /// Never stop the notebook automatically.
    #[arg(long)]
    pub no_auto_stop: bool,
}

impl AutoStopArgs {
    fn body(&self) -> Option<Value> {
        if self.no_auto_stop {
            Some(json!({"enabled": false, "duration_hours": 1}))
        } else {
            self.auto_stop_hours
                .map(|h| json!({"enabled": true, "duration_hours": h}))
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub base: StartStopArgs,
    /// Auto-stop for this run (the notebook keeps the choice).
    #[command(flatten)]
    pub auto_stop: AutoStopArgs,
}

#[derive(clap::Args, Debug)]
pub struct SaveImageArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// Image name (lowercase letters, digits, '.', '_', '-').
    #[arg(long)]
    pub name: String,
    /// Image tag.
    #[arg(long)]
    pub tag: String,
    /// Namespace: the notebook owner's user name (the default; no other is accepted).
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The folder under /data where it appears.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The folder in the store: obs://BUCKET/PATH/ or s3://BUCKET/PATH/.
    #[arg(value_name = "URI")]
    pub uri: String,
    /// One of your storage connections (atelier storage connection list).
    #[arg(long, short = 'c', value_name = "CONNECTION")]
    pub connection: String,
    /// Writes in the notebook fail with "Read-only file system".
    #[arg(long)]
    pub read_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct UnmountArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The mount's folder under /data.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct ExpandArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The work disk's new size in GB.
    #[arg(long, value_name = "GB")]
    pub size_gb: u32,
}

#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// How many hours to add (1-72; default: the notebook's auto-stop duration).
    #[arg(long, value_name = "N")]
    pub hours: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct StartStopArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description ("" to clear it).
    #[arg(long)]
    pub description: Option<String>,
    /// New flavor (only when STOPPED, RUNNING or START_FAILED).
    #[arg(long)]
    pub flavor: Option<String>,
    /// New image (only when STOPPED).
    #[arg(long)]
    pub image: Option<String>,
    /// SSH: turning it on and key pairs only when STOPPED; the whitelist any time.
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// What an ID_OR_NAME argument is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    /// A UUID, normalized to the lower-case hyphenated form.
    Id(String),
    Name(String),
}

/// A UUID in its usual 36-character hyphenated form is an ID; anything else is a name (notebook
/// names may contain hex digits and dashes, so other UUID spellings are not treated as IDs).
pub fn parse_id_or_name(arg: &str) -> Result<IdOrName, CliError> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(CliError::other("the notebook ID or name must not be empty"));
    }
    if arg.len() == 36
        && let Ok(id) = uuid::Uuid::try_parse(arg)
    {
        return Ok(IdOrName::Id(id.hyphenated().to_string()));
    }
    Ok(IdOrName::Name(arg.to_string()))
}

/// Picks the notebook whose name is exactly `name` among list items.
pub fn pick_by_name(name: &str, candidates: &[Value]) -> Result<String, CliError> {
    let matches: Vec<&str> = candidates
        .iter()
        .filter(|n| n.get("name").and_then(Value::as_str) == Some(name))
        .filter_map(|n| n.get("id").and_then(Value::as_str))
        .collect();
    match matches.as_slice() {
        [] => Err(CliError::other(format!(
            "no notebook named {:?} (see `atelier notebook list`)",
            sanitize(name)
        ))),
        [id] => Ok((*id).to_string()),
        many => Err(CliError::other(format!(
            "{} notebooks are named {:?}; use an ID: {}",
            many.len(),
            sanitize(name),
            sanitize(&many.join(", "))
        ))),
    }
}

/// The notebook ID for an ID_OR_NAME argument, plus the name when it was given.
async fn resolve(api: &Api, arg: &str) -> Result<(String, Option<String>), CliError> {
    let name = match parse_id_or_name(arg)? {
        IdOrName::Id(id) => return Ok((id, None)),
        IdOrName::Name(name) => name,
    };
    // `name=` matches substrings, so page through all candidates.
    let mut candidates = Vec::new();
    let mut offset: u64 = 0;
    loop {
        let query = [
            ("name", name.clone()),
            ("limit", "500".to_string()),
            ("offset", offset.to_string()),
        ];
        let reply = api.get(&["v1", "notebooks"], &query).await?;
        let page = items(&reply.value)?;
        offset += page.len() as u64;
        candidates.extend(page.iter().cloned());
        let total = reply.value.get("total").and_then(Value::as_u64);
        if page.is_empty() || total.is_none_or(|t| offset >= t) || offset >= 100_000 {
            break;
        }
    }
    let id = pick_by_name(&name, &candidates)?;
    Ok((id, Some(name)))
}

/// `3725` → `1h 2m 5s`.
fn duration_words(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

fn id_segments(id: &str) -> [&str; 3] {
    ["v1", "notebooks", id]
}

pub async fn run(ctx: &Ctx, cmd: NotebookCommand) -> Result<(), CliError> {
    match cmd {
        NotebookCommand::List(a) => list(ctx, a).await,
        NotebookCommand::Create(a) => create(ctx, *a).await,
        NotebookCommand::Get(t) => get(ctx, &t.notebook).await,
        NotebookCommand::Start(a) => {
            let body = a.auto_stop.body().map(|b| json!({ "auto_stop": b }));
            start_stop(ctx, a.base, Action::Start, body).await
        }
        NotebookCommand::Stop(a) => start_stop(ctx, a, Action::Stop, None).await,
        NotebookCommand::Renew(a) => renew(ctx, a).await,
        NotebookCommand::Expand(a) => expand(ctx, a).await,
        NotebookCommand::SaveImage(a) => save_image(ctx, a).await,
        NotebookCommand::Delete(a) => delete(ctx, a).await,
        NotebookCommand::Update(a) => update(ctx, a).await,
        NotebookCommand::Events(t) => events(ctx, &t.notebook).await,
        NotebookCommand::Mount(a) => mount(ctx, a).await,
        NotebookCommand::Unmount(a) => unmount(ctx, a).await,
        NotebookCommand::Mounts(t) => mounts(ctx, &t.notebook).await,
        NotebookCommand::Upload(a) => {
            let (id, _) = resolve(&ctx.api, &a.notebook).await?;
            super::uploads::upload(ctx, &id, a).await
        }
        NotebookCommand::Uploads(t) => {
            let (id, _) = resolve(&ctx.api, &t.notebook).await?;
            super::uploads::list(ctx, &id).await
        }
        NotebookCommand::UploadCancel(a) => {
            let (id, _) = resolve(&ctx.api, &a.notebook).await?;
            super::uploads::cancel(ctx, &id, &a.upload).await
        }
        NotebookCommand::Open(t) => open(ctx, &t.notebook).await,
        NotebookCommand::SshConfig(a) => ssh_config(ctx, a).await,
    }
}

async fn list(ctx: &Ctx, a: ListArgs) -> Result<(), CliError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(name) = a.name {
        query.push(("name", name));
    }
    if let Some(status) = a.status {
        query.push(("status", status.trim().to_ascii_uppercase()));
    }
    if let Some(image) = a.image {
        query.push(("image", image));
    }
    if let Some(flavor) = a.flavor {
        query.push(("flavor", flavor));
    }
    if let Some(limit) = a.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(offset) = a.offset {
        query.push(("offset", offset.to_string()));
    }
    if a.all {
        query.push(("all", "true".to_string()));
    }
    let reply = ctx.api.get(&["v1", "notebooks"], &query).await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let notebooks = items(&reply.value)?;
    let mut headers = vec!["ID", "NAME"];
    if a.all {
        headers.push("OWNER");
    }
    headers.extend(["STATUS", "FLAVOR", "IMAGE", "CREATED"]);
    let mut t = Table::new(&headers);
    for nb in notebooks {
        let mut row = vec![cell(nb, "id"), cell(nb, "name")];
        if a.all {
            row.push(cell(nb, "owner"));
        }
        row.extend([
            cell(nb, "status"),
            cell(nb, "flavor"),
            cell(nb, "image"),
            short_time(nb, "created_at"),
        ]);
        t.row(row);
    }
    out(&t.render());
    if let Some(total) = reply.value.get("total").and_then(Value::as_u64) {
        let shown = notebooks.len() as u64;
        if total > shown {
            let from = u64::from(a.offset.unwrap_or(0));
            err(&format!(
                "showing {shown} of {total} notebooks (from offset {from}); use --limit/--offset for more"
            ));
        }
    }
    Ok(())
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), CliError> {
    let mut body = Map::new();
    if let Some(name) = a.name {
        body.insert("name".into(), name.into());
    }
    if let Some(d) = a.description {
        body.insert("description".into(), d.into());
    }
    if let Some(f) = a.flavor {
        body.insert("flavor".into(), f.into());
    }
    if let Some(i) = a.image {
        body.insert("image".into(), i.into());
    }
    if let Some(auto_stop) = a.auto_stop.body() {
        body.insert("auto_stop".into(), auto_stop);
    }
    if let Some(ssh) = a.ssh.body() {
        body.insert("ssh".into(), ssh);
    }
    let (primary, extended) = a.storage.body()?;
    if let Some(p) = primary {
        body.insert("storage".into(), p);
    }
    if let Some(e) = extended {
        body.insert("extended_storage".into(), e);
    }
    let reply = ctx
        .api
        .post(&["v1", "notebooks"], Some(&Value::Object(body)))
        .await?;
    if !a.wait.wait {
        return report(ctx, &reply.raw, &reply.value);
    }
    if !ctx.json {
        err(&status_line(&reply.value));
    }
    let id = text(&reply.value, "id").to_string();
    let done = wait_for(
        &ctx.api,
        &id,
        &reply.value,
        "RUNNING",
        &["CREATE_FAILED", "START_FAILED", "ERROR", "DELETING"],
        &a.wait,
    )
    .await?;
    report(ctx, &done.0, &done.1)
}

#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
}

async fn save_image(ctx: &Ctx, a: SaveImageArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let mut body = json!({"name": a.name, "tag": a.tag, "description": a.description});
    if let Some(ns) = &a.namespace {
        body["namespace"] = json!(ns);
    }
    let reply = ctx
        .api
        .post(&["v1", "notebooks", &id, "save-image"], Some(&body))
        .await?;
    if !a.wait.wait {
        return report(ctx, &reply.raw, &reply.value);
    }
    if !ctx.json {
        err(&status_line(&reply.value));
    }
    wait_for(
        &ctx.api,
        &id,
        &reply.value,
        "RUNNING",
        &["ERROR", "STOPPED", "DELETING"],
        &a.wait,
    )
    .await?;
    // How it ended: the last SaveImage or SavedImageFailed event.
    let events = ctx
        .api
        .get(&["v1", "notebooks", &id, "events"], &[])
        .await?;
    let last = items(&events.value)?
        .iter()
        .rev()
        .find(|e| matches!(text(e, "event"), "SaveImage" | "SavedImageFailed"))
        .cloned();
    match last {
        Some(e) if text(&e, "event") == "SaveImage" => {
            if ctx.json {
                return print_json(&e.to_string(), None);
            }
            out(&sanitize(&format!("saved: {}", cell(&e, "detail"))));
            Ok(())
        }
        Some(e) => Err(CliError::other(sanitize(&format!(
            "{} {}",
            cell(&e, "description"),
            cell(&e, "detail")
        )))),
        None => Err(CliError::other("the save ended without a result event")),
    }
}

async fn expand(ctx: &Ctx, a: ExpandArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let reply = ctx
        .api
        .post(
            &["v1", "notebooks", &id, "storage", "expand"],
            Some(&json!({ "size_gb": a.size_gb })),
        )
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let nb = &reply.value;
    out(&sanitize(&format!(
        "notebook {} ({}): work disk {}",
        cell(nb, "name"),
        cell(nb, "id"),
        storage_words(nb)
    )));
    Ok(())
}

/// `5 GB (xfs disk)`, `directory without a size limit`, or `-`.
fn storage_words(nb: &Value) -> String {
    let Some(s) = nb.get("storage").filter(|s| s.is_object()) else {
        return "-".into();
    };
    match s.get("kind").and_then(Value::as_str) {
        Some("disk") => format!(
            "{} GB ({} disk)",
            s.get("size_gb").and_then(Value::as_u64).unwrap_or(0),
            s.get("fs").and_then(Value::as_str).unwrap_or("?")
        ),
        _ => "directory without a size limit".into(),
    }
}

async fn renew(ctx: &Ctx, a: RenewArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let body = a.hours.map(|h| json!({ "hours": h }));
    let reply = ctx
        .api
        .post(&["v1", "notebooks", &id, "renew"], body.as_ref())
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let nb = &reply.value;
    let auto = &nb["auto_stop"];
    match (
        auto.get("stop_at").and_then(Value::as_str),
        auto.get("remaining_seconds").and_then(Value::as_i64),
    ) {
        (Some(at), Some(left)) => out(&sanitize(&format!(
            "notebook {} ({}) stops at {} (in {}) unless renewed",
            cell(nb, "name"),
            cell(nb, "id"),
            at.get(..19).unwrap_or(at).replace('T', " "),
            duration_words(left)
        ))),
        _ => out(&status_line(nb)),
    }
    Ok(())
}

async fn start_stop(
    ctx: &Ctx,
    a: StartStopArgs,
    action: Action,
    body: Option<Value>,
) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let (verb, target, failed): (&str, &str, &[&str]) = match action {
        Action::Start => ("start", "RUNNING", &["START_FAILED", "ERROR", "DELETING"]),
        Action::Stop => ("stop", "STOPPED", &["ERROR", "DELETING"]),
    };
    let reply = ctx
        .api
        .post(&["v1", "notebooks", &id, verb], body.as_ref())
        .await?;
    if !a.wait.wait {
        return report(ctx, &reply.raw, &reply.value);
    }
    if !ctx.json {
        err(&status_line(&reply.value));
    }
    let done = wait_for(&ctx.api, &id, &reply.value, target, failed, &a.wait).await?;
    report(ctx, &done.0, &done.1)
}

async fn delete(ctx: &Ctx, a: DeleteArgs) -> Result<(), CliError> {
    let (id, name) = resolve(&ctx.api, &a.notebook).await?;
    if !a.yes {
        if !stdin_is_terminal() {
            return Err(CliError::other(format!(
                "refusing to delete notebook {} without confirmation (stdin is not a terminal); \
                 pass --yes to delete it",
                sanitize(a.notebook.trim())
            )));
        }
        let name = match name {
            Some(n) => n,
            None => {
                let nb = ctx.api.get(&id_segments(&id), &[]).await?;
                text(&nb.value, "name").to_string()
            }
        };
        let answer = ask(format!(
            "Delete notebook {} ({id}) and all its files? Type its name to confirm: ",
            sanitize(&name)
        ))
        .await?;
        if answer.as_deref().map(str::trim) != Some(name.as_str()) {
            return Err(CliError::other(
                "deletion cancelled: the name did not match (use --yes to skip this question)",
            ));
        }
    }
    let reply = ctx.api.delete(&id_segments(&id)).await?;
    report(ctx, &reply.raw, &reply.value)
}

async fn update(ctx: &Ctx, a: UpdateArgs) -> Result<(), CliError> {
    let mut body = Map::new();
    for (key, value) in [
        ("name", a.name),
        ("description", a.description),
        ("flavor", a.flavor),
        ("image", a.image),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), v.into());
        }
    }
    if let Some(ssh) = a.ssh.body() {
        body.insert("ssh".into(), ssh);
    }
    if body.is_empty() {
        return Err(CliError::other(
            "nothing to update: pass --name, --description, --flavor, --image, --ssh, --key-pair or --whitelist",
        ));
    }
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let reply = ctx
        .api
        .patch(&id_segments(&id), &Value::Object(body))
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    out(&format!(
        "notebook {} ({}) updated",
        cell(&reply.value, "name"),
        cell(&reply.value, "id")
    ));
    Ok(())
}

async fn get(ctx: &Ctx, arg: &str) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, arg).await?;
    let reply = ctx.api.get(&id_segments(&id), &[]).await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    out(&describe(&reply.value, &ctx.api.base()));
    Ok(())
}

/// The human view of one notebook.
pub fn describe(nb: &Value, base: &str) -> String {
    let mut status = cell(nb, "status");
    if let Some(reason) = nb.get("status_reason").and_then(Value::as_str)
        && !reason.is_empty()
    {
        status = format!("{status} ({reason})");
    }
    let auto_stop = match nb.get("auto_stop") {
        Some(a) if a.get("enabled").and_then(Value::as_bool) == Some(false) => {
            "disabled".to_string()
        }
        Some(a) => {
            let after = match a.get("duration_hours").and_then(Value::as_u64) {
                Some(h) => format!("after {h}h running"),
                None => "enabled".to_string(),
            };
            match (
                a.get("stop_at").and_then(Value::as_str),
                a.get("remaining_seconds").and_then(Value::as_i64),
            ) {
                (Some(at), Some(left)) => format!(
                    "{after}; stops at {} (in {}) unless renewed",
                    at.get(..19).unwrap_or(at).replace('T', " "),
                    duration_words(left)
                ),
                _ => after,
            }
        }
        None => "-".to_string(),
    };
    let url = match nb.get("url").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => full_url(base, u),
        _ => "-".to_string(),
    };
    let list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let ssh = match nb.get("ssh") {
        Some(v) if v.get("enabled").and_then(Value::as_bool) == Some(true) => {
            let keys = list(v.get("key_pairs")).join(", ");
            let allowed = list(v.get("whitelist"));
            let from = if allowed.is_empty() {
                "any address".to_string()
            } else {
                allowed.join(", ")
            };
            format!("enabled; key pairs {keys}; from {from}")
        }
        Some(_) => "disabled".to_string(),
        None => "-".to_string(),
    };
    let fields = [
        ("ID", cell(nb, "id")),
        ("Name", cell(nb, "name")),
        ("Description", cell(nb, "description")),
        ("Owner", cell(nb, "owner")),
        ("Status", status),
        ("Flavor", cell(nb, "flavor")),
        ("Image", cell(nb, "image")),
        ("Auto-stop", auto_stop),
        ("SSH", ssh),
        ("Work disk", storage_words(nb)),
        ("URL", url),
        ("Created", time_secs(nb, "created_at")),
        ("Updated", time_secs(nb, "updated_at")),
        ("Last activity", time_secs(nb, "last_activity_at")),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut s = String::new();
    for (k, v) in fields {
        s.push_str(&format!("{:<width$} {}\n", format!("{k}:"), sanitize(&v)));
    }
    s
}

async fn events(ctx: &Ctx, arg: &str) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, arg).await?;
    let reply = ctx
        .api
        .get(&["v1", "notebooks", &id, "events"], &[])
        .await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let mut t = Table::new(&["TIME", "SEVERITY", "EVENT", "DESCRIPTION"]);
    for e in items(&reply.value)? {
        t.row([
            time_secs(e, "time"),
            cell(e, "severity"),
            cell(e, "event"),
            cell(e, "description"),
        ]);
    }
    out(&t.render());
    Ok(())
}

async fn mount(ctx: &Ctx, a: MountArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let body = json!({
        "name": a.name,
        "uri": a.uri,
        "connection": a.connection,
        "read_only": a.read_only,
    });
    let reply = ctx
        .api
        .post(&["v1", "notebooks", &id, "mounts"], Some(&body))
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let m = &reply.value;
    out(&sanitize(&format!(
        "mounted {} at {}{}",
        cell(m, "uri"),
        cell(m, "path"),
        if a.read_only { " (read-only)" } else { "" }
    )));
    Ok(())
}

async fn unmount(ctx: &Ctx, a: UnmountArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    ctx.api
        .delete(&["v1", "notebooks", &id, "mounts", &a.name])
        .await?;
    if !ctx.json {
        out(&sanitize(&format!(
            "unmounted /data/{} from notebook {}; the objects stay in the store",
            a.name, a.notebook
        )));
    }
    Ok(())
}

async fn mounts(ctx: &Ctx, arg: &str) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, arg).await?;
    let reply = ctx
        .api
        .get(&["v1", "notebooks", &id, "mounts"], &[])
        .await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let mut t = Table::new(&[
        "NAME",
        "PATH",
        "STORAGE PATH",
        "CONNECTION",
        "MODE",
        "STATUS",
    ]);
    for m in items(&reply.value)? {
        let mode = if m.get("read_only").and_then(Value::as_bool) == Some(true) {
            "read-only"
        } else {
            "read-write"
        };
        let status = match m.get("error").and_then(Value::as_str) {
            Some(e) => format!("{} ({e})", cell(m, "status")),
            None => cell(m, "status"),
        };
        t.row([
            cell(m, "name"),
            cell(m, "path"),
            cell(m, "uri"),
            cell(m, "connection"),
            mode.to_string(),
            status,
        ]);
    }
    out(&t.render());
    Ok(())
}

/// The browser URL: the server's base URL followed by the notebook's `url` path.
pub fn full_url(base: &str, path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        return path.to_string();
    }
    let base = base.trim_end_matches('/');
    if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

async fn ssh_config(ctx: &Ctx, a: SshConfigArgs) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, &a.notebook).await?;
    let reply = ctx.api.get(&id_segments(&id), &[]).await?;
    let nb = &reply.value;
    let name = text(nb, "name");
    // The notebook's own port (user ma-user, as in the seed) when it has one.
    let endpoints = nb
        .get("endpoints")
        .and_then(|e| e.get("ssh"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(ep) = endpoints
        .iter()
        .find(|e| e.get("user").and_then(Value::as_str) == Some("ma-user"))
        .or_else(|| endpoints.first())
    else {
        let enabled = nb
            .get("ssh")
            .and_then(|s| s.get("enabled"))
            .and_then(Value::as_bool)
            == Some(true);
        return Err(CliError::other(if enabled {
            "the gateway's SSH front door is off (ATELIER_SSH_ADDR=off)".to_string()
        } else {
            format!(
                "notebook {name} does not have SSH on; stop it, then `atelier notebook update {name} --ssh --key-pair NAME`"
            )
        }));
    };
    let identity = match a.identity_file {
        Some(f) => f,
        None => {
            let first = nb
                .get("ssh")
                .and_then(|s| s.get("key_pairs"))
                .and_then(Value::as_array)
                .and_then(|k| k.first())
                .and_then(Value::as_str)
                .unwrap_or("KEYPAIR");
            format!("~/.ssh/{first}.pem")
        }
    };
    if ctx.json {
        return print_json(&serde_json::to_string(ep).unwrap_or_default(), None);
    }
    let alias = sanitize(&a.alias.unwrap_or_else(|| name.to_string()));
    let host = sanitize(text(ep, "host"));
    let port = sanitize(&cell(ep, "port"));
    let user = sanitize(text(ep, "user"));
    let identity = sanitize(&identity);
    // One known_hosts entry (from `atelier ssh info`) then fits every notebook's port.
    let key_alias = super::keypairs::host_key_alias(&host);
    out(&format!(
        "Host {alias}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile {identity}\n  IdentitiesOnly yes\n  HostKeyAlias {key_alias}"
    ));
    err(&sanitize(&format!(
        "host key {} (`atelier ssh info` prints its known_hosts line)",
        text(ep, "host_key_fingerprint")
    )));
    Ok(())
}

async fn open(ctx: &Ctx, arg: &str) -> Result<(), CliError> {
    let (id, _) = resolve(&ctx.api, arg).await?;
    let reply = ctx.api.get(&id_segments(&id), &[]).await?;
    let nb = &reply.value;
    let path = text(nb, "url");
    if path.is_empty() {
        return Err(CliError::other(
            "the server did not give a URL for this notebook",
        ));
    }
    let url = sanitize(&full_url(&ctx.api.base(), path));
    let status = text(nb, "status");
    if status != "RUNNING" && !ctx.json {
        err(&format!(
            "note: notebook {} is {}; start it with `atelier notebook start {}`",
            cell(nb, "name"),
            cell(nb, "status"),
            cell(nb, "name")
        ));
    }
    if ctx.json {
        out(
            &serde_json::to_string_pretty(&json!({"id": id, "url": url, "status": status}))
                .unwrap_or_default(),
        );
    } else {
        out(&url);
    }
    Ok(())
}

/// `notebook nb1 (5c4f…) is STOPPING`
pub fn status_line(nb: &Value) -> String {
    let mut line = format!(
        "notebook {} ({}) is {}",
        cell(nb, "name"),
        cell(nb, "id"),
        cell(nb, "status")
    );
    if let Some(reason) = nb.get("status_reason").and_then(Value::as_str)
        && !reason.is_empty()
    {
        line.push_str(&format!(": {reason}"));
    }
    sanitize(&line)
}

fn report(ctx: &Ctx, raw: &str, nb: &Value) -> Result<(), CliError> {
    if ctx.json {
        return print_json(raw, None);
    }
    out(&status_line(nb));
    Ok(())
}

/// Polls the notebook every 0.5 s until it reaches `target` (Ok), one of `failed` (Err), or the
/// deadline passes (Err). Status changes go to stderr. Returns the last raw body and value.
async fn wait_for(
    api: &Api,
    id: &str,
    first: &Value,
    target: &str,
    failed: &[&str],
    w: &WaitArgs,
) -> Result<(String, Value), CliError> {
    let timeout = Duration::from_secs(w.timeout.unwrap_or(DEFAULT_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = text(first, "status").to_string();
    let mut current: Option<(String, Value)> = None;
    loop {
        if let Some((raw, nb)) = &current {
            let status = text(nb, "status");
            if status != last {
                let mut line = format!("{}: {}", cell(nb, "name"), cell(nb, "status"));
                if let Some(r) = nb.get("status_reason").and_then(Value::as_str)
                    && !r.is_empty()
                {
                    line.push_str(&format!(" ({r})"));
                }
                err(&sanitize(&line));
                last = status.to_string();
            }
            if status == target {
                return Ok((raw.clone(), nb.clone()));
            }
            if failed.contains(&status) {
                return Err(CliError::other(format!(
                    "{} (wanted {target})",
                    status_line(nb)
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::other(format!(
                "timed out after {}s waiting for notebook {} ({id}) to be {target} (it is {})",
                timeout.as_secs(),
                cell(first, "name"),
                sanitize(&last)
            )));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(POLL_INTERVAL.min(left)).await;
        let reply = api.get(&id_segments(id), &[]).await?;
        current = Some((reply.raw, reply.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_or_name() {
        let id = "5c4f0b7e-1d2a-4c3b-9e8f-0123456789ab";
        assert_eq!(parse_id_or_name(id).ok(), Some(IdOrName::Id(id.into())));
        assert_eq!(
            parse_id_or_name(" 5C4F0B7E-1D2A-4C3B-9E8F-0123456789AB ").ok(),
            Some(IdOrName::Id(id.into()))
        );
        // Valid notebook names, even when they look like other UUID spellings.
        for name in [
            "nb_1-a",
            "5c4f0b7e1d2a4c3b9e8f0123456789ab",
            "5c4f0b7e-1d2a-4c3b-9e8f-0123456789ag",
            "{5c4f0b7e-1d2a-4c3b-9e8f-0123456789ab}",
        ] {
            assert_eq!(
                parse_id_or_name(name).ok(),
                Some(IdOrName::Name(name.into())),
                "{name}"
            );
        }
        assert!(parse_id_or_name("  ").is_err());
    }

    #[test]
    fn pick_exact_name() {
        let items = vec![
            json!({"id": "1", "name": "nb"}),
            json!({"id": "2", "name": "nb-2"}),
            json!({"id": "3", "name": "my-nb"}),
        ];
        assert_eq!(pick_by_name("nb", &items).ok(), Some("1".into()));
        assert_eq!(pick_by_name("my-nb", &items).ok(), Some("3".into()));
        let e = pick_by_name("n", &items).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no notebook named")));
        let dup = vec![
            json!({"id": "1", "name": "x"}),
            json!({"id": "2", "name": "x"}),
        ];
        let e = pick_by_name("x", &dup).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("2 notebooks") && e.contains("1, 2")));
    }

    #[test]
    fn urls() {
        assert_eq!(
            full_url("http://h:8000", "/nb/x/lab"),
            "http://h:8000/nb/x/lab"
        );
        assert_eq!(
            full_url("http://h:8000/", "nb/x/lab"),
            "http://h:8000/nb/x/lab"
        );
        assert_eq!(full_url("http://h/p", "/nb/x/lab"), "http://h/p/nb/x/lab");
        assert_eq!(full_url("http://h", "http://o/nb"), "http://o/nb");
    }

    #[test]
    fn lines_and_description() {
        let nb = json!({
            "id": "abc", "name": "nb1", "description": "", "owner": "alice",
            "status": "START_FAILED", "status_reason": "image pull\nfailed",
            "flavor": "cpu-2-8", "image": "jupyterlab",
            "auto_stop": {"enabled": true, "duration_hours": 3},
            "url": "/nb/abc/lab",
            "created_at": "2026-11-27T18:43:23.123456Z", "updated_at": "2026-11-27T18:44:00Z",
            "last_activity_at": null
        });
        assert_eq!(
            status_line(&nb),
            "notebook nb1 (abc) is START_FAILED: image pull failed"
        );
        let d = describe(&nb, "http://h:8000");
        assert!(
            d.contains("Status:        START_FAILED (image pull failed)\n"),
            "{d}"
        );
        assert!(d.contains("Auto-stop:     after 3h running\n"), "{d}");
        let mut running = nb.clone();
        running["auto_stop"]["stop_at"] = json!("2026-11-27T20:00:00.000000Z");
        running["auto_stop"]["remaining_seconds"] = json!(3725);
        let d = describe(&running, "http://h:8000");
        assert!(
            d.contains(
                "Auto-stop:     after 3h running; stops at 2026-11-27 20:00:00 (in 1h 2m 5s) unless renewed\n"
            ),
            "{d}"
        );
        assert_eq!(duration_words(59), "59s");
        assert_eq!(duration_words(61), "1m 1s");
        assert_eq!(duration_words(-4), "0s");
        assert!(
            d.contains("URL:           http://h:8000/nb/abc/lab\n"),
            "{d}"
        );
        assert!(d.contains("Created:       2026-11-27 18:43:23\n"), "{d}");
        assert!(d.contains("Last activity: -\n"), "{d}");
        assert!(d.contains("Description:   -\n"), "{d}");
    }
}
