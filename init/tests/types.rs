//! Service types, readiness, end actions and least privilege, through the
//! real binaries: a oneshot before what requires it, a notify service that
//! says READY=1 on NOTIFY_SOCKET (sent with socat, as a daemon's sd_notify
//! would), FailureAction ending init, User/Group, KillSignal.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// `echo MSG | socat` to the notify socket, from the service's own group.
/// socat lingers after sending (`-t`): init looks the sender up when it
/// reads the message.
fn notify(msg: &str) -> String {
    format!("printf \"{msg}\" | socat -t 5 - UNIX-SENDTO:$NOTIFY_SOCKET")
}

#[test]
fn a_oneshot_runs_to_completion_before_what_requires_it() {
    let dir = TempDir::new("oneshot");
    let key = dir.path().join("key");
    let fetch = svc(
        &sh(&format!(
            "sleep 0.3; echo secret > {}; echo fetched",
            key.display()
        )),
        "Type = \"oneshot\"",
    );
    // The app refuses to run without the key.
    let app = svc(
        &sh(&format!(
            "test -f {} || exit 7; exec sleep 1000",
            key.display()
        )),
        "Requires = [\"fetch\"]\nAfter = [\"fetch\"]",
    );
    let init = Init::start(&[("fetch", &fetch), ("app", &app)]);
    let st = init.wait_state("fetch", "exited");
    assert_eq!(st["service_type"], "oneshot", "{st}");
    assert_eq!(st["exit_status"], 0, "{st}");
    let st = init.wait_state("app", "running");
    assert_eq!(st["restart_count"], 0, "{st}");
    let list = init.list();
    let fetch_row = list.iter().find(|s| s["name"] == "fetch").unwrap();
    assert_eq!(fetch_row["state"], "exited");
    // A failing oneshot keeps what requires it from starting.
    let bad = svc(&sh("exit 3"), "Type = \"oneshot\"");
    let app = svc(&sh("exec sleep 1000"), "Requires = [\"bad\"]");
    let init = Init::start(&[("bad", &bad), ("app", &app)]);
    init.wait_state("bad", "failed");
    let st = init.wait_state("app", "failed");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("required service 'bad' failed"),
        "{st}"
    );
}

#[test]
fn a_notify_service_is_starting_until_ready_and_start_waits_for_it() {
    let dir = TempDir::new("notify");
    let (gate, mark) = (dir.path().join("gate"), dir.path().join("ready-sent"));
    // Ready once the test opens the gate; STATUS shows in status.
    let db = svc(
        &sh(&format!(
            "until [ -e {} ]; do sleep 0.01; done; touch {}; {}; exec sleep 1000",
            gate.display(),
            mark.display(),
            notify("READY=1\\\\nSTATUS=accepting connections")
        )),
        "Type = \"notify\"\nServiceEnable = false",
    );
    // Ordered after db (After alone): starts once db is ready.
    let web = svc(
        &sh(&format!(
            "test -f {} || exit 9; exec sleep 1000",
            mark.display()
        )),
        "After = [\"db\"]\nServiceEnable = false",
    );
    let init = Init::start(&[("db", &db), ("web", &web)]);
    let mut c = init.connect();
    use std::io::Write;
    c.write_all(br#"{"ServiceStart":{"name":"db"}}"#).unwrap();
    // Meanwhile it is starting, and web waits for it.
    assert_eq!(init.wait_state("db", "starting")["state"], "starting");
    let w = init.start_service("web");
    assert!(
        w["Success"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for db"),
        "{w}"
    );
    std::fs::write(&gate, "").unwrap();
    let answer = read_line(&mut c).expect("an answer to start");
    assert!(answer.contains("started (ready)"), "{answer}");
    assert!(mark.exists(), "answered before READY=1 was sent");
    let st = init.wait_state("db", "running");
    assert_eq!(st["status_text"], "accepting connections", "{st}");
    init.wait_state("web", "running");
    let log = init.logs("db", 20).join("\n");
    assert!(log.contains("[init] ready"), "{log}");
}

#[test]
fn a_notify_service_that_never_says_ready_fails_at_its_start_timeout() {
    let db = svc(
        "sleep 1000",
        "Type = \"notify\"\nTimeoutStartSec = 1\nTimeoutStopSec = 1",
    );
    let init = Init::start(&[("db", &db)]);
    let st = init.wait_state("db", "failed");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("not ready within 1s"),
        "{st}"
    );
}

#[test]
fn failure_action_poweroff_ends_init_with_the_status_in_its_log() {
    let main = svc(&sh("sleep 0.2; exit 4"), "FailureAction = \"poweroff\"");
    let other = svc("sleep 1000", "");
    let mut init = Init::start(&[("main", &main), ("other", &other)]);
    let other_pid = {
        assert!(wait_for(|| init.pid_of("other").is_some(), TIMEOUT));
        init.pid_of("other").unwrap()
    };
    let code = init.wait_exit(TIMEOUT);
    assert_eq!(code, Some(Some(0)), "{}", init.stderr_text());
    let err = init.stderr_text();
    assert!(
        err.contains("main: ended (exited with code 4); FailureAction: powering off"),
        "{err}"
    );
    assert!(!pid_alive(other_pid), "the other service was not stopped");
    let log = std::fs::read_to_string(init.log_dir.join("init.log")).unwrap();
    assert!(log.contains("FailureAction: powering off"), "{log}");
}

#[test]
fn user_and_group_set_the_ids_and_the_environment() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (to change ids)"
    );
    let who = svc(
        &sh("echo ids $(id -u) $(id -g) $(id -G); echo env $USER $LOGNAME $HOME; exec sleep 1000"),
        "User = \"nobody\"\nGroup = 12345\nSupplementaryGroups = [\"54321\"]",
    );
    let unknown = svc("sleep 1000", "User = \"no-such-user-here\"");
    let init = Init::start(&[("who", &who), ("unknown", &unknown)]);
    init.wait_state("who", "running");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mut log = String::new();
    assert!(
        wait_for(
            || {
                log = init.logs("who", 10).join("\n");
                log.contains("env ")
            },
            TIMEOUT
        ),
        "{log}"
    );
    let want = format!("ids {} 12345 12345 54321", nobody.uid);
    assert!(log.contains(&want), "{want} not in {log}");
    let want = format!("env nobody nobody {}", nobody.dir.display());
    assert!(log.contains(&want), "{want} not in {log}");
    let st = init.wait_state("unknown", "invalid");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("User: unknown user 'no-such-user-here'"),
        "{st}"
    );
}

#[test]
fn kill_signal_is_sent_to_stop() {
    // Exits 0 on SIGINT (and says so), ignores SIGTERM.
    let svc_text = svc(
        &sh("trap \"echo got INT; exit 0\" INT; trap \"\" TERM; echo trapped; while true; do sleep 0.1; done"),
        "KillSignal = \"SIGINT\"\nTimeoutStopSec = 30",
    );
    let init = Init::start(&[("a", &svc_text)]);
    init.wait_state("a", "running");
    // Once the shell has set its traps.
    assert!(wait_for(
        || init.logs("a", 5).iter().any(|l| l.contains("trapped")),
        TIMEOUT
    ));
    let t = Instant::now();
    let r = init.stop_service("a");
    assert!(r.to_string().contains("stopped"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(10), "waited for SIGKILL");
    let log = init.logs("a", 10).join("\n");
    assert!(log.contains("got INT"), "{log}");
    assert!(log.contains("sent SIGINT"), "{log}");
}
