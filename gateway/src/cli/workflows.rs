//! `atelier workflow create|publish|list|get|versions|delete`: workflow definitions and
//! their versions (`docs/workflows.md`); the run commands are in `workflow_runs`, the
//! schedule and trigger token ones in `workflow_triggers`.

use reqwest::Method;
use serde_json::Value;

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Create a workflow from a definition file (JSON, or YAML for `.yaml`/`.yml`).
    Create(FileArgs),
    /// Publish a new definition of an existing workflow (a new version when it changed).
    Publish(PublishArgs),
    /// List your workflows.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a workflow: its newest version, or `--version N`, as JSON.
    Get(GetArgs),
    /// A workflow's versions.
    Versions(WorkflowArg),
    /// Delete a workflow, its versions and its run records (jobs and services its runs
    /// started are left as they are).
    #[command(visible_alias = "rm")]
    Delete(WorkflowArg),
    /// What a run takes: parameters (type, default, delay), storages, scenes.
    Config(GetArgs),
    /// Copy a workflow under another name (default `<name>_copy`): to run it twice at once.
    Copy(CopyArgs),
    /// Start a run (`-p name=value` parameters, `--storage name=/bucket/root/`).
    Run(super::workflow_runs::RunArgs),
    /// A workflow's runs, or one run's steps.
    Runs(super::workflow_runs::RunsArgs),
    /// Stop a run (its training jobs with it).
    Stop(super::workflow_runs::RunRef),
    /// Go on with a failed or stopped run: the failed step (or `--step`) and what follows.
    Retry(super::workflow_runs::RetryArgs),
    /// Start a new run with an earlier run's parameters, storages and version.
    Rerun(super::workflow_runs::RunRef),
    /// Give a waiting step its delayed parameters (`-p name=value`).
    Proceed(super::workflow_runs::ProceedArgs),
    /// Runs side by side: parameters and each step's metrics.
    Compare(super::workflow_runs::CompareArgs),
    /// A step's log (its tail).
    Log(super::workflow_runs::LogArgs),
    /// Delete an ended run's record.
    DeleteRun(super::workflow_runs::RunRef),
    /// Set a cron schedule (`--cron "0 3 * * *" --tz Europe/Paris`), or `--show` or
    /// `--delete` it.
    Schedule(super::workflow_triggers::ScheduleArgs),
    /// Make a webhook trigger token (shown once; replaces the old one), or `--revoke` it.
    TriggerToken(super::workflow_triggers::TriggerTokenArgs),
}

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// The definition: JSON, or YAML when the file ends in `.yaml` or `.yml`.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The workflow (name or id); by default the definition's name.
    pub workflow: Option<String>,
    #[command(flatten)]
    pub file: FileArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's workflows (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// A version other than the newest.
    #[arg(long)]
    pub version: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// The workflow (name or id).
    pub workflow: String,
    /// The copy's name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct WorkflowArg {
    /// The workflow (name or id).
    pub workflow: String,
}

const WORKFLOWS: &str = "workflows";

/// The file's bytes and its content type (by its extension).
fn definition(a: &FileArgs) -> Result<(Vec<u8>, &'static str), CliError> {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| CliError::other(format!("-f {}: {e}", a.file.display())))?;
    let yaml = a
        .file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    Ok((
        bytes,
        if yaml {
            "application/yaml"
        } else {
            "application/json"
        },
    ))
}

/// The `name` of a definition file, for `publish` without a workflow named.
fn name_in(bytes: &[u8], content_type: &str) -> Option<String> {
    if content_type == "application/json" {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        return v.get("name")?.as_str().map(str::to_string);
    }
    // YAML: the top-level `name:` line (the server checks the whole document).
    std::str::from_utf8(bytes).ok()?.lines().find_map(|l| {
        let v = l.strip_prefix("name:")?.trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

pub async fn run(ctx: &Ctx, cmd: WorkflowCommand) -> Result<(), CliError> {
    use super::workflow_runs as runs;
    match cmd {
        WorkflowCommand::Config(a) => {
            let query = match a.version {
                Some(v) => vec![("version", v.to_string())],
                None => vec![],
            };
            let reply = ctx
                .api
                .get(&["v1", WORKFLOWS, &a.workflow, "config"], &query)
                .await?;
            print_json(&reply.raw, None)
        }
        WorkflowCommand::Copy(a) => {
            let body = serde_json::json!({ "name": a.name });
            let reply = ctx
                .api
                .post(&["v1", WORKFLOWS, &a.workflow, "copy"], Some(&body))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "copied workflow {} to {}",
                a.workflow,
                super::table::text(&reply.value, "name")
            )));
            Ok(())
        }
        WorkflowCommand::Run(a) => runs::start(ctx, a).await,
        WorkflowCommand::Runs(a) => runs::list(ctx, a).await,
        WorkflowCommand::Stop(r) => runs::act(ctx, &r, &["stop"], None, "stopping").await,
        WorkflowCommand::Retry(a) => runs::retry(ctx, a).await,
        WorkflowCommand::Rerun(r) => runs::act(ctx, &r, &["rerun"], None, "started").await,
        WorkflowCommand::Proceed(a) => runs::proceed(ctx, a).await,
        WorkflowCommand::Compare(a) => runs::compare(ctx, a).await,
        WorkflowCommand::Log(a) => runs::log(ctx, a).await,
        WorkflowCommand::DeleteRun(r) => runs::delete(ctx, r).await,
        WorkflowCommand::Schedule(a) => super::workflow_triggers::schedule(ctx, a).await,
        WorkflowCommand::TriggerToken(a) => super::workflow_triggers::trigger_token(ctx, a).await,
        WorkflowCommand::Create(a) => {
            let (body, ct) = definition(&a)?;
            let reply = ctx
                .api
                .send_raw(Method::POST, &["v1", WORKFLOWS], ct, body)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            err(&sanitize(&format!(
                "created workflow {} ({}), version {}",
                super::table::text(v, "name"),
                super::table::text(v, "id"),
                cell(v, "version")
            )));
            Ok(())
        }
        WorkflowCommand::Publish(a) => {
            let (body, ct) = definition(&a.file)?;
            let name = match a.workflow.or_else(|| name_in(&body, ct)) {
                Some(n) => n,
                None => {
                    return Err(CliError::other(format!(
                        "{}: no name in the definition; name the workflow",
                        a.file.file.display()
                    )));
                }
            };
            let reply = ctx
                .api
                .send_raw(Method::PUT, &["v1", WORKFLOWS, &name], ct, body)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            let what = if v.get("changed").and_then(Value::as_bool) == Some(true) {
                "published as version"
            } else {
                "unchanged: the definition means the same as version"
            };
            err(&sanitize(&format!(
                "workflow {} {what} {}",
                super::table::text(v, "name"),
                cell(v, "version")
            )));
            Ok(())
        }
        WorkflowCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", WORKFLOWS], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let mut headers = vec!["NAME", "VERSION", "STEPS", "DESCRIPTION", "UPDATED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for v in items(&reply.value)? {
                let steps = v
                    .pointer("/definition/steps")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let mut row = vec![
                    cell(v, "name"),
                    cell(v, "version"),
                    steps.to_string(),
                    super::table::truncate(&cell(v, "description"), 40),
                    short_time(v, "updated_at"),
                ];
                if a.all {
                    row.insert(1, cell(v, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        WorkflowCommand::Get(a) => {
            let reply = match a.version {
                Some(n) => {
                    let n = n.to_string();
                    ctx.api
                        .get(&["v1", WORKFLOWS, &a.workflow, "versions", &n], &[])
                        .await?
                }
                None => ctx.api.get(&["v1", WORKFLOWS, &a.workflow], &[]).await?,
            };
            // The definition is the point: JSON either way.
            print_json(&reply.raw, None)
        }
        WorkflowCommand::Versions(a) => {
            let reply = ctx
                .api
                .get(&["v1", WORKFLOWS, &a.workflow, "versions"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let mut t = Table::new(&["VERSION", "DIGEST", "CREATED"]);
            for v in items(&reply.value)? {
                let digest = cell(v, "digest");
                t.row(vec![
                    cell(v, "version"),
                    digest.chars().take(12).collect(),
                    short_time(v, "created_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        WorkflowCommand::Delete(a) => {
            ctx.api.delete(&["v1", WORKFLOWS, &a.workflow]).await?;
            if !ctx.json {
                err(&sanitize(&format!("deleted workflow {}", a.workflow)));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_finds_the_definitions_name() {
        assert_eq!(
            name_in(br#"{"name": "etl", "steps": []}"#, "application/json").as_deref(),
            Some("etl")
        );
        assert_eq!(
            name_in(b"desc: x\nname: 'etl'\nsteps: []\n", "application/yaml").as_deref(),
            Some("etl")
        );
        assert_eq!(name_in(b"steps: []\n", "application/yaml"), None);
        assert_eq!(name_in(b"{not json", "application/json"), None);
    }
}
