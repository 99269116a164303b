//! Object-storage folders mounted into a running notebook (seed 6.7.6): `POST
//! /v1/notebooks/{id}/mounts` against a real S3 server on loopback (s3s-fs) and the real
//! `rclone mount`, read and written from a Jupyter kernel inside the notebook's sandbox.
//! Objects are never deleted by unmount, stop, delete or a refused request.

use std::time::Duration;

use atelier_tests::s3::{S3Server, wait_for_object};
use atelier_tests::{Gateway, Kernel, eventually, processes_mentioning};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Python that prints the file's text, or `missing`.
fn read_py(path: &str) -> String {
    format!(
        "import os\np = {path:?}\nprint(open(p).read() if os.path.exists(p) else 'missing', end='')"
    )
}

async fn mount_of(api: &atelier_tests::Api, id: &str, name: &str) -> Value {
    let r = api.get(&format!("/v1/notebooks/{id}/mounts/{name}")).await;
    r.expect_status(200).clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_mounts_reach_the_kernel_survive_restarts_and_leave_the_objects() {
    let mut s3 = S3Server::start();
    let bucket = s3.bucket("datasets");
    std::fs::create_dir_all(bucket.join("train/images")).unwrap();
    std::fs::write(bucket.join("train/before.txt"), "written before the mount").unwrap();
    std::fs::write(bucket.join("train/images/1.txt"), "one").unwrap();
    let mut gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    let id = gw.create_notebook(&token, "mounter").await;
    gw.wait_status(&token, &id, "RUNNING").await;
    let mounts = format!("/v1/notebooks/{id}/mounts");
    let good = json!({"name": "train", "uri": "obs://datasets/train/", "connection": "local"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };

    // Refusals name the wrong part and leave nothing: no row, no folder under /data.
    for (body, status, code, says) in [
        (
            with("name", "../etc".into()),
            400,
            "invalid_argument",
            "name:",
        ),
        (
            with("name", "/abs".into()),
            400,
            "invalid_argument",
            "name:",
        ),
        (with("name", "a/b".into()), 400, "invalid_argument", "name:"),
        (
            with("uri", "/home/x".into()),
            400,
            "invalid_argument",
            "uri:",
        ),
        (
            with("connection", "nope".into()),
            400,
            "invalid_argument",
            "connection:",
        ),
        (
            with("uri", "obs://no-such-bucket/x/".into()),
            400,
            "storage_bucket_missing",
            "no-such-bucket",
        ),
    ] {
        let r = api.post(&mounts, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.text);
        let m = r.json["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{body}: {m}");
    }
    assert_eq!(api.get(&mounts).await.json["items"], json!([]));
    let data = gw.notebook_dir(&id).join("data");
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "refusals left {left:?} under /data");
    // Another user cannot mount into it (nor see it).
    let bob = gw.api(&gw.create_user("bob").await);
    bob.post(&mounts, good.clone()).await.expect_status(404);

    // A read-write mount: in the list, an event, and the kernel sees the objects.
    let r = api.post(&mounts, good.clone()).await;
    r.expect_status(201);
    assert_eq!(r.json["status"], "MOUNTED", "{}", r.text);
    assert_eq!(r.json["uri"], "obs://datasets/train/");
    assert_eq!(r.json["connection"], "local");
    assert_eq!(r.json["read_only"], false);
    let path = r.json["path"].as_str().unwrap().to_owned();
    if gw.sandboxed() {
        assert_eq!(path, "/data/train/");
    }
    api.post(&mounts, good.clone()).await.expect_status(409);
    assert!(
        gw.event_names(&token, &id)
            .await
            .contains(&"DynamicMountStorage".to_string())
    );
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run(&read_py(&format!("{path}before.txt"))).await,
        "written before the mount"
    );
    assert_eq!(k.run(&read_py(&format!("{path}images/1.txt"))).await, "one");
    // The kernel holds no capability and cannot find the store's secret in any process it
    // can see (rclone runs outside its sandbox).
    let probe = format!(
        "import glob\nsecret = {:?}.encode()\nseen = []\nfor f in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):\n    try:\n        if secret in open(f, 'rb').read(): seen.append(f)\n    except OSError: pass\ncap = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]\nprint(seen, cap)",
        s3.secret_key
    );
    if gw.sandboxed() {
        assert_eq!(k.run(&probe).await, "[] 0000000000000000\n");
    }
    // An object written to the bucket afterwards shows up within seconds.
    std::fs::write(bucket.join("train/after.txt"), "written after").unwrap();
    let after = read_py(&format!("{path}after.txt"));
    let deadline = std::time::Instant::now() + WAIT;
    while k.run(&after).await != "written after" {
        assert!(
            std::time::Instant::now() < deadline,
            "the object written after the mount never showed in the kernel"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A file the kernel writes lands in the bucket.
    k.run(&format!(
        "with open('{path}from-kernel.txt', 'w') as f:\n    f.write('hello from the kernel')"
    ))
    .await;
    wait_for_object(
        &bucket.join("train/from-kernel.txt"),
        "hello from the kernel",
    )
    .await;

    // A read-only mount of the same folder (through the CLI) refuses writes.
    let out = gw
        .cli(
            &token,
            &[
                "notebook",
                "mount",
                "mounter",
                "ro",
                "s3://datasets/train",
                "--connection",
                "local",
                "--read-only",
            ],
            &[],
        )
        .await;
    out.assert_ok("notebook mount");
    let ro = mount_of(&api, &id, "ro").await["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        out.stdout.trim(),
        format!("mounted obs://datasets/train/ at {ro} (read-only)")
    );
    let e = k
        .execute(&format!("open('{ro}nope.txt', 'w').write('x')"))
        .await;
    let err = format!("{:?}", e.error);
    assert!(
        err.contains("Read-only file system") || err.contains("Errno 30"),
        "a write to a read-only mount: {err}"
    );
    assert_eq!(
        k.run(&read_py(&format!("{ro}before.txt"))).await,
        "written before the mount"
    );
    let list = api.get(&mounts).await;
    let names: Vec<_> = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].clone(), m["status"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            (json!("ro"), json!("MOUNTED")),
            (json!("train"), json!("MOUNTED"))
        ]
    );

    let out = gw
        .cli(&token, &["notebook", "mounts", "mounter"], &[])
        .await;
    out.assert_ok("notebook mounts");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("ro "))
        .unwrap_or_else(|| panic!("no ro row in {}", out.stdout));
    for cell in ["obs://datasets/train/", "local", "read-only", "MOUNTED"] {
        assert!(row.contains(cell), "{cell} missing from {row}");
    }

    // Unmount (through the CLI): the folder leaves the notebook, the objects stay.
    gw.cli(&token, &["notebook", "unmount", "mounter", "ro"], &[])
        .await
        .assert_ok("notebook unmount");
    assert_eq!(k.run(&read_py(&format!("{ro}before.txt"))).await, "missing");
    assert!(bucket.join("train/before.txt").is_file());
    assert!(
        gw.event_names(&token, &id)
            .await
            .contains(&"DynamicUnmountStorage".to_string())
    );
    api.delete(&format!("{mounts}/ro")).await.expect_status(404);
    // The connection cannot go while a mount uses it.
    let r = api.delete("/v1/storage/connections/local").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("mounter"), "{}", r.text);

    // The mount's process dies: the health loop makes the mount again. (rclone mounts in
    // the notebook's own mounts dir, which the gateway binds at /data/train; "train" is the
    // only mount left.)
    let mountpoint = gw.notebook_dir(&id).join("mounts");
    let pids = processes_mentioning(mountpoint.as_os_str());
    assert!(
        !pids.is_empty(),
        "no rclone serves {}",
        mountpoint.display()
    );
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    eventually("the mount made again", WAIT, || {
        let api = api.clone();
        let id = id.clone();
        let pids = pids.clone();
        let mountpoint = mountpoint.clone();
        async move {
            let m = mount_of(&api, &id, "train").await;
            let now = processes_mentioning(mountpoint.as_os_str());
            (m["status"] == "MOUNTED" && !now.is_empty() && now.iter().all(|p| !pids.contains(p)))
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        k.run(&read_py(&format!("{path}before.txt"))).await,
        "written before the mount"
    );

    // A gateway restart leaves the mount served (rclone outlives the gateway).
    let serving = processes_mentioning(mountpoint.as_os_str());
    gw.restart().await;
    let m = mount_of(&api, &id, "train").await;
    assert_eq!(m["status"], "MOUNTED", "{m}");
    assert_eq!(processes_mentioning(mountpoint.as_os_str()), serving);

    // Stop: unmounted (rows kept); start: mounted again before Jupyter answers.
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "STOPPED").await;
    assert_eq!(mount_of(&api, &id, "train").await["status"], "UNMOUNTED");
    assert!(processes_mentioning(mountpoint.as_os_str()).is_empty());
    assert!(bucket.join("train/from-kernel.txt").is_file());
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "RUNNING").await;
    assert_eq!(mount_of(&api, &id, "train").await["status"], "MOUNTED");
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run(&read_py(&format!("{path}from-kernel.txt"))).await,
        "hello from the kernel"
    );

    // A store that does not answer at start: the notebook runs, the mount is FAILED with the
    // reason and a MountVolumeFailed event.
    drop(k);
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "STOPPED").await;
    s3.kill();
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "RUNNING").await;
    let m = mount_of(&api, &id, "train").await;
    assert_eq!(m["status"], "FAILED", "{m}");
    let why = m["error"].as_str().unwrap_or_default();
    assert!(why.contains("cannot reach the object store"), "{why}");
    let lines = gw.event_lines(&token, &id).await;
    assert!(
        lines.iter().any(|l| l.starts_with("MountVolumeFailed")),
        "{lines:?}"
    );

    // Delete: unmounted, the notebook's dir gone, every object still in the bucket.
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&token, &id).await;
    assert!(processes_mentioning(mountpoint.as_os_str()).is_empty());
    assert!(!gw.notebook_dir(&id).exists());
    for object in [
        "train/before.txt",
        "train/images/1.txt",
        "train/after.txt",
        "train/from-kernel.txt",
    ] {
        assert!(bucket.join(object).is_file(), "{object} was deleted");
    }
    // With the mount gone, the connection may go.
    api.delete("/v1/storage/connections/local")
        .await
        .expect_status(204);
}

/// Storage chosen at create (seed 6.2 Table 6-2): the work dir on an object-storage folder and
/// extended folders in it, nested and read-only, checked with the seed's rules before
/// anything is created, and mounted before Jupyter at every start.
#[tokio::test(flavor = "multi_thread")]
async fn storage_chosen_at_create_is_checked_then_mounted_at_every_start() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("work");
    for (key, text) in [
        ("home/notes.txt", "primary"),
        ("ds/a.txt", "extended"),
        ("more/m.txt", "nested"),
    ] {
        let f = bucket.join(key);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "c").await;
    let ext =
        |path: &str, uri: &str| json!({"type": "obs", "path": path, "uri": uri, "connection": "c"});
    let six: Vec<Value> = (0..6)
        .map(|i| ext(&format!("/home/ma-user/work/d{i}"), "obs://work/ds/"))
        .collect();

    // Each rule broken: a 400 that names it, and no notebook.
    for (body, code, says) in [
        (
            json!({"extended_storage": [ext("/data/x", "obs://work/ds/")]}),
            "invalid_argument",
            "is under /data/",
        ),
        (
            json!({"extended_storage": [ext("/etc/conf", "obs://work/ds/")]}),
            "invalid_argument",
            "is under /etc/",
        ),
        (
            json!({"extended_storage": six}),
            "invalid_argument",
            "at most 5 OBS",
        ),
        (
            json!({"extended_storage": [ext("/home/ma-user/work/ds", "obs://work/ds/"), ext("/home/ma-user/work/ds/", "obs://work/more/")]}),
            "invalid_argument",
            "must be unique",
        ),
        (
            json!({"storage": {"type": "obs", "uri": "obs://work", "connection": "c"}}),
            "invalid_argument",
            "root of bucket",
        ),
        (
            json!({"extended_storage": [{"type": "obs", "path": "/home/ma-user/work/ds", "uri": "obs://work/ds/", "connection": "nope"}]}),
            "invalid_argument",
            "no storage connection named \"nope\"",
        ),
        (
            json!({"extended_storage": [ext("/home/ma-user/work/ds", "obs://no-such-bucket/ds/")]}),
            "storage_bucket_missing",
            "no-such-bucket",
        ),
        (
            json!({"extended_storage": [ext("/home/ma-user/datasets", "obs://work/ds/")]}),
            "invalid_argument",
            "in the work dir",
        ),
    ] {
        let r = api.post("/v1/notebooks", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["code"], code, "{body}: {}", r.text);
        let m = r.json["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{body}: {m}");
    }
    assert_eq!(api.get("/v1/notebooks").await.json["items"], json!([]));

    // Through the CLI: the work dir on obs://work/home/, a folder in it, and a read-only
    // folder nested in that one.
    let out = gw
        .cli(
            &token,
            &[
                "notebook",
                "create",
                "stored",
                "--storage",
                "obs://work/home/",
                "--extended-storage",
                "/home/ma-user/work/ds/more=obs://work/more/,ro",
                "--extended-storage",
                "/home/ma-user/work/ds=obs://work/ds/",
                "--connection",
                "c",
                "--wait",
                "--json",
            ],
            &[],
        )
        .await;
    out.assert_ok("notebook create with storage");
    let nb: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(nb["status"], "RUNNING", "{nb}");
    let id = nb["id"].as_str().unwrap().to_owned();
    let list = api.get(&format!("/v1/notebooks/{id}/mounts")).await;
    let items = list.expect_status(200)["items"].as_array().unwrap().clone();
    let by_kind = |kind: &str| -> Vec<Value> {
        items
            .iter()
            .filter(|m| m["kind"] == kind)
            .cloned()
            .collect()
    };
    assert_eq!(by_kind("primary").len(), 1, "{}", list.text);
    assert_eq!(by_kind("extended").len(), 2, "{}", list.text);
    assert!(
        items.iter().all(|m| m["status"] == "MOUNTED"),
        "{}",
        list.text
    );
    let work = by_kind("primary")[0]["path"].as_str().unwrap().to_owned();
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run(&read_py(&format!("{work}notes.txt"))).await,
        "primary"
    );
    assert_eq!(
        k.run(&read_py(&format!("{work}ds/a.txt"))).await,
        "extended"
    );
    assert_eq!(
        k.run(&read_py(&format!("{work}ds/more/m.txt"))).await,
        "nested"
    );
    k.run(&format!(
        "open('{work}new.txt', 'w').write('written in the work dir')"
    ))
    .await;
    wait_for_object(&bucket.join("home/new.txt"), "written in the work dir").await;
    let e = k
        .execute(&format!("open('{work}ds/more/x.txt', 'w').write('x')"))
        .await;
    let err = format!("{:?}", e.error);
    assert!(
        err.contains("Read-only file system") || err.contains("Errno 30"),
        "{err}"
    );
    drop(k);

    // Stop unmounts (the objects stay); start mounts again before Jupyter answers.
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "STOPPED").await;
    let r = api.get(&format!("/v1/notebooks/{id}/mounts")).await;
    assert!(
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "UNMOUNTED"),
        "{}",
        r.text
    );
    assert!(processes_mentioning(gw.notebook_dir(&id).join("mounts").as_os_str()).is_empty());
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run(&read_py(&format!("{work}new.txt"))).await,
        "written in the work dir"
    );
    drop(k);

    // Delete: everything unmounted and gone locally; every object still in the bucket.
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&token, &id).await;
    assert!(!gw.notebook_dir(&id).exists());
    for object in ["home/notes.txt", "home/new.txt", "ds/a.txt", "more/m.txt"] {
        assert!(bucket.join(object).is_file(), "{object} was deleted");
    }
}
