//! Per-service log files: timestamped lines, size-based rotation, an
//! in-memory ring of recent lines, reading back the last N lines.
//! (Being written; this is the interface the reactor uses.)

use std::path::PathBuf;

/// Where and how much to log (from init.yaml).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One service's log (also used for init's own `init.log`).
pub struct ServiceLog {
    name: String,
}

impl ServiceLog {
    pub fn new(name: &str) -> Self {
        ServiceLog { name: name.into() }
    }

    /// Bytes read from the service's pipe. Complete lines are timestamped,
    /// written and cached; each formatted line is also pushed to `out`
    /// (for followers).
    pub fn feed(&mut self, _s: &LogSettings, _stream: Stream, _bytes: &[u8], _out: &mut Vec<String>) {}

    /// The pipe closed: flush a final line that had no newline.
    pub fn close_stream(&mut self, _s: &LogSettings, _stream: Stream, _out: &mut Vec<String>) {}

    /// A lifecycle line from init itself ("started with PID 12", ...).
    pub fn event(&mut self, _s: &LogSettings, _msg: &str, _out: &mut Vec<String>) {}

    /// The last `n` lines (formatted, oldest first).
    pub fn tail(&self, _s: &LogSettings, _n: usize) -> Vec<String> {
        Vec::new()
    }

    /// Remove the current and rotated files and empty the cache.
    pub fn clear(&mut self, _s: &LogSettings) -> std::io::Result<()> {
        Ok(())
    }

    /// Lines and bytes dropped because the log could not be written.
    pub fn dropped(&self) -> (u64, u64) {
        let _ = &self.name;
        (0, 0)
    }
}
