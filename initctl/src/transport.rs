//! One connection to init: connect with a timeout, send one request line,
//! read response lines (one JSON value per line).

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    VsockAddr,
};
use nix::sys::time::TimeVal;
use shared::protocol::Request;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vsock::VsockStream;

/// A response line longer than this is refused rather than buffered forever.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Reads are this small until an answer proves longer, so that a short
/// answer touches one page of memory: each page touched first is a page
/// fault, and the 64 KiB read buffer on the stack that this replaced made
/// 32 of the 76 faults of a static `initctl ping` (about 100 us of its
/// 1.1 ms, by an A/B of 400 runs each).
const FIRST_READ: usize = 4 * 1024;
/// One read once the answer is longer than `FIRST_READ`.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Vsock { cid: u32, port: u32 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock {cid}:{port}"),
        }
    }
}

trait Stream: Read + Write + AsFd {
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, dur)
    }
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, dur)
    }
}

impl Stream for VsockStream {
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        VsockStream::set_read_timeout(self, dur)
    }
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        VsockStream::set_write_timeout(self, dur)
    }
}

pub struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

/// Time left until `deadline`, or a `TimedOut` error if none is left.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        Err(ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros().max(1) as _)
}

fn poll_ms(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().clamp(1, i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX)
}

/// Blocking connect; SO_SNDTIMEO bounds the wait when init's listen queue
/// is full (the kernel then answers EAGAIN).
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    match connect(fd.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(Errno::EAGAIN) => Err(io::Error::new(
            ErrorKind::TimedOut,
            "init did not accept the connection in time (listen queue full)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Non-blocking connect, then poll for writability until the timeout.
fn connect_vsock(cid: u32, port: u32, timeout: Duration) -> io::Result<VsockStream> {
    let fd: OwnedFd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // The kernel gives up on a VSOCK connect after 2 s unless told
    // otherwise (SO_VM_SOCKETS_CONNECT_TIMEOUT = 6): give it the whole
    // --timeout. Best effort.
    let tv = nix::libc::timeval {
        tv_sec: nix::libc::time_t::try_from(timeout.as_secs().max(1))
            .unwrap_or(nix::libc::time_t::MAX),
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a properly sized timeval on our own socket.
    unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::AF_VSOCK,
            6,
            (&tv as *const nix::libc::timeval).cast(),
            std::mem::size_of::<nix::libc::timeval>() as nix::libc::socklen_t,
        )
    };
    match connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            let deadline = Instant::now() + timeout;
            loop {
                let left = remaining(deadline)
                    .map_err(|_| io::Error::new(ErrorKind::TimedOut, "connection timed out"))?;
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, poll_ms(left)) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let err = getsockopt(&fd, sockopt::SocketError)?;
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let stream = VsockStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

impl Conn {
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Conn> {
        let stream: Box<dyn Stream> = match endpoint {
            Endpoint::Unix(path) => Box::new(connect_unix(path, timeout)?),
            Endpoint::Vsock { cid, port } => Box::new(connect_vsock(*cid, *port, timeout)?),
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Write the request as one JSON line.
    pub fn send(&mut self, request: &Request, deadline: Instant) -> io::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.stream.set_write_timeout(Some(remaining(deadline)?))?;
        self.stream.write_all(&line).map_err(timeout_kind)
    }

    /// The next response line without its `\n`; `None` when init closed the
    /// connection. A final line without `\n` before the close is returned as
    /// a line. `deadline: None` waits for ever.
    pub fn read_line(&mut self, deadline: Option<Instant>) -> io::Result<Option<String>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(scanned + pos + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return utf8(line).map(Some);
            }
            scanned = self.buf.len();
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("response longer than {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            let timeout = deadline.map(remaining).transpose()?;
            self.stream.set_read_timeout(timeout)?;
            match self.read_more() {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return utf8(std::mem::take(&mut self.buf)).map(Some),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(timeout_kind(e)),
            }
        }
    }

    /// A whole buffered line, if there is one (no read).
    pub fn take_line(&mut self) -> io::Result<Option<String>> {
        let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let rest = self.buf.split_off(pos + 1);
        let mut line = std::mem::replace(&mut self.buf, rest);
        line.pop();
        utf8(line).map(Some)
    }

    /// One read of what has arrived (call when poll says readable, so it
    /// does not block). Returns false at end of stream; a final line
    /// without `\n` is then completed so `take_line` gives it.
    pub fn read_some(&mut self) -> io::Result<bool> {
        if self.buf.len() > MAX_RESPONSE_BYTES {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("response longer than {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        self.stream.set_read_timeout(None)?;
        loop {
            match self.read_more() {
                Ok(0) => {
                    if self.buf.last().is_some_and(|b| *b != b'\n') {
                        self.buf.push(b'\n');
                    }
                    return Ok(false);
                }
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One read, appended to `buf`: [`FIRST_READ`] bytes while `buf` holds
    /// less than that, [`READ_CHUNK`] after.
    fn read_more(&mut self) -> io::Result<usize> {
        let want = if self.buf.len() < FIRST_READ {
            FIRST_READ
        } else {
            READ_CHUNK
        };
        let had = self.buf.len();
        self.buf.resize(had + want, 0);
        let read = self.stream.read(&mut self.buf[had..]);
        self.buf.truncate(had + *read.as_ref().unwrap_or(&0));
        read
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// True when a whole line is already buffered (no read needed).
    pub fn has_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    /// Block until the connection is readable (data, EOF or error) or
    /// `watched` (stdout) reports an error or hang-up, as when the reader
    /// of a pipe went away. Returns true in the latter case.
    pub fn wait_readable_or_gone(&self, watched: BorrowedFd<'_>) -> io::Result<bool> {
        let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
        loop {
            let mut fds = [
                PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(watched, PollFlags::empty()),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    if fds[1].revents().is_some_and(|r| r.intersects(gone)) {
                        return Ok(true);
                    }
                    if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                        return Ok(false);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn utf8(line: Vec<u8>) -> io::Result<String> {
    String::from_utf8(line).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

/// Socket timeouts surface as EAGAIN/WouldBlock; call them TimedOut.
fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == ErrorKind::WouldBlock {
        ErrorKind::TimedOut.into()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_the_path_or_cid_port() {
        assert_eq!(
            Endpoint::Unix("/run/init.sock".into()).to_string(),
            "/run/init.sock"
        );
        assert_eq!(
            Endpoint::Vsock {
                cid: 16,
                port: 9001
            }
            .to_string(),
            "vsock 16:9001"
        );
    }

    #[test]
    fn lines_are_split_and_a_final_unterminated_line_is_kept() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn = Conn {
            stream: Box::new(a),
            buf: Vec::new(),
        };
        b.write_all(b"\"Pong\"\n{\"x\":1}\n\"Po").unwrap();
        b.write_all(b"ng\"").unwrap();
        drop(b);
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(conn.read_line(deadline).unwrap().unwrap(), "\"Pong\"");
        assert!(conn.has_line());
        assert_eq!(conn.read_line(deadline).unwrap().unwrap(), "{\"x\":1}");
        assert_eq!(conn.read_line(deadline).unwrap().unwrap(), "\"Pong\"");
        assert_eq!(conn.read_line(deadline).unwrap(), None);
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = Conn {
            stream: Box::new(a),
            buf: Vec::new(),
        };
        let start = Instant::now();
        let err = conn
            .read_line(Some(start + Duration::from_millis(200)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
