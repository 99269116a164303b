//! `atelier workflow schedule|trigger-token`: a workflow's cron schedule and its webhook
//! trigger token (`docs/workflows.md`, Schedules and triggers).

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::CliError;
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};
use super::workflow_runs::pairs;

#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// Standard 5-field cron: minute hour day-of-month month day-of-week (`"0 3 * * *"`:
    /// every day at 03:00).
    #[arg(long, conflicts_with_all = ["show", "delete"])]
    pub cron: Option<String>,
    /// The time zone the pattern is read in (an IANA name; default UTC).
    #[arg(long = "tz", value_name = "ZONE", requires = "cron")]
    pub timezone: Option<String>,
    /// A parameter's value for the scheduled runs, `name=value` (JSON when it is JSON).
    /// Repeat for more.
    #[arg(
        short = 'p',
        long = "param",
        value_name = "NAME=VALUE",
        requires = "cron"
    )]
    pub params: Vec<String>,
    /// A storage's root for the scheduled runs, `name=/bucket/folder/`. Repeat for more.
    #[arg(long = "storage", value_name = "NAME=ROOT", requires = "cron")]
    pub storages: Vec<String>,
    /// One of your storage connections: the scheduled runs' storage paths are in it.
    #[arg(long, requires = "cron")]
    pub connection: Option<String>,
    /// Keep the schedule but fire nothing.
    #[arg(long, requires = "cron")]
    pub disable: bool,
    /// Show the schedule and its recent firings.
    #[arg(long, conflicts_with = "delete")]
    pub show: bool,
    /// Remove the schedule.
    #[arg(long)]
    pub delete: bool,
}

#[derive(clap::Args, Debug)]
pub struct TriggerTokenArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// Revoke the workflow's trigger token (without it: create one, or replace the old).
    #[arg(long)]
    pub revoke: bool,
}

const WORKFLOWS: &str = "workflows";

fn show(v: &Value) {
    let state = if v.get("enabled").and_then(Value::as_bool) == Some(true) {
        format!("next at {}", cell(v, "next_due"))
    } else {
        "disabled".into()
    };
    out(&sanitize(&format!(
        "workflow {}: {:?} in {} ({state})",
        cell(v, "workflow"),
        cell(v, "cron"),
        cell(v, "timezone"),
    )));
    let mut t = Table::new(&["DUE", "FIRED", "OUTCOME"]);
    for f in v
        .get("firings")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        t.row(vec![
            short_time(f, "due_at"),
            short_time(f, "fired_at"),
            super::table::truncate(&cell(f, "detail"), 80),
        ]);
    }
    out(&t.render());
}

pub async fn schedule(ctx: &Ctx, a: ScheduleArgs) -> Result<(), CliError> {
    let path = ["v1", WORKFLOWS, &a.workflow, "schedule"];
    if a.delete {
        ctx.api.delete(&path).await?;
        if !ctx.json {
            err(&sanitize(&format!(
                "deleted the schedule of workflow {}",
                a.workflow
            )));
        }
        return Ok(());
    }
    let reply = match &a.cron {
        Some(cron) => {
            let storages: Map<String, Value> = pairs(&a.storages, "--storage", false)?;
            let mut body = json!({
                "cron": cron,
                "timezone": a.timezone.as_deref().unwrap_or("UTC"),
                "parameters": pairs(&a.params, "--param", true)?,
                "storages": storages,
                "enabled": !a.disable,
            });
            if let Some(c) = &a.connection {
                body["connection"] = json!(c);
            }
            ctx.api
                .call(reqwest::Method::PUT, &path, &[], Some(&body))
                .await?
        }
        None if a.show => ctx.api.get(&path, &[]).await?,
        None => {
            return Err(CliError::other(
                "give --cron PATTERN (with --tz, -p, --storage, --disable), --show or --delete",
            ));
        }
    };
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    show(&reply.value);
    Ok(())
}

pub async fn trigger_token(ctx: &Ctx, a: TriggerTokenArgs) -> Result<(), CliError> {
    let path = ["v1", WORKFLOWS, &a.workflow, "trigger-token"];
    if a.revoke {
        ctx.api.delete(&path).await?;
        if !ctx.json {
            err(&sanitize(&format!(
                "revoked the trigger token of workflow {}",
                a.workflow
            )));
        }
        return Ok(());
    }
    let reply = ctx.api.post(&path, None).await?;
    if ctx.json {
        return print_json(&reply.raw, None);
    }
    let v = &reply.value;
    // The token alone on stdout, for a script; the rest on stderr.
    out(&sanitize(&cell(v, "token")));
    err(&sanitize(&format!(
        "the trigger token of workflow {}, shown this once (a new one replaces it):\n  \
         curl -X POST -H 'Authorization: Bearer <token>' -H 'Content-Type: application/json' \
         -d '{{\"parameters\": {{}}}}' {}{}",
        cell(v, "workflow"),
        ctx.api.base(),
        cell(v, "url"),
    )));
    Ok(())
}
