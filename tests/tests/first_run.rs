//! A gateway with no JupyterLab: it creates the virtualenv itself (from PyPI) on first need,
//! shows that as the seed's image events, and the notebook then runs. Also the failure path:
//! an interpreter that cannot make a virtualenv gives `PullImageFailed` and `CREATE_FAILED`
//! with a message that names it, and nothing half-made stays on disk.

use std::time::Duration;

use atelier_tests::{Gateway, eventually};
use serde_json::Value;

/// pip downloads and installs JupyterLab here: minutes on a cold cache.
const FIRST_RUN_TIMEOUT: Duration = Duration::from_secs(900);

async fn status_of(gw: &Gateway, id: &str) -> Value {
    gw.admin().get(&format!("/v1/notebooks/{id}")).await.json
}

#[tokio::test]
async fn the_gateway_creates_jupyterlab_on_first_need() {
    let venv_parent = std::env::temp_dir().join(format!(
        "atelier-first-run-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let venv = venv_parent.join("jupyter-venv");
    let venv_s = venv.to_string_lossy().into_owned();
    let gw = Gateway::start_with(&[("ATELIER_JUPYTER_VENV", &venv_s)]).await;
    let id = gw.create_notebook(&gw.admin_token, "first").await;
    let done = eventually(
        "the first notebook to leave CREATING",
        FIRST_RUN_TIMEOUT,
        || async {
            let s = status_of(&gw, &id).await;
            (s["status"] != "CREATING").then_some(s)
        },
    )
    .await;
    assert_eq!(done["status"], "RUNNING", "{done}\n{}", gw.log_tail(40));
    assert!(venv.join("bin/jupyter-lab").is_file());
    let names = gw.event_names(&gw.admin_token, &id).await;
    assert_eq!(
        names,
        [
            "Scheduled",
            "PullingImage",
            "PulledImage",
            "NotebookHealthy"
        ]
    );
    let lab = gw.admin().get(&format!("/nb/{id}/lab")).await;
    assert_eq!(lab.status, 200);
    drop(gw);
    let _ = std::fs::remove_dir_all(venv_parent);
}

#[tokio::test]
async fn a_broken_python_fails_the_create_clearly() {
    let venv_parent = std::env::temp_dir().join(format!(
        "atelier-no-python-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let venv = venv_parent.join("jupyter-venv");
    let config = format!(
        "[backend]\njupyter_venv = {:?}\npython = \"/nonexistent/python3\"\n",
        venv.to_string_lossy()
    );
    let gw = Gateway::start_with_config(
        &config,
        &[("ATELIER_JUPYTER_VENV", &venv.to_string_lossy())],
    )
    .await;
    let id = gw.create_notebook(&gw.admin_token, "doomed").await;
    let s = eventually("the create to fail", Duration::from_secs(60), || async {
        let s = status_of(&gw, &id).await;
        (s["status"] != "CREATING").then_some(s)
    })
    .await;
    assert_eq!(s["status"], "CREATE_FAILED", "{s}");
    let reason = s["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("/nonexistent/python3"), "{s}");
    let names = gw.event_names(&gw.admin_token, &id).await;
    assert_eq!(
        names,
        [
            "Scheduled",
            "PullingImage",
            "PullImageFailed",
            "CreateNotebookFailed"
        ]
    );
    assert!(!venv.exists(), "no half-made virtualenv");
    // The failed notebook can be deleted; its files go with it.
    gw.admin()
        .delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&gw.admin_token, &id).await;
    assert!(!gw.notebook_dir(&id).exists());
    let _ = std::fs::remove_dir_all(venv_parent);
}
