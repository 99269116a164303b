//! `atelier user|token|flavor|image|audit …`.

use serde_json::{Map, Value, json};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time, text, time_secs, truncate};

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (admins only).
    Create(UserCreateArgs),
    /// List users (admins only).
    #[command(visible_alias = "ls")]
    List,
    /// Delete a user and their tokens, ending their sessions at once (admins only; refused
    /// while they own notebooks, key pairs, images, plugins or storage connections).
    #[command(visible_alias = "rm")]
    Delete(UserDeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct UserDeleteArgs {
    /// The user's name.
    pub name: String,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct UserCreateArgs {
    /// User name: 1-64 of [a-z0-9_-], starting with a letter or digit.
    pub name: String,
    /// The user's role.
    #[arg(long, value_enum, default_value_t = Role::User)]
    pub role: Role,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token (printed once, on stdout).
    Create(TokenCreateArgs),
    /// List API tokens.
    #[command(visible_alias = "ls")]
    List(TokenListArgs),
    /// Revoke an API token, at once.
    Revoke(TokenRevokeArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenCreateArgs {
    /// Whose token (default: yourself; others need admin).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// A label to recognize the token by, e.g. "laptop".
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TokenListArgs {
    /// Whose tokens (default: yourself; others need admin).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TokenRevokeArgs {
    /// Token ID (from `atelier token list`).
    pub id: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum FlavorCommand {
    /// List the flavors notebooks can use.
    #[command(visible_alias = "ls")]
    List,
    /// List this host's GPUs and NPUs and which are in use.
    Accelerators,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// List the images notebooks can use: built-in, registered and saved.
    #[command(visible_alias = "ls")]
    List,
    /// Register an image the engine has or can pull, under a name notebooks use (an
    /// admin's is everyone's; a user's is their own).
    Register(ImageRegisterArgs),
    /// Unregister a registered or saved image (it stays in the engine and registry).
    #[command(visible_alias = "rm")]
    Delete(ImageDeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct ImageRegisterArgs {
    /// The name notebooks will use (`atelier notebook create --image NAME`).
    pub name: String,
    /// The image reference, e.g. registry.example.com/team/pytorch:2.3.
    #[arg(value_name = "REF")]
    pub reference: String,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(clap::Args, Debug)]
pub struct ImageDeleteArgs {
    /// Image ID (from `atelier image list`).
    pub id: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit records, newest first (admins only).
    #[command(visible_alias = "ls")]
    List(AuditListArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditListArgs {
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Skip this many records.
    #[arg(long)]
    pub offset: Option<u32>,
    /// Only this action (e.g. createNotebook, login).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this user's actions.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

pub async fn user(ctx: &Ctx, cmd: UserCommand) -> Result<(), CliError> {
    match cmd {
        UserCommand::Create(a) => {
            let body = json!({"name": a.name, "role": a.role.as_str()});
            let reply = ctx.api.post(&["v1", "users"], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            out(&sanitize(&format!(
                "user {} ({}) created; give them a token with `atelier token create --user {}`",
                cell(&reply.value, "name"),
                cell(&reply.value, "role"),
                cell(&reply.value, "name")
            )));
            Ok(())
        }
        UserCommand::Delete(a) => {
            ctx.api.delete(&["v1", "users", &a.name]).await?;
            if !ctx.json {
                out(&sanitize(&format!("user {} deleted", a.name)));
            }
            Ok(())
        }
        UserCommand::List => {
            let reply = ctx.api.get(&["v1", "users"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["NAME", "ROLE", "CREATED"]);
            for u in items(&reply.value)? {
                t.row([
                    cell(u, "name"),
                    cell(u, "role"),
                    short_time(u, "created_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
    }
}

/// The named user, or the caller (from `GET /v1/whoami`).
async fn user_or_me(ctx: &Ctx, user: Option<String>) -> Result<String, CliError> {
    if let Some(u) = user.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        return Ok(u.to_string());
    }
    let me = ctx.api.get(&["v1", "whoami"], &[]).await?;
    let name = text(&me.value, "name");
    if name.is_empty() {
        return Err(CliError::other(
            "unexpected response from /v1/whoami: no name",
        ));
    }
    Ok(name.to_string())
}

pub async fn token(ctx: &Ctx, cmd: TokenCommand) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create(a) => {
            let user = user_or_me(ctx, a.user).await?;
            let mut body = Map::new();
            if let Some(label) = a.label {
                body.insert("label".into(), label.into());
            }
            let reply = ctx
                .api
                .post(
                    &["v1", "users", &user, "tokens"],
                    Some(&Value::Object(body)),
                )
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let secret = text(&reply.value, "token");
            if secret.is_empty() {
                return Err(CliError::other(
                    "unexpected response: no token in the reply",
                ));
            }
            let mut note = format!(
                "created token {} for {}",
                cell(&reply.value, "id"),
                cell(&reply.value, "user")
            );
            if let Some(label) = reply.value.get("label").and_then(Value::as_str)
                && !label.is_empty()
            {
                note.push_str(&format!(" (label {label:?})"));
            }
            note.push_str("; it is shown only now, so store it safely:");
            err(&sanitize(&note));
            out(&sanitize(secret));
            Ok(())
        }
        TokenCommand::List(a) => {
            let user = user_or_me(ctx, a.user).await?;
            let reply = ctx.api.get(&["v1", "users", &user, "tokens"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["ID", "USER", "LABEL", "CREATED", "LAST USED"]);
            for tk in items(&reply.value)? {
                t.row([
                    cell(tk, "id"),
                    cell(tk, "user"),
                    cell(tk, "label"),
                    short_time(tk, "created_at"),
                    short_time(tk, "last_used_at"),
                ]);
            }
            out(&t.render());
            Ok(())
        }
        TokenCommand::Revoke(a) => {
            let id = a.id.trim();
            if id.is_empty() {
                return Err(CliError::other("the token ID must not be empty"));
            }
            let reply = ctx.api.delete(&["v1", "tokens", id]).await?;
            if ctx.json {
                if !reply.raw.trim().is_empty() {
                    print_json(&reply.raw, None)?;
                }
                return Ok(());
            }
            out(&sanitize(&format!("token {id} revoked")));
            Ok(())
        }
    }
}

pub async fn flavor(ctx: &Ctx, cmd: FlavorCommand) -> Result<(), CliError> {
    if let FlavorCommand::Accelerators = cmd {
        let reply = ctx.api.get(&["v1", "accelerators"], &[]).await?;
        if ctx.json {
            return print_json(&reply.raw, Some("items"));
        }
        let list = items(&reply.value)?;
        if list.is_empty() {
            out("no GPUs or NPUs on this host (GPUs need NVIDIA's driver)");
            return Ok(());
        }
        let mut t = Table::new(&["TYPE", "INDEX", "NAME", "MEMORY", "UTIL", "NOTEBOOK"]);
        for a in list {
            let memory = a
                .get("memory_bytes")
                .and_then(Value::as_u64)
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_else(|| "-".into());
            let util = a
                .get("utilization_percent")
                .and_then(Value::as_u64)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "-".into());
            let name = match a.get("name").and_then(Value::as_str) {
                Some(n) => n.to_owned(),
                None => cell(a, "device"),
            };
            t.row([
                cell(a, "type"),
                cell(a, "index"),
                name,
                memory,
                util,
                cell(a, "notebook"),
            ]);
        }
        out(&t.render());
        return Ok(());
    }
    let reply = ctx.api.get(&["v1", "flavors"], &[]).await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let mut t = Table::new(&[
        "ID",
        "TYPE",
        "VCPUS",
        "MEMORY",
        "ACCELERATORS",
        "DEFAULT",
        "DESCRIPTION",
    ]);
    for f in items(&reply.value)? {
        let memory = match f.get("memory_gib") {
            Some(Value::Number(n)) => format!("{n} GiB"),
            _ => cell(f, "memory_gib"),
        };
        t.row([
            cell(f, "id"),
            cell(f, "type"),
            cell(f, "vcpus"),
            memory,
            cell(f, "accelerators"),
            default_mark(f),
            cell(f, "description"),
        ]);
    }
    out(&t.render());
    Ok(())
}

pub async fn image(ctx: &Ctx, cmd: ImageCommand) -> Result<(), CliError> {
    match cmd {
        ImageCommand::List => {
            let reply = ctx.api.get(&["v1", "images"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut t = Table::new(&["ID", "KIND", "DEFAULT", "OWNER", "REF", "DESCRIPTION"]);
            for i in items(&reply.value)? {
                t.row([
                    cell(i, "id"),
                    cell(i, "kind"),
                    default_mark(i),
                    cell(i, "owner"),
                    cell(i, "ref"),
                    cell(i, "description"),
                ]);
            }
            out(&t.render());
        }
        ImageCommand::Register(a) => {
            let body = serde_json::json!({
                "name": a.name, "ref": a.reference, "description": a.description,
            });
            let reply = ctx.api.post(&["v1", "images"], Some(&body)).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            out(&format!(
                "registered image {} ({})",
                cell(&reply.value, "id"),
                cell(&reply.value, "ref")
            ));
        }
        ImageCommand::Delete(a) => {
            ctx.api.delete(&["v1", "images", &a.id]).await?;
            if !ctx.json {
                out(&format!("unregistered image {}", a.id));
            }
        }
    }
    Ok(())
}

fn default_mark(v: &Value) -> String {
    if v.get("default").and_then(Value::as_bool) == Some(true) {
        "*".to_string()
    } else {
        String::new()
    }
}

pub async fn audit(ctx: &Ctx, cmd: AuditCommand) -> Result<(), CliError> {
    let AuditCommand::List(a) = cmd;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(limit) = a.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(offset) = a.offset {
        query.push(("offset", offset.to_string()));
    }
    if let Some(action) = a.action {
        query.push(("action", action));
    }
    if let Some(user) = a.user {
        query.push(("user", user));
    }
    let reply = ctx.api.get(&["v1", "audit"], &query).await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let mut t = Table::new(&["TIME", "USER", "ACTION", "OUTCOME", "RESOURCE", "DETAIL"]);
    for r in items(&reply.value)? {
        t.row([
            time_secs(r, "time"),
            cell(r, "user"),
            cell(r, "action"),
            cell(r, "outcome"),
            resource(r),
            truncate(&cell(r, "detail"), 80),
        ]);
    }
    out(&t.render());
    Ok(())
}

/// `notebook/nb1`, falling back on the resource ID when there is no name.
pub fn resource(r: &Value) -> String {
    let kind = text(r, "resource_type");
    let name = match text(r, "resource_name") {
        "" => text(r, "resource_id"),
        n => n,
    };
    match (kind, name) {
        ("", "") => "-".to_string(),
        ("", n) => n.to_string(),
        (k, "") => k.to_string(),
        (k, n) => format!("{k}/{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources() {
        assert_eq!(
            resource(
                &json!({"resource_type": "notebook", "resource_id": "1", "resource_name": "nb"})
            ),
            "notebook/nb"
        );
        assert_eq!(
            resource(&json!({"resource_type": "token", "resource_id": "7", "resource_name": null})),
            "token/7"
        );
        assert_eq!(resource(&json!({})), "-");
    }

    #[test]
    fn defaults() {
        assert_eq!(default_mark(&json!({"default": true})), "*");
        assert_eq!(default_mark(&json!({"default": false})), "");
        assert_eq!(Role::Admin.as_str(), "admin");
    }
}
