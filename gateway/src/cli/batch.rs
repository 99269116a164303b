//! `atelier batch deploy|list|get|start|stop|delete|events|logs`: batch services.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum BatchCommand {
    /// Run a model version over every file of a folder or a .manifest, into an empty
    /// output folder.
    Deploy(Box<DeployArgs>),
    /// List your batch services.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a batch service: its progress, and its results once COMPLETED.
    Get(BatchArg),
    /// Start a stopped or failed service (it goes on with its pending files), or run a
    /// completed one again.
    Start(WaitArgs),
    /// Stop a running service (its pending files wait for a start).
    Stop(BatchArg),
    /// Delete a batch service (its results stay in the output folder).
    #[command(visible_alias = "rm")]
    Delete(BatchArg),
    /// A batch service's events.
    Events(BatchArg),
    /// A batch service's log: what its model's server printed, its failed files, its end.
    Logs(super::services::LogsArgs),
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The model version: NAME:VERSION.
    #[arg(long, value_name = "NAME:VERSION")]
    pub model: String,
    /// The input: obs://BUCKET/FOLDER/ or obs://BUCKET/LIST.manifest.
    #[arg(long)]
    pub input: String,
    /// The output: an empty folder, obs://BUCKET/FOLDER/.
    #[arg(long)]
    pub output: String,
    /// Your storage connection (atelier storage list).
    #[arg(long)]
    pub connection: String,
    /// The service's name [default: service-xxxx].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// One of the model's apis[].url [default: /].
    #[arg(long)]
    pub request_path: Option<String>,
    /// A CSV column for a request field, FIELD=INDEX (repeat; FIELD a name or a JSON
    /// pointer such as /instances/0/1; -1 leaves it out).
    #[arg(long = "map", value_name = "FIELD=INDEX")]
    pub mapping: Vec<String>,
    /// Files processed in parallel (1-16) [default: 1].
    #[arg(long)]
    pub instances: Option<u32>,
    /// An environment variable, KEY=VALUE (repeat).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub envs: Vec<String>,
    /// Timeout in minutes (3-120) [default: 20].
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Wait until it is COMPLETED (or failed or stopped), at most this many seconds.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "3600")]
    pub wait: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's batch services (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct BatchArg {
    /// The batch service (name or id).
    pub batch: String,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The batch service (name or id).
    pub batch: String,
    /// Wait until it is COMPLETED (or failed or stopped), at most this many seconds.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "3600")]
    pub wait: Option<u64>,
}

const BATCH: &str = "batch-services";

/// `KEY=VALUE` pairs into an object, the value read by `value`.
fn pairs(
    flag: &str,
    list: &[String],
    value: impl Fn(&str) -> Option<Value>,
) -> Result<Map<String, Value>, CliError> {
    let mut m = Map::new();
    for p in list {
        let parsed = p
            .split_once('=')
            .and_then(|(k, v)| Some((k.to_string(), value(v)?)));
        let Some((k, v)) = parsed else {
            return Err(CliError::other(format!(
                "--{flag} {p:?}: write {}",
                if flag == "map" {
                    "FIELD=INDEX"
                } else {
                    "KEY=VALUE"
                }
            )));
        };
        m.insert(k, v);
    }
    Ok(m)
}

pub async fn run(ctx: &Ctx, cmd: BatchCommand) -> Result<(), CliError> {
    match cmd {
        BatchCommand::Deploy(a) => {
            let Some((model, version)) = a.model.split_once(':') else {
                return Err(CliError::other(format!(
                    "--model {:?}: write NAME:VERSION",
                    a.model
                )));
            };
            let mut body = Map::new();
            if let Some(n) = &a.name {
                body.insert("name".into(), n.clone().into());
            }
            body.insert("description".into(), a.description.clone().into());
            body.insert("model".into(), model.into());
            body.insert("version".into(), version.into());
            body.insert("input".into(), a.input.clone().into());
            body.insert("output".into(), a.output.clone().into());
            body.insert("connection".into(), a.connection.clone().into());
            if let Some(p) = &a.request_path {
                body.insert("request_path".into(), p.clone().into());
            }
            if !a.mapping.is_empty() {
                let m = pairs("map", &a.mapping, |v| {
                    v.trim().parse::<i64>().ok().map(Value::from)
                })?;
                body.insert("mapping".into(), m.into());
            }
            if !a.envs.is_empty() {
                let m = pairs("env", &a.envs, |v| Some(v.into()))?;
                body.insert("envs".into(), m.into());
            }
            if let Some(n) = a.instances {
                body.insert("instances".into(), n.into());
            }
            if let Some(t) = a.timeout {
                body.insert("timeout_minutes".into(), t.into());
            }
            let reply = ctx
                .api
                .post(&["v1", BATCH], Some(&Value::Object(body)))
                .await?;
            settle(ctx, &reply.raw, &reply.value, a.wait).await
        }
        BatchCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", BATCH], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec!["NAME", "STATUS", "MODEL", "DONE", "OUTPUT", "CREATED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for b in items(&reply.value)? {
                let mut row = vec![
                    cell(b, "name"),
                    cell(b, "status"),
                    format!("{} {}", cell(b, "model"), cell(b, "version")),
                    done(b),
                    cell(b, "output"),
                    short_time(b, "created_at"),
                ];
                if a.all {
                    row.insert(1, cell(b, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        BatchCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", BATCH, &a.batch], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let b = &reply.value;
            let shown = super::table::fields(
                b,
                14,
                &[
                    ("Name", "name"),
                    ("Id", "id"),
                    ("Owner", "owner"),
                    ("Status", "status"),
                    ("Reason", "status_reason"),
                    ("Task id", "task_id"),
                    ("Description", "description"),
                    ("Input", "input"),
                    ("Output", "output"),
                    ("Connection", "connection"),
                    ("Request path", "request_path"),
                    ("Instances", "instances"),
                    ("Started", "started_at"),
                    ("Ended", "ended_at"),
                    ("Created", "created_at"),
                ],
            );
            out(shown.trim_end());
            out(&sanitize(&format!(
                "{:<14} {} {}",
                "Model",
                cell(b, "model"),
                cell(b, "version")
            )));
            out(&sanitize(&format!("{:<14} {}", "Done", done(b))));
            if let Some(r) = b.get("results") {
                out(&sanitize(&format!(
                    "{:<14} {}",
                    "Results",
                    cell(r, "folder")
                )));
                for m in r
                    .get("manifests")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out(&sanitize(&format!(
                        "{:<14} {}",
                        "Manifest",
                        m.as_str().unwrap_or_default()
                    )));
                }
            }
            Ok(())
        }
        BatchCommand::Start(a) => {
            let reply = ctx
                .api
                .post(&["v1", BATCH, &a.batch, "start"], None)
                .await?;
            settle(ctx, &reply.raw, &reply.value, a.wait).await
        }
        BatchCommand::Stop(a) => {
            let reply = ctx.api.post(&["v1", BATCH, &a.batch, "stop"], None).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "batch service {} is {}",
                a.batch,
                cell(&reply.value, "status")
            )));
            Ok(())
        }
        BatchCommand::Delete(a) => {
            ctx.api.delete(&["v1", BATCH, &a.batch]).await?;
            err(&sanitize(&format!("deleted batch service {}", a.batch)));
            Ok(())
        }
        BatchCommand::Logs(a) => super::services::logs(ctx, BATCH, a).await,
        BatchCommand::Events(a) => {
            let reply = ctx.api.get(&["v1", BATCH, &a.batch, "events"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            out(&super::table::events(items(&reply.value)?));
            Ok(())
        }
    }
}

/// `succeeded+failed/total (n failed)`.
fn done(b: &Value) -> String {
    let p = b.get("progress").cloned().unwrap_or(Value::Null);
    let n = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(0);
    let finished = n("succeeded") + n("failed");
    if n("failed") > 0 {
        format!("{finished}/{} ({} failed)", n("total"), n("failed"))
    } else {
        format!("{finished}/{}", n("total"))
    }
}

/// After a deploy or start: the reply, or (with --wait) the service once it is COMPLETED;
/// FAILED or STOPPED is an error with its reason.
async fn settle(ctx: &Ctx, raw: &str, value: &Value, wait: Option<u64>) -> Result<(), CliError> {
    let name = cell(value, "name");
    let id = cell(value, "id");
    let Some(secs) = wait else {
        if ctx.json {
            return print_json(raw, None);
        }
        err(&sanitize(&format!(
            "batch service {name} is {} (atelier batch get {name})",
            cell(value, "status")
        )));
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let reply = ctx.api.get(&["v1", BATCH, &id], &[]).await?;
        let status = cell(&reply.value, "status");
        match status.as_str() {
            "DEPLOYING" | "RUNNING" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            "DEPLOYING" | "RUNNING" => {
                return Err(CliError::other(format!(
                    "batch service {name} is still {status} after {secs} s ({} done)",
                    done(&reply.value)
                )));
            }
            "COMPLETED" => {
                if ctx.json {
                    return print_json(&reply.raw, None);
                }
                let manifests = reply
                    .value
                    .get("results")
                    .and_then(|r| r.get("manifests"))
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                err(&sanitize(&format!(
                    "batch service {name} is COMPLETED ({} done): {manifests}",
                    done(&reply.value)
                )));
                return Ok(());
            }
            _ => {
                return Err(CliError::other(format!(
                    "batch service {name} is {status}: {}",
                    cell(&reply.value, "status_reason")
                )));
            }
        }
    }
}
