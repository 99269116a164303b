//! Large uploads staged through object storage (seed 6.3.5.1) against a real S3 server on
//! loopback (s3s-fs): a 300 MB file sent in parts with presigned URLs (resumed after a part
//! went alone), landing in the notebook's work dir with the same SHA-256 and nothing left in
//! the store; the seed's queue of 10; refusals that leave nothing behind; a checksum that
//! does not match fails the upload and writes no file.

use std::time::Duration;

use atelier_tests::s3::{S3Server, files_under, noise};
use atelier_tests::{Gateway, eventually};
use serde_json::{Value, json};

const SIZE: usize = 300 * 1000 * 1000;

fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_status(api: &atelier_tests::Api, path: &str, want: &str) -> Value {
    eventually(
        &format!("{path} to be {want}"),
        Duration::from_secs(120),
        || {
            let api = api.clone();
            let path = path.to_owned();
            async move {
                let r = api.get(&path).await;
                (r.json["status"] == want
                    || !["QUEUED", "UPLOADING", "LANDING"].contains(&r.json["status"].as_str()?))
                .then_some(r.json)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn staged_uploads_land_in_the_work_dir_and_leave_nothing_in_the_store() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("stage");
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    api.post(
        "/v1/storage/connections",
        json!({
            "name": "c",
            "endpoint": s3.endpoint(),
            "bucket": "stage",
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
        }),
    )
    .await
    .expect_status(201);
    let id = gw.create_notebook(&token, "up").await;
    gw.wait_status(&token, &id, "RUNNING").await;
    let uploads = format!("/v1/notebooks/{id}/uploads");
    let work = gw.notebook_dir(&id).join("work");

    // Refusals name the field and leave nothing.
    for (body, code, says) in [
        (
            json!({"path": "../x", "size": 1, "connection": "c"}),
            "invalid_argument",
            "path:",
        ),
        (
            json!({"path": "a;b", "size": 1, "connection": "c"}),
            "invalid_argument",
            "path:",
        ),
        (
            json!({"path": "big", "size": 50_000_000_001u64, "connection": "c"}),
            "invalid_argument",
            "size:",
        ),
        (
            json!({"path": "x", "size": 1, "connection": "nope"}),
            "invalid_argument",
            "connection:",
        ),
        (
            json!({"path": "x", "size": 1, "connection": "c", "sha256": "abc"}),
            "invalid_argument",
            "sha256:",
        ),
        (
            json!({"path": "x", "size": 1, "connection": "c", "staging": "obs://no-such-bucket/p/"}),
            "storage_bucket_missing",
            "no-such-bucket",
        ),
    ] {
        let r = api.post(&uploads, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    assert_eq!(api.get(&uploads).await.json["items"], json!([]));

    // A 300 MB file: one part sent by hand first, then the CLI resumes the same upload.
    let dir = std::env::temp_dir().join(format!("atelier-upload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.bin");
    std::fs::write(&big, noise(SIZE, 42)).unwrap();
    let sha = sha256sum(&big);
    let r = api
        .post(
            &uploads,
            json!({"path": "data/big.bin", "size": SIZE, "sha256": sha, "connection": "c"}),
        )
        .await;
    r.expect_status(201);
    assert_eq!(r.json["status"], "UPLOADING", "{}", r.text);
    let uid = r.json["id"].as_str().unwrap().to_owned();
    let total = r.json["parts_total"].as_u64().unwrap();
    assert!(total > 1, "{}", r.text);
    let first = &r.json["parts"][0];
    assert_eq!(first["number"], 1);
    let len = first["size"].as_u64().unwrap() as usize;
    let put = reqwest::Client::new()
        .put(first["url"].as_str().unwrap())
        .body(std::fs::read(&big).unwrap()[..len].to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let one = format!("{uploads}/{uid}");
    let r = api.get(&one).await;
    assert_eq!(r.json["parts_done"], json!([1]), "{}", r.text);
    assert_eq!(r.json["parts"].as_array().unwrap().len() as u64, total - 1);
    // Completing with parts missing names them.
    let r = api.post_empty(&format!("{one}/complete")).await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(msg.contains("parts missing") && msg.contains(" 2"), "{msg}");

    let big_s = big.to_string_lossy().into_owned();
    let out = gw
        .cli(
            &token,
            &[
                "notebook",
                "upload",
                "up",
                &big_s,
                "--to",
                "data/big.bin",
                "--connection",
                "c",
            ],
            &[],
        )
        .await;
    out.assert_ok("notebook upload");
    assert!(
        out.stderr.contains(&format!("resuming upload {uid}")),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("uploaded"), "{}", out.stdout);
    let landed = work.join("data/big.bin");
    assert_eq!(sha256sum(&landed), sha);
    let r = api.get(&one).await;
    assert_eq!(r.json["status"], "DONE", "{}", r.text);
    assert!(
        files_under(&bucket).is_empty(),
        "staged objects left: {:?}",
        files_under(&bucket)
    );
    let out = gw.cli(&token, &["notebook", "uploads", "up"], &[]).await;
    out.assert_ok("notebook uploads");
    assert!(
        out.stdout.contains("data/big.bin") && out.stdout.contains("DONE"),
        "{}",
        out.stdout
    );
    // The name is taken now: overwrite or pick another.
    let r = api
        .post(
            &uploads,
            json!({"path": "data/big.bin", "size": 5, "connection": "c"}),
        )
        .await;
    r.expect_error(409, "conflict");
    std::fs::remove_dir_all(&dir).unwrap();

    // A checksum that does not match: FAILED, no file written, nothing in the store.
    let r = api
        .post(
            &uploads,
            json!({"path": "bad.txt", "size": 5, "sha256": "0".repeat(64), "connection": "c"}),
        )
        .await;
    r.expect_status(201);
    let bad = format!("{uploads}/{}", r.json["id"].as_str().unwrap());
    let put = reqwest::Client::new()
        .put(r.json["parts"][0]["url"].as_str().unwrap())
        .body("hello")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    api.post_empty(&format!("{bad}/complete"))
        .await
        .expect_status(202);
    let v = wait_status(&api, &bad, "FAILED").await;
    assert_eq!(v["status"], "FAILED", "{v}");
    assert!(v["error"].as_str().unwrap().contains("SHA-256"), "{v}");
    assert!(!work.join("bad.txt").exists());
    assert!(
        files_under(&bucket).is_empty(),
        "{:?}",
        files_under(&bucket)
    );

    // Ten in flight per notebook; the eleventh waits and starts when one ends.
    let mut ids = Vec::new();
    for i in 0..11 {
        let r = api
            .post(
                &uploads,
                json!({"path": format!("q/{i}.txt"), "size": 1, "connection": "c"}),
            )
            .await;
        r.expect_status(201);
        let want = if i < 10 { "UPLOADING" } else { "QUEUED" };
        assert_eq!(r.json["status"], want, "upload {i}: {}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }
    api.delete(&format!("{uploads}/{}", ids[0]))
        .await
        .expect_status(204);
    let r = api.get(&format!("{uploads}/{}", ids[10])).await;
    assert_eq!(r.json["status"], "UPLOADING", "{}", r.text);
    for uid in &ids[1..] {
        api.delete(&format!("{uploads}/{uid}"))
            .await
            .expect_status(204);
    }
    assert!(
        files_under(&bucket).is_empty(),
        "{:?}",
        files_under(&bucket)
    );
    assert!(!work.join("q").exists());
    // No parts of aborted or completed uploads stay with the server either.
    let parts: Vec<String> = files_under(&s3.root)
        .into_iter()
        .filter(|f| f.contains(".upload_id-"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
}
