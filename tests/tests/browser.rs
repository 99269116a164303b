//! The browser journey in headless Chromium (tests/browser/lab.js): the notebook's URL on its
//! own origin, the console's login page, session cookie, a one-time ticket back to the
//! notebook's origin, JupyterLab through the proxy there, a kernel over a WebSocket, a cell's
//! output, the auto-stop countdown and Renew, and no Jupyter token anywhere in the page or its
//! cookies.
//!
//! Needs Chromium, Node.js and `playwright-core`; `scripts/test.sh` installs them and sets
//! `ATELIER_TEST_BROWSER_MODULES` to the `node_modules` that holds playwright-core.

use std::path::PathBuf;

use atelier_tests::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_and_runs_a_cell() {
    let Some(modules) = std::env::var_os("ATELIER_TEST_BROWSER_MODULES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ATELIER_TEST_BROWSER_MODULES is not set; scripts/test.sh sets it"
        );
        eprintln!(
            "skipped: ATELIER_TEST_BROWSER_MODULES is not set (scripts/test.sh installs the browser)"
        );
        return;
    };
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "browser").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    // At run time: a test binary reused from a shared target dir may have been built from a
    // checkout at another path.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let script = PathBuf::from(manifest_dir).join("browser/lab.js");
    let shot = gw.data_dir.join("lab.png");
    let stop_at = |nb: &serde_json::Value| {
        time::OffsetDateTime::parse(
            nb["auto_stop"]["stop_at"]
                .as_str()
                .expect("a running notebook's stop_at"),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let before = stop_at(
        gw.api(&alice)
            .get(&format!("/v1/notebooks/{id}"))
            .await
            .expect_status(200),
    );
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env(
            "LAB_URL",
            format!("{}/nb/{id}/lab", gw.notebook_origin(&id)),
        )
        .env("NOTEBOOK_ORIGIN", gw.notebook_origin(&id))
        .env("TOKEN", &alice)
        .env("JUPYTER_TOKEN", gw.jupyter_token(&id))
        .env("SCREENSHOT", &shot)
        .output()
        .await
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        gw.log_tail(30)
    );
    assert!(stdout.contains("redirected to: /login"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "logged in at: {}/nb/{id}/lab",
            gw.notebook_origin(&id)
        )),
        "{stdout}"
    );
    assert!(stdout.contains("output: 42"), "{stdout}");
    assert!(stdout.contains("jupyter token visible: false"), "{stdout}");
    assert!(stdout.contains("server errors: none"), "{stdout}");
    // The countdown showed the lease (1 hour, so 5x minutes and some), and Renew added an
    // hour to it.
    assert!(stdout.contains("countdown: Stops in 5"), "{stdout}");
    assert!(stdout.contains("renewed: Stops in 1:5"), "{stdout}");
    let after = stop_at(
        gw.api(&alice)
            .get(&format!("/v1/notebooks/{id}"))
            .await
            .expect_status(200),
    );
    assert_eq!(after - before, time::Duration::hours(1));
    assert!(shot.is_file());
}
