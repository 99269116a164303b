//! SSH key pairs over the API and the CLI, checked with the real OpenSSH `ssh-keygen`:
//! generate (private key shown once, valid for OpenSSH), import, list, get, delete, isolation
//! between users, bad input and the audit trail.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use atelier_tests::Gateway;
use serde_json::{Value, json};

/// `ssh-keygen` output for a key file: (`-y` derived public key, `-l` SHA256 fingerprint).
fn ssh_keygen_view(path: &Path) -> (String, String) {
    let public = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(path)
        .output()
        .expect("running ssh-keygen (openssh-client)");
    assert!(
        public.status.success(),
        "ssh-keygen -y: {}",
        String::from_utf8_lossy(&public.stderr)
    );
    let fp = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-E")
        .arg("sha256")
        .arg("-f")
        .arg(path)
        .output()
        .expect("running ssh-keygen");
    assert!(fp.status.success(), "ssh-keygen -l");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fingerprint = fp
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    let public = String::from_utf8_lossy(&public.stdout).trim().to_owned();
    (public, fingerprint)
}

/// The key type and base64 of a one-line public key, without the comment.
fn key_body(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn new_ssh_key(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", "imported@test", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pairs_are_generated_imported_listed_and_deleted() {
    let gw = Gateway::start().await;
    let alice_token = gw.create_user("alice").await;
    let bob_token = gw.create_user("bob").await;
    let alice = gw.api(&alice_token);
    let bob = gw.api(&bob_token);

    // Generate: the private key comes back once, and OpenSSH accepts it.
    let r = alice
        .post("/v1/keypairs", json!({"name": "KeyPair-9a64"}))
        .await;
    let created = r.expect_status(201).clone();
    let private = created["private_key"].as_str().expect("private_key");
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert_eq!(created["algorithm"], "ssh-ed25519");
    assert_eq!(created["owner"], "alice");
    let pem = gw.data_dir.join("generated.pem");
    std::fs::write(&pem, private).unwrap();
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (derived, fingerprint) = ssh_keygen_view(&pem);
    assert_eq!(
        key_body(&derived),
        key_body(created["public_key"].as_str().unwrap())
    );
    assert_eq!(created["fingerprint"], fingerprint.as_str());

    // Never again: not in get, not in list.
    let r = alice.get("/v1/keypairs/KeyPair-9a64").await;
    let shown = r.expect_status(200);
    assert!(shown.get("private_key").is_none(), "{}", r.text);
    assert_eq!(shown["fingerprint"], fingerprint.as_str());
    let r = alice.get("/v1/keypairs").await;
    assert!(!r.text.contains("PRIVATE KEY"), "{}", r.text);

    // Import OpenSSH's own keys: ed25519, ecdsa and rsa.
    let dir = gw.data_dir.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, args) in [
        ("ed", vec!["-t", "ed25519"]),
        ("ec", vec!["-t", "ecdsa", "-b", "256"]),
        ("rsa", vec!["-t", "rsa", "-b", "3072"]),
    ] {
        let key = new_ssh_key(&dir, name, &args);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let r = alice
            .post("/v1/keypairs", json!({"name": name, "public_key": public}))
            .await;
        let v = r.expect_status(201);
        assert!(v.get("private_key").is_none(), "{}", r.text);
        let (_, fp) = ssh_keygen_view(&key);
        assert_eq!(v["fingerprint"], fp.as_str(), "{name}");
        assert_eq!(
            key_body(v["public_key"].as_str().unwrap()),
            key_body(&public)
        );
    }
    let r = alice.get("/v1/keypairs").await;
    let names: Vec<&str> = r.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["KeyPair-9a64", "ec", "ed", "rsa"]);

    // Bad input: each refused with a message naming the problem, nothing created.
    let ed_pub = std::fs::read_to_string(dir.join("ed.pub")).unwrap();
    let ed_private = std::fs::read_to_string(dir.join("ed")).unwrap();
    let weak = new_ssh_key(&dir, "weak", &["-t", "rsa", "-b", "1024"]);
    let weak_pub = std::fs::read_to_string(weak.with_extension("pub")).unwrap();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "ed"}), 409, "already exists"),
        (
            json!({"name": "again", "public_key": ed_pub}),
            409,
            "already imported as key pair",
        ),
        (
            json!({"name": "bad", "public_key": "ssh-ed25519 AAAA!!!"}),
            400,
            "public_key",
        ),
        (
            json!({"name": "priv", "public_key": ed_private}),
            400,
            "that is a private key",
        ),
        (
            json!({"name": "weak", "public_key": weak_pub}),
            400,
            "too weak",
        ),
        (json!({"name": "a b"}), 400, "name"),
        (json!({"name": ""}), 400, "name"),
        (json!({"name": "x", "comment": "y"}), 400, "comment"),
        (json!({}), 400, "name"),
    ];
    for (body, status, needle) in cases {
        let r = alice.post("/v1/keypairs", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(needle), "{body}: {}", r.text);
    }
    let r = alice.get("/v1/keypairs").await;
    assert_eq!(r.expect_status(200)["items"].as_array().unwrap().len(), 4);

    // Another user sees none of them, and cannot import the same public key: a key is one
    // user's (the SSH front door finds the user by it), and the 409 does not say whose.
    assert_eq!(bob.get("/v1/keypairs/ed").await.status, 404);
    assert_eq!(bob.delete("/v1/keypairs/ed").await.status, 404);
    let r = bob.get("/v1/keypairs").await;
    assert_eq!(r.expect_status(200)["items"].as_array().unwrap().len(), 0);
    let r = bob.get("/v1/keypairs?all=true").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = bob
        .post("/v1/keypairs", json!({"name": "ed", "public_key": ed_pub}))
        .await;
    let message = r.expect_error(409, "conflict");
    assert!(message.contains("another user"), "{message}");
    assert!(!message.contains("alice"), "{message}");
    let bobs = new_ssh_key(&dir, "bobs", &["-t", "ed25519"]);
    let bobs_pub = std::fs::read_to_string(bobs.with_extension("pub")).unwrap();
    let r = bob
        .post(
            "/v1/keypairs",
            json!({"name": "ed", "public_key": bobs_pub}),
        )
        .await;
    r.expect_status(201);
    let r = gw.admin().get("/v1/keypairs?all=true").await;
    let owners: Vec<&str> = r.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice", "alice", "alice", "alice", "bob"]);

    // Delete.
    assert_eq!(alice.delete("/v1/keypairs/ec").await.status, 204);
    assert_eq!(alice.get("/v1/keypairs/ec").await.status, 404);
    assert_eq!(alice.delete("/v1/keypairs/ec").await.status, 404);
    assert_eq!(
        bob.get("/v1/keypairs/ed").await.status,
        200,
        "bob's is his own"
    );

    // The audit trail.
    let r = gw.admin().get("/v1/audit?limit=50").await;
    let audit = r.expect_status(200)["items"].as_array().unwrap().clone();
    let count = |action: &str, user: &str| {
        audit
            .iter()
            .filter(|a| a["action"] == action && a["user"] == user)
            .count()
    };
    assert_eq!(count("createKeyPair", "alice"), 1, "{}", r.text);
    assert_eq!(count("importKeyPair", "alice"), 3, "{}", r.text);
    assert_eq!(count("importKeyPair", "bob"), 1, "{}", r.text);
    assert_eq!(count("deleteKeyPair", "alice"), 1, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_saves_a_usable_private_key_and_manages_key_pairs() {
    let gw = Gateway::start().await;
    let token = gw.create_user("dora").await;
    let dir = gw.data_dir.join("cli-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("laptop.pem");
    let pem_arg = pem.to_string_lossy().into_owned();

    let out = gw
        .cli(
            &token,
            &["keypair", "create", "laptop", "--output", &pem_arg],
            &[],
        )
        .await;
    out.assert_ok("keypair create");
    assert!(out.stderr.contains("saved to"), "{}", out.stderr);
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key file is for its owner only");
    let (derived, fingerprint) = ssh_keygen_view(&pem);
    let shown = gw.api(&token).get("/v1/keypairs/laptop").await;
    let shown = shown.expect_status(200);
    assert_eq!(shown["fingerprint"], fingerprint.as_str());
    assert_eq!(
        key_body(&derived),
        key_body(shown["public_key"].as_str().unwrap())
    );

    // An existing file is never overwritten, and the refusal creates nothing.
    let out = gw
        .cli(
            &token,
            &["keypair", "create", "second", "--output", &pem_arg],
            &[],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(gw.api(&token).get("/v1/keypairs/second").await.status, 404);

    // Import from a file, list as a table and as JSON, get, delete.
    let key = new_ssh_key(&dir, "id_ed25519", &["-t", "ed25519"]);
    let pub_arg = key.with_extension("pub").to_string_lossy().into_owned();
    let out = gw
        .cli(&token, &["keypair", "import", "work", &pub_arg], &[])
        .await;
    out.assert_ok("keypair import");
    let out = gw.cli(&token, &["keypair", "list"], &[]).await;
    out.assert_ok("keypair list");
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    for name in ["laptop", "work"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} in:\n{}",
            out.stdout
        );
    }
    let out = gw.cli(&token, &["keypair", "list", "--json"], &[]).await;
    out.assert_ok("keypair list --json");
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{}", out.stdout);
    let out = gw.cli(&token, &["keypair", "get", "work"], &[]).await;
    out.assert_ok("keypair get");
    assert!(out.stdout.contains("ssh-ed25519 AAAA"), "{}", out.stdout);
    let out = gw.cli(&token, &["keypair", "delete", "work"], &[]).await;
    out.assert_ok("keypair delete");
    let out = gw.cli(&token, &["keypair", "get", "work"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}
