//! init's own messages: to the console (stderr; /dev/console when PID 1)
//! and, once the log directory is known, to `<log_dir>/init.log` through the
//! log module. This module owns init's console output and its drop count.
//!
//! Console writes never block: a console nobody reads (a stalled serial
//! line, a pipe whose reader stopped) must not stop PID 1. What cannot be
//! written at once is dropped and counted; the next line that gets through
//! is preceded by "console output resumed: dropped N lines", which also goes
//! to init.log. init.log gets every line either way.
//!
//! How, without touching the flags of a description others share (setting
//! O_NONBLOCK on fd 2 itself would also make a terminal's shell, which
//! shares it, read EAGAIN):
//! * From [`open_init_log`] on, when stderr is a pipe, FIFO or terminal
//!   (the console), init writes to its own non-blocking description of it,
//!   opened through `/proc/self/fd/2`.
//! * A socket gets `send(MSG_DONTWAIT)`.
//! * Otherwise (before that, without /proc, a regular file) fd 2 is written
//!   only when `poll` says it has room, at most `PIPE_BUF` bytes at a time.

use std::cell::RefCell;
use std::fmt::Arguments;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use nix::libc;

/// Where init's messages go besides the console.
type Sink = Box<dyn FnMut(&str)>;

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    static CONSOLE: RefCell<Console> = const { RefCell::new(Console::new(Out::Polled(2))) };
}

/// Route every later message also to `sink` (init.log).
pub fn set_sink(sink: Sink) {
    SINK.with(|s| *s.borrow_mut() = Some(sink));
}

pub fn write(level: &str, args: Arguments) {
    let msg = args.to_string();
    // Unit tests: through the test harness's capture, not straight to fd 2.
    #[cfg(test)]
    let resumed: Option<u64> = {
        eprintln!("init: {level}: {msg}");
        None
    };
    #[cfg(not(test))]
    let resumed = CONSOLE.with(|c| {
        c.try_borrow_mut()
            .ok()
            .and_then(|mut c| c.line(&format!("init: {level}: {msg}\n")))
    });
    // Re-entry (init.log failing reports through here) skips init.log.
    SINK.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(f) = s.as_mut() {
                if let Some(n) = resumed {
                    f(&format!("[warn] console output resumed: dropped {n} lines"));
                }
                f(&format!("[{level}] {msg}"));
            }
        }
    });
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::console::write("info", format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::console::write("warn", format_args!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::console::write("error", format_args!($($t)*)) } }

/// From now on write the console through init's own non-blocking
/// description of stderr where there is one, and also write init's
/// messages to `<log_dir>/init.log` (the directory is created 0750 if
/// missing).
pub fn open_init_log(settings: &crate::logs::LogSettings) {
    let out = own_stderr();
    CONSOLE.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.out = out;
        }
    });
    if let Err(e) = crate::logs::create_dir(&settings.dir) {
        error!("log directory {}: {e}", settings.dir.display());
    }
    let settings = settings.clone();
    let mut log = crate::logs::ServiceLog::new("init");
    set_sink(Box::new(move |line| {
        let mut out = Vec::new();
        log.event(&settings, line, &mut out);
    }));
}

/// How the console is written.
enum Out {
    /// A non-blocking descriptor of init's own.
    Own(File),
    /// This fd, written only when `poll` says it has room.
    Polled(RawFd),
    /// A socket: `send(MSG_DONTWAIT)` on fd 2.
    Socket,
}

/// The best non-blocking way to write stderr (see the module comment).
fn own_stderr() -> Out {
    // SAFETY: fstat into a zeroed local struct.
    let mode = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) != 0 {
            return Out::Polled(2);
        }
        st.st_mode & libc::S_IFMT
    };
    match mode {
        libc::S_IFSOCK => Out::Socket,
        libc::S_IFIFO | libc::S_IFCHR => {
            use std::os::unix::fs::OpenOptionsExt;
            // A new open file description of the same pipe or terminal:
            // its O_NONBLOCK is init's alone. O_NOCTTY: PID 1 is a session
            // leader and must not acquire the console as its terminal.
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open("/proc/self/fd/2")
            {
                Ok(f) => Out::Own(f),
                Err(_) => Out::Polled(2),
            }
        }
        _ => Out::Polled(2),
    }
}

/// The console output and what it could not write.
struct Console {
    out: Out,
    /// Lines dropped since the last one that got through.
    dropped: u64,
    /// The console's last line was cut short (a partial write).
    torn: bool,
}

impl Console {
    const fn new(out: Out) -> Self {
        Console {
            out,
            dropped: 0,
            torn: false,
        }
    }

    /// Write one line (ending in `\n`) without blocking, after the
    /// "resumed" note if lines were dropped before. Returns the number of
    /// dropped lines the note reported, if one was written.
    fn line(&mut self, text: &str) -> Option<u64> {
        let mut resumed = None;
        if self.dropped > 0 {
            let note = format!(
                "{}init: warn: console output resumed: dropped {} lines\n",
                if self.torn { "\n" } else { "" },
                self.dropped
            );
            if !self.put(note.as_bytes()) {
                self.dropped = self.dropped.saturating_add(1);
                return None;
            }
            resumed = Some(self.dropped);
            self.dropped = 0;
        }
        if !self.put(text.as_bytes()) {
            self.dropped = self.dropped.saturating_add(1);
        }
        resumed
    }

    /// Write all of `bytes`, or as much as goes without blocking. True when
    /// all of it was written; `torn` tells whether the console now ends in
    /// the middle of a line.
    fn put(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match &self.out {
                Out::Own(f) => write_fd(f.as_raw_fd(), rest),
                Out::Polled(fd) => {
                    let piece = rest.get(..rest.len().min(libc::PIPE_BUF)).unwrap_or(rest);
                    if has_room(*fd) {
                        write_fd(*fd, piece)
                    } else {
                        0
                    }
                }
                Out::Socket => send_dontwait(2, rest),
            };
            if n == 0 {
                // A line cut short is one the console lost, too.
                self.torn = rest.len() < bytes.len();
                return false;
            }
            rest = rest.get(n..).unwrap_or(&[]);
        }
        self.torn = false;
        true
    }
}

/// `write(2)`, retried on EINTR: the bytes written, 0 on any error.
fn write_fd(fd: RawFd, buf: &[u8]) -> usize {
    loop {
        // SAFETY: writing from a valid slice of the given length.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r >= 0 {
            return usize::try_from(r).unwrap_or(0);
        }
        if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return 0;
        }
    }
}

fn send_dontwait(fd: RawFd, buf: &[u8]) -> usize {
    // SAFETY: sending from a valid slice of the given length.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

/// Can `fd` take a write now (`poll` with a zero timeout)?
fn has_room(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one local pollfd, no waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & libc::POLLOUT != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A pipe of one page whose write end is non-blocking: (read, write).
    fn small_pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: fcntl on fds we own.
        unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        }
        (File::from(r), File::from(w))
    }

    fn drain(r: &mut File) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    /// Write `n` lines into a pipe nobody reads, then read it and write
    /// one more.
    fn fill_and_recover(out: Out, mut r: File, n: u64) {
        let mut c = Console::new(out);
        let line = format!("init: info: {}\n", "x".repeat(100));
        let mut resumed = Vec::new();
        for _ in 0..n {
            resumed.extend(c.line(&line));
        }
        assert!(resumed.is_empty());
        let got = drain(&mut r);
        let written = got.lines().count() as u64;
        assert!(written > 10 && written < n, "{written}");
        assert_eq!(c.dropped, n - written);
        assert!(got.lines().all(|l| l.len() == line.len() - 1));
        // Room again: the note comes first.
        assert_eq!(c.line("init: info: next\n"), Some(n - written));
        assert_eq!(
            drain(&mut r),
            format!(
                "init: warn: console output resumed: dropped {} lines\ninit: info: next\n",
                n - written
            )
        );
        assert_eq!(c.dropped, 0);
    }

    #[test]
    fn a_full_pipe_drops_and_counts() {
        let (r, w) = small_pipe();
        fill_and_recover(Out::Own(w), r, 200);
    }

    #[test]
    fn polled_writes_never_block() {
        // A blocking write end (of the default 64 KiB): only poll keeps
        // the writes from blocking.
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let w = File::from(w);
        fill_and_recover(Out::Polled(w.as_raw_fd()), File::from(r), 2000);
        drop(w);
    }

    #[test]
    fn a_line_cut_short_is_ended_before_the_note() {
        let (mut r, w) = small_pipe();
        let mut c = Console::new(Out::Own(w));
        // Longer than the pipe: written in part.
        let long = format!("{}\n", "y".repeat(10_000));
        c.line(&long);
        assert!(c.torn);
        assert_eq!(c.dropped, 1);
        let got = drain(&mut r);
        assert!(!got.is_empty() && !got.ends_with('\n'));
        assert_eq!(c.line("after\n"), Some(1));
        assert_eq!(
            drain(&mut r),
            "\ninit: warn: console output resumed: dropped 1 lines\nafter\n"
        );
    }
}
