//! The docker backend on Podman with the offline-built test image (scripts/containers.sh):
//! lifecycle, JupyterLab through the proxy inside the container as ma-user, the work disk
//! (survives stop/start, grows while running), what does not survive a stop, no GPUs for a
//! CPU flavor, a gateway crash that leaves the container serving, and refusals.
//! The SSH checks against a container notebook are in ssh_sessions.rs.

use std::path::Path;

use atelier_tests::s3::{S3Server, wait_for_object};
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

/// Removes the named images from the engine when dropped (also when a test fails).
struct RemoveImages(Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let (host, _) = atelier_tests::docker_env();
        let _ = std::process::Command::new("podman")
            .arg("--url")
            .arg(host)
            .args(["rmi", "-f"])
            .args(&self.0)
            .output();
    }
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
    // The auto-stop countdown extension is there (bound in with the Jupyter config).
    assert!(page.text.contains("@atelier/auto-stop"), "{}", page.text);

    // A kernel in the container: ma-user (1000:100) in the work dir, no GPU.
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run("import os, glob; print(os.getuid(), os.getgid(), os.getcwd(), os.environ.get('NVIDIA_VISIBLE_DEVICES'), glob.glob('/dev/nvidia*'), os.environ['MA_HOME'], os.environ['MA_NUM_GPUS'])")
        .await;
    assert_eq!(out, "1000 100 /home/ma-user/work void [] /home/ma-user 0\n");
    let out = k
        .run("import os; print(os.environ['CURRENT_IMAGE_NAME'])")
        .await;
    assert_eq!(out.trim(), atelier_tests::docker_env().1);
    let env = podman(&["inspect", "--format", "{{.Config.Env}}", &ids[0]]);
    assert!(env.contains("NVIDIA_VISIBLE_DEVICES=void"), "{env}");
    // The work disk is a 5 GB filesystem; /cache and /dev/shm are there.
    let size = total(&mut k).await;
    assert!((4_000_000_000..=5_000_000_000).contains(&size), "{size}");
    let out = k
        .run("import os; print(os.path.ismount('/dev/shm'), os.access('/cache', os.W_OK), os.path.isdir('/data'))")
        .await;
    assert_eq!(out, "True True True\n");
    // A mount made under the notebook's /data on the host while it runs shows inside (the
    // way object-store folders are mounted later).
    let data = gw.notebook_dir(&id).join("data");
    std::fs::create_dir_all(data.join("later")).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(data.join("later"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(data.join("later/hello.txt"), "from the host").unwrap();
    let out = k
        .run("import os; print(os.path.ismount('/data/later'), open('/data/later/hello.txt').read())")
        .await;
    assert_eq!(out, "True from the host\n");
    // An object-storage folder mounted while it runs: ma-user reads and writes it.
    let s3 = S3Server::start();
    let bucket = s3.bucket("shared");
    std::fs::create_dir_all(bucket.join("in")).unwrap();
    std::fs::write(bucket.join("in/a.txt"), "from the store").unwrap();
    s3.connect(&api, "s3").await;
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/mounts"),
            json!({"name": "shared", "uri": "obs://shared/in/", "connection": "s3"}),
        )
        .await;
    assert_eq!(r.expect_status(201)["path"], "/data/shared/", "{}", r.text);
    let out = k
        .run("import os; print(open('/data/shared/a.txt').read(), os.stat('/data/shared/a.txt').st_uid); open('/data/shared/b.txt', 'w').write('from ma-user')")
        .await;
    assert_eq!(out, "from the store 1000\n");
    wait_for_object(&bucket.join("in/b.txt"), "from ma-user").await;
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
    assert!(
        !mounted(&data.join("later")),
        "/data's mounts end with the notebook's run"
    );
    assert!(!mounted(&data.join("shared")));
    let r = api.get(&format!("/v1/notebooks/{id}/mounts/shared")).await;
    assert_eq!(r.expect_status(200)["status"], "UNMOUNTED", "{}", r.text);
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
    // The object-storage mount is made again at start.
    assert_eq!(
        k.run("print(open('/data/shared/b.txt').read())").await,
        "from ma-user\n"
    );
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
    assert!(bucket.join("in/a.txt").is_file() && bucket.join("in/b.txt").is_file());
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
    let _cleanup = RemoveImages(vec![empty.clone(), nopath.clone()]);
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

    // This host has no accelerators, and says so; flavors say what they need.
    let acc = api.get("/v1/accelerators").await;
    assert_eq!(acc.expect_status(200)["items"], json!([]), "{}", acc.text);
    let flavors = api.get("/v1/flavors").await;
    assert!(
        flavors.expect_status(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "gpu-1" && f["accelerators"] == 1),
        "{}",
        flavors.text
    );
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// The events of a notebook from `first` on, names only.
async fn events_from(gw: &Gateway, token: &str, id: &str, first: &str) -> Vec<String> {
    let names = gw.event_names(token, id).await;
    let at = names
        .iter()
        .rposition(|n| n == first)
        .unwrap_or(names.len());
    names[at..].to_vec()
}

/// Saves `id` as `name:tag` and waits until it is RUNNING again; returns the event lines.
async fn save(gw: &Gateway, token: &str, id: &str, name: &str, tag: &str) -> Vec<String> {
    let api = gw.api(token);
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/save-image"),
            json!({"name": name, "tag": tag, "description": "test save"}),
        )
        .await;
    assert_eq!(r.expect_status(202)["status"], "SNAPSHOTTING", "{}", r.text);
    // While it is saved, a second save or a stop waits its turn.
    let again = api
        .post(
            &format!("/v1/notebooks/{id}/save-image"),
            json!({"name": name, "tag": "other"}),
        )
        .await;
    again.expect_error(409, "conflict");
    gw.wait_status(token, id, "RUNNING").await;
    gw.event_lines(token, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_notebooks_save_as_images_that_new_notebooks_start_from() {
    let registry = atelier_tests::test_registry();
    let space = format!("{registry}/atelier-test-{}", std::process::id());
    let reference = format!("{space}/alice/env:v1");
    // Declared before the gateway, so it runs after the gateway (and its containers) are gone.
    let _cleanup = RemoveImages(vec![reference.clone()]);
    let gw = Gateway::start_docker("", &[("ATELIER_REGISTRY", &space)]).await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let api = gw.api(&alice);
    let id = gw.create_notebook(&alice, "src").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    k.run("open('/home/ma-user/added.txt', 'w').write('from the image'); open('/home/ma-user/work/mine.txt', 'w').write('work')")
        .await;
    drop(k);

    let lines = save(&gw, &alice, &id, "env", "v1").await;
    let order = events_from(&gw, &alice, &id, "CheckImageSize").await;
    assert_eq!(
        order,
        [
            "CheckImageSize",
            "CheckImageLayer",
            "ContainerCommitStarted",
            "ContainerCommitSuccess",
            "ImagePushStarted",
            "ImagePushSuccess",
            "SaveImage"
        ],
        "{lines:?}"
    );
    let events = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let texts: Vec<String> = events.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("The notebook container image size is ") && t.ends_with("G.")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t == "The number of original notebook image layers is 1."),
        "{texts:?}"
    );

    // Listed with its source; in the registry; only alice's.
    let image_id = "alice/env:v1";
    let images = api.get("/v1/images").await;
    let saved = images.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == image_id)
        .cloned()
        .unwrap_or_else(|| panic!("{image_id} not listed: {}", images.text));
    assert_eq!(saved["kind"], "saved");
    assert_eq!(saved["source_notebook"], id.as_str());
    assert_eq!(saved["ref"], reference.as_str());
    let tags: serde_json::Value = reqwest::get(format!(
        "http://{registry}/v2/atelier-test-{}/alice/env/tags/list",
        std::process::id()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(tags["tags"], json!(["v1"]), "{tags}");
    let bobs = gw.api(&bob).get("/v1/images").await;
    assert!(!bobs.text.contains(image_id), "{}", bobs.text);
    let r = gw
        .api(&bob)
        .post("/v1/notebooks", json!({"name": "b", "image": image_id}))
        .await;
    r.expect_error(400, "invalid_argument");
    // The same name and tag again, or a bad name: refused.
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/save-image"),
            json!({"name": "env", "tag": "v1"}),
        )
        .await;
    assert!(r.expect_error(409, "conflict").contains("already exists"));
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/save-image"),
            json!({"name": "Env", "tag": "v1"}),
        )
        .await;
    assert!(r.expect_error(400, "invalid_argument").contains("name"));

    // A new notebook from it, pulled back from the registry: the file saved outside the work
    // dir is there; the work dir is the new notebook's own.
    podman(&["rmi", "-f", &reference]);
    let r = api
        .post("/v1/notebooks", json!({"name": "copy", "image": image_id}))
        .await;
    let copy = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &copy, "RUNNING").await;
    let names = gw.event_names(&alice, &copy).await;
    assert!(names.contains(&"PulledImage".to_owned()), "{names:?}");
    let mut k = Kernel::start(&api, &copy).await;
    let out = k
        .run("import os; print(open('/home/ma-user/added.txt').read(), os.path.exists('/home/ma-user/work/mine.txt'))")
        .await;
    assert_eq!(out, "from the image False\n");
    drop(k);
    // In use: not unregistered.
    let r = api.delete(&format!("/v1/images/{image_id}")).await;
    assert!(r.expect_error(409, "conflict").contains("used by 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_saves_over_the_limits_fail_and_leave_the_notebook_running() {
    for (env, says) in [
        (
            ("ATELIER_SAVE_IMAGE_MAX_GB", "0.001"),
            "is greater than the threshold (0.001G).",
        ),
        (
            ("ATELIER_SAVE_IMAGE_MAX_LAYERS", "1"),
            "There are too many layers in your image.",
        ),
    ] {
        let gw = Gateway::start_docker("", &[env]).await;
        let alice = gw.create_user("alice").await;
        let id = gw.create_notebook(&alice, "big").await;
        gw.wait_status(&alice, &id, "RUNNING").await;
        let lines = save(&gw, &alice, &id, "env", "v1").await;
        let failed = lines
            .iter()
            .find(|l| l.starts_with("SavedImageFailed"))
            .unwrap_or_else(|| panic!("{env:?}: {lines:?}"));
        assert!(failed.contains(says), "{failed}");
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("ContainerCommitStarted")),
            "{lines:?}"
        );
        let images = gw.api(&alice).get("/v1/images").await;
        assert!(!images.text.contains("alice/env:v1"), "{}", images.text);
        // Still serving.
        let mut k = Kernel::start(&gw.api(&alice), &id).await;
        assert_eq!(k.run("print(1 + 1)").await, "2\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_registered_listed_and_unregistered() {
    let (_, image) = atelier_tests::docker_env();
    let gw = Gateway::start_docker("", &[]).await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let (admin, a, b) = (gw.admin(), gw.api(&alice), gw.api(&bob));
    // An admin's registration is everyone's; a user's is their own.
    let r = admin
        .post(
            "/v1/images",
            json!({"name": "team-env", "ref": image, "description": "the team's"}),
        )
        .await;
    let v = r.expect_status(201);
    assert_eq!(v["kind"], "registered");
    assert_eq!(v["owner"], serde_json::Value::Null);
    let r = a
        .post("/v1/images", json!({"name": "mine", "ref": image}))
        .await;
    assert_eq!(r.expect_status(201)["owner"], "alice");
    let listed = |api: &atelier_tests::Api| {
        let api = api.clone();
        async move {
            let r = api.get("/v1/images").await;
            r.expect_status(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let seen_by_bob = listed(&b).await;
    assert!(
        seen_by_bob.contains(&"team-env".to_owned()),
        "{seen_by_bob:?}"
    );
    assert!(!seen_by_bob.contains(&"mine".to_owned()), "{seen_by_bob:?}");
    assert!(listed(&a).await.contains(&"mine".to_owned()));
    // Bad input names the problem; nothing is registered.
    for (body, status, says) in [
        (json!({"name": "x", "ref": "has space"}), 400, "ref"),
        (json!({"name": "-x", "ref": image}), 400, "name"),
        (json!({"name": "mine", "ref": image}), 409, "already exists"),
        (json!({"name": "jupyterlab", "ref": image}), 409, "built-in"),
        (
            json!({"name": "x", "ref": "127.0.0.1:9/none/none:1"}),
            400,
            "could not pull",
        ),
        (json!({"name": "x", "ref": image, "extra": 1}), 400, "extra"),
    ] {
        let r = a.post("/v1/images", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    assert!(!listed(&a).await.contains(&"x".to_owned()));
    // Unregistering: not another user's, not a public one by a user; the owner's works.
    b.delete("/v1/images/mine")
        .await
        .expect_error(404, "not_found");
    b.delete("/v1/images/team-env")
        .await
        .expect_error(403, "permission_denied");
    b.delete("/v1/images/jupyterlab")
        .await
        .expect_error(409, "conflict");
    assert_eq!(a.delete("/v1/images/mine").await.status, 204);
    assert!(!listed(&a).await.contains(&"mine".to_owned()));
    assert_eq!(admin.delete("/v1/images/team-env").await.status, 204);
}

/// A container notebook whose work dir is an object-storage folder (no work disk) with an
/// extended folder in it: ma-user reads and writes both; a restart mounts them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_work_dir_on_object_storage() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("box");
    std::fs::create_dir_all(bucket.join("home")).unwrap();
    std::fs::create_dir_all(bucket.join("ds")).unwrap();
    std::fs::write(bucket.join("home/readme.txt"), "work on the store").unwrap();
    std::fs::write(bucket.join("ds/x.txt"), "extended").unwrap();
    let gw = Gateway::start_docker("", &[]).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    s3.connect(&api, "s3").await;
    let r = api
        .post(
            "/v1/notebooks",
            json!({
                "name": "onstore",
                "storage": {"type": "obs", "uri": "obs://box/home/", "connection": "s3"},
                "extended_storage": [
                    {"type": "obs", "path": "/home/ma-user/work/ds", "uri": "obs://box/ds/", "connection": "s3"},
                    {"type": "obs", "path": "/home/ma-user/datasets", "uri": "obs://box/ds/", "connection": "s3", "read_only": true},
                ],
            }),
        )
        .await;
    let id = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    let nb = gw.wait_status(&alice, &id, "RUNNING").await;
    assert!(nb["storage"].is_null(), "no work disk: {nb}");
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run("import os; print(os.getcwd(), open('readme.txt').read(), open('ds/x.txt').read(), os.stat('readme.txt').st_uid); open('made.txt', 'w').write('by ma-user')")
        .await;
    assert_eq!(out, "/home/ma-user/work work on the store extended 1000\n");
    // A folder outside the work dir is bound at its path (read-only here).
    let e = k
        .execute("print(open('/home/ma-user/datasets/x.txt').read()); open('/home/ma-user/datasets/y', 'w')")
        .await;
    assert_eq!(e.stdout, "extended\n", "{e:?}");
    assert!(format!("{:?}", e.error).contains("Read-only"), "{e:?}");
    // atelier.file works for ma-user too, through the socket at /run/atelier.
    let out = k
        .run("import atelier.file as af; print(af.read('obs://box/ds/x.txt'), af.list_directory('obs://box/ds'))")
        .await;
    assert_eq!(out, "extended ['x.txt']\n");
    wait_for_object(&bucket.join("home/made.txt"), "by ma-user").await;
    drop(k);
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "STOPPED").await;
    let work = gw.notebook_dir(&id).join("work");
    assert!(!mounted(&work) && !mounted(&work.join("ds")));
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run("print(open('made.txt').read())").await,
        "by ma-user\n"
    );
    drop(k);
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &id).await;
    assert!(bucket.join("home/made.txt").is_file() && bucket.join("ds/x.txt").is_file());
}
