//! `atelier notebook upload|uploads|upload-cancel`: large files into a notebook's work dir
//! staged through object storage (`POST /v1/notebooks/{id}/uploads`). The parts go from
//! this machine straight to the store with the presigned URLs the gateway hands out; an
//! interrupted upload of the same file to the same path resumes where it stopped.

use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Ctx;
use super::api::{CliError, items};
use super::output::{err, out, print_json};
use super::table::{Table, cell, sanitize, text};

#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The local file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where it lands in the work dir [default: its file name].
    #[arg(long, value_name = "PATH")]
    pub to: Option<String>,
    /// The storage connection to stage through (atelier storage connection list).
    #[arg(long, value_name = "NAME")]
    pub connection: String,
    /// The staging folder, obs://BUCKET/PREFIX/ [default: atelier-staging/ in the
    /// connection's bucket]. The staged object is deleted once the file has landed.
    #[arg(long, value_name = "URI")]
    pub staging: Option<String>,
    /// Replace a file of that name in the work dir.
    #[arg(long)]
    pub overwrite: bool,
    /// Parts sent at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// Notebook ID (UUID) or name.
    #[arg(value_name = "ID_OR_NAME")]
    pub notebook: String,
    /// The upload's ID (atelier notebook uploads).
    #[arg(value_name = "UPLOAD")]
    pub upload: String,
}

fn sha256_of(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

pub async fn upload(ctx: &Ctx, id: &str, a: UploadArgs) -> Result<(), CliError> {
    let meta = std::fs::metadata(&a.file)
        .map_err(|e| CliError::other(format!("{}: {e}", a.file.display())))?;
    if !meta.is_file() {
        return Err(CliError::other(format!(
            "{} is not a file (folders: zip them first)",
            a.file.display()
        )));
    }
    let size = meta.len();
    let path = match &a.to {
        Some(p) => p.clone(),
        None => a
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::other("the file has no name"))?,
    };
    let file = a.file.clone();
    let sha = tokio::task::spawn_blocking(move || sha256_of(&file))
        .await
        .map_err(|e| CliError::other(e.to_string()))?
        .map_err(|e| CliError::other(format!("{}: {e}", a.file.display())))?;
    let base = ["v1", "notebooks", id, "uploads"];

    // The same file to the same path, left unfinished: go on with it.
    let list = ctx.api.get(&base, &[]).await?;
    let earlier = items(&list.value)?.iter().find(|u| {
        text(u, "path") == path.trim_start_matches("/home/ma-user/work/")
            && u["size"].as_u64() == Some(size)
            && text(u, "sha256") == sha
            && ["QUEUED", "UPLOADING"].contains(&text(u, "status"))
    });
    let mut view = match earlier {
        Some(u) => {
            let uid = text(u, "id").to_string();
            if !ctx.json {
                err(&format!("resuming upload {uid}"));
            }
            ctx.api
                .get(&[base[0], base[1], id, base[3], &uid], &[])
                .await?
                .value
        }
        None => {
            let body = json!({
                "path": path,
                "size": size,
                "sha256": sha,
                "connection": a.connection,
                "staging": a.staging,
                "overwrite": a.overwrite,
            });
            ctx.api.post(&base, Some(&body)).await?.value
        }
    };
    let uid = text(&view, "id").to_string();
    let one = [base[0], base[1], id, base[3], uid.as_str()];
    // Ten uploads per notebook at once; the rest wait their turn.
    let mut said = false;
    while text(&view, "status") == "QUEUED" {
        if !said && !ctx.json {
            err("awaiting upload: 10 uploads of this notebook are in flight");
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        view = ctx.api.get(&one, &[]).await?.value;
    }
    if text(&view, "status") != "UPLOADING" {
        return Err(CliError::other(format!(
            "upload {uid} is {}: {}",
            text(&view, "status"),
            text(&view, "error")
        )));
    }
    send_parts(ctx, &a, &view, size).await?;
    let done = ctx
        .api
        .post(
            &[base[0], base[1], id, base[3], uid.as_str(), "complete"],
            None,
        )
        .await?;
    let mut view = done.value;
    let mut raw = done.raw;
    while text(&view, "status") == "LANDING" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = ctx.api.get(&one, &[]).await?;
        view = r.value;
        raw = r.raw;
    }
    if ctx.json {
        return print_json(&raw, None);
    }
    match text(&view, "status") {
        "DONE" => {
            out(&sanitize(&format!(
                "uploaded {} to {} in the work dir ({size} bytes, sha256 {sha})",
                a.file.display(),
                text(&view, "path")
            )));
            Ok(())
        }
        s => Err(CliError::other(format!(
            "upload {uid} {s}: {}",
            text(&view, "error")
        ))),
    }
}

/// PUTs the parts still missing to their presigned URLs, `jobs` at a time.
async fn send_parts(ctx: &Ctx, a: &UploadArgs, view: &Value, size: u64) -> Result<(), CliError> {
    let parts: Vec<Value> = view["parts"].as_array().cloned().unwrap_or_default();
    if parts.iter().any(|p| !text(p, "url").starts_with("http://")) {
        return Err(CliError::other(
            "the store's part URLs are https, which this CLI cannot reach yet; send the parts with any HTTP client (PUT to each URL of GET /v1/notebooks/{id}/uploads/{upload})",
        ));
    }
    let file = Arc::new(
        std::fs::File::open(&a.file)
            .map_err(|e| CliError::other(format!("{}: {e}", a.file.display())))?,
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| CliError::other(e.to_string()))?;
    let done_parts = view["parts_done"].as_array().map_or(0, Vec::len) as u64;
    let sent = Arc::new(AtomicU64::new(
        done_parts * view["part_size"].as_u64().unwrap_or(0),
    ));
    let tty = std::io::stderr().is_terminal() && !ctx.json;
    let started = Instant::now();
    let mut puts = futures_util::stream::iter(parts)
        .map(|p| {
            let (file, http, sent) = (file.clone(), http.clone(), sent.clone());
            async move {
                let offset = p["offset"].as_u64().unwrap_or(0);
                let len = p["size"].as_u64().unwrap_or(0) as usize;
                let number = p["number"].as_i64().unwrap_or(0);
                let data = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; len];
                    file.read_exact_at(&mut buf, offset).map(|_| buf)
                })
                .await
                .map_err(|e| CliError::other(e.to_string()))?
                .map_err(|e| CliError::other(format!("reading part {number}: {e}")))?;
                let r = http
                    .put(text(&p, "url"))
                    .body(data)
                    .send()
                    .await
                    .map_err(|e| CliError::other(format!("sending part {number}: {e}")))?;
                if !r.status().is_success() {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    return Err(CliError::other(format!(
                        "the store refused part {number}: {status} {}",
                        body.chars().take(300).collect::<String>()
                    )));
                }
                sent.fetch_add(len as u64, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(a.jobs.max(1));
    while let Some(r) = puts.next().await {
        r?;
        if tty {
            let s = sent.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r{:>5.1}% {} of {} MB, {:.1} MB/s   ",
                s as f64 * 100.0 / size as f64,
                s / 1_000_000,
                size / 1_000_000,
                s as f64 / 1e6 / secs
            );
        }
    }
    if tty {
        eprintln!();
    }
    Ok(())
}

pub async fn list(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let reply = ctx
        .api
        .get(&["v1", "notebooks", id, "uploads"], &[])
        .await?;
    if ctx.json {
        return print_json(&reply.raw, Some("items"));
    }
    let mut t = Table::new(&["ID", "PATH", "SIZE", "STATUS", "CREATED"]);
    for u in items(&reply.value)? {
        let status = match u.get("error").and_then(Value::as_str) {
            Some(e) => format!("{} ({e})", cell(u, "status")),
            None => cell(u, "status"),
        };
        t.row([
            cell(u, "id"),
            cell(u, "path"),
            cell(u, "size"),
            status,
            cell(u, "created_at"),
        ]);
    }
    out(&t.render());
    Ok(())
}

pub async fn cancel(ctx: &Ctx, id: &str, upload: &str) -> Result<(), CliError> {
    ctx.api
        .delete(&["v1", "notebooks", id, "uploads", upload])
        .await?;
    if !ctx.json {
        out(&sanitize(&format!(
            "canceled upload {upload}; its parts are gone from the store"
        )));
    }
    Ok(())
}
