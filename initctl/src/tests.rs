use super::*;
use shared::protocol::ServiceStatus;
use std::collections::HashMap;

fn args(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}

fn cli(line: &str) -> Cli {
    match parse_args(args(line)) {
        Ok(Action::Run(cli)) => cli,
        other => panic!("{line:?} gave {other:?}"),
    }
}

fn usage_error(line: &str) -> String {
    match parse_args(args(line)) {
        Err(msg) => msg,
        other => panic!("{line:?} should be a usage error, gave {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = cli("list");
    assert_eq!(c.command, Command::List);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert!(!c.json);
    assert_eq!(
        (c.config, c.protocol, c.socket, c.vsock_cid, c.vsock_port),
        (None, None, None, None, None)
    );
}

#[test]
fn options_before_or_after_the_command_words() {
    let a = cli("-p vsock --vsock-cid 16 --vsock-port 9001 status webapp");
    let b = cli("status webapp --vsock-port 9001 -p vsock --vsock-cid 16");
    assert_eq!(a, b);
    assert_eq!(a.command, Command::Status(vec!["webapp".into()]));
    assert_eq!(
        cli("status a b").command,
        Command::Status(vec!["a".into(), "b".into()])
    );
    assert_eq!(cli("status").command, Command::Status(vec![]));
    assert_eq!(a.protocol, Some(Protocol::Vsock));
    assert_eq!((a.vsock_cid, a.vsock_port), (Some(16), Some(9001)));

    let c = cli("logs webapp -s /tmp/x.sock -c /e.yaml");
    assert_eq!(c.socket, Some(PathBuf::from("/tmp/x.sock")));
    assert_eq!(c.config, Some(PathBuf::from("/e.yaml")));
}

#[test]
fn equals_form_and_protocol_case() {
    let c = cli("--socket=/a.sock --protocol=UNIX --timeout=0.5 ping");
    assert_eq!(c.socket, Some(PathBuf::from("/a.sock")));
    assert_eq!(c.protocol, Some(Protocol::Unix));
    assert_eq!(c.timeout, Duration::from_millis(500));
}

#[test]
fn logs_lines_and_follow() {
    let lines = |c: Cli| match c.command {
        Command::Logs {
            name,
            lines,
            follow,
        } => (name, lines, follow),
        other => panic!("{other:?}"),
    };
    let some = |n: &str| Some(n.to_string());
    assert_eq!(lines(cli("logs webapp")), (some("webapp"), 50, false));
    assert_eq!(
        lines(cli("logs webapp -n 100")),
        (some("webapp"), 100, false)
    );
    assert_eq!(lines(cli("-n 7 logs -f db")), (some("db"), 7, true));
    assert_eq!(
        lines(cli("logs --follow --lines 0 db")),
        (some("db"), 0, true)
    );
    assert_eq!(lines(cli("logs")), (None, 50, false));
    assert_eq!(lines(cli("logs --all -f")), (None, 50, true));
    assert!(usage_error("logs --all db").contains("not both"));
    assert!(usage_error("list --all").contains("--all"));
    assert!(usage_error("logs db -n 10001").contains("10000"));
    assert!(usage_error("logs db -n lots").contains("lots"));
    assert!(usage_error("logs db -n").contains("--lines"));
}

#[test]
fn enable_now_json_timeout() {
    let c = cli("enable --now x --json --timeout 2");
    assert_eq!(
        c.command,
        Command::Enable {
            name: "x".into(),
            now: true
        }
    );
    assert_eq!(
        c.command.request(),
        Request::ServiceEnable {
            name: "x".into(),
            now: true
        }
    );
    assert!(c.json);
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(
        cli("enable x").command,
        Command::Enable {
            name: "x".into(),
            now: false
        }
    );
    assert!(usage_error("ping --timeout 0").contains("greater than 0"));
    assert!(usage_error("ping --timeout -1").contains("--timeout"));
    assert!(usage_error("ping --timeout soon").contains("soon"));
    assert!(usage_error("ping --timeout 1e18").contains("at most"));
    assert!(usage_error("ping --timeout inf").contains("--timeout"));
}

#[test]
fn every_command_maps_to_its_request() {
    let cases = [
        ("list", Request::ListServices),
        ("status a", Request::ServiceStatus { name: "a".into() }),
        ("start a", Request::ServiceStart { name: "a".into() }),
        ("stop a", Request::ServiceStop { name: "a".into() }),
        ("restart a", Request::ServiceRestart { name: "a".into() }),
        ("disable a", Request::ServiceDisable { name: "a".into() }),
        (
            "logs a",
            Request::ServiceLogs {
                name: "a".into(),
                lines: 50,
            },
        ),
        (
            "logs a -f -n 3",
            Request::ServiceLogsFollow {
                name: "a".into(),
                lines: 3,
            },
        ),
        (
            "logs-clear a",
            Request::ServiceLogsClear { name: "a".into() },
        ),
        ("system-status", Request::SystemStatus),
        ("reload", Request::SystemReload),
        ("reboot", Request::SystemReboot),
        ("shutdown", Request::SystemShutdown),
        ("ping", Request::Ping),
    ];
    for (line, request) in cases {
        assert_eq!(cli(line).command.request(), request, "{line}");
    }
}

#[test]
fn help_and_version() {
    assert_eq!(parse_args(args("-h")), Ok(Action::Help(None)));
    assert_eq!(
        parse_args(args("status x --help")),
        Ok(Action::Help(Some("status")))
    );
    assert_eq!(
        parse_args(args("-s /x.sock logs -h")),
        Ok(Action::Help(Some("logs")))
    );
    assert_eq!(parse_args(args("help")), Ok(Action::Help(None)));
    assert_eq!(
        parse_args(args("help stop")),
        Ok(Action::Help(Some("stop")))
    );
    assert!(usage_error("frob --help").contains("unknown command"));
    // Every command is in --help, and has its own usage.
    let all = help();
    for u in COMMANDS {
        assert!(all.contains(&format!("  {} ", u.name)), "{}", u.name);
        assert!(command_help(u).starts_with(&format!("Usage: initctl {}", u.name)));
    }
    assert_eq!(parse_args(args("-V")), Ok(Action::Version));
    assert_eq!(parse_args(args("--version")), Ok(Action::Version));
}

#[test]
fn usage_errors() {
    assert!(usage_error("").contains("no command"));
    assert!(usage_error("frobnicate").contains("unknown command 'frobnicate'"));
    assert!(usage_error("start").contains("needs a service name"));
    assert!(usage_error("ping extra").contains("unexpected argument 'extra'"));
    assert!(usage_error("ping --bogus").contains("'--bogus'"));
    assert!(usage_error("-p tcp ping").contains("'unix' or 'vsock'"));
    assert!(usage_error("--vsock-cid x ping").contains("x"));
    assert!(usage_error("start x --now").contains("--now"));
    assert!(usage_error("status x -f").contains("logs"));
    assert!(usage_error("status x -n 4").contains("logs"));
    assert!(usage_error("-s").contains("-s"));
}

/// A file path in a fresh directory of its own, removed on drop.
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn temp_file(name: &str, contents: Option<&str>) -> TempFile {
    let dir = std::env::temp_dir().join(format!("initctl-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("initctl.yaml");
    if let Some(contents) = contents {
        std::fs::write(&path, contents).unwrap();
    }
    TempFile(path)
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn missing_config_means_defaults() {
    let path = temp_file("missing", None);
    assert_eq!(load_config(&path, false), Ok(InitctlConfig::default()));
    // Through INITCTL_CONFIG: defaults.
    let p = path.display().to_string();
    assert_eq!(
        resolve_endpoint(&cli("ping"), env_of(&[("INITCTL_CONFIG", &p)])),
        Ok(Endpoint::Unix("/run/init.sock".into()))
    );
    // Given with -c: an error naming it.
    let c = cli(&format!("-c {} ping", path.display()));
    let err = resolve_endpoint(&c, env_of(&[])).unwrap_err();
    assert!(err.contains(&p), "{err}");
}

#[test]
fn empty_config_means_defaults() {
    let path = temp_file("empty", Some("# nothing here\n"));
    assert_eq!(load_config(&path, true), Ok(InitctlConfig::default()));
}

#[test]
fn invalid_config_is_an_error_naming_the_file() {
    for (name, text) in [("badyaml", "protocol: [unix\n"), ("notamap", "- a\n- b\n")] {
        let path = temp_file(name, Some(text));
        let err = load_config(&path, false).unwrap_err();
        assert!(
            err.contains(&path.display().to_string()) && err.starts_with("invalid config"),
            "{name}: {err}"
        );
        let c = cli(&format!("--config {} ping", path.display()));
        assert!(resolve_endpoint(&c, env_of(&[])).is_err());
    }
    // A directory where the file should be: unreadable, also named.
    let dir = temp_file("isdir", None);
    std::fs::create_dir_all(&*dir).unwrap();
    let err = load_config(&dir, false).unwrap_err();
    assert!(err.contains(&dir.display().to_string()), "{err}");
}

/// A FIFO, a huge file or one nested 60,000 deep (which YAML's scanner
/// takes over 10 s on) is an error naming the file, at once.
#[test]
fn config_that_would_hang_or_swamp_initctl_is_refused() {
    let fifo = temp_file("fifo", None);
    nix::unistd::mkfifo(&*fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let big = temp_file("big", Some(&"# padding\n".repeat(100_000)));
    let deep = temp_file("deep", Some(&format!("protocol: {}\n", "[".repeat(60_000))));
    for (path, want) in [
        (&fifo, "not a regular file"),
        (&big, "larger than 65536 bytes"),
        (&deep, "line 1: nested deeper than 64 levels"),
    ] {
        let t = Instant::now();
        let err = load_config(path, true).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}

#[test]
fn a_bad_key_takes_its_default_and_keeps_the_others() {
    for (name, text) in [
        ("badproto", "protocol: tcp\nunix_socket_path: /k.sock\n"),
        (
            "badcid",
            "vsock_cid: minus one\nunix_socket_path: /k.sock\n",
        ),
    ] {
        let path = temp_file(name, Some(text));
        let c = load_config(&path, true).unwrap();
        assert_eq!(c.unix_socket_path, "/k.sock", "{name}");
        assert_eq!(c.protocol, Protocol::Unix, "{name}");
        assert_eq!(c.vsock_cid, 3, "{name}");
    }
}

#[test]
fn config_priority_cli_then_env_then_file_then_default() {
    let path = temp_file(
        "priority",
        Some("protocol: unix\nunix_socket_path: /file.sock\nvsock_cid: 16\nvsock_port: 7000\n"),
    );
    let p = path.display().to_string();
    let env_cfg = [("INITCTL_CONFIG", p.as_str())];
    let env_both = [("INITCTL_CONFIG", p.as_str()), ("INIT_SOCKET", "/env.sock")];

    // File found through INITCTL_CONFIG.
    let c = cli("ping");
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_cfg)),
        Ok(Endpoint::Unix("/file.sock".into()))
    );
    // INIT_SOCKET beats the file.
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_both)),
        Ok(Endpoint::Unix("/env.sock".into()))
    );
    // An empty INIT_SOCKET counts as unset.
    assert_eq!(
        resolve_endpoint(&c, env_of(&[("INITCTL_CONFIG", &p), ("INIT_SOCKET", "")])),
        Ok(Endpoint::Unix("/file.sock".into()))
    );
    // The flag beats INIT_SOCKET.
    let c = cli("ping -s /cli.sock");
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_both)),
        Ok(Endpoint::Unix("/cli.sock".into()))
    );
    // VSOCK: file values, then flags.
    let c = cli("ping -p vsock");
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_both)),
        Ok(Endpoint::Vsock {
            cid: 16,
            port: 7000
        })
    );
    let c = cli("ping -p vsock --vsock-port 9009");
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_cfg)),
        Ok(Endpoint::Vsock {
            cid: 16,
            port: 9009
        })
    );
    // -c beats INITCTL_CONFIG.
    let other = temp_file("priority-other", Some("protocol: vsock\n"));
    let c = cli(&format!("ping -c {}", other.display()));
    assert_eq!(
        resolve_endpoint(&c, env_of(&env_cfg)),
        Ok(Endpoint::Vsock { cid: 3, port: 9001 })
    );
    // Defaults from the file's missing keys.
    let partial = temp_file("priority-partial", Some("vsock_port: 9100\n"));
    let c = cli(&format!("ping -c {}", partial.display()));
    assert_eq!(
        resolve_endpoint(&c, env_of(&[])),
        Ok(Endpoint::Unix("/run/init.sock".into()))
    );
}

#[test]
fn exit_codes() {
    let status = |active| Response::ServiceStatus {
        status: ServiceStatus {
            active,
            ..Default::default()
        },
    };
    let st = Command::Status(vec!["x".into()]);
    assert_eq!(exit_code(&st, &status(true)), EXIT_OK);
    assert_eq!(exit_code(&st, &status(false)), EXIT_INACTIVE);
    let done = Response::ServiceStatus {
        status: ServiceStatus {
            active: false,
            state: "exited".into(),
            ..Default::default()
        },
    };
    assert_eq!(exit_code(&st, &done), EXIT_OK, "a finished oneshot");
    assert_eq!(
        exit_code(&st, &Response::err("no such service")),
        EXIT_ERROR
    );
    assert_eq!(exit_code(&Command::Ping, &Response::Pong), EXIT_OK);
    assert_eq!(
        exit_code(&Command::Start("x".into()), &Response::ok("started")),
        EXIT_OK
    );
    assert_eq!(
        exit_code(&Command::Start("x".into()), &Response::err("failed")),
        EXIT_ERROR
    );
    let stop = Command::Stop("x".into());
    assert_eq!(exit_code(&stop, &Response::ok("Service 'x' stopped")), 0);
    let late = Response::ok("Service 'x' still stopping (SIGKILL follows at the stop timeout)");
    assert_eq!(exit_code(&stop, &late), EXIT_ERROR);
    let reload = Response::Success {
        message: "Reloaded; errors: a: b".into(),
        errors: vec!["a: b".into()],
    };
    assert_eq!(exit_code(&Command::Reload, &reload), EXIT_ERROR);
    assert_eq!(exit_code(&Command::Reload, &Response::ok("Reloaded")), 0);
    assert_eq!(
        (EXIT_OK, EXIT_ERROR, EXIT_FAILURE, EXIT_INACTIVE, EXIT_USAGE),
        (0, 1, 2, 3, 64)
    );
}

// ----- events and metrics ----------------------------------------------------

#[test]
fn events_and_metrics_parse() {
    assert_eq!(cli("events").command, Command::Events { since: None });
    let c = cli("events --since 42 --json");
    assert_eq!(c.command, Command::Events { since: Some(42) });
    assert!(c.json);
    assert_eq!(c.command.request(), Request::Events { since: Some(42) });
    assert_eq!(cli("metrics").command.request(), Request::Metrics);
    assert!(usage_error("list --since 3").contains("--since"));
    assert!(usage_error("events --since x").contains("--since"));
}

#[test]
fn an_event_is_one_readable_line() {
    let e = shared::protocol::Event {
        seq: 7,
        time: "2026-03-01T11:54:56.789Z".into(),
        kind: "state".into(),
        service: Some("web".into()),
        from: Some("running".into()),
        to: Some("auto-restart".into()),
        pid: Some(42),
        exit_code: Some(3),
        reason: Some("exited with code 3\nsecond line".into()),
        restart_count: Some(2),
        ..Default::default()
    };
    assert_eq!(
        render::event_line(&e),
        "2026-03-01T11:54:56.789Z #7 web: running -> auto-restart (pid 42, exit code 3, restarts 2): exited with code 3 second line\n"
    );
    let r = shared::protocol::Event {
        seq: 8,
        time: "t".into(),
        kind: "reload".into(),
        ok: Some(false),
        message: Some("reload failed: x".into()),
        ..Default::default()
    };
    assert_eq!(
        render::event_line(&r),
        "t #8 reload failed: reload failed: x\n"
    );
}
