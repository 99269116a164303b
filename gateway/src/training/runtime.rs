//! The paths and arguments inside a training job (spec/training.md §2.4, §2.6, §2.7): one
//! function from an algorithm to what its job will see, for the "preview runtime
//! environment" now and for the job runner later, so that the two cannot disagree.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::schema::{Channel, Hyperparameter, ObtainedFrom};

/// `MA_HOME`.
pub const HOME: &str = "/home/ma-user";
/// `MA_MOUNT_PATH`: algorithm, inputs, outputs and logs.
pub const MOUNT_PATH: &str = "/home/ma-user/modelarts";
/// `MA_JOB_DIR`: the code dir lands in `<MA_JOB_DIR>/<its last folder>`.
pub const JOB_DIR: &str = "/home/ma-user/modelarts/user-job-dir";
/// `MA_LOG_DIR`.
pub const LOG_DIR: &str = "/home/ma-user/modelarts/log";

/// An input's local path (`inputs/<name>_0`, by symmetry with outputs).
pub fn input_path(name: &str) -> String {
    format!("{MOUNT_PATH}/inputs/{name}_0")
}

/// An output's local path (`outputs/<name>_0`, seed 8.8).
pub fn output_path(name: &str) -> String {
    format!("{MOUNT_PATH}/outputs/{name}_0")
}

/// Where a code dir (an object-storage folder `…/<last>/`) lands: `<MA_JOB_DIR>/<last>`, or
/// `<MA_JOB_DIR>/code` for a bucket's root.
pub fn code_path(code_dir_prefix: &str) -> String {
    let last = code_dir_prefix
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("code");
    format!("{JOB_DIR}/{last}")
}

/// A hyperparameter value as an argument (`--lr=0.01`): strings as they are, numbers and
/// booleans as JSON writes them.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One channel as a job sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelView {
    pub name: String,
    pub local_path: String,
    pub obtained_from: ObtainedFrom,
}

/// What a job of an algorithm sees (`GET /v1/algorithms/{algo}/runtime`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runtime {
    /// `MA_JOB_DIR`.
    pub job_dir: String,
    /// The code dir's local copy (container algorithms with a code dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_dir: Option<String>,
    /// The boot file's local path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_file: Option<String>,
    /// The command the job runs (`/bin/sh -c`), arguments appended; none for Wasm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_command: Option<String>,
    /// The arguments the platform adds: channels obtained from hyperparameters, then the
    /// hyperparameters that have a default (a job may set or, unless required, drop them).
    pub arguments: Vec<String>,
    pub inputs: Vec<ChannelView>,
    pub outputs: Vec<ChannelView>,
    /// The environment the platform sets (channels obtained from environment variables
    /// among it); a job adds `MA_VJ_NAME`, `VC_TASK_INDEX`, … when it runs.
    pub environment: BTreeMap<String, String>,
    pub log_dir: String,
}

/// What the runtime is computed from.
pub struct Boot<'a> {
    /// The code dir's object-storage prefix (`bucket/path/demo-code/`).
    pub code_dir: Option<&'a str>,
    pub boot_file: Option<&'a str>,
    pub boot_command: Option<&'a str>,
}

pub fn runtime(
    boot: Boot<'_>,
    inputs: &[Channel],
    outputs: &[Channel],
    hps: &[Hyperparameter],
) -> Runtime {
    let code_dir = boot.code_dir.map(code_path);
    let boot_file = match (&code_dir, boot.boot_file) {
        (Some(dir), Some(f)) => Some(format!("{dir}/{f}")),
        _ => None,
    };
    let view = |c: &Channel, path: String| ChannelView {
        name: c.name.clone(),
        local_path: path,
        obtained_from: c.obtained_from,
    };
    let inputs: Vec<ChannelView> = inputs
        .iter()
        .map(|c| view(c, input_path(&c.name)))
        .collect();
    let outputs: Vec<ChannelView> = outputs
        .iter()
        .map(|c| view(c, output_path(&c.name)))
        .collect();
    let mut arguments = Vec::new();
    let mut environment = BTreeMap::from([
        ("MA_HOME".to_string(), HOME.to_string()),
        ("MA_JOB_DIR".to_string(), JOB_DIR.to_string()),
        ("MA_MOUNT_PATH".to_string(), MOUNT_PATH.to_string()),
        ("MA_LOG_DIR".to_string(), LOG_DIR.to_string()),
    ]);
    if let Some(dir) = &code_dir {
        environment.insert("WORKSPACE".into(), dir.clone());
    }
    for c in inputs.iter().chain(&outputs) {
        match c.obtained_from {
            ObtainedFrom::Hyperparameters => {
                arguments.push(format!("--{}={}", c.name, c.local_path));
            }
            ObtainedFrom::EnvironmentVariables => {
                environment.insert(c.name.clone(), c.local_path.clone());
            }
        }
    }
    for h in hps {
        if let Some(d) = &h.default {
            arguments.push(format!("--{}={}", h.name, value_text(d)));
        }
    }
    let boot_command = match (&boot_file, boot.boot_command) {
        // The folder and file names are the user's: one shell word, whatever they hold.
        (Some(f), _) => Some(format!("python {}", shell_quote(f))),
        (None, Some(c)) => Some(c.to_string()),
        (None, None) => None,
    }
    .map(|c| {
        let mut line = c;
        for a in &arguments {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        line
    });
    Runtime {
        job_dir: JOB_DIR.to_string(),
        code_dir,
        boot_file,
        boot_command,
        arguments,
        inputs,
        outputs,
        environment,
        log_dir: LOG_DIR.to_string(),
    }
}

/// `s` as one shell word: as it is when plain, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_=./,:+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seeds_layout() {
        let inputs = [Channel {
            name: "data_url".into(),
            description: String::new(),
            obtained_from: ObtainedFrom::Hyperparameters,
        }];
        let outputs = [Channel {
            name: "train_url".into(),
            description: String::new(),
            obtained_from: ObtainedFrom::EnvironmentVariables,
        }];
        let hps: Vec<Hyperparameter> = serde_json::from_value(json!([
            {"name": "lr", "type": "Float", "default": 0.01},
            {"name": "opt", "type": "String", "default": "a b"},
            {"name": "epochs", "type": "Integer", "required": true}
        ]))
        .unwrap();
        let r = runtime(
            Boot {
                code_dir: Some("training-test/demo-code/"),
                boot_file: Some("train.py"),
                boot_command: None,
            },
            &inputs,
            &outputs,
            &hps,
        );
        assert_eq!(
            r.code_dir.as_deref(),
            Some("/home/ma-user/modelarts/user-job-dir/demo-code")
        );
        assert_eq!(
            r.boot_command.as_deref(),
            Some(
                "python /home/ma-user/modelarts/user-job-dir/demo-code/train.py \
                 --data_url=/home/ma-user/modelarts/inputs/data_url_0 --lr=0.01 '--opt=a b'"
            )
        );
        assert_eq!(
            r.environment["train_url"],
            "/home/ma-user/modelarts/outputs/train_url_0"
        );
        assert_eq!(r.environment["MA_JOB_DIR"], JOB_DIR);
        assert_eq!(code_path(""), "/home/ma-user/modelarts/user-job-dir/code");
        // A hostile folder or file name stays one word.
        let r = runtime(
            Boot {
                code_dir: Some("b/$(reboot) x/"),
                boot_file: Some("it's.py"),
                boot_command: None,
            },
            &[],
            &[],
            &[],
        );
        assert_eq!(
            r.boot_command.as_deref(),
            Some(r"python '/home/ma-user/modelarts/user-job-dir/$(reboot) x/it'\''s.py'")
        );
    }
}
