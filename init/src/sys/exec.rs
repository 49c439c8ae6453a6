//! Starting a child the way posix_spawn does: `clone(CLONE_VM |
//! CLONE_VFORK)`. There is no copy of init's page tables and no
//! copy-on-write fault afterwards (a `fork` of init cost about 60 faults
//! and most of init's 0.6 ms CPU per restart), and init resumes once the
//! child has exec'd or given up. Until its execve the child runs on its own
//! stack inside init's memory, so it only makes raw syscalls on data
//! prepared before the clone (no allocation, no lock, no panic), and leaves
//! what failed in `Shared::failure` for init to read.

use nix::libc;
use nix::unistd::Pid;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::RawFd;

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

/// Why no child runs: the clone itself failed (`None`), or a step of the
/// child did; with the errno.
pub struct Failed(pub Option<Stage>, pub std::io::Error);

/// The child's view, on init's stack: pointers into `Plan` and its
/// NULL-terminated arrays.
struct Shared<'a> {
    plan: &'a Plan<'a>,
    argv: *const *const c_char,
    envp: *const *const c_char,
    failure: Option<(Stage, c_int)>,
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Start the child of `plan`; its pid once its program runs.
pub fn spawn(plan: &Plan) -> Result<Pid, Failed> {
    let ptrs = |v: &[CString]| -> Vec<*const c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv, envp) = (ptrs(plan.argv), ptrs(plan.envp));
    let mut shared = Shared {
        plan,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        failure: None,
    };
    let mut stack = vec![0u8; STACK];
    let top = stack.as_mut_ptr_range().end.cast::<c_void>();
    // SAFETY: the child runs `child` on `stack` in this address space while
    // this thread is suspended (CLONE_VFORK) until it has exec'd or exited;
    // `shared`, `argv`, `envp`, `plan` and `stack` outlive that. `child`
    // only makes raw syscalls and writes `shared.failure`.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut shared).cast::<c_void>(),
        )
    };
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
        // Every signal at its default, the real-time ones glibc reserves
        // (32, 33) too, so the raw call: an all-zero kernel sigaction is
        // SIG_DFL, no flags, an empty mask.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
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
        let mut src = p.stdio;
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
