//! The notify socket: the datagram socket `NOTIFY_SOCKET` names for notify
//! services (sd_notify's protocol, so daemons and libraries that speak it
//! work unchanged). It sits beside the control socket, as
//! `<unix_socket_path>.notify`. Each datagram is read with the sender's
//! credentials (SO_PASSCRED), which the supervisor checks against its
//! services' processes; what a message says is parsed here.

use nix::sys::socket::{
    self, recvmsg, setsockopt, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Longest message read; longer ones are cut (sd_notify messages are a few
/// short lines).
const MAX_MESSAGE: usize = 4096;
/// Longest `STATUS=` text kept.
const MAX_STATUS: usize = 256;
/// Most fds one datagram can carry (the kernel's SCM_MAX_FD): room for
/// them all, so the credentials are never lost to a truncated control
/// buffer. init keeps none (it stores no fds): each is closed at once.
const MAX_FDS: usize = 253;

/// What one message says (the assignments init acts on; others ignored).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notice {
    pub ready: bool,
    pub watchdog: bool,
    pub status: Option<String>,
}

/// Parse `KEY=VALUE` lines.
pub fn parse(msg: &[u8]) -> Notice {
    let mut n = Notice::default();
    for line in msg.split(|b| *b == b'\n') {
        match line {
            b"READY=1" => n.ready = true,
            b"WATCHDOG=1" => n.watchdog = true,
            l if l.starts_with(b"STATUS=") => {
                let text = String::from_utf8_lossy(l.get(7..).unwrap_or_default());
                let text: String = text
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_STATUS)
                    .collect();
                n.status = Some(text);
            }
            _ => {}
        }
    }
    n
}

pub struct NotifySocket {
    fd: OwnedFd,
    path: PathBuf,
}

impl NotifySocket {
    /// Bind the socket (a stale one at the path is replaced; a live one,
    /// another init's, is an error and left alone), writable by every
    /// local user: services that run as another user must reach it, and
    /// what they say is believed only from a service's own processes.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if m.file_type().is_socket() {
                // A datagram connect reaches a bound socket, and is refused
                // at a stale one.
                let live = std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|probe| probe.connect(path))
                    .is_ok();
                if live {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "in use by a running process (another init?); left alone",
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
        }
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(NotifySocket {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next datagram and its sender's pid (0 when it came without
    /// credentials); None when there is none now. Fds sent along
    /// (sd_pid_notify_with_fds) are closed.
    pub fn recv(&self) -> Option<(i32, Vec<u8>)> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            match r {
                Ok(msg) => {
                    let mut pid = 0;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            match c {
                                ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid(),
                                ControlMessageOwned::ScmRights(fds) => {
                                    for fd in fds {
                                        // SAFETY: the kernel just installed
                                        // it in init's table; nothing else
                                        // knows of it.
                                        drop(unsafe { OwnedFd::from_raw_fd(fd) });
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    let n = msg.bytes.min(MAX_MESSAGE);
                    buf.truncate(n);
                    return Some((pid, buf));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_init_acts_on() {
        assert_eq!(
            parse(b"READY=1\nSTATUS=serving \x01 42\nMAINPID=7\n"),
            Notice {
                ready: true,
                watchdog: false,
                status: Some("serving  42".into()),
            }
        );
        assert!(parse(b"WATCHDOG=1").watchdog);
        assert_eq!(parse(b"READY=0\nREADY=10"), Notice::default());
        let long = format!("STATUS={}", "x".repeat(10_000));
        assert_eq!(parse(long.as_bytes()).status.unwrap().len(), MAX_STATUS);
    }

    /// A fresh directory for a test's sockets, and `n.sock` in it.
    fn scratch(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        (dir, path)
    }

    /// The datagram `s` reads next is READY=1, from this process.
    fn assert_ready_from_us(s: &NotifySocket) {
        let (pid, msg) = s.recv().unwrap();
        assert_eq!(
            (pid, msg.as_slice()),
            (std::process::id() as i32, &b"READY=1"[..])
        );
    }

    #[test]
    fn reads_a_datagram_with_its_sender() {
        let (dir, path) = scratch("notify-test");
        let s = NotifySocket::bind(&path).unwrap();
        assert!(s.recv().is_none());
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        c.send_to(b"READY=1", &path).unwrap();
        assert_ready_from_us(&s);
        drop(s);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A second init with the same socket path took the first one's
    /// notify socket over (and removed it when it ended), so the first
    /// one's notify services could not say READY=1 any more.
    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let (dir, path) = scratch("notify-live");
        let first = NotifySocket::bind(&path).unwrap();
        let e = NotifySocket::bind(&path)
            .err()
            .expect("a live socket taken over");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        c.send_to(b"READY=1", &path).unwrap();
        assert_eq!(first.recv().map(|(_, m)| m), Some(b"READY=1".to_vec()));
        drop(first);
        // A stale one (its owner gone, the file left) is replaced.
        let stale = std::os::unix::net::UnixDatagram::bind(dir.join("s.sock")).unwrap();
        drop(stale);
        assert!(NotifySocket::bind(&dir.join("s.sock")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// sd_pid_notify_with_fds (READY=1 with FDSTORE=1, say) sends fds
    /// along: the message was taken as one without credentials (the
    /// control buffer had no room for the fds), so such a service was
    /// never believed ready. The text counts, and the fds are closed.
    #[test]
    fn a_datagram_with_fds_keeps_its_sender_and_the_fds_are_closed() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        use std::io::{IoSlice, Read};
        let (dir, path) = scratch("notify-fds");
        let s = NotifySocket::bind(&path).unwrap();
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        let fds = [w.as_raw_fd(), w.as_raw_fd(), r.as_raw_fd()];
        let addr = UnixAddr::new(&path).unwrap();
        sendmsg(
            c.as_raw_fd(),
            &[IoSlice::new(b"READY=1")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
        drop(w);
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        assert_ready_from_us(&s);
        // Every copy of the write end is closed again: the read end sees EOF.
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).map_err(|e| e.kind()), Ok(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
