//! A notebook's SSH settings (spec/notebook.md §2.1, §2.7, AC-NB-13, AC-SSH-04/08/09): key
//! pairs and whitelist at create, what may change in which state, the seed's events, and
//! bad input that creates nothing.

use atelier_tests::Gateway;
use serde_json::{Value, json};

async fn new_key(gw: &Gateway, token: &str, name: &str) {
    let r = gw
        .api(token)
        .post("/v1/keypairs", json!({"name": name}))
        .await;
    r.expect_status(201);
}

fn events_named<'a>(events: &'a Value, name: &str) -> Vec<&'a Value> {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_settings_follow_the_seed_rules() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let api = gw.api(&alice);
    new_key(&gw, &alice, "k1").await;
    new_key(&gw, &alice, "k2").await;

    // Bad input: refused, naming the field, and nothing is created.
    let six: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"enabled": true}),
            "ssh.key_pairs: SSH needs at least one key pair",
        ),
        (
            json!({"enabled": true, "key_pairs": ["nope"]}),
            "Failed to find SSH key pair nope",
        ),
        (
            json!({"enabled": true, "key_pairs": ["k1"], "whitelist": six}),
            "at most 5",
        ),
        (
            json!({"enabled": true, "key_pairs": ["k1"], "whitelist": ["10.0.0.300"]}),
            "10.0.0.300",
        ),
        (
            json!({"enabled": true, "key_pairs": ["k1"], "whitelist": ["10.0.0.0/40"]}),
            "prefix length",
        ),
        (
            json!({"enabled": true, "key_pairs": ["k1"], "port": 22}),
            "port",
        ),
    ];
    for (ssh, needle) in cases {
        let r = api
            .post("/v1/notebooks", json!({"name": "bad", "ssh": ssh}))
            .await;
        assert_eq!(r.status, 400, "{ssh}: {}", r.text);
        assert!(r.text.contains(needle), "{ssh}: {}", r.text);
    }
    // Another user's key pair is not found either.
    let r = gw
        .api(&bob)
        .post(
            "/v1/notebooks",
            json!({"name": "b", "ssh": {"enabled": true, "key_pairs": ["k1"]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("Failed to find SSH key pair k1"),
        "{}",
        r.text
    );
    let r = api.get("/v1/notebooks").await;
    assert_eq!(r.expect_status(200)["total"], 0, "{}", r.text);

    // Create with SSH: the settings show, normalised, with the seed's event.
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "remote", "ssh": {"enabled": true, "key_pairs": ["k1", "k1"],
                   "whitelist": ["127.0.0.2", "10.1.2.3/8", "127.0.0.2"]}}),
        )
        .await;
    let nb = r.expect_status(201).clone();
    let id = nb["id"].as_str().unwrap().to_owned();
    assert_eq!(
        nb["ssh"],
        json!({"enabled": true, "key_pairs": ["k1"], "whitelist": ["127.0.0.2", "10.0.0.0/8"]})
    );
    // Lists carry the key pairs too (one query for the page).
    let other = api
        .post(
            "/v1/notebooks",
            json!({"name": "other", "ssh": {"enabled": true, "key_pairs": ["k2", "k1"]}}),
        )
        .await;
    let other_id = other.expect_status(201)["id"].as_str().unwrap().to_owned();
    let list = api.get("/v1/notebooks").await;
    let items = list.expect_status(200)["items"].as_array().unwrap().clone();
    let keys = |name: &str| {
        items
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["ssh"]["key_pairs"].clone())
    };
    assert_eq!(keys("remote"), Some(json!(["k1"])), "{items:?}");
    assert_eq!(keys("other"), Some(json!(["k1", "k2"])), "{items:?}");
    gw.wait_status(&alice, &other_id, "RUNNING").await;
    assert_eq!(
        api.delete(&format!("/v1/notebooks/{other_id}"))
            .await
            .status,
        202
    );
    gw.wait_gone(&alice, &other_id).await;

    let ev = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let ev = ev.expect_status(200).clone();
    let configured = events_named(&ev, "UpdateKeyPair");
    assert_eq!(configured.len(), 1, "{ev}");
    assert_eq!(
        configured[0]["description"],
        "Configured the instance key pair."
    );
    assert_eq!(
        configured[0]["detail"],
        "User alice updated the instance key pair to { k1}."
    );

    // A key pair in use cannot be deleted.
    let r = api.delete("/v1/keypairs/k1").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("remote"), "{}", r.text);

    // While running: key pairs and SSH on/off are refused, the whitelist changes.
    gw.wait_status(&alice, &id, "RUNNING").await;
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"key_pairs": ["k2"]}}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("STOPPED"), "{}", r.text);
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"whitelist": ["192.0.2.0/24"]}}),
        )
        .await;
    assert_eq!(
        r.expect_status(200)["ssh"]["whitelist"],
        json!(["192.0.2.0/24"])
    );
    let ev = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let ev = ev.expect_status(200).clone();
    let wl = events_named(&ev, "UpdateWhitelist");
    assert_eq!(wl.len(), 1, "{ev}");
    assert_eq!(
        wl[0]["description"],
        "Updating the instance access whitelist"
    );
    // SSH cannot be turned off (AC-NB-13), in any state.
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"enabled": false}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("ssh.enabled"), "{}", r.text);

    // Stopped: key pairs change, with the "from … to …" event; the old one is free again.
    let r = api.post_empty(&format!("/v1/notebooks/{id}/stop")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    gw.wait_status(&alice, &id, "STOPPED").await;
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"key_pairs": ["k2"]}}),
        )
        .await;
    assert_eq!(r.expect_status(200)["ssh"]["key_pairs"], json!(["k2"]));
    let ev = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let ev = ev.expect_status(200).clone();
    let updated: Vec<_> = events_named(&ev, "UpdateKeyPair")
        .into_iter()
        .filter(|e| e["description"] == "Updating the instance key pair")
        .collect();
    assert_eq!(updated.len(), 1, "{ev}");
    assert_eq!(
        updated[0]["detail"],
        "User alice updated the instance key pair from k1 to k2."
    );
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"key_pairs": []}}),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "an SSH notebook keeps at least one key pair: {}",
        r.text
    );
    assert_eq!(api.delete("/v1/keypairs/k1").await.status, 204);
    assert_eq!(api.delete("/v1/keypairs/k2").await.status, 409);

    // Deleting the notebook frees its key pairs.
    assert_eq!(api.delete(&format!("/v1/notebooks/{id}")).await.status, 202);
    gw.wait_gone(&alice, &id).await;
    assert_eq!(api.delete("/v1/keypairs/k2").await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_and_shows_ssh_settings() {
    let gw = Gateway::start().await;
    let token = gw.create_user("erin").await;
    new_key(&gw, &token, "laptop").await;
    let out = gw
        .cli(
            &token,
            &[
                "notebook",
                "create",
                "dev",
                "--ssh",
                "--key-pair",
                "laptop",
                "--whitelist",
                "127.0.0.1",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = gw.cli(&token, &["notebook", "get", "dev"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("SSH:")
            && out
                .stdout
                .contains("enabled; key pairs laptop; from 127.0.0.1"),
        "{}",
        out.stdout
    );
    let out = gw
        .cli(
            &token,
            &["notebook", "update", "dev", "--clear-whitelist"],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = gw.cli(&token, &["notebook", "get", "dev"], &[]).await;
    assert!(out.stdout.contains("from any address"), "{}", out.stdout);
}
