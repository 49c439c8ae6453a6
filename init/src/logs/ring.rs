//! The in-memory ring of a log's recent lines, bounded by
//! [`CACHE_BYTES`]: `tail` is served from it when it holds enough, and it
//! keeps the lines that could not be written to disk.

use super::CACHE_BYTES;
use std::collections::VecDeque;

/// The ring of recent formatted lines: their text with a `\n` after each,
/// in one buffer (`text[head..]`), and their lengths, oldest first. Copying
/// bytes into one buffer is much cheaper than one allocation per line.
#[derive(Default)]
pub(super) struct Ring {
    text: Vec<u8>,
    head: usize,
    lens: VecDeque<usize>,
    /// Sum of `lens` (newlines not counted); at most `CACHE_BYTES` unless
    /// the single newest line is larger.
    bytes: usize,
}

impl Ring {
    pub(super) fn len(&self) -> usize {
        self.lens.len()
    }

    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.head = 0;
        self.lens.clear();
        self.bytes = 0;
    }

    pub(super) fn push_line(&mut self, line: &str) {
        let mut b = String::with_capacity(line.len() + 1);
        b.push_str(line);
        b.push('\n');
        self.push_batch(&b, &[b.len()]);
    }

    /// Add the lines of `batch`: each ends in `\n`, and `ends` holds the
    /// offset just past each line's `\n`.
    pub(super) fn push_batch(&mut self, batch: &str, ends: &[usize]) {
        // Only the newest lines that fit can survive: copy just those.
        let mut bytes = 0usize;
        let mut keep = 0usize;
        let mut from = batch.len();
        for (i, &end) in ends.iter().enumerate().rev() {
            let start = if i == 0 {
                0
            } else {
                ends.get(i - 1).copied().unwrap_or(0)
            };
            let len = end.saturating_sub(start).saturating_sub(1);
            if keep > 0 && bytes.saturating_add(len) > CACHE_BYTES {
                break;
            }
            bytes = bytes.saturating_add(len);
            keep += 1;
            from = start;
        }
        if keep < ends.len() {
            self.clear(); // everything older would be evicted anyway
        }
        self.text
            .extend_from_slice(batch.as_bytes().get(from..).unwrap_or(&[]));
        let mut start = from;
        for &end in ends.iter().skip(ends.len() - keep) {
            self.lens
                .push_back(end.saturating_sub(start).saturating_sub(1));
            start = end;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        while self.bytes > CACHE_BYTES && self.lens.len() > 1 {
            let Some(l) = self.lens.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(l);
            self.head = self.head.saturating_add(l + 1);
        }
        if self.head > CACHE_BYTES {
            self.text.drain(..self.head.min(self.text.len()));
            self.head = 0;
        }
    }

    /// The last `n` lines, oldest first.
    pub(super) fn last(&self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n.min(self.lens.len()));
        let mut end = self.text.len(); // just past a line's '\n'
        for &len in self.lens.iter().rev().take(n) {
            let stop = end.saturating_sub(1);
            let start = stop.saturating_sub(len);
            let line = self.text.get(start..stop).unwrap_or(&[]);
            v.push(String::from_utf8_lossy(line).into_owned());
            end = start;
        }
        v.reverse();
        v
    }
}

#[cfg(test)]
impl Ring {
    /// The text held (see `bytes`).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The size of the buffer, evicted lines not yet compacted included.
    pub(super) fn buffer_len(&self) -> usize {
        self.text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::test_util::*;
    use crate::logs::{Pipe, ServiceLog};

    #[test]
    fn cache_is_bounded() {
        let d = TempDir::new("cache");
        let s = settings(&d.0, 1 << 20, 3);
        let mut log = ServiceLog::new("svc");
        let mut out = Vec::new();
        for i in 0..10_000 {
            log.feed(
                &s,
                Pipe::Stdout,
                format!("cache line {i}\n").as_bytes(),
                &mut out,
            );
            assert!(log.ring.bytes <= CACHE_BYTES);
            assert!(log.ring.text.len() <= 3 * CACHE_BYTES);
        }
        let sum: usize = log.ring.lens.iter().sum();
        assert_eq!(sum, log.ring.bytes);
        assert_eq!(log.ring.text.len() - log.ring.head, sum + log.ring.len());
        assert!(sum > CACHE_BYTES - 100);
        let n = log.ring.len();
        assert_eq!(log.tail(&s, n), out[out.len() - n..].to_vec());
    }
}
