//! One control connection: framing, limits and buffers. Transport-neutral
//! (Unix or VSOCK); the supervisor decides what each request does.
//!
//! Framing: each complete JSON value is a request, answered as soon as it is
//! complete with the response and `\n`, whatever (if anything) follows it.

use shared::protocol::{Request, Response};
use shared::MAX_REQUEST_BYTES;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// A client silent this long (and not waiting on anything) is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// While this much output is queued, no further request is read.
pub const OUT_HIGH_WATER: usize = 256 * 1024;
/// A `logs -f` follower whose queue grows past this is dropped.
pub const FOLLOW_LIMIT: usize = 1024 * 1024;

pub enum Stream {
    Unix(mio::net::UnixStream),
    Vsock(vsock::VsockStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Vsock(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Vsock(s) => s.write(buf),
        }
    }
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Vsock(s) => s.as_raw_fd(),
        }
    }
}

pub struct Conn {
    pub stream: Stream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The peer half-closed or reset: no more requests will come.
    pub read_closed: bool,
    /// Close once the output is flushed.
    pub close_after_flush: bool,
    /// Fatal write error: drop now.
    pub broken: bool,
    /// A request is waiting for something (a stop); later ones wait too.
    pub busy: bool,
    /// Streaming new log lines (`logs -f`): no more requests are read.
    pub following: bool,
    /// What is still queued of a follower's first answer: allowed on top
    /// of `FOLLOW_LIMIT`, so a follower taking in a large backlog is not
    /// taken for one that stopped reading. Shrinks as the queue drains.
    follow_allowance: usize,
    pub last_activity: Instant,
}

/// What the connection's buffered input yields next.
pub enum Next {
    Request(Request),
    /// A complete JSON value that is not a request: answer, keep going.
    Invalid(String),
    /// Garbage or too large: answer and close.
    Fatal(String),
    /// Need more bytes.
    Incomplete,
}

impl Conn {
    pub fn new(stream: Stream, now: Instant) -> Self {
        Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            read_closed: false,
            close_after_flush: false,
            broken: false,
            busy: false,
            following: false,
            follow_allowance: 0,
            last_activity: now,
        }
    }

    /// Read everything available (edge-triggered: until WouldBlock), but
    /// never hold more than one over-limit request.
    /// Returns whether anything was read.
    pub fn fill(&mut self, now: Instant) -> bool {
        let mut got = false;
        let mut buf = [0u8; 16 * 1024];
        while !self.read_closed && self.inbuf.len() <= MAX_REQUEST_BYTES {
            match self.stream.read(&mut buf) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    got = true;
                    self.last_activity = now;
                    self.inbuf
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.read_closed = true,
            }
        }
        got
    }

    /// Parse the next request out of the input buffer.
    pub fn next(&mut self) -> Next {
        let start = self
            .inbuf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.inbuf.len());
        self.inbuf.drain(..start);
        if self.inbuf.is_empty() {
            return Next::Incomplete;
        }
        let mut it =
            serde_json::Deserializer::from_slice(&self.inbuf).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(value)) => {
                let used = it.byte_offset();
                // A number, `true`, `false` or `null` that ends where the
                // input ends may go on in the next read.
                let open_ended = !(value.is_string() || value.is_array() || value.is_object());
                if open_ended
                    && used == self.inbuf.len()
                    && used <= MAX_REQUEST_BYTES
                    && !self.read_closed
                {
                    return Next::Incomplete;
                }
                self.inbuf.drain(..used.min(self.inbuf.len()));
                // Complete but too large (it arrived in one read burst).
                if used > MAX_REQUEST_BYTES {
                    self.inbuf.clear();
                    return Next::Fatal(format!(
                        "request too large: over {MAX_REQUEST_BYTES} bytes"
                    ));
                }
                match serde_json::from_value::<Request>(value) {
                    Ok(r) => Next::Request(r),
                    Err(e) => Next::Invalid(format!("invalid request: {e}")),
                }
            }
            Some(Err(e)) if e.is_eof() => {
                if self.inbuf.len() > MAX_REQUEST_BYTES {
                    self.inbuf.clear();
                    Next::Fatal(format!("request too large: over {MAX_REQUEST_BYTES} bytes"))
                } else if self.read_closed {
                    self.inbuf.clear();
                    Next::Fatal(format!("invalid request: {e}"))
                } else {
                    Next::Incomplete
                }
            }
            Some(Err(e)) => {
                self.inbuf.clear();
                Next::Fatal(format!("invalid request: {e}"))
            }
            None => Next::Incomplete,
        }
    }

    /// Queue a response line.
    pub fn send(&mut self, r: &Response) {
        match serde_json::to_vec(r) {
            Ok(mut v) => {
                v.push(b'\n');
                self.outbuf.extend_from_slice(&v);
            }
            Err(e) => {
                let msg =
                    format!("{{\"Error\":{{\"message\":\"cannot encode response: {e}\"}}}}\n");
                self.outbuf.extend_from_slice(msg.as_bytes());
            }
        }
    }

    /// Write what the socket takes now.
    pub fn flush(&mut self, now: Instant) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => {
                    self.broken = true;
                    return;
                }
                Ok(n) => {
                    self.last_activity = now;
                    self.outbuf.drain(..n.min(self.outbuf.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// Become a follower, after `first` (the last lines).
    pub fn start_follow(&mut self, first: &Response) {
        self.send(first);
        self.following = true;
        self.follow_allowance = self.queued();
    }

    /// Queue new lines for a follower; drop a follower that stopped reading.
    pub fn send_follow(&mut self, r: &Response) {
        self.follow_allowance = self.follow_allowance.min(self.queued());
        self.send(r);
        if self.queued() > FOLLOW_LIMIT.saturating_add(self.follow_allowance) {
            self.broken = true;
        }
    }

    pub fn queued(&self) -> usize {
        self.outbuf.len()
    }

    /// Bytes read and not yet parsed (the fuzz target checks their bound).
    #[allow(dead_code)]
    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Should the supervisor read and answer more requests now?
    pub fn wants_requests(&self) -> bool {
        !self.busy && !self.close_after_flush && !self.following && self.queued() < OUT_HIGH_WATER
    }

    /// Finished: drop the connection.
    pub fn done(&self) -> bool {
        self.broken
            || (self.close_after_flush && self.outbuf.is_empty())
            || (self.read_closed
                && !self.busy
                && !self.following
                && self.outbuf.is_empty()
                && self.inbuf.iter().all(u8::is_ascii_whitespace))
    }

    /// When the idle timeout drops this connection, if it may.
    pub fn idle_deadline(&self) -> Option<Instant> {
        (!self.busy && !self.following).then(|| self.last_activity + IDLE_TIMEOUT)
    }
}
