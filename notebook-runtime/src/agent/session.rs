//! One `session` channel: collects `pty-req` and `env`, then runs a shell, a command or the
//! sftp subsystem, and relays input, output, window changes, signals and the exit status.
//!
//! ```text
//! channel ──Data/Eof──► feed task ──► stdin pipe | pty master
//! stdout pipe | pty master ──► pump task ──► Data        (stderr pipe ──► ExtendedData 1)
//! reaper ──wait status──► finish: output drained → eof, exit-status | exit-signal, close
//! ```

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Ctx;
use super::pty::{self, Master, Size};
use crate::children::{self, WaitStatus};

/// Input chunks queued for a program before the channel stops reading (see `feed`).
const INPUT_QUEUE: usize = 256;
/// Read size for program output; one SSH packet.
const CHUNK: usize = 32 * 1024;
/// After the shell of a terminal session exits, how long output is still collected from
/// programs it left behind before the channel closes (sshd does the same).
const PTY_DRAIN: Duration = Duration::from_millis(300);

struct PtyRequest {
    term: String,
    size: Size,
    modes: Vec<(russh::Pty, u32)>,
}

async fn reply(handle: &Handle, id: ChannelId, ok: bool) {
    let _ = if ok {
        handle.channel_success(id).await
    } else {
        handle.channel_failure(id).await
    };
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Serves one session channel until it closes.
pub async fn run(mut channel: Channel<Msg>, handle: Handle, ctx: Arc<Ctx>) {
    let id = channel.id();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut pty: Option<PtyRequest> = None;
    loop {
        let Some(msg) = channel.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = Some(PtyRequest {
                    term,
                    size: Size {
                        cols: col_width,
                        rows: row_height,
                        px_width: pix_width,
                        px_height: pix_height,
                    },
                    modes: terminal_modes,
                });
                reply(&handle, id, true).await;
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                let ok = valid_env_name(&variable_name) && !variable_value.contains('\0');
                if ok {
                    env.push((variable_name, variable_value));
                }
                reply(&handle, id, ok).await;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(p) = &mut pty {
                    p.size = Size {
                        cols: col_width,
                        rows: row_height,
                        px_width: pix_width,
                        px_height: pix_height,
                    };
                }
            }
            ChannelMsg::RequestShell { .. } => {
                return execute(channel, handle, ctx, None, env, pty).await;
            }
            ChannelMsg::Exec { command, .. } => {
                return execute(channel, handle, ctx, Some(command), env, pty).await;
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => {
                reply(&handle, id, true).await;
                super::sftp::serve(channel.into_stream(), ctx.cwd.clone()).await;
                let _ = handle.exit_status_request(id, 0).await;
                let _ = handle.eof(id).await;
                let _ = handle.close(id).await;
                return;
            }
            ChannelMsg::RequestSubsystem { .. }
            | ChannelMsg::RequestX11 { .. }
            | ChannelMsg::AgentForward { .. } => reply(&handle, id, false).await,
            ChannelMsg::Close => return,
            _ => {}
        }
    }
}

enum Input {
    Data(Bytes),
    Eof,
}

/// A started program.
struct Proc {
    pgid: libc::pid_t,
    stdin: Stdin,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    exit: oneshot::Receiver<WaitStatus>,
}

enum Stdin {
    Pipe(tokio::process::ChildStdin),
    Pty(Arc<Master>),
}

fn pipe<T>(end: Option<T>) -> std::io::Result<T> {
    end.ok_or_else(|| std::io::Error::other("missing pipe"))
}

fn spawn(
    ctx: &Ctx,
    command: Option<&[u8]>,
    env: &[(String, String)],
    pty: Option<&PtyRequest>,
) -> std::io::Result<Proc> {
    let mut cmd = Command::new(&ctx.shell);
    match command {
        Some(c) => {
            cmd.arg("-c").arg(OsStr::from_bytes(c));
        }
        None => {
            // A login shell, as sshd starts it: argv[0] is the shell's name with a dash.
            let name = std::path::Path::new(&ctx.shell)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".into());
            cmd.arg0(format!("-{name}"));
        }
    }
    cmd.env_clear().envs(&ctx.env).envs(env.iter().cloned());
    let cwd = if ctx.cwd.is_dir() {
        ctx.cwd.as_path()
    } else {
        std::path::Path::new("/")
    };
    cmd.current_dir(cwd);
    let opened = match pty {
        Some(p) => {
            cmd.env("TERM", &p.term);
            let opened = pty::open(p.size, &p.modes)?;
            cmd.stdin(Stdio::from(opened.slave.try_clone()?))
                .stdout(Stdio::from(opened.slave.try_clone()?))
                .stderr(Stdio::from(opened.slave.try_clone()?));
            Some(opened)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let with_tty = opened.is_some();
    // SAFETY: only async-signal-safe calls (sigprocmask, signal, setsid, ioctl).
    unsafe {
        cmd.pre_exec(move || {
            crate::signals::reset_for_exec()?;
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, exit) = children::spawn(&mut cmd)?;
    // Drop our copies of the slave side, so reading the master ends when the program's do.
    drop(cmd);
    let pgid = libc::pid_t::try_from(child.id()).unwrap_or(0);
    match opened {
        Some(p) => {
            drop(p.slave);
            let master = Arc::new(Master::new(p.master)?);
            Ok(Proc {
                pgid,
                stdin: Stdin::Pty(master),
                stdout: None,
                stderr: None,
                exit,
            })
        }
        None => Ok(Proc {
            pgid,
            stdin: Stdin::Pipe(tokio::process::ChildStdin::from_std(pipe(
                child.stdin.take(),
            )?)?),
            stdout: Some(tokio::process::ChildStdout::from_std(pipe(
                child.stdout.take(),
            )?)?),
            stderr: Some(tokio::process::ChildStderr::from_std(pipe(
                child.stderr.take(),
            )?)?),
            exit,
        }),
    }
}

/// Writes channel input to the program; after a write error (it stopped reading) the rest
/// is dropped.
async fn feed(stdin: Stdin, mut input: mpsc::Receiver<Input>) {
    match stdin {
        Stdin::Pipe(mut pipe) => {
            while let Some(item) = input.recv().await {
                match item {
                    Input::Data(data) => {
                        if pipe.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Input::Eof => break,
                }
            }
            drop(pipe);
        }
        Stdin::Pty(master) => {
            while let Some(item) = input.recv().await {
                if let Input::Data(data) = item
                    && master.write_all(&data).await.is_err()
                {
                    break;
                }
            }
        }
    }
    while input.recv().await.is_some() {}
}

async fn pump<R: AsyncRead + Unpin>(mut from: R, to: Arc<ChannelWriteHalf<Msg>>, ext: Option<u32>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        let sent = match ext {
            None => to.data_bytes(data).await,
            Some(code) => to.extended_data_bytes(code, data).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn pump_pty(master: Arc<Master>, to: Arc<ChannelWriteHalf<Msg>>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match master.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to
            .data_bytes(Bytes::copy_from_slice(&buf[..n]))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn sig_number(sig: &Sig) -> Option<libc::c_int> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            "WINCH" => libc::SIGWINCH,
            _ => return None,
        },
    })
}

fn sig_of(number: libc::c_int) -> Sig {
    match number {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        libc::SIGUSR2 => Sig::Custom("USR2".into()),
        other => Sig::Custom(crate::signals::name(other).trim_start_matches("SIG").into()),
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: plain syscall; the group is the session our child leads.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Starts the program and relays the channel until both sides are done.
async fn execute(
    channel: Channel<Msg>,
    handle: Handle,
    ctx: Arc<Ctx>,
    command: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    pty: Option<PtyRequest>,
) {
    let id = channel.id();
    let proc = match spawn(&ctx, command.as_deref(), &env, pty.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            reply(&handle, id, false).await;
            let msg = format!("atelier: cannot start {}: {e}\r\n", ctx.shell);
            let _ = handle
                .extended_data(id, 1, Bytes::from(msg.into_bytes()))
                .await;
            let _ = handle.exit_status_request(id, 127).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
            return;
        }
    };
    reply(&handle, id, true).await;
    let (mut incoming, outgoing) = channel.split();
    let outgoing = Arc::new(outgoing);
    let pgid = proc.pgid;
    let master = match &proc.stdin {
        Stdin::Pty(m) => Some(m.clone()),
        Stdin::Pipe(_) => None,
    };
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    tokio::spawn(feed(proc.stdin, input_rx));

    let finish = {
        let outgoing = outgoing.clone();
        let master = master.clone();
        let handle = handle.clone();
        let stdout = proc.stdout;
        let stderr = proc.stderr;
        let exit = proc.exit;
        tokio::spawn(async move {
            let status = match (&master, stdout) {
                (Some(m), _) => {
                    let mut out = tokio::spawn(pump_pty(m.clone(), outgoing.clone()));
                    let status = exit.await;
                    if tokio::time::timeout(PTY_DRAIN, &mut out).await.is_err() {
                        out.abort();
                    }
                    status
                }
                (None, stdout) => {
                    let out = stdout.map(|o| tokio::spawn(pump(o, outgoing.clone(), None)));
                    let err = stderr.map(|e| tokio::spawn(pump(e, outgoing.clone(), Some(1))));
                    let status = exit.await;
                    if let Some(o) = out {
                        let _ = o.await;
                    }
                    if let Some(e) = err {
                        let _ = e.await;
                    }
                    status
                }
            };
            let _ = outgoing.eof().await;
            match status {
                Ok(s) if libc::WIFSIGNALED(s) => {
                    let _ = handle
                        .exit_signal_request(
                            id,
                            sig_of(libc::WTERMSIG(s)),
                            libc::WCOREDUMP(s),
                            String::new(),
                            String::new(),
                        )
                        .await;
                }
                Ok(s) => {
                    let code = if libc::WIFEXITED(s) {
                        libc::WEXITSTATUS(s)
                    } else {
                        255
                    };
                    let _ = outgoing.exit_status(code as u32).await;
                }
                // The runtime is shutting down; no status to report.
                Err(_) => {}
            }
            let _ = outgoing.close().await;
        })
    };

    while let Some(msg) = incoming.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                let _ = input_tx.send(Input::Data(data)).await;
            }
            ChannelMsg::Eof => {
                let _ = input_tx.send(Input::Eof).await;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(m) = &master {
                    let _ = pty::resize(
                        m.raw(),
                        Size {
                            cols: col_width,
                            rows: row_height,
                            px_width: pix_width,
                            px_height: pix_height,
                        },
                    );
                }
            }
            ChannelMsg::Signal { signal } => {
                if let Some(sig) = sig_number(&signal) {
                    signal_group(pgid, sig);
                }
            }
            ChannelMsg::Close => break,
            ChannelMsg::RequestPty { .. }
            | ChannelMsg::RequestShell { .. }
            | ChannelMsg::Exec { .. }
            | ChannelMsg::RequestSubsystem { .. }
            | ChannelMsg::RequestX11 { .. }
            | ChannelMsg::AgentForward { .. }
            | ChannelMsg::SetEnv { .. } => reply(&handle, id, false).await,
            _ => {}
        }
    }
    // The client closed the channel: hang up on the program, as closing a terminal does.
    if !finish.is_finished() {
        signal_group(pgid, libc::SIGHUP);
    }
}
