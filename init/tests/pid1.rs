//! init as a real PID 1, in a fresh PID (and mount) namespace:
//! `unshare --pid --fork --mount-proc init -c <cfg>`. Needs root and
//! `unshare`; without them each test prints why it is skipped and passes
//! (hence the `_needs_root` in the names). CI runs as root.
//!
//! Everything is observed from outside through the host's /proc: init's host
//! pid is the only child of `unshare`, and whatever is re-parented to the
//! namespace's PID 1 shows up as a child of that host pid.
mod common;
use common::*;
use std::time::Duration;

fn unshare_opts() -> Option<Opts> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run init as PID 1 in a PID namespace)");
        return None;
    }
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: `unshare --pid --fork --mount-proc` does not work here: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: no unshare: {e}");
            return None;
        }
    }
    Some(Opts {
        wrapper: ["unshare", "--pid", "--fork", "--mount-proc"]
            .map(String::from)
            .to_vec(),
        ..Opts::default()
    })
}

/// The namespace pids of a host pid (`NSpid:` of /proc/<pid>/status).
fn nspid(pid: i32) -> Vec<i32> {
    proc_status_field(pid, "NSpid")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn zombies_of(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|c| proc_state(*c) == Some('Z'))
        .collect()
}

#[test]
fn pid1_reaps_orphans_needs_root() {
    let Some(opts) = unshare_opts() else { return };
    let init = Init::start_with(
        &[
            // Five orphans re-parented to PID 1; the service itself stays up.
            (
                "orphans",
                &svc(
                    &sh("for i in 1 2 3 4 5; do (sleep 1 &); done; exec sleep 1000"),
                    "",
                ),
            ),
            // A session-escaped orphan outliving a service that exits 4.
            (
                "escape",
                &svc(&sh("setsid sleep 1 & sleep 0.2; exit 4"), ""),
            ),
        ],
        opts,
    );
    let pid1 = init.init_pid();
    assert_eq!(
        nspid(pid1).last(),
        Some(&1),
        "init is not PID 1 in its namespace"
    );
    init.wait_state("orphans", "running");
    // Inside the namespace the service's parent is PID 1.
    let svc_pid = init.pid_of("orphans").unwrap();
    assert!(svc_pid > 1);
    // The orphans show up as children of init (host view)...
    assert!(
        wait_for(|| children_of(pid1).len() >= 7, TIMEOUT),
        "children of init: {:?}",
        children_of(pid1)
    );
    // ...and once they exit none is left a zombie: only the service remains.
    assert!(
        wait_for(
            || children_of(pid1).len() == 1 && zombies_of(pid1).is_empty(),
            TIMEOUT
        ),
        "children {:?}, zombies {:?}\n{}",
        children_of(pid1),
        zombies_of(pid1),
        init.stderr_text()
    );
    let st = init.wait_state("escape", "failed");
    assert_eq!(st["exit_status"], serde_json::json!(4), "{st}");
    assert!(st["signal"].is_null(), "{st}");
    let err = init.stderr_text();
    assert!(!err.contains("not PID 1"), "{err}");
    assert!(err.matches("reaped orphan").count() >= 6, "{err}");
}

#[test]
fn pid1_sigterm_shuts_down_needs_root() {
    let Some(opts) = unshare_opts() else { return };
    let mut init = Init::start_with(
        &[
            ("a", &svc("sleep 1000", "Restart = \"always\"")),
            (
                "b",
                &svc(
                    &sh("trap \"\" TERM; sleep 1000 & sleep 1000 & wait"),
                    "TimeoutStopSec = 1",
                ),
            ),
        ],
        opts,
    );
    let pid1 = init.init_pid();
    assert_eq!(nspid(pid1).last(), Some(&1));
    init.wait_state("a", "running");
    init.wait_state("b", "running");
    // Host pids of everything in the namespace but init.
    let mut procs = Vec::new();
    assert!(wait_for(
        || {
            procs = children_of(pid1);
            let mut all = procs.clone();
            for p in &procs {
                all.extend(children_of(*p));
            }
            procs = all;
            procs.len() >= 4
        },
        TIMEOUT
    ));
    assert!(kill(pid1, 15));
    // init stops everything, syncs and calls reboot(2), which in a PID
    // namespace ends the namespace: unshare then exits.
    let code = init.wait_exit(Duration::from_secs(15));
    assert!(
        code.is_some(),
        "unshare still running\n{}",
        init.stderr_text()
    );
    for p in &procs {
        assert!(
            proc_state(*p).is_none(),
            "{p} survived: {:?}",
            proc_state(*p)
        );
    }
    assert!(proc_state(pid1).is_none());
    let err = init.stderr_text();
    assert!(err.contains("shutdown"), "{err}");
    assert!(err.contains("synced; powering off"), "{err}");
    assert!(!err.contains("reboot(2) failed"), "{err}");
}

#[test]
fn pid1_system_shutdown_request_needs_root() {
    let Some(opts) = unshare_opts() else { return };
    let mut init = Init::start_with(&[("a", &svc("sleep 1000", ""))], opts);
    let pid1 = init.init_pid();
    init.wait_state("a", "running");
    let r = init.request(r#""SystemShutdown""#);
    assert!(
        r["Success"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down"),
        "{r}"
    );
    assert!(
        init.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        init.stderr_text()
    );
    assert!(proc_state(pid1).is_none());
}
