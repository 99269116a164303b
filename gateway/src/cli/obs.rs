//! `atelier obs cp|ls|stat|rm`: object storage from the command line, straight to the store
//! (no gateway), with S3 credentials taken the way every S3 tool takes them:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`, or a
//! profile of `~/.aws/credentials` and `~/.aws/config` (`--aws-profile`, `AWS_PROFILE`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zeroize::Zeroizing;

use super::api::CliError;
use super::output::{err, out};
use super::prompt;
use crate::object_storage::ObjectUri;
use crate::object_storage::s3::{self, Target};
use crate::object_storage::transfer::{self, Loc, Options, Outcome, Progress};

#[derive(clap::Subcommand, Debug)]
pub enum ObsCommand {
    /// Copy files or folders between local paths and object storage, or within it.
    ///
    /// A folder lands under DST with its own name (`cp ./data/ obs://b/t/` → obs://b/t/data/…);
    /// with -d only its contents do (→ obs://b/t/…). A file lands in DST when DST ends with
    /// `/` or is a local folder, else at DST. Files already complete at the destination (same
    /// size and checksum) are skipped, so running an interrupted copy again resumes it.
    #[command(visible_alias = "copy")]
    Cp(CpArgs),
    /// List objects and folders under a path.
    Ls(LsArgs),
    /// Show one object (or say that the path is a folder).
    Stat(PathArg),
    /// Delete an object, or with -r everything under a folder (asks first).
    Rm(RmArgs),
}

#[derive(clap::Args, Debug)]
pub struct Creds {
    /// A profile of ~/.aws/credentials and ~/.aws/config (AWS_PROFILE) [default: the AWS_*
    /// variables, else the profile "default"]. (`--profile` names Atelier's own profile.)
    #[arg(long = "aws-profile", env = "AWS_PROFILE")]
    pub aws_profile: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CpArgs {
    pub src: String,
    pub dst: String,
    /// Copy a folder's contents, not the folder itself (the seed's --drop-last-dir).
    #[arg(short = 'd', long = "drop-last-dir")]
    pub drop_last_dir: bool,
    /// Files, and parts of a big file, transferred at once.
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// Part size for big objects, in MiB (objects of 16 MiB and more go in parts).
    #[arg(long, default_value_t = 8)]
    pub part_size_mb: u64,
    #[command(flatten)]
    pub creds: Creds,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    pub path: String,
    /// Everything below, not just one level.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub creds: Creds,
}

#[derive(clap::Args, Debug)]
pub struct PathArg {
    pub path: String,
    #[command(flatten)]
    pub creds: Creds,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub path: String,
    /// Delete everything under the folder PATH.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Do not ask before deleting a folder.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub creds: Creds,
}

/// `[section]` → key → value of an AWS-style INI file.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn aws_file(var: &str, name: &str) -> Option<String> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))?;
    std::fs::read_to_string(path).ok()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The store and keys: an explicit --profile wins; else the AWS_* variables; else the
/// AWS_PROFILE (or default) profile.
pub fn resolve(creds: &Creds) -> Result<Target, CliError> {
    let profile_name = creds
        .aws_profile
        .clone()
        .unwrap_or_else(|| "default".into());
    let credentials = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .map(|t| parse_ini(&t))
        .unwrap_or_default();
    let config = aws_file("AWS_CONFIG_FILE", "config")
        .map(|t| parse_ini(&t))
        .unwrap_or_default();
    let section = if profile_name == "default" {
        "default".to_string()
    } else {
        format!("profile {profile_name}")
    };
    let from_profile = |key: &str| -> Option<String> {
        credentials
            .get(&profile_name)
            .and_then(|s| s.get(key))
            .or_else(|| config.get(&section).and_then(|s| s.get(key)))
            .cloned()
    };
    if creds.aws_profile.is_some()
        && !credentials.contains_key(&profile_name)
        && !config.contains_key(&section)
    {
        return Err(CliError::other(format!(
            "profile {profile_name:?} is in neither ~/.aws/credentials nor ~/.aws/config"
        )));
    }
    let pick = |env_names: &[&str], key: &str| -> Option<String> {
        if creds.aws_profile.is_some() {
            from_profile(key).or_else(|| env_names.iter().find_map(|n| env(n)))
        } else {
            env_names
                .iter()
                .find_map(|n| env(n))
                .or_else(|| from_profile(key))
        }
    };
    let access_key_id = pick(&["AWS_ACCESS_KEY_ID"], "aws_access_key_id");
    let secret = pick(&["AWS_SECRET_ACCESS_KEY"], "aws_secret_access_key");
    let (Some(access_key_id), Some(secret)) = (access_key_id, secret) else {
        return Err(CliError::other(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials with --aws-profile",
        ));
    };
    let region = pick(&["AWS_REGION", "AWS_DEFAULT_REGION"], "region")
        .unwrap_or_else(|| crate::object_storage::connections::DEFAULT_REGION.into());
    let endpoint = pick(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"], "endpoint_url")
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let endpoint = s3::normalize_endpoint(&endpoint).map_err(CliError::other)?;
    let path_style = !endpoint.contains(".amazonaws.com");
    Ok(Target {
        endpoint,
        region,
        access_key_id,
        secret_access_key: Zeroizing::new(secret),
        path_style,
    })
}

fn client(creds: &Creds) -> Result<aws_sdk_s3::Client, CliError> {
    Ok(s3::client(&resolve(creds)?, Duration::from_secs(300), 4))
}

fn object(path: &str) -> Result<ObjectUri, CliError> {
    ObjectUri::parse(path).map_err(CliError::other)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub async fn run(cmd: ObsCommand) -> Result<(), CliError> {
    match cmd {
        ObsCommand::Cp(a) => cp(a).await,
        ObsCommand::Ls(a) => ls(a).await,
        ObsCommand::Stat(a) => stat(a).await,
        ObsCommand::Rm(a) => rm(a).await,
    }
}

async fn cp(a: CpArgs) -> Result<(), CliError> {
    let src = Loc::parse(&a.src).map_err(CliError::other)?;
    let dst = Loc::parse(&a.dst).map_err(CliError::other)?;
    let client = client(&a.creds)?;
    let side = |loc: &Loc| match loc {
        Loc::Local(_) => "local",
        Loc::Object(_) => "obs",
    };
    out(&format!(
        "[OK] {} src path: [{}]",
        side(&src),
        src.to_string().trim_end_matches('/')
    ));
    out(&format!("[OK] {} dst path: [{dst}]", side(&dst)));
    let plan = transfer::plan(&client, &src, &dst, a.drop_last_dir)
        .await
        .map_err(CliError::other)?;
    for d in &plan.dirs {
        std::fs::create_dir_all(d).map_err(|e| CliError::other(format!("{}: {e}", d.display())))?;
    }
    let total: u64 = plan.items.iter().map(|i| i.size).sum();
    let count = plan.items.len();
    let opts = Options {
        jobs: a.jobs.max(1),
        part_size: a.part_size_mb.max(5) * 1024 * 1024,
        ..Options::default()
    };
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let ticker = std::io::stderr().is_terminal().then(|| {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let done = p.bytes.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                eprint!(
                    "\r{} / {} ({:.0}%), {:.1} MB/s, {} of {count} files   ",
                    mb(done),
                    mb(total),
                    done as f64 * 100.0 / total.max(1) as f64,
                    done as f64 / 1e6 / secs,
                    p.files.load(Ordering::Relaxed)
                );
            }
        })
    });
    let results: Vec<(String, Result<Outcome, String>)> = futures_util::stream::iter(plan.items)
        .map(|item| {
            let client = client.clone();
            let progress = progress.clone();
            let opts = opts.clone();
            async move {
                let r = transfer::copy_item(&client, &item, &opts, &progress).await;
                progress.files.fetch_add(1, Ordering::Relaxed);
                if let Ok(Outcome::Skipped) = r {
                    progress.skipped.fetch_add(1, Ordering::Relaxed);
                }
                (item.src.to_string(), r)
            }
        })
        .buffer_unordered(opts.jobs)
        .collect()
        .await;
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let failures: Vec<&(String, Result<Outcome, String>)> =
        results.iter().filter(|(_, r)| r.is_err()).collect();
    let skipped = progress.skipped.load(Ordering::Relaxed);
    err(&format!(
        "{} files, {} in {secs:.1} s ({:.1} MB/s): {} copied, {skipped} already complete, {} failed",
        count,
        mb(total),
        total as f64 / 1e6 / secs,
        count as u64 - skipped - failures.len() as u64,
        failures.len()
    ));
    if failures.is_empty() {
        return Ok(());
    }
    for (src, r) in &failures {
        if let Err(e) = r {
            err(&format!("failed: {src}: {e}"));
        }
    }
    Err(CliError::other(format!(
        "{} of {count} files failed (listed above); run the same command again to retry them",
        failures.len()
    )))
}

async fn ls(a: LsArgs) -> Result<(), CliError> {
    let u = object(&a.path)?;
    let client = client(&a.creds)?;
    let prefix = u.dir_prefix();
    let mut req = client
        .list_objects_v2()
        .bucket(&u.bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    if !a.recursive {
        req = client
            .list_objects_v2()
            .bucket(&u.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
    }
    let mut any = false;
    while let Some(page) = req.next().await {
        let page =
            page.map_err(|e| CliError::other(transfer::s3_error(&e, &format!("listing {u}"))))?;
        for p in page.common_prefixes() {
            any = true;
            out(&format!(
                "{:>12}  {:<20}  obs://{}/{}",
                "DIR",
                "",
                u.bucket,
                p.prefix().unwrap_or_default()
            ));
        }
        for o in page.contents() {
            any = true;
            out(&format!(
                "{:>12}  {:<20}  obs://{}/{}",
                o.size().unwrap_or(0),
                o.last_modified().map(|t| t.to_string()).unwrap_or_default(),
                u.bucket,
                o.key().unwrap_or_default()
            ));
        }
    }
    if !any {
        err(&format!("nothing under {u}"));
    }
    Ok(())
}

async fn stat(a: PathArg) -> Result<(), CliError> {
    let u = object(&a.path)?;
    let client = client(&a.creds)?;
    if !u.key.is_empty() && !u.key.ends_with('/') {
        match client
            .head_object()
            .bucket(&u.bucket)
            .key(&u.key)
            .send()
            .await
        {
            Ok(h) => {
                out(&format!("path          {u}"));
                out(&format!(
                    "size          {}",
                    h.content_length().unwrap_or(0)
                ));
                out(&format!(
                    "modified      {}",
                    h.last_modified().map(|t| t.to_string()).unwrap_or_default()
                ));
                out(&format!("etag          {}", h.e_tag().unwrap_or_default()));
                out(&format!(
                    "content type  {}",
                    h.content_type().unwrap_or_default()
                ));
                if let Some(sha) = h.metadata().and_then(|m| m.get(transfer::SHA256_META)) {
                    out(&format!("sha256        {sha}"));
                }
                out("directory     false");
                return Ok(());
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {}
            // Some stores answer a HEAD of a folder's name with an error rather than 404.
            Err(_) if transfer::is_folder(&client, &u).await => {}
            Err(e) => {
                return Err(CliError::other(transfer::s3_error(
                    &e,
                    &format!("reading {u}"),
                )));
            }
        }
    }
    let under = transfer::list_all(&client, &u.bucket, &u.dir_prefix())
        .await
        .map_err(CliError::other)?;
    if under.is_empty() && !u.key.is_empty() {
        return Err(CliError::other(format!("{u}: no such object or folder")));
    }
    out(&format!(
        "path          obs://{}/{}",
        u.bucket,
        u.dir_prefix()
    ));
    out(&format!("objects       {}", under.len()));
    out(&format!(
        "size          {}",
        under.iter().map(|(_, s)| s).sum::<u64>()
    ));
    out("directory     true");
    Ok(())
}

async fn rm(a: RmArgs) -> Result<(), CliError> {
    let u = object(&a.path)?;
    let client = client(&a.creds)?;
    if !a.recursive {
        if u.key.is_empty() || u.key.ends_with('/') {
            return Err(CliError::other(format!(
                "{u} is a folder: pass -r to delete everything under it"
            )));
        }
        client
            .head_object()
            .bucket(&u.bucket)
            .key(&u.key)
            .send()
            .await
            .map_err(|e| {
                if e.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                    CliError::other(format!("{u}: no such object (a folder needs -r)"))
                } else {
                    CliError::other(transfer::s3_error(&e, &format!("reading {u}")))
                }
            })?;
        client
            .delete_object()
            .bucket(&u.bucket)
            .key(&u.key)
            .send()
            .await
            .map_err(|e| CliError::other(transfer::s3_error(&e, &format!("deleting {u}"))))?;
        err(&format!("deleted {u}"));
        return Ok(());
    }
    let prefix = u.dir_prefix();
    let keys = transfer::list_all(&client, &u.bucket, &prefix)
        .await
        .map_err(CliError::other)?;
    if keys.is_empty() {
        return Err(CliError::other(format!(
            "nothing under obs://{}/{prefix}",
            u.bucket
        )));
    }
    if !a.yes {
        if !prompt::stdin_is_terminal() {
            return Err(CliError::other(format!(
                "deleting {} objects under obs://{}/{prefix} needs confirmation: pass --yes",
                keys.len(),
                u.bucket
            )));
        }
        let answer = prompt::ask(format!(
            "[WARN] delete {} objects under obs://{}/{prefix}? [y/N] ",
            keys.len(),
            u.bucket
        ))
        .await?;
        if !matches!(answer.as_deref().map(str::trim), Some("y" | "Y" | "yes")) {
            return Err(CliError::other("nothing deleted"));
        }
    }
    for chunk in keys.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|(k, _)| {
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(k)
                    .build()
                    .map_err(|e| CliError::other(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delete = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| CliError::other(e.to_string()))?;
        let r = client
            .delete_objects()
            .bucket(&u.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| CliError::other(transfer::s3_error(&e, "deleting objects")))?;
        if let Some(first) = r.errors().first() {
            return Err(CliError::other(format!(
                "{} objects were not deleted, first {}: {}",
                r.errors().len(),
                first.key().unwrap_or_default(),
                first.message().unwrap_or_default()
            )));
        }
    }
    err(&format!(
        "deleted {} objects under obs://{}/{prefix}",
        keys.len(),
        u.bucket
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_files() {
        let ini = parse_ini(
            "[default]\naws_access_key_id = AK1\n# comment\n[profile work]\nregion=eu-west-1\nEndpoint_URL = http://x:9000\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AK1");
        assert_eq!(ini["profile work"]["region"], "eu-west-1");
        assert_eq!(ini["profile work"]["endpoint_url"], "http://x:9000");
    }
}
