//! initctl against the real init: what a script or a person sees (table
//! columns, exit codes, merged logs), and init.yaml's per-key errors.
//!
//! Needs the `initctl` binary next to `init` (`cargo build -p initctl`, or
//! any workspace build).
mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A service that runs until stopped.
fn sleeper(extra: &str) -> String {
    svc("/bin/sleep 1000", &format!("TimeoutStopSec = 1\n{extra}"))
}

/// A service that fails at once and is not restarted.
fn failing() -> String {
    svc(&sh("exit 1"), "Restart = \"no\"")
}

fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        out(o),
        err(o)
    );
}

#[test]
fn list_has_a_state_column_that_tells_failed_from_inactive() {
    let init = Init::start(&[
        ("web", &sleeper("")),
        ("broken", &failing()),
        (
            "again",
            &svc(&sh("exit 1"), "Restart = \"always\"\nRestartSec = 100"),
        ),
        ("bad", "ExecStart = 42\n"),
    ]);
    init.wait_state("web", "running");
    init.wait_state("broken", "failed");
    init.wait_state("again", "auto-restart");
    let o = init.initctl(&["list"]);
    assert_code(&o, 0);
    let text = out(&o);
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("ACTIVE") && header.ends_with("STATE"),
        "{text}"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(row("web"), "running");
    assert_eq!(row("broken"), "failed");
    assert_eq!(row("again"), "auto-restart");
    assert_eq!(row("bad"), "invalid");
}

#[test]
fn status_of_several_names_exits_with_the_worst_and_no_name_shows_the_trouble() {
    let init = Init::start(&[("web", &sleeper("")), ("broken", &failing())]);
    init.wait_state("web", "running");
    init.wait_state("broken", "failed");
    let o = init.initctl(&["status", "web"]);
    assert_code(&o, 0);
    let o = init.initctl(&["status", "web", "broken"]);
    assert_code(&o, 3);
    let text = out(&o);
    assert!(
        text.contains("Service: web") && text.contains("Service: broken"),
        "{text}"
    );
    // The highest code of the names': not found is 1, as for one name.
    let o = init.initctl(&["status", "web", "nope"]);
    assert_code(&o, 1);
    let o = init.initctl(&["status", "nope", "broken"]);
    assert_code(&o, 3);
    assert!(err(&o).contains("nope"), "{}", err(&o));

    let o = init.initctl(&["status"]);
    assert_code(&o, 3);
    let text = out(&o);
    assert!(text.contains("System Status"), "{text}");
    assert!(text.contains("broken") && text.contains("failed"), "{text}");
    assert!(!text.contains("web"), "{text}");
    // Nothing in trouble: 0.
    let init2 = Init::start(&[("web", &sleeper(""))]);
    init2.wait_state("web", "running");
    let o = init2.initctl(&["status"]);
    assert_code(&o, 0);
    assert!(out(&o).contains("System Status"), "{}", out(&o));
}

#[test]
fn usage_errors_exit_64_and_each_command_has_help() {
    let init = Init::start(&[]);
    for args in [
        &["frobnicate"][..],
        &["start"],
        &["logs", "-n", "lots", "x"],
        &["ping", "--bogus"],
        &[],
    ] {
        let o = init.initctl(args);
        assert_code(&o, 64);
        assert!(err(&o).contains("--help"), "{args:?}: {}", err(&o));
    }
    let missing = init.dir.path().join("no-such-initctl.yaml");
    let o = init.initctl(&["-c", missing.to_str().unwrap(), "ping"]);
    assert_code(&o, 64);
    assert!(err(&o).contains("no-such-initctl.yaml"), "{}", err(&o));

    let o = init.initctl(&["logs", "--help"]);
    assert_code(&o, 0);
    let text = out(&o);
    assert!(
        text.contains("Usage: initctl logs") && text.contains("--follow"),
        "{text}"
    );
    assert!(!text.contains("logs-clear"), "{text}");
    let o = init.initctl(&["status", "-h"]);
    assert_code(&o, 0);
    assert!(out(&o).contains("Usage: initctl status"), "{}", out(&o));
}

#[test]
fn initctl_yaml_bad_key_takes_its_default_and_keeps_the_others() {
    let init = Init::start(&[]);
    let cfg = init.dir.path().join("bad-initctl.yaml");
    std::fs::write(
        &cfg,
        format!(
            "unix_socket_path: {}\nvsock_port: lots\n",
            init.socket.display()
        ),
    )
    .unwrap();
    let o = Command::new(initctl_bin())
        .env_remove("INIT_SOCKET")
        .env("INITCTL_CONFIG", &cfg)
        .arg("ping")
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert!(err(&o).contains("vsock_port"), "{}", err(&o));
}

#[test]
fn reload_with_an_invalid_file_exits_1_and_lists_it_apart() {
    let init = Init::start(&[("web", &sleeper(""))]);
    init.wait_state("web", "running");
    init.write_service("new", &sleeper(""));
    init.write_service("bad", "ExecStart = [\n");
    let o = init.initctl(&["reload"]);
    assert_code(&o, 1);
    let (so, se) = (out(&o), err(&o));
    assert!(so.contains("added") && so.contains("new"), "{so}");
    assert!(!so.contains("bad.service"), "{so}");
    assert!(se.contains("bad.service"), "{se}");
    // All valid again: 0.
    std::fs::remove_file(init.service_dir.join("bad.service")).unwrap();
    let o = init.initctl(&["reload"]);
    assert_code(&o, 0);
}

#[test]
fn start_names_the_requirements_it_started() {
    let init = Init::start(&[
        ("db", &sleeper("")),
        ("web", &sleeper("Requires = [\"db\"]\nAfter = [\"db\"]")),
    ]);
    init.wait_state("web", "running");
    // Stopping db stops web too; starting web starts db again.
    let o = init.initctl(&["stop", "db"]);
    assert_code(&o, 0);
    assert!(out(&o).contains("web"), "{}", out(&o));
    let o = init.initctl(&["start", "web"]);
    assert_code(&o, 0);
    let text = out(&o);
    assert!(text.contains("web") && text.contains("db"), "{text}");
    init.wait_state("db", "running");
}

#[test]
fn a_stop_that_ends_still_stopping_exits_1() {
    let init = Init::start(&[(
        "stubborn",
        &svc(
            &sh("trap \"\" TERM; while :; do sleep 1; done"),
            "TimeoutStopSec = 60",
        ),
    )]);
    init.wait_state("stubborn", "running");
    let pid = init.pid_of("stubborn").unwrap();
    assert!(wait_for(|| ignores_sigterm(pid), TIMEOUT));
    let o = init.initctl(&["--timeout", "30", "stop", "stubborn"]);
    assert_code(&o, 1);
    assert!(out(&o).contains("still stopping"), "{}", out(&o));
}

fn talker(word: &str, n: usize) -> String {
    // Lines a few ms apart so the two services interleave.
    svc(
        &sh(&format!(
            "i=0; while [ $i -lt {n} ]; do echo {word}$i; i=$((i+1)); sleep 0.05; done; sleep 1000"
        )),
        "TimeoutStopSec = 1",
    )
}

/// Is `lines` in time order by their `[stamp]`, each prefixed by a name?
fn check_merged(lines: &[String], names: &[&str]) {
    let mut last = String::new();
    for l in lines {
        let mut parts = l.splitn(2, ' ');
        let name = parts.next().unwrap_or_default();
        assert!(names.contains(&name), "unprefixed line {l:?} in {lines:#?}");
        let rest = parts.next().unwrap_or_default().trim_start();
        let stamp = rest.get(..25).unwrap_or_default().to_string();
        assert!(stamp.starts_with('[') && stamp.ends_with(']'), "{l:?}");
        assert!(stamp >= last, "out of order at {l:?} in {lines:#?}");
        last = stamp;
    }
}

#[test]
fn logs_without_a_name_merge_every_service_in_time_order() {
    let init = Init::start(&[("alpha", &talker("a", 5)), ("beta", &talker("b", 5))]);
    assert!(wait_for(
        || init
            .logs("alpha", 50)
            .iter()
            .filter(|l| l.contains("] a"))
            .count()
            == 5
            && init
                .logs("beta", 50)
                .iter()
                .filter(|l| l.contains("] b"))
                .count()
                == 5,
        TIMEOUT
    ));
    for args in [&["logs"][..], &["logs", "--all"]] {
        let o = init.initctl(args);
        assert_code(&o, 0);
        let lines: Vec<String> = out(&o).lines().map(str::to_string).collect();
        check_merged(&lines, &["alpha", "beta"]);
        for w in ["a0", "a4", "b0", "b4"] {
            assert!(lines.iter().any(|l| l.ends_with(w)), "{w}: {lines:#?}");
        }
    }
    let o = init.initctl(&["logs", "-n", "3"]);
    assert_code(&o, 0);
    assert_eq!(out(&o).lines().count(), 3, "{}", out(&o));
}

/// `initctl logs -f -n 0` (every service, new lines only) against `init`;
/// its output lines arrive on the receiver.
fn follow_all(init: &Init) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let cfg = init.dir.path().join("initctl.yaml");
    init.initctl(&["ping"]); // writes initctl.yaml
    let mut child = Command::new(initctl_bin())
        .env("INIT_SOCKET", &init.socket)
        .env("INITCTL_CONFIG", &cfg)
        .args(["logs", "-f", "-n", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn logs_follow_all_prints_new_lines_of_every_service() {
    // Both print a line every 50 ms for a long while: with -n 0 what
    // shows up came through the follow connections.
    let init = Init::start(&[
        ("alpha", &talker("a", 100000)),
        ("beta", &talker("b", 100000)),
    ]);
    init.wait_state("alpha", "running");
    init.wait_state("beta", "running");
    let (mut child, rx) = follow_all(&init);
    let mut seen = Vec::new();
    let ok = wait_for(
        || {
            seen.extend(rx.try_iter());
            seen.iter().filter(|l| l.starts_with("alpha ")).count() >= 3
                && seen.iter().filter(|l| l.starts_with("beta ")).count() >= 3
        },
        TIMEOUT,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{seen:#?}");
    check_merged(&seen, &["alpha", "beta"]);
}

/// More services than init takes connections on one transport
/// (`CONNS_PER_TRANSPORT`, 256): `logs -f` follows them all on one
/// connection, and a service a reload adds too. (With a connection per
/// service, the 257th made init close the oldest: 44 of 300 services'
/// new lines never showed, with no error.)
#[test]
fn logs_follow_all_follows_every_service_past_the_connection_limit_and_new_ones() {
    let n = 300;
    let ticker = |i: usize| {
        svc(
            &sh(&format!("while :; do echo tick-{i}; sleep 1; done")),
            "",
        )
    };
    let units: Vec<(String, String)> = (0..n).map(|i| (format!("s{i:03}"), ticker(i))).collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let init = Init::start(&refs);
    init.wait_state(&format!("s{:03}", n - 1), "running");
    let (mut child, rx) = follow_all(&init);
    let mut seen = std::collections::BTreeSet::new();
    let take = |seen: &mut std::collections::BTreeSet<String>| {
        for line in rx.try_iter() {
            if let Some(t) = line.rsplit(' ').next().filter(|t| t.starts_with("tick-")) {
                seen.insert(t.to_string());
            }
        }
    };
    let all = wait_for(
        || {
            take(&mut seen);
            seen.len() >= n
        },
        TIMEOUT * 2,
    );
    assert!(all, "{} of {n} services' new lines seen", seen.len());
    // A service added now, by a reload, is followed too.
    init.write_service("late", &ticker(n));
    assert_code(&init.initctl(&["reload"]), 0);
    let late = format!("tick-{n}");
    let ok = wait_for(
        || {
            take(&mut seen);
            seen.contains(&late)
        },
        TIMEOUT,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no line of the service added by the reload");
}

#[test]
fn init_yaml_bad_key_is_named_and_the_others_are_kept() {
    let init = Init::start_with(
        &[("web", &sleeper(""))],
        Opts {
            extra_yaml: "max_log_size: lots\n".into(),
            ..Opts::default()
        },
    );
    // service_dir came from the same file: the service is there.
    init.wait_state("web", "running");
    let e = init.stderr_text();
    assert!(e.contains("max_log_size"), "{e}");
}

#[test]
fn init_with_a_missing_explicit_config_exits_64() {
    let dir = TempDir::new("cfg");
    let missing = dir.path().join("nope.yaml");
    let o = run_init(&["-c", missing.to_str().unwrap(), "--check"], &[]);
    assert_code(&o, 64);
    let o = run_init(&["-c", missing.to_str().unwrap()], &[]);
    assert_code(&o, 64);
    assert!(
        err(&o).contains("nope.yaml") || out(&o).contains("nope.yaml"),
        "{}",
        err(&o)
    );
}
