//! `atelier search create|list|get|trials|events|stop|delete`: hyperparameter searches.

use serde_json::Value;

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum SearchCommand {
    /// Create a search from a JSON request file (the API's body: name, template,
    /// parameters, objective, algorithm, max_trials, parallel, early_stopping).
    Create(CreateArgs),
    /// List your searches.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a search and its best trial.
    Get(SearchArg),
    /// A search's trials: parameters, status, objective.
    Trials(SearchArg),
    /// The search's events.
    Events(SearchArg),
    /// Stop a search and its running trials.
    Stop(SearchArg),
    /// Delete a search and its trials' jobs; their objects in storage stay.
    #[command(visible_alias = "rm")]
    Delete(SearchArg),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The request, as JSON.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The search's name (overrides the file's).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's searches (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct SearchArg {
    /// The search (name or id).
    pub search: String,
}

const SEARCHES: &str = "training-searches";

fn objective(v: &Value) -> String {
    match v.get("objective").and_then(Value::as_f64) {
        Some(x) => x.to_string(),
        None => "-".into(),
    }
}

fn params(v: &Value) -> String {
    match v.get("parameters").and_then(Value::as_object) {
        Some(m) => sanitize(
            &m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        None => String::new(),
    }
}

pub async fn run(ctx: &Ctx, cmd: SearchCommand) -> Result<(), CliError> {
    match cmd {
        SearchCommand::Create(a) => {
            let text = std::fs::read_to_string(&a.file)
                .map_err(|e| CliError::other(format!("-f {}: {e}", a.file.display())))?;
            let mut body: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::other(format!("-f {}: {e}", a.file.display())))?;
            if !body.is_object() {
                return Err(CliError::other(format!(
                    "-f {}: a JSON object",
                    a.file.display()
                )));
            }
            if let Some(n) = a.name {
                body["name"] = n.into();
            }
            let reply = ctx.api.post(&["v1", SEARCHES], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            err(&sanitize(&format!(
                "created training search {} ({}), {}",
                super::table::text(v, "name"),
                super::table::text(v, "id"),
                super::table::text(v, "status")
            )));
            super::output::warnings(v);
            Ok(())
        }
        SearchCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", SEARCHES], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec![
                "NAME",
                "STATUS",
                "ALGORITHM",
                "TRIALS",
                "BEST",
                "OBJECTIVE",
                "CREATED",
            ];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for v in items(&reply.value)? {
                let trials = v
                    .get("trials")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let best = v.get("best").cloned().unwrap_or(Value::Null);
                let mut row = vec![
                    cell(v, "name"),
                    cell(v, "status"),
                    cell(v, "algorithm"),
                    format!("{trials}/{}", cell(v, "max_trials")),
                    if best.is_null() {
                        "-".into()
                    } else {
                        cell(&best, "name")
                    },
                    objective(&best),
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
        SearchCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", SEARCHES, &a.search], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            out(super::table::fields(
                v,
                12,
                &[
                    ("Name", "name"),
                    ("Id", "id"),
                    ("Owner", "owner"),
                    ("Status", "status"),
                    ("Reason", "status_reason"),
                    ("Algorithm", "algorithm"),
                    ("Max trials", "max_trials"),
                    ("Parallel", "parallel"),
                    ("Created", "created_at"),
                    ("Ended", "ended_at"),
                ],
            )
            .trim_end());
            if let Some(o) = v.get("objective") {
                out(&sanitize(&format!(
                    "Objective   {} ({})",
                    super::table::text(o, "metric"),
                    super::table::text(o, "direction")
                )));
            }
            match v.get("best").filter(|b| !b.is_null()) {
                Some(b) => {
                    out(&sanitize(&format!(
                        "Best        {} (trial {}): {} with {}",
                        super::table::text(b, "name"),
                        cell(b, "number"),
                        objective(b),
                        params(b)
                    )));
                    for o in b
                        .get("outputs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        out(&sanitize(&format!(
                            "Output      {} {}",
                            super::table::text(o, "name"),
                            super::table::text(o, "path")
                        )));
                    }
                }
                None => out("Best        -"),
            }
            Ok(())
        }
        SearchCommand::Trials(a) => {
            let reply = ctx
                .api
                .get(&["v1", SEARCHES, &a.search, "trials"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["#", "JOB", "STATUS", "OBJECTIVE", "PARAMETERS"]);
            for v in items(&reply.value)? {
                t.row(vec![
                    cell(v, "number"),
                    cell(v, "name"),
                    cell(v, "status"),
                    objective(v),
                    params(v),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        SearchCommand::Events(a) => {
            let reply = ctx
                .api
                .get(&["v1", SEARCHES, &a.search, "events"], &[])
                .await?;
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
        SearchCommand::Stop(a) => {
            let reply = ctx
                .api
                .post(&["v1", SEARCHES, &a.search, "stop"], None)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "stopped training search {} ({})",
                a.search,
                super::table::text(&reply.value, "status")
            )));
            Ok(())
        }
        SearchCommand::Delete(a) => {
            ctx.api.delete(&["v1", SEARCHES, &a.search]).await?;
            err(&sanitize(&format!(
                "deleted training search {} and its trials' jobs",
                a.search
            )));
            Ok(())
        }
    }
}
