//! One control connection: framing, its own limits and timeouts, buffers.
//! Transport-neutral (Unix or VSOCK; `Clients` keeps the budgets); the
//! supervisor decides what each request does.
//!
//! Framing: each complete JSON value is a request, answered as soon as it is
//! complete with the response and `\n`, whatever (if anything) follows it.
//! Its end is found by scanning each byte once (`Scan`). Only complete
//! requests and output taken count as activity.
//!
//! Output: a log answer is encoded as the socket takes it (`Rest`), a
//! piece at a time, so a client that asks for the largest answer and never
//! reads costs the loop the encoding of one piece, not of the answer.
//! A follower past `FOLLOW_LIMIT` unread skips whole outputs and is told
//! how many lines once it has caught up, or is dropped (`send_follow`).

use crate::access::Who;
use shared::protocol::{Request, Response};
use shared::MAX_REQUEST_BYTES;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// What one read of a connection takes at most (the caller's buffer).
pub const READ_SIZE: usize = 16 * 1024;
/// A client that neither completes a request nor takes any of its output
/// for this long is dropped (one waiting for a held answer, or following
/// with nothing queued, is not idle). Bytes that complete no request,
/// whitespace included, are not activity.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request must be complete this long after its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// While this much output is queued, no further request is read.
pub const OUT_HIGH_WATER: usize = 256 * 1024;
/// A follower whose queue is past this is not sent more: an events
/// follower is dropped (it resumes with `since`); a log follower that
/// still takes output skips lines, and is told how many once it has caught
/// up (they are in the log files); one that took none for `FOLLOW_STALL`
/// is dropped.
pub const FOLLOW_LIMIT: usize = 1024 * 1024;
/// A log follower over `FOLLOW_LIMIT` that took no output for this long
/// has stopped reading.
pub const FOLLOW_STALL: Duration = Duration::from_secs(10);
/// A long log answer is encoded into the queue while less than this is
/// queued.
const ENCODE_AHEAD: usize = 128 * 1024;
/// Buffers larger than this are freed once empty (a big answer's memory
/// goes back as soon as it has been sent).
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a follower follows: how it is told of lines it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follows {
    /// One service's lines (`ServiceLogs` pieces).
    Service,
    /// Every service's (`ServicesLogs` pieces).
    All,
    /// Events: none are skipped.
    Events,
}

impl Follows {
    /// What a streaming request follows.
    pub fn of(r: &Request) -> Option<Follows> {
        match r {
            Request::ServiceLogsFollow { .. } => Some(Follows::Service),
            Request::ServiceLogsFollowAll { .. } => Some(Follows::All),
            Request::Events { .. } => Some(Follows::Events),
            _ => None,
        }
    }

    /// The notice of `n` lines skipped, in the stream's own form.
    fn skipped(self, n: usize) -> Option<Response> {
        let line = crate::logs::ServiceLog::notice(&format!(
            "{n} lines not sent: this follower fell behind (they are in the log files: initctl logs)"
        ));
        match self {
            Follows::Service => Some(Response::ServiceLogs { logs: vec![line] }),
            Follows::All => Some(Response::ServicesLogs {
                logs: vec![shared::protocol::ServiceLines {
                    service: "init".into(),
                    logs: vec![line],
                }],
            }),
            Follows::Events => None,
        }
    }
}

/// Which listener a connection came from: each has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Vsock,
}

impl Transport {
    /// 0 or 1: an index for what is kept per transport.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Vsock => "vsock",
        }
    }
}

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
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Vsock(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

pub struct Conn {
    pub stream: Stream,
    /// The peer and its role, fixed at accept.
    pub who: Who,
    /// Bytes read; those before `in_head` are consumed.
    inbuf: Vec<u8>,
    in_head: usize,
    /// How far into the next request the scanner has looked.
    scan: Scan,
    /// The input length at the last syntax check of an incomplete request.
    checked: usize,
    /// Queued output; the bytes before `out_head` are written.
    outbuf: Vec<u8>,
    out_head: usize,
    /// The lines of a log answer not yet encoded into `outbuf`.
    rest: Option<Rest>,
    /// Follow lines that came while `rest` was being sent: they go after it.
    after: Vec<u8>,
    /// The peer half-closed or reset: no more requests will come.
    pub read_closed: bool,
    /// Our write side is shut (at the end, after the last output).
    write_shut: bool,
    /// The last read found the kernel's buffer empty: until the next
    /// readiness edge there is nothing more to read.
    drained: bool,
    /// Close once the output is flushed.
    pub close_after_flush: bool,
    /// Fatal write error: drop now.
    pub broken: bool,
    /// A request is waiting for something (a stop); later ones wait too.
    pub busy: bool,
    /// Streaming new log lines (`logs -f`) or events: no more requests
    /// are read.
    pub following: bool,
    /// What is still queued of a follower's first answer: allowed on top
    /// of `FOLLOW_LIMIT`, so a follower taking in a large backlog is not
    /// taken for one that stopped reading. Shrinks as the queue drains.
    follow_allowance: usize,
    /// What it follows, once following.
    follows: Option<Follows>,
    /// Lines not sent to this log follower since it fell behind.
    skipped: usize,
    /// The last complete request, or output taken (or first queued): what
    /// the idle timeout and eviction go by.
    pub last_activity: Instant,
    /// When the first byte of a still incomplete request was seen.
    partial_since: Option<Instant>,
    /// The loop turn in which this connection was last served an expensive
    /// request (kept by `Clients`).
    pub heavy_turn: Option<u64>,
    /// A request read but not yet served: an expensive one waiting for its
    /// turn, and `ticket` its place in the line.
    pub pending: Option<Request>,
    pub ticket: Option<u64>,
    /// This connection's memory as `Clients` last counted it.
    pub counted: usize,
    /// Bytes of complete requests read so far (what `Clients` paces by).
    pub taken: u64,
}

/// What is left to encode of a log answer: its lines, then `]}}` and a
/// newline. The bytes match `serde_json::to_writer` of the whole answer.
struct Rest {
    lines: std::vec::IntoIter<String>,
    /// The lines' text still held (what they cost in memory, roughly).
    bytes: usize,
    /// No line written yet (no comma before the next).
    first: bool,
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

/// A response as one line, as `Conn::send` queues it.
pub fn encode_line(r: &Response) -> Vec<u8> {
    let mut v = Vec::new();
    encode_into(&mut v, r);
    v
}

fn encode_into(out: &mut Vec<u8>, r: &Response) {
    let start = out.len();
    match serde_json::to_writer(&mut *out, r) {
        Ok(()) => out.push(b'\n'),
        Err(e) => {
            out.truncate(start);
            let msg = format!("{{\"Error\":{{\"message\":\"cannot encode response: {e}\"}}}}\n");
            out.extend_from_slice(msg.as_bytes());
        }
    }
}

/// What is wrong with a well-formed value that is no request. serde_json
/// says "expected value" of an array or a scalar, so those are named here
/// (building the value to let serde say more costs 6 ms for 64 KiB of
/// small objects, and a second copy of the request decoder in the binary).
fn not_a_request(value: &[u8], e: serde_json::Error) -> String {
    let what = match value.first() {
        Some(b'{' | b'"') => return e.to_string(),
        Some(b'[') => return "a request is a JSON string or object, not an array".to_string(),
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    // A scalar is named with its text (a number's first 32 bytes).
    let text = String::from_utf8_lossy(value.trim_ascii());
    let cut: String = text.chars().take(32).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("a request is a JSON string or object, not {what} (`{cut}{more}`)")
}

/// Whether serde_json's error points just past the last byte of `input`:
/// that may be a value cut short where serde_json does not say EOF (a
/// number ending in `.`, `e` or `-` is an "invalid number"), so it is not
/// called garbage until more bytes show it.
fn at_end(input: &[u8], e: &serde_json::Error) -> bool {
    let start = input.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let line = 1 + input.iter().take(start).filter(|b| **b == b'\n').count();
    e.line() == line && e.column() == input.len() - start
}

/// Finds where the first JSON value of the input ends, remembering how far
/// it got, so a request arriving in pieces is looked at once per byte, not
/// parsed again from its start after every read. It only finds the end
/// (strings, escapes, nesting); serde checks the value. A bare number or
/// literal at the top level ends at the first byte that cannot be part of
/// it (or at the end of input).
#[derive(Default)]
struct Scan {
    /// Bytes of the value looked at.
    len: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    scalar: bool,
}

impl Scan {
    /// Go on over `value` (the input from the value's first byte, which is
    /// not whitespace): the value's length once it is complete.
    fn feed(&mut self, value: &[u8]) -> Option<usize> {
        for &b in value.get(self.len..).unwrap_or_default() {
            if self.scalar && (b.is_ascii_whitespace() || b"{}[],:\"".contains(&b)) {
                return Some(self.len);
            }
            self.len += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.len);
                    }
                }
            } else if !self.scalar {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    // A stray closing bracket ends the value too (serde
                    // then says what is wrong with it).
                    b'}' | b']' if self.depth <= 1 => return Some(self.len),
                    b'}' | b']' => self.depth -= 1,
                    _ if self.depth == 0 => self.scalar = true,
                    _ => {}
                }
            }
        }
        None
    }
}

impl Conn {
    pub fn new(stream: Stream, who: Who, now: Instant) -> Self {
        Conn {
            stream,
            who,
            inbuf: Vec::new(),
            in_head: 0,
            scan: Scan::default(),
            checked: 0,
            outbuf: Vec::new(),
            out_head: 0,
            rest: None,
            after: Vec::new(),
            read_closed: false,
            write_shut: false,
            drained: false,
            close_after_flush: false,
            broken: false,
            busy: false,
            following: false,
            follow_allowance: 0,
            follows: None,
            skipped: 0,
            last_activity: now,
            partial_since: None,
            heavy_turn: None,
            pending: None,
            ticket: None,
            counted: 0,
            taken: 0,
        }
    }

    pub fn transport(&self) -> Transport {
        match self.stream {
            Stream::Unix(_) => Transport::Unix,
            Stream::Vsock(_) => Transport::Vsock,
        }
    }

    /// Read everything available (edge-triggered: until WouldBlock), but
    /// never hold more than one over-limit request.
    /// Returns whether anything was read.
    /// Bytes read and not yet consumed (the fuzz target checks its bound).
    #[allow(dead_code)]
    pub fn buffered(&self) -> usize {
        self.inbuf.len().saturating_sub(self.in_head)
    }

    /// Read what the kernel has (up to the request limit). A short read
    /// means the buffer was empty, and the next byte brings a new edge; a
    /// caller told the peer closed (`to_eof`) reads on to see the end.
    pub fn fill(&mut self, buf: &mut [u8], to_eof: bool) -> bool {
        if self.in_head > 0 {
            self.inbuf.drain(..self.in_head.min(self.inbuf.len()));
            self.in_head = 0;
        }
        let mut got = false;
        self.drained = false;
        while !self.read_closed && self.inbuf.len() <= MAX_REQUEST_BYTES {
            match self.stream.read(buf) {
                Ok(0) => self.read_closed = true,
                Ok(n) => {
                    got = true;
                    self.inbuf
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    if n < buf.len() && !to_eof {
                        self.drained = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    break;
                }
                Err(_) => self.read_closed = true,
            }
        }
        got
    }

    /// Input may be left in the kernel: a read stopped at the request
    /// limit, and no new edge will come for it.
    pub fn may_have_more(&self) -> bool {
        !self.read_closed && !self.drained
    }

    fn input(&self) -> &[u8] {
        self.inbuf.get(self.in_head..).unwrap_or_default()
    }

    /// Consume `n` bytes of input; the next value starts after them.
    fn consume(&mut self, n: usize) {
        self.in_head = self.in_head.saturating_add(n).min(self.inbuf.len());
        self.scan = Scan::default();
        self.checked = 0;
        if self.in_head == self.inbuf.len() {
            self.inbuf.clear();
            self.in_head = 0;
            if self.inbuf.capacity() > KEEP_CAPACITY {
                self.inbuf = Vec::new();
            }
        }
    }

    fn discard_input(&mut self) {
        self.consume(self.input().len());
        self.partial_since = None;
    }

    fn fatal(&mut self, msg: String) -> Next {
        self.discard_input();
        Next::Fatal(msg)
    }

    /// Parse the next request out of the input buffer.
    pub fn next(&mut self, now: Instant) -> Next {
        if self.scan.len == 0 {
            let blank = self
                .input()
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.consume(blank);
        }
        let rest = self.inbuf.get(self.in_head..).unwrap_or_default();
        if rest.is_empty() {
            self.partial_since = None;
            return Next::Incomplete;
        }
        let end = match self.scan.feed(rest) {
            Some(end) => end,
            None if rest.len() > MAX_REQUEST_BYTES => {
                return self.fatal(format!("request too large: over {MAX_REQUEST_BYTES} bytes"))
            }
            None if self.read_closed => rest.len(),
            None => {
                // Garbage is answered at once, not when it reaches the
                // size limit: check the syntax so far each time the
                // input has doubled (linear in all).
                if rest.len() >= self.checked.saturating_mul(2).max(1) {
                    self.checked = rest.len();
                    let mut it = serde_json::Deserializer::from_slice(rest)
                        .into_iter::<serde::de::IgnoredAny>();
                    if let Some(Err(e)) = it.next() {
                        if !e.is_eof() && !at_end(rest, &e) {
                            return self.fatal(format!("invalid request: {e}"));
                        }
                    }
                }
                self.partial_since.get_or_insert(now);
                return Next::Incomplete;
            }
        };
        // Complete but too large (it arrived in one read burst).
        if end > MAX_REQUEST_BYTES {
            return self.fatal(format!("request too large: over {MAX_REQUEST_BYTES} bytes"));
        }
        // Straight into a Request. When that fails, well-formed JSON that
        // is no request is answered and the connection goes on, broken JSON
        // ends it. The direct parse can stop at an unknown name before a
        // syntax error, so the rest is checked by skipping it, which builds
        // nothing: a 64 KiB value of small objects costs about as much as
        // reading it, not the 6 ms of building it as a `Value` (which let
        // a few read-only peers hold every other client for seconds).
        let slice = rest.get(..end).unwrap_or_default();
        let parsed = serde_json::from_slice::<Request>(slice).map_err(|e| {
            match serde_json::from_slice::<serde::de::IgnoredAny>(slice) {
                Ok(_) => (false, not_a_request(slice, e)),
                Err(syntax) => (true, syntax.to_string()),
            }
        });
        self.taken = self.taken.saturating_add(end as u64);
        self.consume(end);
        self.partial_since = None;
        self.last_activity = now;
        match parsed {
            Ok(r) => Next::Request(r),
            Err((false, e)) => Next::Invalid(format!("invalid request: {e}")),
            Err((true, e)) => self.fatal(format!("invalid request: {e}")),
        }
    }

    /// Queue a response line (encoded straight into the queue, or after
    /// the log answer being sent). See `encode_line` for its bytes.
    pub fn send(&mut self, r: &Response, now: Instant) {
        if self.rest.is_some() {
            encode_into(&mut self.after, r);
            return;
        }
        let start = self.begin_output(now);
        encode_into(&mut self.outbuf, r);
        // A big answer: give back what growing by doubling left unused.
        if self.outbuf.len() - start > KEEP_CAPACITY {
            self.outbuf.shrink_to_fit();
        }
    }

    /// Queue an answer: a log answer is encoded as the socket takes it
    /// (see `refill`), anything else at once.
    pub fn answer(&mut self, r: Response, now: Instant) {
        let logs = match r {
            Response::ServiceLogs { logs } if self.rest.is_none() => logs,
            r => return self.send(&r, now),
        };
        self.begin_output(now);
        self.outbuf
            .extend_from_slice(br#"{"ServiceLogs":{"logs":["#);
        self.rest = Some(Rest {
            bytes: logs.iter().map(String::len).sum(),
            lines: logs.into_iter(),
            first: true,
        });
        self.refill();
    }

    /// Make room at the end of the queue; the time to take this output
    /// starts now if nothing was queued. Returns where the new output
    /// starts.
    fn begin_output(&mut self, now: Instant) -> usize {
        if self.queued() == 0 {
            self.last_activity = now;
            self.outbuf.clear();
            self.out_head = 0;
        } else if self.out_head > self.outbuf.len() / 2 {
            self.outbuf.drain(..self.out_head);
            self.out_head = 0;
        }
        self.outbuf.len()
    }

    /// Encode more of a log answer while little of the queue is left.
    fn refill(&mut self) {
        let Some(rest) = self.rest.as_mut() else {
            return;
        };
        let queued = self.outbuf.len().saturating_sub(self.out_head);
        if queued >= ENCODE_AHEAD {
            return;
        }
        if self.out_head > 0 {
            self.outbuf.drain(..self.out_head.min(self.outbuf.len()));
            self.out_head = 0;
        }
        while self.outbuf.len() < ENCODE_AHEAD {
            let Some(line) = rest.lines.next() else {
                self.outbuf.extend_from_slice(b"]}}\n");
                self.outbuf.append(&mut self.after);
                self.after = Vec::new();
                self.rest = None;
                return;
            };
            if !rest.first {
                self.outbuf.push(b',');
            }
            rest.first = false;
            rest.bytes = rest.bytes.saturating_sub(line.len());
            // A String always encodes.
            let _ = serde_json::to_writer(&mut self.outbuf, &line);
        }
    }

    /// Write what the socket takes now.
    pub fn flush(&mut self, now: Instant) {
        loop {
            self.refill();
            let Some(out) = self.outbuf.get(self.out_head..).filter(|o| !o.is_empty()) else {
                // Caught up: a follower that skipped lines is told now,
                // not only at the next output (there may be none).
                if self.tell_skipped(now) {
                    continue;
                }
                break;
            };
            match self.stream.write(out) {
                Ok(0) => {
                    self.broken = true;
                    return;
                }
                Ok(n) => {
                    self.last_activity = now;
                    self.out_head = self.out_head.saturating_add(n).min(self.outbuf.len());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
        self.outbuf.clear();
        self.out_head = 0;
        if self.outbuf.capacity() > KEEP_CAPACITY {
            self.outbuf = Vec::new();
        }
    }

    /// Become a follower, after `first` (the last lines, or the kept
    /// events).
    pub fn start_follow(&mut self, first: Vec<Response>, follows: Follows, now: Instant) {
        for r in first {
            self.answer(r, now);
        }
        self.following = true;
        self.follows = Some(follows);
        self.follow_allowance = self.queued();
    }

    /// Queue new output for a follower: past `FOLLOW_LIMIT` unread, skip
    /// it (a log follower still reading) or drop the follower.
    /// What is judged is what it left unread before this output, so one
    /// output bigger than the limit (an event naming a thousand failed
    /// services) reaches a follower that keeps up; what it holds is then
    /// at most the limit, one output and the notice of what it skipped.
    /// `line` is the output encoded (`encode_line`), once for all its
    /// followers; `lines`, the log lines in it.
    pub fn send_follow(&mut self, line: &[u8], lines: usize, now: Instant) {
        // Already dropped (earlier in this batch): nothing more to hold.
        if self.broken {
            return;
        }
        self.follow_allowance = self.follow_allowance.min(self.queued());
        if self.queued() > FOLLOW_LIMIT.saturating_add(self.follow_allowance) {
            let reading = now.saturating_duration_since(self.last_activity) < FOLLOW_STALL;
            match self.follows {
                Some(Follows::Service | Follows::All) if reading => {
                    self.skipped = self.skipped.saturating_add(lines);
                }
                _ => self.broken = true,
            }
            return;
        }
        self.tell_skipped(now);
        self.queue_follow(line, now);
    }

    /// Queue the notice of the lines skipped, if any. True if it did.
    fn tell_skipped(&mut self, now: Instant) -> bool {
        if self.skipped == 0 {
            return false;
        }
        let n = std::mem::take(&mut self.skipped);
        match self.follows.and_then(|f| f.skipped(n)) {
            Some(r) => {
                self.queue_follow(&encode_line(&r), now);
                true
            }
            None => false,
        }
    }

    fn queue_follow(&mut self, line: &[u8], now: Instant) {
        if self.rest.is_some() {
            self.after.extend_from_slice(line);
            return;
        }
        self.begin_output(now);
        self.outbuf.extend_from_slice(line);
    }

    /// Output not yet written: queued bytes, and what is still to encode
    /// of a log answer (its text, as a lower bound).
    pub fn queued(&self) -> usize {
        self.outbuf
            .len()
            .saturating_sub(self.out_head)
            .saturating_add(self.rest.as_ref().map_or(0, |r| r.bytes))
            .saturating_add(self.after.len())
    }

    /// Bytes this connection holds in its buffers.
    pub fn memory(&self) -> usize {
        self.inbuf
            .capacity()
            .saturating_add(self.outbuf.capacity())
            .saturating_add(self.rest.as_ref().map_or(0, |r| r.bytes))
            .saturating_add(self.after.capacity())
    }

    /// A request, or input other than whitespace, waits.
    pub fn has_input(&self) -> bool {
        self.pending.is_some() || !self.input().iter().all(u8::is_ascii_whitespace)
    }

    /// Should the supervisor read and answer more requests now?
    pub fn wants_requests(&self) -> bool {
        !self.busy && !self.close_after_flush && !self.following && self.queued() < OUT_HIGH_WATER
    }

    /// At the end: write what is queued, then shut the write side so the
    /// peer sees the end after the last line; what the peer sends is read
    /// and dropped. True while the peer has neither hung up (once all is
    /// written) nor broken the connection.
    pub fn part(&mut self, buf: &mut [u8], now: Instant) -> bool {
        self.flush(now);
        if self.broken {
            return false;
        }
        if self.queued() == 0 && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown_write();
        }
        // Bounded: a peer that keeps sending brings new edges.
        for _ in 0..16 {
            match self.stream.read(buf) {
                Ok(0) => return self.queued() > 0,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Finished: drop the connection.
    pub fn done(&self) -> bool {
        self.broken
            || (self.close_after_flush && self.queued() == 0)
            || (self.read_closed
                && !self.busy
                && !self.following
                && self.queued() == 0
                && !self.has_input())
    }

    /// When this connection times out, if it may: the idle timeout (no
    /// request, no output taken), or the request timeout.
    pub fn deadline(&self) -> Option<Instant> {
        let waiting = self.queued() == 0 && (self.busy || self.following);
        let idle = (!waiting).then(|| self.last_activity + IDLE_TIMEOUT);
        let request = self
            .partial_since
            .filter(|_| self.wants_requests())
            .map(|t| t + REQUEST_TIMEOUT);
        idle.into_iter().chain(request).min()
    }

    /// The deadline has passed: an incomplete request is answered with an
    /// error and the connection closed; an idle connection is dropped.
    pub fn expire(&mut self, now: Instant) {
        let late_request = self
            .partial_since
            .is_some_and(|t| t + REQUEST_TIMEOUT <= now && self.wants_requests());
        if late_request {
            let msg = format!(
                "request not complete within {} s of its first byte",
                REQUEST_TIMEOUT.as_secs()
            );
            self.discard_input();
            self.send(&Response::err(msg), now);
            self.close_after_flush = true;
        } else {
            self.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Conn, Follows, Scan, Stream, ENCODE_AHEAD};
    use crate::access::{Peer, Role, Who};
    use shared::protocol::Response;
    use std::io::Read;
    use std::time::Instant;

    /// A connection from a local root peer, and the client's end.
    fn conn() -> (Conn, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let who = Who {
            peer: Peer::Unix {
                uid: 0,
                gid: 0,
                pid: 1,
            },
            role: Role::Full,
        };
        let stream = Stream::Unix(mio::net::UnixStream::from_std(a));
        (Conn::new(stream, who, Instant::now()), b)
    }

    /// Read `len` bytes of `c`'s output from its peer `b`, flushing `c` as
    /// the socket takes more. A byte missing fails the test instead of
    /// hanging it.
    fn read_out(
        c: &mut Conn,
        b: &mut std::os::unix::net::UnixStream,
        len: usize,
        now: Instant,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        while got.len() < len {
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            c.flush(now);
        }
        got
    }

    /// A log answer encoded piece by piece is the same bytes as encoded
    /// whole, whatever comes after it; a reader that never reads holds at
    /// most a piece of it encoded.
    #[test]
    fn a_log_answer_is_encoded_as_the_socket_takes_it() {
        let (mut c, mut b) = conn();
        let now = Instant::now();
        let logs: Vec<String> = (0..20_000)
            .map(|i| format!("{i} \u{1}\"\\ é {}", "x".repeat(i % 300)))
            .collect();
        let answer = Response::ServiceLogs { logs };
        let follow = Response::ServiceLogs {
            logs: vec!["new \u{2}".into()],
        };
        let mut want = serde_json::to_vec(&answer).unwrap();
        want.push(b'\n');
        for r in [&follow, &Response::ok("after")] {
            want.extend(serde_json::to_vec(r).unwrap());
            want.push(b'\n');
        }
        c.start_follow(vec![answer], Follows::Service, now);
        c.flush(now);
        c.send_follow(&super::encode_line(&follow), 1, now);
        c.send(&Response::ok("after"), now);
        c.flush(now);
        // The socket took what it could; only a piece more is encoded.
        assert!(c.outbuf.len() - c.out_head <= 2 * ENCODE_AHEAD);
        assert!(c.queued() > 1_000_000, "{}", c.queued());
        let got = read_out(&mut c, &mut b, want.len(), now);
        assert_eq!(c.queued(), 0);
        assert!(got == want, "bytes differ");
        // Small answers are encoded at once, in one piece.
        c.answer(Response::ServiceLogs { logs: vec![] }, now);
        assert_eq!(c.outbuf, b"{\"ServiceLogs\":{\"logs\":[]}}\n");
    }

    /// An events follower that stopped reading is dropped past
    /// FOLLOW_LIMIT, and what comes after in the same batch (a burst of
    /// events) is not queued for it any more.
    #[test]
    fn a_dropped_follower_queues_nothing_more() {
        let (mut c, _b) = conn();
        let now = Instant::now();
        c.start_follow(vec![], Follows::Events, now);
        let line = super::encode_line(&Response::ok("x".repeat(1000)));
        while !c.broken {
            c.send_follow(&line, 1, now);
            c.flush(now);
        }
        let at_drop = c.queued();
        assert!(at_drop <= super::FOLLOW_LIMIT + 2000, "{at_drop}");
        for _ in 0..10_000 {
            c.send_follow(&line, 1, now);
        }
        assert_eq!(c.queued(), at_drop);
    }

    /// Found by adversarial review 8 (/tmp/wadv8/repro/6): `logs -f` of a
    /// burst, read as fast as initctl could, was dropped past FOLLOW_LIMIT
    /// with its last line cut, and initctl failed on it. A log follower
    /// that still takes output skips what does not fit, whole outputs
    /// only, and once it has caught up is told how many lines it missed,
    /// before the next ones; one that takes nothing for FOLLOW_STALL is
    /// dropped.
    #[test]
    fn a_log_follower_that_falls_behind_skips_lines_and_is_told() {
        let (mut c, mut b) = conn();
        let t = Instant::now();
        c.start_follow(vec![], Follows::Service, t);
        let piece = |n: usize| Response::ServiceLogs {
            logs: vec![format!("{n:0>999}")],
        };
        let mut sent = 0;
        while c.skipped == 0 {
            c.send_follow(&super::encode_line(&piece(sent)), 1, t);
            c.flush(t);
            sent += 1;
        }
        let held = c.queued();
        for n in sent..sent + 99 {
            c.send_follow(&super::encode_line(&piece(n)), 1, t);
        }
        assert!(!c.broken, "a follower that read lately is kept");
        assert_eq!(c.queued(), held, "nothing more queued");
        assert_eq!(c.skipped, 100);
        // It reads all that was queued, then the next output comes.
        b.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut drain = |c: &mut Conn, got: &mut Vec<u8>| {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                c.flush(t);
                match b.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ if c.queued() == 0 => return,
                    _ => {}
                }
            }
        };
        drain(&mut c, &mut got);
        c.send_follow(&super::encode_line(&piece(0)), 1, t);
        drain(&mut c, &mut got);
        let lines: Vec<serde_json::Value> = got
            .split(|x| *x == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("whole lines only"))
            .collect();
        assert_eq!(
            lines.len(),
            sent - 1 + 2,
            "the queued, the notice, the next"
        );
        let notice = lines[lines.len() - 2]["ServiceLogs"]["logs"][0]
            .as_str()
            .unwrap();
        assert!(
            notice.ends_with("[init] 100 lines not sent: this follower fell behind (they are in the log files: initctl logs)"),
            "{notice}"
        );
        assert_eq!(
            lines[lines.len() - 1],
            serde_json::to_value(piece(0)).unwrap()
        );
        // Over the limit again, and no output taken for FOLLOW_STALL: dropped.
        while c.skipped == 0 {
            c.send_follow(&super::encode_line(&piece(1)), 1, t);
            c.flush(t);
        }
        let later = c.last_activity + super::FOLLOW_STALL;
        c.send_follow(&super::encode_line(&piece(2)), 1, later);
        assert!(c.broken, "a follower that stopped reading is dropped");
    }

    /// One output bigger than FOLLOW_LIMIT (a `boot-finished` event naming
    /// 1,100 failed services with long reasons) reaches a follower that
    /// reads; one that has not taken it by the next output is dropped.
    #[test]
    fn one_output_bigger_than_the_limit_keeps_the_follower() {
        let (mut c, mut b) = conn();
        let now = Instant::now();
        c.start_follow(vec![], Follows::Events, now);
        let big = Response::ok("x".repeat(super::FOLLOW_LIMIT + 100_000));
        let mut want = serde_json::to_vec(&big).unwrap();
        want.push(b'\n');
        let big = super::encode_line(&big);
        assert!(big == want);
        c.send_follow(&big, 1, now);
        c.flush(now);
        assert!(!c.broken, "a follower that reads is kept");
        let got = read_out(&mut c, &mut b, want.len(), now);
        assert!(got == want, "bytes differ");
        assert!(!c.broken);
        // Not read any more: dropped once more than the limit waits, and
        // never holding more than the limit and one output.
        for _ in 0..3 {
            c.send_follow(&big, 1, now);
            c.flush(now);
            assert!(c.queued() <= super::FOLLOW_LIMIT + want.len());
        }
        assert!(c.broken, "a follower that stopped reading is dropped");
    }

    /// Broken JSON ends the connection however it arrives, also when its
    /// first key already names no request (the fuzzer's find: answered as
    /// "unknown variant" when whole, fatal when in pieces); JSON that is
    /// well-formed but no request is answered and the connection goes on,
    /// also a request with a key twice (refused, as the original system's
    /// parse did: which of the two would count is not JSON's to say).
    #[test]
    fn broken_json_is_fatal_even_when_its_first_key_is_unknown() {
        use super::Next;
        use std::io::Write;
        let now = Instant::now();
        let mut buf = [0u8; super::READ_SIZE];
        let mut next = |input: &[u8]| {
            let (mut c, mut b) = conn();
            b.write_all(input).unwrap();
            drop(b);
            c.fill(&mut buf, true);
            c.next(now)
        };
        let broken = br#"{"Se2vicstemReload"eStatu?":{"na"#;
        assert!(matches!(next(broken), Next::Fatal(_)));
        assert!(matches!(next(br#"{"Nope":1}"#), Next::Invalid(_)));
        assert!(matches!(
            next(br#"{"ServiceStatus":{"name":"a","name":"b"}}"#),
            Next::Invalid(e) if e.contains("duplicate field `name`")
        ));
        let many = format!("[{}]", vec![r#"{"a":1}"#; 8000].join(","));
        assert!(matches!(
            next(many.as_bytes()),
            Next::Invalid(e) if e == "invalid request: a request is a JSON string or object, not an array"
        ));
        for (scalar, what) in [
            (&b"42 "[..], "a number (`42`)"),
            (b"-1.5e3 ", "a number (`-1.5e3`)"),
            (b"true ", "a boolean (`true`)"),
            (b"null ", "null (`null`)"),
            (
                &[b'7'; 40],
                "a number (`77777777777777777777777777777777...`)",
            ),
        ] {
            let want = format!("invalid request: a request is a JSON string or object, not {what}");
            assert!(
                matches!(next(scalar), Next::Invalid(e) if e == want),
                "{scalar:?}"
            );
        }
        let broken = format!("[{},{{\"a\" 1}}]", vec![r#"{"a":1}"#; 8000].join(","));
        assert!(matches!(next(broken.as_bytes()), Next::Fatal(_)));
    }

    /// A number cut short after its `.` is not garbage yet (the fuzzer's
    /// second find, also on the code before this session): serde_json calls
    /// it an invalid number, not EOF. The rest arrives and is answered.
    #[test]
    fn a_number_cut_after_its_point_waits_for_the_rest() {
        use super::Next;
        use std::io::Write;
        let now = Instant::now();
        let mut buf = [0u8; super::READ_SIZE];
        let (mut c, mut b) = conn();
        b.write_all(br#"{"ServiceLogs":{"name":"a","lines":1."#)
            .unwrap();
        c.fill(&mut buf, false);
        assert!(matches!(c.next(now), Next::Incomplete));
        b.write_all(b"5}}\n\"Ping\"\n").unwrap();
        c.fill(&mut buf, false);
        assert!(matches!(c.next(now), Next::Invalid(_)));
        assert!(matches!(
            c.next(now),
            Next::Request(shared::protocol::Request::Ping)
        ));
        // Garbage after the point is still garbage once it is not last.
        let (mut c, mut b) = conn();
        b.write_all(b"1.x ").unwrap();
        c.fill(&mut buf, false);
        assert!(matches!(c.next(now), Next::Fatal(_)));
    }

    fn end(input: &[u8]) -> Option<usize> {
        Scan::default().feed(input)
    }

    #[test]
    fn finds_the_end_of_each_kind_of_value() {
        assert_eq!(end(b"\"Ping\" rest"), Some(6));
        assert_eq!(end(br#"{"a":{"b":"}"}} x"#), Some(15));
        assert_eq!(end(br#"["\"]", [1]] x"#), Some(12));
        assert_eq!(end(br#""a\\" x"#), Some(5));
        assert_eq!(end(b"42 x"), Some(2));
        assert_eq!(end(b"true{"), Some(4));
        assert_eq!(end(b"}"), Some(1));
        assert_eq!(end(br#"{"a":"#), None);
        assert_eq!(end(b"42"), None);
        assert_eq!(end(br#""\""#), None);
    }

    #[test]
    fn pieces_give_the_same_end_as_the_whole() {
        let whole = br#"{"ServiceLogs":{"name":"a\"}b","lines":5}}  "Ping""#;
        let want = end(whole);
        for cut in 1..whole.len() {
            let mut s = Scan::default();
            let mut got = None;
            for upto in [cut, whole.len()] {
                got = s.feed(&whole[..upto]);
                if got.is_some() {
                    break;
                }
            }
            assert_eq!(got, want, "cut at {cut}");
        }
        // Agrees with serde on where the value ends.
        let mut it = serde_json::Deserializer::from_slice(whole).into_iter::<serde_json::Value>();
        it.next().unwrap().unwrap();
        assert_eq!(want, Some(it.byte_offset()));
    }
}
