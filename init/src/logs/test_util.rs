//! Helpers shared by the log module's unit tests.

use super::{log_path, LogSettings};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("init-logs-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn settings(dir: &Path, max_size: u64, max_files: u32) -> LogSettings {
    LogSettings {
        dir: dir.to_path_buf(),
        max_size,
        max_files,
    }
}

/// Length of "[YYYY-MM-DD HH:MM:SS.mmm] ".
pub(super) const TS: usize = 26;

pub(super) fn strip_ts(line: &str) -> &str {
    assert!(line.len() >= TS, "short line {line:?}");
    let (ts, rest) = line.split_at(TS);
    let b = ts.as_bytes();
    assert_eq!(b[0], b'[', "{line:?}");
    assert_eq!(&ts[24..], "] ", "{line:?}");
    for (i, c) in ts[1..24].bytes().enumerate() {
        match i {
            4 | 7 => assert_eq!(c, b'-'),
            10 => assert_eq!(c, b' '),
            13 | 16 => assert_eq!(c, b':'),
            19 => assert_eq!(c, b'.'),
            _ => assert!(c.is_ascii_digit(), "{line:?}"),
        }
    }
    rest
}

pub(super) fn file_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_terminator('\n').map(|l| l.to_string()).collect()
}

/// All lines of the current and rotated files, oldest first.
pub(super) fn all_lines(dir: &Path, name: &str, max_files: u32) -> Vec<String> {
    let mut v = Vec::new();
    for i in (1..=max_files).rev() {
        let p = log_path(dir, name, i);
        if p.exists() {
            v.extend(file_lines(&p));
        }
    }
    let p = log_path(dir, name, 0);
    if p.exists() {
        v.extend(file_lines(&p));
    }
    v
}
