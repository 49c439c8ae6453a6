//! Raw syscalls: signals and signalfd, timerfd, pidfds, waiting for and
//! reaping children, fd flags and limits, the child between clone and exec
//! ([`exec`]; spawn.rs prepares what it does), the PID-1 boot calls,
//! opening files that must be plain files ([`open_regular`]); and
//! `RealOs`, the supervisor's `Os`. Nothing here panics; errors are
//! returned.

use crate::cgroup;
use crate::os::{Containment, Exit, Os, Proc, SpawnError, Spawned};
use crate::unit::ServiceDef;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub mod exec;
mod regular;
pub use regular::{open_regular, read_regular, OpenAs};
use std::time::{Duration, Instant};

/// The signals init handles through its signalfd.
const HANDLED: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// The signals init does not use whose default action would end (with or
/// without a core) or stop it: read off its signalfd too, with the
/// real-time ones (below), and dropped (`Reactor::drop_signal`: a line in
/// init.log, at most once per 10 s). PID 1 was safe without this (the
/// kernel drops a signal PID 1 has no handler for); an init that is not
/// PID 1 was killed by SIGUSR1, leaving its services, socket and cgroups
/// behind, and stopped by SIGTSTP. SIGQUIT is among them: a terminal's
/// Ctrl-\ must not end init with its services unsupervised (SIGINT and
/// SIGTERM end it in order). Left as they were: SIGPIPE (ignored, see
/// `block_signals`), and the signals of a fault (SIGSEGV, SIGBUS, SIGFPE,
/// SIGILL, SIGTRAP, SIGSYS, SIGABRT), which the kernel delivers blocked or
/// not, and which leave `kill -ABRT` the way to a core of a stuck init.
/// Blocked, not ignored: a service starts with an empty mask and so gets
/// them at their default with no syscall per signal in the child.
const DROPPED: [Signal; 14] = [
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGSTKFLT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
];

/// Everything init reads off its signalfd: `HANDLED`, `DROPPED` and the
/// real-time signals libc leaves to programs (glibc's SIGRTMIN is 34: 32
/// and 33 are its own, with handlers that ignore strays). Built on a raw
/// set, since nix's `SigSet` knows no real-time signal (its `|` drops them).
fn signalfd_signals() -> SigSet {
    let set: SigSet = HANDLED.into_iter().chain(DROPPED).collect();
    let mut raw = *set.as_ref();
    for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: adds a signal number to a local, initialised set.
        unsafe { libc::sigaddset(&mut raw, sig) };
    }
    // SAFETY: `raw` was initialised by SigSet and sigaddset.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// Block the signals init reads off its signalfd (first thing in main),
/// and ignore SIGPIPE, so a client that hangs up can never kill init.
pub fn block_signals() -> nix::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signalfd_signals()), None)?;
    // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
    unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }?;
    Ok(())
}

pub fn signalfd() -> nix::Result<SignalFd> {
    SignalFd::with_flags(
        &signalfd_signals(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
}

/// The soft RLIMIT_NOFILE init started with, when `raise_fd_limit` raised
/// it; services get it back.
static SERVICE_NOFILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// init holds three fds per running service plus its clients: raise the
/// soft open-files limit to the hard one. PID 1 starts with the kernel's
/// 1024 soft and 4096 hard, about 1,300 services' worth, so PID 1 first
/// raises the hard limit too, to the kernel's most (`fs.nr_open`), as
/// systemd does; outside PID 1 the hard limit it was given is kept.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
        let most = if is_pid1() { nr_open().max(hard) } else { hard };
        // Where raising the hard limit is refused (no CAP_SYS_RESOURCE),
        // the hard limit init has.
        let tries = std::iter::once(most).chain((most > hard).then_some(hard));
        for to in tries.filter(|to| *to > soft) {
            let raised = libc::rlimit {
                rlim_cur: to,
                rlim_max: to,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                SERVICE_NOFILE.store(soft, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The most fds a process may have (`/proc/sys/fs/nr_open`; the kernel's
/// default, 1048576, if it cannot be read).
fn nr_open() -> libc::rlim_t {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// The open-files limit services start with (init raised its own):
/// init's original soft limit, u64::MAX to leave it as it is.
pub fn service_nofile() -> u64 {
    SERVICE_NOFILE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Mark every fd above 2 close-on-exec: whatever init was started with
/// (its parent's leftovers) must not reach a service. init's own fds are
/// all created CLOEXEC, so this is needed once, at start-up.
pub fn cloexec_inherited() {
    // close_range(3, ~0, CLOSE_RANGE_CLOEXEC): Linux 5.11 and later.
    // SAFETY: raw syscall with integer arguments; it only sets fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in fds {
        // SAFETY: F_SETFD on a number that may or may not be open: EBADF at worst.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// A monotonic, non-blocking, close-on-exec timerfd.
pub fn timerfd() -> nix::Result<TimerFd> {
    TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
}

/// Arm `t` to fire once after `after` (zero fires at once), or disarm it.
pub fn arm_timer(t: &TimerFd, after: Option<Duration>) -> nix::Result<()> {
    match after {
        None => t.unset(),
        Some(d) => {
            let d = d.max(Duration::from_nanos(1));
            t.set(
                Expiration::OneShot(TimeSpec::from_duration(d)),
                TimerSetTimeFlags::empty(),
            )
        }
    }
}

/// Drain a readable timerfd or similar counter fd.
pub fn drain_counter(fd: RawFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reading into a local buffer of the given size.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// pidfd_open(2). `Err(ENOSYS)` on kernels before 5.3. The fd is CLOEXEC.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    if std::env::var_os("INIT_NO_PIDFD").is_some() {
        return Err(Errno::ENOSYS);
    }
    // SAFETY: raw syscall with integer arguments; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Signal a service: its whole process group, once. The group id is the
/// leader's PID; it cannot have been recycled because init has not reaped
/// the leader yet, and the pidfd (where there is one) proves that the leader
/// is still the process init started.
pub fn signal_service(leader: Pid, pidfd: Option<&OwnedFd>, sig: Signal) -> nix::Result<()> {
    if let Some(fd) = pidfd {
        // Signal 0: only checks that the pidfd's process still exists.
        // SAFETY: raw syscall; fd is a valid pidfd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r != 0 && Errno::last() != Errno::ENOSYS {
            return Err(Errno::last());
        }
    }
    match signal::killpg(leader, sig) {
        // The leader left its group (setsid/setpgid): signal it alone.
        Err(Errno::ESRCH) => signal::kill(leader, sig),
        r => r,
    }
}

/// An exited child, found without reaping it (so its group can still be
/// signalled safely). `None` when no child has exited.
pub fn peek_exited() -> Option<Pid> {
    // SAFETY: waitid with a zeroed siginfo out-parameter.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 {
            return None;
        }
        let pid = info.si_pid();
        (pid > 0).then(|| Pid::from_raw(pid))
    }
}

/// Has this child exited? Looks without reaping (so its group can still
/// be signalled safely): exact, since nobody else can reap it.
pub fn has_exited(pid: Pid) -> bool {
    // SAFETY: waitid with a zeroed siginfo out-parameter.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid.as_raw() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() == pid.as_raw()
    }
}

/// Reap `pid` if it has exited.
pub fn reap(pid: Pid) -> Option<Exit> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Exit { code, signal: None }),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit {
            code: 128 + sig as i32,
            signal: Some(sig as i32),
        }),
        _ => None,
    }
}

/// init (or the whole system) is out of fds: EMFILE, ENFILE.
pub fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE)
    )
}

/// Out of fds, processes or memory (EMFILE, ENFILE, EAGAIN, ENOMEM), not
/// a fault of what was asked: the same call can work later. With the
/// error's short description ("Too many open files").
pub fn out_of_resources(e: &std::io::Error) -> Option<&'static str> {
    let errno = Errno::from_raw(e.raw_os_error()?);
    match errno {
        Errno::EMFILE | Errno::ENFILE | Errno::EAGAIN | Errno::ENOMEM => Some(errno.desc()),
        _ => None,
    }
}

/// Read from a non-blocking fd (a service's output pipe).
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<usize> {
    nix::unistd::read(fd, buf)
}

/// The supervisor's `Os`: real processes, each service in its cgroup where
/// there is cgroup2 (see cgroup.rs), the real clock, and fds watched on the
/// reactor's `mio::Poll`.
pub struct RealOs {
    registry: mio::Registry,
    /// The notify socket's path, given to notify services as NOTIFY_SOCKET.
    pub notify_socket: Option<String>,
    /// None: no cgroup2 (or not usable); process groups only.
    cgroups: Option<cgroup::Tree>,
    /// The service of each main process started in a cgroup, by pid, until
    /// it is reaped; and the other way round (one process per service).
    contained: BTreeMap<i32, String>,
    contained_pid: BTreeMap<String, i32>,
    /// Cgroups of forgotten services still to remove: they were not empty
    /// yet (their processes die after the kill). The last process of a
    /// cgroup exits as init's child (everything else in it died first), so
    /// each SIGCHLD is a moment to try again.
    unreleased: BTreeSet<String>,
    /// Low fds for a child's stdio (see `exec::Slots`).
    slots: Option<exec::Slots>,
}

impl RealOs {
    /// Finds cgroup2 (once, after the boot mounts); the tree is made at
    /// the first start.
    pub fn new(registry: mio::Registry) -> Self {
        let cgroups = match cgroup::Tree::find() {
            Ok(t) => Some(t),
            Err(e) => {
                info!("no cgroups for services ({e}): process groups only");
                None
            }
        };
        RealOs {
            registry,
            notify_socket: None,
            cgroups,
            contained: BTreeMap::new(),
            contained_pid: BTreeMap::new(),
            unreleased: BTreeSet::new(),
            slots: exec::Slots::open(),
        }
    }

    /// SIGKILL the cgroup of `p`'s service, if it has one.
    fn kill_cgroup(&self, p: &Proc) {
        if let (Some(t), Some(name)) = (&self.cgroups, self.contained.get(&p.pid.as_raw())) {
            t.kill(name);
        }
    }
}

impl Os for RealOs {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn spawn(
        &mut self,
        name: &str,
        def: &ServiceDef,
        env: &BTreeMap<String, String>,
    ) -> Result<Spawned, SpawnError> {
        match self.cgroups.as_mut().map(|t| t.create()) {
            Some(Ok(true)) => {
                if let Some(t) = &self.cgroups {
                    let how = if t.has_kill() {
                        "cgroup.kill"
                    } else {
                        "signalling cgroup.procs (no cgroup.kill)"
                    };
                    let dir = t.dir().map(|d| d.display().to_string());
                    info!(
                        "services run in cgroups under {}; stopped by {how}",
                        dir.unwrap_or_default()
                    );
                }
            }
            Some(Err(e)) => {
                info!("no cgroups for services ({e}): process groups only");
                self.cgroups = None;
            }
            Some(Ok(false)) | None => {}
        }
        let procs = match &self.cgroups {
            Some(t) => {
                let (killed, procs) = t.prepare(name).map_err(SpawnError::Fault)?;
                if killed > 0 {
                    info!("{name}: sent SIGKILL to {killed} processes still in its cgroup before the start");
                }
                Some(procs)
            }
            None => None,
        };
        let contained = procs.is_some();
        let notify = match (&self.notify_socket, def.kind) {
            (Some(path), crate::unit::Kind::Notify) => vec![("NOTIFY_SOCKET", path.as_str())],
            _ => Vec::new(),
        };
        let sp = crate::spawn::spawn(def, env, procs, &notify, self.slots.as_ref())?;
        // An earlier process of the service (one a reload let go on
        // stopping) must no longer reach this cgroup.
        if let Some(earlier) = self.contained_pid.remove(name) {
            self.contained.remove(&earlier);
        }
        self.unreleased.remove(name);
        if contained {
            self.contained.insert(sp.pid.as_raw(), name.to_string());
            self.contained_pid.insert(name.to_string(), sp.pid.as_raw());
        }
        // No pidfd: SIGCHLD and waitid find the exit.
        let pidfd = pidfd_open(sp.pid).ok();
        Ok(Spawned {
            pid: sp.pid,
            pidfd,
            pipes: Some([sp.stdout, sp.stderr]),
        })
    }
    fn signal(&mut self, p: &Proc, sig: Signal) -> Result<(), String> {
        let r = signal_service(p.pid, p.pidfd.as_ref(), sig).map_err(|e| e.to_string());
        if sig == Signal::SIGKILL {
            self.kill_cgroup(p);
        }
        r
    }
    fn process_group(&self, pid: i32) -> Option<i32> {
        nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .ok()
            .map(Pid::as_raw)
    }
    fn kill_leftovers(&mut self, p: &Proc) {
        // ESRCH (nothing left in the group) is the common, fine case.
        let _ = signal::killpg(p.pid, Signal::SIGKILL);
        self.kill_cgroup(p);
    }
    fn exited(&mut self, p: &Proc) -> bool {
        has_exited(p.pid)
    }
    fn next_exited(&mut self) -> Option<Pid> {
        if let Some(t) = &self.cgroups {
            self.unreleased.retain(|name| !t.remove(name));
        }
        peek_exited()
    }
    fn reap(&mut self, pid: Pid) -> Option<Exit> {
        let exit = reap(pid)?;
        if let Some(name) = self.contained.remove(&pid.as_raw()) {
            self.contained_pid.remove(&name);
        }
        Some(exit)
    }
    fn containment(&self, name: &str) -> Containment {
        match &self.cgroups {
            Some(t) => Containment::Cgroup {
                path: t.path(name).map(|p| p.display().to_string()),
                procs: t.count(name).unwrap_or(0),
            },
            None => Containment::ProcessGroup,
        }
    }
    fn release(&mut self, name: &str) {
        if let Some(t) = &self.cgroups {
            if !t.remove(name) {
                self.unreleased.insert(name.to_string());
            }
        }
    }
    fn release_all(&mut self) {
        if let Some(t) = self.cgroups.take() {
            t.remove_all();
        }
    }
    fn watch(&mut self, fd: RawFd, token: Token) {
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            error!("cannot watch fd {fd}: {e}");
        }
    }
    fn unwatch(&mut self, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
    }
}

/// When not PID 1: become a child subreaper so orphans are still ours.
pub fn set_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

pub fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: fd is open for the duration of this call.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = OFlag::from_bits_truncate(fcntl(bfd, FcntlArg::F_GETFL)?);
    fcntl(bfd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Grow a pipe's buffer (best effort; the default is 64 KiB, the limit
/// /proc/sys/fs/pipe-max-size, 1 MiB by default).
pub fn set_pipe_size(fd: RawFd, bytes: i32) {
    use nix::fcntl::{fcntl, FcntlArg};
    // SAFETY: fd is open for the duration of this call.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = fcntl(bfd, FcntlArg::F_SETPIPE_SZ(bytes));
}

/// Our own direct children (orphans re-parented to us included), from /proc.
pub fn children_of_self() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the last ')' are: state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            out.push(Pid::from_raw(pid));
        }
    }
    out
}

/// Does something accept connections on the socket file at `path`? A
/// non-blocking connect: refused means stale; a full backlog means live.
pub fn socket_is_live(path: &Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EAGAIN || e == nix::errno::Errno::EINPROGRESS,
    }
}

/// After the loop: SIGKILL whatever is left (orphans too), reap for up to
/// 3 s, sync.
pub fn final_cleanup() {
    if is_pid1() {
        kill_all(Signal::SIGKILL);
    } else {
        for pid in children_of_self() {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => {}
            Err(_) => break, // ECHILD: all reaped
        }
    }
    sync();
    info!("all services stopped; filesystems synced");
}

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Kill every process (as PID 1 at the end of shutdown).
pub fn kill_all(sig: Signal) {
    let _ = signal::kill(Pid::from_raw(-1), sig);
}

pub fn sync() {
    nix::unistd::sync();
}

// ----- PID-1 boot (used by boot.rs) -----------------------------------------

/// Is `fd` an open descriptor?
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Open `path` and make it descriptor `fd`. Raw calls only, no allocation:
/// usable before stdio exists.
pub fn open_onto(fd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> bool {
    // SAFETY: plain syscalls on a NUL-terminated path and integers.
    unsafe {
        let new = libc::open(path.as_ptr(), flags | libc::O_NOCTTY);
        if new < 0 {
            return false;
        }
        if new == fd {
            return true;
        }
        let ok = libc::dup2(new, fd) == fd;
        libc::close(new);
        ok
    }
}

/// mkdir /dev and mount devtmpfs there (nosuid, noexec), raw calls only,
/// errors ignored: the caller checks by opening /dev/console.
pub fn mount_devtmpfs_raw() {
    // SAFETY: mkdir and mount with constant NUL-terminated strings.
    unsafe {
        libc::mkdir(c"/dev".as_ptr(), 0o755);
        libc::mount(
            c"dev".as_ptr(),
            c"/dev".as_ptr(),
            c"devtmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            std::ptr::null(),
        );
    }
}

/// finit_module(2) flag: the file is compressed and the kernel should
/// decompress it (Linux 5.17+, with CONFIG_MODULE_DECOMPRESS).
pub const MODULE_INIT_COMPRESSED_FILE: libc::c_long = 4;

/// Load a kernel module from an open file, no parameters.
pub fn finit_module(file: &std::fs::File, flags: libc::c_long) -> nix::Result<()> {
    // SAFETY: finit_module with an open fd, an empty parameter string and
    // integer flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// SO_VM_SOCKETS_CONNECT_TIMEOUT: how long the kernel lets a VSOCK connect
/// take (2 s unless set). Best effort.
pub fn set_vsock_connect_timeout(fd: &OwnedFd, d: Duration) {
    const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs().max(1)).unwrap_or(10),
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a properly sized timeval on our socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// A file as it was when recorded: its path, device and inode.
pub struct FileId {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file now at `path` (not following a symlink), if any.
    pub fn of(path: &std::path::Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(FileId {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Remove the file if the path still names it (same device and inode):
    /// Ok(false) when it is gone or another file took its place.
    pub fn remove_if_unchanged(&self) -> std::io::Result<bool> {
        match FileId::of(&self.path) {
            Some(now) if now.dev == self.dev && now.ino == self.ino => {
                std::fs::remove_file(&self.path)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn err(r: std::io::Result<impl Sized>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let d = tmp("regular");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = d.join("file");
        std::fs::write(&file, "hello").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        // None of these blocks.
        for how in [OpenAs::Read, OpenAs::ReadNoFollow, OpenAs::Append] {
            // Append without a reader: ENXIO, "a FIFO or device file".
            let e = err(open_regular(&fifo, how));
            assert!(e.starts_with("not a regular file (a FIFO"), "{how:?}: {e}");
            assert!(
                err(open_regular(&d, how)).contains("a directory"),
                "{how:?}"
            );
            assert!(open_regular(&file, how).is_ok(), "{how:?}");
        }
        assert_eq!(
            err(open_regular(Path::new("/dev/null"), OpenAs::Read)),
            "not a regular file (a character device)"
        );
        assert!(open_regular(&link, OpenAs::Read).is_ok());
        for how in [OpenAs::ReadNoFollow, OpenAs::Append] {
            assert_eq!(
                err(open_regular(&link, how)),
                "not a regular file (a symbolic link, which is not followed)"
            );
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello");
        // A FIFO with a reader, opened for appending: refused after fstat.
        let rd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert_eq!(
            err(open_regular(&fifo, OpenAs::Append)),
            "not a regular file (a FIFO)"
        );
        drop(rd);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reads_are_capped() {
        let d = tmp("capped");
        let f = d.join("f");
        std::fs::write(&f, "x".repeat(100)).unwrap();
        assert_eq!(read_regular(&f, 100).unwrap().len(), 100);
        assert_eq!(err(read_regular(&f, 99)), "larger than 99 bytes");
        assert!(err(read_regular(Path::new("/dev/zero"), 1 << 20)).contains("character device"));
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert_eq!(err(read_regular(&f, 100)), "not valid UTF-8");
        let _ = std::fs::remove_dir_all(&d);
    }
}
