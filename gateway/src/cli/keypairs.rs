//! `atelier keypair create|import|list|get|delete` and `atelier ssh info`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, short_time, text};

#[derive(clap::Subcommand, Debug)]
pub enum KeyPairCommand {
    /// Generate an ed25519 key pair; the private key is saved to a file (mode 0600) and is
    /// not kept by the server, so it cannot be downloaded again.
    Create(KeyPairCreateArgs),
    /// Import an existing public key (such as ~/.ssh/id_ed25519.pub).
    Import(KeyPairImportArgs),
    /// List your key pairs.
    #[command(visible_alias = "ls")]
    List(KeyPairListArgs),
    /// Show a key pair (public key and fingerprint).
    Get(KeyPairNameArg),
    /// Delete a key pair (refused while a notebook uses it).
    #[command(visible_alias = "rm")]
    Delete(KeyPairNameArg),
}

#[derive(clap::Subcommand, Debug)]
pub enum SshCommand {
    /// Where the SSH front door listens, and its host key as a known_hosts line.
    Info,
}

pub async fn ssh(ctx: &Ctx, cmd: SshCommand) -> Result<(), CliError> {
    match cmd {
        SshCommand::Info => {
            let reply = ctx.api.get(&["v1", "ssh"], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            let v = &reply.value;
            if v.get("enabled").and_then(Value::as_bool) != Some(true) {
                out("the SSH front door is off (the gateway runs with ATELIER_SSH_ADDR=off)");
                return Ok(());
            }
            let address = text(v, "address");
            // known_hosts writes a non-22 port as [host]:port.
            let (host, port) = address.rsplit_once(':').unwrap_or((address, "22"));
            let host = host.trim_matches(['[', ']']);
            let direct = if port == "22" {
                host.to_string()
            } else {
                format!("[{host}]:{port}")
            };
            // Configs from `atelier notebook ssh-config` look the key up by this alias, for
            // the shared port and every notebook's own port alike.
            let pattern = format!("{direct},{}", host_key_alias(host));
            out(&sanitize(&format!("address      {address}")));
            out(&sanitize(&format!(
                "fingerprint  {}",
                text(v, "host_key_fingerprint")
            )));
            out(&sanitize(&format!(
                "known_hosts  {pattern} {}",
                key_without_comment(text(v, "host_key"))
            )));
            Ok(())
        }
    }
}

/// The `HostKeyAlias` of the gateway at `host` in printed SSH configs.
pub fn host_key_alias(host: &str) -> String {
    format!("atelier-{host}")
}

fn key_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(clap::Args, Debug)]
pub struct KeyPairCreateArgs {
    /// Name of the key pair, e.g. KeyPair-laptop.
    pub name: String,
    /// Where to write the private key [default: ./NAME.pem]; `-` prints it on stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct KeyPairImportArgs {
    /// Name of the key pair.
    pub name: String,
    /// The public key file; `-` reads it from stdin.
    pub public_key_file: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct KeyPairListArgs {
    /// Everyone's key pairs (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct KeyPairNameArg {
    /// Name of the key pair.
    pub name: String,
}

pub async fn run(ctx: &Ctx, cmd: KeyPairCommand) -> Result<(), CliError> {
    match cmd {
        KeyPairCommand::Create(a) => create(ctx, a).await,
        KeyPairCommand::Import(a) => {
            let public_key = read_public_key(&a.public_key_file)?;
            let mut body = Map::new();
            body.insert("name".into(), a.name.into());
            body.insert("public_key".into(), public_key.into());
            let reply = ctx
                .api
                .post(&["v1", "keypairs"], Some(&Value::Object(body)))
                .await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            err(&sanitize(&format!(
                "imported key pair {} ({} {})",
                cell(&reply.value, "name"),
                cell(&reply.value, "algorithm"),
                cell(&reply.value, "fingerprint")
            )));
            Ok(())
        }
        KeyPairCommand::List(a) => {
            let query = if a.all {
                vec![("all", "true".to_string())]
            } else {
                vec![]
            };
            let reply = ctx.api.get(&["v1", "keypairs"], &query).await?;
            if ctx.json {
                return print_json(&reply.raw, Some("items"));
            }
            let mut headers = vec!["NAME", "ALGORITHM", "FINGERPRINT", "CREATED"];
            if a.all {
                headers.insert(1, "OWNER");
            }
            let mut t = Table::new(&headers);
            for k in items(&reply.value)? {
                let mut row = vec![
                    cell(k, "name"),
                    cell(k, "algorithm"),
                    cell(k, "fingerprint"),
                    short_time(k, "created_at"),
                ];
                if a.all {
                    row.insert(1, cell(k, "owner"));
                }
                t.row(row);
            }
            out(&t.render());
            Ok(())
        }
        KeyPairCommand::Get(a) => {
            let reply = ctx.api.get(&["v1", "keypairs", &a.name], &[]).await?;
            if ctx.json {
                return print_json(&reply.raw, None);
            }
            for (label, key) in [
                ("Name", "name"),
                ("Owner", "owner"),
                ("Algorithm", "algorithm"),
                ("Fingerprint", "fingerprint"),
                ("Created", "created_at"),
                ("Public key", "public_key"),
            ] {
                out(&sanitize(&format!(
                    "{label:<12} {}",
                    cell(&reply.value, key)
                )));
            }
            Ok(())
        }
        KeyPairCommand::Delete(a) => {
            ctx.api.delete(&["v1", "keypairs", &a.name]).await?;
            err(&sanitize(&format!("deleted key pair {}", a.name)));
            Ok(())
        }
    }
}

async fn create(ctx: &Ctx, a: KeyPairCreateArgs) -> Result<(), CliError> {
    let to_stdout = a.output.as_deref() == Some(Path::new("-"));
    let path = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.pem", a.name)));
    // Checked before the key pair exists, so a refusal leaves nothing behind.
    if !to_stdout && path.exists() {
        return Err(CliError::other(format!(
            "{} already exists; choose another file with --output",
            path.display()
        )));
    }
    let mut body = Map::new();
    body.insert("name".into(), a.name.clone().into());
    let reply = ctx
        .api
        .post(&["v1", "keypairs"], Some(&Value::Object(body)))
        .await?;
    let private = text(&reply.value, "private_key");
    if private.is_empty() {
        return Err(CliError::other(
            "unexpected response: no private key in the reply",
        ));
    }
    if to_stdout {
        if ctx.json {
            return print_json(&reply.raw, None);
        }
        out(private.trim_end());
    } else {
        write_private(&path, private).map_err(|e| {
            CliError::other(format!(
                "key pair {} was created, but writing {} failed: {e}; delete it with `atelier keypair delete {}` and try again",
                a.name,
                path.display(),
                a.name
            ))
        })?;
        if ctx.json {
            return print_json(&reply.raw, None);
        }
    }
    err(&sanitize(&format!(
        "created key pair {} ({}){}; the server keeps no copy of the private key",
        cell(&reply.value, "name"),
        cell(&reply.value, "fingerprint"),
        if to_stdout {
            String::new()
        } else {
            format!(", saved to {}", path.display())
        }
    )));
    Ok(())
}

/// Creates the file (never overwrites) readable by its owner only, as ssh requires.
fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(key.as_bytes())?;
    if !key.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    f.sync_all()
}

fn read_public_key(path: &Path) -> Result<String, CliError> {
    let mut s = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut s).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s).map(|_| ()))
    };
    read.map_err(|e| CliError::other(format!("reading {}: {e}", path.display())))?;
    Ok(s)
}
