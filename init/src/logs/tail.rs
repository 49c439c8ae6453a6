//! Reading a log back from its files: the last lines of `<name>.log`,
//! `<name>.log.1`, ..., each file read backwards in [`TAIL_CHUNK`] pieces,
//! within a budget of bytes as the lines will be sent (JSON-encoded, so a
//! line of control characters counts six times its length). Only regular
//! files are read, never through a symlink (`sys::open_regular`).

use super::{encoded_len, log_path, LogSettings, MAX_LINE, TAIL_CHUNK};
use crate::sys::{open_regular, OpenAs};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The last `n` lines (or fewer) of the current and rotated files, oldest
/// first, and whether the budget left older lines out. Files are read
/// newest to oldest, up to `max_files`; reading stops at the first missing
/// rotated file, on a read error, or at the first line that would take the
/// lines past `budget` bytes encoded (each line's JSON string and a comma).
pub(super) fn from_files(
    s: &LogSettings,
    name: &str,
    n: usize,
    budget: usize,
) -> (Vec<String>, bool) {
    let mut lines: Vec<String> = Vec::new(); // newest first
    let mut budget = Budget {
        left: budget,
        hit: false,
    };
    let mut index: u32 = 0;
    loop {
        let path = log_path(&s.dir, name, index);
        match open_regular(&path, OpenAs::ReadNoFollow) {
            Ok(f) => {
                if !read_back(&f, n, &mut lines, &mut budget) {
                    break;
                }
            }
            // A missing or refused current file (cleared, not yet written;
            // a symlink or FIFO the writer refuses too) does not hide the
            // rotated ones; a missing or refused rotated one ends the chain.
            Err(e)
                if index == 0
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                    ) => {}
            Err(_) => break,
        }
        if lines.len() >= n || index >= s.max_files {
            break;
        }
        index = index.saturating_add(1);
    }
    lines.truncate(n);
    lines.reverse();
    (lines, budget.hit)
}

/// Encoded bytes the lines may still take; `hit` once a line did not fit.
struct Budget {
    left: usize,
    hit: bool,
}

/// Read `f` backwards, pushing its lines newest first onto `lines` until
/// there are `n` of them. Returns false when reading should stop (error or
/// byte budget exhausted).
fn read_back(f: &File, n: usize, lines: &mut Vec<String>, budget: &mut Budget) -> bool {
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(_) => return false,
    };
    let mut pos = len;
    // Bytes read but not yet cut into lines: the tail end of a line whose
    // beginning is further back in the file.
    let mut pending: Vec<u8> = Vec::new();
    let mut at_end = true;
    let mut cut_short = false;
    while pos > 0 && lines.len() < n {
        let k = (TAIL_CHUNK as u64).min(pos);
        pos -= k;
        let mut data = vec![0u8; k as usize];
        if f.read_exact_at(&mut data, pos).is_err() {
            return false;
        }
        if at_end {
            at_end = false;
            if data.last() == Some(&b'\n') {
                data.pop();
            }
        }
        data.extend_from_slice(&pending);
        let mut end = data.len();
        while lines.len() < n {
            let Some(i) = data
                .get(..end)
                .and_then(|d| d.iter().rposition(|&b| b == b'\n'))
            else {
                break;
            };
            if !take_line(data.get(i + 1..end).unwrap_or(&[]), lines, budget) {
                return false;
            }
            end = i;
        }
        data.truncate(end);
        pending = data;
        cut_short = false;
        // Not a line of ours (no newline for very long): cut it here.
        if pending.len() > 4 * MAX_LINE {
            if !take_line(&pending, lines, budget) {
                return false;
            }
            pending.clear();
            cut_short = true;
        }
    }
    if pos == 0 && lines.len() < n && !at_end && !cut_short {
        // The first line of the file (no newline before it).
        return take_line(&pending, lines, budget);
    }
    true
}

fn take_line(line: &[u8], lines: &mut Vec<String>, budget: &mut Budget) -> bool {
    // A line is never shorter encoded than raw: no need to decode one that
    // cannot fit.
    if line.len() >= budget.left {
        budget.hit = true;
        return false;
    }
    let text = String::from_utf8_lossy(line).into_owned();
    let cost = encoded_len(&text) + 1;
    if cost > budget.left {
        budget.hit = true;
        return false;
    }
    budget.left -= cost;
    lines.push(text);
    true
}

#[cfg(test)]
mod tests {
    use crate::logs::test_util::*;
    use crate::logs::{
        encoded_len, log_path, Pipe, ServiceLog, CACHE_BYTES, MAX_LINE, TAIL_MAX_BYTES,
    };

    #[test]
    fn tail_across_rotation_boundaries() {
        let d = TempDir::new("tail");
        let s = settings(&d.0, 4096, 100);
        let mut log = ServiceLog::new("svc");
        let mut all = Vec::new();
        let mut out = Vec::new();
        for i in 0..5000 {
            let text = format!("{i} {}\n", "p".repeat(i % 50));
            let stream = if i % 3 == 0 {
                Pipe::Stderr
            } else {
                Pipe::Stdout
            };
            log.feed(&s, stream, text.as_bytes(), &mut out);
        }
        all.append(&mut out);
        assert_eq!(all_lines(&d.0, "svc", 100), all);
        assert!(log.ring.len() < 5000 && log.ring.len() > 100);
        let fresh = ServiceLog::new("svc");
        for n in [1, 2, 10, 99, 100, 101, 500, 1000, 2345, 4999, 5000] {
            let want = all[all.len() - n..].to_vec();
            assert_eq!(log.tail(&s, n), want, "n={n}");
            assert_eq!(fresh.tail(&s, n), want, "fresh n={n}");
        }
        assert_eq!(fresh.tail(&s, 10_000), all);
        assert_eq!(fresh.tail(&s, 0), Vec::<String>::new());
    }

    #[test]
    fn tail_reads_big_file_with_long_lines_backwards() {
        let d = TempDir::new("tailbig");
        let s = settings(&d.0, 0, 0);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..400 {
            // Lines from 0 to ~100 KiB, crossing the 64 KiB read chunks.
            let text = format!("{i} {}\n", "q".repeat((i * 997) % 100_000));
            log.feed(&s, Pipe::Stdout, text.as_bytes(), &mut out);
        }
        let fresh = ServiceLog::new("svc");
        assert!(out.len() > 400);
        for n in [1, 3, 20, 50] {
            let got = fresh.tail(&s, n);
            assert!(got == out[out.len() - n..], "n={n}");
        }
        // Asking for everything stops at the byte budget, with a suffix.
        let got = fresh.tail(&s, 10_000);
        let bytes: usize = got.iter().map(|l| l.len()).sum();
        assert!(bytes <= TAIL_MAX_BYTES && bytes > TAIL_MAX_BYTES - 200_000);
        assert!(got == out[out.len() - got.len()..]);
        // The in-memory ring stays bounded.
        assert!(log.ring.bytes() <= CACHE_BYTES + MAX_LINE + 64);
        assert!(log.ring.buffer_len() <= 2 * (CACHE_BYTES + MAX_LINE + 64));
    }

    /// The budget counts lines as they will be sent: a line of control
    /// characters costs six bytes per character, and reading stops at the
    /// first line that does not fit, saying so.
    #[test]
    fn tail_stops_at_the_encoded_budget() {
        let d = TempDir::new("tailenc");
        let s = settings(&d.0, 0, 0);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..2000 {
            let text = format!("{i:05} {}\n", "\u{1}".repeat(400));
            log.feed(&s, Pipe::Stdout, text.as_bytes(), &mut out);
        }
        let fresh = ServiceLog::new("svc");
        let budget = 1 << 20;
        let (got, cut) = fresh.tail_within(&s, 2000, budget);
        let sent: usize = got.iter().map(|l| encoded_len(l) + 1).sum();
        assert!(cut);
        assert!(sent <= budget && sent > budget - 3000, "{sent}");
        assert!(got == out[out.len() - got.len()..]);
        // Raw, the same lines are a sixth of that: far more would have
        // been read if the budget counted raw bytes.
        assert!(got.len() < 500, "{}", got.len());
        // Everything fits in a large enough budget: not cut.
        let (all, cut) = fresh.tail_within(&s, 100, budget);
        assert!(!cut && all == out[out.len() - 100..]);
    }

    #[test]
    fn symlinks_and_fifos_are_not_read() {
        let d = TempDir::new("tailrefused");
        let s = settings(&d.0, 1 << 20, 3);
        let secret = d.0.join("secret");
        std::fs::write(&secret, "TOPSECRET\n").unwrap();
        // A symlinked rotated file ends the chain ...
        std::os::unix::fs::symlink(&secret, log_path(&d.0, "a", 1)).unwrap();
        std::fs::write(log_path(&d.0, "a", 2), "old\n").unwrap();
        std::fs::write(log_path(&d.0, "a", 0), "new\n").unwrap();
        assert_eq!(ServiceLog::new("a").tail(&s, 10), ["new"]);
        // ... a refused current file (a FIFO here) does not hide the
        // rotated ones, and nothing blocks.
        let fifo = log_path(&d.0, "b", 0);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(log_path(&d.0, "b", 1), "rotated\n").unwrap();
        assert_eq!(ServiceLog::new("b").tail(&s, 10), ["rotated"]);
        std::fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink(&secret, &fifo).unwrap();
        assert_eq!(ServiceLog::new("b").tail(&s, 10), ["rotated"]);
    }
}
