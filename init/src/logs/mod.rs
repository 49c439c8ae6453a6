//! Per-service logs. Each service has one [`ServiceLog`], and init has one
//! for its own `init.log`. This module owns the log directory (created 0750
//! if missing, [`create_dir`]) and a log's files in it, `<name>.log` and the
//! rotated `<name>.log.1` ... `<name>.log.N` (nothing else in init writes,
//! rotates, reads or removes them; they are only ever opened as regular
//! files, never through a symlink and never blocking on a FIFO), the incomplete last line of each of the service's two pipes, the
//! in-memory ring of recent lines, and the count of lines that could not be
//! written.
//!
//! The parts, each owning its state:
//! * `framing.rs`: pipe bytes to formatted lines: partial-line carry-over,
//!   the [`MAX_LINE`] split, the `[ts] `, `[stderr] ` and `[init] `
//!   prefixes; it hands its lines over in batches.
//! * `writer.rs`: the open file and its size, rotation on line boundaries,
//!   the drop counts, the [`RETRY_INTERVAL`] and the "resumed" line; it
//!   also removes the files for `clear`.
//! * `ring.rs`: the ring of recent lines, bounded by [`CACHE_BYTES`].
//! * `tail.rs`: reading the last lines back from the files.
//! * `calendar.rs`: the UTC timestamp.
//! * `pipe.rs`: a service's output pipes, read into its log (`Output`).
//!
//! `ServiceLog` ties them together: one timestamp per call, and each batch
//! goes to the writer, then the ring, then the followers (`out`).
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
//! * A log file removed, renamed or replaced behind init's back (or its
//!   whole directory) is noticed at the first write at least
//!   [`VERIFY_INTERVAL`] after the last check (one `lstat`), and the path
//!   is opened anew, the directory recreated if missing: lines never go on
//!   into a deleted or moved file.
//! * A log whose service is down is closed ([`ServiceLog::close_file`]) and
//!   reopened by its next line, so stopped services hold no fds.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod calendar;
mod framing;
pub mod pipe;
mod ring;
mod tail;
#[cfg(test)]
mod test_util;
mod writer;

pub use calendar::rfc3339;
use calendar::timestamp;
use framing::{Batch, Framer};
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

/// An open log file is checked to still be `<dir>/<name>.log` (not
/// removed, renamed or replaced) at its first write once this has passed
/// since the last check; if it is not, that path is opened anew (the
/// directory recreated if it is gone).
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(1);

/// Formatted text of one call is written out (and handed over) whenever it
/// grows past this, which bounds the memory a single call uses.
pub const FLUSH_BYTES: usize = 256 * 1024;

/// `tail` reads files backwards in chunks of this size.
pub const TAIL_CHUNK: usize = 64 * 1024;

/// `tail` stops collecting lines once they add up to this many bytes
/// encoded as JSON strings, a comma after each (the size the control
/// protocol caps an answer at; only reached with long lines: 10000 lines of
/// 420 bytes, or fewer full of control characters).
pub const TAIL_MAX_BYTES: usize = 4 * 1024 * 1024;

/// One service's log (also used for init's own `init.log`).
pub struct ServiceLog {
    /// Partial lines and the batch being formatted.
    framer: Framer,
    /// The files on disk, and what could not be written to them.
    writer: Writer,
    /// Recent formatted lines.
    ring: Ring,
}

impl ServiceLog {
    pub fn new(name: &str) -> Self {
        ServiceLog {
            framer: Framer::default(),
            writer: Writer::new(name),
            ring: Ring::default(),
        }
    }

    /// Bytes read from the service's pipe. Complete lines are timestamped,
    /// written and cached; each formatted line is also pushed to `out`
    /// (for followers).
    pub fn feed(&mut self, s: &LogSettings, pipe: Pipe, bytes: &[u8], out: &mut Vec<String>) {
        self.feed_inner(s, pipe, bytes, Some(out));
    }

    /// Like [`feed`](Self::feed) for when nobody follows this log: the
    /// formatted lines are not handed back, which saves one allocation per
    /// line. (A "resumed" line is not handed back either.)
    pub fn feed_unfollowed(&mut self, s: &LogSettings, pipe: Pipe, bytes: &[u8]) {
        self.feed_inner(s, pipe, bytes, None);
    }

    fn feed_inner(
        &mut self,
        s: &LogSettings,
        pipe: Pipe,
        bytes: &[u8],
        mut out: Option<&mut Vec<String>>,
    ) {
        if bytes.is_empty() {
            return;
        }
        let ts = timestamp(SystemTime::now());
        let Self {
            framer,
            writer,
            ring,
        } = self;
        framer.feed(&ts, pipe, bytes, |batch| {
            commit(writer, ring, s, &ts, batch, out.as_deref_mut());
        });
    }

    /// The pipe closed, or the run that wrote it ended: flush a final line
    /// that had no newline.
    pub fn close_stream(&mut self, s: &LogSettings, pipe: Pipe, out: &mut Vec<String>) {
        let partial = self.framer.take_partial(pipe);
        if partial.is_empty() {
            return;
        }
        let ts = timestamp(SystemTime::now());
        let Self {
            framer,
            writer,
            ring,
        } = self;
        framer.complete_line(&ts, pipe, &partial, |batch| {
            commit(writer, ring, s, &ts, batch, Some(&mut *out));
        });
    }

    /// A lifecycle line from init itself ("started with PID 12", ...).
    /// A message with embedded newlines becomes several lines.
    /// A line of init's own, as a log line reads, but not logged: what a
    /// follower is told of lines it was not sent.
    pub fn notice(msg: &str) -> String {
        format!("[{}] [init] {msg}", timestamp(SystemTime::now()))
    }

    pub fn event(&mut self, s: &LogSettings, msg: &str, out: &mut Vec<String>) {
        let ts = timestamp(SystemTime::now());
        let Self {
            framer,
            writer,
            ring,
        } = self;
        framer.event(&ts, msg, |batch| {
            commit(writer, ring, s, &ts, batch, Some(&mut *out));
        });
    }

    /// The last `n` lines (formatted, oldest first), within
    /// [`TAIL_MAX_BYTES`].
    #[cfg(test)]
    pub fn tail(&self, s: &LogSettings, n: usize) -> Vec<String> {
        self.tail_within(s, n, TAIL_MAX_BYTES).0
    }

    /// The last `n` lines (formatted, oldest first), as many of them as fit
    /// in `budget` bytes encoded as JSON strings with a comma after each;
    /// true if older lines were left out for the budget.
    ///
    /// Served from the in-memory ring when it holds at least `n` lines,
    /// otherwise read back from `<name>.log`, `<name>.log.1`, ... (newest to
    /// oldest), each read backwards in [`TAIL_CHUNK`] pieces so only about
    /// as much as needed is read. When the files hold fewer lines than the
    /// ring (writing failed), the ring wins.
    pub fn tail_within(&self, s: &LogSettings, n: usize, budget: usize) -> (Vec<String>, bool) {
        if n == 0 {
            return (Vec::new(), false);
        }
        let budget = budget.min(TAIL_MAX_BYTES);
        if self.ring.len() >= n {
            return within(self.ring.last(n), budget);
        }
        let (lines, cut) = tail::from_files(s, self.writer.name(), n, budget);
        if lines.len() < self.ring.len() {
            return within(self.ring.last(n), budget);
        }
        (lines, cut)
    }

    /// Remove the current and rotated files and empty the cache. Partial
    /// lines in flight are kept: they will go to the new file. Logging
    /// continues into a fresh file. Returns the first error other than
    /// "not found" (after trying to remove everything anyway).
    pub fn clear(&mut self, s: &LogSettings) -> io::Result<()> {
        self.ring.clear();
        self.writer.clear(s)
    }

    /// Close the file for now (its service is down); the next line
    /// reopens it.
    pub fn close_file(&mut self) {
        self.writer.close();
    }

    /// Lines and bytes dropped because the log could not be written
    /// (totals since creation; bytes count the formatted lines with their
    /// newlines).
    pub fn dropped(&self) -> (u64, u64) {
        self.writer.dropped()
    }
}

/// Write `batch` to disk and into the ring, and hand its lines to `out`.
/// A "resumed" line, if the file had to be reopened after drops, comes
/// first everywhere.
fn commit(
    writer: &mut Writer,
    ring: &mut Ring,
    s: &LogSettings,
    ts: &str,
    batch: &Batch,
    out: Option<&mut Vec<String>>,
) {
    let resumed = writer.write_batch(s, ts, batch.text(), batch.ends());
    if let Some(out) = out {
        out.reserve(batch.len() + usize::from(resumed.is_some()));
        if let Some(r) = &resumed {
            out.push(r.clone());
        }
        for line in batch.lines() {
            out.push(line.to_owned());
        }
    }
    if let Some(r) = &resumed {
        ring.push_line(r);
    }
    ring.push_batch(batch.text(), batch.ends());
}

/// Create the log directory, and missing parents, mode 0750 (umask
/// permitting); an existing one is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// `<dir>/<name>.log` for index 0, `<dir>/<name>.log.<index>` otherwise.
fn log_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    if index == 0 {
        dir.join(format!("{name}.log"))
    } else {
        dir.join(format!("{name}.log.{index}"))
    }
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

/// The newest of `lines` (oldest first) that fit in `budget` encoded bytes
/// (see [`ServiceLog::tail_within`]); true if any were left out.
fn within(mut lines: Vec<String>, budget: usize) -> (Vec<String>, bool) {
    let mut size = 0usize;
    let keep = lines
        .iter()
        .rev()
        .take_while(|l| {
            size = size.saturating_add(encoded_len(l) + 1);
            size <= budget
        })
        .count();
    let skip = lines.len() - keep;
    lines.drain(..skip);
    (lines, skip > 0)
}

/// Bytes `s` takes as a JSON string, quotes included, as serde_json writes
/// it: `"`, `\` and the control characters with a short escape take 2,
/// other control characters 6 (`\u0001`).
pub fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
        + 2
}

#[cfg(test)]
mod encoded_len_tests {
    #[test]
    fn counts_what_serde_writes() {
        let mut all: String = (0u8..128).map(char::from).collect();
        all.push_str("é€😀");
        for c in all.chars() {
            let s = format!("a{c}b");
            assert_eq!(
                super::encoded_len(&s),
                serde_json::to_string(&s).unwrap().len(),
                "{c:?}"
            );
        }
        assert_eq!(
            super::encoded_len(&all),
            serde_json::to_string(&all).unwrap().len()
        );
    }
}
