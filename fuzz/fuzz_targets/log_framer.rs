//! The log line framer, through `ServiceLog` (framing, then the file
//! writer and the ring): arbitrary bytes on stdout and stderr, cut into
//! arbitrary chunks, interleaved with pipe closes and init's own messages.
//!
//! Input: a list of operations, each an op byte, then for most ops a
//! length byte and that many bytes:
//! * op % 16 in 0..=9: feed the bytes to stdout (even op) or stderr (odd);
//! * 10, 11: feed one long run: the bytes repeated to `k * 512 + j` bytes
//!   (`k`, `j`: the two bytes after the length byte), to reach `MAX_LINE`;
//! * 12, 13: close stdout / stderr (no length byte);
//! * 14, 15: an `[init]` event with the bytes as its message.
//!
//! Checked: the lines of each pipe do not depend on how its bytes were cut
//! (the same bytes fed in one call per close give the same lines); every
//! line has its prefix and at most `MAX_LINE` bytes of output in it; for
//! valid UTF-8 the lines are the input's lines, split into pieces of
//! `MAX_LINE - 3..=MAX_LINE` bytes; `tail` gives back the last lines.
#![no_main]

use init_fuzz::logs::{LogSettings, Pipe, ServiceLog, MAX_LINE};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `[2026-03-01 12:34:56.789] `
const TS_LEN: usize = 26;
/// Bytes fed in one input, at most.
const MAX_FED: usize = 256 * 1024;

enum Op {
    Feed(Pipe, Vec<u8>),
    Close(Pipe),
    Event(String),
}

fn pipe(op: u8) -> Pipe {
    if op & 1 == 0 {
        Pipe::Stdout
    } else {
        Pipe::Stderr
    }
}

fn decode(data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut fed = 0usize;
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        let kind = op % 16;
        if kind == 12 || kind == 13 {
            ops.push(Op::Close(pipe(kind)));
            continue;
        }
        let len = it.next().unwrap_or(0) as usize;
        let (k, j) = if kind == 10 || kind == 11 {
            (
                it.next().unwrap_or(0) as usize,
                it.next().unwrap_or(0) as usize,
            )
        } else {
            (0, 0)
        };
        let bytes: Vec<u8> = it.by_ref().take(len).collect();
        match kind {
            0..=9 => {
                fed += bytes.len();
                ops.push(Op::Feed(pipe(kind), bytes));
            }
            10 | 11 => {
                let unit = if bytes.is_empty() { vec![b'x'] } else { bytes };
                let n = k * 512 + j;
                let mut run = unit.repeat(n / unit.len() + 1);
                run.truncate(n);
                fed += run.len();
                ops.push(Op::Feed(pipe(kind), run));
            }
            _ => ops.push(Op::Event(String::from_utf8_lossy(&bytes).into_owned())),
        }
        if fed > MAX_FED {
            break;
        }
    }
    ops
}

fn settings() -> &'static LogSettings {
    static S: OnceLock<LogSettings> = OnceLock::new();
    S.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("init-fuzz-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        LogSettings {
            dir,
            max_size: 1 << 20,
            max_files: 1,
        }
    })
}

/// Where a formatted line came from.
#[derive(Clone, Copy, PartialEq)]
enum Src {
    Pipe(Pipe),
    Event,
}

/// The text of a line after its `[ts] ` and marker; checks the prefix.
fn body(line: &str, src: Src) -> &str {
    let b = line.as_bytes();
    assert!(
        b.len() >= TS_LEN && b[0] == b'[' && &b[TS_LEN - 2..TS_LEN] == b"] ",
        "{line:?}"
    );
    let rest = &line[TS_LEN..];
    let marker = match src {
        Src::Pipe(Pipe::Stdout) => "",
        Src::Pipe(Pipe::Stderr) => "[stderr] ",
        Src::Event => "[init] ",
    };
    rest.strip_prefix(marker)
        .unwrap_or_else(|| panic!("{line:?} lacks {marker:?}"))
}

fuzz_target!(|data: &[u8]| {
    let s = settings();
    let ops = decode(data);

    // As the ops say.
    let mut log = ServiceLog::new("cut");
    let mut all: Vec<String> = Vec::new();
    let mut got: Vec<(Src, String)> = Vec::new();
    let mut run =
        |log: &mut ServiceLog, src: Src, f: &mut dyn FnMut(&mut ServiceLog, &mut Vec<String>)| {
            let mut out = Vec::new();
            f(log, &mut out);
            for l in out {
                got.push((src, l.clone()));
                all.push(l);
            }
        };
    for op in &ops {
        match op {
            Op::Feed(p, bytes) => run(&mut log, Src::Pipe(*p), &mut |l, o| l.feed(s, *p, bytes, o)),
            Op::Close(p) => run(&mut log, Src::Pipe(*p), &mut |l, o| {
                l.close_stream(s, *p, o)
            }),
            Op::Event(m) => run(&mut log, Src::Event, &mut |l, o| l.event(s, m, o)),
        }
    }
    for p in Pipe::ALL {
        run(&mut log, Src::Pipe(p), &mut |l, o| l.close_stream(s, p, o));
    }

    // Every line: its prefix, bounded.
    for (src, line) in &got {
        let b = body(line, *src);
        // Lossy decoding turns one bad byte into 3.
        assert!(b.len() <= 3 * MAX_LINE, "{}", b.len());
        assert!(!b.contains('\n'));
    }

    // Each event: its lines.
    let events: Vec<&str> = got
        .iter()
        .filter(|(src, _)| *src == Src::Event)
        .map(|(src, l)| body(l, *src))
        .collect();
    let want: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Event(m) => Some(m.strip_suffix('\n').unwrap_or(m).split('\n')),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(events, want);

    for p in Pipe::ALL {
        let cut: Vec<&str> = got
            .iter()
            .filter(|(src, _)| *src == Src::Pipe(p))
            .map(|(src, l)| body(l, *src))
            .collect();

        // The same bytes, one feed per segment between closes.
        let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
        for op in &ops {
            match op {
                Op::Feed(q, bytes) if *q == p => {
                    segments.last_mut().unwrap().extend_from_slice(bytes)
                }
                Op::Close(q) if *q == p => segments.push(Vec::new()),
                _ => {}
            }
        }
        let mut whole = ServiceLog::new("whole");
        let mut out = Vec::new();
        for seg in &segments {
            whole.feed(s, p, seg, &mut out);
            whole.close_stream(s, p, &mut out);
        }
        let one: Vec<&str> = out.iter().map(|l| body(l, Src::Pipe(p))).collect();
        assert_eq!(
            cut.len(),
            one.len(),
            "{p:?}: line count depends on the cuts"
        );
        assert!(cut == one, "{p:?}: lines depend on the cuts");

        // The input's lines: one piece each up to `MAX_LINE` bytes (lossy
        // for invalid UTF-8); longer valid ones in pieces of
        // `MAX_LINE - 3..=MAX_LINE` bytes. (Where a long invalid line is
        // cut is left to the comparison above.)
        let mut pieces = cut.iter();
        'segments: for seg in &segments {
            let mut lines: Vec<&[u8]> = seg.split(|&b| b == b'\n').collect();
            if seg.is_empty() || seg.ends_with(b"\n") {
                lines.pop();
            }
            for line in lines {
                if line.len() <= MAX_LINE {
                    let piece = pieces.next().expect("a line is missing");
                    assert!(*piece == String::from_utf8_lossy(line), "{piece:?}");
                    continue;
                }
                let Ok(line) = std::str::from_utf8(line) else {
                    pieces = [].iter();
                    break 'segments;
                };
                let mut joined = String::new();
                loop {
                    let piece = pieces.next().expect("a piece is missing");
                    joined.push_str(piece);
                    if joined.len() >= line.len() {
                        assert!(piece.len() <= MAX_LINE);
                        break;
                    }
                    let n = piece.len();
                    assert!((MAX_LINE - 3..=MAX_LINE).contains(&n), "{n}");
                }
                assert!(joined == line, "pieces do not make up the line");
            }
        }
        assert!(
            pieces.next().is_none(),
            "{p:?}: more lines than the input has"
        );
    }

    // The newest lines come back from tail (ring or files).
    if log.dropped() == (0, 0) {
        let k = all.len().min(5);
        assert_eq!(
            log.tail_within(s, k, usize::MAX).0,
            all[all.len() - k..].to_vec()
        );
    }
});
