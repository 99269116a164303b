//! Object storage connections against a real S3 server on loopback (s3s-fs): every wrong
//! part is refused with a 400 that names it and leaves nothing behind; the secret key is
//! sealed at rest and appears in no response, CLI output, audit entry, log line or database
//! page; a restarted gateway still opens it; deleting a connection leaves the objects.

use atelier_tests::s3::S3Server;
use atelier_tests::{Gateway, free_port};
use serde_json::{Value, json};

const PATH: &str = "/v1/storage/connections";

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_checked_sealed_and_never_shown() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("datasets");
    std::fs::write(bucket.join("keep.txt"), "objects outlive connections").unwrap();
    let mut gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    let good = json!({
        "name": "local",
        "endpoint": s3.endpoint(),
        "bucket": "datasets",
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
    });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };

    // Each wrong part: a 400 whose code and message say which.
    let refusals = [
        (
            with("secret_access_key", "not-the-secret".into()),
            "storage_credentials_refused",
            "refused the credentials",
        ),
        (
            with("access_key_id", "AKUNKNOWN".into()),
            "storage_credentials_refused",
            "\"AKUNKNOWN\"",
        ),
        (
            with(
                "endpoint",
                format!("http://127.0.0.1:{}", free_port()).into(),
            ),
            "storage_unreachable",
            "cannot reach the object store",
        ),
        (
            with("bucket", "no-such-bucket".into()),
            "storage_bucket_missing",
            "bucket \"no-such-bucket\" does not exist",
        ),
        (
            // Something that answers HTTP but is no S3 store: the gateway itself.
            with("endpoint", gw.base().into()),
            "storage_error",
            "",
        ),
        (
            with("endpoint", "s3.example.org".into()),
            "invalid_argument",
            "endpoint:",
        ),
        (
            with("bucket", "Bad_Bucket".into()),
            "invalid_argument",
            "bucket:",
        ),
        (with("name", "a/b".into()), "invalid_argument", "name:"),
        (
            with("secret_access_key", "".into()),
            "invalid_argument",
            "secret_access_key: must not be empty",
        ),
    ];
    for (body, code, says) in refusals {
        let r = api.post(PATH, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(!r.text.contains(&s3.secret_key), "{}", r.text);
    }
    let r = api.get(PATH).await;
    assert_eq!(
        r.json["items"],
        json!([]),
        "refusals left something: {}",
        r.text
    );

    // The good one: created, shown without its secret.
    let r = api.post(PATH, good.clone()).await;
    r.expect_status(201);
    assert_eq!(r.json["name"], "local");
    assert_eq!(r.json["endpoint"], s3.endpoint());
    assert_eq!(r.json["bucket"], "datasets");
    assert_eq!(r.json["region"], "us-east-1");
    assert_eq!(r.json["path_style"], true);
    assert_eq!(r.json["access_key_id"], s3.access_key);
    assert!(r.json.get("secret_access_key").is_none(), "{}", r.text);
    api.post(PATH, good.clone()).await.expect_status(409);
    for path in [PATH.to_string(), format!("{PATH}/local")] {
        let r = api.get(&path).await;
        r.expect_status(200);
        assert!(!r.text.contains(&s3.secret_key), "{path}: {}", r.text);
        assert!(!r.text.contains("secret"), "{path}: {}", r.text);
    }
    let r = api.post_empty(&format!("{PATH}/local/check")).await;
    r.expect_status(200);
    assert_eq!(r.json["ok"], true);

    // Another user sees nothing of it.
    let bob = gw.api(&gw.create_user("bob").await);
    bob.get(&format!("{PATH}/local")).await.expect_status(404);
    assert_eq!(bob.get(PATH).await.json["items"], json!([]));

    // The CLI: create (secret from AWS_SECRET_ACCESS_KEY), list, get, check.
    let cli = gw
        .cli(
            &token,
            &[
                "storage",
                "connection",
                "create",
                "by-cli",
                "--endpoint",
                &s3.endpoint(),
                "--bucket",
                "datasets",
            ],
            &[
                ("AWS_ACCESS_KEY_ID", &s3.access_key),
                ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
            ],
        )
        .await;
    cli.assert_ok("storage connection create");
    assert!(cli.stderr.contains("connected by-cli"), "{}", cli.stderr);
    let cli = gw
        .cli(&token, &["storage", "connection", "list"], &[])
        .await;
    cli.assert_ok("storage connection list");
    assert!(
        cli.stdout.contains("by-cli") && cli.stdout.contains("local"),
        "{}",
        cli.stdout
    );
    let cli = gw
        .cli(&token, &["storage", "connection", "get", "by-cli"], &[])
        .await;
    cli.assert_ok("storage connection get");
    assert!(cli.stdout.contains(&s3.access_key), "{}", cli.stdout);
    let cli = gw
        .cli(&token, &["storage", "conn", "check", "by-cli"], &[])
        .await;
    cli.assert_ok("storage connection check");
    let cli = gw
        .cli(
            &token,
            &[
                "storage",
                "connection",
                "create",
                "wrong",
                "--endpoint",
                &s3.endpoint(),
            ],
            &[
                ("AWS_ACCESS_KEY_ID", &s3.access_key),
                ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
            ],
        )
        .await;
    assert_ne!(cli.code, 0, "{}", cli.stdout);
    assert!(
        cli.stderr.contains("refused the credentials"),
        "{}",
        cli.stderr
    );

    // A restarted gateway opens the sealed secret with the same key file.
    gw.restart().await;
    let api = gw.api(&token);
    api.post_empty(&format!("{PATH}/local/check"))
        .await
        .expect_status(200);

    // Nowhere in the clear: the audit log, the gateway log, the database.
    let audit = gw.admin().get("/v1/audit").await;
    assert!(
        audit.text.contains("createStorageConnection"),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains(&s3.secret_key));
    assert!(
        !gw.log().contains(&s3.secret_key),
        "the secret is in the gateway log"
    );
    for entry in std::fs::read_dir(&gw.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(s3.secret_key.len())
                    .any(|w| w == s3.secret_key.as_bytes()),
                "the secret is in the clear in {}",
                path.display()
            );
        }
    }

    // Deleting forgets the connection, never the objects.
    api.delete(&format!("{PATH}/local"))
        .await
        .expect_status(204);
    api.get(&format!("{PATH}/local")).await.expect_status(404);
    assert_eq!(
        std::fs::read_to_string(bucket.join("keep.txt")).unwrap(),
        "objects outlive connections"
    );
    let cli = gw
        .cli(&token, &["storage", "connection", "delete", "by-cli"], &[])
        .await;
    cli.assert_ok("storage connection delete");
    assert_eq!(api.get(PATH).await.json["items"], json!([]));
}
