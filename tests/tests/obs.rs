//! `atelier obs cp|ls|stat|rm` against a real S3 server on loopback (s3s-fs): a tree with
//! nested folders and a 200 MB file both ways, with and without -d, as the seed's obs-copy
//! examples place them; object to object; a copy resumed after it was interrupted;
//! credentials from the AWS_* variables and from an ~/.aws profile; failures listed with a
//! non-zero exit.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use atelier_tests::s3::{S3Server, noise};
use atelier_tests::{CliOutput, atelier_bin, run_cli, unique};

const BIG: usize = 200 * 1024 * 1024;

/// Relative path → contents of every file under `root`.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

struct Obs<'a> {
    s3: &'a S3Server,
}

impl Obs<'_> {
    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.s3.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.s3.secret_key.clone()),
            ("AWS_ENDPOINT_URL", self.s3.endpoint()),
            // No profile files of this machine's user.
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ]
    }
    async fn run(&self, args: &[&str]) -> CliOutput {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = vec!["obs"];
        all.extend_from_slice(args);
        run_cli(&all, &env).await
    }
    async fn ok(&self, args: &[&str]) -> CliOutput {
        let out = self.run(args).await;
        out.assert_ok(&format!("atelier obs {args:?}"));
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn obs_cp_follows_the_seed_and_resumes() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("bkt");
    let obs = Obs { s3: &s3 };
    let work = std::env::temp_dir().join(format!("atelier-obs-{}", unique()));
    // Removed however the test ends (it holds about 800 MB).
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(work.clone());
    let data = work.join("data");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    std::fs::write(data.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(data.join("sub/b.txt"), "beta\n").unwrap();
    std::fs::write(data.join("sub/deeper/big.bin"), noise(BIG, 7)).unwrap();
    let source = tree(&data);
    let big = source
        .iter()
        .find(|(n, _)| n.ends_with("big.bin"))
        .unwrap()
        .1
        .clone();
    let src = format!("{}/", data.display());

    // Folder up, keeping its name (seed: data/ → obs://b/test-copy/data/...).
    let out = obs.ok(&["cp", &src, "obs://bkt/t/"]).await;
    assert!(
        out.stdout
            .contains(&format!("[OK] local src path: [{}]", data.display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("[OK] obs dst path: [obs://bkt/t/]"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("3 copied"), "{}", out.stderr);
    assert_eq!(tree(&bucket.join("t/data")), source);
    // With -d, only the contents (seed: --drop-last-dir → obs://b/test-copy/...).
    obs.ok(&["cp", "-d", &src, "obs://bkt/flat/"]).await;
    assert_eq!(tree(&bucket.join("flat")), source);
    // A file into a folder, and to a new name.
    obs.ok(&[
        "cp",
        &data.join("a.txt").to_string_lossy(),
        "obs://bkt/copy-data/",
    ])
    .await;
    obs.ok(&[
        "cp",
        &data.join("a.txt").to_string_lossy(),
        "obs://bkt/x/renamed.txt",
    ])
    .await;
    assert_eq!(
        std::fs::read(bucket.join("copy-data/a.txt")).unwrap(),
        b"alpha\n"
    );
    assert_eq!(
        std::fs::read(bucket.join("x/renamed.txt")).unwrap(),
        b"alpha\n"
    );

    // Down: one file byte for byte, the folder with its name, and with -d.
    let down = work.join("down");
    let out = obs
        .ok(&[
            "cp",
            "obs://bkt/t/data/sub/deeper/big.bin",
            &format!("{}/", down.display()),
        ])
        .await;
    assert!(
        out.stdout
            .contains("[OK] obs src path: [obs://bkt/t/data/sub/deeper/big.bin]")
    );
    assert!(
        std::fs::read(down.join("big.bin")).unwrap() == big,
        "the downloaded big file differs"
    );
    obs.ok(&["cp", "obs://bkt/t/data/", &format!("{}/", down.display())])
        .await;
    assert_eq!(tree(&down.join("data")), source);
    obs.ok(&[
        "cp",
        "-d",
        "obs://bkt/t/data/",
        &work.join("flat").to_string_lossy(),
    ])
    .await;
    assert_eq!(tree(&work.join("flat")), source);

    // Object to object.
    obs.ok(&["cp", "-d", "obs://bkt/t/data/", "obs://bkt/mirror/"])
        .await;
    assert_eq!(tree(&bucket.join("mirror")), source);

    // ls, stat.
    let out = obs.ok(&["ls", "obs://bkt/t/data/"]).await;
    assert!(out.stdout.contains("DIR") && out.stdout.contains("obs://bkt/t/data/sub/"));
    assert!(
        out.stdout.contains("obs://bkt/t/data/a.txt"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("big.bin"),
        "not recursive: {}",
        out.stdout
    );
    let out = obs.ok(&["ls", "-r", "obs://bkt/t/data/"]).await;
    assert!(out.stdout.contains(&format!("{BIG}")), "{}", out.stdout);
    let out = obs
        .ok(&["stat", "obs://bkt/t/data/sub/deeper/big.bin"])
        .await;
    assert!(
        out.stdout.contains(&format!("size          {BIG}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("directory     false"), "{}", out.stdout);
    let out = obs.ok(&["stat", "obs://bkt/t/data"]).await;
    assert!(out.stdout.contains("directory     true"), "{}", out.stdout);

    // Resume an upload: one object missing, one torn (same size, other bytes), the rest
    // complete. The copy again redoes exactly the two.
    std::fs::remove_file(bucket.join("t/data/a.txt")).unwrap();
    let torn = work.join("torn.txt");
    std::fs::write(&torn, "BETA\n").unwrap();
    obs.ok(&["cp", &torn.to_string_lossy(), "obs://bkt/t/data/sub/b.txt"])
        .await;
    let out = obs.ok(&["cp", &src, "obs://bkt/t/"]).await;
    assert!(
        out.stderr.contains("2 copied, 1 already complete"),
        "{}",
        out.stderr
    );
    assert_eq!(tree(&bucket.join("t/data")), source);

    // Resume a download killed halfway: the real name never holds a short file, and the
    // copy again completes it.
    let again = work.join("again");
    let mut child = std::process::Command::new(atelier_bin());
    child.args([
        "obs",
        "cp",
        "--jobs",
        "1",
        "--part-size-mb",
        "5",
        "obs://bkt/t/data/sub/deeper/big.bin",
        &format!("{}/", again.display()),
    ]);
    for (k, v) in obs.env() {
        child.env(k, v);
    }
    let mut child = child
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = again.join(".big.bin.atelier-partial");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut interrupted = false;
    while Instant::now() < deadline {
        if partial.exists() {
            child.kill().unwrap();
            interrupted = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
    if interrupted {
        assert!(
            !again.join("big.bin").exists(),
            "a short file under the real name"
        );
    }
    obs.ok(&[
        "cp",
        "obs://bkt/t/data/sub/deeper/big.bin",
        &format!("{}/", again.display()),
    ])
    .await;
    assert!(std::fs::read(again.join("big.bin")).unwrap() == big);
    let out = obs
        .ok(&[
            "cp",
            "obs://bkt/t/data/sub/deeper/big.bin",
            &format!("{}/", again.display()),
        ])
        .await;
    assert!(out.stderr.contains("1 already complete"), "{}", out.stderr);

    // Failures: a missing source, wrong keys; each names the problem and exits non-zero.
    let out = obs
        .run(&["cp", "obs://bkt/no/such/thing", &work.to_string_lossy()])
        .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("no such object or folder"),
        "{}",
        out.stderr
    );
    let out = run_cli(
        &["obs", "ls", "obs://bkt/"],
        &[
            ("AWS_ACCESS_KEY_ID", &s3.access_key),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
            ("AWS_ENDPOINT_URL", &s3.endpoint()),
        ],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("SignatureDoesNotMatch"),
        "{}",
        out.stderr
    );

    // A profile of ~/.aws files instead of the variables.
    let aws = work.join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[lab]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key, s3.secret_key
        ),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!("[profile lab]\nendpoint_url = {}\n", s3.endpoint()),
    )
    .unwrap();
    let creds = aws.join("credentials").to_string_lossy().into_owned();
    let config = aws.join("config").to_string_lossy().into_owned();
    let out = run_cli(
        &["obs", "ls", "--aws-profile", "lab", "obs://bkt/copy-data/"],
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &creds),
            ("AWS_CONFIG_FILE", &config),
        ],
    )
    .await;
    out.assert_ok("obs ls with a profile");
    assert!(
        out.stdout.contains("obs://bkt/copy-data/a.txt"),
        "{}",
        out.stdout
    );

    // rm: a folder needs -r, and --yes without a terminal; objects outside stay.
    let out = obs.run(&["rm", "obs://bkt/mirror/"]).await;
    assert!(out.stderr.contains("pass -r"), "{}", out.stderr);
    let out = obs.run(&["rm", "-r", "obs://bkt/mirror/"]).await;
    assert!(out.stderr.contains("pass --yes"), "{}", out.stderr);
    assert!(bucket.join("mirror/a.txt").exists());
    obs.ok(&["rm", "-r", "--yes", "obs://bkt/mirror/"]).await;
    obs.ok(&["rm", "obs://bkt/x/renamed.txt"]).await;
    assert!(tree(&bucket.join("mirror")).is_empty());
    assert!(!bucket.join("x/renamed.txt").exists());
    assert_eq!(tree(&bucket.join("t/data")), source);
}
