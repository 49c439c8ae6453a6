//! A service's output: its stdout/stderr pipes and its log. Reading the
//! pipes into the log (and into lines for `logs -f` followers), end of file,
//! and closing. The pipes may outlive the process that opened them (a
//! leftover child can hold them); each carries the generation of the run
//! that opened it, so a readiness event of an earlier run's pipe is ignored.

use super::{LogSettings, Pipe, ServiceLog};
use std::os::fd::OwnedFd;

/// Bytes read from one pipe per wakeup before other sources get a turn.
pub const READ_BUDGET: usize = 1024 * 1024;
/// The same while someone follows the service: its lines are also held as
/// strings for the followers until the turn ends, about 56 bytes per line
/// however short, so 1 MiB of 2-byte lines would be 29 MB.
pub const FOLLOWED_READ_BUDGET: usize = 2 * PIPE_READ;
/// One read from an output pipe.
pub const PIPE_READ: usize = 64 * 1024;

pub struct Output {
    pub log: ServiceLog,
    pipes: [Option<OwnedFd>; 2],
    gen: u32,
}

/// What a read left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Nothing more to read now.
    Empty,
    /// The read budget ran out with data left: read again soon.
    More,
    /// End of file: the pipe was closed (its fd is returned by `close`).
    Eof,
}

impl Output {
    pub fn new(name: &str) -> Self {
        Output {
            log: ServiceLog::new(name),
            pipes: [None, None],
            gen: 0,
        }
    }

    /// Take the pipes of a new run.
    pub fn attach(&mut self, pipes: [OwnedFd; 2], gen: u32) {
        self.pipes = pipes.map(Some);
        self.gen = gen;
    }

    pub fn is_current(&self, pipe: Pipe, gen: u32) -> bool {
        self.gen == gen && self.pipes.get(pipe.index()).is_some_and(Option::is_some)
    }

    pub fn fd(&self, pipe: Pipe) -> Option<&OwnedFd> {
        self.pipes.get(pipe.index()).and_then(Option::as_ref)
    }

    /// Read what `pipe` holds (at most `READ_BUDGET`, or
    /// `FOLLOWED_READ_BUDGET` when followed) into the log; new lines go to
    /// `lines` when someone follows the service.
    pub fn read(
        &mut self,
        pipe: Pipe,
        set: &LogSettings,
        followed: bool,
        buf: &mut [u8],
        lines: &mut Vec<String>,
    ) -> Drained {
        let mut total = 0;
        let budget = if followed {
            FOLLOWED_READ_BUDGET
        } else {
            READ_BUDGET
        };
        loop {
            let Some(fd) = self.fd(pipe) else {
                return Drained::Empty;
            };
            match crate::sys::read(fd, buf) {
                Ok(0) => return Drained::Eof,
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    if followed {
                        self.log.feed(set, pipe, bytes, lines);
                    } else {
                        self.log.feed_unfollowed(set, pipe, bytes);
                    }
                    total += n;
                    if total >= budget {
                        return Drained::More;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Drained::Empty, // EAGAIN: drained
            }
        }
    }

    /// Close `pipe`: its partial last line is logged; the fd is returned so
    /// the caller can stop watching it before it is dropped.
    pub fn close(
        &mut self,
        pipe: Pipe,
        set: &LogSettings,
        lines: &mut Vec<String>,
    ) -> Option<OwnedFd> {
        let fd = self.pipes.get_mut(pipe.index()).and_then(Option::take)?;
        self.log.close_stream(set, pipe, lines);
        Some(fd)
    }
}
