//! Reading from stdin: tokens and secrets (hidden when stdin is a terminal) and typed
//! confirmations.

use std::io::{BufRead, IsTerminal};

use super::api::CliError;
use super::output::err;

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads one line from stdin, without its line ending. `None` at end of input.
fn read_line() -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// Reads the API token: prompted without echo when stdin is a terminal, else one line of stdin.
pub async fn read_token() -> Result<String, CliError> {
    read_hidden(
        "Paste an API token (input is hidden); create one with `atelier token create`.",
        "Token: ",
        "no token given: pass --token, set ATELIER_TOKEN, or write it on stdin",
    )
    .await
}

/// Reads a secret: prompted (`intro`, then `label`) without echo when stdin is a terminal,
/// else one line of stdin; `missing` is the error when nothing comes.
pub async fn read_hidden(
    intro: &'static str,
    label: &'static str,
    missing: &'static str,
) -> Result<String, CliError> {
    let secret = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        if stdin_is_terminal() {
            err(intro);
            // From the terminal, with echo off (rpassword restores it, also on Ctrl-C).
            rpassword::prompt_password(label).map(Some)
        } else {
            read_line()
        }
    })
    .await
    .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?
    .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
    match secret.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(CliError::other(missing)),
    }
}

/// Shows `prompt` on stderr and reads one line typed by the user (`None` at end of input).
pub async fn ask(prompt: String) -> Result<Option<String>, CliError> {
    tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        let _ = std::io::Write::write_all(&mut stderr, prompt.as_bytes());
        let _ = std::io::Write::flush(&mut stderr);
        read_line()
    })
    .await
    .map_err(|e| CliError::other(format!("cannot read the answer: {e}")))?
    .map_err(|e| CliError::other(format!("cannot read the answer from stdin: {e}")))
}
