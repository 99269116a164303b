//! The plugin conformance cases of tests/plugins/ (see its README), one trial each
//! (libtest-mimic), so a failing case does not hide the others: each registered through the
//! gateway (`POST /v1/plugins`), invoked, its report checked, and the Python ones again
//! through `atelier plugin test`. One gateway serves every case, started on the first one
//! run; cases run one at a time unless `--test-threads` says otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atelier_tests::Gateway;
use atelier_tests::plugin_cli_env;
use atelier_tests::plugins::{
    built_python, copy_tree, gateway, read_json, repo_root, upload, wat_case,
};
use atelier_tests::run_cli;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};

fn main() -> std::process::ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        // The cases share one gateway and its user's plugin storage; the hostile ones (a
        // memory bomb, an infinite loop) are measured against limits best met alone.
        args.test_threads = Some(1);
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime"),
    );
    let shared: Arc<tokio::sync::OnceCell<Gateway>> = Arc::new(tokio::sync::OnceCell::new());
    let cases = all_cases();
    let mut trials = vec![Trial::test("the_cases_are_all_there", {
        let n = cases.len();
        move || {
            if n >= 15 {
                Ok(())
            } else {
                Err(Failed::from(format!(
                    "only {n} conformance cases under tests/plugins/"
                )))
            }
        }
    })];
    for dir in cases {
        let name = format!(
            "{}/{}",
            dir.parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let (runtime, shared) = (runtime.clone(), shared.clone());
        trials.push(Trial::test(name, move || {
            runtime.block_on(async {
                let gw = shared.get_or_init(gateway).await;
                run_case(gw, &dir).await;
            });
            Ok(())
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // The gateway stops (its Drop) before the process exits.
    drop(shared);
    conclusion.exit_code()
}

/// One case, end to end; a failed assertion panics, which fails this trial only.
async fn run_case(gw: &Gateway, dir: &Path) {
    let admin = gw.admin();
    let me = admin.get("/v1/whoami").await;
    let user_id = me.expect_status(200)["id"].as_str().unwrap().to_string();
    let storage = gw.data_dir.join("plugins/storage").join(&user_id);
    let case = load_case(dir).await;
    let what = format!("{}/{}", case.world, case.name);
    let files: Vec<(&str, Vec<u8>)> = match &case.project {
        Some(p) if case.world == "inference-processor" => vec![(
            "labels.txt",
            std::fs::read(p.join("model/labels.txt")).unwrap(),
        )],
        _ => vec![],
    };
    let r = upload(&admin, &case.manifest, case.component.clone(), &files).await;
    if let Some(e) = case.expected.get("register_error") {
        refused(&r, e, &what);
        // Nothing half-created.
        let name = case.manifest["name"].as_str().unwrap();
        admin
            .get(&format!("/v1/plugins/{name}/1.0.0"))
            .await
            .expect_status(404);
        return;
    }
    let plugin = r.expect_status(201).clone();
    assert_eq!(plugin["world"], json!(case.world), "{what}");
    assert_eq!(plugin["digest"].as_str().unwrap().len(), 64);
    copy_tree(&case.dir.join("storage"), &storage);
    let name = plugin["name"].as_str().unwrap().to_string();
    let input = read_json(&case.dir.join("input.json"));
    let r = admin
        .post(&format!("/v1/plugins/{name}/1.0.0/invoke"), input.clone())
        .await;
    if let Some(e) = case.expected.get("invoke_error") {
        refused(&r, e, &what);
    } else {
        let report = r.expect_status(200).clone();
        check_report(&case, &report, &storage, "invoke");
    }
    // Whatever the plugin did, the gateway still answers.
    admin.get("/v1/whoami").await.expect_status(200);

    // The Python cases again through `atelier plugin test`, with the same host and limits.
    if let (Some(project), Some(component)) = (&case.project, &case.component_path) {
        let work = std::env::temp_dir().join(format!(
            "atelier-plugin-case-{}",
            uuid::Uuid::new_v4().simple()
        ));
        copy_tree(&case.dir.join("storage"), &work.join("storage"));
        std::fs::create_dir_all(work.join("storage")).unwrap();
        std::fs::write(work.join("manifest.json"), case.manifest.to_string()).unwrap();
        let (c, m, i, s) = (
            component.to_string_lossy().into_owned(),
            work.join("manifest.json").to_string_lossy().into_owned(),
            case.dir.join("input.json").to_string_lossy().into_owned(),
            work.join("storage").to_string_lossy().into_owned(),
        );
        let model = project.join("model").to_string_lossy().into_owned();
        let mut args = vec![
            "--json",
            "plugin",
            "test",
            &c,
            "--manifest",
            &m,
            "--input",
            &i,
            "--storage",
            &s,
        ];
        if case.world == "inference-processor" {
            args.extend(["--model-dir", model.as_str()]);
        }
        let out = run_cli(&args, &plugin_cli_env()).await;
        if let Some(e) = case.expected.get("invoke_error") {
            assert_eq!(out.code, 1, "{what} via plugin test: {}", out.stderr);
            let said = format!("{}{}", out.stdout, out.stderr);
            for part in message_parts(e) {
                assert!(said.contains(part), "{what} via plugin test: {said}");
            }
        } else {
            let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{what} via plugin test: {e}\nstdout: {}\nstderr: {}",
                    out.stdout, out.stderr
                )
            });
            check_report(&case, &report, &work.join("storage"), "atelier plugin test");
            assert_eq!(
                out.code,
                i32::from(case.expected.get("error").is_some()),
                "{what}: {}",
                out.stderr
            );
        }
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// `expected` is contained in `actual`: objects by their keys (recursively), numbers within
/// 1e-6, everything else exactly.
fn contains(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a
                    .get(k)
                    .ok_or_else(|| format!("{at}.{k} is missing in {actual}"))?;
                contains(v, got, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at}: {} items expected, got {actual}", e.len()));
            }
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                contains(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) => {
            let (e, a) = (e.as_f64().unwrap(), a.as_f64().unwrap());
            if (e - a).abs() <= 1e-6 * e.abs().max(1.0) {
                Ok(())
            } else {
                Err(format!("{at}: expected {e}, got {a}"))
            }
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: expected {e}, got {a}")),
    }
}

/// One conformance case, as the runner sees it.
struct Case {
    world: String,
    name: String,
    dir: PathBuf,
    component: Vec<u8>,
    /// The Python project, for cases built from one.
    project: Option<PathBuf>,
    component_path: Option<PathBuf>,
    manifest: Value,
    expected: Value,
}

async fn load_case(dir: &Path) -> Case {
    let world = dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut manifest = json!({"name": format!("{world}-{name}").replace("registration-", "reg-"), "version": "1.0.0"});
    if world != "registration" {
        manifest["world"] = json!(world);
    }
    let mut project = None;
    let mut component_path = None;
    let component = if dir.join("project.txt").exists() {
        let rel = std::fs::read_to_string(dir.join("project.txt")).unwrap();
        let p = repo_root().join(rel.trim());
        let m = read_json(&p.join("plugin.json"));
        if let Some(l) = m.get("limits") {
            manifest["limits"] = l.clone();
        }
        let built = built_python(&p).await;
        project = Some(p);
        component_path = Some(built.clone());
        std::fs::read(built).unwrap()
    } else if dir.join("component.wat").exists() {
        wat_case(dir)
    } else if dir.join("module.wat").exists() {
        wat::parse_file(dir.join("module.wat")).unwrap()
    } else {
        std::fs::read(dir.join("raw.txt"))
            .expect("a case has project.txt, component.wat, module.wat or raw.txt")
    };
    if dir.join("manifest.json").exists() {
        let m = read_json(&dir.join("manifest.json"));
        for (k, v) in m.as_object().unwrap() {
            manifest[k] = v.clone();
        }
    }
    Case {
        expected: read_json(&dir.join("expected.json")),
        world,
        name,
        dir: dir.to_path_buf(),
        component,
        project,
        component_path,
        manifest,
    }
}

fn all_cases() -> Vec<PathBuf> {
    let root = repo_root().join("tests/plugins");
    let mut out = Vec::new();
    for world in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for case in std::fs::read_dir(world.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            out.push(case.path());
        }
    }
    out.sort();
    out
}

/// `message_contains` of an expected refusal: one string or a list of them.
fn message_parts(e: &Value) -> Vec<&str> {
    match &e["message_contains"] {
        Value::String(one) => vec![one.as_str()],
        v => v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect(),
    }
}

/// The reply refuses with the expected status, and its message says every expected part.
fn refused(r: &atelier_tests::Reply, e: &Value, what: &str) {
    assert_eq!(
        r.status,
        e["status"].as_u64().unwrap() as u16,
        "{what}: {}",
        r.text
    );
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    for part in message_parts(e) {
        assert!(message.contains(part), "{what}: {message:?} lacks {part}");
    }
}

/// The strings of `expected.json`'s list `key` (none when it has no such list).
fn listed<'a>(case: &'a Case, key: &str) -> impl Iterator<Item = &'a str> {
    case.expected
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Checks a call report (from invoke or `atelier plugin test --json`) against `expected`.
fn check_report(case: &Case, report: &Value, storage: &Path, via: &str) {
    let what = format!("{}/{} via {via}", case.world, case.name);
    if let Some(out) = case.expected.get("output") {
        assert!(
            report["error"].is_null(),
            "{what}: the call failed: {}",
            report["error"]
        );
        contains(out, &report["output"], "output")
            .unwrap_or_else(|e| panic!("{what}: {e}\nreport: {report}"));
        if case.expected["output_exactly"] == json!(true) {
            assert_eq!(
                &report["output"], out,
                "{what}: the output has more than expected"
            );
        }
    }
    if let Some(err) = case.expected.get("error") {
        let got = &report["error"];
        assert!(
            !got.is_null(),
            "{what}: expected the error {err}, the call succeeded: {report}"
        );
        let mut fields = err.clone();
        let part = fields.as_object_mut().unwrap().remove("message_contains");
        contains(&fields, got, "error").unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(part) = part {
            let message = format!(
                "{}{}",
                got["message"].as_str().unwrap_or_default(),
                got["hint"].as_str().unwrap_or_default()
            );
            assert!(
                message.contains(part.as_str().unwrap()),
                "{what}: {message:?} lacks {part}"
            );
        }
    }
    for l in listed(case, "logs_contain") {
        let logs = report["logs"].to_string();
        assert!(logs.contains(l), "{what}: logs {logs} lack {l}");
    }
    for m in listed(case, "metrics_contain") {
        assert!(
            report["metrics"]["scalars"].get(m).is_some(),
            "{what}: no metric {m} in {}",
            report["metrics"]
        );
    }
    for p in listed(case, "storage_contains") {
        let path = storage.join(p);
        assert!(
            path.is_file(),
            "{what}: the plugin did not write {}",
            path.display()
        );
    }
}
