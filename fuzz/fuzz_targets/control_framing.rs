//! The control connection's request decoder and framing (`control::Conn`
//! over a real Unix socket pair), driven the way `clients.rs` drives it:
//! `fill`, then `next` while it `wants_requests`, `send` an answer for
//! each value, `flush`, drop when `done`.
//!
//! Input: byte 0 seeds the cuts, byte 1 is flags (bit 0: half-close after
//! the last byte; bits 1-7: `r`, the rest is sent `1 + r * r` times, at
//! most `MAX_STREAM` bytes), the rest is the byte stream. The stream is
//! written in chunks of pseudo-random sizes (1 byte, up to 16, up to 4096
//! or up to 64 KiB, by the seed), with or without a server turn between;
//! after `MAX_CUTS` chunks, the rest at once.
//!
//! Checked: no panic and no stall; the input buffer never holds more than
//! `MAX_REQUEST_BYTES` plus one read; at most one answer per non-blank byte;
//! every request re-encodes to JSON that decodes to the same request; every
//! answer reaches the client as one JSON response line; the connection is
//! dropped exactly when it should be (a fatal error, or the client
//! half-closed and everything was answered); and the answers are the same
//! as for the same stream written in one piece.
#![no_main]

use init_fuzz::control::{Conn, Next, Stream};
use libfuzzer_sys::fuzz_target;
use mio::net::UnixStream;
use shared::protocol::{Request, Response};
use shared::MAX_REQUEST_BYTES;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

/// A local root peer (the framing does not depend on it).
const ROOT: init_fuzz::access::Who = init_fuzz::access::Who {
    peer: init_fuzz::access::Peer::Unix {
        uid: 0,
        gid: 0,
        pid: 1,
    },
    role: init_fuzz::access::Role::Full,
};

/// What `Conn::fill` reads at once.
const READ_SIZE: usize = init_fuzz::control::READ_SIZE;
const MAX_STREAM: usize = 256 * 1024;
const MAX_CUTS: u32 = 512;

#[derive(Debug, PartialEq)]
enum Answer {
    Request(Request),
    Invalid(String),
    /// Its message is not compared: which error ends a garbled stream
    /// may depend on how much of it had arrived.
    Fatal,
}

struct Server {
    conn: Option<Conn>,
    answers: Vec<Answer>,
}

impl Server {
    /// One readiness turn, as `Clients::on_conn` + `serve` + `finish`;
    /// `closed`: the client has half-closed (the reactor's event then says
    /// so, and the read goes on to the end).
    fn turn(&mut self, closed: bool) {
        let now = Instant::now();
        let Some(c) = self.conn.as_mut() else { return };
        let mut buf = [0u8; READ_SIZE];
        c.fill(&mut buf, closed);
        check_bound(c);
        c.flush(now);
        while c.wants_requests() {
            match c.next(now) {
                Next::Incomplete => {
                    if c.may_have_more() && c.fill(&mut buf, true) {
                        check_bound(c);
                        continue;
                    }
                    break;
                }
                Next::Invalid(msg) => {
                    c.send(&Response::err(msg.clone()), now);
                    self.answers.push(Answer::Invalid(msg));
                }
                Next::Fatal(msg) => {
                    c.send(&Response::err(msg), now);
                    c.close_after_flush = true;
                    self.answers.push(Answer::Fatal);
                }
                Next::Request(req) => {
                    let json = serde_json::to_vec(&req).expect("a request encodes");
                    let back: Request = serde_json::from_slice(&json).expect("and decodes");
                    assert_eq!(back, req);
                    c.send(&Response::Pong, now);
                    self.answers.push(Answer::Request(req));
                }
            }
            check_bound(c);
        }
        c.flush(now);
        if c.done() {
            self.conn = None;
        }
    }
}

fn check_bound(c: &Conn) {
    assert!(
        c.buffered() <= MAX_REQUEST_BYTES + READ_SIZE,
        "input buffer holds {} bytes",
        c.buffered()
    );
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

struct Run {
    answers: Vec<Answer>,
    /// Bytes the server took before it dropped the connection (all, if it
    /// did not).
    written: usize,
    received: Vec<u8>,
    dropped: bool,
}

/// Write `stream` in `cuts` chunks, then half-close if asked; drive the
/// server until nothing moves.
fn run(stream: &[u8], cuts: &mut dyn FnMut() -> (usize, bool), half_close: bool) -> Run {
    let (mut client, server_end) = UnixStream::pair().expect("socket pair");
    let mut server = Server {
        conn: Some(Conn::new(Stream::Unix(server_end), ROOT, Instant::now())),
        answers: Vec::new(),
    };
    let mut received = Vec::new();
    let drain = |client: &mut UnixStream, received: &mut Vec<u8>| {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match client.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The server closed with input unread (after a fatal
                // error): what it sent before is read first.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("client read: {e}"),
            }
        }
    };
    let mut written = 0usize;
    'write: while written < stream.len() {
        let (len, turn) = cuts();
        let end = written.saturating_add(len).min(stream.len());
        let mut stalls = 0u32;
        while written < end {
            if server.conn.is_none() {
                break 'write; // dropped: writing now would raise SIGPIPE
            }
            match client.write(&stream[written..end]) {
                Ok(n) => {
                    written += n;
                    stalls = 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let before = (server.answers.len(), received.len());
                    server.turn(false);
                    drain(&mut client, &mut received);
                    if (server.answers.len(), received.len()) == before {
                        stalls += 1;
                        assert!(stalls < 1000, "the server stopped reading");
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("client write: {e}"),
            }
        }
        if turn {
            server.turn(false);
            drain(&mut client, &mut received);
        }
    }
    if half_close && server.conn.is_some() {
        client.shutdown(Shutdown::Write).expect("shutdown");
    }
    loop {
        let before = (server.answers.len(), received.len(), server.conn.is_some());
        server.turn(half_close);
        drain(&mut client, &mut received);
        if (server.answers.len(), received.len(), server.conn.is_some()) == before {
            break;
        }
    }
    Run {
        answers: server.answers,
        written,
        received,
        dropped: server.conn.is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&seed), Some(&flags)) = (data.first(), data.get(1)) else {
        return;
    };
    let payload = &data[2..];
    let half_close = flags & 1 == 1;
    let r = (flags >> 1) as usize;
    let times = (1 + r * r).min(MAX_STREAM / payload.len().max(1)).max(1);
    let stream = payload.repeat(times);

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (u64::from(seed) << 32 | u64::from(seed)));
    let max_chunk = [1, 16, 4096, 64 * 1024][usize::from(seed % 4)];
    // After MAX_CUTS cuts, the rest in one piece (keeps each run short).
    let mut left = MAX_CUTS;
    let mut cuts = || {
        let n = rng.next();
        left = left.saturating_sub(1);
        if left == 0 {
            return (usize::MAX, true);
        }
        (1 + (n % max_chunk as u64) as usize, n >> 63 == 0)
    };
    let a = run(&stream, &mut cuts, half_close);
    let sent = &stream[..a.written];

    // Bounded by the input.
    let non_blank = sent.iter().filter(|b| !b.is_ascii_whitespace()).count();
    assert!(a.answers.len() <= non_blank, "{} answers", a.answers.len());

    // Every answer arrived, one JSON line each.
    assert!(a.received.is_empty() || a.received.ends_with(b"\n"));
    let lines: Vec<&[u8]> = a
        .received
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), a.answers.len());
    for l in lines {
        serde_json::from_slice::<Response>(l).expect("a response line");
    }

    // Dropped when, and only when, it should be.
    let fatal = a.answers.contains(&Answer::Fatal);
    assert_eq!(
        a.answers.iter().position(|x| *x == Answer::Fatal),
        fatal.then(|| a.answers.len() - 1)
    );
    assert_eq!(a.dropped, fatal || half_close, "dropped: {}", a.dropped);

    // The cuts change nothing once the stream has ended. Before its end,
    // a cut stream may have fewer answers so far, never others: garbage in
    // an incomplete request is looked for each time the buffer doubles (so
    // dribbling costs init linear work), and the 10 s completion deadline
    // answers the rest.
    let b = run(&stream, &mut || (usize::MAX, true), half_close);
    if half_close {
        assert_eq!(a.answers, b.answers, "the answers depend on the cuts");
    } else {
        assert!(
            b.answers.starts_with(&a.answers),
            "the answers depend on the cuts: {:?} vs {:?}",
            a.answers,
            b.answers
        );
    }
});
