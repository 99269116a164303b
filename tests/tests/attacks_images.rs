//! Attacks on images: registering a reference inside another user's saved-image namespace or
//! the gateway's registry (to boot their saved image: home dir, history, credentials), by a
//! name the engine resolves by its own rules (a short name, an image id), and probing image
//! ids for other users' names.
//!
//! The reference checks run before the engine is asked, so the process backend (which refuses
//! every registration with 409) shows them without Podman; the per-owner ids need images that
//! register, so that test runs on the docker backend (Podman, like tests/containers.rs).

use atelier_tests::Gateway;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_into_saved_image_namespaces_or_resolved_by_engine_rules_are_refused() {
    let registry = "registry.example.com:5000/atelier";
    let gw = Gateway::start_with(&[("ATELIER_REGISTRY", registry)]).await;
    let mallory = gw.api(&gw.create_user("mallory").await);
    let admin = gw.admin();
    for (reference, says) in [
        // alice's saves, kept in the engine or pushed to the gateway's registry.
        ("localhost/atelier/alice/env:v1", "registry prefix"),
        ("LOCALHOST/Atelier/alice/env:v1", "registry prefix"),
        ("localhost/atelier/alice/env@sha256:0123", "registry prefix"),
        (
            "registry.example.com:5000/atelier/alice/env:v1",
            "registry prefix",
        ),
        (
            "Registry.Example.com:5000/atelier/alice/env:v1",
            "registry prefix",
        ),
        // Names the engine completes itself: Podman finds short names among its local images
        // (localhost/atelier/… included).
        ("atelier/alice/env:v1", "no registry host"),
        ("alice/env:v1", "no registry host"),
        ("env:v1", "no registry host"),
        // Image ids (and their short prefixes).
        ("3f2a9c", "image id"),
        ("sha256:3f2a9c", "image id"),
    ] {
        for (who, api) in [("mallory", &mallory), ("admin", &admin)] {
            let r = api
                .post("/v1/images", json!({"name": "stolen", "ref": reference}))
                .await;
            let msg = r.expect_error(400, "invalid_argument");
            assert!(msg.starts_with("ref:"), "{who} {reference}: {msg}");
            assert!(msg.contains(says), "{who} {reference}: {msg}");
        }
    }
    // A reference elsewhere passes these checks and reaches the engine (which the process
    // backend does not have: 409), so the checks are not a blanket refusal.
    let msg = mallory
        .post(
            "/v1/images",
            json!({"name": "mine", "ref": "docker.io/library/python:3.12"}),
        )
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("process backend"), "{msg}");
    // Nothing was registered.
    let listed = mallory.get("/v1/images").await;
    let listed = listed.expect_status(200);
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"stolen") && !ids.contains(&"mine"),
        "{ids:?}"
    );
    // Only admins name an image's owner.
    mallory
        .get("/v1/images/env?owner=alice")
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_ids_are_per_owner_and_collisions_reveal_no_other_user() {
    let (_, image) = atelier_tests::docker_env();
    let gw = Gateway::start_docker("", &[]).await;
    let alice_token = gw.create_user("alice").await;
    let alice = gw.api(&alice_token);
    let bob = gw.api(&gw.create_user("bob").await);
    let admin = gw.admin();
    let ids = |api: &atelier_tests::Api| {
        let api = api.clone();
        async move {
            let r = api.get("/v1/images").await;
            r.expect_status(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["id"].as_str().unwrap().to_owned(), i["owner"].clone()))
                .collect::<Vec<_>>()
        }
    };

    // alice and bob both register `env`: neither conflicts with, nor sees, the other's.
    let a = alice
        .post(
            "/v1/images",
            json!({"name": "env", "ref": image, "description": "alice's"}),
        )
        .await;
    assert_eq!(a.expect_status(201)["owner"], "alice");
    let b = bob
        .post(
            "/v1/images",
            json!({"name": "env", "ref": image, "description": "bob's"}),
        )
        .await;
    assert_eq!(b.expect_status(201)["owner"], "bob");
    assert!(
        ids(&bob)
            .await
            .iter()
            .all(|(_, owner)| owner != &json!("alice"))
    );
    let got = bob.get("/v1/images/env").await;
    assert_eq!(got.expect_status(200)["description"], "bob's");
    // A collision in one's own view says "exists" and names nobody.
    let msg = alice
        .post("/v1/images", json!({"name": "env", "ref": image}))
        .await
        .expect_error(409, "conflict");
    assert!(!msg.contains("bob"), "{msg}");
    // A private id of alice's is unknown to bob exactly like an id nobody has.
    alice
        .post("/v1/images", json!({"name": "secret-env", "ref": image}))
        .await
        .expect_status(201);
    let unknown = |id: &'static str| {
        let bob = bob.clone();
        async move {
            let r = bob
                .post("/v1/notebooks", json!({"name": "nb", "image": id}))
                .await;
            r.expect_error(400, "invalid_argument").replace(id, "ID")
        }
    };
    assert_eq!(
        unknown("secret-env").await,
        unknown("nobody-has-this").await
    );
    bob.get("/v1/images/secret-env")
        .await
        .expect_error(404, "not_found");
    bob.delete("/v1/images/secret-env")
        .await
        .expect_error(404, "not_found");

    // Public images are the admin's and in everyone's view: a user cannot shadow one.
    admin
        .post("/v1/images", json!({"name": "team", "ref": image}))
        .await
        .expect_status(201);
    alice
        .post("/v1/images", json!({"name": "team", "ref": image}))
        .await
        .expect_error(409, "conflict");
    // An admin's public `env` would be ambiguous for alice and bob: refused.
    admin
        .post("/v1/images", json!({"name": "env", "ref": image}))
        .await
        .expect_error(409, "conflict");
    // The admin names a user's image by its owner.
    admin
        .get("/v1/images/env")
        .await
        .expect_error(409, "conflict");
    let r = admin.get("/v1/images/env?owner=bob").await;
    assert_eq!(r.expect_status(200)["description"], "bob's");

    // Saving a notebook into another user's namespace (to overwrite their pushed image) is
    // refused, whatever state the notebook is in.
    let nb = alice.post("/v1/notebooks", json!({"name": "nb"})).await;
    let nb = nb.expect_status(201)["id"].as_str().unwrap().to_owned();
    let msg = alice
        .post(
            &format!("/v1/notebooks/{nb}/save-image"),
            json!({"name": "env", "tag": "v1", "namespace": "bob"}),
        )
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.starts_with("namespace:"), "{msg}");
    gw.wait_status(&alice_token, &nb, "RUNNING").await;
    alice
        .delete(&format!("/v1/notebooks/{nb}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice_token, &nb).await;

    // Unregistering takes the caller's own only.
    bob.delete("/v1/images/env").await.expect_status(204);
    let r = alice.get("/v1/images/env").await;
    assert_eq!(r.expect_status(200)["description"], "alice's");
    admin
        .delete("/v1/images/env?owner=alice")
        .await
        .expect_status(204);
    admin.delete("/v1/images/team").await.expect_status(204);
    alice
        .delete("/v1/images/secret-env")
        .await
        .expect_status(204);
}
