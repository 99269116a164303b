//! `atelier model create|list|get|versions|add-version|update|delete|events`: the model
//! registry.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Create a model and import its first version (0.0.1) from an object-storage folder,
    /// a folder of one of your notebooks, or a container image. The folder holds `model/`
    /// with `config.json` and the model's files.
    Create(Box<CreateArgs>),
    /// List your models.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a model, or one of its versions with --version.
    Get(GetArgs),
    /// List a model's versions.
    Versions(ModelArg),
    /// Import a new version: the next number, the previous version's settings and source
    /// unless given.
    AddVersion(Box<AddVersionArgs>),
    /// Change a model's description.
    Update(UpdateArgs),
    /// Delete a model (every version), or one version with --version. A version a
    /// service uses cannot be deleted.
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// A model's events (all versions', or one's with --version).
    Events(EventsArgs),
}

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// The object-storage folder that holds model/ (obs://BUCKET/PATH or s3://…); with
    /// --connection.
    #[arg(long, value_name = "PATH", group = "source")]
    pub obs: Option<String>,
    /// Your storage connection to read --obs through.
    #[arg(long, requires = "obs")]
    pub connection: Option<String>,
    /// A notebook whose work dir holds the folder (its id); with --path.
    #[arg(long, value_name = "NOTEBOOK_ID", group = "source", requires = "path")]
    pub notebook: Option<String>,
    /// The folder in the notebook's work dir (relative, or under /home/ma-user/work).
    #[arg(long, requires = "notebook")]
    pub path: Option<String>,
    /// A container image that serves HTTP on 8080 (with --config).
    #[arg(long, group = "source")]
    pub image: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SettingArgs {
    /// Where it may be deployed: real-time, batch (repeat; default both).
    #[arg(long = "deployment-type", value_name = "TYPE")]
    pub deployment_types: Vec<String>,
    /// The command a custom engine starts with (emptied if it holds $, |, >, --privileged…).
    #[arg(long)]
    pub start_command: Option<String>,
    /// An image model's config.json (model_type "Image", apis, health).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// A document about the model, NAME=URL (at most 3).
    #[arg(long = "doc", value_name = "NAME=URL")]
    pub docs: Vec<String>,
    /// The instances' probes, a JSON file {"startup": {…}, "readiness": {…}, "liveness":
    /// {…}}, each with config.json health's fields (check_method, url or command,
    /// period_seconds, failure_threshold, …).
    #[arg(long, value_name = "FILE")]
    pub health_checks: Option<std::path::PathBuf>,
    /// Wait until the import ends (NORMAL or FAILED), at most this many seconds.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
    pub wait: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The model's name: 1-64 of A-Z a-z 0-9 - _.
    pub name: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The first version's number [default: 0.0.1].
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub settings: SettingArgs,
}

#[derive(clap::Args, Debug)]
pub struct AddVersionArgs {
    /// The model (name or id).
    pub model: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The version's number [default: the next after the newest].
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub settings: SettingArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's models (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct ModelArg {
    /// The model (name or id).
    pub model: String,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The model (name or id).
    pub model: String,
    #[arg(long)]
    pub version: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The model (name or id).
    pub model: String,
    #[arg(long)]
    pub description: String,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The model (name or id).
    pub model: String,
    #[arg(long)]
    pub version: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// The model (name or id).
    pub model: String,
    #[arg(long)]
    pub version: Option<String>,
}

const MODELS: &str = "models";

fn source_body(s: &SourceArgs) -> Result<Option<Value>, CliError> {
    let mut m = Map::new();
    if let Some(path) = &s.obs {
        let Some(c) = &s.connection else {
            return Err(CliError::other(
                "--obs needs --connection (atelier storage list)",
            ));
        };
        m.insert("type".into(), "obs".into());
        m.insert("path".into(), path.clone().into());
        m.insert("connection".into(), c.clone().into());
    } else if let Some(nb) = &s.notebook {
        m.insert("type".into(), "notebook".into());
        m.insert("notebook".into(), nb.clone().into());
        m.insert("path".into(), s.path.clone().unwrap_or_default().into());
    } else if let Some(image) = &s.image {
        m.insert("type".into(), "image".into());
        m.insert("image".into(), image.clone().into());
    } else {
        return Ok(None);
    }
    Ok(Some(Value::Object(m)))
}

fn settings_body(s: &SettingArgs, body: &mut Map<String, Value>) -> Result<(), CliError> {
    if !s.deployment_types.is_empty() {
        body.insert(
            "deployment_types".into(),
            s.deployment_types
                .iter()
                .map(|t| Value::from(t.as_str()))
                .collect(),
        );
    }
    if let Some(c) = &s.start_command {
        body.insert("start_command".into(), c.clone().into());
    }
    for (flag, field, path) in [
        ("--config", "config", &s.config),
        ("--health-checks", "health_checks", &s.health_checks),
    ] {
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::other(format!("{flag} {}: {e}", path.display())))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::other(format!("{flag} {}: {e}", path.display())))?;
            body.insert(field.into(), v);
        }
    }
    if !s.docs.is_empty() {
        let mut docs = Vec::new();
        for d in &s.docs {
            let Some((name, url)) = d.split_once('=') else {
                return Err(CliError::other(format!("--doc {d:?}: NAME=URL")));
            };
            docs.push(serde_json::json!({"name": name, "url": url}));
        }
        body.insert("docs".into(), docs.into());
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: ModelCommand) -> Result<(), CliError> {
    match cmd {
        ModelCommand::Create(a) => {
            let Some(source) = source_body(&a.source)? else {
                return Err(CliError::other(
                    "a source is needed: --obs PATH --connection NAME, --notebook ID --path FOLDER, or --image REF",
                ));
            };
            let mut body = Map::new();
            body.insert("name".into(), a.name.clone().into());
            body.insert("description".into(), a.description.into());
            if let Some(v) = a.version {
                body.insert("version".into(), v.into());
            }
            body.insert("source".into(), source);
            settings_body(&a.settings, &mut body)?;
            let reply = ctx
                .api
                .post(&["v1", MODELS], Some(&Value::Object(body)))
                .await?;
            let version = reply.value.get("version").cloned().unwrap_or(Value::Null);
            finish(ctx, &reply.raw, &a.name, &version, a.settings.wait).await
        }
        ModelCommand::AddVersion(a) => {
            let mut body = Map::new();
            if let Some(s) = source_body(&a.source)? {
                body.insert("source".into(), s);
            }
            if let Some(v) = a.version {
                body.insert("version".into(), v.into());
            }
            if let Some(d) = a.description {
                body.insert("description".into(), d.into());
            }
            settings_body(&a.settings, &mut body)?;
            let reply = ctx
                .api
                .post(
                    &["v1", MODELS, &a.model, "versions"],
                    Some(&Value::Object(body)),
                )
                .await?;
            finish(ctx, &reply.raw, &a.model, &reply.value, a.settings.wait).await
        }
        ModelCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", MODELS], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec!["NAME", "LATEST", "STATUS", "VERSIONS", "CREATED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for m in items(&reply.value)? {
                let mut row = vec![
                    cell(m, "name"),
                    cell(m, "latest_version"),
                    cell(m, "status"),
                    cell(m, "versions"),
                    short_time(m, "created_at"),
                ];
                if a.all {
                    row.insert(1, cell(m, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        ModelCommand::Get(a) => {
            let reply = match &a.version {
                Some(v) => {
                    ctx.api
                        .get(&["v1", MODELS, &a.model, "versions", v], &[])
                        .await?
                }
                None => ctx.api.get(&["v1", MODELS, &a.model], &[]).await?,
            };
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let fields: &[(&str, &str)] = if a.version.is_some() {
                &[
                    ("Model", "model"),
                    ("Version", "version"),
                    ("Status", "status"),
                    ("Error", "error"),
                    ("Id", "id"),
                    ("Description", "description"),
                    ("Size", "size"),
                    ("Files", "files"),
                    ("Start cmd", "start_command"),
                    ("Created", "created_at"),
                ]
            } else {
                &[
                    ("Name", "name"),
                    ("Id", "id"),
                    ("Owner", "owner"),
                    ("Latest", "latest_version"),
                    ("Status", "status"),
                    ("Versions", "versions"),
                    ("Description", "description"),
                    ("Created", "created_at"),
                ]
            };
            out(super::table::fields(&reply.value, 12, fields).trim_end());
            if let Some(s) = reply.value.get("source") {
                out(&sanitize(&format!("{:<12} {s}", "Source")));
            }
            Ok(())
        }
        ModelCommand::Versions(a) => {
            let reply = ctx
                .api
                .get(&["v1", MODELS, &a.model, "versions"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["VERSION", "STATUS", "SIZE", "FILES", "SOURCE", "CREATED"]);
            for v in items(&reply.value)? {
                let source = v
                    .get("source")
                    .and_then(|s| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                t.row(vec![
                    cell(v, "version"),
                    cell(v, "status"),
                    cell(v, "size"),
                    cell(v, "files"),
                    source,
                    short_time(v, "created_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        ModelCommand::Update(a) => {
            let reply = ctx
                .api
                .patch(
                    &["v1", MODELS, &a.model],
                    &serde_json::json!({"description": a.description}),
                )
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!("updated model {}", a.model)));
            Ok(())
        }
        ModelCommand::Delete(a) => {
            match &a.version {
                Some(v) => {
                    ctx.api
                        .delete(&["v1", MODELS, &a.model, "versions", v])
                        .await?;
                    err(&sanitize(&format!(
                        "deleted version {v} of model {}",
                        a.model
                    )));
                }
                None => {
                    ctx.api.delete(&["v1", MODELS, &a.model]).await?;
                    err(&sanitize(&format!("deleted model {}", a.model)));
                }
            }
            Ok(())
        }
        ModelCommand::Events(a) => {
            let query = match &a.version {
                Some(v) => vec![("version", v.clone())],
                None => vec![],
            };
            let reply = ctx
                .api
                .get(&["v1", MODELS, &a.model, "events"], &query)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["TIME", "VERSION", "TYPE", "EVENT"]);
            for e in items(&reply.value)? {
                t.row(vec![
                    short_time(e, "time"),
                    cell(e, "version"),
                    cell(e, "type"),
                    cell(e, "text"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
    }
}

/// After a create: the reply, or (with --wait) the version once its import ended; a
/// FAILED import is an error whose message is the version's.
async fn finish(
    ctx: &Ctx,
    raw: &str,
    model: &str,
    version: &Value,
    wait: Option<u64>,
) -> Result<(), CliError> {
    let number = version
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(secs) = wait else {
        if ctx.json {
            return print_json(raw, None);
        }
        err(&sanitize(&format!(
            "importing model {model} version {number} (atelier model get {model} --version {number})"
        )));
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let model_id = version
        .get("model_id")
        .and_then(Value::as_str)
        .unwrap_or(model)
        .to_string();
    loop {
        let reply = ctx
            .api
            .get(&["v1", MODELS, &model_id, "versions", &number], &[])
            .await?;
        let status = reply
            .value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match status.as_str() {
            "IMPORTING" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            "IMPORTING" => {
                return Err(CliError::other(format!(
                    "model {model} version {number} is still importing after {secs} s"
                )));
            }
            "FAILED" => {
                return Err(CliError::other(format!(
                    "importing model {model} version {number} failed: {}",
                    cell(&reply.value, "error")
                )));
            }
            _ => {
                if ctx.json {
                    return print_json(&reply.raw, None);
                }
                err(&sanitize(&format!(
                    "model {model} version {number} is {status}"
                )));
                return Ok(());
            }
        }
    }
}
