//! PID-1 boot duties: stdio on /dev/console, filesystems, NSM driver,
//! heartbeat, root switch, and the final reboot(2).
//!
//! The steps follow AWS's own enclave init (aws-nitro-enclaves-sdk-bootstrap
//! `init.c`), with one difference in spirit: nothing here is fatal. Every
//! failure is logged and boot carries on, because PID 1 exiting is a kernel
//! panic, and a half-working enclave can still be inspected.
//!
//! Order in [`boot`]: devtmpfs on /dev and stdio on /dev/console, the other
//! filesystems, the NSM driver, the heartbeat, the root switch, and the
//! filesystems again inside the new root.

use crate::sys::{self, is_pid1};
use crate::{error, info, warn};
use nix::errno::Errno;
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, VsockAddr,
};
use shared::config::{HeartbeatConfig, InitConfig};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The byte the enclave sends and the parent echoes.
const HEARTBEAT_BYTE: u8 = 0xB7;
/// One attempt (connect, send, wait for the echo) may take this long.
const HEARTBEAT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts before giving up; with the pause below, at most about 32 s in
/// all, well inside the 90 s the host waits.
const HEARTBEAT_ATTEMPTS: u32 = 3;
const HEARTBEAT_PAUSE: Duration = Duration::from_secs(1);

/// nodev, nosuid, noexec: what AWS's init mounts proc, sysfs and tmpfs with.
const NO_DEV_SUID_EXEC: MsFlags = MsFlags::MS_NODEV
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOEXEC);

/// One filesystem to mount: source, target, type, flags, data.
struct Fs(
    &'static str,
    &'static str,
    &'static str,
    MsFlags,
    Option<&'static str>,
);

/// The filesystems, in order, with AWS's flags (devpts without nodev, since
/// it holds devices; devtmpfs likewise).
const FILESYSTEMS: &[Fs] = &[
    Fs(
        "dev",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        None,
    ),
    Fs("proc", "/proc", "proc", NO_DEV_SUID_EXEC, None),
    Fs("sysfs", "/sys", "sysfs", NO_DEV_SUID_EXEC, None),
    Fs(
        "tmpfs",
        "/run",
        "tmpfs",
        NO_DEV_SUID_EXEC,
        Some("mode=0755"),
    ),
    Fs("tmpfs", "/tmp", "tmpfs", NO_DEV_SUID_EXEC, None),
    Fs("shm", "/dev/shm", "tmpfs", NO_DEV_SUID_EXEC, None),
    Fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        None,
    ),
    Fs(
        "cgroup_root",
        "/sys/fs/cgroup",
        "tmpfs",
        NO_DEV_SUID_EXEC,
        Some("mode=0755"),
    ),
];

/// Symlinks in /dev: (link, target).
const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// /run and /tmp get a tmpfs only when empty (see [`mount_at`]).
const KEEP_IF_NOT_EMPTY: &[&str] = &["/run", "/tmp"];

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where cgroup2 goes, next to the v1 controllers (systemd's "hybrid" place).
const CGROUP2_DIR: &str = "/sys/fs/cgroup/unified";

/// What [`ensure_stdio`] found, for [`boot`] to report once it may print.
static STDIO_WAS_CLOSED: AtomicBool = AtomicBool::new(false);
static STDIO_MOUNTED_DEV: AtomicBool = AtomicBool::new(false);
/// Bit `fd` set: fd was closed at start and holds a stand-in (/dev/null or
/// an O_PATH `/`) until /dev/console can be opened. Only these fds are ever
/// moved to the console: stdio someone handed us is left alone.
static STDIO_STANDIN: AtomicU8 = AtomicU8::new(0);

// ---------------------------------------------------------------- stdio

/// Make sure fds 0-2 are open before anything may use them: an init started
/// by the kernel without /dev/console has them closed, and the first file
/// init opened would otherwise become its stderr. Tries /dev/console, then
/// /dev/null; as PID 1 with neither, mounts devtmpfs on /dev and tries
/// again; as a last resort parks an O_PATH descriptor of `/` there (writes
/// to it fail harmlessly). Prints nothing: there may be nowhere to print.
pub fn ensure_stdio() {
    let mut standin = 0u8;
    for round in 0..2 {
        let mut missing = false;
        for fd in 0..3 {
            if sys::fd_is_open(fd) && standin & (1 << fd) == 0 {
                continue;
            }
            STDIO_WAS_CLOSED.store(true, Ordering::Relaxed);
            if sys::open_onto(fd, c"/dev/console", libc::O_RDWR) {
                standin &= !(1 << fd);
            } else if sys::open_onto(fd, c"/dev/null", libc::O_RDWR) {
                standin |= 1 << fd;
            } else {
                missing = true;
            }
        }
        if (!missing && standin == 0) || round > 0 || !is_pid1() {
            break;
        }
        // No console: as PID 1, /dev is probably empty. Mount it and retry.
        STDIO_MOUNTED_DEV.store(true, Ordering::Relaxed);
        sys::mount_devtmpfs_raw();
    }
    for fd in 0..3 {
        if !sys::fd_is_open(fd) {
            standin |= 1 << fd;
            sys::open_onto(fd, c"/", libc::O_PATH | libc::O_DIRECTORY);
        }
    }
    STDIO_STANDIN.store(standin, Ordering::Relaxed);
}

/// Say what [`ensure_stdio`] found and did, now that printing is possible.
fn report_stdio() {
    if !STDIO_WAS_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let dev = if STDIO_MOUNTED_DEV.load(Ordering::Relaxed) {
        "; /dev had no console, so devtmpfs was mounted on /dev first"
    } else {
        ""
    };
    if STDIO_STANDIN.load(Ordering::Relaxed) == 0 {
        info!("stdio: fds 0-2 were closed at start{dev}; attached to /dev/console");
    } else {
        warn!("stdio: fds 0-2 were closed at start{dev}; /dev/console could not be opened yet");
    }
}

/// Move the stand-ins of [`ensure_stdio`] to /dev/console, once /dev is
/// mounted.
fn attach_console() {
    let standin = STDIO_STANDIN.load(Ordering::Relaxed);
    if standin == 0 {
        return;
    }
    for fd in (0..3).filter(|fd| standin & (1 << fd) != 0) {
        if !sys::open_onto(fd, c"/dev/console", libc::O_RDWR) {
            let e = Errno::last();
            warn!("stdio: cannot open /dev/console: {e}; stdio stays on stand-ins");
            return;
        }
    }
    STDIO_STANDIN.store(0, Ordering::Relaxed);
    info!("stdio: attached to /dev/console");
}

// ---------------------------------------------------------------- mounts

/// Whether `target` is a mount point according to a /proc/self/mounts text.
fn table_has(table: &str, target: &str) -> bool {
    table.lines().any(|l| l.split(' ').nth(1) == Some(target))
}

/// Whether `target` is a mount point now. Without /proc (not yet mounted,
/// or just after the root switch) nothing counts as mounted; a second mount
/// of devtmpfs then fails with EBUSY, which is fine.
fn is_mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|t| table_has(&t, target))
}

fn make_dir(path: &str) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

/// Mount unless `target` is a mount point already. Ok(true) when mounted
/// now. /run and /tmp that hold files are left alone rather than hidden
/// under a tmpfs (an image may ship files there; a test running init as PID
/// 1 in a namespace shares them with the host).
fn mount_at(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<bool, String> {
    if is_mounted(target) {
        return Ok(false);
    }
    let has_files = || std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_some());
    if KEEP_IF_NOT_EMPTY.contains(&target) && has_files() {
        info!("{target} is not empty: left as it is, no {fstype} over it");
        return Ok(false);
    }
    make_dir(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) => Ok(true),
        Err(Errno::EBUSY) => Ok(false),
        Err(e) => Err(format!("mount {fstype} on {target}: {e}")),
    }
}

/// The enabled v1 controllers listed in a /proc/cgroups text.
fn enabled_controllers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let enabled = f.nth(2)?;
            let sane = !name.is_empty() && !name.contains('/') && !name.starts_with('.');
            (enabled == "1" && sane).then(|| name.to_string())
        })
        .collect()
}

/// The cgroup mounts: the v1 controllers the kernel lists, then cgroup2.
fn cgroup_filesystems() -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    match std::fs::read_to_string("/proc/cgroups") {
        Ok(text) => {
            for name in enabled_controllers(&text) {
                out.push((format!("/sys/fs/cgroup/{name}"), name, "cgroup"));
            }
        }
        Err(e) => warn!("cannot read /proc/cgroups: {e}; no cgroup v1 controllers mounted"),
    }
    let has_v2 = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("cgroup2"))
    });
    if has_v2 {
        out.push((CGROUP2_DIR.to_string(), String::new(), "cgroup2"));
    }
    out
}

/// Mount everything of [`FILESYSTEMS`], the /dev links and the cgroups,
/// skipping what is already mounted. One info line lists what was mounted;
/// each failure gets its own line. Safe to call again.
fn mount_filesystems() {
    let mut done: Vec<String> = Vec::new();
    let mut report = |target: &str, r: Result<bool, String>| match r {
        Ok(true) => done.push(target.to_string()),
        Ok(false) => {}
        Err(e) => error!("{e}"),
    };
    let mut cgroup_root_new = false;
    for Fs(source, target, fstype, flags, data) in FILESYSTEMS {
        let r = mount_at(source, target, fstype, *flags, *data);
        if *target == CGROUP_ROOT {
            cgroup_root_new = r == Ok(true);
        }
        report(target, r);
        if *target == "/dev" {
            attach_console();
        }
    }
    for (link, target) in DEV_LINKS {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => error!("symlink {link} -> {target}: {e}"),
        }
    }
    // Controllers only into a cgroup tmpfs mounted just now: one that was
    // already there belongs to someone else (or to an earlier call).
    if cgroup_root_new {
        for (target, name, fstype) in cgroup_filesystems() {
            let (source, data) = if name.is_empty() {
                (fstype, None)
            } else {
                (name.as_str(), Some(name.as_str()))
            };
            let r = mount_at(source, &target, fstype, NO_DEV_SUID_EXEC, data);
            report(&target, r);
        }
    }
    if !done.is_empty() {
        info!("mounted {}", done.join(" "));
    }
}

/// Lazily unmount the initramfs-stage filesystems before the root switch,
/// so they are not left pinned under the new root. Children (/dev/pts,
/// cgroups) go with their parents. Skips any that holds `keep`.
fn detach_stage_one(keep: &str) {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for target in ["/dev", "/run", "/tmp", "/sys", "/proc"] {
        let holds_keep = keep.starts_with(&format!("{target}/"));
        if holds_keep || !table_has(&table, target) {
            continue;
        }
        if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
            warn!("root switch: detaching the initramfs {target}: {e}");
        }
    }
}

// ---------------------------------------------------------------- NSM driver

fn module_hint(e: Errno, compressed: bool) -> &'static str {
    match e {
        Errno::EOPNOTSUPP | Errno::EINVAL if compressed => {
            " (this kernel cannot load compressed modules: ship the driver uncompressed, e.g. `xz -d nsm.ko.xz`)"
        }
        Errno::ENOEXEC => " (not a module for this kernel: wrong architecture, format or vermagic)",
        Errno::ENOENT => " (unknown symbols: load the modules it depends on first; see dmesg)",
        Errno::EPERM | Errno::EKEYREJECTED => {
            " (module loading disabled or signature rejected; see dmesg)"
        }
        _ => "",
    }
}

/// Load the NSM driver with finit_module(2), then unlink the file as AWS's
/// init does. A missing file is skipped silently. A file ending in .xz, .gz
/// or .zst is passed with MODULE_INIT_COMPRESSED_FILE.
fn load_driver(path: &str) {
    // A plain file: a FIFO there must not hang the boot.
    let file = match sys::open_regular(Path::new(path), sys::OpenAs::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            error!("NSM driver {path}: cannot open: {e}");
            return;
        }
    };
    let compressed = [".xz", ".gz", ".zst"].iter().any(|s| path.ends_with(s));
    let flags = if compressed {
        sys::MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let rc = sys::finit_module(&file, flags);
    drop(file);
    if let Err(err) = rc.as_ref() {
        let err = *err;
        if err == Errno::EEXIST {
            info!("NSM driver {path}: already loaded");
        } else {
            error!(
                "NSM driver {path}: finit_module failed: {err}{}",
                module_hint(err, compressed)
            );
            return;
        }
    } else {
        info!("NSM driver {path}: loaded");
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!("NSM driver {path}: loaded, but cannot unlink it: {e}");
    }
}

// ---------------------------------------------------------------- heartbeat

/// Wait until `fd` is ready for `events` or `deadline` passes.
fn wait_for(fd: &OwnedFd, events: PollFlags, deadline: Instant, what: &str) -> Result<(), String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if ms == 0 {
            return Err(format!("timed out {what}"));
        }
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

/// One attempt: connect, send 0xB7, read the echo, all within `budget`.
fn heartbeat_once(cid: u32, port: u32, budget: Duration) -> Result<(), String> {
    let deadline = Instant::now() + budget;
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| match e {
        Errno::EAFNOSUPPORT => format!("socket: {e} (no vsock support in this kernel)"),
        e => format!("socket: {e}"),
    })?;
    // The kernel's own connect timeout (2 s by default) would cut a slow
    // connect short; give it the whole budget. Best effort.
    sys::set_vsock_connect_timeout(&fd, budget);
    match connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            wait_for(&fd, PollFlags::POLLOUT, deadline, "connecting")?;
            let so_error = getsockopt(&fd, sockopt::SocketError).map_err(|e| e.to_string())?;
            if so_error != 0 {
                return Err(format!("connect: {}", Errno::from_raw(so_error)));
            }
        }
        Err(e) => return Err(format!("connect: {e}")),
    }
    loop {
        match nix::unistd::write(&fd, &[HEARTBEAT_BYTE]) {
            Ok(1) => break,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_for(&fd, PollFlags::POLLOUT, deadline, "sending")?,
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => return Err("peer closed without echoing".into()),
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                wait_for(&fd, PollFlags::POLLIN, deadline, "waiting for the echo")?
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let [echo] = buf;
    if echo != HEARTBEAT_BYTE {
        return Err(format!("echo was 0x{echo:02X}, not 0x{HEARTBEAT_BYTE:02X}"));
    }
    Ok(())
}

fn heartbeat_with(
    hb: &HeartbeatConfig,
    attempts: u32,
    budget: Duration,
    pause: Duration,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=attempts {
        let started = Instant::now();
        match heartbeat_once(hb.cid, hb.port, budget) {
            Ok(()) => {
                info!(
                    "heartbeat: 0x{HEARTBEAT_BYTE:02X} echoed by {}:{} (attempt {attempt}, {} ms)",
                    hb.cid,
                    hb.port,
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
            Err(e) => {
                warn!(
                    "heartbeat attempt {attempt}/{attempts} to {}:{}: {e}",
                    hb.cid, hb.port
                );
                last = e;
            }
        }
        if attempt < attempts {
            std::thread::sleep(pause);
        }
    }
    Err(format!("no echo after {attempts} attempts (last: {last})"))
}

/// The readiness heartbeat: connect to `cid:port`, send 0xB7 and wait for
/// it to come back. Up to 3 attempts of 10 s each, 1 s apart.
fn heartbeat(hb: &HeartbeatConfig) -> Result<(), String> {
    heartbeat_with(
        hb,
        HEARTBEAT_ATTEMPTS,
        HEARTBEAT_ATTEMPT_TIMEOUT,
        HEARTBEAT_PAUSE,
    )
}

// ---------------------------------------------------------------- root switch

/// AWS's root switch (pivot_root(2) does not work on an initramfs root):
/// bind `dir` onto itself, chdir into it, move it over `/`, chroot, chdir.
fn switch_root(dir: &str) -> bool {
    if !Path::new(dir).is_dir() {
        info!("pivot_root_dir {dir} does not exist: staying on the initramfs root");
        return false;
    }
    let none: Option<&str> = None;
    if let Err(e) = mount(
        Some(dir),
        dir,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    ) {
        error!("root switch: bind-mount {dir}: {e}; staying on the initramfs root");
        return false;
    }
    let undo = |what: String| {
        error!("root switch: {what}; staying on the initramfs root");
        let _ = nix::unistd::chdir("/");
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    };
    if let Err(e) = nix::unistd::chdir(dir) {
        undo(format!("chdir {dir}: {e}"));
        return false;
    }
    detach_stage_one(dir);
    if let Err(e) = mount(Some("."), "/", none, MsFlags::MS_MOVE, none) {
        undo(format!("move {dir} onto /: {e}"));
        return false;
    }
    if let Err(e) = nix::unistd::chroot(".") {
        error!("root switch: chroot {dir}: {e}; still on the initramfs root");
        let _ = nix::unistd::chdir("/");
        return false;
    }
    if let Err(e) = nix::unistd::chdir("/") {
        warn!("root switch: chdir / in the new root: {e}");
    }
    info!("root switched to {dir}");
    true
}

// ---------------------------------------------------------------- entry points

/// Boot duties when running as PID 1. Returns true when the root was
/// switched (main then re-reads `/etc/init.yaml` in the new root).
pub fn boot(cfg: &InitConfig) -> bool {
    if !is_pid1() {
        info!(
            "not PID 1 (pid {}): skipping boot duties (mounts, NSM driver, heartbeat, root switch)",
            nix::unistd::getpid()
        );
        return false;
    }
    report_stdio();
    mount_filesystems();
    match &cfg.nsm_driver_path {
        Some(path) if !path.is_empty() => load_driver(path),
        _ => {}
    }
    if cfg.vsock.enabled {
        if let Err(e) = heartbeat(&cfg.vsock) {
            error!(
                "heartbeat to {}:{} failed: {e}; carrying on (the host may terminate the enclave)",
                cfg.vsock.cid, cfg.vsock.port
            );
        }
    }
    if !cfg.pivot_root {
        return false;
    }
    let switched = switch_root(&cfg.pivot_root_dir);
    // In the new root: mount everything again. After a failed switch this
    // restores anything detached on the way, and is a no-op otherwise.
    mount_filesystems();
    switched
}

/// After a switch, with the new root's config: say where things are, and
/// warn when the service directory is not there. The mounts were done by
/// [`boot`]; the heartbeat, NSM and pivot settings of this config are not
/// acted on (they belong to the initramfs stage).
pub fn after_switch(cfg: &InitConfig) {
    info!(
        "in the new root: services from {}, logs in {}",
        cfg.service_dir, cfg.log_dir
    );
    if !Path::new(&cfg.service_dir).is_dir() {
        warn!(
            "service_dir {} does not exist in the new root",
            cfg.service_dir
        );
    }
}

/// Final step as PID 1: sync, then reboot(2) with power-off or restart.
/// Never returns; if reboot(2) fails, parks forever (PID 1 must not exit).
/// Not as PID 1 (a development run): exits instead, so a test run as root
/// can never power off the machine it runs on.
pub fn finish(reboot: bool) -> ! {
    crate::sys::sync();
    if !is_pid1() {
        info!("not PID 1: exiting instead of reboot(2)");
        std::process::exit(0);
    }
    let (mode, what) = if reboot {
        (nix::sys::reboot::RebootMode::RB_AUTOBOOT, "restarting")
    } else {
        (nix::sys::reboot::RebootMode::RB_POWER_OFF, "powering off")
    };
    info!("synced; {what}");
    let Err(e) = nix::sys::reboot::reboot(mode);
    error!("reboot(2) failed: {e}; parking forever");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_lookup() {
        let t =
            "proc /proc proc rw,nosuid 0 0\ndev /dev devtmpfs rw 0 0\nshm /dev/shm tmpfs rw 0 0\n";
        assert!(table_has(t, "/proc"));
        assert!(table_has(t, "/dev/shm"));
        assert!(!table_has(t, "/sys"));
        assert!(!table_has(t, "/de"));
        assert!(!table_has("", "/"));
    }

    #[test]
    fn cgroup_controllers() {
        let t = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                 cpuset\t3\t1\t1\n\
                 cpu\t1\t1\t1\n\
                 memory\t0\t43\t0\n\
                 bad/name\t0\t1\t1\n\
                 short\t1\n\
                 pids\t8\t1\t1\n";
        assert_eq!(enabled_controllers(t), vec!["cpuset", "cpu", "pids"]);
        assert!(enabled_controllers("").is_empty());
    }

    #[test]
    fn module_hints() {
        assert!(module_hint(Errno::EOPNOTSUPP, true).contains("uncompressed"));
        assert_eq!(module_hint(Errno::EINVAL, false), "");
        assert!(module_hint(Errno::ENOEXEC, false).contains("vermagic"));
    }

    #[test]
    fn stdio_is_open_in_tests() {
        ensure_stdio();
        assert!((0..3).all(sys::fd_is_open));
    }

    #[test]
    fn heartbeat_failure_is_bounded() {
        // Nothing echoes on this port; whatever the kernel says (no vsock,
        // no loopback transport, reset), the call must return an error
        // within its budget instead of hanging.
        let hb = HeartbeatConfig {
            enabled: true,
            cid: 1,
            port: 9,
        };
        let t = Instant::now();
        let r = heartbeat_with(
            &hb,
            2,
            Duration::from_millis(300),
            Duration::from_millis(10),
        );
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
}
