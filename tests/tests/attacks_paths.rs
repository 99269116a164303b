//! Symbolic-link attacks on what the gateway does on the host in a notebook's writable trees
//! (its work dir, its `/data`), against a real gateway on the process backend with a real S3
//! server (s3s-fs) and `rclone mount`. A kernel running as ma-user plants the links, also
//! swapping a directory for a link while the gateway works in it. Whatever happens, nothing
//! outside the notebook is written, chowned or mounted over: the tests compare a directory
//! outside (owner, mode, contents) before and after, and read `/proc/self/mountinfo` (the
//! gateway runs in this test's mount namespace). These tests need the sandbox: in CI a
//! gateway without it fails them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_tests::s3::{S3Server, files_under};
use atelier_tests::{Api, Gateway, Kernel, Value, eventually, json};

const WAIT: Duration = Duration::from_secs(120);

/// The gateway's log says it sandboxes notebooks; outside CI a machine without a sandbox
/// skips with a note, in CI it fails (`Gateway::sandboxed`).
fn require_sandbox(gw: &Gateway, test: &str) -> bool {
    if gw.sandboxed() {
        return true;
    }
    eprintln!("NOTE: {test} skipped: no sandbox on this machine (bubblewrap, pasta, cgroups)");
    false
}

/// A directory of the host that no notebook may reach through the gateway: root's, with a
/// file and an empty folder in it (something to write over, something to mount over).
struct Outside {
    dir: PathBuf,
}

/// (path, uid, gid, mode, contents of a file) of everything under a directory.
type Snapshot = Vec<(PathBuf, u32, u32, u32, Option<Vec<u8>>)>;

impl Outside {
    fn new() -> Outside {
        let dir = std::env::temp_dir().join(format!("atelier-outside-{}", atelier_tests::unique()));
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::write(dir.join("victim.txt"), "the host's").unwrap();
        Outside { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    fn snapshot(&self) -> Snapshot {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let m = std::fs::symlink_metadata(&d).unwrap();
            out.push((d.clone(), m.uid(), m.gid(), m.mode(), None));
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else {
                    let text = std::fs::read(&p).ok();
                    out.push((p, m.uid(), m.gid(), m.mode(), text));
                }
            }
        }
        out.sort();
        out
    }

    /// Fails unless the directory is as it was and nothing is mounted at or below it.
    #[track_caller]
    fn assert_untouched(&self, before: &Snapshot) {
        let mounted = mount_points_under(&self.dir);
        assert!(
            mounted.is_empty(),
            "mounted outside the notebook: {mounted:?}"
        );
        assert_eq!(&self.snapshot(), before, "the host's directory changed");
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Whatever an attack that worked left mounted here goes first.
        for p in mount_points_under(&self.dir) {
            let _ = std::process::Command::new("umount")
                .args(["-l", &p])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (mount point, file system type) of every mount in this process's namespace.
fn mount_table() -> Vec<(String, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?.replace("\\040", " ");
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?.to_owned();
            Some((point, fstype))
        })
        .collect()
}

fn mount_points_under(dir: &Path) -> Vec<String> {
    let base = dir.to_string_lossy().into_owned();
    mount_table()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| *p == base || p.starts_with(&format!("{base}/")))
        .collect()
}

/// Where rclone mounts are, anywhere on the host.
fn rclone_mounts() -> Vec<String> {
    mount_table()
        .into_iter()
        .filter(|(_, t)| t == "fuse.rclone")
        .map(|(p, _)| p)
        .collect()
}

/// Every rclone mount is in some test gateway's notebook dir (this one's, or those of tests
/// running beside it), `others` aside (the mounts that were there before).
#[track_caller]
fn assert_rclone_mounts_only_in_notebooks(others: &[String]) {
    let gateways = std::env::temp_dir().join("atelier-e2e-");
    let gateways = gateways.to_string_lossy();
    let stray: Vec<String> = rclone_mounts()
        .into_iter()
        .filter(|p| !others.contains(p))
        .filter(|p| {
            let in_notebook = p
                .strip_prefix(gateways.as_ref())
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(_, rest)| rest.starts_with("notebooks/"));
            !in_notebook
        })
        .collect();
    assert!(
        stray.is_empty(),
        "rclone mounted outside notebooks: {stray:?}"
    );
}

/// Starts an upload of `body` to `path` in notebook `id`; the POST's answer.
async fn start_upload(
    api: &Api,
    id: &str,
    path: &str,
    size: usize,
    overwrite: bool,
) -> atelier_tests::Reply {
    api.post(
        &format!("/v1/notebooks/{id}/uploads"),
        json!({"path": path, "size": size, "connection": "c", "overwrite": overwrite}),
    )
    .await
}

/// Sends the one part of a started upload and asks the gateway to land it; the upload's
/// final view (DONE or FAILED).
async fn finish_upload(api: &Api, id: &str, started: &Value, body: &[u8]) -> Value {
    let put = reqwest::Client::new()
        .put(started["parts"][0]["url"].as_str().unwrap())
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let one = format!(
        "/v1/notebooks/{id}/uploads/{}",
        started["id"].as_str().unwrap()
    );
    api.post_empty(&format!("{one}/complete"))
        .await
        .expect_status(202);
    eventually(&format!("{one} to end"), WAIT, || {
        let api = api.clone();
        let one = one.clone();
        async move {
            let r = api.get(&one).await;
            ["DONE", "FAILED"]
                .contains(&r.json["status"].as_str()?)
                .then_some(r.json)
        }
    })
    .await
}

/// A gateway, a user with storage connection `c` (default bucket `stage`) and a running
/// notebook.
async fn setup(s3: &S3Server, name: &str) -> Option<(Gateway, Api, String, String)> {
    s3.bucket("stage");
    let gw = Gateway::start().await;
    if !require_sandbox(&gw, name) {
        return None;
    }
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    api.post(
        "/v1/storage/connections",
        json!({
            "name": "c",
            "endpoint": s3.endpoint(),
            "bucket": "stage",
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
        }),
    )
    .await
    .expect_status(201);
    let id = gw.create_notebook(&token, "planter").await;
    gw.wait_status(&token, &id, "RUNNING").await;
    Some((gw, api, token, id))
}

/// Links planted for an upload's parent folder, for the file itself and for the partial file
/// the gateway writes first: every upload through them is refused or fails naming the link,
/// and nothing outside the work dir is written or given to ma-user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_write_or_chown_through_a_planted_link() {
    let s3 = S3Server::start();
    let Some((gw, api, _token, id)) =
        setup(&s3, "uploads_never_write_or_chown_through_a_planted_link").await
    else {
        return;
    };
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    k.run(&format!(
        "import os\nos.symlink({dir:?}, 'r')\nos.symlink({victim:?}, 'f.txt')\nos.symlink({victim:?}, '.g.txt.atelier-partial')",
        dir = outside.path(""),
        victim = outside.path("victim.txt"),
    ))
    .await;

    // Planted before the upload starts: refused at once, naming the link.
    for (path, overwrite, link) in [
        ("r/victim.txt", true, "/home/ma-user/work/r"),
        ("r/new.txt", false, "/home/ma-user/work/r"),
        ("r/deeper/new.txt", false, "/home/ma-user/work/r"),
        ("f.txt", true, "/home/ma-user/work/f.txt"),
    ] {
        let r = start_upload(&api, &id, path, 5, overwrite).await;
        let msg = r.expect_error(409, "conflict");
        assert!(
            msg.contains(link) && msg.contains("symbolic link"),
            "{path}: {msg}"
        );
    }

    // Planted while the parts are sent (the parent folder, the file itself) and the partial
    // file's name: the landing fails and says which link.
    let sub = start_upload(&api, &id, "sub/new.txt", 5, false).await;
    sub.expect_status(201);
    let own = start_upload(&api, &id, "h.txt", 5, true).await;
    own.expect_status(201);
    let partial = start_upload(&api, &id, "g.txt", 5, false).await;
    partial.expect_status(201);
    k.run(&format!(
        "import os\nos.symlink({dir:?}, 'sub')\nos.symlink({victim:?}, 'h.txt')",
        dir = outside.path(""),
        victim = outside.path("victim.txt"),
    ))
    .await;
    for (started, link) in [
        (&sub, "/home/ma-user/work/sub"),
        (&own, "/home/ma-user/work/h.txt"),
        (&partial, "/home/ma-user/work/.g.txt.atelier-partial"),
    ] {
        let v = finish_upload(&api, &id, &started.json, b"owned").await;
        assert_eq!(v["status"], "FAILED", "{v}");
        let why = v["error"].as_str().unwrap_or_default();
        assert!(
            why.contains(link) && why.contains("symbolic link"),
            "{link}: {why}"
        );
    }
    outside.assert_untouched(&before);
    // The links are as the notebook left them, and nothing staged stays in the store.
    let work = gw.notebook_dir(&id).join("work");
    for name in ["r", "f.txt", "sub", "h.txt", ".g.txt.atelier-partial"] {
        assert!(
            std::fs::symlink_metadata(work.join(name))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name}"
        );
    }
    assert!(files_under(&s3.root.join("stage")).is_empty());

    // Without links the same upload lands, as ma-user's.
    let ok = start_upload(&api, &id, "fine/new.txt", 5, false).await;
    ok.expect_status(201);
    let v = finish_upload(&api, &id, &ok.json, b"plain").await;
    assert_eq!(v["status"], "DONE", "{v}");
    for p in ["fine", "fine/new.txt"] {
        let m = std::fs::symlink_metadata(work.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 100), "{p}");
    }
    assert_eq!(std::fs::read(work.join("fine/new.txt")).unwrap(), b"plain");
}

/// Python for a kernel: a thread that swaps the directory `path` for a link to `target` and
/// back, as fast as it can, until `stop_swapping()` (or 5 minutes, or 2 million rounds).
fn swapper_py(path: &str, target: &str) -> String {
    format!(
        r#"import os, threading, time
_stop = [False]
_rounds = [0]
def _swap(path={path:?}, target={target:?}):
    moved = path + '.moved'
    end = time.monotonic() + 300
    while not _stop[0] and _rounds[0] < 2000000 and time.monotonic() < end:
        for step in (lambda: os.rename(path, moved), lambda: os.symlink(target, path),
                     lambda: os.unlink(path), lambda: os.rename(moved, path)):
            try:
                step()
            except OSError:
                pass
        _rounds[0] += 1
os.makedirs({path:?}, exist_ok=True)
_thread = threading.Thread(target=_swap, daemon=True)
_thread.start()
def stop_swapping():
    _stop[0] = True
    _thread.join()
    print(_rounds[0])
"#
    )
}

/// A directory swapped for a link to the host again and again while uploads land in it:
/// each upload lands in the notebook's directory or fails, and nothing outside changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_racing_a_directory_swapped_for_a_link_never_land_outside() {
    let s3 = S3Server::start();
    let Some((gw, api, _token, id)) = setup(
        &s3,
        "uploads_racing_a_directory_swapped_for_a_link_never_land_outside",
    )
    .await
    else {
        return;
    };
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    k.run(&swapper_py("d", &outside.path(""))).await;
    let mut outcomes = Vec::new();
    for i in 0..12 {
        let r = start_upload(&api, &id, &format!("d/f{i}.txt"), 5, false).await;
        if r.status != 201 {
            outcomes.push(format!("refused {}: {}", r.status, r.text));
            continue;
        }
        let v = finish_upload(&api, &id, &r.json, b"raced").await;
        outcomes.push(format!("{} {}", v["status"], v["error"]));
    }
    let rounds: u64 = k.run("stop_swapping()").await.trim().parse().unwrap();
    assert!(rounds > 0, "the swapper never ran");
    eprintln!("{rounds} swaps; uploads: {outcomes:#?}");
    outside.assert_untouched(&before);
    assert!(files_under(&s3.root.join("stage")).is_empty());
    // What landed is ma-user's and in the work dir.
    let work = gw.notebook_dir(&id).join("work");
    for d in ["d", "d.moved"] {
        // Read only a real directory: the swapper may have left a link behind.
        if !std::fs::symlink_metadata(work.join(d)).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        for e in std::fs::read_dir(work.join(d))
            .into_iter()
            .flatten()
            .flatten()
        {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 100), "{}", e.path().display());
        }
    }
}

/// A link planted where a dynamic mount's folder goes (`/data/<name>`): refused, naming the
/// link; nothing is created, chowned or mounted anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_mounts_never_follow_a_planted_link() {
    let s3 = S3Server::start();
    let Some((_gw, api, _token, id)) =
        setup(&s3, "dynamic_mounts_never_follow_a_planted_link").await
    else {
        return;
    };
    let others = rclone_mounts();
    std::fs::write(s3.bucket("datasets").join("a.txt"), "object").unwrap();
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    k.run(&format!(
        "import os\nos.symlink({empty:?}, '/data/x')\nos.symlink({gone:?}, '/data/y')",
        empty = outside.path("empty"),
        gone = outside.path("made/by/the/gateway"),
    ))
    .await;
    let mounts = format!("/v1/notebooks/{id}/mounts");
    for name in ["x", "y"] {
        let r = api
            .post(
                &mounts,
                json!({"name": name, "uri": "obs://datasets/", "connection": "c"}),
            )
            .await;
        let msg = r.expect_error(409, "conflict");
        assert!(
            msg.contains(&format!("/data/{name}")) && msg.contains("symbolic link"),
            "{name}: {msg}"
        );
    }
    assert_eq!(api.get(&mounts).await.json["items"], json!([]));
    outside.assert_untouched(&before);
    assert_rclone_mounts_only_in_notebooks(&others);
    // The links are the notebook's and stay; a plain name still mounts.
    let r = api
        .post(
            &mounts,
            json!({"name": "z", "uri": "obs://datasets/", "connection": "c"}),
        )
        .await;
    r.expect_status(201);
    assert_eq!(
        k.run("print(open('/data/z/a.txt').read(), end='')").await,
        "object"
    );
    assert_rclone_mounts_only_in_notebooks(&others);
}

/// `/data/<name>` swapped for a link again and again while mounts are made and removed:
/// each mount goes into the notebook's `/data` (or fails), every unmount finds it wherever
/// the notebook moved it, and nothing is mounted or changed outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_racing_a_directory_swapped_for_a_link_never_land_outside() {
    let s3 = S3Server::start();
    let Some((gw, api, _token, id)) = setup(
        &s3,
        "mounts_racing_a_directory_swapped_for_a_link_never_land_outside",
    )
    .await
    else {
        return;
    };
    let others = rclone_mounts();
    s3.bucket("datasets");
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    k.run(&swapper_py("/data/x", &outside.path("empty"))).await;
    let mounts = format!("/v1/notebooks/{id}/mounts");
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let r = api
            .post(
                &mounts,
                json!({"name": "x", "uri": "obs://datasets/", "connection": "c"}),
            )
            .await;
        outcomes.push(format!("{} {}", r.status, r.text));
        if r.status == 201 {
            api.delete(&format!("{mounts}/x")).await.expect_status(204);
        }
        outside.assert_untouched(&before);
    }
    let rounds: u64 = k.run("stop_swapping()").await.trim().parse().unwrap();
    assert!(rounds > 0, "the swapper never ran");
    eprintln!("{rounds} swaps; mounts: {outcomes:#?}");
    outside.assert_untouched(&before);
    assert_rclone_mounts_only_in_notebooks(&others);
    // Every mount made was removed, wherever the notebook had moved its folder.
    let left = mount_points_under(&gw.notebook_dir(&id).join("data"))
        .into_iter()
        .filter(|p| rclone_mounts().contains(p))
        .collect::<Vec<_>>();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// Extended storage in the work dir (`/home/ma-user/work/a/ds`): the notebook moves the
/// folder's parent away and plants a link to the host in its place. Stopping unmounts the
/// folder where it moved; the next start refuses to mount through the link (the start fails
/// and says why) and creates, chowns and mounts nothing outside; delete leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_storage_never_follows_a_link_planted_in_the_work_dir() {
    let s3 = S3Server::start();
    std::fs::create_dir_all(s3.bucket("work").join("ds")).unwrap();
    std::fs::write(s3.root.join("work/ds/a.txt"), "extended").unwrap();
    let gw = Gateway::start().await;
    if !require_sandbox(
        &gw,
        "extended_storage_never_follows_a_link_planted_in_the_work_dir",
    ) {
        return;
    }
    let others = rclone_mounts();
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "c").await;
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "ext", "extended_storage": [
                {"type": "obs", "path": "/home/ma-user/work/a/ds", "uri": "obs://work/ds/", "connection": "c"}
            ]}),
        )
        .await;
    r.expect_status(201);
    let id = r.json["id"].as_str().unwrap().to_owned();
    gw.wait_status(&token, &id, "RUNNING").await;
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    let moved = k
        .run(&format!(
            "import os\nos.rename('a', 'a.old')\nos.symlink({dir:?}, 'a')\nprint(os.listdir('a.old/ds'), end='')",
            dir = outside.path(""),
        ))
        .await;
    assert_eq!(moved, "['a.txt']", "the mount moves with its parent");
    drop(k);
    let nb = gw.notebook_dir(&id);
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "STOPPED").await;
    let left: Vec<String> = mount_points_under(&nb)
        .into_iter()
        .filter(|p| p.contains("/work/"))
        .collect();
    assert!(left.is_empty(), "still mounted after the stop: {left:?}");

    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    let v = eventually("the start to end", WAIT, || {
        let api = api.clone();
        let id = id.clone();
        async move {
            let r = api.get(&format!("/v1/notebooks/{id}")).await;
            (!["STARTING", "STOPPED"].contains(&r.json["status"].as_str()?)).then_some(r.json)
        }
    })
    .await;
    assert_eq!(v["status"], "START_FAILED", "{v}");
    let why = v["status_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("/home/ma-user/work/a") && why.contains("symbolic link"),
        "{why}"
    );
    outside.assert_untouched(&before);
    assert_rclone_mounts_only_in_notebooks(&others);

    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&token, &id).await;
    assert!(!nb.exists(), "the notebook's dir stayed");
    outside.assert_untouched(&before);
    assert!(s3.root.join("work/ds/a.txt").is_file());
}

/// The same plants in a container notebook (docker backend on Podman): a link at
/// `/data/<name>`, in the work dir on the way to an upload, and in place of an extended
/// folder's parent on the work disk. Each is refused or fails the start, naming the link;
/// nothing outside changes. (Extended folders outside the work dir live under `<nb>/ext`,
/// which the container cannot write: only the folder itself is bound in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_notebooks_cannot_lead_mounts_or_uploads_through_links() {
    let s3 = S3Server::start();
    s3.bucket("stage");
    std::fs::create_dir_all(s3.bucket("work").join("ds")).unwrap();
    std::fs::write(s3.root.join("work/ds/a.txt"), "extended").unwrap();
    let gw = Gateway::start_docker("", &[]).await;
    let others = rclone_mounts();
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    api.post(
        "/v1/storage/connections",
        json!({
            "name": "c",
            "endpoint": s3.endpoint(),
            "bucket": "stage",
            "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key,
        }),
    )
    .await
    .expect_status(201);
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "boxed", "extended_storage": [
                {"type": "obs", "path": "/home/ma-user/work/a/ds", "uri": "obs://work/ds/", "connection": "c"}
            ]}),
        )
        .await;
    let id = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&token, &id, "RUNNING").await;
    let outside = Outside::new();
    let before = outside.snapshot();
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run(&format!(
            "import os\nos.symlink({empty:?}, '/data/x')\nos.symlink({dir:?}, 'r')\nos.rename('a', 'a.old')\nos.symlink({dir:?}, 'a')\nprint(os.getuid(), os.listdir('a.old/ds'))",
            empty = outside.path("empty"),
            dir = outside.path(""),
        ))
        .await;
    assert_eq!(out, "1000 ['a.txt']\n");
    drop(k);

    let r = api
        .post(
            &format!("/v1/notebooks/{id}/mounts"),
            json!({"name": "x", "uri": "obs://work/ds/", "connection": "c"}),
        )
        .await;
    let msg = r.expect_error(409, "conflict");
    assert!(
        msg.contains("/data/x") && msg.contains("symbolic link"),
        "{msg}"
    );
    let msg = start_upload(&api, &id, "r/new.txt", 5, false)
        .await
        .expect_error(409, "conflict");
    assert!(
        msg.contains("/home/ma-user/work/r") && msg.contains("symbolic link"),
        "{msg}"
    );

    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&token, &id, "STOPPED").await;
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    let v = eventually("the start to end", WAIT, || {
        let api = api.clone();
        let id = id.clone();
        async move {
            let r = api.get(&format!("/v1/notebooks/{id}")).await;
            (!["STARTING", "STOPPED"].contains(&r.json["status"].as_str()?)).then_some(r.json)
        }
    })
    .await;
    assert_eq!(v["status"], "START_FAILED", "{v}");
    let why = v["status_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("/home/ma-user/work/a") && why.contains("symbolic link"),
        "{why}"
    );
    outside.assert_untouched(&before);
    assert_rclone_mounts_only_in_notebooks(&others);

    let nb = gw.notebook_dir(&id);
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&token, &id).await;
    assert!(!nb.exists(), "the notebook's dir stayed");
    outside.assert_untouched(&before);
}
