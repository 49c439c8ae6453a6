//! Integration tests of service log capture through the real init binary,
//! driven by raw JSON and by `initctl`: the line format and markers,
//! lifecycle events, rotation, `logs -n` across rotated files, logs-clear,
//! partial and over-long lines, a full or unwritable log directory,
//! `logs -f` followers (latency, one that never reads, one with a big first
//! answer), and a service flooding its output.
//!
//! The `initctl` parts need its binary next to init's, which the
//! workspace's tests build (`cargo test --workspace`); without it they fail
//! and say so.
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `[YYYY-MM-DD HH:MM:SS.mmm] `
const PREFIX_LEN: usize = 26;
/// The longest piece of a line (init's `MAX_LINE`).
const MAX_LINE: usize = 64 * 1024;

// ----- helpers ----------------------------------------------------------------

/// `<dir>/<name>.log`, or `.log.<i>` for a rotated one.
fn log_file(dir: &Path, name: &str, i: u32) -> PathBuf {
    if i == 0 {
        dir.join(format!("{name}.log"))
    } else {
        dir.join(format!("{name}.log.{i}"))
    }
}

fn file_lines(p: &Path) -> Vec<String> {
    match std::fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b)
            .split_terminator('\n')
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// How many rotated files (`.1`, `.2`, ... without a gap) exist.
fn rotated(dir: &Path, name: &str) -> u32 {
    let mut n = 0;
    while log_file(dir, name, n + 1).exists() {
        n += 1;
    }
    n
}

/// Every line of a service's log files, oldest first.
fn all_lines(dir: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in (0..=rotated(dir, name)).rev() {
        out.extend(file_lines(&log_file(dir, name, i)));
    }
    out
}

fn has_prefix(line: &str) -> bool {
    let pat = b"[dddd-dd-dd dd:dd:dd.ddd] ";
    line.len() >= PREFIX_LEN
        && pat.iter().zip(line.as_bytes()).all(|(p, c)| {
            if *p == b'd' {
                c.is_ascii_digit()
            } else {
                p == c
            }
        })
}

/// The line without its timestamp prefix (which must be there).
fn body(line: &str) -> &str {
    assert!(has_prefix(line), "no timestamp prefix: {line:?}");
    &line[PREFIX_LEN..]
}

fn bodies(lines: &[String]) -> Vec<&str> {
    lines.iter().map(|l| body(l)).collect()
}

/// What the service wrote (init's own `[init]` lines left out).
fn output(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| body(l))
        .filter(|b| !b.starts_with("[init] "))
        .collect()
}

/// Poll the log files of `name` until `cond` holds for their lines.
fn wait_lines(init: &Init, name: &str, mut cond: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = wait_for(
        || {
            lines = all_lines(&init.log_dir, name);
            cond(&lines)
        },
        TIMEOUT * 3,
    );
    assert!(
        ok,
        "log of {name} never got there; last lines: {:?}\n{}",
        lines.iter().rev().take(20).collect::<Vec<_>>(),
        init.stderr_text()
    );
    lines
}

/// Until some line's body is exactly `want`, and the files stopped
/// changing (a read racing a rotation can miss a file): for a service that
/// has gone quiet.
fn wait_body(init: &Init, name: &str, want: &str) -> Vec<String> {
    let mut last: Vec<String> = Vec::new();
    wait_lines(init, name, |l| {
        let found = l.iter().any(|x| has_prefix(x) && &x[PREFIX_LEN..] == want);
        let stable = found && l == last.as_slice();
        last = l.to_vec();
        stable
    })
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`, from date(1).
fn utc_now() -> String {
    let out = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M:%S")
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// "started with PID 123" -> "started with PID N", for comparing.
fn no_pid(b: &str) -> String {
    match b.strip_prefix("[init] started with PID ") {
        Some(p) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => {
            "[init] started with PID N".into()
        }
        _ => b.to_string(),
    }
}

/// The initctl checks need its binary, which the workspace's tests build.
fn have_initctl() -> bool {
    assert!(
        initctl_bin().exists(),
        "{} is not built: run the workspace's tests (scripts/test, or cargo test --workspace)",
        initctl_bin().display()
    );
    true
}

fn stdout_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .split_terminator('\n')
        .map(String::from)
        .collect()
}

/// Kills (SIGKILL) and reaps a child process on drop.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `initctl <args>` running in the background; its stdout lines arrive on
/// the channel with the moment each was read.
fn initctl_spawn(init: &Init, args: &[&str]) -> (ChildGuard, mpsc::Receiver<(Instant, String)>) {
    // Writes initctl.yaml for this init as a side effect.
    let o = init.initctl(&["ping"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mut child = Command::new(initctl_bin())
        .env("INIT_SOCKET", &init.socket)
        .env("INITCTL_CONFIG", init.dir.path().join("initctl.yaml"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn initctl");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            let l = line.trim_end_matches('\n').to_string();
            if tx.send((Instant::now(), l)).is_err() {
                return;
            }
            line.clear();
        }
    });
    (ChildGuard(child), rx)
}

/// Send `ServiceLogsFollow` on a new connection (nothing read yet).
fn follow_raw(init: &Init, name: &str, lines: usize) -> UnixStream {
    let mut s = init.connect();
    let req = format!(r#"{{"ServiceLogsFollow":{{"name":"{name}","lines":{lines}}}}}"#);
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    s
}

/// The `logs` array of one `ServiceLogs` response line.
fn logs_of(line: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        let head: String = line.chars().take(200).collect();
        panic!("{e} in a {}-byte line starting {head:?}", line.len())
    });
    v["ServiceLogs"]["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("not ServiceLogs: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or("").to_string())
        .collect()
}

fn dropped(init: &Init, name: &str) -> (u64, u64) {
    let st = init.status(name);
    (
        st["log_dropped_lines"].as_u64().unwrap_or(0),
        st["log_dropped_bytes"].as_u64().unwrap_or(0),
    )
}

/// The number in a counter file a service rewrites with `echo $i > FILE`.
/// That truncates first, so a read can find the file empty (or not yet
/// there): wait for a whole number rather than take that for 0.
fn read_num(p: &Path) -> u64 {
    let mut n = None;
    let ok = wait_for(
        || {
            n = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            n.is_some()
        },
        TIMEOUT,
    );
    assert!(ok, "no number in {}", p.display());
    n.unwrap_or_default()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tmpfs mounted by the test; unmounted on drop (lazily if still busy).
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        st.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ----- format, markers, lifecycle ---------------------------------------------

#[test]
fn lines_are_timestamped_marked_and_lifecycle_events_logged() {
    let before = utc_now();
    // Each line is written once the one before is in the log (run `r` has
    // it `r` times), so that the order they arrive in is defined: two
    // pipes that both hold data when init wakes (a 50 ms pause between
    // writes was not enough on a loaded machine) are read stdout first.
    let dir = TempDir::new("mixed");
    let log_dir = dir.path().join("log");
    let (log, runs) = (log_dir.join("mixed.log"), dir.path().join("runs"));
    let (log, runs) = (log.display(), runs.display());
    let script = format!(
        "r=$(($(cat {runs} 2>/dev/null || echo 0) + 1)); echo $r > {runs}; \
         w() {{ until [ \"$(grep -c \"] $1\\$\" {log})\" -ge $r ]; do sleep 0.01; done; }}; \
         echo out1; w out1; echo err1 >&2; w err1; echo out2; w out2; \
         echo err2 >&2; w err2; echo out3; w out3; exit 3"
    );
    let init = Init::start_with(
        &[
            (
                "mixed",
                &svc(
                    &sh(&script),
                    "Restart = \"on-failure\"\nRestartSec = 0\nStartLimitBurst = 2\n\
                     StartLimitIntervalSec = 60",
                ),
            ),
            ("killed", &svc("sleep 1000", "")),
            ("stopped", &svc("sleep 1000", "")),
            ("noexec", &svc("/nonexistent/prog", "")),
        ],
        Opts {
            log_dir: Some(log_dir.clone()),
            ..Opts::default()
        },
    );
    init.wait_state("mixed", "failed");
    init.wait_state("killed", "running");
    assert!(kill(init.pid_of("killed").unwrap(), 9));
    init.wait_state("killed", "failed");
    init.wait_state("stopped", "running");
    let r = init.stop_service("stopped");
    assert!(r.get("Success").is_some(), "{r}");
    init.wait_state("stopped", "inactive");
    init.wait_state("noexec", "failed");

    // stdout and stderr in arrival order, init's events in between.
    let fail = "[init] failed: start limit hit: 2 starts within 60s (exited with code 3)";
    let lines = wait_body(&init, "mixed", fail);
    let run = [
        "[init] started with PID N",
        "out1",
        "[stderr] err1",
        "out2",
        "[stderr] err2",
        "out3",
        "[init] exited with code 3",
    ];
    let mut want: Vec<&str> = run.to_vec();
    want.push("[init] restarting in 0s");
    want.extend(run);
    want.push(fail);
    let got: Vec<String> = bodies(&lines).into_iter().map(no_pid).collect();
    assert_eq!(got, want);

    let killed = all_lines(&init.log_dir, "killed");
    let kb = bodies(&killed);
    assert!(kb[0].starts_with("[init] started with PID "), "{kb:?}");
    assert!(
        kb.iter().any(|b| b.starts_with("[init] killed by SIGKILL")),
        "{kb:?}"
    );
    let stopped = wait_body(&init, "stopped", "[init] stopped");
    let sb: Vec<String> = bodies(&stopped).into_iter().map(no_pid).collect();
    assert_eq!(sb.len(), 4, "{sb:?}");
    assert_eq!(sb[0], "[init] started with PID N");
    assert!(sb[1].starts_with("[init] stopping: sent SIGTERM"), "{sb:?}");
    assert!(sb[2].starts_with("[init] killed by SIGTERM"), "{sb:?}");
    assert_eq!(sb[3], "[init] stopped");
    let noexec = all_lines(&init.log_dir, "noexec");
    let nb = bodies(&noexec);
    assert!(
        nb[0].starts_with("[init] start failed: cannot execute /nonexistent/prog"),
        "{nb:?}"
    );
    assert!(
        nb.iter().any(|b| b.starts_with("[init] failed: ")),
        "{nb:?}"
    );

    // Timestamps: UTC, within the test's run, never going backwards.
    let after = utc_now();
    for name in ["mixed", "killed", "stopped", "noexec"] {
        let mut last = String::new();
        for l in all_lines(&init.log_dir, name) {
            assert!(has_prefix(&l), "{l:?}");
            let ts = &l[1..24];
            assert!(
                before.as_str() <= &ts[..19] && &ts[..19] <= after.as_str(),
                "{ts} not within {before} .. {after}"
            );
            assert!(last.as_str() <= ts, "{last} then {ts}");
            last = ts.to_string();
        }
    }

    // init's own messages go to init.log, in the same format.
    let own = file_lines(&init.log_dir.join("init.log"));
    assert!(own.iter().all(|l| has_prefix(l)), "{own:?}");
    let text = own.join("\n");
    assert!(text.contains("] [init] [info] "), "{text}");
    assert!(text.contains("mixed: started with PID"), "{text}");
    assert!(text.contains("stopped: stopped"), "{text}");

    // The protocol and initctl show the same lines as the file.
    assert_eq!(init.logs("mixed", 100), lines);
    if have_initctl() {
        let o = init.initctl(&["logs", "mixed", "-n", "100"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert_eq!(stdout_lines(&o), lines);
        let o = init.initctl(&["logs", "mixed", "-n", "3"]);
        assert_eq!(stdout_lines(&o), lines[lines.len() - 3..].to_vec());
    }
}

/// The last output before an exit comes before the "exited" line.
#[test]
fn output_before_an_exit_is_logged_before_the_exit() {
    let init = Init::start(&[(
        "quick",
        &svc(
            &sh("echo a; echo b >&2; echo c"),
            "Restart = \"always\"\nRestartSec = 0\nStartLimitBurst = 20",
        ),
    )]);
    init.wait_state("quick", "failed");
    let lines = wait_lines(&init, "quick", |l| {
        l.iter()
            .any(|x| x.contains("[init] failed: start limit hit"))
    });
    let b = bodies(&lines);
    let runs: Vec<&[&str]> = b
        .split(|x| x.starts_with("[init] started with PID "))
        .skip(1)
        .collect();
    assert_eq!(runs.len(), 20, "{b:?}");
    for run in runs {
        let exited = run
            .iter()
            .position(|x| *x == "[init] exited with code 0")
            .unwrap_or_else(|| panic!("no exit line in {run:?}"));
        let mut out: Vec<&str> = run[..exited].to_vec();
        out.sort();
        assert_eq!(out, ["[stderr] b", "a", "c"], "{run:?}");
    }
}

// ----- rotation and reading back -------------------------------------------------

#[test]
fn a_hundred_thousand_lines_arrive_in_order_across_rotations() {
    let init = Init::start_with(
        &[("seq", &svc("seq 1 100000", ""))],
        Opts {
            extra_yaml: "max_log_size: 300000\nmax_log_files: 20\n".into(),
            ..Opts::default()
        },
    );
    let lines = wait_body(&init, "seq", "[init] exited with code 0");
    let files = rotated(&init.log_dir, "seq");
    assert!((5..20).contains(&files), "{files} rotated files");
    for i in 0..=files {
        let len = std::fs::metadata(log_file(&init.log_dir, "seq", i))
            .unwrap()
            .len();
        assert!(len <= 300_000, "file {i}: {len}");
        if i > 0 {
            assert!(len > 300_000 - 64, "file {i}: {len}");
        }
    }
    // Exactly the lines, in order, none split (each has its prefix).
    let out = output(&lines);
    if out.len() != 100_000 {
        let bad = out
            .iter()
            .enumerate()
            .find(|(i, l)| **l != (i + 1).to_string());
        std::thread::sleep(Duration::from_secs(2));
        let again = all_lines(&init.log_dir, "seq");
        let sizes: Vec<u64> = (0..=rotated(&init.log_dir, "seq"))
            .map(|i| std::fs::metadata(log_file(&init.log_dir, "seq", i)).map_or(0, |m| m.len()))
            .collect();
        panic!(
            "{} lines; first wrong: {bad:?}; 2 s later {} lines; sizes {sizes:?}; exit at {:?}",
            out.len(),
            output(&again).len(),
            bodies(&again)
                .iter()
                .position(|b| b.starts_with("[init] exited"))
        );
    }
    for (i, l) in out.iter().enumerate() {
        assert_eq!(*l, (i + 1).to_string());
    }
    let b = bodies(&lines);
    assert!(b[0].starts_with("[init] started with PID "), "{:?}", b[0]);
    assert_eq!(b.len(), 100_002);

    // `logs -n` reads back through the rotated files: the current file
    // holds fewer lines than asked for.
    let current = file_lines(&log_file(&init.log_dir, "seq", 0)).len();
    assert!(current < 10_000, "{current}");
    for n in [1, current, current + 1, 10_000] {
        let got = init.logs("seq", n);
        assert!(
            got == lines[lines.len() - n..],
            "n={n}: {} lines",
            got.len()
        );
    }
    if have_initctl() {
        let o = init.initctl(&["logs", "seq", "-n", "10000"]);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout_lines(&o) == lines[lines.len() - 10_000..]);
        let o = init.initctl(&["logs", "seq", "-n", "2"]);
        assert_eq!(stdout_lines(&o), lines[lines.len() - 2..].to_vec());
    }
}

#[test]
fn rotation_keeps_exactly_max_log_files() {
    let init = Init::start_with(
        &[("rot", &svc("seq 1 3000", ""))],
        Opts {
            extra_yaml: "max_log_size: 4096\nmax_log_files: 3\n".into(),
            ..Opts::default()
        },
    );
    let lines = wait_body(&init, "rot", "[init] exited with code 0");
    for i in 0..=3 {
        let p = log_file(&init.log_dir, "rot", i);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0 && len <= 4096, "{}: {len}", p.display());
        if i > 0 {
            assert!(len > 4096 - 40, "{}: {len}", p.display());
        }
    }
    assert!(!log_file(&init.log_dir, "rot", 4).exists());
    let names: Vec<String> = std::fs::read_dir(&init.log_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rot."))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // What is kept is the newest lines, consecutive, whole.
    let out = output(&lines);
    let nums: Vec<u32> = out.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(*nums.last().unwrap(), 3000);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    assert!(nums.len() > 300, "{}", nums.len());

    // `logs -n N`: exactly the last N lines, across the boundary between
    // the current and the rotated files, and beyond what the files hold
    // (from the in-memory ring).
    let current = file_lines(&log_file(&init.log_dir, "rot", 0)).len();
    for n in [1, current, current + 1, current + 50, lines.len()] {
        let got = init.logs("rot", n);
        assert_eq!(got, lines[lines.len() - n..].to_vec(), "n={n}");
    }
    let n = lines.len() + 200;
    let got = init.logs("rot", n);
    assert_eq!(got.len(), n);
    assert_eq!(got[200..].to_vec(), lines);
    let mut want: Vec<String> = (3000 - 200 - nums.len() + 1..=3000 - nums.len())
        .map(|i| i.to_string())
        .collect();
    want.extend(out.iter().map(|s| s.to_string()));
    want.push("[init] exited with code 0".into());
    assert_eq!(bodies(&got), want);
}

// ----- clearing ------------------------------------------------------------------

#[test]
fn logs_clear_removes_all_files_and_logging_goes_on_in_a_fresh_one() {
    let scratch = TempDir::new("clear");
    let trig = scratch.path().join("go");
    let trig2 = scratch.path().join("go2");
    let script = format!(
        "for i in $(seq 1 300); do echo before $i; done; \
         while [ ! -e {t} ]; do sleep 0.02; done; \
         for i in 1 2 3 4 5; do echo after $i; done; \
         while [ ! -e {t2} ]; do sleep 0.02; done; echo again; exec sleep 1000",
        t = trig.display(),
        t2 = trig2.display()
    );
    let init = Init::start_with(
        &[
            ("clr", &svc(&sh(&script), "")),
            ("other", &svc(&sh("echo keep; exec sleep 1000"), "")),
        ],
        Opts {
            extra_yaml: "max_log_size: 2048\nmax_log_files: 3\n".into(),
            ..Opts::default()
        },
    );
    wait_body(&init, "clr", "before 300");
    wait_body(&init, "other", "keep");
    assert_eq!(rotated(&init.log_dir, "clr"), 3);

    let r = init.request(r#"{"ServiceLogsClear":{"name":"clr"}}"#);
    let msg = r["Success"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(msg.contains("cleared"), "{msg}");
    for i in 0..=4 {
        assert!(!log_file(&init.log_dir, "clr", i).exists(), "{i}");
    }
    assert!(init.logs("clr", 100).is_empty());
    // Other logs are left alone.
    assert_eq!(output(&all_lines(&init.log_dir, "other")), ["keep"]);
    assert!(init.log_dir.join("init.log").exists());

    std::fs::write(&trig, "").unwrap();
    let lines = wait_body(&init, "clr", "after 5");
    assert_eq!(rotated(&init.log_dir, "clr"), 0);
    let want = ["after 1", "after 2", "after 3", "after 4", "after 5"];
    assert_eq!(bodies(&lines), want);
    assert_eq!(bodies(&init.logs("clr", 100)), want);
    assert_eq!(init.state("clr"), "running");

    if have_initctl() {
        let o = init.initctl(&["logs-clear", "clr"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("cleared"),
            "{o:?}"
        );
        assert!(!log_file(&init.log_dir, "clr", 0).exists());
        let o = init.initctl(&["logs", "clr", "-n", "10"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
        std::fs::write(&trig2, "").unwrap();
        let lines = wait_body(&init, "clr", "again");
        assert_eq!(bodies(&lines), ["again"]);
        let o = init.initctl(&["logs", "clr"]);
        assert_eq!(stdout_lines(&o), lines);
    }
    let r = init.request(r#"{"ServiceLogsClear":{"name":"nope"}}"#);
    assert!(r.get("Error").is_some(), "{r}");
}

// ----- partial and long lines ------------------------------------------------------

#[test]
fn a_last_line_without_newline_is_flushed_when_the_pipe_closes() {
    let init = Init::start(&[
        (
            "nonl",
            &svc(&sh("printf \"one\\ntwo\"; printf xyz >&2"), ""),
        ),
        ("abc", &svc("printf abc", "")),
    ]);
    let lines = wait_lines(&init, "nonl", |l| {
        l.iter().any(|x| x.ends_with("[init] exited with code 0"))
    });
    let mut out = output(&lines);
    out.sort();
    assert_eq!(out, ["[stderr] xyz", "one", "two"]);
    let lines = wait_body(&init, "abc", "[init] exited with code 0");
    let b: Vec<String> = bodies(&lines).into_iter().map(no_pid).collect();
    assert_eq!(
        b,
        [
            "[init] started with PID N",
            "abc",
            "[init] exited with code 0"
        ]
    );
}

/// Found by an adversarial review (s10): a run's last line without a
/// newline was logged only once the pipe closed, so when a child it left
/// held the pipe (here one that escaped the process group, without
/// cgroups) it came after the run's exit line, or after the next run's
/// lines. It is the run's own and is logged before its exit line.
#[test]
fn a_runs_last_line_without_newline_comes_before_its_exit_line() {
    let pidfile = std::env::temp_dir().join(format!("init-held-pipe-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let script = format!(
        "setsid sh -c \"echo \\$\\$ > {p}; exec sleep 60\" & \
         until [ -s {p} ]; do sleep 0.01; done; printf tail-of-run; exit 3",
        p = pidfile.display()
    );
    let init = Init::start_with(
        &[("held", &svc(&sh(&script), ""))],
        Opts {
            env: vec![("INIT_NO_CGROUPS".into(), "1".into())],
            ..Opts::default()
        },
    );
    let lines = wait_body(&init, "held", "[init] exited with code 3");
    let b: Vec<String> = bodies(&lines).into_iter().map(no_pid).collect();
    let kept = wait_for(
        || std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.is_empty()),
        TIMEOUT,
    );
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        kill(pid, 9);
    }
    let _ = std::fs::remove_file(&pidfile);
    assert!(kept, "the child that holds the pipe never ran: {b:?}");
    assert_eq!(
        b[..3],
        [
            "[init] started with PID N",
            "tail-of-run",
            "[init] exited with code 3"
        ],
        "{b:?}"
    );
}

#[test]
fn a_one_mib_line_is_split_into_64k_pieces_and_nothing_is_lost() {
    let init = Init::start(&[(
        "big",
        &svc(
            &sh(
                "head -c 1048576 /dev/zero | tr \"\\000\" a; echo; echo next; \
                 head -c 100000 /dev/zero | tr \"\\000\" b >&2",
            ),
            "",
        ),
    )]);
    let lines = wait_body(&init, "big", "[init] exited with code 0");
    let out = output(&lines);
    let a = "a".repeat(MAX_LINE);
    let stdout: Vec<&str> = out
        .iter()
        .copied()
        .filter(|l| !l.starts_with("[stderr] "))
        .collect();
    assert_eq!(
        stdout.len(),
        17,
        "{:?}",
        stdout.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert!(stdout[..16].iter().all(|l| *l == a));
    assert_eq!(stdout[16], "next");
    let stderr: Vec<&str> = out
        .iter()
        .filter_map(|l| l.strip_prefix("[stderr] "))
        .collect();
    assert_eq!(stderr.len(), 2);
    assert_eq!(stderr[0], "b".repeat(MAX_LINE));
    assert_eq!(stderr[1], "b".repeat(100_000 - MAX_LINE));
    // The same through the protocol.
    assert!(init.logs("big", 100) == lines);
}

// ----- a log directory that cannot be written ----------------------------------------

/// Makes writing to a log directory fail, and work again.
enum Blocker {
    /// A full tmpfs (root): fill it, then delete the filler.
    Tmpfs { _mount: Tmpfs, filler: PathBuf },
    /// A read-only directory (not root): rotations fail.
    ReadOnly(PathBuf),
}

impl Blocker {
    fn block(&self) {
        match self {
            Blocker::Tmpfs { filler, .. } => {
                let mut f = std::fs::File::create(filler).unwrap();
                let chunk = vec![b'f'; 4096];
                while f.write_all(&chunk).is_ok() {}
            }
            Blocker::ReadOnly(dir) => set_mode(dir, 0o555),
        }
    }
    fn unblock(&self) {
        match self {
            Blocker::Tmpfs { filler, .. } => std::fs::remove_file(filler).unwrap(),
            Blocker::ReadOnly(dir) => set_mode(dir, 0o755),
        }
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        if let Blocker::ReadOnly(dir) = self {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// N of a `tick N <padding>` line.
fn tick_of(line: &str) -> Option<u64> {
    let b = line.get(PREFIX_LEN..).filter(|_| has_prefix(line))?;
    b.strip_prefix("tick ")?.split(' ').next()?.parse().ok()
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_full_or_unwritable_log_dir_never_blocks_the_service() {
    let scratch = TempDir::new("full");
    let log_dir = scratch.path().join("log");
    let blocker = if is_root() {
        match Tmpfs::mount(&log_dir, "64k") {
            Some(m) => Blocker::Tmpfs {
                _mount: m,
                filler: log_dir.join("filler"),
            },
            None => panic!("running as root but cannot mount a tmpfs for the full-disk test"),
        }
    } else {
        std::fs::create_dir_all(&log_dir).unwrap();
        Blocker::ReadOnly(log_dir.clone())
    };
    eprintln!(
        "log dir blocked by: {}",
        match blocker {
            Blocker::Tmpfs { .. } => "a full tmpfs",
            Blocker::ReadOnly(_) => "a read-only directory",
        }
    );
    let counter = scratch.path().join("counter");
    let script = format!(
        "p=$(printf %0150d 0); i=0; \
         while :; do i=$((i+1)); echo $i > {c}; echo \"tick $i $p\"; sleep 0.05; done",
        c = counter.display()
    );
    // On the tmpfs, writes fail (no rotation); in a read-only directory,
    // rotations do (small files: they happen often).
    let yaml = match blocker {
        Blocker::Tmpfs { .. } => "max_log_size: 10000000\nmax_log_files: 1\n",
        Blocker::ReadOnly(_) => "max_log_size: 2048\nmax_log_files: 1\n",
    };
    let init = Init::start_with(
        &[("chatty", &svc(&sh(&script), ""))],
        Opts {
            extra_yaml: yaml.into(),
            log_dir: Some(log_dir.clone()),
            ..Opts::default()
        },
    );
    let st = init.wait_state("chatty", "running");
    let pid = st["pid"].as_i64().unwrap();
    wait_lines(&init, "chatty", |l| l.iter().any(|x| tick_of(x) == Some(3)));
    assert_eq!(dropped(&init, "chatty"), (0, 0));

    blocker.block();
    let ok = wait_for(|| dropped(&init, "chatty").0 >= 3, TIMEOUT);
    assert!(ok, "no drops counted: {}", init.status("chatty"));
    // The service goes on: same process, its counter advancing (a tick
    // every 50 ms; a service blocked on its output would stop).
    let c1 = read_num(&counter);
    let mut c2 = c1;
    assert!(
        wait_for(
            || {
                c2 = read_num(&counter);
                c2 >= c1 + 3
            },
            TIMEOUT
        ),
        "counter {c1} -> {c2}"
    );
    let st = init.status("chatty");
    assert_eq!(st["pid"].as_i64(), Some(pid), "{st}");
    assert_eq!(st["state"], "running", "{st}");
    let (dl, db) = dropped(&init, "chatty");
    assert!(dl > 0 && db > dl * 8, "{dl} lines, {db} bytes");
    // Control requests are answered meanwhile.
    assert_eq!(init.request(r#""Ping""#), Value::from("Pong"));

    blocker.unblock();
    let freed = read_num(&counter);
    // Lines rotate away fast: collect every line seen while polling.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut resumed: Option<String> = None;
    let ok = wait_for(
        || {
            for l in all_lines(&init.log_dir, "chatty") {
                seen.insert(l);
            }
            resumed = seen
                .iter()
                .find(|l| l.contains("[init] log writing resumed: dropped "))
                .cloned();
            let after = seen
                .iter()
                .filter_map(|l| tick_of(l))
                .filter(|n| *n > freed + 2)
                .count();
            resumed.is_some() && after >= 3
        },
        TIMEOUT,
    );
    assert!(
        ok,
        "no resumed line or no new lines: {:?}\n{}",
        seen.iter().rev().take(10).collect::<Vec<_>>(),
        init.stderr_text()
    );
    let resumed = resumed.unwrap();
    eprintln!("{resumed}");
    let n: u64 = body(&resumed)
        .trim_start_matches("[init] log writing resumed: dropped ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (dl2, _) = dropped(&init, "chatty");
    assert!(n > 0 && n <= dl2, "resumed says {n}, status {dl2}");
    let st = init.status("chatty");
    assert_eq!(st["pid"].as_i64(), Some(pid), "{st}");
    assert_eq!(st["state"], "running", "{st}");
    if let Blocker::Tmpfs { .. } = blocker {
        // Nothing rotated away: the file holds every line but the dropped
        // ones, each whole; the gap is exactly what status counts.
        let lines = all_lines(&init.log_dir, "chatty");
        let torn: Vec<&String> = lines.iter().filter(|l| !has_prefix(l)).collect();
        assert!(torn.is_empty(), "torn lines: {torn:?}");
        let ticks: Vec<u64> = lines
            .iter()
            .filter(|l| !body(l).starts_with("[init] "))
            .map(|l| tick_of(l).unwrap_or_else(|| panic!("not a tick line: {l:?}")))
            .collect();
        assert_eq!(ticks[0], 1);
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        let missing = ticks.last().unwrap() - ticks.len() as u64;
        let resumed_at = bodies(&lines)
            .iter()
            .position(|b| b.starts_with("[init] log writing resumed"))
            .unwrap();
        let (dl3, _) = dropped(&init, "chatty");
        assert_eq!(missing, dl3, "{ticks:?}");
        assert_eq!(n, dl3);
        eprintln!("{missing} ticks missing; resumed line at {resumed_at}");
    }
    drop(init);
}

// ----- followers ---------------------------------------------------------------------

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn logs_follow_sees_new_lines_quickly() {
    let scratch = TempDir::new("follow");
    let fifo = scratch.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let script = format!(
        "echo hello; while read x; do echo got $x; done < {f}",
        f = fifo.display()
    );
    let init = Init::start(&[("echo", &svc(&sh(&script), ""))]);
    wait_body(&init, "echo", "hello");
    // The service opens the fifo for reading; open it for writing.
    let mut w = None;
    assert!(wait_for(
        || {
            use std::os::unix::fs::OpenOptionsExt;
            w = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&fifo)
                .ok();
            w.is_some()
        },
        TIMEOUT
    ));
    let mut w = w.unwrap();

    let mut raw = follow_raw(&init, "echo", 5);
    let first = logs_of(&read_line(&mut raw).expect("first answer"));
    let b: Vec<String> = bodies(&first).into_iter().map(no_pid).collect();
    assert_eq!(b, ["[init] started with PID N", "hello"]);
    let ctl = have_initctl().then(|| initctl_spawn(&init, &["logs", "-f", "-n", "1", "echo"]));
    if let Some((_, rx)) = &ctl {
        let (_, l) = rx.recv_timeout(TIMEOUT).expect("initctl's first line");
        assert_eq!(body(&l), "hello");
    }

    let (mut lat_raw, mut lat_ctl) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let want = format!("got {i}");
        let t0 = Instant::now();
        w.write_all(format!("{i}\n").as_bytes()).unwrap();
        let line = read_line(&mut raw).expect("a followed line");
        let got = logs_of(&line);
        let d = t0.elapsed();
        assert_eq!(bodies(&got), [want.as_str()]);
        lat_raw.push(d);
        if let Some((_, rx)) = &ctl {
            let (at, l) = rx.recv_timeout(TIMEOUT).expect("initctl follows");
            assert_eq!(body(&l), want);
            lat_ctl.push(at.saturating_duration_since(t0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let worst = *lat_raw.iter().max().unwrap();
    eprintln!(
        "follow latency (service prints -> follower has it), raw socket: median {:?}, max {:?}",
        median(&mut lat_raw),
        worst
    );
    // The figure is measured in benches/; here only that every line comes,
    // with room for a loaded machine (1 s was missed at load average 90).
    assert!(worst < Duration::from_secs(5), "{worst:?}");
    if !lat_ctl.is_empty() {
        let worst = *lat_ctl.iter().max().unwrap();
        eprintln!(
            "follow latency, initctl logs -f: median {:?}, max {worst:?}",
            median(&mut lat_ctl)
        );
        assert!(worst < Duration::from_secs(5), "{worst:?}");
    }
    // The follower also sees init's lines; a closed writer ends the loop.
    drop(w);
    let line = read_line(&mut raw).expect("exit line");
    let got = logs_of(&line);
    assert!(
        got.iter().any(|l| body(l) == "[init] exited with code 0"),
        "{got:?}"
    );
}

#[test]
fn a_follower_that_never_reads_is_dropped_and_slows_nothing() {
    let scratch = TempDir::new("slowf");
    let counter = scratch.path().join("counter");
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {c}; seq 1 1000; sleep 0.1; done",
        c = counter.display()
    );
    let init = Init::start_with(
        &[("chatty", &svc(&sh(&script), ""))],
        Opts {
            extra_yaml: "max_log_size: 1000000\nmax_log_files: 1\n".into(),
            ..Opts::default()
        },
    );
    let pid = init.wait_state("chatty", "running")["pid"].as_i64();
    // Never read from this one.
    let mut slow = follow_raw(&init, "chatty", 10);
    // This one reads everything, in a thread.
    let good = follow_raw(&init, "chatty", 0);
    let (tx, rx) = mpsc::channel::<usize>();
    // Big raw reads: the reader must keep up even when it gets little CPU
    // (a line-by-line reader fell 1 MiB behind at load average 20-90).
    std::thread::spawn(move || {
        let mut good = good;
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n @ 1..) = good.read(&mut buf) {
            if tx.send(n).is_err() {
                return;
            }
        }
    });

    // At least 3 s, and until the service has looped 20 times and the good
    // follower has 2 MB (so the slow one has more than its 1 MiB queue):
    // about 7 s. The service writes about 300 KB/s, so the good reader may
    // fall up to 3 s behind (starved on a loaded machine) before it too is
    // more than a queue behind and dropped, by design; at 1.5 MB/s it was,
    // once in 20 runs with both cores busy. A stuck follower that blocked
    // init would stop both for good.
    let start = Instant::now();
    let (mut worst_ping, mut max_rss) = (Duration::ZERO, 0);
    let mut good_bytes = 0;
    let c0 = read_num(&counter);
    let mut c1 = c0;
    let enough = |c1: u64, good: usize| c1 >= c0 + 20 && good > 2_000_000;
    while start.elapsed() < Duration::from_secs(3)
        || (!enough(c1, good_bytes) && start.elapsed() < Duration::from_secs(30))
    {
        let t = Instant::now();
        assert_eq!(init.request(r#""Ping""#), Value::from("Pong"));
        worst_ping = worst_ping.max(t.elapsed());
        max_rss = max_rss.max(init.rss_kib());
        good_bytes += rx.try_iter().sum::<usize>();
        c1 = read_num(&counter);
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{:?}: worst ping {worst_ping:?}, max init RSS {max_rss} KiB, good follower got \
         {good_bytes} bytes, service loops {c0} -> {c1}",
        start.elapsed()
    );
    // Generous for a loaded machine (seen up to 0.5 s with both cores busy);
    // a starved client would get no answer while the service runs.
    assert!(worst_ping < Duration::from_secs(3), "{worst_ping:?}");
    assert!(max_rss > 0 && max_rss < 50 * 1024, "{max_rss} KiB");
    assert!(c1 >= c0 + 20, "service slowed down: {c0} -> {c1}");
    assert!(good_bytes > 2_000_000, "{good_bytes}");
    // The good follower keeps receiving.
    let t = Instant::now();
    let mut more = 0;
    while t.elapsed() < Duration::from_millis(500) {
        if let Ok(n) = rx.recv_timeout(Duration::from_millis(100)) {
            more += n;
        }
    }
    assert!(more > 0, "the reading follower stopped getting lines");
    let st = init.status("chatty");
    assert_eq!(st["pid"].as_i64(), pid, "{st}");
    assert_eq!(st["state"], "running", "{st}");

    // The slow one is dropped once it has taken nothing for 10 s
    // (FOLLOW_STALL) and more than its queue waits: what is left in the
    // socket ends in EOF (init closed it) after a bounded amount.
    assert!(
        wait_for(|| hung_up(&slow), Duration::from_secs(60)),
        "the follower that never reads was kept"
    );
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                assert!(total < 16 << 20, "still streaming: {total} bytes");
            }
            Err(e) => panic!("slow follower not closed after {total} bytes: {e}"),
        }
    }
    eprintln!("the dropped follower had {total} bytes left in its socket");
    assert!(total > 0);
}

/// Found by adversarial review 8 (/tmp/wadv8/repro/6): `initctl logs -f`
/// of a service writing a burst (2 million lines of `seq`) was dropped by
/// init, the README's way to keep a host copy of the logs, with its last
/// line cut, and initctl failed with "invalid response". A follower that
/// reads but falls behind skips lines, is told how many, and follows on.
#[test]
fn initctl_logs_f_of_a_burst_follows_on_and_says_what_it_skipped() {
    let dir = TempDir::new("burst");
    let go = dir.path().join("go");
    let script = format!(
        "until [ -e {} ]; do echo waiting; sleep 0.05; done; seq 1 2000000; echo burst-done; \
         exec sleep 100000",
        go.display()
    );
    let init = Init::start(&[("burst", &svc(&sh(&script), ""))]);
    init.wait_state("burst", "running");
    let mut child = init
        .initctl_cmd(&["logs", "-f", "burst", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // A reader slower than the burst (a terminal, a VSOCK link): it pauses
    // 100 ms every 20,000 lines.
    std::thread::spawn(move || {
        for (n, line) in BufReader::new(out).lines().enumerate() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
            if n % 20_000 == 19_999 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    // Following once it prints the service's lines.
    let first = rx.recv_timeout(TIMEOUT).expect("initctl follows");
    assert!(first.ends_with("waiting"), "{first}");
    std::fs::write(&go, "").unwrap();
    let (mut lines, mut notices) = (0usize, Vec::new());
    let skipped = |notices: &[String]| -> usize {
        notices
            .iter()
            .filter_map(|n| {
                n.split("[init] ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    // Every line of the burst printed or counted as skipped (a skipped
    // piece may hold a few "waiting" lines too), the count coming once
    // the follower has caught up.
    let t = Instant::now();
    while lines + skipped(&notices) < 2_000_001 && t.elapsed() < Duration::from_secs(120) {
        let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) else {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("initctl ended ({st}) after {lines} lines: {err}");
            }
            continue;
        };
        let body = l.rsplit("] ").next().unwrap_or("");
        if l.contains("[init] ") && l.contains(" lines not sent: this follower fell behind") {
            notices.push(l);
        } else if body == "burst-done" || body.parse::<u64>().is_ok() {
            lines += 1;
        }
    }
    let still_following = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let skipped = skipped(&notices);
    eprintln!(
        "FIGURE logs -f of 2,000,000 lines, slow reader: {lines} printed, {skipped} skipped in {} notices",
        notices.len()
    );
    assert!(lines + skipped >= 2_000_001, "{lines} + {skipped}");
    assert!(still_following, "initctl ended");
}

/// A follower asking for many long lines gets a large first answer; it is
/// not mistaken for one that stops reading while it takes that in.
#[test]
fn a_follower_with_a_big_first_answer_is_not_dropped() {
    let script = "z=$(printf %0300d 0); seq -f \"%g $z\" 1 10000; \
                  while :; do echo tick; sleep 0.005; done";
    let init = Init::start(&[("long", &svc(&sh(script), ""))]);
    wait_lines(&init, "long", |l| l.iter().any(|x| x.ends_with("] tick")));
    let s = follow_raw(&init, "long", 10_000);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let first = logs_of(&line);
    eprintln!("first answer: {} lines, {} bytes", first.len(), line.len());
    assert!(line.len() > 2_000_000, "{}", line.len());
    // New lines keep coming for a while: the connection stays open.
    let t = Instant::now();
    let mut got = 0;
    while t.elapsed() < Duration::from_secs(1) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => got += logs_of(&line).len(),
            other => panic!("follower dropped after {got} new lines: {other:?}"),
        }
    }
    assert!(got > 10, "{got}");
    s.shutdown(std::net::Shutdown::Both).ok();
}

/// A service writing as fast as it can: init keeps up without blocking it,
/// answers requests promptly and stays small.
#[test]
fn a_flooding_service_does_not_starve_clients() {
    let init = Init::start_with(
        &[(
            "flood",
            &svc(
                "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
                "",
            ),
        )],
        Opts {
            extra_yaml: "max_log_size: 1000000\nmax_log_files: 1\n".into(),
            ..Opts::default()
        },
    );
    let pid = init.wait_state("flood", "running")["pid"].as_i64();
    // Its first lines take a moment (the log starts with init's "started"
    // line): from five `yes` lines on, the last five are always those.
    let flooded =
        |l: &[String]| l.len() == 5 && l.iter().all(|x| body(x).starts_with("0123456789"));
    let mut l = Vec::new();
    assert!(
        wait_for(
            || {
                l = init.logs("flood", 5);
                flooded(&l)
            },
            TIMEOUT
        ),
        "{l:?}"
    );
    let start = Instant::now();
    let (mut worst, mut max_rss, mut asks) = (Duration::ZERO, 0, 0);
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        assert_eq!(init.request(r#""Ping""#), Value::from("Pong"));
        let l = init.logs("flood", 5);
        assert!(flooded(&l), "{l:?}");
        worst = worst.max(t.elapsed());
        max_rss = max_rss.max(init.rss_kib());
        asks += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("flood: {asks} ping+logs rounds, worst {worst:?}, max RSS {max_rss} KiB");
    // At least one rotation (a busy machine may need longer than 2 s for 1 MB).
    let mut written = 0;
    assert!(
        wait_for(
            || {
                written = std::fs::metadata(log_file(&init.log_dir, "flood", 1))
                    .map(|m| m.len())
                    .unwrap_or(0);
                written > 900_000
            },
            TIMEOUT
        ),
        "rotated file: {written} bytes"
    );
    // Generous for a loaded machine (seen up to 0.7 s with both cores busy
    // and other builds running); a starved client would get no answer at
    // all while the flood goes on.
    assert!(worst < Duration::from_secs(3), "{worst:?}");
    assert!(max_rss > 0 && max_rss < 50 * 1024, "{max_rss} KiB");
    let st = init.status("flood");
    assert_eq!(st["pid"].as_i64(), pid, "{st}");
    assert_eq!(st["log_dropped_lines"], 0, "{st}");
    let r = init.stop_service("flood");
    assert!(r.get("Success").is_some(), "{r}");
    init.wait_state("flood", "inactive");
}

/// The highest tick in `<dir>/<name>.log`, if the file has one.
fn last_tick(dir: &Path, name: &str) -> Option<u64> {
    file_lines(&log_file(dir, name, 0))
        .iter()
        .filter_map(|l| tick_of(l))
        .max()
}

/// A log file deleted, a log directory removed or renamed while a service
/// writes: the lines went on into the deleted (or moved) file until the
/// next rotation, hours away for a quiet service, and status said nothing
/// was dropped. init notices within about a second and writes to a fresh
/// `<dir>/<name>.log` again, recreating the directory if it has to.
#[test]
fn a_removed_or_renamed_log_file_or_dir_is_written_anew() {
    let tick = "ExecStart = \"/bin/sh -c 'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done'\"\n";
    let init = Init::start(&[("tick", tick), ("init2", tick)]);
    let dir = init.log_dir.clone();
    let back = |what: &str, since: u64| {
        assert!(
            wait_for(
                || last_tick(&dir, "tick").is_some_and(|t| t > since + 5),
                TIMEOUT
            ),
            "after {what}: no new lines in {} (files: {:?})",
            log_file(&dir, "tick", 0).display(),
            std::fs::read_dir(&dir).map(|d| d.count())
        );
    };
    assert!(wait_for(|| last_tick(&dir, "tick").is_some(), TIMEOUT));

    // The file alone.
    let before = last_tick(&dir, "tick").unwrap_or(0);
    std::fs::remove_file(log_file(&dir, "tick", 0)).unwrap();
    back("removing the file", before);

    // The file replaced by another one of the same name.
    let before = last_tick(&dir, "tick").unwrap_or(0);
    let moved = dir.join("moved");
    std::fs::rename(log_file(&dir, "tick", 0), &moved).unwrap();
    std::fs::write(log_file(&dir, "tick", 0), "").unwrap();
    back("replacing the file", before);

    // The whole directory removed: recreated, for every log in it.
    std::fs::remove_dir_all(&dir).unwrap();
    back("removing the log directory", 0);
    assert!(
        wait_for(|| last_tick(&dir, "init2").is_some(), TIMEOUT),
        "init2 has no log after the directory came back"
    );

    // Renamed away: the old name is written again, not the new one (which
    // gets at most the second before init looks again, 20 ticks).
    let old = dir.with_extension("old");
    std::fs::rename(&dir, &old).unwrap();
    let stale = last_tick(&old, "tick").unwrap_or(0);
    back("renaming the log directory", 0);
    assert!(
        last_tick(&old, "tick").unwrap_or(0) <= stale + 40,
        "the renamed directory is still written to"
    );
    assert_eq!(dropped(&init, "tick"), (0, 0));
    let _ = std::fs::remove_dir_all(&old);
}
