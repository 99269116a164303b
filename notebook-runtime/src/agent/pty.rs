//! Pseudo-terminals for interactive SSH sessions: open one with the client's size and
//! terminal modes, resize it, and read/write its master side from tokio.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use russh::Pty as Mode;
use tokio::io::unix::AsyncFd;

/// The master and slave ends of a new pseudo-terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// The window size as the client reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
    pub px_width: u32,
    pub px_height: u32,
}

fn winsize(size: Size) -> libc::winsize {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    libc::winsize {
        ws_row: clamp(size.rows),
        ws_col: clamp(size.cols),
        ws_xpixel: clamp(size.px_width),
        ws_ypixel: clamp(size.px_height),
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// Opens a pseudo-terminal of `size` with the client's terminal `modes` applied.
pub fn open(size: Size, modes: &[(Mode, u32)]) -> io::Result<Pty> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    let ws = winsize(size);
    // SAFETY: valid out pointers; name and termios may be NULL; winsize points to a value.
    cvt(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    })?;
    // SAFETY: openpty succeeded, so both are fresh descriptors we now own.
    let pty = unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    };
    set_cloexec(pty.master.as_raw_fd())?;
    set_cloexec(pty.slave.as_raw_fd())?;
    apply_modes(pty.slave.as_raw_fd(), modes)?;
    Ok(pty)
}

/// Tells the terminal (and so the foreground program, by SIGWINCH) its new size.
pub fn resize(master: RawFd, size: Size) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    cvt(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

fn apply_modes(fd: RawFd, modes: &[(Mode, u32)]) -> io::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    // SAFETY: termios is plain data, filled in by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    cvt(unsafe { libc::tcgetattr(fd, &mut t) })?;
    for &(mode, value) in modes {
        let on = value != 0;
        let cc = |t: &mut libc::termios, i: usize| {
            // 255 means "disabled" in the SSH encoding, as _POSIX_VDISABLE (0) here.
            t.c_cc[i] = if value == 255 {
                0
            } else {
                u8::try_from(value).unwrap_or(0)
            };
        };
        let flag = |field: &mut libc::tcflag_t, bit: libc::tcflag_t| {
            if on {
                *field |= bit;
            } else {
                *field &= !bit;
            }
        };
        match mode {
            Mode::VINTR => cc(&mut t, libc::VINTR),
            Mode::VQUIT => cc(&mut t, libc::VQUIT),
            Mode::VERASE => cc(&mut t, libc::VERASE),
            Mode::VKILL => cc(&mut t, libc::VKILL),
            Mode::VEOF => cc(&mut t, libc::VEOF),
            Mode::VEOL => cc(&mut t, libc::VEOL),
            Mode::VEOL2 => cc(&mut t, libc::VEOL2),
            Mode::VSTART => cc(&mut t, libc::VSTART),
            Mode::VSTOP => cc(&mut t, libc::VSTOP),
            Mode::VSUSP => cc(&mut t, libc::VSUSP),
            Mode::VREPRINT => cc(&mut t, libc::VREPRINT),
            Mode::VWERASE => cc(&mut t, libc::VWERASE),
            Mode::VLNEXT => cc(&mut t, libc::VLNEXT),
            Mode::VDISCARD => cc(&mut t, libc::VDISCARD),
            Mode::IGNPAR => flag(&mut t.c_iflag, libc::IGNPAR),
            Mode::PARMRK => flag(&mut t.c_iflag, libc::PARMRK),
            Mode::INPCK => flag(&mut t.c_iflag, libc::INPCK),
            Mode::ISTRIP => flag(&mut t.c_iflag, libc::ISTRIP),
            Mode::INLCR => flag(&mut t.c_iflag, libc::INLCR),
            Mode::IGNCR => flag(&mut t.c_iflag, libc::IGNCR),
            Mode::ICRNL => flag(&mut t.c_iflag, libc::ICRNL),
            Mode::IUCLC => flag(&mut t.c_iflag, libc::IUCLC),
            Mode::IXON => flag(&mut t.c_iflag, libc::IXON),
            Mode::IXANY => flag(&mut t.c_iflag, libc::IXANY),
            Mode::IXOFF => flag(&mut t.c_iflag, libc::IXOFF),
            Mode::IMAXBEL => flag(&mut t.c_iflag, libc::IMAXBEL),
            Mode::IUTF8 => flag(&mut t.c_iflag, libc::IUTF8),
            Mode::ISIG => flag(&mut t.c_lflag, libc::ISIG),
            Mode::ICANON => flag(&mut t.c_lflag, libc::ICANON),
            Mode::ECHO => flag(&mut t.c_lflag, libc::ECHO),
            Mode::ECHOE => flag(&mut t.c_lflag, libc::ECHOE),
            Mode::ECHOK => flag(&mut t.c_lflag, libc::ECHOK),
            Mode::ECHONL => flag(&mut t.c_lflag, libc::ECHONL),
            Mode::NOFLSH => flag(&mut t.c_lflag, libc::NOFLSH),
            Mode::TOSTOP => flag(&mut t.c_lflag, libc::TOSTOP),
            Mode::IEXTEN => flag(&mut t.c_lflag, libc::IEXTEN),
            Mode::ECHOCTL => flag(&mut t.c_lflag, libc::ECHOCTL),
            Mode::ECHOKE => flag(&mut t.c_lflag, libc::ECHOKE),
            Mode::PENDIN => flag(&mut t.c_lflag, libc::PENDIN),
            Mode::OPOST => flag(&mut t.c_oflag, libc::OPOST),
            Mode::OLCUC => flag(&mut t.c_oflag, libc::OLCUC),
            Mode::ONLCR => flag(&mut t.c_oflag, libc::ONLCR),
            Mode::OCRNL => flag(&mut t.c_oflag, libc::OCRNL),
            Mode::ONOCR => flag(&mut t.c_oflag, libc::ONOCR),
            Mode::ONLRET => flag(&mut t.c_oflag, libc::ONLRET),
            Mode::CS7 if on => t.c_cflag = (t.c_cflag & !libc::CSIZE) | libc::CS7,
            Mode::CS8 if on => t.c_cflag = (t.c_cflag & !libc::CSIZE) | libc::CS8,
            Mode::PARENB => flag(&mut t.c_cflag, libc::PARENB),
            Mode::PARODD => flag(&mut t.c_cflag, libc::PARODD),
            // Speeds, and modes Linux has no equivalent for, are ignored as sshd does.
            _ => {}
        }
    }
    // SAFETY: valid descriptor and pointer.
    cvt(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })?;
    Ok(())
}

/// The master side, non-blocking and registered with tokio.
pub struct Master(AsyncFd<OwnedFd>);

impl Master {
    pub fn new(fd: OwnedFd) -> io::Result<Master> {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
            cvt(libc::fcntl(
                fd.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            ))?;
        }
        // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
        let registered = unsafe { AsyncFd::register(fd) };
        registered
            .map(Master)
            .map_err(|e| io::Error::other(format!("registering the terminal: {e}")))
    }

    pub fn raw(&self) -> RawFd {
        self.0.get_ref().as_raw_fd()
    }

    /// Reads what the terminal has; `Ok(0)` once every slave descriptor is closed (Linux
    /// reports that as EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            // SAFETY: reading into a valid, writable buffer of the given length.
            let result = guard.try_io(|fd| {
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` to the terminal (the program's input).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            // SAFETY: writing from a valid buffer of the given length.
            let result = guard.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
