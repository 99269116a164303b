//! The Python virtualenv that provides `jupyter lab` to process-backend notebooks: created on
//! first need under the data dir (or wherever settings point), once, even when several
//! notebooks ask at the same time. It is built in a temporary directory and renamed into
//! place, so a failed or interrupted install never leaves a half-made environment behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::sync::Mutex;

pub struct JupyterEnv {
    venv: PathBuf,
    python: String,
    requirement: String,
    lock: Mutex<()>,
}

impl JupyterEnv {
    pub fn new(venv: PathBuf, python: String, requirement: String) -> Self {
        JupyterEnv {
            venv,
            python,
            requirement,
            lock: Mutex::new(()),
        }
    }

    pub fn venv(&self) -> &Path {
        &self.venv
    }

    pub fn jupyter(&self) -> PathBuf {
        self.venv.join("bin").join("jupyter")
    }

    pub fn is_ready(&self) -> bool {
        self.venv.join("bin").join("jupyter-lab").is_file()
    }

    /// Makes sure the environment exists. `Ok(true)` when this call had to build it.
    pub async fn ensure(&self) -> anyhow::Result<bool> {
        if self.is_ready() {
            return Ok(false);
        }
        let _guard = self.lock.lock().await;
        if self.is_ready() {
            return Ok(false);
        }
        if self.venv.exists() {
            bail!(
                "{} exists but holds no jupyter-lab; remove it or point backend.jupyter_venv elsewhere",
                self.venv.display()
            );
        }
        let parent = self
            .venv
            .parent()
            .context("virtualenv path has no parent")?;
        tokio::fs::create_dir_all(parent).await?;
        let tmp = parent.join(format!(".jupyter-venv-{}", uuid::Uuid::new_v4()));
        let result = self.build(&tmp).await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        result?;
        tokio::fs::rename(&tmp, &self.venv)
            .await
            .with_context(|| format!("moving the new virtualenv to {}", self.venv.display()))?;
        Ok(true)
    }

    async fn build(&self, dir: &Path) -> anyhow::Result<()> {
        tracing::info!(venv = %self.venv.display(), requirement = %self.requirement, "creating the JupyterLab virtualenv");
        run(Command::new(&self.python).arg("-m").arg("venv").arg(dir))
            .await
            .with_context(|| {
                format!("{} -m venv (is Python 3 with venv installed?)", self.python)
            })?;
        run(Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
            ])
            .arg(&self.requirement))
        .await
        .with_context(|| format!("pip install {}", self.requirement))?;
        // A virtualenv's scripts name their interpreter by absolute path; it moves after this,
        // so rewrite those shebangs to the final location.
        fix_shebangs(dir, &self.venv).await?;
        Ok(())
    }
}

async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        bail!(
            "exited with {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

async fn fix_shebangs(tmp: &Path, final_dir: &Path) -> anyhow::Result<()> {
    let from = tmp.to_string_lossy().into_owned();
    let to = final_dir.to_string_lossy().into_owned();
    let bin = tmp.join("bin");
    let mut entries = tokio::fs::read_dir(&bin).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if !entry.file_type().await?.is_file() {
            continue;
        }
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        if !bytes.starts_with(b"#!") {
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.contains(&from) {
            tokio::fs::write(&path, text.replace(&from, &to)).await?;
        }
    }
    // pyvenv.cfg and activate scripts name the directory too.
    for name in [
        "pyvenv.cfg",
        "bin/activate",
        "bin/activate.csh",
        "bin/activate.fish",
    ] {
        let path = tmp.join(name);
        if let Ok(text) = tokio::fs::read_to_string(&path).await
            && text.contains(&from)
        {
            tokio::fs::write(&path, text.replace(&from, &to)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_interpreter_is_named_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("atelier-env-{}", uuid::Uuid::new_v4()));
        let env = JupyterEnv::new(
            dir.join("venv"),
            "/nonexistent/python3".into(),
            "jupyterlab".into(),
        );
        assert!(!env.is_ready());
        let err = format!("{:#}", env.ensure().await.unwrap_err());
        assert!(err.contains("/nonexistent/python3"), "{err}");
        assert!(!dir.join("venv").exists());
        let leftovers = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "no half-made environment stays behind");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_directory_without_jupyter_is_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("atelier-env-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("venv")).unwrap();
        std::fs::write(dir.join("venv/mine.txt"), "keep").unwrap();
        let env = JupyterEnv::new(dir.join("venv"), "python3".into(), "jupyterlab".into());
        let err = format!("{:#}", env.ensure().await.unwrap_err());
        assert!(err.contains("holds no jupyter-lab"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("venv/mine.txt")).unwrap(),
            "keep"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
