//! Saved profiles (`[profiles.<name>] url = "...", token = "..."`) and the resolution of the
//! server URL and token from flags, environment and profile.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// Where the server is when neither a flag, the environment nor a profile says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub url: Option<String>,
    pub token: Option<String>,
}

/// The server to talk to and the token to use (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub token: Option<String>,
}

/// `Some(trimmed)` when the value has something in it.
pub fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Flag or environment first (clap merges the two), then the saved profile, then the default
/// URL. Each of url and token is resolved on its own.
pub fn resolve(
    flag_url: Option<&str>,
    flag_token: Option<&str>,
    profile: Option<&Profile>,
) -> Endpoint {
    let url = nonempty(flag_url)
        .or_else(|| profile.and_then(|p| nonempty(p.url.as_deref())))
        .unwrap_or(DEFAULT_URL)
        .to_string();
    let token = nonempty(flag_token)
        .or_else(|| profile.and_then(|p| nonempty(p.token.as_deref())))
        .map(str::to_string);
    Endpoint { url, token }
}

/// `$ATELIER_CLI_CONFIG`, else `$XDG_CONFIG_HOME/atelier/config.toml`, else
/// `$HOME/.config/atelier/config.toml`. Empty variables count as unset, and (as the XDG spec
/// says) a relative `XDG_CONFIG_HOME` is ignored.
pub fn config_path_from(
    atelier_config: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = set(atelier_config) {
        return Some(p);
    }
    if let Some(p) = set(xdg_config_home).filter(|p| p.is_absolute()) {
        return Some(p.join("atelier").join("config.toml"));
    }
    set(home).map(|h| h.join(".config").join("atelier").join("config.toml"))
}

/// The config file path from the process environment.
pub fn config_path() -> Option<PathBuf> {
    config_path_from(
        std::env::var_os("ATELIER_CLI_CONFIG"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// Reads the whole document; a missing file is an empty one.
fn read_doc(path: &Path) -> anyhow::Result<toml::Table> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", path.display()))),
    };
    text.parse::<toml::Table>()
        .with_context(|| format!("invalid config file {}", path.display()))
}

fn profiles(doc: &toml::Table, path: &Path) -> anyhow::Result<Option<toml::Table>> {
    match doc.get("profiles") {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
        Some(_) => bail!(
            "invalid config file {}: `profiles` is not a table",
            path.display()
        ),
    }
}

/// Loads one profile; `Ok(None)` when the file or the profile does not exist.
pub fn load_profile(path: &Path, name: &str) -> anyhow::Result<Option<Profile>> {
    let doc = read_doc(path)?;
    let Some(all) = profiles(&doc, path)? else {
        return Ok(None);
    };
    let Some(entry) = all.get(name) else {
        return Ok(None);
    };
    let Some(table) = entry.as_table() else {
        bail!(
            "invalid config file {}: profile {name:?} is not a table",
            path.display()
        );
    };
    let field = |key: &str| -> anyhow::Result<Option<String>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!(
                "invalid config file {}: profiles.{name}.{key} is not a string",
                path.display()
            ),
        }
    };
    Ok(Some(Profile {
        url: field("url")?,
        token: field("token")?,
    }))
}

/// Adds or replaces one profile, keeping everything else in the file.
pub fn save_profile(path: &Path, name: &str, profile: &Profile) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("the profile name must not be empty");
    }
    let mut doc = read_doc(path)?;
    let mut all = match profiles(&doc, path)? {
        Some(all) => all,
        None if doc.is_empty() => toml::Table::new(),
        None => {
            // Never write profiles into a file that holds something else (a server
            // configuration, say, which would then no longer load).
            let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
            bail!(
                "{} does not look like an atelier client config (it has {} but no [profiles]); point ATELIER_CLI_CONFIG at another file",
                path.display(),
                keys.join(", ")
            );
        }
    };
    let mut entry = toml::Table::new();
    if let Some(url) = &profile.url {
        entry.insert("url".into(), toml::Value::String(url.clone()));
    }
    if let Some(token) = &profile.token {
        entry.insert("token".into(), toml::Value::String(token.clone()));
    }
    all.insert(name.to_string(), toml::Value::Table(entry));
    doc.insert("profiles".into(), toml::Value::Table(all));
    write_doc(path, &doc)
}

/// Removes one profile; `Ok(false)` when there was none.
pub fn remove_profile(path: &Path, name: &str) -> anyhow::Result<bool> {
    let mut doc = read_doc(path)?;
    let Some(mut all) = profiles(&doc, path)? else {
        return Ok(false);
    };
    if all.remove(name).is_none() {
        return Ok(false);
    }
    doc.insert("profiles".into(), toml::Value::Table(all));
    write_doc(path, &doc)?;
    Ok(true)
}

fn write_doc(path: &Path, doc: &toml::Table) -> anyhow::Result<()> {
    let text = toml::to_string(doc).context("cannot serialize the config file")?;
    write_atomic(path, text.as_bytes())
}

/// Writes `path` with mode 0600 through a temporary file in the same directory and a rename, so
/// a reader never sees half a file and the token is never readable by others. Missing parent
/// directories are created with mode 0700.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("invalid config path {}", path.display()))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let tmp = dir.join(tmp_name);

    let result = (|| -> anyhow::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        // The umask can only remove bits, but be explicit anyway.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set permissions on {}", tmp.display()))?;
        f.write_all(contents)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename durable; not fatal if the directory cannot be synced.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!("atelier-cli-test-{}", uuid::Uuid::new_v4()));
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn ok<T>(r: anyhow::Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn round_trip_modes_and_other_profiles_kept() {
        let tmp = TempDir::new();
        let path = tmp.0.join("nested").join("atelier").join("config.toml");
        assert_eq!(ok(load_profile(&path, "default")), None);
        assert!(!ok(remove_profile(&path, "default")));

        let a = Profile {
            url: Some("http://a:8000".into()),
            token: Some("tok-a".into()),
        };
        let b = Profile {
            url: Some("http://b:9000".into()),
            token: Some("tok \"b\" = 1".into()),
        };
        ok(save_profile(&path, "default", &a));
        ok(save_profile(&path, "work.prod", &b));

        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.0.join("nested")), 0o700);
        assert_eq!(mode(&tmp.0.join("nested").join("atelier")), 0o700);

        assert_eq!(ok(load_profile(&path, "default")), Some(a.clone()));
        assert_eq!(ok(load_profile(&path, "work.prod")), Some(b.clone()));
        assert_eq!(ok(load_profile(&path, "other")), None);

        let text = ok(fs::read_to_string(&path).map_err(anyhow::Error::from));
        assert!(text.contains("[profiles.default]"), "{text}");
        assert!(text.contains("url = \"http://a:8000\""), "{text}");

        // Overwrite keeps the mode and the other profile.
        let a2 = Profile {
            url: Some("http://a2".into()),
            token: Some("tok-a2".into()),
        };
        ok(save_profile(&path, "default", &a2));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(ok(load_profile(&path, "default")), Some(a2));
        assert_eq!(ok(load_profile(&path, "work.prod")), Some(b.clone()));

        assert!(ok(remove_profile(&path, "default")));
        assert!(!ok(remove_profile(&path, "default")));
        assert_eq!(ok(load_profile(&path, "default")), None);
        assert_eq!(ok(load_profile(&path, "work.prod")), Some(b));
        assert_eq!(mode(&path), 0o600);

        // No temporary files are left behind.
        let leftovers: Vec<_> =
            ok(fs::read_dir(path.parent().unwrap_or(&tmp.0)).map_err(anyhow::Error::from))
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
        assert_eq!(leftovers, vec![OsString::from("config.toml")]);
    }

    #[test]
    fn existing_loose_file_is_tightened_and_other_keys_kept() {
        let tmp = TempDir::new();
        ok(fs::create_dir_all(&tmp.0).map_err(anyhow::Error::from));
        let path = tmp.0.join("config.toml");
        ok(
            fs::write(&path, "editor = \"vi\"\n[profiles.x]\nurl = \"http://x\"\n")
                .map_err(anyhow::Error::from),
        );
        ok(
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .map_err(anyhow::Error::from),
        );
        ok(save_profile(
            &path,
            "default",
            &Profile {
                url: Some("http://d".into()),
                token: Some("t".into()),
            },
        ));
        assert_eq!(mode(&path), 0o600);
        let text = ok(fs::read_to_string(&path).map_err(anyhow::Error::from));
        assert!(text.contains("editor = \"vi\""), "{text}");
        assert_eq!(
            ok(load_profile(&path, "x")),
            Some(Profile {
                url: Some("http://x".into()),
                token: None
            })
        );
    }

    #[test]
    fn server_config_is_never_written() {
        let tmp = TempDir::new();
        ok(fs::create_dir_all(&tmp.0).map_err(anyhow::Error::from));
        let path = tmp.0.join("server.toml");
        let server = "data_dir = \"/var/lib/atelier\"\nhttp_addr = \"0.0.0.0:8000\"\n";
        ok(fs::write(&path, server).map_err(anyhow::Error::from));
        let e = save_profile(&path, "default", &Profile::default()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("ATELIER_CLI_CONFIG")));
        assert_eq!(ok(load_profile(&path, "default")), None);
        assert!(!ok(remove_profile(&path, "default")));
        let text = ok(fs::read_to_string(&path).map_err(anyhow::Error::from));
        assert_eq!(text, server);
    }

    #[test]
    fn invalid_files_are_errors() {
        let tmp = TempDir::new();
        ok(fs::create_dir_all(&tmp.0).map_err(anyhow::Error::from));
        let path = tmp.0.join("config.toml");
        ok(fs::write(&path, "this is = = not toml").map_err(anyhow::Error::from));
        assert!(load_profile(&path, "default").is_err());
        assert!(save_profile(&path, "default", &Profile::default()).is_err());
        ok(fs::write(&path, "profiles = 3").map_err(anyhow::Error::from));
        assert!(load_profile(&path, "default").is_err());
        ok(fs::write(&path, "[profiles.default]\ntoken = 5").map_err(anyhow::Error::from));
        assert!(load_profile(&path, "default").is_err());
    }

    #[test]
    fn config_path_precedence() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(
            config_path_from(s("/c/a.toml"), s("/xdg"), s("/home/u")),
            Some(PathBuf::from("/c/a.toml"))
        );
        assert_eq!(
            config_path_from(None, s("/xdg"), s("/home/u")),
            Some(PathBuf::from("/xdg/atelier/config.toml"))
        );
        assert_eq!(
            config_path_from(s(""), s(""), s("/home/u")),
            Some(PathBuf::from("/home/u/.config/atelier/config.toml"))
        );
        assert_eq!(
            config_path_from(None, s("relative"), s("/home/u")),
            Some(PathBuf::from("/home/u/.config/atelier/config.toml"))
        );
        assert_eq!(config_path_from(None, None, None), None);
    }

    #[test]
    fn resolution_precedence() {
        let p = Profile {
            url: Some("http://profile:1".into()),
            token: Some("ptok".into()),
        };
        // Flag/env wins over the profile.
        assert_eq!(
            resolve(Some("http://flag:2"), Some("ftok"), Some(&p)),
            Endpoint {
                url: "http://flag:2".into(),
                token: Some("ftok".into())
            }
        );
        // Each value falls back on its own.
        assert_eq!(
            resolve(None, Some("ftok"), Some(&p)),
            Endpoint {
                url: "http://profile:1".into(),
                token: Some("ftok".into())
            }
        );
        assert_eq!(
            resolve(Some("http://flag:2"), None, Some(&p)),
            Endpoint {
                url: "http://flag:2".into(),
                token: Some("ptok".into())
            }
        );
        // Empty values count as unset.
        assert_eq!(
            resolve(Some(""), Some("  "), Some(&p)),
            Endpoint {
                url: "http://profile:1".into(),
                token: Some("ptok".into())
            }
        );
        // Nothing anywhere: default URL, no token.
        assert_eq!(
            resolve(None, None, None),
            Endpoint {
                url: DEFAULT_URL.into(),
                token: None
            }
        );
        assert_eq!(
            resolve(None, None, Some(&Profile::default())),
            Endpoint {
                url: DEFAULT_URL.into(),
                token: None
            }
        );
    }
}
