//! `atelier storage connection create|list|get|check|delete`: object storage connections.

use serde_json::{Map, Value};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::prompt;
use super::table::{Table, cell, sanitize, short_time};

#[derive(clap::Subcommand, Debug)]
pub enum StorageCommand {
    /// Connections to S3-compatible object stores (endpoint, region, bucket, keys).
    #[command(subcommand, visible_alias = "conn")]
    Connection(ConnectionCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum ConnectionCommand {
    /// Connect an object store. The gateway checks it first (reachable, keys accepted,
    /// bucket present). The secret key comes from AWS_SECRET_ACCESS_KEY, else it is asked
    /// for (hidden) on a terminal, else read as one line from stdin; it is stored encrypted
    /// and never shown again.
    Create(ConnectionCreateArgs),
    /// List your connections.
    #[command(visible_alias = "ls")]
    List(ConnectionListArgs),
    /// Show a connection (everything but the secret key).
    Get(ConnectionNameArg),
    /// Check a connection against its store again.
    Check(ConnectionNameArg),
    /// Delete a connection (the objects in the store are not touched).
    #[command(visible_alias = "rm")]
    Delete(ConnectionNameArg),
}

#[derive(clap::Args, Debug)]
pub struct ConnectionCreateArgs {
    /// Name of the connection, e.g. minio.
    pub name: String,
    /// The store's URL, http(s)://HOST[:PORT].
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: String,
    /// The region to sign for [default: us-east-1].
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// A bucket to check now and to use by default.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: String,
    /// Address buckets as BUCKET.HOST (virtual-hosted, as AWS prefers) instead of
    /// HOST/BUCKET (path style, what self-hosted stores expect).
    #[arg(long)]
    pub virtual_host: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConnectionListArgs {
    /// Everyone's connections (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConnectionNameArg {
    /// Name of the connection.
    pub name: String,
}

pub async fn run(ctx: &Ctx, cmd: StorageCommand) -> Result<(), CliError> {
    let StorageCommand::Connection(cmd) = cmd;
    const PATH: [&str; 3] = ["v1", "storage", "connections"];
    match cmd {
        ConnectionCommand::Create(a) => {
            let secret = match std::env::var("AWS_SECRET_ACCESS_KEY") {
                Ok(s) if !s.is_empty() => s,
                _ => {
                    prompt::read_hidden(
                        "The secret access key (input is hidden):",
                        "Secret key: ",
                        "no secret key given: set AWS_SECRET_ACCESS_KEY or write it on stdin",
                    )
                    .await?
                }
            };
            let mut body = Map::new();
            body.insert("name".into(), a.name.into());
            body.insert("endpoint".into(), a.endpoint.into());
            if let Some(r) = a.region {
                body.insert("region".into(), r.into());
            }
            if let Some(b) = a.bucket {
                body.insert("bucket".into(), b.into());
            }
            body.insert("access_key_id".into(), a.access_key_id.into());
            body.insert("secret_access_key".into(), secret.into());
            body.insert("path_style".into(), (!a.virtual_host).into());
            let reply = ctx.api.post(&PATH, Some(&Value::Object(body))).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "connected {} ({}{}); the secret key is stored encrypted",
                cell(&reply.value, "name"),
                cell(&reply.value, "endpoint"),
                match reply.value.get("bucket").and_then(Value::as_str) {
                    Some(b) => format!(", bucket {b}"),
                    None => String::new(),
                }
            )));
            Ok(())
        }
        ConnectionCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&PATH, &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec!["NAME", "ENDPOINT", "BUCKET", "ACCESS KEY", "CHECKED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for c in items(&reply.value)? {
                let mut row = vec![
                    cell(c, "name"),
                    cell(c, "endpoint"),
                    cell(c, "bucket"),
                    cell(c, "access_key_id"),
                    short_time(c, "checked_at"),
                ];
                if a.all {
                    row.insert(1, cell(c, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        ConnectionCommand::Get(a) => {
            let reply = ctx
                .api
                .get(&[PATH[0], PATH[1], PATH[2], &a.name], &[])
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            for (label, key) in [
                ("Name", "name"),
                ("Owner", "owner"),
                ("Endpoint", "endpoint"),
                ("Region", "region"),
                ("Bucket", "bucket"),
                ("Access key", "access_key_id"),
                ("Path style", "path_style"),
                ("Created", "created_at"),
                ("Checked", "checked_at"),
            ] {
                out(&sanitize(&format!(
                    "{label:<11} {}",
                    cell(&reply.value, key)
                )));
            }
            Ok(())
        }
        ConnectionCommand::Check(a) => {
            let reply = ctx
                .api
                .post(&[PATH[0], PATH[1], PATH[2], &a.name, "check"], None)
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "connection {} works (checked {})",
                a.name,
                cell(&reply.value, "checked_at")
            )));
            Ok(())
        }
        ConnectionCommand::Delete(a) => {
            ctx.api
                .delete(&[PATH[0], PATH[1], PATH[2], &a.name])
                .await?;
            err(&sanitize(&format!(
                "deleted connection {} (objects in the store are untouched)",
                a.name
            )));
            Ok(())
        }
    }
}
