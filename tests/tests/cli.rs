//! The real `atelier` CLI against a running gateway: the notebook commands, login profiles
//! and exit codes (0 success, 1 API or usage error, 2 server unreachable).

use atelier_tests::{Gateway, free_port, run_cli};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_notebooks() {
    let gw = Gateway::start().await;
    let token = gw.create_user("carol").await;

    let out = gw
        .cli(&token, &["notebook", "create", "x", "--wait"], &[])
        .await;
    out.assert_ok("notebook create x --wait");
    let list = gw.api(&token).get("/v1/notebooks?name=x").await;
    let items = list.expect_status(200)["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", list.text);
    assert_eq!(items[0]["status"], "RUNNING", "{}", list.text);
    let id = items[0]["id"].as_str().expect("id").to_owned();

    // The table has a row for x, RUNNING.
    let out = gw.cli(&token, &["notebook", "list"], &[]).await;
    out.assert_ok("notebook list");
    assert!(
        out.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.contains(&"x") && cells.contains(&"RUNNING") && cells.contains(&id.as_str())
        }),
        "no row for x RUNNING in:\n{}",
        out.stdout
    );
    // --json is the server's items array.
    let out = gw.cli(&token, &["notebook", "list", "--json"], &[]).await;
    out.assert_ok("notebook list --json");
    let parsed: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("notebook list --json is not JSON ({e}):\n{}", out.stdout));
    let array = parsed.as_array().expect("a JSON array");
    assert_eq!(array.len(), 1, "{parsed}");
    assert_eq!(array[0]["name"], "x");
    assert_eq!(array[0]["status"], "RUNNING");

    let out = gw
        .cli(&token, &["notebook", "stop", "x", "--wait"], &[])
        .await;
    out.assert_ok("notebook stop x --wait");
    let nb = gw.api(&token).get(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(nb.expect_status(200)["status"], "STOPPED", "{}", nb.text);

    let out = gw
        .cli(&token, &["notebook", "delete", "x", "--yes"], &[])
        .await;
    out.assert_ok("notebook delete x --yes");
    gw.wait_gone(&token, &id).await;
    let out = gw.cli(&token, &["notebook", "list", "--json"], &[]).await;
    out.assert_ok("notebook list --json after delete");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).ok(),
        Some(serde_json::json!([])),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_login_profiles_and_exit_codes() {
    let gw = Gateway::start().await;
    let token = gw.create_user("dave").await;
    let config = gw.data_dir.join("dave-cli.toml");
    let config_s = config.to_string_lossy().into_owned();
    let base = gw.base();

    // login saves URL and token; whoami then needs neither in the environment.
    let out = run_cli(
        &["login"],
        &[
            ("ATELIER_URL", &base),
            ("ATELIER_TOKEN", &token),
            ("ATELIER_CLI_CONFIG", &config_s),
        ],
    )
    .await;
    out.assert_ok("login");
    assert!(out.stdout.contains("dave"), "{}", out.stdout);
    assert!(config.is_file(), "login wrote no {}", config.display());
    let out = run_cli(&["whoami"], &[("ATELIER_CLI_CONFIG", &config_s)]).await;
    out.assert_ok("whoami from the saved profile");
    assert!(out.stdout.contains("dave (user)"), "{}", out.stdout);
    assert!(out.stdout.contains(&base), "{}", out.stdout);
    let out = run_cli(&["whoami", "--json"], &[("ATELIER_CLI_CONFIG", &config_s)]).await;
    out.assert_ok("whoami --json");
    let me: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(me["name"], "dave");

    // A wrong token: exit code 1, and stderr says why.
    let out = gw
        .cli("atl_wrong-token-000000000000000000000", &["whoami"], &[])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("error") && (err.contains("not valid") || err.contains("unauthenticated")),
        "{}",
        out.stderr
    );
    let out = gw
        .cli(
            "atl_wrong-token-000000000000000000000",
            &["notebook", "list"],
            &[],
        )
        .await;
    assert_eq!(out.code, 1, "{out:?}");

    // An API error with a good token is exit code 1 too.
    let out = gw
        .cli(&token, &["notebook", "create", "bad name"], &[])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("name"), "{}", out.stderr);

    // Nothing listens there: exit code 2.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = run_cli(
        &["whoami"],
        &[
            ("ATELIER_URL", &nowhere),
            ("ATELIER_TOKEN", &token),
            ("ATELIER_CLI_CONFIG", &config_s),
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("error"), "{}", out.stderr);

    // logout forgets the profile; whoami then has no token (a usage error, exit 1).
    let out = run_cli(&["logout"], &[("ATELIER_CLI_CONFIG", &config_s)]).await;
    out.assert_ok("logout");
    let out = run_cli(&["whoami"], &[("ATELIER_CLI_CONFIG", &config_s)]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("login"), "{}", out.stderr);
}
