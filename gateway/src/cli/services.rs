//! `atelier service deploy|list|get|start|stop|restart|update|delete|events|logs|instances|
//! delete-instance|predict`: real-time services.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum ServiceCommand {
    /// Deploy model versions as a real-time service. `--model NAME:VERSION[:WEIGHT]`, once
    /// per version (weights sum to 100; one version takes all).
    Deploy(Box<DeployArgs>),
    /// List your services.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a service.
    Get(ServiceArg),
    /// Start a stopped or failed service.
    Start(WaitArgs),
    /// Stop a service (its settings stay).
    Stop(ServiceArg),
    /// Restart a running service.
    Restart(WaitArgs),
    /// Change a service's settings (a running one switches when the new ones are up).
    Update(Box<UpdateArgs>),
    /// Delete a service (its model versions are free again).
    #[command(visible_alias = "rm")]
    Delete(ServiceArg),
    /// A service's events.
    Events(ServiceArg),
    /// A service's log lines (the gateway's, its processor's), oldest first.
    Logs(LogsArgs),
    /// A service's instances (engine instances, or the built-in engine's sessions).
    Instances(ServiceArg),
    /// Delete an engine instance: a new one takes its place.
    DeleteInstance(InstanceArg),
    /// Call a service: the body from --data or a file (JSON), or --file NAME=PATH for a
    /// multipart form; prints the answer.
    Predict(PredictArgs),
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The service's name: 1-64 of A-Z a-z 0-9 - _.
    pub name: String,
    /// A model version: NAME:VERSION or NAME:VERSION:WEIGHT (repeat for several).
    #[arg(long = "model", required = true, value_name = "NAME:VERSION[:WEIGHT]")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub version: VersionArgs,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Deploy timeout in minutes (3-120) [default: 20].
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Stop after this many hours (1-24) [default: 1].
    #[arg(long, value_name = "HOURS", conflicts_with = "no_auto_stop")]
    pub auto_stop: Option<u32>,
    /// Never stop by itself.
    #[arg(long)]
    pub no_auto_stop: bool,
    /// Calls per second; more are answered 429.
    #[arg(long)]
    pub traffic_limit: Option<u32>,
    /// The largest request body in MB [default: 12].
    #[arg(long)]
    pub body_limit_mb: Option<u32>,
    /// A call's timeout in seconds [default: 40].
    #[arg(long)]
    pub call_timeout: Option<u32>,
    /// Let apps bound to the service call it (with X-Apig-AppCode or apikey).
    #[arg(long)]
    pub app_auth: bool,
    /// A routing rule, 'EXPR=>VERSION' or 'EXPR=>VERSION;Header=Value' (repeat, in order;
    /// at most 10), e.g. "#HEADER_version == '0.0.2'=>0.0.2;X-Cfg=A".
    #[arg(
        long = "rule",
        value_name = "EXPR=>VERSION[;HEADER=VALUE]",
        conflicts_with = "rules_file"
    )]
    pub rules: Vec<String>,
    /// The routing rules as a JSON file: [{"setting", "version", "header_name", "header_value"}].
    #[arg(long, value_name = "FILE")]
    pub rules_file: Option<std::path::PathBuf>,
    /// Wait until it is RUNNING (or failed), at most this many seconds.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
    pub wait: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The service (name or id).
    pub service: String,
    #[arg(long = "model", value_name = "NAME:VERSION[:WEIGHT]")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub version: VersionArgs,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_name = "HOURS", conflicts_with = "no_auto_stop")]
    pub auto_stop: Option<u32>,
    #[arg(long)]
    pub no_auto_stop: bool,
    #[arg(long)]
    pub traffic_limit: Option<u32>,
    #[arg(long)]
    pub body_limit_mb: Option<u32>,
    #[arg(long)]
    pub call_timeout: Option<u32>,
    /// Turn app authentication on or off.
    #[arg(long, value_name = "true|false")]
    pub app_auth: Option<bool>,
    /// Replace the routing rules: 'EXPR=>VERSION[;Header=Value]' (repeat, in order).
    #[arg(long = "rule", value_name = "EXPR=>VERSION[;HEADER=VALUE]", conflicts_with_all = ["rules_file", "no_rules"])]
    pub rules: Vec<String>,
    /// Replace the routing rules with a JSON file's.
    #[arg(long, value_name = "FILE", conflicts_with = "no_rules")]
    pub rules_file: Option<std::path::PathBuf>,
    /// Remove the routing rules.
    #[arg(long)]
    pub no_rules: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's services (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct ServiceArg {
    /// The service (name or id).
    pub service: String,
}

#[derive(clap::Args, Debug)]
pub struct InstanceArg {
    /// The service (name or id).
    pub service: String,
    /// The instance's id (`atelier service instances`).
    pub instance: String,
}

/// What each version of a deploy or an update gets.
#[derive(clap::Args, Debug, Default)]
pub struct VersionArgs {
    /// Instances of each version.
    #[arg(long)]
    pub instances: Option<u32>,
    /// The flavor of each instance (models on a container or process engine).
    #[arg(long)]
    pub flavor: Option<String>,
    /// An environment variable of the model's engine, KEY=VALUE (repeat).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub envs: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The service (name or id).
    pub service: String,
    /// Wait until it is RUNNING (or failed), at most this many seconds.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
    pub wait: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The service (name or id).
    pub service: String,
    /// From: 5m, 30m, 1h (any <n>s|m|h|d back from now) or an RFC 3339 time [default: 5m].
    #[arg(long)]
    pub since: Option<String>,
    /// Until (not included): an RFC 3339 time or a duration back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only lines that match: words (AND), "a phrase", ? and * in a word, && || AND OR.
    #[arg(long)]
    pub q: Option<String>,
    /// The newest this many lines [default: 1000, at most 10000].
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The service (name or id).
    pub service: String,
    /// The JSON body.
    #[arg(long, short = 'd', conflicts_with_all = ["input", "file"])]
    pub data: Option<String>,
    /// A file holding the JSON body.
    #[arg(long, short = 'i', conflicts_with = "file")]
    pub input: Option<std::path::PathBuf>,
    /// A multipart form field with a file, NAME=PATH (repeat).
    #[arg(long = "file", short = 'F', value_name = "NAME=PATH")]
    pub file: Vec<String>,
    /// An API path of the service (its config's apis[].url), e.g. /predictions/poetry.
    #[arg(long, default_value = "")]
    pub path: String,
}

/// `--rule`s or `--rules-file` into the API's `custom_settings`; none given: `None`.
fn custom_settings(
    rules: &[String],
    file: Option<&std::path::Path>,
) -> Result<Option<Value>, CliError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::other(format!("{}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::other(format!("{}: not JSON: {e}", path.display())))?;
        if !v.is_array() {
            return Err(CliError::other(format!(
                "{}: expected a JSON array of rules",
                path.display()
            )));
        }
        return Ok(Some(v));
    }
    if rules.is_empty() {
        return Ok(None);
    }
    rules
        .iter()
        .map(|r| rule(r))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| Some(Value::Array(v)))
}

/// `EXPR=>VERSION[;Header=Value]` into one rule (the last `=>` splits: an expression may
/// hold `=>` only inside a string).
fn rule(text: &str) -> Result<Value, CliError> {
    let bad = || {
        CliError::other(format!(
            "--rule {text:?}: expected EXPR=>VERSION or EXPR=>VERSION;Header=Value"
        ))
    };
    let (expr, rest) = text.rsplit_once("=>").ok_or_else(bad)?;
    let (version, header) = match rest.split_once(';') {
        Some((v, h)) => (v, Some(h)),
        None => (rest, None),
    };
    let mut rule = Map::new();
    rule.insert("setting".into(), expr.trim().into());
    rule.insert("version".into(), version.trim().into());
    if let Some(h) = header {
        let (name, value) = h.split_once('=').ok_or_else(bad)?;
        rule.insert("header_name".into(), name.trim().into());
        rule.insert("header_value".into(), value.trim().into());
    }
    Ok(Value::Object(rule))
}

/// `NAME:VERSION[:WEIGHT]` into the API's form.
fn model_choice(text: &str, each: &VersionArgs) -> Result<Value, CliError> {
    let parts: Vec<&str> = text.split(':').collect();
    let (model, version, weight) = match parts.as_slice() {
        [m, v] => (*m, *v, None),
        [m, v, w] => (
            *m,
            *v,
            Some(w.parse::<u32>().map_err(|_| {
                CliError::other(format!(
                    "--model {text:?}: the weight is a number of percent"
                ))
            })?),
        ),
        _ => {
            return Err(CliError::other(format!(
                "--model {text:?}: NAME:VERSION or NAME:VERSION:WEIGHT"
            )));
        }
    };
    let mut m = json!({"model": model, "version": version});
    if let Some(w) = weight {
        m["weight"] = w.into();
    }
    if let Some(n) = each.instances {
        m["instances"] = n.into();
    }
    if let Some(f) = &each.flavor {
        m["flavor"] = f.clone().into();
    }
    if !each.envs.is_empty() {
        let mut envs = Map::new();
        for kv in &each.envs {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(CliError::other(format!("--env {kv:?}: KEY=VALUE")));
            };
            envs.insert(k.to_owned(), v.into());
        }
        m["envs"] = Value::Object(envs);
    }
    Ok(m)
}

fn auto_stop(hours: Option<u32>, off: bool) -> Option<Value> {
    if off {
        Some(json!({"enabled": false}))
    } else {
        hours.map(|h| json!({"enabled": true, "hours": h}))
    }
}

const SERVICES: &str = "services";

pub async fn run(ctx: &Ctx, cmd: ServiceCommand) -> Result<(), CliError> {
    match cmd {
        ServiceCommand::Deploy(a) => {
            let mut body = Map::new();
            body.insert("name".into(), a.name.clone().into());
            body.insert("description".into(), a.description.clone().into());
            let models = a
                .models
                .iter()
                .map(|m| model_choice(m, &a.version))
                .collect::<Result<Vec<_>, _>>()?;
            body.insert("models".into(), models.into());
            if let Some(t) = a.timeout {
                body.insert("timeout_minutes".into(), t.into());
            }
            if let Some(v) = auto_stop(a.auto_stop, a.no_auto_stop) {
                body.insert("auto_stop".into(), v);
            }
            if let Some(v) = a.traffic_limit {
                body.insert("traffic_limit".into(), v.into());
            }
            if let Some(v) = a.body_limit_mb {
                body.insert("body_limit_mb".into(), v.into());
            }
            if let Some(v) = a.call_timeout {
                body.insert("call_timeout_seconds".into(), v.into());
            }
            if a.app_auth {
                body.insert("app_auth".into(), true.into());
            }
            if let Some(rules) = custom_settings(&a.rules, a.rules_file.as_deref())? {
                body.insert("custom_settings".into(), rules);
            }
            let reply = ctx
                .api
                .post(&["v1", SERVICES], Some(&Value::Object(body)))
                .await?;
            settle(ctx, &reply.raw, &reply.value, a.wait).await
        }
        ServiceCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", SERVICES], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec!["NAME", "STATUS", "MODELS", "URL", "CREATED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for s in items(&reply.value)? {
                let mut row = vec![
                    cell(s, "name"),
                    cell(s, "status"),
                    models_cell(s),
                    cell(s, "url"),
                    short_time(s, "created_at"),
                ];
                if a.all {
                    row.insert(1, cell(s, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        ServiceCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", SERVICES, &a.service], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let s = &reply.value;
            for (label, key) in [
                ("Name", "name"),
                ("Id", "id"),
                ("Owner", "owner"),
                ("Status", "status"),
                ("Reason", "status_reason"),
                ("URL", "url"),
                ("Description", "description"),
                ("Traffic limit", "traffic_limit"),
                ("Stops at", "stop_at"),
                ("Created", "created_at"),
            ] {
                if s.get(key).is_some_and(|v| !v.is_null()) {
                    out(&sanitize(&format!("{label:<14} {}", cell(s, key))));
                }
            }
            out(&sanitize(&format!("{:<14} {}", "Models", models_cell(s))));
            out(&sanitize(&format!(
                "{:<14} {}",
                "App auth",
                cell(s, "app_auth")
            )));
            let rules = s
                .get("custom_settings")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, r) in rules.iter().enumerate() {
                let header = match (r.get("header_name"), r.get("header_value")) {
                    (Some(n), Some(v)) => format!(
                        " (adds {}: {})",
                        n.as_str().unwrap_or(""),
                        v.as_str().unwrap_or("")
                    ),
                    _ => String::new(),
                };
                out(&sanitize(&format!(
                    "{:<14} {} => {}{header}",
                    if i == 0 { "Rules" } else { "" },
                    cell(r, "setting"),
                    cell(r, "version"),
                )));
            }
            Ok(())
        }
        ServiceCommand::Start(a) => {
            let reply = ctx
                .api
                .post(&["v1", SERVICES, &a.service, "start"], None)
                .await?;
            settle(ctx, &reply.raw, &reply.value, a.wait).await
        }
        ServiceCommand::Restart(a) => {
            let reply = ctx
                .api
                .post(&["v1", SERVICES, &a.service, "restart"], None)
                .await?;
            settle(ctx, &reply.raw, &reply.value, a.wait).await
        }
        ServiceCommand::Stop(a) => {
            let reply = ctx
                .api
                .post(&["v1", SERVICES, &a.service, "stop"], None)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "service {} is {}",
                a.service,
                cell(&reply.value, "status")
            )));
            Ok(())
        }
        ServiceCommand::Update(a) => {
            let mut body = Map::new();
            if !a.models.is_empty() {
                let models = a
                    .models
                    .iter()
                    .map(|m| model_choice(m, &a.version))
                    .collect::<Result<Vec<_>, _>>()?;
                body.insert("models".into(), models.into());
            }
            if let Some(d) = a.description {
                body.insert("description".into(), d.into());
            }
            if let Some(v) = auto_stop(a.auto_stop, a.no_auto_stop) {
                body.insert("auto_stop".into(), v);
            }
            if let Some(v) = a.traffic_limit {
                body.insert("traffic_limit".into(), v.into());
            }
            if let Some(v) = a.body_limit_mb {
                body.insert("body_limit_mb".into(), v.into());
            }
            if let Some(v) = a.call_timeout {
                body.insert("call_timeout_seconds".into(), v.into());
            }
            if let Some(v) = a.app_auth {
                body.insert("app_auth".into(), v.into());
            }
            if a.no_rules {
                body.insert("custom_settings".into(), json!([]));
            } else if let Some(rules) = custom_settings(&a.rules, a.rules_file.as_deref())? {
                body.insert("custom_settings".into(), rules);
            }
            let reply = ctx
                .api
                .patch(&["v1", SERVICES, &a.service], &Value::Object(body))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "service {} is {}",
                a.service,
                cell(&reply.value, "status")
            )));
            Ok(())
        }
        ServiceCommand::Delete(a) => {
            ctx.api.delete(&["v1", SERVICES, &a.service]).await?;
            err(&sanitize(&format!("deleted service {}", a.service)));
            Ok(())
        }
        ServiceCommand::Events(a) => {
            let reply = ctx
                .api
                .get(&["v1", SERVICES, &a.service, "events"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            out(&super::table::events(items(&reply.value)?));
            Ok(())
        }
        ServiceCommand::Logs(a) => logs(ctx, SERVICES, a).await,
        ServiceCommand::Instances(a) => {
            let reply = ctx
                .api
                .get(&["v1", SERVICES, &a.service, "instances"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&[
                "ID", "MODEL", "VERSION", "ENGINE", "PHASE", "RESTARTS", "ERROR",
            ]);
            for i in items(&reply.value)? {
                t.row(vec![
                    cell(i, "id"),
                    cell(i, "model"),
                    cell(i, "version"),
                    cell(i, "engine"),
                    cell(i, "phase"),
                    cell(i, "restarts"),
                    cell(i, "error"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        ServiceCommand::DeleteInstance(a) => {
            ctx.api
                .delete(&["v1", SERVICES, &a.service, "instances", &a.instance])
                .await?;
            err(&sanitize(&format!(
                "deleted instance {} of service {}; a new one takes its place",
                a.instance, a.service
            )));
            Ok(())
        }
        ServiceCommand::Predict(a) => predict(ctx, a).await,
    }
}

/// The log of `a.service` in `collection` (`services`, or `batch-services`).
pub(super) async fn logs(ctx: &Ctx, collection: &str, a: LogsArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    for (key, value) in [("since", a.since), ("until", a.until), ("q", a.q)] {
        if let Some(v) = value {
            query.push((key, v));
        }
    }
    if let Some(n) = a.limit {
        query.push(("limit", n.to_string()));
    }
    let reply = ctx
        .api
        .get(&["v1", collection, &a.service, "logs"], &query)
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let lines = reply
        .value
        .get("lines")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for l in &lines {
        // A line's own line breaks: indented continuation lines.
        let text = cell(l, "text");
        let mut parts = text.split('\n');
        let first = parts.next().unwrap_or_default();
        let (time, source) = (cell(l, "time"), cell(l, "source"));
        out(&sanitize(&format!("{time} {source} {first}")));
        for more in parts {
            out(&format!("    {}", sanitize(more)));
        }
    }
    if reply.value.get("truncated") == Some(&Value::Bool(true)) {
        err(&format!(
            "(more lines matched: these are the newest {}; narrow --since, --until or --q, or raise --limit)",
            lines.len()
        ));
    }
    Ok(())
}

fn models_cell(s: &Value) -> String {
    s.get("models")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{} {} ({}%)",
                        cell(m, "model"),
                        cell(m, "version"),
                        cell(m, "weight")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// After a deploy, start or restart: the reply, or (with --wait) the service once it is
/// RUNNING; a FAILED or ABNORMAL one is an error with its reason.
async fn settle(ctx: &Ctx, raw: &str, value: &Value, wait: Option<u64>) -> Result<(), CliError> {
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(secs) = wait else {
        if ctx.json {
            return print_json(raw, None);
        }
        err(&sanitize(&format!(
            "service {name} is {} (atelier service get {name})",
            cell(value, "status")
        )));
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let reply = ctx.api.get(&["v1", SERVICES, &id], &[]).await?;
        let status = cell(&reply.value, "status");
        match status.as_str() {
            "DEPLOYING" | "UPDATING" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            "DEPLOYING" | "UPDATING" => {
                return Err(CliError::other(format!(
                    "service {name} is still {status} after {secs} s"
                )));
            }
            "FAILED" | "ABNORMAL" => {
                return Err(CliError::other(format!(
                    "service {name} is {status}: {}",
                    cell(&reply.value, "status_reason")
                )));
            }
            _ => {
                if ctx.json {
                    return print_json(&reply.raw, None);
                }
                err(&sanitize(&format!(
                    "service {name} is {status}: call POST {}",
                    cell(&reply.value, "url")
                )));
                return Ok(());
            }
        }
    }
}

async fn predict(ctx: &Ctx, a: PredictArgs) -> Result<(), CliError> {
    let mut segments = vec!["v1", "infers", a.service.as_str()];
    let path = a.path.trim_matches('/').to_string();
    segments.extend(path.split('/').filter(|s| !s.is_empty()));
    let reply = if !a.file.is_empty() {
        let mut form = reqwest::multipart::Form::new();
        for f in &a.file {
            let Some((name, file)) = f.split_once('=') else {
                return Err(CliError::other(format!("--file {f:?}: NAME=PATH")));
            };
            let bytes =
                std::fs::read(file).map_err(|e| CliError::other(format!("--file {file}: {e}")))?;
            let file_name = std::path::Path::new(file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            form = form.part(
                name.to_string(),
                reqwest::multipart::Part::bytes(bytes).file_name(file_name),
            );
        }
        ctx.api.post_multipart(&segments, form).await?
    } else {
        let text = match (&a.data, &a.input) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .map_err(|e| CliError::other(format!("--input {}: {e}", p.display())))?,
            (None, None) => {
                return Err(CliError::other(
                    "give the body: --data JSON, --input FILE or --file NAME=PATH",
                ));
            }
        };
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::other(format!("the body is not JSON: {e}")))?;
        ctx.api.post(&segments, Some(&body)).await?
    };
    print_json(&reply.raw, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_typed() {
        assert_eq!(
            rule("#HEADER_version == '0.0.2' => 0.0.2").unwrap(),
            json!({"setting": "#HEADER_version == '0.0.2'", "version": "0.0.2"})
        );
        assert_eq!(
            rule("#HEADER_uid.hashCode() % 100 < 10=>0.0.1;X-Cfg=A").unwrap(),
            json!({"setting": "#HEADER_uid.hashCode() % 100 < 10", "version": "0.0.1",
                   "header_name": "X-Cfg", "header_value": "A"})
        );
        assert!(rule("#USER_NAME == 'a'").is_err());
        assert!(rule("#USER_NAME == 'a'=>0.0.1;X-Cfg").is_err());
    }
}
