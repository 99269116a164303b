//! `atelier-notebook-runtime`: supervises one notebook's Jupyter server.
//!
//! Spawned by the gateway as `atelier-notebook-runtime --spec <spec.json>`
//! (and later PID 1 inside notebook containers). It starts the child from
//! the spec, acts as child subreaper, reaps every zombie, forwards
//! SIGTERM/SIGINT/SIGHUP as a graceful stop of the child's process group,
//! tears down all remaining descendants and keeps a status file up to date.

// Tests may spawn freely and read the environment (clippy.toml forbids both elsewhere).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes one line to stderr, prefixed with the program name. Write errors
/// are ignored (stderr is usually a log file that may be full or gone).
macro_rules! log {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(
            ::std::io::stderr(),
            "atelier-notebook-runtime: {}",
            ::std::format_args!($($arg)*)
        );
    }};
}

// The agent's tasks belong to one SSH connection or session each and end with it; the
// runtime has no shutdown to wait for them (it escalates to SIGKILL).
#[allow(clippy::disallowed_methods)]
mod agent;
mod children;
mod reap;
mod signals;
use atelier_notebook_runtime::spec;
mod status;
mod supervise;
mod user;

const USAGE: &str = "\
usage: atelier-notebook-runtime --spec <path-to-spec.json>
       atelier-notebook-runtime --version | --help

Starts the program described by the JSON spec, supervises it, reaps zombies,
stops it gracefully on SIGTERM/SIGINT/SIGHUP and records its state in the
spec's status_file.

spec fields: argv (required, non-empty), env, cwd, log_file, status_file,
             ssh, user, forward, connect_back (dial the gateway and serve
             its streams),
             grace_seconds (optional, default 10)";

/// Exit code for usage errors and invalid specs.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Run(PathBuf),
    Version,
    Help,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    let mut spec: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let value = if text == "--help" || text == "-h" {
            return Ok(Cli::Help);
        } else if text == "--version" || text == "-V" {
            return Ok(Cli::Version);
        } else if text == "--spec" {
            match args.next() {
                Some(value) => value,
                None => return Err("--spec needs a path".to_string()),
            }
        } else if let Some(value) = arg.as_bytes().strip_prefix(b"--spec=") {
            OsStr::from_bytes(value).to_os_string()
        } else {
            return Err(format!("unexpected argument {text:?}"));
        };
        if value.is_empty() {
            return Err("--spec needs a path".to_string());
        }
        if spec.replace(PathBuf::from(value)).is_some() {
            return Err("--spec given more than once".to_string());
        }
    }
    spec.map(Cli::Run)
        .ok_or_else(|| "missing --spec <path>".to_string())
}

fn print_stdout(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn main() -> ExitCode {
    match parse_args(std::env::args_os().skip(1)) {
        Err(msg) => {
            log!("{msg}");
            let _ = writeln!(std::io::stderr(), "{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(Cli::Help) => {
            print_stdout(USAGE);
            ExitCode::SUCCESS
        }
        Ok(Cli::Version) => {
            print_stdout(concat!(
                "atelier-notebook-runtime ",
                env!("CARGO_PKG_VERSION")
            ));
            ExitCode::SUCCESS
        }
        Ok(Cli::Run(path)) => match spec::load(&path) {
            Err(e) => {
                log!("{e:#}");
                ExitCode::from(EXIT_USAGE)
            }
            Ok(spec) => match user::become_user(spec.user.as_ref()) {
                Ok(()) => ExitCode::from(supervise::run(&spec)),
                Err(e) => {
                    log!("{e:#}");
                    ExitCode::from(1)
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_spec_forms() {
        assert_eq!(parse(&["--spec", "/a"]), Ok(Cli::Run("/a".into())));
        assert_eq!(parse(&["--spec=/b"]), Ok(Cli::Run("/b".into())));
        assert_eq!(parse(&["--version"]), Ok(Cli::Version));
        assert_eq!(parse(&["--help"]), Ok(Cli::Help));
    }

    #[test]
    fn rejects_bad_args() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--spec"]).is_err());
        assert!(parse(&["--spec="]).is_err());
        assert!(parse(&["--spec", "a", "--spec", "b"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["extra"]).is_err());
    }
}
