//! The boundary between supervision and the operating system: everything the
//! supervisor does to processes and fds (spawn, signal a group, kill what is
//! left of a service, peek at and reap exits, watch fds on the event loop,
//! report and release a service's containment) and the clock goes through
//! the `Os` trait. The real implementation is `sys::RealOs`; the supervisor's
//! tests drive it with a fake one and a fake clock.

use crate::unit::ServiceDef;
use mio::Token;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

/// How a child ended: the seed's `exit_status` (code, or 128+N for signal
/// N) and the signal if there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none()
    }
    /// Why the run ended, short: "exited with code 3", "killed by SIGTERM".
    pub fn reason(&self) -> String {
        match self.signal {
            Some(sig) => format!("killed by {}", signal_name(sig)),
            None => format!("exited with code {}", self.code),
        }
    }
    /// The lifecycle line: the reason plus the seed's exit status.
    pub fn describe(&self) -> String {
        match self.signal {
            Some(_) => format!("{} (exit status {})", self.reason(), self.code),
            None => self.reason(),
        }
    }
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// A started process.
pub struct Spawned {
    pub pid: Pid,
    /// None where the kernel has no pidfd (before 5.3), or in tests.
    pub pidfd: Option<OwnedFd>,
    /// The read ends of its stdout and stderr; None in tests.
    pub pipes: Option<[OwnedFd; 2]>,
}

/// Why a spawn failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// init or the system ran out of something (fds, processes, memory):
    /// not the service's fault, and trying again later can work. The text
    /// says what ran out ("Too many open files").
    Resources(String),
    /// The service's own fault: no such program, no permission, a bad
    /// working directory.
    Fault(String),
}

/// How a service's processes are held together: in a cgroup of their own
/// (its path, None until init has started anything, and how many processes
/// are in it now), or only by the process group of the main process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    ProcessGroup,
    Cgroup { path: Option<String>, procs: usize },
}

/// The current process of a service. `gen` tells it apart from earlier
/// processes of the same service in tokens and events.
pub struct Proc {
    pub pid: Pid,
    pub pidfd: Option<OwnedFd>,
    pub gen: u32,
}

pub trait Os {
    fn now(&self) -> Instant;
    /// Start service `name`'s process (in its cgroup, where there are
    /// cgroups: after killing whatever an earlier run left there).
    fn spawn(
        &mut self,
        name: &str,
        def: &ServiceDef,
        env: &BTreeMap<String, String>,
    ) -> Result<Spawned, SpawnError>;
    /// Signal the process group of `p`, whose leader is not reaped yet;
    /// SIGKILL also goes to its whole cgroup.
    fn signal(&mut self, p: &Proc, sig: Signal) -> Result<(), String>;
    /// SIGKILL what is left of an exited, unreaped leader's service: its
    /// group, and its whole cgroup.
    fn kill_leftovers(&mut self, p: &Proc);
    /// The process group of `pid` (who sent a notify message).
    fn process_group(&self, _pid: i32) -> Option<i32> {
        None
    }
    /// How service `name` is contained, for status.
    fn containment(&self, _name: &str) -> Containment {
        Containment::ProcessGroup
    }
    /// Service `name` is forgotten: remove its cgroup once it is empty.
    fn release(&mut self, _name: &str) {}
    /// init is ending, its services are down: remove its cgroups.
    fn release_all(&mut self) {}
    /// Has `p` exited? Looks without reaping.
    fn exited(&mut self, p: &Proc) -> bool;
    /// Any exited child, not reaped yet.
    fn next_exited(&mut self) -> Option<Pid>;
    /// Reap an exited child.
    fn reap(&mut self, pid: Pid) -> Option<Exit>;
    /// Deliver readiness of `fd` on the event loop as `token`.
    fn watch(&mut self, fd: RawFd, token: Token);
    fn unwatch(&mut self, fd: RawFd);
}
