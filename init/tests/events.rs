//! Live events and metrics through the real binaries: a follower of
//! `{"Events":{}}` sees each state change in order, a reconnect `since` a
//! number loses nothing (or is told how much was lost), a follower that
//! stops reading is dropped without harming init, a read-only peer may
//! follow events and read metrics, and the metrics text parses.
mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A follower of events on a raw connection.
struct Follower {
    r: BufReader<UnixStream>,
}

impl Follower {
    fn new(init: &Init, since: Option<u64>) -> Follower {
        let mut s = init.connect();
        let req = match since {
            Some(n) => format!(r#"{{"Events":{{"since":{n}}}}}"#),
            None => r#"{"Events":{}}"#.to_string(),
        };
        s.write_all(req.as_bytes()).unwrap();
        Follower {
            r: BufReader::new(s),
        }
    }
    /// The next event, or None when the connection ends.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                Some(v["Event"]["event"].clone())
            }
        }
    }
    /// Events until one matches `want` (kind, service, to); all of them.
    fn until(&mut self, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let e = self
                .next()
                .unwrap_or_else(|| panic!("stream ended; got {got:?}"));
            let done = want(&e);
            got.push(e);
            if done {
                return got;
            }
        }
    }
}

fn change(e: &Value) -> String {
    format!(
        "{} {}>{}",
        e["service"].as_str().unwrap_or("-"),
        e["from"].as_str().unwrap_or("-"),
        e["to"].as_str().unwrap_or("-")
    )
}

fn is_to(e: &Value, svc: &str, to: &str) -> bool {
    e["kind"] == "state" && e["service"] == svc && e["to"] == to
}

fn sleeper(extra: &str) -> String {
    svc("sleep 1000", extra)
}

#[test]
fn a_follower_sees_start_stop_crash_restart_in_order_and_since_loses_nothing() {
    let init = Init::start(&[(
        "s",
        &sleeper("Restart = \"on-failure\"\nRestartSec = 0\nServiceEnable = false"),
    )]);
    let mut f = Follower::new(&init, None);
    // Nothing is sent until something happens: Ping on another connection
    // proves the follower is registered before the first change.
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    init.start_service("s");
    let pid = init.pid_of("s").unwrap();
    init.stop_service("s");
    init.start_service("s");
    let pid2 = init.pid_of("s").unwrap();
    assert!(kill(pid2, 9));
    // Running again under a new pid (just after the kill it may still
    // read running with pid2, then auto-restart with none).
    let restarted = || init.pid_of("s").is_some_and(|p| p != pid2) && init.state("s") == "running";
    assert!(wait_for(restarted, TIMEOUT));
    init.restart_service("s");
    let mut got = f.until(|e| is_to(e, "s", "running") && e["restart_count"] == 1);
    // The restart: stopping, inactive, running again.
    got.extend(f.until(|e| is_to(e, "s", "running")));
    let changes: Vec<String> = got.iter().map(change).collect();
    assert_eq!(
        changes,
        [
            "s inactive>running",
            "s running>stopping",
            "s stopping>inactive",
            "s inactive>running",
            "s running>auto-restart",
            "s auto-restart>running",
            "s running>stopping",
            "s stopping>inactive",
            "s inactive>running",
        ]
    );
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(got[0]["pid"], pid);
    assert_eq!(got[2]["signal"], "SIGTERM");
    assert_eq!(got[4]["signal"], "SIGKILL");
    assert_eq!(got[4]["pid"], pid2);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    for e in &got {
        assert_eq!(e["boot_id"], boot_id.trim());
        let t = e["time"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    // Reconnecting since the third event gives the same events after it,
    // and then the new ones.
    drop(f);
    let mut again = Follower::new(&init, Some(seqs[2]));
    let replay: Vec<Value> = (3..got.len()).map(|_| again.next().unwrap()).collect();
    assert_eq!(replay, got[3..].to_vec());
    init.stop_service("s");
    let next = again.until(|e| is_to(e, "s", "inactive"));
    assert_eq!(next[0]["seq"], seqs[seqs.len() - 1] + 1);
}

/// A crash loop makes events fast: more than init keeps, and more than a
/// follower that never reads may hold queued.
#[test]
fn a_follower_that_stops_reading_is_dropped_and_aged_out_events_are_counted() {
    let init = Init::start(&[(
        "loop",
        &svc(
            "/bin/false",
            "Restart = \"always\"\nRestartSec = 0\nStartLimitBurst = 1000000\nServiceEnable = false",
        ),
    )]);
    // Never reads; its socket buffer is made small so its queue in init
    // grows fast.
    let stalled = init.connect();
    set_rcvbuf(&stalled, 4096);
    (&stalled).write_all(br#"{"Events":{}}"#).unwrap();
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    let mut f = Follower::new(&init, None);
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    init.start_service("loop");
    // 2 events a crash; a FOLLOW_LIMIT of 1 MiB is some 4,000+ events.
    let mut last = 0;
    while last < 6000 {
        let e = f.next().expect("the reading follower is kept");
        last = e["seq"].as_u64().unwrap();
    }
    init.stop_service("loop");
    // The stalled follower was dropped: what it has queued ends in EOF.
    let mut s = stalled;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut all = Vec::new();
    let r = s.read_to_end(&mut all);
    assert!(r.is_ok(), "not closed: {r:?} after {} bytes", all.len());
    assert!(all.len() < 2 * 1024 * 1024, "{} bytes", all.len());
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    // since 1: the first is a lost event (numbered as the last lost one),
    // then the kept ones in order.
    let mut late = Follower::new(&init, Some(1));
    let lost = late.next().unwrap();
    assert_eq!(lost["kind"], "lost", "{lost}");
    let first_kept = late.next().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(lost["seq"].as_u64().unwrap(), first_kept - 1);
    assert_eq!(lost["lost"].as_u64().unwrap(), first_kept - 2);
    assert!(first_kept > 1000);
    // The metrics count the restarts.
    let o = init.initctl(&["metrics"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let restarts = sample(
        &text,
        "enclave_init_service_restarts_total{service=\"loop\"}",
    );
    assert!(restarts >= 2000.0, "{restarts}\n{text}");
}

fn set_rcvbuf(s: &UnixStream, n: i32) {
    use std::os::fd::AsFd;
    nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::RcvBuf, &(n as usize))
        .unwrap();
}

/// The value of the sample `name{labels}` in a metrics text; panics if
/// absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Every line is a comment (`# HELP name ...`, `# TYPE name kind`) or a
/// sample `name{labels} value` with a name of the family announced.
fn check_exposition(text: &str) {
    let mut family = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap().to_string();
            assert!(family.starts_with("enclave_init_"), "{l}");
            continue;
        }
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            assert_eq!(w.next(), Some(family.as_str()), "{l}");
            assert!(matches!(w.next(), Some("gauge" | "counter")), "{l}");
            continue;
        }
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
        value.parse::<f64>().unwrap_or_else(|e| panic!("{l}: {e}"));
        let name = series.split('{').next().unwrap();
        assert_eq!(name, family, "{l}");
        if let Some(labels) = series.strip_prefix(name).filter(|s| !s.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{l}");
            assert!(labels.contains("=\""), "{l}");
        }
    }
}

#[test]
fn metrics_parse_and_show_a_crashed_service() {
    let init = Init::start(&[
        ("up", &sleeper("")),
        (
            "crash",
            &svc(
                &sh("exit 3"),
                "Restart = \"on-failure\"\nRestartSec = 0\nStartLimitBurst = 3",
            ),
        ),
    ]);
    init.wait_state("crash", "failed");
    let o = init.initctl(&["metrics"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    check_exposition(&text);
    assert_eq!(
        sample(&text, "enclave_init_service_up{service=\"up\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "enclave_init_service_up{service=\"crash\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "enclave_init_service_restarts_total{service=\"crash\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "enclave_init_service_last_exit_status{service=\"crash\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "enclave_init_service_state{service=\"crash\",state=\"failed\"}"
        ),
        1.0
    );
    assert!(sample(&text, "enclave_init_resident_memory_bytes") > 100_000.0);
    assert!(sample(&text, "enclave_init_open_fds") >= 3.0);
    assert!(sample(&text, "enclave_init_uptime_seconds") >= 0.0);
    assert_eq!(
        sample(
            &text,
            "enclave_init_connections_refused_total{transport=\"unix\"}"
        ),
        0.0
    );
    // Raw JSON: one Metrics answer.
    let r = init.request(r#""Metrics""#);
    assert!(r["Metrics"]["text"]
        .as_str()
        .unwrap()
        .contains("enclave_init_uptime_seconds"));
}

#[test]
fn initctl_events_prints_a_line_per_event_and_json_with_json() {
    let init = Init::start(&[("s", &sleeper(""))]);
    let pid = init.pid_of("s").unwrap();
    let spawn = |args: &[&str]| {
        let mut c = Command::new(initctl_bin());
        c.env("INIT_SOCKET", &init.socket)
            .env("INITCTL_CONFIG", init.dir.path().join("none.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    // --since 0: the kept events first (the boot's), then new ones.
    let mut text = spawn(&["events", "--since", "0"]);
    let mut json = spawn(&["events", "--since", "0", "--json"]);
    let mut text_out = BufReader::new(text.stdout.take().unwrap());
    let mut json_out = BufReader::new(json.stdout.take().unwrap());
    let mut line = String::new();
    text_out.read_line(&mut line).unwrap();
    assert!(line.contains(" #1 s: inactive -> running (pid "), "{line}");
    line.clear();
    text_out.read_line(&mut line).unwrap();
    assert!(
        line.contains("boot-finished: every enabled service is up"),
        "{line}"
    );
    line.clear();
    json_out.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["Event"]["event"]["seq"], 1, "{line}");
    assert_eq!(v["Event"]["event"]["to"], "running", "{line}");
    init.restart_service("s");
    let mut seen = String::new();
    let want = format!("s: stopping -> inactive (pid {pid}, killed by SIGTERM)");
    while !seen.contains(&want) {
        line.clear();
        assert!(text_out.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    for mut c in [text, json] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A read-only local peer (`unix_read_only_uids`) may follow events and
/// read metrics; a change is still refused. (The same check a VSOCK
/// read-only peer gets: `Request::is_read_only`.)
#[test]
fn a_read_only_peer_follows_events_and_reads_metrics_needs_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it runs initctl as another uid"
    );
    let init = Init::start_with(
        &[("s", &sleeper(""))],
        Opts {
            control_yaml: "  unix_socket_mode: \"0666\"\n  unix_read_only_uids: [4007]\n".into(),
            ..Opts::default()
        },
    );
    let as_ro = |args: &[&str]| {
        let mut c = Command::new(initctl_bin());
        c.env("INIT_SOCKET", &init.socket)
            .env("INITCTL_CONFIG", "/nonexistent/initctl.yaml")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(4007))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(4007))?;
                Ok(())
            });
        }
        c
    };
    let o = as_ro(&["metrics"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("enclave_init_service_up{service=\"s\"} 1"));
    let o = as_ro(&["stop", "s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let mut ev = as_ro(&["events", "--since", "0", "--json"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(ev.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["Event"]["event"]["seq"], 1, "{line}");
    let _ = ev.kill();
    let _ = ev.wait();
}

#[test]
fn shutdown_begun_then_a_final_event_with_each_last_exit_then_the_end() {
    let mut init = Init::start(&[("s", &sleeper("")), ("t", &sleeper(""))]);
    let mut f = Follower::new(&init, None);
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    let r = init.request(r#""SystemShutdown""#);
    assert!(r.get("Success").is_some(), "{r}");
    let got = f.until(|e| e["kind"] == "final");
    assert_eq!(got[0]["kind"], "shutdown");
    let fin = got.last().unwrap();
    let notes: Vec<String> = fin["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} {} {} {}",
                n["name"], n["state"], n["exit_status"], n["signal"]
            )
        })
        .collect();
    assert_eq!(
        notes,
        [
            r#""s" "inactive" 143 "SIGTERM""#,
            r#""t" "inactive" 143 "SIGTERM""#
        ]
    );
    assert!(f.next().is_none(), "the stream ends with init");
    assert!(init.wait_exit(TIMEOUT).is_some());
}

/// init with one service and a follower of events, shut down; the
/// follower has read up to the final event.
fn shut_down_followed() -> (Init, Follower, Instant) {
    let init = Init::start(&[("s", &sleeper(""))]);
    let mut f = Follower::new(&init, None);
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    let asked = Instant::now();
    let r = init.request(r#""SystemShutdown""#);
    assert!(r.get("Success").is_some(), "{r}");
    f.until(|e| e["kind"] == "final");
    (init, f, asked)
}

/// The final event reaches a follower before init goes: init closes its
/// side, then waits (up to `FAREWELL`, 2 s) for the follower to hang up
/// before it kills what is left and powers off. (In the VM test the
/// follower is a process in the guest: without this it was SIGKILLed
/// between reading the final event and saying so.)
#[test]
fn init_waits_for_a_follower_to_hang_up_after_the_final_event() {
    let (mut init, mut f, asked) = shut_down_followed();
    assert!(
        f.next().is_none(),
        "init closed its side after the final event"
    );
    // A follower slow to hang up: init is still there for it. (Gone, it
    // must have waited its 2 s after the final event, which came after the
    // shutdown was asked: this thread may have stalled that long.)
    std::thread::sleep(Duration::from_millis(300));
    if init.wait_exit(Duration::ZERO).is_some() {
        let since = asked.elapsed();
        assert!(
            since >= Duration::from_secs(2),
            "init went {since:?} after the shutdown was asked, before the follower hung up"
        );
        return;
    }
    drop(f);
    assert!(
        init.wait_exit(TIMEOUT).is_some(),
        "init ends once it hung up"
    );
}

#[test]
fn a_follower_that_never_hangs_up_holds_the_end_only_a_bounded_time() {
    let (mut init, f, _) = shut_down_followed();
    // Held open and never read again: init ends all the same.
    assert!(init.wait_exit(TIMEOUT).is_some(), "init ended without us");
    drop(f);
}

/// Figures, not a test (`cargo test --release -p init --test events --
/// --ignored --nocapture figures`): the time from a service's death (kill
/// -9 here) to its `running>failed` event at a follower (pidfd, reap, log
/// line, event, delivery), median and p99 of 200; and init's RSS with 100
/// idle followers of events.
#[test]
#[ignore]
fn figures_event_latency_and_follower_memory() {
    let init = Init::start(&[("s", &sleeper(""))]);
    let mut f = Follower::new(&init, None);
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    let mut took = Vec::new();
    for _ in 0..200 {
        let pid = init.pid_of("s").unwrap();
        let t = std::time::Instant::now();
        assert!(kill(pid, 9));
        f.until(|e| is_to(e, "s", "failed"));
        took.push(t.elapsed());
        init.start_service("s");
        f.until(|e| is_to(e, "s", "running"));
    }
    took.sort();
    println!(
        "death to follower: median {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
    let before = init.rss_kib();
    let followers: Vec<Follower> = (0..100).map(|_| Follower::new(&init, None)).collect();
    assert_eq!(init.request(r#""Ping""#), Value::String("Pong".into()));
    // One event to all of them, so each connection has been used.
    init.request(r#"{"ServiceRestart":{"name":"s"}}"#);
    let after = init.rss_kib();
    println!(
        "100 followers: RSS {before} KiB -> {after} KiB (+{} KiB)",
        after.saturating_sub(before)
    );
    drop(followers);
}

/// The dropped-lines counters are counters: a reload that removes the
/// service whose lines were dropped does not take its count away
/// (Prometheus would read the fall as a reset). The service's lines are
/// dropped by a planted symlink in log_dir, which init will not follow.
#[test]
fn dropped_line_counters_do_not_fall_when_a_service_is_removed() {
    let init = Init::start(&[("keep", &sleeper(""))]);
    std::os::unix::fs::symlink("/nonexistent", init.log_dir.join("dropper.log")).unwrap();
    init.write_service(
        "dropper",
        &svc(&sh("while :; do echo line; sleep 0.01; done"), ""),
    );
    assert_eq!(init.initctl(&["reload"]).status.code(), Some(0));
    let metric = |series: &str| {
        let o = init.initctl(&["metrics"]);
        sample(&String::from_utf8_lossy(&o.stdout), series)
    };
    let lines = "enclave_init_log_dropped_lines_total";
    let bytes = "enclave_init_log_dropped_bytes_total";
    assert!(wait_for(|| metric(lines) >= 5.0, TIMEOUT));
    std::fs::remove_file(init.service_dir.join("dropper.service")).unwrap();
    let (lines_before, bytes_before) = (metric(lines), metric(bytes));
    assert_eq!(init.initctl(&["reload"]).status.code(), Some(0));
    assert!(wait_for(
        || !init.list().iter().any(|s| s["name"] == "dropper"),
        TIMEOUT
    ));
    assert!(
        metric(lines) >= lines_before,
        "{} < {lines_before}",
        metric(lines)
    );
    assert!(
        metric(bytes) >= bytes_before,
        "{} < {bytes_before}",
        metric(bytes)
    );
    assert!(lines_before >= 5.0 && bytes_before >= 5.0 * 5.0);
}
