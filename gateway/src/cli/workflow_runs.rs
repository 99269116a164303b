//! `atelier workflow run|runs|stop|retry|rerun|proceed|compare|log|delete-run`: a workflow's
//! runs (`docs/workflows.md`, Runs).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// A parameter's value, `name=value` (the value is read as JSON when it is JSON:
    /// `lr=0.01`, `layers=[1,2]`; otherwise as text). Repeat for more.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A storage's root, `name=/bucket/folder/`. Repeat for more.
    #[arg(long = "storage", value_name = "NAME=ROOT")]
    pub storages: Vec<String>,
    /// Partial execution: run only the steps of this scene. Repeat for more.
    #[arg(long = "scene")]
    pub scenes: Vec<String>,
    /// Partial execution: run only this step. Repeat for more.
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// The version to run (default: the newest).
    #[arg(long)]
    pub version: Option<u32>,
    /// A tag, `key=value`. Repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// One of your storage connections: the run's storage paths are in its object storage.
    #[arg(long)]
    pub connection: Option<String>,
    /// Wait until the run ends (or waits for input), then show it.
    #[arg(long)]
    pub wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// One run (its number): its steps.
    pub run: Option<String>,
    /// Only runs in this status (RUNNING, COMPLETED, FAILED, …).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs with this tag, `key=value`. Repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunRef {
    /// The workflow (name or id).
    pub workflow: String,
    /// The run's number (or id).
    pub run: String,
}

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// Retry this step (and what follows it); default: every failed and stopped step.
    #[arg(long)]
    pub step: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ProceedArgs {
    #[command(flatten)]
    pub run: RunRef,
    /// The waiting step.
    pub step: String,
    /// A delayed parameter's value, `name=value` (JSON when it is JSON). Repeat for more.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// Run numbers (default: the 10 newest).
    pub runs: Vec<u32>,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub run: RunRef,
    pub step: String,
}

const WORKFLOWS: &str = "workflows";

/// `name=value` pairs; values read as JSON when they parse, as text otherwise.
pub(super) fn pairs(
    list: &[String],
    what: &str,
    json_values: bool,
) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for item in list {
        let Some((k, v)) = item.split_once('=') else {
            return Err(CliError::other(format!(
                "{what} {item:?}: write it as NAME=VALUE"
            )));
        };
        let value = if json_values {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))
        } else {
            Value::String(v.to_string())
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn duration(v: &Value) -> String {
    match v.get("duration_ms").and_then(Value::as_i64) {
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{} s", ms / 1000),
        None => "-".into(),
    }
}

fn show_run(v: &Value) {
    let mut head = format!(
        "run {} of {} (version {}): {}",
        cell(v, "number"),
        cell(v, "workflow"),
        cell(v, "version"),
        cell(v, "status")
    );
    if let Some(r) = v.get("status_reason").and_then(Value::as_str) {
        head.push_str(&format!(" — {r}"));
    }
    out(&sanitize(&head));
    let mut t = Table::new(&["STEP", "TYPE", "STATUS", "ATTEMPT", "DURATION", "REASON"]);
    for s in v
        .get("steps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        t.row(vec![
            cell(s, "name"),
            cell(s, "step_type"),
            cell(s, "status"),
            cell(s, "attempt"),
            duration(s),
            super::table::truncate(&cell(s, "reason"), 60),
        ]);
    }
    out(&t.render());
}

pub async fn start(ctx: &Ctx, a: RunArgs) -> Result<(), CliError> {
    let storages: Map<String, Value> = pairs(&a.storages, "--storage", false)?;
    let mut body = json!({
        "parameters": pairs(&a.params, "--param", true)?,
        "storages": storages,
        "scenes": a.scenes,
        "steps": a.steps,
        "tags": pairs(&a.tags, "--tag", false)?,
    });
    if let Some(v) = a.version {
        body["version"] = json!(v);
    }
    if let Some(c) = &a.connection {
        body["connection"] = json!(c);
    }
    let reply = ctx
        .api
        .post(&["v1", WORKFLOWS, &a.workflow, "runs"], Some(&body))
        .await?;
    let number = cell(&reply.value, "number");
    if !a.wait {
        if ctx.json {
            return print_json(&reply.raw, None);
        }
        err(&sanitize(&format!(
            "started run {number} of workflow {}",
            a.workflow
        )));
        return Ok(());
    }
    // Bounded: a day of waiting at most, then the run as it is.
    let mut reply = reply;
    for _ in 0..(24 * 3600 * 2) {
        let status = cell(&reply.value, "status");
        if matches!(
            status.as_str(),
            "COMPLETED" | "FAILED" | "STOPPED" | "AWAITING_INPUT"
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        reply = ctx
            .api
            .get(&["v1", WORKFLOWS, &a.workflow, "runs", &number], &[])
            .await?;
    }
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    show_run(&reply.value);
    if cell(&reply.value, "status") == "FAILED" {
        return Err(CliError::other(format!("run {number} failed")));
    }
    Ok(())
}

pub async fn list(ctx: &Ctx, a: RunsArgs) -> Result<(), CliError> {
    if let Some(run) = a.run {
        let reply = ctx
            .api
            .get(&["v1", WORKFLOWS, &a.workflow, "runs", &run], &[])
            .await?;
        if ctx.json {
            return print_json(&reply.raw, None);
        }
        show_run(&reply.value);
        return Ok(());
    }
    let mut query = Vec::new();
    if let Some(s) = &a.status {
        query.push(("status", s.clone()));
    }
    if !a.tags.is_empty() {
        query.push(("tag", a.tags.join(",")));
    }
    let reply = ctx
        .api
        .get(&["v1", WORKFLOWS, &a.workflow, "runs"], &query)
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let mut t = Table::new(&[
        "RUN", "STATUS", "VERSION", "TRIGGER", "STARTED", "DURATION", "REASON",
    ]);
    for v in items(&reply.value)? {
        t.row(vec![
            cell(v, "number"),
            cell(v, "status"),
            cell(v, "version"),
            cell(v, "trigger"),
            short_time(v, "created_at"),
            duration(v),
            super::table::truncate(&cell(v, "status_reason"), 50),
        ]);
    }
    out(&t.render());
    Ok(())
}

/// `stop`, `retry`, `rerun`: a POST on the run, then the run shown.
pub async fn act(
    ctx: &Ctx,
    r: &RunRef,
    tail: &[&str],
    body: Option<&Value>,
    done: &str,
) -> Result<(), CliError> {
    let mut path = vec!["v1", WORKFLOWS, &r.workflow, "runs", &r.run];
    path.extend_from_slice(tail);
    let reply = ctx.api.post(&path, body).await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    err(&sanitize(&format!(
        "{done}: run {} of workflow {} is {}",
        cell(&reply.value, "number"),
        r.workflow,
        cell(&reply.value, "status")
    )));
    Ok(())
}

pub async fn retry(ctx: &Ctx, a: RetryArgs) -> Result<(), CliError> {
    match &a.step {
        Some(s) => act(ctx, &a.run, &["steps", s, "retry"], None, "retried").await,
        None => act(ctx, &a.run, &["retry"], None, "retried").await,
    }
}

pub async fn proceed(ctx: &Ctx, a: ProceedArgs) -> Result<(), CliError> {
    let body = json!({ "values": pairs(&a.params, "--param", true)? });
    act(
        ctx,
        &a.run,
        &["steps", &a.step, "proceed"],
        Some(&body),
        "proceeded",
    )
    .await
}

pub async fn compare(ctx: &Ctx, a: CompareArgs) -> Result<(), CliError> {
    let runs = a
        .runs
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let query = if runs.is_empty() {
        vec![]
    } else {
        vec![("runs", runs)]
    };
    let reply = ctx
        .api
        .get(&["v1", WORKFLOWS, &a.workflow, "runs", "compare"], &query)
        .await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let empty = Vec::new();
    let runs = reply
        .value
        .get("runs")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let metrics: Vec<String> = reply
        .value
        .get("metrics")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    let mut headers = vec!["RUN".to_string(), "STATUS".into(), "PARAMETERS".into()];
    headers.extend(metrics.iter().map(|m| m.to_uppercase()));
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut t = Table::new(&refs);
    for r in runs {
        let mut row = vec![
            cell(r, "number"),
            cell(r, "status"),
            super::table::truncate(
                &r.get("parameters")
                    .map(Value::to_string)
                    .unwrap_or_default(),
                40,
            ),
        ];
        for m in &metrics {
            row.push(
                r.pointer(&format!(
                    "/metrics/{}",
                    m.replace('~', "~0").replace('/', "~1")
                ))
                .map(Value::to_string)
                .unwrap_or_else(|| "-".into()),
            );
        }
        t.row(row);
    }
    out(&t.render());
    Ok(())
}

pub async fn log(ctx: &Ctx, a: LogArgs) -> Result<(), CliError> {
    let mut text = Vec::new();
    ctx.api
        .stream_text(
            &[
                "v1",
                WORKFLOWS,
                &a.run.workflow,
                "runs",
                &a.run.run,
                "steps",
                &a.step,
                "log",
            ],
            &[],
            |chunk| text.extend_from_slice(chunk),
        )
        .await?;
    out(&sanitize(&String::from_utf8_lossy(&text)));
    Ok(())
}

pub async fn delete(ctx: &Ctx, r: RunRef) -> Result<(), CliError> {
    ctx.api
        .delete(&["v1", WORKFLOWS, &r.workflow, "runs", &r.run])
        .await?;
    if !ctx.json {
        err(&sanitize(&format!(
            "deleted run {} of workflow {}",
            r.run, r.workflow
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_pairs() {
        let p = pairs(
            &["lr=0.01".into(), "name=resnet".into(), "l=[1,2]".into()],
            "--param",
            true,
        )
        .unwrap();
        assert_eq!(p["lr"], json!(0.01));
        assert_eq!(p["name"], json!("resnet"));
        assert_eq!(p["l"], json!([1, 2]));
        let s = pairs(&["out=/b/x/".into()], "--storage", false).unwrap();
        assert_eq!(s["out"], json!("/b/x/"));
        let e = pairs(&["nothing".into()], "--param", true).unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
    }
}
