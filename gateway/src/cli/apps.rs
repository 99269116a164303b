//! `atelier app create|list|get|delete|secret|reset|add-code|delete-code|bind|unbind`:
//! applications that call services with an AppCode or AppKey.

use serde_json::{Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time};

const APPS: &str = "apps";

#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app: prints its AppKey and AppSecret.
    Create(CreateArgs),
    /// List your apps.
    #[command(visible_alias = "ls")]
    List,
    /// Show an app: its AppCodes (ids) and bound services.
    Get(AppArg),
    /// Delete an app: calls with its credentials are refused from then on.
    #[command(visible_alias = "rm")]
    Delete(AppArg),
    /// Print an app's AppKey, AppSecret and AppCodes.
    Secret(AppArg),
    /// Make a new AppSecret.
    Reset(AppArg),
    /// Add an AppCode (at most 5 per app): prints it.
    AddCode(AppArg),
    /// Delete an AppCode by its id.
    DeleteCode(CodeArgs),
    /// Let the app call one of your services (which needs --app-auth on).
    Bind(BindArgs),
    /// The app may no longer call the service.
    Unbind(BindArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// 1-64 of A-Z a-z 0-9 _ - [default: app_ and 8 random characters].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(clap::Args, Debug)]
pub struct AppArg {
    /// The app (name or id).
    pub app: String,
}

#[derive(clap::Args, Debug)]
pub struct CodeArgs {
    pub app: String,
    /// The AppCode's id (atelier app get).
    pub code: String,
}

#[derive(clap::Args, Debug)]
pub struct BindArgs {
    pub app: String,
    /// The service (name or id).
    pub service: String,
}

/// Credentials as `Label value` lines.
fn print_credentials(v: &Value) {
    for (label, key) in [
        ("Name", "name"),
        ("Id", "id"),
        ("AppKey", "app_key"),
        ("AppSecret", "app_secret"),
    ] {
        out(&sanitize(&format!("{label:<10} {}", cell(v, key))));
    }
    for c in v
        .get("app_codes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out(&sanitize(&format!(
            "{:<10} {} (id {})",
            "AppCode",
            cell(c, "code"),
            cell(c, "id")
        )));
    }
}

fn print_app(v: &Value) {
    for (label, key) in [
        ("Name", "name"),
        ("Id", "id"),
        ("Owner", "owner"),
        ("Description", "description"),
        ("Created", "created_at"),
    ] {
        out(&sanitize(&format!("{label:<12} {}", cell(v, key))));
    }
    let list = |key: &str, f: &dyn Fn(&Value) -> String| {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(f).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    out(&sanitize(&format!(
        "{:<12} {}",
        "AppCodes",
        list("app_codes", &|c| cell(c, "id"))
    )));
    out(&sanitize(&format!(
        "{:<12} {}",
        "Services",
        list("services", &|s| cell(s, "name"))
    )));
}

pub async fn run(ctx: &Ctx, cmd: AppCommand) -> Result<(), CliError> {
    match cmd {
        AppCommand::Create(a) => {
            let mut body = json!({"description": a.description});
            if let Some(n) = a.name {
                body["name"] = n.into();
            }
            let reply = ctx.api.post(&["v1", APPS], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_credentials(&reply.value);
            err("keep the AppKey and AppSecret safe; `atelier app secret` shows them again");
            Ok(())
        }
        AppCommand::List => {
            let reply = ctx.api.get(&["v1", APPS], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["NAME", "APP CODES", "SERVICES", "CREATED"]);
            for a in items(&reply.value)? {
                let count = |k: &str| {
                    a.get(k)
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                        .to_string()
                };
                t.row(vec![
                    cell(a, "name"),
                    count("app_codes"),
                    count("services"),
                    short_time(a, "created_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        AppCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", APPS, &a.app], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_app(&reply.value);
            Ok(())
        }
        AppCommand::Delete(a) => {
            ctx.api.delete(&["v1", APPS, &a.app]).await?;
            err(&sanitize(&format!("deleted app {}", a.app)));
            Ok(())
        }
        AppCommand::Secret(a) => {
            let reply = ctx.api.get(&["v1", APPS, &a.app, "secret"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_credentials(&reply.value);
            Ok(())
        }
        AppCommand::Reset(a) => {
            let reply = ctx.api.post(&["v1", APPS, &a.app, "reset"], None).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_credentials(&reply.value);
            Ok(())
        }
        AppCommand::AddCode(a) => {
            let reply = ctx
                .api
                .post(&["v1", APPS, &a.app, "app-codes"], None)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            out(&sanitize(&format!(
                "{} (id {})",
                cell(&reply.value, "code"),
                cell(&reply.value, "id")
            )));
            Ok(())
        }
        AppCommand::DeleteCode(a) => {
            ctx.api
                .delete(&["v1", APPS, &a.app, "app-codes", &a.code])
                .await?;
            err(&sanitize(&format!(
                "deleted AppCode {} of app {}",
                a.code, a.app
            )));
            Ok(())
        }
        AppCommand::Bind(a) => {
            let body = json!({"service": a.service});
            let reply = ctx
                .api
                .post(&["v1", APPS, &a.app, "services"], Some(&body))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_app(&reply.value);
            Ok(())
        }
        AppCommand::Unbind(a) => {
            let reply = ctx
                .api
                .delete(&["v1", APPS, &a.app, "services", &a.service])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            print_app(&reply.value);
            Ok(())
        }
    }
}
