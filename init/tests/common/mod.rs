//! Shared harness for the integration tests: runs the real `init` binary
//! (not as PID 1, not as root) against a private temp dir, socket and log dir,
//! and talks raw JSON to its control socket.
//!
//! Used by core.rs, pid1.rs and deps.rs. serde_json is a dev-dependency of
//! `init` (see init/Cargo.toml). Small helpers may be added at the end.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Generous default timeout for polling (the machine may be busy).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Keep it short: the socket path must fit in sockaddr_un (108 bytes).
        let p = std::env::temp_dir().join(format!("it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn init_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_init"))
}

/// `initctl` lives next to `init` in the same target dir (built when the
/// workspace is built; may be missing if only `-p init` was built).
pub fn initctl_bin() -> PathBuf {
    init_bin().with_file_name("initctl")
}

/// Options for starting init; `Init::start` uses the defaults.
#[derive(Clone, Default)]
pub struct Opts {
    /// Extra YAML appended to init.yaml (top-level keys, e.g. "environment:\n  A: b\n").
    pub extra_yaml: String,
    /// Extra environment variables for the init process.
    pub env: Vec<(String, String)>,
    /// Variables removed from init's environment.
    pub env_remove: Vec<String>,
    /// More keys under `control:` in init.yaml, each line indented two spaces.
    pub control_yaml: String,
    /// Don't wait for the socket to accept (for tests of broken start-ups).
    pub no_wait: bool,
    /// Extra command-line words after `-c <config>`.
    pub args: Vec<String>,
    /// Use this control socket path instead of one in the temp dir.
    pub socket: Option<PathBuf>,
    /// Run init under this command, e.g. `["unshare", "--pid", "--fork",
    /// "--mount-proc"]`; `Init::pid` is then the wrapper's pid and
    /// `Init::init_pid()` init's own (host) pid, its only child.
    pub wrapper: Vec<String>,
    /// Use this log directory (created if missing) instead of `<temp>/log`,
    /// e.g. a tmpfs mounted by the test.
    pub log_dir: Option<PathBuf>,
}

/// A running init. Dropping it sends SIGTERM, then SIGKILL after 3 s, and
/// reaps it; its services are in their own sessions, so they are killed by
/// pid list (any process whose parent is init) as a last resort.
pub struct Init {
    pub dir: TempDir,
    pub child: Option<Child>,
    pub pid: i32,
    pub socket: PathBuf,
    pub service_dir: PathBuf,
    pub log_dir: PathBuf,
    pub config: PathBuf,
    pub stderr_path: PathBuf,
    /// Started under `Opts::wrapper`.
    pub wrapped: bool,
}

impl Init {
    /// Write `<name>.service` files (TOML text), init.yaml, start init.
    pub fn start(services: &[(&str, &str)]) -> Init {
        Self::start_with(services, Opts::default())
    }

    pub fn start_with(services: &[(&str, &str)], opts: Opts) -> Init {
        let dir = TempDir::new("init");
        let service_dir = dir.path().join("services");
        let log_dir = opts
            .log_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("log"));
        std::fs::create_dir_all(&service_dir).unwrap();
        std::fs::create_dir_all(&log_dir).unwrap();
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("init.sock"));
        let config = dir.path().join("init.yaml");
        for (name, text) in services {
            std::fs::write(service_dir.join(format!("{name}.service")), text).unwrap();
        }
        let yaml = format!(
            "service_dir: {}\nlog_dir: {}\ncontrol:\n  unix_socket_path: {}\n{}vsock:\n  enabled: false\nnsm_driver_path: null\npivot_root: false\n{}",
            service_dir.display(),
            log_dir.display(),
            socket.display(),
            opts.control_yaml,
            opts.extra_yaml
        );
        std::fs::write(&config, yaml).unwrap();
        let stderr_path = dir.path().join("init.stderr");
        let mut init = Init {
            dir,
            child: None,
            pid: 0,
            socket,
            service_dir,
            log_dir,
            config,
            stderr_path,
            wrapped: false,
        };
        init.spawn(&opts);
        init
    }

    fn spawn(&mut self, opts: &Opts) {
        let err = std::fs::File::create(&self.stderr_path).unwrap();
        self.wrapped = !opts.wrapper.is_empty();
        let mut cmd = match opts.wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(init_bin());
                c
            }
            None => Command::new(init_bin()),
        };
        cmd.arg("-c")
            .arg(&self.config)
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(err.try_clone().unwrap())
            .stderr(err)
            .env_remove("INIT_CONFIG")
            .env_remove("INIT_NO_PIDFD");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        for k in &opts.env_remove {
            cmd.env_remove(k);
        }
        let child = cmd.spawn().expect("spawn init");
        self.pid = child.id() as i32;
        self.child = Some(child);
        if !opts.no_wait {
            self.wait_socket();
        }
    }

    /// Wait until the control socket accepts and answers a Ping.
    pub fn wait_socket(&mut self) {
        let ok = wait_for(
            || {
                if let Some(c) = self.child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        panic!("init exited early: {st}\n{}", self.stderr_text());
                    }
                }
                match UnixStream::connect(&self.socket) {
                    Ok(mut s) => {
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        if s.write_all(b"\"Ping\"\n").is_err() {
                            return false;
                        }
                        let mut line = String::new();
                        BufReader::new(s).read_line(&mut line).is_ok() && line.contains("Pong")
                    }
                    Err(_) => false,
                }
            },
            TIMEOUT,
        );
        assert!(ok, "init's socket never answered\n{}", self.stderr_text());
    }

    /// A new connection to the control socket.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect to init");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    }

    /// Send one request (raw JSON text; a newline is added), read one line.
    pub fn request(&self, json: &str) -> Value {
        let line = self.request_raw(json);
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad response {line:?} to {json}: {e}"))
    }

    /// Like `request` but returns the raw response line (without `\n`).
    pub fn request_raw(&self, json: &str) -> String {
        let mut s = self.connect();
        s.write_all(json.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        read_line(&mut s).unwrap_or_else(|| panic!("no response to {json}\n{}", self.stderr_text()))
    }

    /// `ServiceStatus` for `name`: the `status` object, or panics on Error.
    pub fn status(&self, name: &str) -> Value {
        let r = self.request(&format!(r#"{{"ServiceStatus":{{"name":"{name}"}}}}"#));
        match r.get("ServiceStatus") {
            Some(s) => s["status"].clone(),
            None => panic!("status of {name}: {r}"),
        }
    }

    /// The `state` string of a service.
    pub fn state(&self, name: &str) -> String {
        self.status(name)["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The running pid of a service, if any.
    pub fn pid_of(&self, name: &str) -> Option<i32> {
        self.status(name)["pid"].as_i64().map(|p| p as i32)
    }

    /// The `services` array of `ListServices`.
    pub fn list(&self) -> Vec<Value> {
        let r = self.request(r#""ListServices""#);
        r["ServiceList"]["services"]
            .as_array()
            .unwrap_or_else(|| panic!("ListServices: {r}"))
            .clone()
    }

    pub fn start_service(&self, name: &str) -> Value {
        self.request(&format!(r#"{{"ServiceStart":{{"name":"{name}"}}}}"#))
    }
    pub fn stop_service(&self, name: &str) -> Value {
        self.request(&format!(r#"{{"ServiceStop":{{"name":"{name}"}}}}"#))
    }
    pub fn restart_service(&self, name: &str) -> Value {
        self.request(&format!(r#"{{"ServiceRestart":{{"name":"{name}"}}}}"#))
    }
    /// The last `lines` log lines of a service (`ServiceLogs`).
    pub fn logs(&self, name: &str, lines: usize) -> Vec<String> {
        let r = self.request(&format!(
            r#"{{"ServiceLogs":{{"name":"{name}","lines":{lines}}}}}"#
        ));
        r["ServiceLogs"]["logs"]
            .as_array()
            .unwrap_or_else(|| panic!("ServiceLogs {name}: {r}"))
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Poll until the service's state is `state`; panics with the status on timeout.
    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        let mut last = Value::Null;
        let ok = wait_for(
            || {
                last = self.status(name);
                last["state"] == state
            },
            TIMEOUT,
        );
        assert!(
            ok,
            "{name} never reached {state}: {last}\n{}",
            self.stderr_text()
        );
        last
    }

    /// (Re)write `<name>.service` in the service dir.
    pub fn write_service(&self, name: &str, text: &str) {
        std::fs::write(self.service_dir.join(format!("{name}.service")), text).unwrap();
    }

    /// Everything init wrote to stdout/stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Run `initctl` against this init's socket. Output of the process.
    pub fn initctl(&self, args: &[&str]) -> Output {
        self.initctl_cmd(args).output().expect("run initctl")
    }

    /// `initctl` against this init's socket, to be run.
    pub fn initctl_cmd(&self, args: &[&str]) -> Command {
        let cfg = self.dir.path().join("initctl.yaml");
        if !cfg.exists() {
            std::fs::write(
                &cfg,
                format!(
                    "protocol: unix\nunix_socket_path: {}\n",
                    self.socket.display()
                ),
            )
            .unwrap();
        }
        let mut cmd = Command::new(initctl_bin());
        cmd.env("INIT_SOCKET", &self.socket)
            .env("INITCTL_CONFIG", &cfg)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Wait for init itself to exit; returns its exit code (None: signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to init.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc_kill(self.pid, sig);
        }
    }

    /// Resident set size of init in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid, "VmRSS")
            .and_then(|v| v.split_whitespace().next().map(str::to_string))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Init {
    /// init's own pid (host view): `pid`, or the wrapper's child.
    pub fn init_pid(&self) -> i32 {
        if !self.wrapped {
            return self.pid;
        }
        let mut inner = None;
        wait_for(
            || {
                inner = children_of(self.pid).first().copied();
                inner.is_some()
            },
            TIMEOUT,
        );
        inner.unwrap_or_else(|| panic!("no child of wrapper {}", self.pid))
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let kids = children_of(self.pid);
        // A wrapper (unshare) may ignore SIGTERM: tell init itself.
        let target = if self.wrapped {
            kids.first().copied().unwrap_or(self.pid)
        } else {
            self.pid
        };
        unsafe {
            libc_kill(target, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Services run in their own process groups; make sure none survive
        // a killed init (they'd be reparented to us or to PID 1).
        for k in kids {
            unsafe {
                libc_kill(-k, 9);
                libc_kill(k, 9);
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The open-files limits of `pid` as /proc/<pid>/limits writes them:
/// (soft, hard), each a number or "unlimited".
pub fn nofile_limits(pid: i32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// Send signal `sig` to `pid` (negative: a process group). Returns success.
pub fn kill(pid: i32, sig: i32) -> bool {
    unsafe { libc_kill(pid, sig) == 0 }
}

/// Poll `cond` every 25 ms until it holds or `timeout` passes.
pub fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Read one `\n`-terminated line from a stream, byte by byte (so nothing
/// after the line is consumed). None on EOF/timeout before a full line.
pub fn read_line(s: &mut UnixStream) -> Option<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return None,
            Ok(_) => {
                if b[0] == b'\n' {
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                out.push(b[0]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The state letter in /proc/<pid>/stat ('R', 'S', 'Z', ...), None if gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Fields of /proc/<pid>/stat after the comm: index 0 = state, 1 = ppid,
/// 2 = pgrp, 3 = session.
pub fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Is the process there and not a zombie?
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// A field of /proc/<pid>/status, e.g. "SigBlk", trimmed.
pub fn proc_status_field(pid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// Pids of the processes whose /proc/<pid>/stat fields (after the command
/// name: state, ppid, pgrp, ...) satisfy `keep`.
fn procs_where(keep: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| proc_stat_fields(*pid).is_some_and(|f| keep(&f)))
        .collect()
}

fn field_is(f: &[String], i: usize, want: i32) -> bool {
    f.get(i).and_then(|p| p.parse::<i32>().ok()) == Some(want)
}

/// Pids of all processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    procs_where(|f| field_is(f, 1, ppid))
}

/// Pids whose process group is `pgid` (zombies left out).
pub fn group_members(pgid: i32) -> Vec<i32> {
    procs_where(|f| field_is(f, 2, pgid) && f.first().map(String::as_str) != Some("Z"))
}

/// Run `init` with arguments (no config set up), wait for it, return output.
pub fn run_init(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(init_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("INIT_CONFIG")
        .env_remove("INIT_NO_PIDFD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run init")
}

/// The peer has closed the connection (checked without reading).
pub fn hung_up(s: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = nix::libc::pollfd {
        fd: s.as_raw_fd(),
        events: nix::libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, no timeout.
    let n = unsafe { nix::libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (nix::libc::POLLRDHUP | nix::libc::POLLHUP) != 0
}

/// `/bin/sh -c '<script>'` as an ExecStart value (script must not hold `'`).
pub fn sh(script: &str) -> String {
    assert!(!script.contains('\''), "no single quotes in {script}");
    format!("/bin/sh -c '{script}'")
}

/// Simple service file text: ExecStart plus extra `Key = value` lines.
pub fn svc(exec: &str, extra: &str) -> String {
    format!("ExecStart = {}\n{extra}\n", toml_str(exec))
}

/// A TOML basic string literal for `s`.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Init {
    /// Like `start_with`, but each entry is a full file name in the service
    /// dir and its text, e.g. `("cache.service.disabled", text)`, so
    /// disabled or oddly named files exist before init starts.
    pub fn start_files(files: &[(&str, &str)], opts: Opts) -> Init {
        let mut init = Self::start_with(
            &[],
            Opts {
                no_wait: true,
                ..opts.clone()
            },
        );
        // That init saw an empty service dir: end it, write the files, start again.
        if let Some(mut c) = init.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (file, text) in files {
            std::fs::write(init.service_dir.join(file), text).unwrap();
        }
        init.spawn(&opts);
        init
    }
}

/// Does `pid` ignore SIGTERM (a shell's `trap "" TERM` has run)?
pub fn ignores_sigterm(pid: i32) -> bool {
    proc_status_field(pid, "SigIgn")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}
