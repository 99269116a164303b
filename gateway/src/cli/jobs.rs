//! `atelier job create|list|get|logs|metrics|events|stop|delete|rebuild|save-as`: training
//! jobs.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum JobCommand {
    /// Create a training job: of one of your algorithms (--algorithm), or a custom one
    /// (--code-dir with --boot-file or --boot-command, or just --boot-command); or from a
    /// JSON request file (-f, the API's body; flags given too override it).
    Create(Box<CreateArgs>),
    /// List your training jobs.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a training job.
    Get(JobArg),
    /// A worker's log; -f follows it until the attempt ends.
    Logs(LogsArgs),
    /// The metrics the job reported (`[metric] name=value … step=N` lines).
    Metrics(MetricsArgs),
    /// The job's events.
    Events(JobArg),
    /// The job's webhook deliveries.
    Notifications(JobArg),
    /// Stop a job (creating, pending or running).
    Stop(JobArg),
    /// Delete a job (a running one is stopped first); its objects in storage stay.
    #[command(visible_alias = "rm")]
    Delete(JobArg),
    /// A new job with the same settings.
    Rebuild(RebuildArgs),
    /// Save the job's recipe as an algorithm of yours.
    SaveAs(SaveAsArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The job's name (default: generated): 1-64 of A-Z a-z 0-9 - _.
    pub name: Option<String>,
    /// A JSON request (the API's body) to start from.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub description: Option<String>,
    /// One of your algorithms (name or id).
    #[arg(long, conflicts_with_all = ["image", "code_dir", "boot_file", "boot_command"])]
    pub algorithm: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    /// The code dir, obs://BUCKET/PATH (read through --connection).
    #[arg(long, value_name = "PATH")]
    pub code_dir: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub boot_file: Option<String>,
    #[arg(long, value_name = "COMMAND")]
    pub boot_command: Option<String>,
    /// Your storage connection for the code dir, inputs, outputs and log path.
    #[arg(long)]
    pub connection: Option<String>,
    /// An input: NAME=obs://BUCKET/PATH; repeat.
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// An output: NAME=obs://BUCKET/PATH; repeat.
    #[arg(long = "output", value_name = "NAME=PATH")]
    pub outputs: Vec<String>,
    /// Download what the outputs hold before the job starts (resume from checkpoints).
    #[arg(long)]
    pub predownload: bool,
    /// A hyperparameter: NAME=VALUE (numbers and true/false as such); repeat.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// An environment variable: NAME=VALUE; repeat.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    #[arg(long)]
    pub flavor: Option<String>,
    /// Workers (1 = one node; more = distributed).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Restart on faults, at most N times (1-128).
    #[arg(long, value_name = "N")]
    pub auto_restart: Option<u32>,
    /// Restart when the code fails too (at most 3 in a row); with --auto-restart.
    #[arg(long, requires = "auto_restart")]
    pub unconditional: bool,
    /// Stop the job after this many hours of running (1-720).
    #[arg(long, value_name = "HOURS")]
    pub auto_stop: Option<u32>,
    /// Seconds without output or CPU use after which the job is taken as hung.
    #[arg(long, value_name = "SECONDS")]
    pub hang_detect: Option<u64>,
    /// A tag: KEY=VALUE; repeat.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// An empty folder the workers' logs are copied to.
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<String>,
    /// A webhook URL the job's events are POSTed to (signed with --webhook-secret).
    #[arg(long, value_name = "URL", requires = "webhook_secret")]
    pub webhook: Option<String>,
    /// The secret the webhook's HMAC-SHA256 signature is made with (16-256 characters).
    #[arg(long, value_name = "SECRET", requires = "webhook")]
    pub webhook_secret: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's jobs (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct JobArg {
    /// The job (name or id).
    pub job: String,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub job: String,
    /// Follow the log until the attempt ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Which worker (default 0).
    #[arg(long, default_value_t = 0)]
    pub worker: i64,
    /// Which attempt (default: the current one).
    #[arg(long)]
    pub attempt: Option<i64>,
    /// Only the job's own lines, not the platform's.
    #[arg(long)]
    pub user_only: bool,
    /// Only lines containing this.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    pub job: String,
    /// One metric only.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    pub job: String,
    /// The new job's name (default: generated).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SaveAsArgs {
    pub job: String,
    /// The algorithm's name.
    pub algorithm: String,
    #[arg(long)]
    pub description: Option<String>,
}

const JOBS: &str = "training-jobs";

fn pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str), CliError> {
    s.split_once('=')
        .ok_or_else(|| CliError::other(format!("--{flag} {s:?}: NAME=VALUE")))
}

/// A value as JSON: a number or boolean when it reads as one, else the text.
fn typed(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return f.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.into(),
    }
}

fn create_body(a: &CreateArgs) -> Result<Value, CliError> {
    let mut body = match &a.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::other(format!("-f {}: {e}", path.display())))?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(CliError::other(format!(
                        "-f {}: a JSON object",
                        path.display()
                    )));
                }
                Err(e) => return Err(CliError::other(format!("-f {}: {e}", path.display()))),
            }
        }
        None => Map::new(),
    };
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    };
    set("name", a.name.clone().map(Value::from));
    set("description", a.description.clone().map(Value::from));
    set("algorithm", a.algorithm.clone().map(Value::from));
    set("connection", a.connection.clone().map(Value::from));
    set("flavor", a.flavor.clone().map(Value::from));
    set("nodes", a.nodes.map(Value::from));
    set("auto_stop_hours", a.auto_stop.map(Value::from));
    set("hang_detect_seconds", a.hang_detect.map(Value::from));
    set("log_path", a.log_path.clone().map(Value::from));
    if let (Some(url), Some(secret)) = (&a.webhook, &a.webhook_secret) {
        set("notification", Some(json!({"url": url, "secret": secret})));
    }
    set(
        "auto_restart",
        a.auto_restart
            .map(|n| json!({"count": n, "unconditional": a.unconditional})),
    );
    if a.image.is_some()
        || a.code_dir.is_some()
        || a.boot_file.is_some()
        || a.boot_command.is_some()
    {
        let mut c = Map::new();
        for (k, v) in [
            ("image", &a.image),
            ("code_dir", &a.code_dir),
            ("boot_file", &a.boot_file),
            ("boot_command", &a.boot_command),
        ] {
            if let Some(v) = v {
                c.insert(k.into(), v.clone().into());
            }
        }
        body.insert("custom".into(), Value::Object(c));
    }
    let channels =
        |flag: &str, list: &[String], predownload: bool| -> Result<Vec<Value>, CliError> {
            list.iter()
                .map(|s| {
                    let (name, path) = pair(flag, s)?;
                    let mut v = json!({"name": name, "path": path});
                    if predownload {
                        v["predownload"] = true.into();
                    }
                    Ok(v)
                })
                .collect()
        };
    if !a.inputs.is_empty() {
        body.insert("inputs".into(), channels("input", &a.inputs, false)?.into());
    }
    if !a.outputs.is_empty() {
        body.insert(
            "outputs".into(),
            channels("output", &a.outputs, a.predownload)?.into(),
        );
    }
    let mut map_of =
        |key: &str, flag: &str, list: &[String], typed_values: bool| -> Result<(), CliError> {
            if list.is_empty() {
                return Ok(());
            }
            let mut m = body
                .get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for s in list {
                let (k, v) = pair(flag, s)?;
                m.insert(k.into(), if typed_values { typed(v) } else { v.into() });
            }
            body.insert(key.into(), Value::Object(m));
            Ok(())
        };
    map_of("hyperparameters", "param", &a.params, true)?;
    map_of("env", "env", &a.env, false)?;
    map_of("tags", "tag", &a.tags, false)?;
    Ok(Value::Object(body))
}

pub async fn run(ctx: &Ctx, cmd: JobCommand) -> Result<(), CliError> {
    match cmd {
        JobCommand::Create(a) => {
            let body = create_body(&a)?;
            let reply = ctx.api.post(&["v1", JOBS], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            err(&sanitize(&format!(
                "created training job {} ({}), {}",
                super::table::text(v, "name"),
                super::table::text(v, "id"),
                super::table::text(v, "status")
            )));
            super::output::warnings(v);
            Ok(())
        }
        JobCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", JOBS], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec![
                "NAME",
                "STATUS",
                "ALGORITHM",
                "NODES",
                "RETRIES",
                "DURATION",
                "CREATED",
            ];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for v in items(&reply.value)? {
                let algorithm = match v.get("algorithm").and_then(Value::as_str) {
                    Some(a) => a.to_string(),
                    None => "(custom)".into(),
                };
                // The seed's low-utilisation alarm, beside the status.
                let status = match v.get("low_gpu_utilization").and_then(Value::as_bool) {
                    Some(true) => format!("{} (low GPU use)", cell(v, "status")),
                    _ => cell(v, "status"),
                };
                let mut row = vec![
                    cell(v, "name"),
                    status,
                    sanitize(&algorithm),
                    cell(v, "nodes"),
                    cell(v, "retries"),
                    format!("{}s", cell(v, "duration_seconds")),
                    short_time(v, "created_at"),
                ];
                if a.all {
                    row.insert(1, cell(v, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        JobCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", JOBS, &a.job], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            out(super::table::fields(
                &reply.value,
                16,
                &[
                    ("Name", "name"),
                    ("Id", "id"),
                    ("Owner", "owner"),
                    ("Status", "status"),
                    ("Reason", "status_reason"),
                    ("Algorithm", "algorithm"),
                    ("Flavor", "flavor"),
                    ("Nodes", "nodes"),
                    ("Attempt", "attempt"),
                    ("Retries", "retries"),
                    ("Duration (s)", "duration_seconds"),
                    ("Low GPU use", "low_gpu_utilization"),
                    ("Created", "created_at"),
                    ("Started", "started_at"),
                    ("Ended", "ended_at"),
                ],
            )
            .trim_end());
            Ok(())
        }
        JobCommand::Logs(a) => {
            let mut query = vec![("worker", a.worker.to_string())];
            if let Some(at) = a.attempt {
                query.push(("attempt", at.to_string()));
            }
            if a.user_only {
                query.push(("system", "false".into()));
            }
            if let Some(g) = &a.grep {
                query.push(("q", g.clone()));
            }
            if a.follow {
                query.push(("follow", "true".into()));
                let mut stdout = std::io::stdout();
                return ctx
                    .api
                    .stream_text(&["v1", JOBS, &a.job, "logs"], &query, |piece| {
                        let _ = stdout.write_all(piece);
                        let _ = stdout.flush();
                    })
                    .await;
            }
            let url = ["v1", JOBS, &a.job, "logs"];
            let mut text = Vec::new();
            ctx.api
                .stream_text(&url, &query, |p| text.extend_from_slice(p))
                .await?;
            let _ = std::io::stdout().write_all(&text);
            Ok(())
        }
        JobCommand::Metrics(a) => {
            let query: Vec<(&str, String)> = a.name.iter().map(|n| ("name", n.clone())).collect();
            let reply = ctx
                .api
                .get(&["v1", JOBS, &a.job, "metrics"], &query)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["NAME", "VALUE", "STEP", "ATTEMPT", "WORKER", "TIME"]);
            for v in items(&reply.value)? {
                t.row(vec![
                    cell(v, "name"),
                    cell(v, "value"),
                    cell(v, "step"),
                    cell(v, "attempt"),
                    cell(v, "worker"),
                    short_time(v, "time"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        JobCommand::Events(a) => {
            let reply = ctx.api.get(&["v1", JOBS, &a.job, "events"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["TIME", "TYPE", "EVENT"]);
            for v in items(&reply.value)? {
                t.row(vec![
                    short_time(v, "time"),
                    cell(v, "type"),
                    cell(v, "text"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        JobCommand::Notifications(a) => {
            let reply = ctx
                .api
                .get(&["v1", JOBS, &a.job, "notifications"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["EVENT", "STATUS", "ATTEMPTS", "LAST ERROR", "CREATED"]);
            for v in items(&reply.value)? {
                t.row(vec![
                    cell(v, "event"),
                    cell(v, "status"),
                    cell(v, "attempts"),
                    cell(v, "last_error"),
                    short_time(v, "created_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        JobCommand::Stop(a) => {
            let reply = ctx.api.post(&["v1", JOBS, &a.job, "stop"], None).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "stopping training job {} ({})",
                a.job,
                super::table::text(&reply.value, "status")
            )));
            Ok(())
        }
        JobCommand::Delete(a) => {
            ctx.api.delete(&["v1", JOBS, &a.job]).await?;
            err(&sanitize(&format!("deleted training job {}", a.job)));
            Ok(())
        }
        JobCommand::Rebuild(a) => {
            let body = match &a.name {
                Some(n) => json!({"name": n}),
                None => json!({}),
            };
            let reply = ctx
                .api
                .post(&["v1", JOBS, &a.job, "rebuild"], Some(&body))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "created training job {} ({}) from {}",
                super::table::text(&reply.value, "name"),
                super::table::text(&reply.value, "id"),
                a.job
            )));
            Ok(())
        }
        JobCommand::SaveAs(a) => {
            let mut body = json!({"name": a.algorithm});
            if let Some(d) = &a.description {
                body["description"] = d.clone().into();
            }
            let reply = ctx
                .api
                .post(&["v1", JOBS, &a.job, "save-as-algorithm"], Some(&body))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "created algorithm {} from training job {}",
                a.algorithm, a.job
            )));
            Ok(())
        }
    }
}
