//! What each worker of a training job runs and sees (spec/training.md §2.4-§2.7): its
//! environment (the seed's `MA_*` and `VC_*` names, `torch.distributed`'s rendezvous
//! variables), the names of the job's workers for `/etc/hosts`, and the launcher: a POSIX
//! shell script the gateway writes, which installs `requirements.txt`, runs `ma-pre-start.sh`
//! and then the boot command (through `torchrun` when `MA_RUN_METHOD=torchrun`). Pure: the
//! runner and the tests call it alike.

use std::collections::BTreeMap;

use super::runtime::{self, Runtime};

/// `MA_TORCHRUN_MASTER_PORT`'s default (seed 8.2.1).
pub const TORCHRUN_PORT: u16 = 18888;
/// The tag of the platform's own lines in a job's log (seed 8.11.5).
pub const SERVICE_TAG: &str = "[ModelArts Service Log]";

/// Who a worker is.
pub struct Worker<'a> {
    pub job_id: &'a str,
    pub owner_id: &'a str,
    pub rank: u32,
    pub nodes: u32,
    pub gpus: u32,
    /// `MA_HANG_DETECT_TIME`, minutes as the job gave it (or the default 30).
    pub hang_minutes: u64,
}

/// `MA_VJ_NAME` of a job.
pub fn vj_name(job_id: &str) -> String {
    format!("ma-job-{job_id}")
}

/// The communication domain name of worker `rank` (seed T8-34).
pub fn worker_host(job_id: &str, rank: u32) -> String {
    let vj = vj_name(job_id);
    format!("{vj}-worker-{rank}.{vj}")
}

/// A worker's host name (`MA_CURRENT_INSTANCE_NAME`).
pub fn instance_name(job_id: &str, rank: u32) -> String {
    format!("{}-worker-{rank}", vj_name(job_id))
}

/// `/etc/hosts` for every worker of a job: on one host they share one network, so each
/// worker's names are the loopback.
pub fn hosts_file(job_id: &str, nodes: u32) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    for r in 0..nodes {
        out.push_str(&format!(
            "127.0.0.1\t{} {}\n",
            worker_host(job_id, r),
            instance_name(job_id, r)
        ));
    }
    out
}

/// The worker's environment: the runtime view's (`MA_HOME`, channels, …), the platform's
/// per-worker names, the job's own variables last (they may set `MA_RUN_METHOD`,
/// `MASTER_PORT`, …).
pub fn environment(
    w: &Worker<'_>,
    rt: &Runtime,
    s3: Option<&S3Env>,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = rt.environment.clone();
    let hosts: Vec<String> = (0..w.nodes).map(|r| worker_host(w.job_id, r)).collect();
    let rank = w.rank.to_string();
    let nodes = w.nodes.to_string();
    let master_port = user
        .get("MA_TORCHRUN_MASTER_PORT")
        .cloned()
        .unwrap_or_else(|| TORCHRUN_PORT.to_string());
    for (k, v) in [
        ("MA_SCRIPT_INTERPRETER", String::new()),
        ("MA_CURRENT_IP", "127.0.0.1".to_string()),
        ("MA_NUM_GPUS", w.gpus.to_string()),
        ("MA_TASK_NAME", "worker".to_string()),
        ("MA_NUM_HOSTS", nodes.clone()),
        ("VC_TASK_INDEX", rank.clone()),
        ("VK_TASK_INDEX", rank.clone()),
        ("MA_TASK_INDEX", rank.clone()),
        ("VC_WORKER_NUM", nodes.clone()),
        ("VC_WORKER_HOSTS", hosts.join(",")),
        ("MA_VJ_NAME", vj_name(w.job_id)),
        ("MA_CURRENT_INSTANCE_NAME", instance_name(w.job_id, w.rank)),
        ("MA_SKIP_IMAGE_DETECT", "1".to_string()),
        ("MA_HANG_DETECT_TIME", w.hang_minutes.to_string()),
        ("MA_IAM_USER_ID", w.owner_id.to_string()),
        ("MA_ENGINE_TYPE", String::new()),
        ("MA_ENGINE_VERSION", String::new()),
        ("MA_TORCHRUN_MASTER_PORT", master_port.clone()),
        // torch.distributed's env:// rendezvous, one process per worker.
        ("MASTER_ADDR", hosts[0].clone()),
        ("MASTER_PORT", master_port),
        ("WORLD_SIZE", nodes),
        ("RANK", rank),
        ("LOCAL_RANK", "0".to_string()),
        (
            "NVIDIA_VISIBLE_DEVICES",
            if w.gpus > 0 { "all" } else { "void" }.to_string(),
        ),
    ] {
        env.insert(k.to_string(), v);
    }
    if let Some(s) = s3 {
        env.insert("S3_ENDPOINT".into(), s.endpoint.clone());
        env.insert(
            "S3_USE_HTTPS".into(),
            if s.https { "1" } else { "0" }.into(),
        );
        env.insert(
            "S3_VERIFY_SSL".into(),
            if s.https { "1" } else { "0" }.into(),
        );
    }
    for (k, v) in user {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// The object store a job's data comes from, as its code may want to reach it.
pub struct S3Env {
    pub endpoint: String,
    pub https: bool,
}

/// What the launcher needs beyond the environment.
pub struct Launch<'a> {
    pub rt: &'a Runtime,
    /// `MA_RUN_METHOD` (the job's env).
    pub run_method: Option<&'a str>,
    /// `MA_EXTRA_TORCHRUN_PARAMS`.
    pub nodes: u32,
    /// Job name for `--rdzv_id`.
    pub job_id: &'a str,
}

/// The launcher script (`/bin/sh -c`): platform lines tagged [`SERVICE_TAG`], the code
/// dir's `pip-requirements.txt` or `requirements.txt` installed, `ma-pre-start.sh` (beside
/// the boot file, or at the code dir's top) run, then the boot command, whose status is the
/// worker's exit code.
pub fn launcher(l: &Launch<'_>) -> Result<String, String> {
    let rt = l.rt;
    let boot = match (l.run_method, &rt.boot_file) {
        (Some("torchrun"), Some(file)) => torchrun(l, file),
        (Some("torchrun"), None) => {
            return Err(
                "MA_RUN_METHOD=torchrun runs a boot file (a .py in the code dir); this job has a boot command: put torchrun in the command instead"
                    .into(),
            );
        }
        (Some(other), _) if !other.is_empty() => {
            return Err(format!(
                "env.MA_RUN_METHOD: {other:?} is not supported here; use torchrun, or leave it out"
            ));
        }
        _ => rt
            .boot_command
            .clone()
            .ok_or("the job has no boot file and no boot command")?,
    };
    let mut s = String::new();
    s.push_str(&format!(
        "svc() {{ printf '%s %s\\n' '{SERVICE_TAG}' \"$*\"; }}\n"
    ));
    s.push_str("mkdir -p \"$MA_LOG_DIR\" 2>/dev/null || true\n");
    if let Some(code) = &rt.code_dir {
        let code = sh_quote(code);
        s.push_str(&format!("code={code}\n"));
        s.push_str("svc \"[init] code dir: $code\"\n");
        // Seed 8.11.5: pip-requirement.txt; the common name requirements.txt too.
        s.push_str(
            "for req in \"$code/pip-requirements.txt\" \"$code/pip-requirement.txt\" \"$code/requirements.txt\"; do\n\
             \x20 if [ -f \"$req\" ]; then\n\
             \x20   svc \"[pip] Python dependency packages are being installed. Import the following files: $req\"\n\
             \x20   python -m pip install --disable-pip-version-check --no-input -r \"$req\" 2>&1 || { svc \"[pip] installing $req failed\"; exit 1; }\n\
             \x20   svc \"[pip] Python dependency packages installed. Import the following files: $req\"\n\
             \x20   break\n\
             \x20 fi\n\
             done\n",
        );
        // ma-pre-start.sh beside the boot file, else at the code dir's top.
        let mut hooks = Vec::new();
        if let Some((dir, _)) = rt.boot_file.as_deref().and_then(|f| f.rsplit_once('/')) {
            hooks.push(format!("{dir}/ma-pre-start.sh"));
        }
        let top = format!(
            "{}/ma-pre-start.sh",
            rt.code_dir.as_deref().unwrap_or_default()
        );
        if !hooks.contains(&top) {
            hooks.push(top);
        }
        s.push_str("hook=\n");
        for h in hooks.iter().rev() {
            let h = sh_quote(h);
            s.push_str(&format!("if [ -f {h} ]; then hook={h}; fi\n"));
        }
        s.push_str(
            "if [ -n \"$hook\" ]; then\n\
             \x20 svc \"[ma-pre-start] running $hook\"\n\
             \x20 sh \"$hook\" || { rc=$?; svc \"[ma-pre-start] exited with $rc\"; exit $rc; }\n\
             fi\n",
        );
        s.push_str("cd \"$code\"\n");
    } else {
        s.push_str("cd \"$MA_HOME\"\n");
    }
    s.push_str("svc \"[run] training started\"\n");
    // Not `exec`: a boot command may be several commands. The script's status is the last
    // command's (128 + N when a signal N ended it).
    s.push_str(&format!("{boot}\n"));
    Ok(s)
}

/// The seed's torchrun line (§2.5): standalone on one node; static rendezvous at worker
/// 0 on several. `MA_EXTRA_TORCHRUN_PARAMS` goes in unquoted, as the seed's does.
fn torchrun(l: &Launch<'_>, boot_file: &str) -> String {
    let args: Vec<String> = l.rt.arguments.iter().map(|a| sh_quote(a)).collect();
    let tail = format!("{} {}", sh_quote(boot_file), args.join(" "));
    let nproc = "${MA_NUM_GPUS:-1}";
    let nproc = format!("$([ \"{nproc}\" -gt 0 ] 2>/dev/null && echo \"{nproc}\" || echo 1)");
    if l.nodes <= 1 {
        format!(
            "torchrun --standalone --nnodes=\"$MA_NUM_HOSTS\" --nproc_per_node={nproc} ${{MA_EXTRA_TORCHRUN_PARAMS:-}} {tail}"
        )
    } else {
        format!(
            "torchrun --nnodes=\"$MA_NUM_HOSTS\" --nproc_per_node={nproc} --node_rank=\"$VC_TASK_INDEX\" --master_addr=\"${{VC_WORKER_HOSTS%%,*}}\" --master_port=\"$MA_TORCHRUN_MASTER_PORT\" --rdzv_id={} --rdzv_backend=static ${{MA_EXTRA_TORCHRUN_PARAMS:-}} {tail}",
            sh_quote(l.job_id)
        )
    }
}

/// `s` as one shell word.
pub fn sh_quote(s: &str) -> String {
    runtime::shell_quote(s)
}

/// The values of one metric line and its step.
pub type MetricLine = (Vec<(String, f64)>, Option<i64>);

/// A metric line a job prints (`[metric] loss=0.25 accuracy=0.9 step=3`): its values and
/// step. Anything else, or a value that is not a finite number, is not a metric line.
pub fn parse_metric_line(line: &str) -> Option<MetricLine> {
    let rest = line.trim().strip_prefix("[metric]")?;
    let mut values = Vec::new();
    let mut step = None;
    for word in rest.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        {
            return None;
        }
        // `system/` names are the platform's (resource usage).
        if k.starts_with("system/") {
            return None;
        }
        if k == "step" {
            step = Some(v.parse::<i64>().ok()?);
            continue;
        }
        let v: f64 = v.parse().ok()?;
        if !v.is_finite() {
            return None;
        }
        values.push((k.to_string(), v));
    }
    (!values.is_empty() && values.len() <= 32).then_some((values, step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::runtime::Boot;
    use crate::training::schema::{Channel, ObtainedFrom};

    fn rt(boot_file: Option<&str>, boot_command: Option<&str>) -> Runtime {
        runtime::runtime(
            Boot {
                code_dir: Some("b/demo-code/"),
                boot_file,
                boot_command,
            },
            &[Channel {
                name: "data_url".into(),
                description: String::new(),
                obtained_from: ObtainedFrom::Hyperparameters,
            }],
            &[],
            &[],
        )
    }

    #[test]
    fn the_seeds_environment_per_worker() {
        let r = rt(Some("train.py"), None);
        let w = Worker {
            job_id: "j1",
            owner_id: "u1",
            rank: 1,
            nodes: 2,
            gpus: 0,
            hang_minutes: 30,
        };
        let user = BTreeMap::from([("MY".to_string(), "1".to_string())]);
        let env = environment(&w, &r, None, &user);
        assert_eq!(env["MA_HOME"], "/home/ma-user");
        assert_eq!(env["MA_JOB_DIR"], "/home/ma-user/modelarts/user-job-dir");
        assert_eq!(env["VC_TASK_INDEX"], "1");
        assert_eq!(env["MA_NUM_HOSTS"], "2");
        assert_eq!(
            env["VC_WORKER_HOSTS"],
            "ma-job-j1-worker-0.ma-job-j1,ma-job-j1-worker-1.ma-job-j1"
        );
        assert_eq!(env["MA_CURRENT_INSTANCE_NAME"], "ma-job-j1-worker-1");
        assert_eq!(env["MASTER_ADDR"], "ma-job-j1-worker-0.ma-job-j1");
        assert_eq!(
            (env["RANK"].as_str(), env["WORLD_SIZE"].as_str()),
            ("1", "2")
        );
        assert_eq!(env["MY"], "1");
        assert!(
            hosts_file("j1", 2)
                .contains("127.0.0.1\tma-job-j1-worker-1.ma-job-j1 ma-job-j1-worker-1\n")
        );
    }

    #[test]
    fn torchrun_lines_as_the_seed_writes_them() {
        let r = rt(Some("train.py"), None);
        let one = launcher(&Launch {
            rt: &r,
            run_method: Some("torchrun"),
            nodes: 1,
            job_id: "j1",
        })
        .unwrap();
        assert!(
            one.contains("torchrun --standalone --nnodes=\"$MA_NUM_HOSTS\" --nproc_per_node="),
            "{one}"
        );
        assert!(one.contains("${MA_EXTRA_TORCHRUN_PARAMS:-} /home/ma-user/modelarts/user-job-dir/demo-code/train.py --data_url=/home/ma-user/modelarts/inputs/data_url_0"), "{one}");
        let two = launcher(&Launch {
            rt: &r,
            run_method: Some("torchrun"),
            nodes: 2,
            job_id: "j1",
        })
        .unwrap();
        for part in [
            "--node_rank=\"$VC_TASK_INDEX\"",
            "--master_addr=\"${VC_WORKER_HOSTS%%,*}\"",
            "--master_port=\"$MA_TORCHRUN_MASTER_PORT\"",
            "--rdzv_id=j1 --rdzv_backend=static",
        ] {
            assert!(two.contains(part), "{part} in {two}");
        }
        // A boot command cannot go through torchrun; an unknown method is refused.
        let c = rt(None, Some("bash run.sh"));
        assert!(
            launcher(&Launch {
                rt: &c,
                run_method: Some("torchrun"),
                nodes: 1,
                job_id: "j"
            })
            .is_err()
        );
        assert!(
            launcher(&Launch {
                rt: &c,
                run_method: Some("msrun"),
                nodes: 1,
                job_id: "j"
            })
            .is_err()
        );
        let plain = launcher(&Launch {
            rt: &c,
            run_method: None,
            nodes: 1,
            job_id: "j",
        })
        .unwrap();
        assert!(
            plain.ends_with("\nbash run.sh --data_url=/home/ma-user/modelarts/inputs/data_url_0\n"),
            "{plain}"
        );
        assert!(plain.contains("requirements.txt") && plain.contains("ma-pre-start.sh"));
    }

    #[test]
    fn metric_lines() {
        assert_eq!(
            parse_metric_line("[metric] loss=0.25 acc=1 step=3"),
            Some((vec![("loss".into(), 0.25), ("acc".into(), 1.0)], Some(3)))
        );
        for bad in [
            "loss=1",
            "[metric]",
            "[metric] loss=x",
            "[metric] loss=NaN",
            "[metric] a b",
            "[metric] $x=1",
            "[metric] system/cpuUsage=1",
        ] {
            assert_eq!(parse_metric_line(bad), None, "{bad}");
        }
    }
}
