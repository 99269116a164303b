//! `atelier algorithm create|list|get|runtime|delete`: training algorithm assets.

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum AlgorithmCommand {
    /// Register an algorithm: a Wasm component (--plugin NAME@VERSION, its schema from its
    /// describe()), or a command with its code dir in object storage and a boot file or
    /// boot command, channels and hyperparameters.
    Create(Box<CreateArgs>),
    /// List your algorithms.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show an algorithm.
    Get(AlgoArg),
    /// What a job of the algorithm sees: paths, boot command, arguments, environment.
    Runtime(AlgoArg),
    /// Delete an algorithm (refused while a training job uses it).
    #[command(visible_alias = "rm")]
    Delete(AlgoArg),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The algorithm's name: 1-64 of A-Z a-z 0-9 - _.
    pub name: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// A registered plugin of world training-algorithm, NAME@VERSION.
    #[arg(long, value_name = "NAME@VERSION", conflicts_with_all = ["image", "code_dir", "boot_file", "boot_command", "inputs", "outputs", "hyperparameters", "hyperparameters_file"])]
    pub plugin: Option<String>,
    /// The container image (none: the notebook environment, process backend).
    #[arg(long)]
    pub image: Option<String>,
    /// The code dir, obs://BUCKET/PATH; with --connection.
    #[arg(long, value_name = "PATH", requires = "connection")]
    pub code_dir: Option<String>,
    /// Your storage connection to read --code-dir through.
    #[arg(long, requires = "code_dir")]
    pub connection: Option<String>,
    /// A Python file in the code dir, run as `python FILE`.
    #[arg(long, value_name = "FILE")]
    pub boot_file: Option<String>,
    /// A command (`;` and `&&` chain commands).
    #[arg(long, value_name = "COMMAND")]
    pub boot_command: Option<String>,
    /// An input channel, NAME or NAME:env (given as an environment variable); repeat.
    #[arg(long = "input", value_name = "NAME[:env]")]
    pub inputs: Vec<String>,
    /// An output channel, NAME or NAME:env; repeat.
    #[arg(long = "output", value_name = "NAME[:env]")]
    pub outputs: Vec<String>,
    /// A hyperparameter, NAME:TYPE[=DEFAULT] (TYPE: STR, INT, FLOAT, BOOL); repeat.
    #[arg(long = "hyperparameter", value_name = "NAME:TYPE[=DEFAULT]")]
    pub hyperparameters: Vec<String>,
    /// Hyperparameters as a JSON file: [{"name", "type", "default", "range", "choices",
    /// "required", "description"}, …] (before any --hyperparameter).
    #[arg(long = "hyperparameters", value_name = "FILE")]
    pub hyperparameters_file: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's algorithms (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct AlgoArg {
    /// The algorithm (name or id).
    pub algorithm: String,
}

const ALGORITHMS: &str = "algorithms";

fn channel(spec: &str) -> Value {
    match spec.strip_suffix(":env") {
        Some(name) => json!({"name": name, "obtained_from": "environment_variables"}),
        None => json!({"name": spec}),
    }
}

/// `NAME:TYPE[=DEFAULT]`, the default typed by TYPE (the gateway checks the rest).
fn hyperparameter(spec: &str) -> Result<Value, CliError> {
    let bad = || CliError::other(format!("--hyperparameter {spec:?}: NAME:TYPE[=DEFAULT]"));
    let (name, rest) = spec.split_once(':').ok_or_else(bad)?;
    let (kind, default) = match rest.split_once('=') {
        Some((k, d)) => (k, Some(d)),
        None => (rest, None),
    };
    let mut h = json!({"name": name, "type": kind});
    if let Some(d) = default {
        let value = match kind.to_ascii_lowercase().as_str() {
            "int" | "integer" => d.parse::<i64>().map(Value::from).map_err(|_| bad())?,
            "float" => d.parse::<f64>().map(Value::from).map_err(|_| bad())?,
            "bool" | "boolean" => d.parse::<bool>().map(Value::from).map_err(|_| bad())?,
            _ => Value::from(d),
        };
        h["default"] = value;
    }
    Ok(h)
}

fn create_body(a: &CreateArgs) -> Result<Value, CliError> {
    let mut body = Map::new();
    body.insert("name".into(), a.name.clone().into());
    body.insert("description".into(), a.description.clone().into());
    if let Some(p) = &a.plugin {
        let (name, version) = p
            .rsplit_once('@')
            .ok_or_else(|| CliError::other(format!("--plugin {p:?}: NAME@VERSION")))?;
        body.insert("plugin".into(), json!({"name": name, "version": version}));
        return Ok(Value::Object(body));
    }
    if let Some(i) = &a.image {
        body.insert("image".into(), i.clone().into());
    }
    if let (Some(path), Some(c)) = (&a.code_dir, &a.connection) {
        body.insert("code_dir".into(), json!({"connection": c, "path": path}));
    }
    if let Some(f) = &a.boot_file {
        body.insert("boot_file".into(), f.clone().into());
    }
    if let Some(c) = &a.boot_command {
        body.insert("boot_command".into(), c.clone().into());
    }
    body.insert(
        "inputs".into(),
        a.inputs.iter().map(|c| channel(c)).collect(),
    );
    body.insert(
        "outputs".into(),
        a.outputs.iter().map(|c| channel(c)).collect(),
    );
    let mut hps = match &a.hyperparameters_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::other(format!("--hyperparameters {}: {e}", path.display()))
            })?;
            match serde_json::from_str(&text) {
                Ok(Value::Array(list)) => list,
                Ok(_) => {
                    return Err(CliError::other(format!(
                        "--hyperparameters {}: a JSON array",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(CliError::other(format!(
                        "--hyperparameters {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        None => Vec::new(),
    };
    for h in &a.hyperparameters {
        hps.push(hyperparameter(h)?);
    }
    body.insert("hyperparameters".into(), hps.into());
    Ok(Value::Object(body))
}

pub async fn run(ctx: &Ctx, cmd: AlgorithmCommand) -> Result<(), CliError> {
    match cmd {
        AlgorithmCommand::Create(a) => {
            let body = create_body(&a)?;
            let reply = ctx.api.post(&["v1", ALGORITHMS], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "created {} algorithm {} ({})",
                super::table::text(&reply.value, "kind"),
                a.name,
                super::table::text(&reply.value, "id")
            )));
            Ok(())
        }
        AlgorithmCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", ALGORITHMS], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec![
                "NAME",
                "KIND",
                "INPUTS",
                "OUTPUTS",
                "HYPERPARAMETERS",
                "CREATED",
            ];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            let count = |v: &Value, k: &str| {
                v.get(k)
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string()
            };
            for v in items(&reply.value)? {
                let mut row = vec![
                    cell(v, "name"),
                    cell(v, "kind"),
                    count(v, "inputs"),
                    count(v, "outputs"),
                    count(v, "hyperparameters"),
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
        AlgorithmCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", ALGORITHMS, &a.algorithm], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            out(super::table::fields(
                v,
                14,
                &[
                    ("Name", "name"),
                    ("Id", "id"),
                    ("Owner", "owner"),
                    ("Kind", "kind"),
                    ("Description", "description"),
                    ("Image", "image"),
                    ("Boot file", "boot_file"),
                    ("Boot command", "boot_command"),
                    ("Created", "created_at"),
                ],
            )
            .trim_end());
            if let Some(p) = v.get("plugin") {
                out(&sanitize(&format!(
                    "{:<14} {}@{}",
                    "Plugin",
                    super::table::text(p, "name"),
                    super::table::text(p, "version")
                )));
            }
            if let Some(c) = v.get("code_dir") {
                out(&sanitize(&format!(
                    "{:<14} {} (via {})",
                    "Code dir",
                    super::table::text(c, "path"),
                    super::table::text(c, "connection")
                )));
            }
            for (label, key) in [("Inputs", "inputs"), ("Outputs", "outputs")] {
                let names: Vec<&str> = v
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|l| l.iter().map(|c| super::table::text(c, "name")).collect())
                    .unwrap_or_default();
                out(&sanitize(&format!("{label:<14} {}", names.join(", "))));
            }
            let mut t = Table::new(&["HYPERPARAMETER", "TYPE", "DEFAULT", "REQUIRED", "RESTRAINT"]);
            for h in v
                .get("hyperparameters")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let restraint = match (h.get("range"), h.get("choices")) {
                    (Some(r), _) => format!("range {r}"),
                    (None, Some(c)) => format!("choices {c}"),
                    _ => String::new(),
                };
                t.row(vec![
                    cell(h, "name"),
                    cell(h, "type"),
                    h.get("default").map(Value::to_string).unwrap_or_default(),
                    cell(h, "required"),
                    restraint,
                ]);
            }
            out(&t.render());
            Ok(())
        }
        AlgorithmCommand::Runtime(a) => {
            let reply = ctx
                .api
                .get(&["v1", ALGORITHMS, &a.algorithm, "runtime"], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            out(super::table::fields(
                v,
                14,
                &[
                    ("Job dir", "job_dir"),
                    ("Code dir", "code_dir"),
                    ("Boot file", "boot_file"),
                    ("Boot command", "boot_command"),
                    ("Log dir", "log_dir"),
                ],
            )
            .trim_end());
            for (label, key) in [("Input", "inputs"), ("Output", "outputs")] {
                for c in v.get(key).and_then(Value::as_array).into_iter().flatten() {
                    out(&sanitize(&format!(
                        "{label:<14} {} → {}",
                        super::table::text(c, "name"),
                        super::table::text(c, "local_path")
                    )));
                }
            }
            for arg in v
                .get("arguments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out(&sanitize(&format!(
                    "{:<14} {}",
                    "Argument",
                    arg.as_str().unwrap_or("")
                )));
            }
            if let Some(env) = v.get("environment").and_then(Value::as_object) {
                for (k, val) in env {
                    out(&sanitize(&format!(
                        "{:<14} {k}={}",
                        "Environment",
                        val.as_str().unwrap_or("")
                    )));
                }
            }
            Ok(())
        }
        AlgorithmCommand::Delete(a) => {
            ctx.api.delete(&["v1", ALGORITHMS, &a.algorithm]).await?;
            err(&sanitize(&format!("deleted algorithm {}", a.algorithm)));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperparameter_flags_are_typed() {
        assert_eq!(
            hyperparameter("lr:FLOAT=0.01").unwrap(),
            json!({"name": "lr", "type": "FLOAT", "default": 0.01})
        );
        assert_eq!(
            hyperparameter("e:INT=3").unwrap(),
            json!({"name": "e", "type": "INT", "default": 3})
        );
        assert_eq!(
            hyperparameter("v:BOOL").unwrap(),
            json!({"name": "v", "type": "BOOL"})
        );
        assert!(hyperparameter("e:INT=three").is_err());
        assert!(hyperparameter("nokind").is_err());
        assert_eq!(
            channel("train_url:env"),
            json!({"name": "train_url", "obtained_from": "environment_variables"})
        );
    }
}
