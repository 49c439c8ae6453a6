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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

mod calendar;
mod ring;
mod tail;
#[cfg(test)]
mod test_util;

use calendar::timestamp;
use ring::Ring;

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

/// `clear` looks for leftover rotated files up to at least this index
/// (e.g. after `max_files` was lowered), and further while they turn up.
const CLEAR_PROBE: u32 = 16;
/// ... but never tries more than this many indices in a row that fail.
const CLEAR_PROBE_MAX: u32 = 1024;

/// One service's log (also used for init's own `init.log`).
pub struct ServiceLog {
    name: String,
    /// Incomplete last line of stdout / stderr (at most `MAX_LINE` bytes).
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
    /// Formatted lines of the current call, each followed by `\n`.
    batch: String,
    /// End offset (just past the `\n`) of each line in `batch`.
    ends: Vec<usize>,
    /// The open `<dir>/<name>.log`, in append mode.
    file: Option<File>,
    /// The directory `file` was opened in (a settings reload may move it).
    file_dir: PathBuf,
    /// Size of the current file, as far as we wrote it.
    size: u64,
    /// The current file ends in the middle of a line (a short write whose
    /// partial line could not be cut off again).
    torn: bool,
    /// When opening, writing or rotating failed last; None once it works.
    last_failure: Option<Instant>,
    /// Total dropped lines / bytes (for `dropped`).
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Dropped since the last "resumed" line.
    pending_lines: u64,
    pending_bytes: u64,
    /// Recent formatted lines.
    ring: Ring,
}

impl ServiceLog {
    pub fn new(name: &str) -> Self {
        ServiceLog {
            name: name.into(),
            partial_out: Vec::new(),
            partial_err: Vec::new(),
            batch: String::new(),
            ends: Vec::new(),
            file: None,
            file_dir: PathBuf::new(),
            size: 0,
            torn: false,
            last_failure: None,
            dropped_lines: 0,
            dropped_bytes: 0,
            pending_lines: 0,
            pending_bytes: 0,
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
        let lines = tail::from_files(s, &self.name, n);
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
        self.file = None;
        self.size = 0;
        self.torn = false;
        self.last_failure = None;
        self.ring.clear();
        let mut first_err: Option<io::Error> = None;
        let mut remove = |p: PathBuf| -> bool {
            match std::fs::remove_file(p) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    first_err.get_or_insert(e);
                    false
                }
            }
        };
        remove(log_path(&s.dir, &self.name, 0));
        // Every index up to max_files (there may be gaps) or CLEAR_PROBE,
        // and beyond that as long as files keep turning up.
        let bound = s.max_files.clamp(CLEAR_PROBE, CLEAR_PROBE_MAX);
        let mut misses: u32 = 0;
        let mut i: u32 = 1;
        while i < u32::MAX {
            if remove(log_path(&s.dir, &self.name, i)) {
                misses = 0;
            } else {
                misses += 1;
                if i >= bound || misses >= CLEAR_PROBE_MAX {
                    break;
                }
            }
            i += 1;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Lines and bytes dropped because the log could not be written
    /// (totals since creation; bytes count the formatted lines with their
    /// newlines).
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_lines, self.dropped_bytes)
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
        let resumed = self.write_batch(s, ts, &batch, &ends);
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

    /// Append the batch to the file, rotating between lines as needed.
    /// Returns the "resumed" line if one was written first.
    fn write_batch(
        &mut self,
        s: &LogSettings,
        ts: &str,
        batch: &str,
        ends: &[usize],
    ) -> Option<String> {
        let bytes = batch.as_bytes();
        if self.file.is_some() && self.file_dir.as_os_str() != s.dir.as_os_str() {
            self.file = None; // the log directory changed: reopen there
        }
        let mut resumed = None;
        if self.file.is_none() {
            match self.try_open(s, ts) {
                Ok(r) => resumed = r,
                Err(()) => {
                    self.count_dropped(ends.len() as u64, bytes.len() as u64);
                    return None;
                }
            }
        }
        // Write bytes[seg..line_start] before a line that does not fit,
        // rotate, go on.
        let mut seg = 0usize;
        let mut line_start = 0usize;
        for &end in ends {
            let need = end.saturating_sub(line_start) as u64;
            let cur = self
                .size
                .saturating_add(line_start.saturating_sub(seg) as u64);
            if s.max_size > 0 && cur > 0 && cur.saturating_add(need) > s.max_size {
                if let Err(at) = self.write_segment(bytes, seg, line_start) {
                    self.drop_from(bytes, at);
                    return resumed;
                }
                if !self.rotate(s) {
                    self.drop_from(bytes, line_start);
                    return resumed;
                }
                seg = line_start;
            }
            line_start = end;
        }
        if let Err(at) = self.write_segment(bytes, seg, bytes.len()) {
            self.drop_from(bytes, at);
        }
        resumed
    }

    /// Write `bytes[from..to]`. On failure, returns the offset up to which
    /// it got written (the handle is dropped and the failure recorded).
    fn write_segment(&mut self, bytes: &[u8], from: usize, to: usize) -> Result<(), usize> {
        let seg = bytes.get(from..to).unwrap_or(&[]);
        if seg.is_empty() {
            return Ok(());
        }
        let res = match self.file.as_mut() {
            Some(f) => write_all(f, seg),
            None => Err((0, io::Error::from(io::ErrorKind::NotConnected))),
        };
        match res {
            Ok(()) => {
                self.size = self.size.saturating_add(seg.len() as u64);
                Ok(())
            }
            Err((written, e)) => {
                // A line written in part (disk full) is cut off again, so
                // the file keeps whole lines only; it counts as dropped.
                let done = seg.get(..written).unwrap_or(&[]);
                let whole = done.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let mut kept = written;
                if whole < written {
                    if let Some(f) = self.file.as_ref() {
                        let cut = f.metadata().and_then(|m| {
                            f.set_len(m.len().saturating_sub((written - whole) as u64))
                        });
                        if cut.is_ok() {
                            kept = whole;
                        }
                    }
                }
                self.size = self.size.saturating_add(kept as u64);
                if kept > 0 {
                    self.torn = seg.get(kept - 1) != Some(&b'\n');
                }
                self.fail("write", log_path(&self.file_dir, &self.name, 0), &e);
                Err(from + kept)
            }
        }
    }

    /// Count everything in `bytes[at..]` as dropped (a line cut short
    /// counts as a dropped line).
    fn drop_from(&mut self, bytes: &[u8], at: usize) {
        let rest = bytes.get(at..).unwrap_or(&[]);
        let lines = rest.iter().filter(|&&b| b == b'\n').count();
        self.count_dropped(lines as u64, rest.len() as u64);
    }

    /// Move `<name>.log` to `<name>.log.1` (shifting older ones up, the
    /// oldest beyond `max_files` being replaced) or, with `max_files == 0`,
    /// remove it; then open a fresh file.
    fn rotate(&mut self, s: &LogSettings) -> bool {
        self.file = None;
        let base = log_path(&s.dir, &self.name, 0);
        let res = if s.max_files == 0 {
            std::fs::remove_file(&base)
        } else {
            // How many rotated files exist (stop at the first gap)?
            let mut existing: u32 = 0;
            while existing < s.max_files
                && std::fs::symlink_metadata(log_path(&s.dir, &self.name, existing + 1)).is_ok()
            {
                existing += 1;
            }
            // .k -> .k+1 down to .1 -> .2; a rename onto index max_files
            // replaces the oldest one.
            let mut k = existing.min(s.max_files - 1);
            while k >= 1 {
                let _ = std::fs::rename(
                    log_path(&s.dir, &self.name, k),
                    log_path(&s.dir, &self.name, k + 1),
                );
                k -= 1;
            }
            std::fs::rename(&base, log_path(&s.dir, &self.name, 1))
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                self.fail("rotate", base, &e);
                return false;
            }
        }
        self.size = 0;
        self.torn = false;
        match open_append(&base) {
            Ok((f, size)) => {
                self.file = Some(f);
                self.file_dir = s.dir.clone();
                self.size = size;
                true
            }
            Err(e) => {
                self.fail("open", base, &e);
                false
            }
        }
    }

    /// Open the current file (unless a failure happened less than
    /// `RETRY_INTERVAL` ago). If lines were dropped, write the "resumed"
    /// line first and return it.
    fn try_open(&mut self, s: &LogSettings, ts: &str) -> Result<Option<String>, ()> {
        if let Some(t) = self.last_failure {
            if t.elapsed() < RETRY_INTERVAL {
                return Err(());
            }
        }
        let base = log_path(&s.dir, &self.name, 0);
        match open_append(&base) {
            Ok((f, size)) => {
                self.file = Some(f);
                self.file_dir = s.dir.clone();
                self.size = size;
            }
            Err(e) => {
                self.fail("open", base, &e);
                return Err(());
            }
        }
        if self.pending_lines == 0 && !self.torn {
            self.last_failure = None;
            return Ok(None);
        }
        let line = format!(
            "[{ts}] [init] log writing resumed: dropped {} lines ({} bytes)",
            self.pending_lines, self.pending_bytes
        );
        let need = line.len() as u64 + 1;
        if s.max_size > 0
            && self.size > 0
            && self.size.saturating_add(need) > s.max_size
            && !self.rotate(s)
        {
            return Err(());
        }
        let mut buf = Vec::with_capacity(line.len() + 2);
        if self.torn && self.size > 0 {
            buf.push(b'\n'); // end the line cut short by the failure
        }
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        match self.write_segment(&buf, 0, buf.len()) {
            Ok(()) => {
                self.torn = false;
                self.pending_lines = 0;
                self.pending_bytes = 0;
                self.last_failure = None;
                Ok(Some(line))
            }
            Err(_) => Err(()),
        }
    }

    fn count_dropped(&mut self, lines: u64, bytes: u64) {
        self.dropped_lines = self.dropped_lines.saturating_add(lines);
        self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
        self.pending_lines = self.pending_lines.saturating_add(lines);
        self.pending_bytes = self.pending_bytes.saturating_add(bytes);
    }

    /// Record a failure: drop the handle, remember when, and say so on
    /// stderr (the console) once per outage. Not through init's own log,
    /// which may be the one failing.
    fn fail(&mut self, what: &str, path: PathBuf, e: &io::Error) {
        let first = self.last_failure.is_none();
        self.file = None;
        self.last_failure = Some(Instant::now());
        if first {
            let _ = writeln!(
                io::stderr(),
                "init: warning: log {}: {what} {}: {e}; dropping lines until it can be written",
                self.name,
                path.display()
            );
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

/// Open for appending (created 0644), and its current size.
fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

/// Like `Write::write_all`, but on error also tells how much was written.
fn write_all(f: &mut File, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0usize;
    while let Some(rest) = buf.get(written..) {
        if rest.is_empty() {
            break;
        }
        match f.write(rest) {
            Ok(0) => return Err((written, io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => written = written.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
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

    #[test]
    fn hundred_thousand_lines_through_rotation() {
        let d = TempDir::new("rot");
        let s = settings(&d.0, 64 * 1024, 1000);
        let mut log = ServiceLog::new("svc");
        let mut data = Vec::new();
        for i in 1..=100_000u32 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let mut out = Vec::new();
        let mut total = 0;
        let mut rest = &data[..];
        let mut k = 0usize;
        while !rest.is_empty() {
            let n = (1 + k * 7919 % 9000).min(rest.len());
            let (c, r) = rest.split_at(n);
            log.feed(&s, Pipe::Stdout, c, &mut out);
            total += out.len();
            out.clear();
            rest = r;
            k += 1;
        }
        assert_eq!(total, 100_000);
        assert_eq!(log.dropped(), (0, 0));
        let lines = all_lines(&d.0, "svc", 1000);
        assert_eq!(lines.len(), 100_000);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(strip_ts(l), format!("line {}", i + 1));
        }
        // Every file within the limit, and not much below it.
        let mut files = 0;
        for i in 0..=1000 {
            let p = log_path(&d.0, "svc", i);
            if let Ok(m) = std::fs::metadata(&p) {
                files += 1;
                assert!(m.len() <= 64 * 1024);
                if i > 0 {
                    assert!(m.len() > 64 * 1024 - 100, "{i}: {}", m.len());
                }
            }
        }
        assert!(files > 40, "{files}");
        assert!(!log_path(&d.0, "svc", files).exists());
        // A fresh reader (empty cache) finds the same tail.
        let fresh = ServiceLog::new("svc");
        let t = fresh.tail(&s, 10_000);
        assert_eq!(t, lines[90_000..].to_vec());
        assert_eq!(log.tail(&s, 10_000), t);
    }

    #[test]
    fn max_files_is_respected() {
        let d = TempDir::new("maxfiles");
        let s = settings(&d.0, 1000, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..2000 {
            log.feed(&s, Pipe::Stdout, format!("line {i}\n").as_bytes(), &mut out);
        }
        for i in 0..=3 {
            assert!(log_path(&d.0, "svc", i).exists(), "{i}");
        }
        assert!(!log_path(&d.0, "svc", 4).exists());
        let lines = all_lines(&d.0, "svc", 3);
        let n = lines.len();
        assert!(n > 80 && n < 200, "{n}");
        assert_eq!(lines, out[out.len() - n..].to_vec());
    }

    #[test]
    fn max_files_zero_starts_afresh() {
        let d = TempDir::new("zero");
        let s = settings(&d.0, 100, 0);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..10 {
            log.feed(&s, Pipe::Stdout, format!("line {i}\n").as_bytes(), &mut out);
        }
        assert!(!log_path(&d.0, "svc", 1).exists());
        let lines = file_lines(&d.0.join("svc.log"));
        assert_eq!(lines, out[out.len() - lines.len()..].to_vec());
        assert!(std::fs::metadata(d.0.join("svc.log")).unwrap().len() <= 100);
    }

    #[test]
    fn oversized_line_goes_alone_into_a_fresh_file() {
        let d = TempDir::new("oversize");
        let s = settings(&d.0, 100, 5);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        let big = format!("{}\n", "z".repeat(300));
        log.feed(&s, Pipe::Stdout, b"a\n", &mut out);
        log.feed(&s, Pipe::Stdout, big.as_bytes(), &mut out);
        log.feed(&s, Pipe::Stdout, b"b\n", &mut out);
        assert_eq!(file_lines(&log_path(&d.0, "svc", 2)), out[..1].to_vec());
        assert_eq!(file_lines(&log_path(&d.0, "svc", 1)), out[1..2].to_vec());
        assert_eq!(file_lines(&log_path(&d.0, "svc", 0)), out[2..].to_vec());
    }

    #[test]
    fn clear_removes_files_and_logging_continues() {
        let d = TempDir::new("clear");
        let s = settings(&d.0, 200, 2);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..50 {
            log.feed(
                &s,
                Pipe::Stdout,
                format!("before {i}\n").as_bytes(),
                &mut out,
            );
        }
        log.feed(&s, Pipe::Stdout, b"half", &mut out);
        std::fs::write(log_path(&d.0, "svc", 7), b"leftover\n").unwrap();
        std::fs::write(d.0.join("other.log"), b"keep\n").unwrap();
        assert!(log_path(&d.0, "svc", 2).exists());
        log.clear(&s).unwrap();
        for i in 0..=8 {
            assert!(!log_path(&d.0, "svc", i).exists(), "{i}");
        }
        assert!(d.0.join("other.log").exists());
        assert!(log.tail(&s, 10).is_empty());
        out.clear();
        log.feed(&s, Pipe::Stdout, b" line\nafter\n", &mut out);
        let got: Vec<&str> = out.iter().map(|l| strip_ts(l)).collect();
        assert_eq!(got, ["half line", "after"]);
        assert_eq!(file_lines(&d.0.join("svc.log")), out);
        assert_eq!(log.tail(&s, 10), out);
        // Clearing when nothing exists is fine.
        let mut other = ServiceLog::new("nothing");
        other.clear(&s).unwrap();
    }

    #[test]
    fn unwritable_dir_counts_drops_and_recovers() {
        let d = TempDir::new("unwritable");
        // A directory path whose "directory" is a regular file: fails even
        // for root.
        let blocked = d.0.join("blocked");
        std::fs::write(&blocked, b"not a dir").unwrap();
        let s = settings(&blocked, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"one\ntwo\n", &mut out);
        log.feed(&s, Pipe::Stderr, b"three\n", &mut out);
        assert_eq!(out.len(), 3);
        let bytes: u64 = out.iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(log.dropped(), (3, bytes));
        // The ring still has them.
        assert_eq!(log.tail(&s, 3), out);
        // Fix the directory; within the retry interval nothing is tried.
        std::fs::remove_file(&blocked).unwrap();
        std::fs::create_dir(&blocked).unwrap();
        log.feed(&s, Pipe::Stdout, b"four\n", &mut out);
        let bytes: u64 = out.iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(log.dropped(), (4, bytes));
        assert!(!blocked.join("svc.log").exists());
        // Pretend the interval passed.
        log.last_failure = Instant::now().checked_sub(RETRY_INTERVAL);
        let before = out.len();
        log.feed(&s, Pipe::Stdout, b"five\n", &mut out);
        assert_eq!(out.len(), before + 2);
        let resumed = strip_ts(&out[before]);
        assert_eq!(
            resumed,
            format!("[init] log writing resumed: dropped 4 lines ({bytes} bytes)")
        );
        assert_eq!(strip_ts(&out[before + 1]), "five");
        assert_eq!(file_lines(&blocked.join("svc.log")), out[before..].to_vec());
        assert_eq!(log.dropped(), (4, bytes));
        // Nothing pending any more: no second "resumed" line.
        log.feed(&s, Pipe::Stdout, b"six\n", &mut out);
        assert_eq!(file_lines(&blocked.join("svc.log")).len(), 3);
    }

    #[test]
    fn disk_full_counts_drops_and_recovers() {
        let d = TempDir::new("full");
        if !Path::new("/dev/full").exists() {
            return;
        }
        // Writes to <name>.log fail with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", d.0.join("svc.log")).unwrap();
        let s = settings(&d.0, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"one\ntwo\nthr", &mut out);
        log.close_stream(&s, Pipe::Stdout, &mut out);
        let bytes: u64 = out.iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(log.dropped(), (3, bytes));
        assert!(log.file.is_none());
        assert_eq!(log.tail(&s, 5), out);
        // Space again (a regular file); after the retry interval.
        std::fs::remove_file(d.0.join("svc.log")).unwrap();
        log.last_failure = Instant::now().checked_sub(RETRY_INTERVAL);
        let mut out2 = Vec::new();
        log.event(&s, "back", &mut out2);
        let got: Vec<&str> = out2.iter().map(|l| strip_ts(l)).collect();
        assert_eq!(
            got,
            [
                format!("[init] log writing resumed: dropped 3 lines ({bytes} bytes)").as_str(),
                "[init] back"
            ]
        );
        assert_eq!(file_lines(&d.0.join("svc.log")), out2);
        out.extend(out2);
        assert_eq!(log.tail(&s, 10), out);
    }

    #[test]
    fn readonly_dir_when_not_root() {
        use std::os::unix::fs::PermissionsExt;
        let d = TempDir::new("readonly");
        let s = settings(&d.0, 1 << 20, 3);
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o500)).unwrap();
        if std::fs::write(d.0.join("probe"), b"").is_ok() {
            // Root (CAP_DAC_OVERRIDE) ignores the mode; the test above
            // covers failures in a way that works for root too.
            std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
            return;
        }
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        log.feed(&s, Pipe::Stdout, b"one\n", &mut out);
        assert_eq!(log.dropped().0, 1);
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        log.last_failure = Instant::now().checked_sub(RETRY_INTERVAL);
        log.feed(&s, Pipe::Stdout, b"two\n", &mut out);
        let lines = file_lines(&d.0.join("svc.log"));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("resumed: dropped 1 lines"));
    }

    #[test]
    fn reopens_with_existing_size() {
        let d = TempDir::new("reopen");
        let s = settings(&d.0, 300, 2);
        std::fs::write(d.0.join("init.log"), "x".repeat(250) + "\n").unwrap();
        let mut log = ServiceLog::new("init");
        let mut out = Vec::new();
        log.event(&s, "booting with a message long enough to rotate", &mut out);
        assert_eq!(file_lines(&log_path(&d.0, "init", 1)).len(), 1);
        assert_eq!(file_lines(&d.0.join("init.log")), out);
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
