//! Per-service log files: timestamped lines, size-based rotation, an
//! in-memory ring of recent lines, reading back the last N lines.
//!
//! On-disk format, one line per record, UTC timestamps with milliseconds:
//!
//! ```text
//! [2026-03-01 12:34:56.789] a line the service wrote to stdout
//! [2026-03-01 12:34:56.789] [stderr] a line the service wrote to stderr
//! [2026-03-01 12:34:56.790] [init] started with PID 12
//! ```
//!
//! The text after the prefix is the service's bytes as they came, minus the
//! `\n` (a `\r` is kept), invalid UTF-8 replaced by U+FFFD.
//!
//! Everything here runs inside PID 1, on the single-threaded event loop:
//! nothing panics, nothing blocks for long, memory is bounded, and every IO
//! error is absorbed (lines that could not be written are counted, see
//! [`ServiceLog::dropped`]) instead of being returned to the caller.
//!
//! Design notes:
//! * One timestamp is taken per `feed`/`event`/`close_stream` call: all the
//!   lines of one chunk read from a pipe were received at the same moment.
//! * The lines of one call are formatted into one buffer, which is written
//!   with one `write(2)` (more only at rotation points, or when one call
//!   brings more than [`FLUSH_BYTES`] of formatted text).
//! * The size of the current file is kept in memory (one `fstat` per open).
//! * After a failure (ENOSPC, EACCES, EROFS, a missing directory, ...) the
//!   file handle is dropped and reopening is tried again on later writes, at
//!   most once per [`RETRY_INTERVAL`]. The first line written after a
//!   recovery is `[ts] [init] log writing resumed: dropped N lines (M bytes)`.
//!   Lines are still cached and handed to followers meanwhile.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod calendar;
mod ring;
mod tail;
#[cfg(test)]
mod test_util;
mod writer;

use calendar::timestamp;
use ring::Ring;
use writer::Writer;

/// Where and how much to log (from init.yaml).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub dir: PathBuf,
    /// Rotate `<name>.log` before a line would make it larger than this.
    /// 0 means no limit (never rotate).
    pub max_size: u64,
    /// How many rotated files (`<name>.log.1` ... `<name>.log.N`) to keep.
    /// 0 means the current file is simply started afresh when full.
    pub max_files: u32,
}

/// The service's output pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdout,
    Stderr,
}

// `ALL` and `index` are for the supervisor's per-pipe arrays (stdout
// first); nothing in this crate uses them yet.
#[allow(dead_code)]
impl Pipe {
    /// Both pipes, in `index` order.
    pub const ALL: [Pipe; 2] = [Pipe::Stdout, Pipe::Stderr];

    /// 0 for stdout, 1 for stderr.
    pub fn index(self) -> usize {
        match self {
            Pipe::Stdout => 0,
            Pipe::Stderr => 1,
        }
    }
}

/// Upper bound of the text held in the in-memory ring of recent lines
/// (sum of the formatted lines' lengths, without newlines). The newest line
/// is always kept, even when it alone is larger, so the real bound is
/// `CACHE_BYTES` plus one maximal line (the buffer holding the ring may
/// reach about twice that before it is compacted).
pub const CACHE_BYTES: usize = 64 * 1024;

/// Longest line (in bytes of the service's output, before the timestamp
/// prefix) written as one record; longer lines are split into pieces of
/// this size (a piece may end up to 3 bytes earlier so as not to cut a UTF-8
/// character in two). This also bounds each partial-line buffer.
pub const MAX_LINE: usize = 64 * 1024;

/// After a failed open, write or rotation, the disk is not tried again
/// before this has passed.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Formatted text of one call is written out (and handed over) whenever it
/// grows past this, which bounds the memory a single call uses.
pub const FLUSH_BYTES: usize = 256 * 1024;

/// `tail` reads files backwards in chunks of this size.
pub const TAIL_CHUNK: usize = 64 * 1024;

/// `tail` stops collecting lines once they add up to this many bytes (the
/// size the control protocol caps an answer at; only reached with long
/// lines: 10000 lines of 420 bytes).
pub const TAIL_MAX_BYTES: usize = 4 * 1024 * 1024;

/// One service's log (also used for init's own `init.log`).
pub struct ServiceLog {
    /// Incomplete last line of stdout / stderr (at most `MAX_LINE` bytes).
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
    /// Formatted lines of the current call, each followed by `\n`.
    batch: String,
    /// End offset (just past the `\n`) of each line in `batch`.
    ends: Vec<usize>,
    /// The files on disk, and what could not be written to them.
    writer: Writer,
    /// Recent formatted lines.
    ring: Ring,
}

impl ServiceLog {
    pub fn new(name: &str) -> Self {
        ServiceLog {
            partial_out: Vec::new(),
            partial_err: Vec::new(),
            batch: String::new(),
            ends: Vec::new(),
            writer: Writer::new(name),
            ring: Ring::default(),
        }
    }

    /// Bytes read from the service's pipe. Complete lines are timestamped,
    /// written and cached; each formatted line is also pushed to `out`
    /// (for followers).
    pub fn feed(&mut self, s: &LogSettings, stream: Pipe, bytes: &[u8], out: &mut Vec<String>) {
        self.feed_inner(s, stream, bytes, Some(out));
    }

    /// Like [`feed`](Self::feed) for when nobody follows this log: the
    /// formatted lines are not handed back, which saves one allocation per
    /// line. (A "resumed" line is not handed back either.)
    pub fn feed_unfollowed(&mut self, s: &LogSettings, stream: Pipe, bytes: &[u8]) {
        self.feed_inner(s, stream, bytes, None);
    }

    fn feed_inner(
        &mut self,
        s: &LogSettings,
        stream: Pipe,
        bytes: &[u8],
        mut out: Option<&mut Vec<String>>,
    ) {
        if bytes.is_empty() {
            return;
        }
        let ts = timestamp(SystemTime::now());
        let prefix = line_prefix(&ts, stream);
        self.batch.clear();
        self.ends.clear();
        let mut partial = std::mem::take(self.partial_mut(stream));
        let mut rest = bytes;
        if !partial.is_empty() {
            match find_newline(rest) {
                Some(i) => {
                    let (line, tail) = rest.split_at(i);
                    partial.extend_from_slice(line);
                    self.add_pieces(&prefix, &partial, valid_prefix(&partial), true);
                    partial.clear();
                    rest = tail.get(1..).unwrap_or(&[]);
                }
                None => {
                    partial.extend_from_slice(rest);
                    rest = &[];
                    let used = self.add_pieces(&prefix, &partial, valid_prefix(&partial), false);
                    partial.drain(..used.min(partial.len()));
                }
            }
        }
        // Validate the rest once; lines inside the valid part need no
        // further check.
        let text = valid_prefix(rest);
        self.batch
            .reserve(rest.len().min(FLUSH_BYTES) + rest.len().min(FLUSH_BYTES) / 2);
        let mut pos = 0usize;
        for end in Newlines::new(rest) {
            match text.get(pos..=end) {
                // The common case: valid, short; copied with its newline.
                Some(t) if end - pos <= MAX_LINE => {
                    self.batch.push_str(&prefix);
                    self.batch.push_str(t);
                    self.ends.push(self.batch.len());
                }
                _ => {
                    let line = rest.get(pos..end).unwrap_or(&[]);
                    let line_text = text.get(pos.min(text.len())..end.min(text.len()));
                    self.add_pieces(&prefix, line, line_text.unwrap_or(""), true);
                }
            }
            pos = end + 1;
            if self.batch.len() >= FLUSH_BYTES {
                self.commit(s, &ts, out.as_deref_mut());
            }
        }
        if let Some(tail) = rest.get(pos..).filter(|t| !t.is_empty()) {
            let tail_text = text.get(pos.min(text.len())..).unwrap_or("");
            let used = self.add_pieces(&prefix, tail, tail_text, false);
            partial.extend_from_slice(tail.get(used..).unwrap_or(&[]));
        }
        if partial.capacity() > 2 * MAX_LINE {
            partial.shrink_to(MAX_LINE); // it grew around one big chunk
        }
        *self.partial_mut(stream) = partial;
        self.commit(s, &ts, out);
    }

    /// The pipe closed: flush a final line that had no newline.
    pub fn close_stream(&mut self, s: &LogSettings, stream: Pipe, out: &mut Vec<String>) {
        let partial = std::mem::take(self.partial_mut(stream));
        if partial.is_empty() {
            return;
        }
        let ts = timestamp(SystemTime::now());
        self.batch.clear();
        self.ends.clear();
        self.add_pieces(
            &line_prefix(&ts, stream),
            &partial,
            valid_prefix(&partial),
            true,
        );
        self.commit(s, &ts, Some(out));
    }

    /// A lifecycle line from init itself ("started with PID 12", ...).
    /// A message with embedded newlines becomes several lines.
    pub fn event(&mut self, s: &LogSettings, msg: &str, out: &mut Vec<String>) {
        let ts = timestamp(SystemTime::now());
        let prefix = format!("[{ts}] [init] ");
        self.batch.clear();
        self.ends.clear();
        let msg = msg.strip_suffix('\n').unwrap_or(msg);
        for line in msg.split('\n') {
            self.add_pieces(&prefix, line.as_bytes(), line, true);
        }
        self.commit(s, &ts, Some(out));
    }

    /// The last `n` lines (formatted, oldest first).
    ///
    /// Served from the in-memory ring when it holds at least `n` lines,
    /// otherwise read back from `<name>.log`, `<name>.log.1`, ... (newest to
    /// oldest), each read backwards in [`TAIL_CHUNK`] pieces so only about
    /// as much as needed is read. Stops early at [`TAIL_MAX_BYTES`]. When the
    /// files hold fewer lines than the ring (writing failed), the ring wins.
    pub fn tail(&self, s: &LogSettings, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        if self.ring.len() >= n {
            return self.ring.last(n);
        }
        let lines = tail::from_files(s, self.writer.name(), n);
        if lines.len() < self.ring.len() {
            return self.ring.last(n);
        }
        lines
    }

    /// Remove the current and rotated files and empty the cache. Partial
    /// lines in flight are kept: they will go to the new file. Logging
    /// continues into a fresh file. Returns the first error other than
    /// "not found" (after trying to remove everything anyway).
    pub fn clear(&mut self, s: &LogSettings) -> io::Result<()> {
        self.ring.clear();
        self.writer.clear(s)
    }

    /// Lines and bytes dropped because the log could not be written
    /// (totals since creation; bytes count the formatted lines with their
    /// newlines).
    pub fn dropped(&self) -> (u64, u64) {
        self.writer.dropped()
    }

    fn partial_mut(&mut self, stream: Pipe) -> &mut Vec<u8> {
        match stream {
            Pipe::Stdout => &mut self.partial_out,
            Pipe::Stderr => &mut self.partial_err,
        }
    }

    /// Add `line` to the batch as one or more pieces of at most `MAX_LINE`
    /// bytes. `text` is the longest valid UTF-8 prefix of `line` (pieces in
    /// it need no checking). With `complete`, everything is added;
    /// otherwise only full pieces while more than `MAX_LINE` bytes remain
    /// (the rest may still be continued). Returns the bytes used.
    fn add_pieces(&mut self, prefix: &str, line: &[u8], text: &str, complete: bool) -> usize {
        let mut used = 0usize;
        while let Some(rest) = line.get(used..) {
            if rest.len() <= MAX_LINE {
                if complete {
                    self.add_piece(prefix, line, text, used, line.len());
                    used = line.len();
                }
                break;
            }
            let cut = piece_len(rest);
            self.add_piece(prefix, line, text, used, used + cut);
            used += cut;
        }
        used
    }

    fn add_piece(&mut self, prefix: &str, line: &[u8], text: &str, a: usize, b: usize) {
        self.batch.push_str(prefix);
        match text.get(a..b) {
            Some(t) => self.batch.push_str(t),
            None => {
                let piece = line.get(a..b).unwrap_or(&[]);
                match std::str::from_utf8(piece) {
                    Ok(t) => self.batch.push_str(t),
                    Err(_) => self.batch.push_str(&String::from_utf8_lossy(piece)),
                }
            }
        }
        self.batch.push('\n');
        self.ends.push(self.batch.len());
    }

    /// Hand the batch to `out`, write it to disk and into the ring, and
    /// empty it. A "resumed" line, if the file had to be reopened after
    /// drops, comes first everywhere.
    fn commit(&mut self, s: &LogSettings, ts: &str, out: Option<&mut Vec<String>>) {
        if self.ends.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let ends = std::mem::take(&mut self.ends);
        let resumed = self.writer.write_batch(s, ts, &batch, &ends);
        if let Some(out) = out {
            out.reserve(ends.len() + usize::from(resumed.is_some()));
            if let Some(r) = &resumed {
                out.push(r.clone());
            }
            let mut start = 0usize;
            for &end in &ends {
                let line = batch.get(start..end.saturating_sub(1)).unwrap_or("");
                out.push(line.to_owned());
                start = end;
            }
        }
        if let Some(r) = &resumed {
            self.ring.push_line(r);
        }
        self.ring.push_batch(&batch, &ends);
        self.batch = batch;
        self.ends = ends;
        self.batch.clear();
        self.ends.clear();
        if self.batch.capacity() > 2 * FLUSH_BYTES {
            self.batch = String::new(); // after a burst of long lines
        }
    }
}

/// `<dir>/<name>.log` for index 0, `<dir>/<name>.log.<index>` otherwise.
fn log_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    if index == 0 {
        dir.join(format!("{name}.log"))
    } else {
        dir.join(format!("{name}.log.{index}"))
    }
}

fn line_prefix(ts: &str, stream: Pipe) -> String {
    match stream {
        Pipe::Stdout => format!("[{ts}] "),
        Pipe::Stderr => format!("[{ts}] [stderr] "),
    }
}

/// The longest prefix of `b` that is valid UTF-8.
fn valid_prefix(b: &[u8]) -> &str {
    match std::str::from_utf8(b) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(b.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or(""),
    }
}

/// Where to cut a piece off `b` (longer than `MAX_LINE`): at `MAX_LINE`,
/// or up to 3 bytes earlier to keep a UTF-8 character whole.
fn piece_len(b: &[u8]) -> usize {
    let is_cont = |i: usize| b.get(i).is_some_and(|&c| c & 0xC0 == 0x80);
    let mut cut = MAX_LINE;
    while cut > MAX_LINE - 3 && is_cont(cut) {
        cut -= 1;
    }
    if is_cont(cut) {
        MAX_LINE // not valid UTF-8 anyway
    } else {
        cut
    }
}

/// Positions of the `\n` bytes in a slice, in order.
struct Newlines<'a> {
    h: &'a [u8],
    /// Where to search from next.
    pos: usize,
}

impl<'a> Newlines<'a> {
    fn new(h: &'a [u8]) -> Self {
        Newlines { h, pos: 0 }
    }
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let found = self.pos + find_newline(self.h.get(self.pos..)?)?;
        self.pos = found + 1;
        Some(found)
    }
}

/// Index of the first `\n`: 16 bytes at a time with the "has zero byte"
/// word trick (safe code; about as fast as SIMD for typical line lengths).
fn find_newline(h: &[u8]) -> Option<usize> {
    const LO: u128 = u128::from_ne_bytes([1; 16]);
    const HI: u128 = u128::from_ne_bytes([0x80; 16]);
    const NL: u128 = u128::from_ne_bytes([b'\n'; 16]);
    let (blocks, rest) = h.as_chunks::<16>();
    for (k, block) in blocks.iter().enumerate() {
        let x = u128::from_ne_bytes(*block) ^ NL;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return block.iter().position(|&b| b == b'\n').map(|p| 16 * k + p);
        }
    }
    rest.iter()
        .position(|&b| b == b'\n')
        .map(|p| 16 * blocks.len() + p)
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use std::time::Instant;

    #[test]
    fn pipe_indices_follow_all() {
        for (i, p) in Pipe::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        assert_eq!(Pipe::Stdout.index(), 0);
        assert_eq!(Pipe::Stderr.index(), 1);
    }

    #[test]
    fn newlines_match_naive() {
        let mut data: Vec<u8> = (0..400u32).map(|i| (i * 7 % 13) as u8 + 5).collect();
        data[63] = b'\n';
        data[64] = b'\n';
        data[200..280].fill(b'\n');
        for start in 0..70 {
            for end in start..data.len() {
                let s = &data[start..end];
                let want: Vec<usize> = (0..s.len()).filter(|&i| s[i] == b'\n').collect();
                assert_eq!(Newlines::new(s).collect::<Vec<_>>(), want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn find_newline_matches_naive() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 13) as u8 + b'\x05').collect();
        for start in 0..40 {
            for end in start..data.len() {
                let s = &data[start..end];
                assert_eq!(
                    find_newline(s),
                    s.iter().position(|&b| b == b'\n'),
                    "{start}..{end}"
                );
            }
        }
        assert_eq!(find_newline(b""), None);
        assert_eq!(find_newline(b"abcdefgh\x8a\n"), Some(9));
    }

    #[test]
    fn lines_split_across_chunks_and_markers() {
        let d = TempDir::new("chunks");
        let s = settings(&d.0, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"hel", &mut out);
        assert!(out.is_empty());
        log.feed(&s, Pipe::Stderr, b"oops", &mut out);
        log.feed(&s, Pipe::Stdout, b"lo\nwor", &mut out);
        assert_eq!(out.len(), 1);
        log.feed(&s, Pipe::Stderr, b" bad\n", &mut out);
        log.feed(&s, Pipe::Stdout, b"ld\n\nx\r\n", &mut out);
        log.event(&s, "started with PID 12", &mut out);
        log.event(&s, "two\nlines\n", &mut out);
        let got: Vec<&str> = out.iter().map(|l| strip_ts(l)).collect();
        let want = [
            "hello",
            "[stderr] oops bad",
            "world",
            "",
            "x\r",
            "[init] started with PID 12",
            "[init] two",
            "[init] lines",
        ];
        assert_eq!(got, want);
        let disk = file_lines(&d.0.join("svc.log"));
        assert_eq!(disk, out);
        assert_eq!(log.tail(&s, 100), out);
        assert_eq!(log.tail(&s, 2), out[6..].to_vec());
        assert_eq!(log.dropped(), (0, 0));
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let d = TempDir::new("utf8");
        let s = settings(&d.0, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"a\xffb\xc3\n\xc3\xa9t\xc3", &mut out);
        log.feed(&s, Pipe::Stdout, b"\xa9\n", &mut out);
        let got: Vec<&str> = out.iter().map(|l| strip_ts(l)).collect();
        assert_eq!(got, ["a\u{fffd}b\u{fffd}", "été"]);
    }

    #[test]
    fn close_stream_flushes_partial_line() {
        let d = TempDir::new("close");
        let s = settings(&d.0, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"one\ntwo", &mut out);
        log.feed(&s, Pipe::Stderr, b"err", &mut out);
        assert_eq!(out.len(), 1);
        log.close_stream(&s, Pipe::Stdout, &mut out);
        log.close_stream(&s, Pipe::Stdout, &mut out); // nothing more
        log.close_stream(&s, Pipe::Stderr, &mut out);
        let got: Vec<&str> = out.iter().map(|l| strip_ts(l)).collect();
        assert_eq!(got, ["one", "two", "[stderr] err"]);
        assert_eq!(file_lines(&d.0.join("svc.log")), out);
    }

    #[test]
    fn long_line_is_split_into_64k_pieces() {
        let d = TempDir::new("long");
        let s = settings(&d.0, 64 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        let line: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        for c in line.chunks(100_000) {
            log.feed(&s, Pipe::Stdout, c, &mut out);
            assert!(log.partial_out.len() <= MAX_LINE);
        }
        assert_eq!(out.len(), 15); // the 16th may still be completed
        log.feed(&s, Pipe::Stdout, b"\nnext\n", &mut out);
        assert_eq!(out.len(), 17);
        let mut joined = Vec::new();
        for p in &out[..16] {
            let t = strip_ts(p);
            assert_eq!(t.len(), MAX_LINE);
            joined.extend_from_slice(t.as_bytes());
        }
        assert_eq!(joined, line);
        assert_eq!(strip_ts(&out[16]), "next");
        assert_eq!(file_lines(&d.0.join("svc.log")), out);

        // Exactly MAX_LINE bytes is one line; multi-byte characters are
        // not cut in two.
        let mut out = Vec::new();
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        log.feed(&s, Pipe::Stdout, &exact, &mut out);
        assert_eq!(out.len(), 1);
        let mut utf = vec![b'y'; MAX_LINE - 1];
        utf.extend_from_slice("éé\n".as_bytes());
        log.feed(&s, Pipe::Stdout, &utf, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(strip_ts(&out[1]).len(), MAX_LINE - 1);
        assert_eq!(strip_ts(&out[2]), "éé");
    }

    fn cpu_time() -> Duration {
        use nix::time::{clock_gettime, ClockId};
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(Duration::from)
            .unwrap_or_default()
    }

    /// Feeds 100 MB of 100-byte lines in 64 KiB chunks; prints wall and
    /// CPU time (the machine may be shared: CPU time is steadier). Run with
    /// `cargo test --release -p init logs::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_feed_100mb() {
        let d = TempDir::new("bench");
        let s = settings(&d.0, 1 << 40, 3);
        let line = format!("{}\n", "b".repeat(99));
        let chunk: Vec<u8> = line
            .as_bytes()
            .iter()
            .copied()
            .cycle()
            .take(65_500)
            .collect();
        let total = 100 * 1000 * 1000;
        for follow in [true, false] {
            let mut log = ServiceLog::new("svc");
            let mut out = Vec::new();
            let (t, c) = (Instant::now(), cpu_time());
            let mut fed = 0;
            while fed < total {
                if follow {
                    log.feed(&s, Pipe::Stdout, &chunk, &mut out);
                    out.clear();
                } else {
                    log.feed_unfollowed(&s, Pipe::Stdout, &chunk);
                }
                fed += chunk.len();
            }
            let (wall, cpu) = (t.elapsed(), cpu_time().saturating_sub(c));
            println!(
                "follow={follow}: {} MB in {wall:?} wall, {cpu:?} cpu: {:.0} MB/s (cpu)",
                fed / 1_000_000,
                fed as f64 / cpu.as_secs_f64() / 1e6
            );
            assert_eq!(log.dropped(), (0, 0));
            let _ = log.clear(&s);
        }
    }
}
