//! `atelier.file` (MoXing's `mox.file` for Atelier) from a Jupyter kernel against a real S3
//! server on loopback: every function, with the notebook holding no credentials (calls go
//! over the notebook's socket to the gateway, which acts with the owner's connections); a
//! user without connections gets a clear error, not someone else's store.

use atelier_tests::s3::S3Server;
use atelier_tests::{Gateway, Kernel};
use serde_json::Value;

const SCRIPT: &str = r#"
import atelier.file as af, json, os
work = os.getcwd()
out = {}
out['exists'] = [af.exists('obs://files/in/a.txt'), af.exists('obs://files/in/nope.txt'), af.exists('obs://files/in')]
out['is_dir'] = [af.is_directory('obs://files/in'), af.is_directory('obs://files/in/a.txt')]
out['list'] = af.list_directory('obs://files/in')
out['list_r'] = af.list_directory('obs://files/in', recursive=True)
out['size'] = [af.get_size('obs://files/in/a.txt'), af.get_size('obs://files/in', recursive=True)]
st = af.stat('obs://files/in/a.txt')
out['stat'] = [st.length, st.is_dir]
out['read'] = af.read('obs://files/in/a.txt')
out['read_bin'] = list(af.read('s3://files/in/a.txt', binary=True)[:2])
af.write('obs://files/out/w.txt', 'one\n')
af.append('obs://files/out/w.txt', 'two\n')
out['appended'] = af.read('obs://files/out/w.txt')
af.copy('obs://files/in/a.txt', os.path.join(work, 'local/a.txt'))
out['local'] = open(os.path.join(work, 'local/a.txt')).read()
with open(os.path.join(work, 'up.bin'), 'wb') as f:
    f.write(bytes(range(256)) * 4096)
af.copy(os.path.join(work, 'up.bin'), 'obs://files/out/up.bin')
af.copy_parallel('obs://files/in/', os.path.join(work, 'tree'))
out['tree'] = af.list_directory(os.path.join(work, 'tree'), recursive=True)
af.copy_parallel(os.path.join(work, 'tree'), 'obs://files/back/')
af.copy_parallel('obs://files/in/', 'obs://files/copy/')
out['copied'] = af.list_directory('obs://files/copy', recursive=True)
af.make_dirs('obs://files/empty/')
af.remove('obs://files/copy/', recursive=True)
af.remove('obs://files/out/w.txt')
out['removed'] = [af.exists('obs://files/copy/a.txt'), af.exists('obs://files/out/w.txt')]
try:
    af.read('obs://files/in/nope.txt')
    out['missing'] = 'read'
except FileNotFoundError:
    out['missing'] = 'FileNotFoundError'
out['secret_in_env'] = any('SECRET' in k or 'AWS_' in k for k in os.environ)
import subprocess, sys
def cli(*a):
    r = subprocess.run([sys.executable, '-m', 'atelier', 'obs', *a], capture_output=True, text=True)
    return [r.returncode, (r.stdout + r.stderr).strip()]
out['cli_cp'] = cli('cp', 'obs://files/in/', work + '/cli/')
out['cli_tree'] = af.list_directory(work + '/cli', recursive=True)
out['cli_again'] = cli('cp', 'obs://files/in/', work + '/cli/')
out['cli_flat'] = cli('cp', '-d', 'obs://files/in/', 'obs://files/flat/')
out['cli_ls'] = cli('ls', '-r', 'obs://files/flat')
out['cli_rm'] = cli('rm', '-r', 'obs://files/flat/')
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn atelier_file_from_a_kernel_uses_the_owners_connections_only() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("files");
    std::fs::create_dir_all(bucket.join("in/sub")).unwrap();
    std::fs::write(bucket.join("in/a.txt"), "alpha").unwrap();
    std::fs::write(bucket.join("in/sub/b.txt"), "beta").unwrap();
    let mut gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "c").await;
    let id = gw.create_notebook(&token, "files").await;
    gw.wait_status(&token, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    let out = k.run(SCRIPT).await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let j = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
    assert_eq!(v["exists"], j("[true, false, true]"), "{v}");
    assert_eq!(v["is_dir"], j("[true, false]"), "{v}");
    assert_eq!(v["list"], j(r#"["a.txt", "sub"]"#), "{v}");
    assert_eq!(v["list_r"], j(r#"["a.txt", "sub/b.txt"]"#), "{v}");
    assert_eq!(v["size"], j("[5, 9]"), "{v}");
    assert_eq!(v["stat"], j("[5, false]"), "{v}");
    assert_eq!(v["read"], "alpha");
    assert_eq!(v["read_bin"], j("[97, 108]"));
    assert_eq!(v["appended"], "one\ntwo\n");
    assert_eq!(v["local"], "alpha");
    assert_eq!(v["tree"], j(r#"["a.txt", "sub/b.txt"]"#), "{v}");
    assert_eq!(v["copied"], j(r#"["a.txt", "sub/b.txt"]"#), "{v}");
    assert_eq!(v["removed"], j("[false, false]"), "{v}");
    assert_eq!(v["missing"], "FileNotFoundError");
    assert_eq!(v["secret_in_env"], false);
    // `python -m atelier obs ...`: the seed's placement, resumable, with the same keys-free path.
    assert_eq!(
        v["cli_cp"],
        j(r#"[0, "copied 2 files, 0 already complete, 0 failed"]"#),
        "{v}"
    );
    assert_eq!(v["cli_tree"], j(r#"["in/a.txt", "in/sub/b.txt"]"#), "{v}");
    assert_eq!(
        v["cli_again"],
        j(r#"[0, "copied 0 files, 2 already complete, 0 failed"]"#),
        "{v}"
    );
    assert_eq!(v["cli_flat"][0], 0, "{v}");
    assert_eq!(v["cli_ls"], j("[0, \"a.txt\\nsub/b.txt\"]"), "{v}");
    assert_eq!(
        v["cli_rm"][0], 1,
        "rm -r without --yes and no TTY must refuse: {v}"
    );
    // What the kernel wrote is in the bucket.
    let up = std::fs::read(bucket.join("out/up.bin")).unwrap();
    assert_eq!(up.len(), 256 * 4096);
    assert!(
        up.chunks(256)
            .all(|c| c.iter().enumerate().all(|(i, b)| *b as usize == i))
    );
    assert_eq!(
        std::fs::read_to_string(bucket.join("back/sub/b.txt")).unwrap(),
        "beta"
    );
    // make_dirs left a folder marker (s3s-fs keeps it as a directory).
    assert!(bucket.join("empty").is_dir());
    drop(k);

    // A restarted gateway serves the running notebook's socket again.
    gw.restart().await;
    let api = gw.api(&token);
    let mut k = Kernel::start(&api, &id).await;
    assert_eq!(
        k.run("import atelier.file as af; print(af.read('obs://files/in/a.txt'))")
            .await,
        "alpha\n"
    );
    drop(k);

    // Another user's notebook reaches none of alice's connections.
    let bob = gw.create_user("bob").await;
    let bob_api = gw.api(&bob);
    let other = gw.create_notebook(&bob, "other").await;
    gw.wait_status(&bob, &other, "RUNNING").await;
    let mut k = Kernel::start(&bob_api, &other).await;
    let e = k
        .execute("import atelier.file as af\naf.read('obs://files/in/a.txt')")
        .await;
    let err = format!("{:?}", e.error);
    assert!(
        err.contains("StorageError") && err.contains("no storage connection"),
        "{err}"
    );
}
