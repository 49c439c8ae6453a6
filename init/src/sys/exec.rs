//! Starting a child the way posix_spawn does: `clone(CLONE_VM |
//! CLONE_VFORK)`. There is no copy of init's page tables and no
//! copy-on-write fault afterwards (a `fork` of init cost about 60 faults
//! and most of init's 0.6 ms CPU per restart), and init resumes once the
//! child has exec'd or given up. Until its execve the child runs on its own
//! stack inside init's memory, so it only makes raw syscalls on data
//! prepared before the clone (no allocation, no lock, no panic), and leaves
//! what failed in `Shared::failure` for init to read.
//!
//! With [`Slots`] the child also shares init's fd table (CLONE_FILES) and
//! its first call, `close_range(lo, ~0, CLOSE_RANGE_UNSHARE)`, gives it a
//! table of only the fds below `lo`: the three low slots that hold its
//! stdio for the moment of the spawn, and init's first few fds. Without
//! that, each spawn copied init's whole table (three fds per service) and
//! execve closed every copy: a start cost that grew with the services
//! running, O(n^2) for a boot.

use nix::libc;
use nix::unistd::Pid;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The child's stack: its code is a handful of syscall wrappers.
const STACK: usize = 64 * 1024;

/// What the child does before its program runs, in this order: default
/// signal dispositions, an empty signal mask and its own session; `stdio`
/// on fds 0, 1, 2; the open-files limit `nofile` (u64::MAX: as it is);
/// `cwd`; joining the cgroup whose cgroup.procs is `cgroup_procs`; then
/// `ids` (supplementary groups, gid, uid: once the uid is not root, groups
/// can no longer be set); then execve of each of `candidates` in turn
/// (the PATH lookup: the first that is not missing runs).
pub struct Plan<'a> {
    pub candidates: &'a [CString],
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub stdio: [RawFd; 3],
    pub nofile: u64,
    pub cwd: Option<&'a CStr>,
    pub cgroup_procs: Option<&'a CStr>,
    pub ids: Option<(u32, u32, &'a [u32])>,
}

/// The step of the child that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Setup,
    Chdir,
    Cgroup,
    Ids,
    Exec,
}

/// Three low fds (placeholders on /dev/null between spawns) that carry a
/// child's stdio during its spawn, so that it can drop the rest of init's
/// fds cheaply. None where close_range cannot unshare (before Linux 5.9).
pub struct Slots {
    slots: [OwnedFd; 3],
    null: OwnedFd,
    /// Above every slot: the child keeps only the fds below it.
    lo: c_int,
}

impl Slots {
    pub fn open() -> Option<Slots> {
        // SAFETY: close_range on an empty range only tests for support;
        // fcntl/open with constant arguments return new fds we then own.
        unsafe {
            if libc::syscall(
                libc::SYS_close_range,
                u32::MAX,
                u32::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
            {
                return None;
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null < 0 {
                return None;
            }
            let null = OwnedFd::from_raw_fd(null);
            let slot = || {
                let fd = libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
                (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
            };
            let slots = [slot()?, slot()?, slot()?];
            let lo = slots.iter().map(|f| f.as_raw_fd()).max()? + 1;
            Some(Slots { slots, null, lo })
        }
    }

    /// An fd open on /dev/null for reading, for as long as the slots.
    pub fn null(&self) -> RawFd {
        self.null.as_raw_fd()
    }

    /// Put `fds` in the slots (close-on-exec in init), or, with None, the
    /// placeholder back (init then holds no end of the child's pipes).
    fn hold(&self, fds: Option<[RawFd; 3]>) -> bool {
        self.slots.iter().enumerate().all(|(i, slot)| {
            let src = fds.and_then(|f| f.get(i).copied());
            let src = src.unwrap_or(self.null.as_raw_fd());
            // SAFETY: dup3 onto a slot we own, from an fd that is open.
            unsafe { libc::dup3(src, slot.as_raw_fd(), libc::O_CLOEXEC) >= 0 }
        })
    }
}

/// Why no child runs: the clone itself failed (`None`), or a step of the
/// child did; with the errno.
pub struct Failed(pub Option<Stage>, pub std::io::Error);

/// The child's view, on init's stack: pointers into `Plan` and its
/// NULL-terminated arrays.
struct Shared<'a> {
    plan: &'a Plan<'a>,
    /// Sharing init's fd table: first unshare all but the fds below this,
    /// then take stdio from `stdio`.
    unshare_below: Option<c_int>,
    stdio: [RawFd; 3],
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// The signals the child sets back to SIG_DFL (bit `sig - 1`).
    reset: u64,
    failure: Option<(Stage, c_int)>,
}

/// The signals not at SIG_DFL in init (ignored, by init or by whoever
/// started it, or caught), bit `sig - 1`, SIGKILL and SIGSTOP aside: the
/// ones a child must set back, as execve keeps an ignored signal ignored.
/// Setting all 62 cost each start 62 syscalls while init waited. Read at
/// the first spawn: init sets its dispositions once, first thing in main
/// (`sys::block_signals`), and never after.
fn not_default() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let mut set = 0u64;
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // The kernel's sigaction: handler, flags, restorer, mask.
            let mut old = [0u64; 4];
            // SAFETY: a query only (no new action); `old` has room for the
            // kernel's struct and the 8-byte mask asked for.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u64>(),
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            // Unreadable counts as changed: the child then sets it anyway.
            if r != 0 || old[0] != libc::SIG_DFL as u64 {
                set |= 1 << (sig - 1);
            }
        }
        set
    })
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Start the child of `plan`; its pid once its program runs.
pub fn spawn(plan: &Plan, slots: Option<&Slots>) -> Result<Pid, Failed> {
    let ptrs = |v: &[CString]| -> Vec<*const c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv, envp) = (ptrs(plan.argv), ptrs(plan.envp));
    let slots = match slots {
        Some(s) if s.hold(Some(plan.stdio)) => Some(s),
        Some(s) => {
            s.hold(None);
            None
        }
        None => None,
    };
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let mut stdio = plan.stdio;
    if let Some(s) = slots {
        flags |= libc::CLONE_FILES;
        for (fd, slot) in stdio.iter_mut().zip(&s.slots) {
            *fd = slot.as_raw_fd();
        }
    }
    let mut shared = Shared {
        plan,
        unshare_below: slots.map(|s| s.lo),
        stdio,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        reset: not_default(),
        failure: None,
    };
    // Not zeroed: the child writes its stack before it reads it.
    let mut stack = Vec::<u8>::with_capacity(STACK);
    // SAFETY: one past the end of the allocation of STACK bytes.
    let top = unsafe { stack.as_mut_ptr().add(STACK) }.cast::<c_void>();
    // SAFETY: the child runs `child` on `stack` in this address space while
    // this thread is suspended (CLONE_VFORK) until it has exec'd or exited;
    // `shared`, `argv`, `envp`, `plan` and `stack` outlive that. `child`
    // only makes raw syscalls and writes `shared.failure`.
    let pid = unsafe { libc::clone(child, top, flags, (&raw mut shared).cast::<c_void>()) };
    if let Some(s) = slots {
        s.hold(None);
    }
    if pid < 0 {
        return Err(Failed(None, std::io::Error::last_os_error()));
    }
    let pid = Pid::from_raw(pid);
    // SAFETY: the child wrote this before exiting; read it afresh.
    let failure = unsafe { std::ptr::read_volatile(&raw const shared.failure) };
    drop(stack);
    match failure {
        None => Ok(pid),
        Some((stage, e)) => {
            // It has exited (127): reap it here, it never was a service.
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(Failed(Some(stage), std::io::Error::from_raw_os_error(e)))
        }
    }
}

/// The child, until execve. Every call is a plain syscall wrapper.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Shared`, alive while it is suspended.
    let sh = unsafe { &mut *arg.cast::<Shared>() };
    let stage = match steps(sh) {
        Ok(()) => Stage::Exec,
        Err(stage) => stage,
    };
    sh.failure = Some((stage, errno()));
    // SAFETY: ends the child only; no atexit handler, no flushing.
    unsafe { libc::_exit(127) }
}

/// The steps of `Plan`; returns (the stage that failed) only on failure,
/// with errno set.
fn steps(sh: &Shared) -> Result<(), Stage> {
    let p = sh.plan;
    // SAFETY: syscalls on the child's own state with valid local
    // arguments and the NUL-terminated strings of `Plan`.
    unsafe {
        // Before any fd is touched: off init's table, onto a small copy.
        if let Some(lo) = sh.unshare_below {
            let (lo, all) = (lo as u32, u32::MAX);
            if libc::syscall(libc::SYS_close_range, lo, all, libc::CLOSE_RANGE_UNSHARE) != 0 {
                return Err(Stage::Setup);
            }
        }
        // Every signal at its default: execve resets caught ones, so only
        // those in `reset` (the real-time ones glibc reserves, 32 and 33,
        // too, so the raw call: an all-zero kernel sigaction is SIG_DFL,
        // no flags, an empty mask).
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sh.reset & (1 << (sig - 1)) != 0 {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setsid() < 0 {
            return Err(Stage::Setup);
        }
        // Move the sources above 2 first, so that none is overwritten by
        // another's dup2 (when init itself was started without 0, 1, 2).
        let mut src = sh.stdio;
        for fd in src.iter_mut() {
            if *fd < 3 {
                *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if *fd < 0 {
                    return Err(Stage::Setup);
                }
            }
        }
        for (target, fd) in (0..).zip(src) {
            if libc::dup2(fd, target) < 0 {
                return Err(Stage::Setup);
            }
        }
        if p.nofile != u64::MAX {
            let mut lim: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = p.nofile;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
        if let Some(dir) = p.cwd {
            if libc::chdir(dir.as_ptr()) < 0 {
                return Err(Stage::Chdir);
            }
        }
        if let Some(procs) = p.cgroup_procs {
            // "0" means the writer.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                return Err(Stage::Cgroup);
            }
            libc::close(fd);
        }
        if let Some((uid, gid, groups)) = p.ids {
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0
            {
                return Err(Stage::Ids);
            }
        }
        // As execvp: a candidate that is missing (or on a missing or stale
        // directory) lets the next one try; EACCES is kept over ENOENT.
        let mut denied = false;
        for path in p.candidates {
            libc::execve(path.as_ptr(), sh.argv, sh.envp);
            match errno() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return Err(Stage::Exec),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        } else if p.candidates.is_empty() {
            *libc::__errno_location() = libc::ENOENT;
        }
    }
    Err(Stage::Exec)
}
