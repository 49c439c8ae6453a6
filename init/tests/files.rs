//! Nothing on disk can stall or fool init, through the real binary (not
//! PID 1): FIFOs, device files and over-large files in service_dir and as
//! init.yaml, FIFOs and symlinks in log_dir, log_dir's mode, out-of-range
//! durations in service files, and a console (stderr) nobody reads.
mod common;
use common::*;
use nix::libc;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The largest value TOML can write: `RestartSec = 9223372036854775807`.
const HUGE: i64 = i64::MAX;

/// Directories and init.yaml for an init started by these tests (log_dir
/// is not created: init must do it).
struct Setup {
    dir: TempDir,
    service_dir: PathBuf,
    log_dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let service_dir = dir.path().join("services");
    let log_dir = dir.path().join("var").join("log");
    std::fs::create_dir_all(&service_dir).unwrap();
    let socket = dir.path().join("init.sock");
    let config = dir.path().join("init.yaml");
    std::fs::write(
        &config,
        format!(
            "service_dir: {}\nlog_dir: {}\ncontrol:\n  unix_socket_path: {}\nvsock:\n  enabled: false\nnsm_driver_path: null\npivot_root: false\n",
            service_dir.display(),
            log_dir.display(),
            socket.display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        service_dir,
        log_dir,
        config,
        socket,
    }
}

impl Setup {
    fn service(&self, file: &str, text: &str) {
        std::fs::write(self.service_dir.join(file), text).unwrap();
    }
    fn log_dir(&self) -> &Path {
        std::fs::create_dir_all(&self.log_dir).unwrap();
        &self.log_dir
    }

    /// Start init on this setup, stderr into a file; does not wait.
    fn spawn(self) -> Init {
        let stderr_path = self.dir.path().join("init.stderr");
        let err = std::fs::File::create(&stderr_path).unwrap();
        self.spawn_with(stderr_path, err.try_clone().unwrap().into(), err.into())
    }

    fn spawn_with(self, stderr_path: PathBuf, stdout: Stdio, stderr: Stdio) -> Init {
        let mut cmd = Command::new(init_bin());
        cmd.arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("INIT_CONFIG")
            .env_remove("INIT_NO_PIDFD");
        limit_memory(&mut cmd);
        let child = cmd.spawn().expect("spawn init");
        Init {
            pid: child.id() as i32,
            child: Some(child),
            dir: self.dir,
            socket: self.socket,
            service_dir: self.service_dir,
            log_dir: self.log_dir,
            config: self.config,
            stderr_path,
            wrapped: false,
        }
    }

    /// Start init and wait until it answers a Ping.
    fn start(self) -> Init {
        let mut init = self.spawn();
        init.wait_socket();
        init
    }

    /// `init --check` on this setup, killed after `TIMEOUT`: None if it
    /// had not finished by then.
    fn check(&self) -> Option<Output> {
        run_bounded(&["--check", "-c", &self.config.display().to_string()])
    }
}

/// A process reading /dev/zero into memory must fail fast, not take the
/// machine's memory (only matters for the code before the fix).
fn limit_memory(cmd: &mut Command) {
    // SAFETY: setrlimit is async-signal-safe; it only touches the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256 << 20,
                rlim_max: 256 << 20,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
}

/// Run init with `args` (output captured), killed after `TIMEOUT`.
fn run_bounded(args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new(init_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("INIT_CONFIG");
    limit_memory(&mut cmd);
    let mut child = cmd.spawn().expect("spawn init --check");
    // Drained as it comes, so that long output cannot block init.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Output {
                status,
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn reason(init: &Init, name: &str) -> String {
    init.status(name)["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn init_log(init: &Init) -> String {
    std::fs::read_to_string(init.log_dir.join("init.log")).unwrap_or_default()
}

const OK: &str = "ExecStart = \"/bin/sleep 1000\"\n";

/// Ping over a fresh connection; how long the answer took.
fn ping(init: &Init) -> Duration {
    let t = Instant::now();
    let r = init.request(r#""Ping""#);
    assert_eq!(r, "Pong", "{r}");
    t.elapsed()
}

// ----- service files and init.yaml --------------------------------------------

#[test]
fn fifo_service_file_does_not_hang_check() {
    let s = setup("fifock");
    mkfifo(&s.service_dir.join("x.service"));
    s.service("ok.service", OK);
    let out = s.check().expect("init --check hung on a FIFO");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("x.service: cannot read: not a regular file (a FIFO)"),
        "{t}"
    );
    assert!(t.contains("2 services"), "{t}");
}

#[test]
fn fifo_service_file_does_not_hang_boot() {
    let s = setup("fifoboot");
    mkfifo(&s.service_dir.join("x.service"));
    s.service("ok.service", OK);
    let init = s.start();
    init.wait_state("ok", "running");
    assert_eq!(init.state("x"), "invalid");
    assert!(
        reason(&init, "x").contains("not a regular file"),
        "{}",
        reason(&init, "x")
    );
}

#[test]
fn fifo_service_file_does_not_hang_reload() {
    let s = setup("fiforeload");
    s.service("ok.service", OK);
    let init = s.start();
    mkfifo(&init.service_dir.join("x.service"));
    let r = init.request(r#""SystemReload""#);
    assert!(r.get("Success").is_some(), "{r}");
    assert_eq!(init.state("x"), "invalid");
    ping(&init);
}

#[test]
fn fifo_service_file_does_not_hang_enable() {
    let s = setup("fifoenable");
    s.service("ok.service", OK);
    let init = s.start();
    mkfifo(&init.service_dir.join("x.service.disabled"));
    // Answered (whatever it says), and init still serves.
    let r = init.request(r#"{"ServiceEnable":{"name":"x"}}"#);
    assert!(
        r.get("Success").is_some() || r.get("Error").is_some(),
        "{r}"
    );
    ping(&init);
    assert_eq!(init.state("x"), "invalid");
}

#[test]
fn service_file_to_dev_zero_or_too_big_is_refused() {
    let s = setup("zero");
    symlink(Path::new("/dev/zero"), &s.service_dir.join("zero.service"));
    // Valid TOML, 2 MiB of it.
    let big = format!(
        "{OK}{}",
        "# padding padding padding padding\n".repeat(62_000)
    );
    s.service("big.service", &big);
    s.service("ok.service", OK);
    let out = s.check().expect("init --check hung on /dev/zero");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("zero.service: cannot read: not a regular file (a character device)"),
        "{t}"
    );
    assert!(
        t.contains("big.service: cannot read: larger than 65536 bytes"),
        "{t}"
    );
    let init = s.start();
    init.wait_state("ok", "running");
    assert_eq!(init.state("zero"), "invalid");
    assert_eq!(init.state("big"), "invalid");
    assert!(
        reason(&init, "big").contains("larger than"),
        "{}",
        reason(&init, "big")
    );
}

#[test]
fn init_yaml_fifo_or_device_is_refused() {
    let d = TempDir::new("yaml");
    let fifo = d.path().join("fifo.yaml");
    mkfifo(&fifo);
    let zero = d.path().join("zero.yaml");
    symlink(Path::new("/dev/zero"), &zero);
    let big = d.path().join("big.yaml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    for (p, want) in [
        (&fifo, "not a regular file"),
        (&zero, "not a regular file"),
        (&big, "larger than 65536 bytes"),
    ] {
        let out = run_bounded(&["--check", "-c", &p.display().to_string()])
            .unwrap_or_else(|| panic!("init --check hung on {}", p.display()));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!("{}: cannot read: {want}", p.display())),
            "{t}"
        );
    }
}

/// init.yaml nested 60,000 `[` deep (inside the size bound).
fn nest_deeply(config: &Path) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str("bogus: ");
    text.push_str(&"[".repeat(60_000));
    text.push('\n');
    std::fs::write(config, text).unwrap();
}

/// YAML's scanner costs time in the square of its nesting depth (over 10 s at
/// this depth before the guard), so a file nested this deep is refused
/// before it is parsed, with the file and line, at once.
#[test]
fn deeply_nested_init_yaml_is_refused_at_once() {
    let s = setup("nested");
    nest_deeply(&s.config);
    let out = s
        .check()
        .expect("init --check hung on a deeply nested init.yaml");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "{}: line 9: nested deeper than",
            s.config.display()
        )),
        "{t}"
    );
}

#[test]
fn deeply_nested_init_yaml_does_not_stall_reload() {
    let s = setup("nestreload");
    s.service("ok.service", OK);
    let init = s.start();
    nest_deeply(&init.config);
    let r = init.request(r#""SystemReload""#);
    let errors = r["Success"]["errors"].to_string();
    assert!(errors.contains("nested deeper than"), "{r}");
    ping(&init);
    assert_eq!(init.state("ok"), "running");
}

/// Each key of init.yaml was tried against all the keys before it, so
/// 20,000 unknown keys took 45 s; they are warned about, at once.
#[test]
fn init_yaml_with_many_unknown_keys_is_checked_at_once() {
    let s = setup("manykeys");
    let mut yaml = std::fs::read_to_string(&s.config).unwrap();
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut n = 0;
    'keys: for a in letters {
        for b in letters {
            for c in letters {
                if yaml.len() > 60_000 {
                    break 'keys;
                }
                yaml.push_str(&format!("{}{}{}: 1\n", *a as char, *b as char, *c as char));
                n += 1;
            }
        }
    }
    yaml.push_str("max_log_files: 3\n");
    std::fs::write(&s.config, yaml).unwrap();
    let out = s.check().expect("init --check hung on many unknown keys");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("unknown key 'aaa' ignored"), "{t}");
    assert!(t.contains(&format!("{n} warnings")), "{n} keys: {t}");
}

/// `init --check -c config`, output discarded: its peak RSS in KiB.
fn check_peak_kib(config: &Path) -> u64 {
    let mut cmd = Command::new(init_bin());
    cmd.args(["--check", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("INIT_CONFIG");
    limit_memory(&mut cmd);
    // Reaped by the wait4 below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn init --check");
    let mut status = 0;
    // SAFETY: plain syscall on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    usage.ru_maxrss as u64
}

/// YAML and TOML values take 80-160 times the memory of their text (a
/// 1 MiB init.yaml of `a,` took init 161 MiB, which for PID 1 in a small
/// enclave is a kernel panic), so no file just under 1 MiB may cost init
/// more than a few MiB, whatever it holds.
#[test]
fn files_near_a_mebibyte_cost_little_memory() {
    let s = setup("parsemem");
    let mut yaml = std::fs::read_to_string(&s.config).unwrap();
    yaml.push_str("bogus: [");
    while yaml.len() < (1 << 20) - 8 {
        yaml.push_str("a,");
    }
    yaml.push_str("]\n");
    std::fs::write(&s.config, yaml).unwrap();
    let mut unit = String::from("ExecStart = \"/bin/true\"\nbogus = [");
    while unit.len() < (1 << 20) - 8 {
        unit.push_str("1,");
    }
    unit.push_str("]\n");
    s.service("big.service", &unit);
    let peak = check_peak_kib(&s.config);
    assert!(peak < 32 << 10, "init --check peaked at {peak} KiB");
}

// ----- log files ----------------------------------------------------------------

/// A service that writes a line now and then.
const CHATTY: &str = "ExecStart = \"/bin/sh -c 'while true; do echo tick; sleep 0.2; done'\"\n";

#[test]
fn fifo_init_log_does_not_hang() {
    let s = setup("fifoinitlog");
    mkfifo(&s.log_dir().join("init.log"));
    s.service("ok.service", OK);
    let init = s.start();
    init.wait_state("ok", "running");
    ping(&init);
    let err = init.stderr_text();
    let path = init.log_dir.join("init.log");
    assert!(
        err.contains(&format!("{}: not a regular file", path.display())),
        "{err}"
    );
}

#[test]
fn fifo_service_log_does_not_hang() {
    let s = setup("fifosvclog");
    mkfifo(&s.log_dir().join("svc.log"));
    s.service("svc.service", CHATTY);
    let init = s.start();
    init.wait_state("svc", "running");
    assert!(wait_for(
        || init.status("svc")["log_dropped_lines"].as_u64() > Some(1),
        TIMEOUT
    ));
    // Still followed in memory, and the error is in init.log.
    assert!(init.logs("svc", 5).iter().any(|l| l.ends_with("tick")));
    let path = init.log_dir.join("svc.log");
    assert!(
        init_log(&init).contains(&format!("{}: not a regular file", path.display())),
        "{}",
        init_log(&init)
    );
    assert_eq!(init.state("svc"), "running");
}

#[test]
fn fifo_rotated_log_does_not_hang_logs() {
    let s = setup("fiforot");
    mkfifo(&s.log_dir().join("svc.log.1"));
    s.service("svc.service", CHATTY);
    let init = s.start();
    init.wait_state("svc", "running");
    // More lines than the ring holds: read back from the files.
    let lines = init.logs("svc", 5000);
    assert!(!lines.is_empty());
    ping(&init);
}

#[test]
fn symlinked_log_is_not_appended_to() {
    let s = setup("linklog");
    let secret = s.dir.path().join("secret");
    std::fs::write(&secret, "SECRET\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&secret, &s.log_dir().join("svc.log"));
    s.service("svc.service", CHATTY);
    let init = s.start();
    init.wait_state("svc", "running");
    let dropped = || {
        init.status("svc")["log_dropped_lines"]
            .as_u64()
            .unwrap_or(0)
    };
    let written = || std::fs::read_to_string(&secret).unwrap_or_default() != "SECRET\n";
    assert!(wait_for(|| dropped() > 1 || written(), TIMEOUT));
    assert!(!written(), "the service's output went through the symlink");
    assert!(dropped() > 1);
    let path = init.log_dir.join("svc.log");
    let log = init_log(&init);
    assert!(
        log.contains(&path.display().to_string()) && log.contains("symbolic link"),
        "{log}"
    );
    assert_eq!(init.state("svc"), "running");
    // The link is still a link: init did not replace it either.
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn symlinked_rotated_log_is_not_read() {
    let s = setup("linkrot");
    let secret = s.dir.path().join("secret");
    std::fs::write(&secret, "TOPSECRET 1\nTOPSECRET 2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&secret, &s.log_dir().join("svc.log.1"));
    s.service("svc.service", CHATTY);
    let init = s.start();
    init.wait_state("svc", "running");
    let lines = init.logs("svc", 1000);
    assert!(!lines.is_empty());
    assert!(!lines.iter().any(|l| l.contains("TOPSECRET")), "{lines:?}");
}

#[test]
fn log_dir_is_created_0750() {
    let s = setup("logmode");
    let log_dir = s.log_dir.clone();
    assert!(!log_dir.exists());
    s.service("ok.service", OK);
    let init = s.start();
    init.wait_state("ok", "running");
    let mode = std::fs::metadata(&log_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750, "{mode:o}");
}

// ----- durations ------------------------------------------------------------------

#[test]
fn huge_restart_sec_is_refused_at_load() {
    let s = setup("restartsec");
    s.service(
        "fail.service",
        &format!("ExecStart = \"/bin/false\"\nRestart = \"always\"\nRestartSec = {HUGE}\n"),
    );
    s.service("ok.service", OK);
    let out = s.check().expect("init --check hung");
    let mut init = s.start();
    init.wait_state("ok", "running");
    // init survives (it did not before the restructure) ...
    assert_eq!(init.wait_exit(Duration::from_millis(500)), None);
    ping(&init);
    // ... and the file is refused rather than leaving the service stuck in
    // auto-restart for good.
    let want = format!("RestartSec: {HUGE} is more than the maximum 31536000 (one year)");
    assert_eq!(init.state("fail"), "invalid", "{}", init.status("fail"));
    assert!(
        reason(&init, "fail").contains(&want),
        "{}",
        reason(&init, "fail")
    );
    let t = text(&out);
    assert!(t.contains(&format!("fail.service: {want}")), "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
}

#[test]
fn huge_timeout_stop_sec_and_interval_are_refused_at_load() {
    let s = setup("stopsec");
    s.service(
        "stubborn.service",
        &format!(
            "ExecStart = \"/bin/sh -c 'trap \\\"\\\" TERM; while true; do sleep 1; done'\"\nTimeoutStopSec = {HUGE}\n"
        ),
    );
    s.service(
        "window.service",
        &format!("ExecStart = \"/bin/sleep 1000\"\nStartLimitIntervalSec = {HUGE}\n"),
    );
    let out = s.check().expect("init --check hung");
    let mut init = s.start();
    ping(&init);
    let states = (init.state("stubborn"), init.state("window"));
    // A SIGTERM shutdown ends (it never did while a service that ignores
    // SIGTERM waited for a SIGKILL deadline that could not be represented).
    init.signal(15);
    assert_eq!(
        init.wait_exit(TIMEOUT),
        Some(Some(0)),
        "{}",
        init.stderr_text()
    );
    assert_eq!(states, ("invalid".into(), "invalid".into()));
    let t = text(&out);
    for (file, key) in [
        ("stubborn.service", "TimeoutStopSec"),
        ("window.service", "StartLimitIntervalSec"),
    ] {
        let want = format!("{file}: {key}: {HUGE} is more than the maximum 31536000 (one year)");
        assert!(t.contains(&want), "{t}");
    }
}

#[test]
fn one_year_durations_work() {
    let s = setup("oneyear");
    let year = 31_536_000;
    s.service(
        "svc.service",
        &format!(
            "ExecStart = \"/bin/sleep 1000\"\nRestart = \"always\"\nRestartSec = {year}\nTimeoutStopSec = {year}\nStartLimitIntervalSec = {year}\n"
        ),
    );
    let out = s.check().expect("init --check hung");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let init = s.start();
    let st = init.wait_state("svc", "running");
    let pid = st["pid"].as_i64().unwrap() as i32;
    // A crash waits a year to restart; init keeps serving.
    assert!(kill(pid, 9));
    init.wait_state("svc", "auto-restart");
    ping(&init);
    // A stop: SIGTERM is sent at once (the SIGKILL deadline is a year off).
    let r = init.start_service("svc");
    assert!(r.get("Success").is_some(), "{r}");
    let pid = init.wait_state("svc", "running")["pid"].as_i64().unwrap() as i32;
    let r = init.stop_service("svc");
    assert!(r.get("Success").is_some(), "{r}");
    assert!(wait_for(|| !pid_alive(pid), TIMEOUT));
}

// ----- the console ------------------------------------------------------------------

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

/// Read what is in the pipe now, without blocking.
fn drain(fd: &OwnedFd) -> Vec<u8> {
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// stderr is a pipe nobody reads (a stalled serial console): init must go
/// on serving, drop what the console cannot take, count it, and say so in
/// init.log when writing resumes; init.log gets every line.
#[test]
fn console_nobody_reads_does_not_stall_init() {
    let s = setup("console");
    // Each new invalid file is one error line, at boot or at a reload.
    let n = 60;
    let bad = |dir: &Path, round: usize| {
        for i in 0..n {
            if round > 0 {
                let _ = std::fs::remove_file(dir.join(format!("bad{}-{i:02}.service", round - 1)));
            }
            std::fs::write(
                dir.join(format!("bad{round}-{i:02}.service")),
                format!("Restart = \"no\" # {}\n", "x".repeat(300)),
            )
            .unwrap();
        }
    };
    bad(&s.service_dir, 0);
    s.service("ok.service", OK);
    let (rd, wr) = pipe();
    // The smallest pipe (one page): a few lines fill it.
    unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let stderr_path = s.dir.path().join("unused");
    let mut init = s.spawn_with(
        stderr_path,
        Stdio::from(wr.try_clone().unwrap()),
        Stdio::from(wr),
    );
    init.wait_socket();
    init.wait_state("ok", "running");
    let mut worst = Duration::ZERO;
    for round in 1..=5 {
        bad(&init.service_dir, round);
        let r = init.request(r#""SystemReload""#);
        assert!(r.get("Success").is_some(), "{r}");
        worst = worst.max(ping(&init));
    }
    eprintln!("slowest ping with the console full: {worst:?}");
    assert!(worst < Duration::from_secs(2), "{worst:?}");
    // init.log has every line: n errors at boot and n per reload.
    let errors = |log: &str| {
        log.lines()
            .filter(|l| l.contains("missing required key ExecStart"))
            .count()
    };
    assert_eq!(errors(&init_log(&init)), n * 6, "{}", init_log(&init));
    // The console got some, not all.
    let got = String::from_utf8_lossy(&drain(&rd)).into_owned();
    assert!(errors(&got) < n * 6, "{got}");
    // Room again: the next message is preceded by the count of dropped ones.
    bad(&init.service_dir, 6);
    let r = init.request(r#""SystemReload""#);
    assert!(r.get("Success").is_some(), "{r}");
    let note = |t: &str| {
        t.lines()
            .any(|l| l.contains("console output resumed: dropped") && l.contains("lines"))
    };
    assert!(
        wait_for(|| note(&init_log(&init)), TIMEOUT),
        "{}",
        init_log(&init)
    );
    let got = String::from_utf8_lossy(&drain(&rd)).into_owned();
    assert!(note(&got), "{got}");
    assert_eq!(init.wait_exit(Duration::from_millis(10)), None);
}
