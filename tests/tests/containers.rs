//! The docker backend on Podman with the offline-built test image (scripts/containers.sh):
//! lifecycle, JupyterLab through the proxy inside the container as ma-user, the work disk
//! (survives stop/start, grows while running), what does not survive a stop, no GPUs for a
//! CPU flavor, a gateway crash that leaves the container serving, and refusals.
//! The SSH checks against a container notebook are in ssh_sessions.rs.

use std::path::Path;

use atelier_tests::{Gateway, Kernel, podman};
use serde_json::json;

/// Containers of one notebook on the engine (running or not).
fn containers_of(id: &str) -> Vec<String> {
    podman(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.atelier.notebook={id}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The size of the work disk's filesystem as the kernel sees it.
async fn total(k: &mut Kernel) -> u64 {
    k.run("import shutil; print(shutil.disk_usage('/home/ma-user/work').total)")
        .await
        .trim()
        .parse()
        .unwrap()
}

fn mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_notebooks_run_jupyter_as_ma_user_on_a_work_disk() {
    let mut gw = Gateway::start_docker("", &[]).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let id = gw.create_notebook(&alice, "boxed").await;
    let nb = gw.wait_status(&alice, &id, "RUNNING").await;
    assert_eq!(nb["storage"]["kind"], "disk", "{nb}");
    assert_eq!(nb["storage"]["size_gb"], 5, "{nb}");
    let ids = containers_of(&id);
    assert_eq!(ids.len(), 1, "{ids:?}");

    // JupyterLab's page through the proxy, from the container.
    let page = api.get(&format!("/nb/{id}/lab")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("JupyterLab"), "{}", page.text);

    // A kernel in the container: ma-user (1000:100) in the work dir, no GPU.
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run("import os, glob; print(os.getuid(), os.getgid(), os.getcwd(), os.environ.get('NVIDIA_VISIBLE_DEVICES'), glob.glob('/dev/nvidia*'))")
        .await;
    assert_eq!(out, "1000 100 /home/ma-user/work void []\n");
    let env = podman(&["inspect", "--format", "{{.Config.Env}}", &ids[0]]);
    assert!(env.contains("NVIDIA_VISIBLE_DEVICES=void"), "{env}");
    // The work disk is a 5 GB filesystem; /cache and /dev/shm are there.
    let size = total(&mut k).await;
    assert!((4_000_000_000..=5_000_000_000).contains(&size), "{size}");
    let out = k
        .run("import os; print(os.path.ismount('/dev/shm'), os.access('/cache', os.W_OK), os.path.isdir('/data'))")
        .await;
    assert_eq!(out, "True True True\n");
    // One file on the work disk, one in the container's own filesystem.
    k.run("open('/home/ma-user/work/keep.txt', 'w').write('kept'); open('/home/ma-user/gone.txt', 'w').write('gone')")
        .await;

    // Grow the work disk while running: the kernel sees the new size at once.
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/storage/expand"),
            json!({"size_gb": 7}),
        )
        .await;
    assert_eq!(r.expect_status(200)["storage"]["size_gb"], 7, "{}", r.text);
    let grown = total(&mut k).await;
    assert!(grown > 6_000_000_000, "{size} -> {grown}");
    let lines = gw.event_lines(&alice, &id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("UpdateStorageSize") && l.contains("from 5 GB to 7 GB")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "UpdateStorageSize: User alice updated the storage size."),
        "{lines:?}"
    );
    // Bad sizes name the rule; the disk keeps its size.
    for (size, says) in [
        (json!(7), "ask for more"),
        (json!(200), "at most 100 GB more"),
        (json!(5000), "4096"),
        (json!("big"), "size_gb"),
    ] {
        let r = api
            .post(
                &format!("/v1/notebooks/{id}/storage/expand"),
                json!({ "size_gb": size }),
            )
            .await;
        let msg = r.expect_error(400, "invalid_argument");
        assert!(msg.contains(says), "{size}: {msg}");
    }
    drop(k);

    // Stop: the container goes, the work disk stays (unmounted until the next start).
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "STOPPED").await;
    assert!(containers_of(&id).is_empty());
    let work = gw.notebook_dir(&id).join("work");
    assert!(!mounted(&work));
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/storage/expand"),
            json!({"size_gb": 8}),
        )
        .await;
    r.expect_error(409, "conflict");

    // Start: a new container; the work disk's file and size are there, the other file not.
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run("import os; print(open('/home/ma-user/work/keep.txt').read(), os.path.exists('/home/ma-user/gone.txt'))")
        .await;
    assert_eq!(out, "kept False\n");
    assert!(total(&mut k).await > 6_000_000_000);
    k.run("x = 41").await;
    let kernel_id = k.id.clone();
    drop(k);

    // A gateway crash leaves the container serving; the new gateway finds it again.
    let container = containers_of(&id);
    gw.kill9();
    gw.start_again().await;
    let api = gw.api(&alice);
    let r = api.get(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(r.expect_status(200)["status"], "RUNNING", "{}", r.text);
    assert_eq!(containers_of(&id), container);
    let mut k = Kernel::connect(&api, &id, &kernel_id).await;
    assert_eq!(k.run("print(x + 1)").await, "42\n");
    drop(k);

    // Delete: container, disk image and files all go.
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &id).await;
    assert!(containers_of(&id).is_empty());
    assert!(!mounted(&work));
    assert!(!gw.notebook_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_images_and_flavors_are_checked() {
    let (_, image) = atelier_tests::docker_env();
    // An image with nothing in it (the runtime is bound in, so it starts and says what is
    // missing), one whose PATH lacks Jupyter (found in /home/ma-user/anaconda3/bin anyway),
    // and one that exists nowhere.
    let dir = std::env::temp_dir().join(format!("atelier-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty_tar = dir.join("empty.tar");
    let st = std::process::Command::new("tar")
        .arg("cf")
        .arg(&empty_tar)
        .args(["-T", "/dev/null"])
        .status()
        .unwrap();
    assert!(st.success());
    let empty = format!("localhost/atelier-test-empty:{}", std::process::id());
    podman(&["import", &empty_tar.to_string_lossy(), &empty]);
    let nopath = format!("localhost/atelier-test-nopath:{}", std::process::id());
    let ctr = podman(&["create", &image, "true"]).trim().to_owned();
    podman(&[
        "commit",
        "-q",
        "--change",
        "ENV PATH=/usr/bin:/bin",
        &ctr,
        &nopath,
    ]);
    podman(&["rm", &ctr]);
    let toml = format!(
        r#"
[[flavors]]
id = "cpu-2-8"
type = "cpu"
vcpus = 2
memory_gib = 8

[[flavors]]
id = "gpu-1"
type = "gpu"
vcpus = 8
memory_gib = 32

[[images]]
id = "empty"
ref = "{empty}"

[[images]]
id = "nopath"
ref = "{nopath}"

[[images]]
id = "missing"
ref = "127.0.0.1:9/atelier/none:1"
"#
    );
    let gw = Gateway::start_docker(&toml, &[]).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);

    // A GPU flavor on a host without GPUs: refused, nothing created.
    let r = api
        .post("/v1/notebooks", json!({"name": "g", "flavor": "gpu-1"}))
        .await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(msg.contains("gpu-1") && msg.contains("GPU"), "{msg}");
    let list = api.get("/v1/notebooks").await;
    assert_eq!(list.expect_status(200)["total"], 0, "{}", list.text);

    // No Jupyter in the image: CreateNotebookFailed with the reason.
    let r = api
        .post("/v1/notebooks", json!({"name": "e", "image": "empty"}))
        .await;
    let e = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    let nb = gw.wait_status(&alice, &e, "CREATE_FAILED").await;
    let reason = nb["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("has no Jupyter") && reason.contains("/opt/conda/bin"),
        "{nb}"
    );
    assert!(
        gw.event_names(&alice, &e)
            .await
            .contains(&"CreateNotebookFailed".to_owned())
    );

    // An image that cannot be pulled: PullImageFailed, then CREATE_FAILED.
    let r = api
        .post("/v1/notebooks", json!({"name": "m", "image": "missing"}))
        .await;
    let m = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    let nb = gw.wait_status(&alice, &m, "CREATE_FAILED").await;
    assert!(
        nb["status_reason"]
            .as_str()
            .is_some_and(|s| s.contains("pulling the image")),
        "{nb}"
    );
    assert!(
        gw.event_names(&alice, &m)
            .await
            .contains(&"PullImageFailed".to_owned())
    );

    // Jupyter outside the image's PATH is found where seed images keep it.
    let r = api
        .post("/v1/notebooks", json!({"name": "n", "image": "nopath"}))
        .await;
    let n = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &n, "RUNNING").await;
    let mut k = Kernel::start(&api, &n).await;
    assert_eq!(k.run("print(6 * 7)").await, "42\n");
    drop(k);
    drop(gw);
    podman(&["rmi", "-f", &empty, &nopath]);
    let _ = std::fs::remove_dir_all(&dir);
}
