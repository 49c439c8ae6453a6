//! Runs the built initctl against a fake init: a Unix socket server in a
//! thread that checks the request line and answers canned lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest any single initctl run may take before the test kills it.
const WATCHDOG: Duration = Duration::from_secs(20);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("initctl-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fake init listening on `sock`, serving one connection. The thread
/// hands back the request line it read.
struct Fake {
    dir: PathBuf,
    sock: PathBuf,
    handle: JoinHandle<String>,
}

impl Fake {
    fn start(name: &str, answer: impl FnOnce(&mut UnixStream) + Send + 'static) -> Fake {
        let dir = temp_dir(name);
        let sock = dir.join("init.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            answer(&mut stream);
            request
        });
        Fake { dir, sock, handle }
    }

    /// Answers with these lines, then closes.
    fn answering(name: &str, lines: &'static [&'static str]) -> Fake {
        Fake::start(name, move |s| {
            for line in lines {
                s.write_all(line.as_bytes()).unwrap();
                s.write_all(b"\n").unwrap();
            }
        })
    }

    fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }

    /// The request the server got, without its `\n` (which must be there).
    fn request(self) -> String {
        let req = self.handle.join().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
        req.strip_suffix('\n')
            .unwrap_or_else(|| panic!("request not terminated by a newline: {req:?}"))
            .to_string()
    }
}

/// Waits until the peer closes (used by servers that never answer).
fn wait_for_close(s: &mut UnixStream) {
    let _ = s.read_to_end(&mut Vec::new());
}

fn initctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_initctl"));
    // Keep the machine's own /etc/initctl.yaml and environment out of it.
    cmd.env("INITCTL_CONFIG", "/nonexistent/initctl-test.yaml")
        .env_remove("INIT_SOCKET")
        .stdin(Stdio::null());
    cmd
}

/// Run to completion (killed after WATCHDOG), timing it.
fn run(cmd: &mut Command) -> (Output, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(WATCHDOG) {
        Ok(out) => (out, start.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("initctl still running after {WATCHDOG:?}");
        }
    }
}

fn run_args(args: &[&str]) -> (Output, Duration) {
    run(initctl().args(args))
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn ping_answered_with_pong() {
    let fake = Fake::answering("ping", &["\"Pong\""]);
    let (out, _) = run_args(&["-s", fake.sock(), "ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "✓ Pong - init system is responsive\n");
    assert_eq!(stderr(&out), "");
    assert_eq!(fake.request(), "\"Ping\"");
}

#[test]
fn list_prints_the_table() {
    let fake = Fake::answering(
        "list",
        &[
            r#"{"ServiceList":{"services":[{"name":"webapp","enabled":true,"active":true,"restart_policy":"always","restart_count":3,"state":"running"},{"name":"cache","enabled":false,"active":false,"restart_policy":"no","restart_count":0}]}}"#,
        ],
    );
    let (out, _) = run_args(&["list", "--socket", fake.sock()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
NAME                      ENABLED    ACTIVE     RESTART         RESTARTS STATE
----------------------------------------------------------------------------------------
webapp                    enabled    active     always          3        running
cache                     disabled   inactive   no              0        inactive
"
    );
    assert_eq!(fake.request(), "\"ListServices\"");
}

#[test]
fn success_message_and_request_with_options_after_the_words() {
    let fake = Fake::answering(
        "enable",
        &[r#"{"Success":{"message":"Service 'x' enabled"}}"#],
    );
    let (out, _) = run_args(&["enable", "--now", "x", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "✓ Service 'x' enabled\n");
    assert_eq!(
        fake.request(),
        r#"{"ServiceEnable":{"name":"x","now":true}}"#
    );
}

#[test]
fn logs_with_lines_after_the_name() {
    let fake = Fake::answering("logs", &[r#"{"ServiceLogs":{"logs":["one","two"]}}"#]);
    let (out, _) = run_args(&["logs", "webapp", "-n", "100", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\n");
    assert_eq!(
        fake.request(),
        r#"{"ServiceLogs":{"name":"webapp","lines":100}}"#
    );
}

#[test]
fn a_long_answer_in_many_pieces_arrives_whole() {
    // 3000 lines, about 330 KB, sent in pieces of 1000 bytes: initctl's
    // small first read, then its larger ones, must lose and reorder nothing.
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("{i:05} {}", "x".repeat(100)))
        .collect();
    let answer = format!(
        "{{\"ServiceLogs\":{{\"logs\":{}}}}}\n",
        serde_json::to_string(&lines).unwrap()
    );
    let fake = Fake::start("long", move |s| {
        for piece in answer.as_bytes().chunks(1000) {
            s.write_all(piece).unwrap();
            s.flush().unwrap();
        }
    });
    let (out, _) = run_args(&["logs", "web", "-n", "3000", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), lines.join("\n") + "\n");
    fake.request();
}

#[test]
fn error_answer_exits_1() {
    let fake = Fake::answering(
        "error",
        &[r#"{"Error":{"message":"no such service: nope"}}"#],
    );
    let (out, _) = run_args(&["-s", fake.sock(), "start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "✗ Error: no such service: nope\n");
    assert_eq!(fake.request(), r#"{"ServiceStart":{"name":"nope"}}"#);
}

const INACTIVE: &str = r#"{"ServiceStatus":{"status":{"name":"worker","enabled":true,"active":false,"pid":null,"restart_policy":"on-failure","restart_count":2,"restart_sec":5,"exit_status":1,"exec_start":"/bin/worker","working_directory":null,"dependencies":{"before":[],"after":["db"],"requires":[],"required_by":[]},"state":"failed","reason":"exited with code 1"}}}"#;

#[test]
fn status_of_an_inactive_service_exits_3_with_the_block() {
    let fake = Fake::answering("status-inactive", &[INACTIVE]);
    let (out, _) = run_args(&["status", "worker", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
Service: worker
  Enabled: yes
  Status: failed
  Reason: exited with code 1
  Command: /bin/worker
  Restart Policy: on-failure
  Restart Delay: 5s
  Restart Count: 2
  Last Exit Code: 1
  After: db
"
    );
    assert_eq!(fake.request(), r#"{"ServiceStatus":{"name":"worker"}}"#);
}

#[test]
fn status_of_an_active_service_exits_0() {
    let fake = Fake::answering(
        "status-active",
        &[
            r#"{"ServiceStatus":{"status":{"name":"w","enabled":true,"active":true,"pid":42,"restart_policy":"always","restart_count":0,"restart_sec":1,"exit_status":null,"exec_start":"/bin/w","working_directory":"/srv","dependencies":{"before":[],"after":[],"requires":[],"required_by":[]}}}}"#,
        ],
    );
    let (out, _) = run_args(&["-s", fake.sock(), "status", "w"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("  Status: active (running)\n  PID: 42\n"));
    fake.request();
}

#[test]
fn json_prints_the_raw_line_and_keeps_exit_codes() {
    let fake = Fake::answering("json", &[INACTIVE]);
    let (out, _) = run_args(&["--json", "-s", fake.sock(), "status", "worker"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), format!("{INACTIVE}\n"));
    fake.request();

    const RAW: &str = r#"{ "Error" : { "message" : "nope" } }"#;
    let raw = RAW;
    let fake = Fake::answering("json-error", &[RAW]);
    let (out, _) = run_args(&["-s", fake.sock(), "stop", "x", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), format!("{raw}\n"));
    assert_eq!(stderr(&out), "");
    fake.request();
}

#[test]
fn system_status_block() {
    let fake = Fake::answering(
        "sysstat",
        &[
            r#"{"SystemStatus":{"status":{"uptime_secs":303,"total_services":12,"active_services":9,"enabled_services":10,"log_dir":"/log","service_dir":"/service"}}}"#,
        ],
    );
    let (out, _) = run_args(&["system-status", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "System Status\n  Uptime: 5m 3s\n  Services: 12 total, 10 enabled, 9 active\n  \
         Service Directory: /service\n  Log Directory: /log\n"
    );
    assert_eq!(fake.request(), "\"SystemStatus\"");
}

#[test]
fn server_that_never_answers_is_cut_off_by_the_timeout() {
    let fake = Fake::start("silent", wait_for_close);
    let (out, took) = run_args(&["--timeout", "1", "-s", fake.sock(), "ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("no answer") && err.contains(fake.sock()),
        "{err}"
    );
    fake.request();
}

#[test]
fn default_timeout_is_5_seconds() {
    let fake = Fake::start("silent-default", wait_for_close);
    let (out, took) = run_args(&["-s", fake.sock(), "ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    fake.request();
}

#[test]
fn full_listen_queue_is_cut_off_by_the_timeout() {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let dir = temp_dir("backlog");
    let sock = dir.join("init.sock");
    // A listener that never accepts, with room for one pending connection.
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &nix::sys::socket::UnixAddr::new(&sock).unwrap(),
    )
    .unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let _pending = UnixStream::connect(&sock).unwrap();
    let (out, took) = run_args(&["--timeout", "1", "-s", sock.to_str().unwrap(), "ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect") && err.contains("init.sock"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_socket_exits_2_naming_the_path() {
    let dir = temp_dir("missing");
    let sock = dir.join("nothing-here.sock");
    let (out, _) = run_args(&["-s", sock.to_str().unwrap(), "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(sock.to_str().unwrap()) && err.contains("No such file or directory"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_nobody_listens_on_exits_2() {
    let dir = temp_dir("refused");
    let sock = dir.join("init.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let (out, _) = run_args(&["-s", sock.to_str().unwrap(), "ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_answers_exit_2() {
    for (name, line) in [
        ("notjson", "this is not json"),
        ("notresponse", r#"{"Frobnicated":{"x":1}}"#),
    ] {
        let fake = Fake::start(name, move |s| {
            s.write_all(line.as_bytes()).unwrap();
            s.write_all(b"\n").unwrap();
        });
        let (out, _) = run_args(&["-s", fake.sock(), "ping"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(
            stderr(&out).contains("invalid response from init"),
            "{name}: {}",
            stderr(&out)
        );
        fake.request();
    }
}

#[test]
fn close_without_answer_exits_2() {
    let fake = Fake::start("hangup", |_| {});
    let (out, _) = run_args(&["-s", fake.sock(), "reload"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("without answering"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake.request(), "\"SystemReload\"");
}

#[test]
fn answer_without_newline_before_close_is_accepted() {
    // The seed's init framed nothing: one write, then close.
    let fake = Fake::start("unframed", |s| s.write_all(b"\"Pong\"").unwrap());
    let (out, _) = run_args(&["-s", fake.sock(), "ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fake.request();
}

#[test]
fn logs_follow_streams_lines_without_a_read_timeout() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let fake = Fake::start("follow", move |s| {
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[\"a\",\"b\"]}}\n")
            .unwrap();
        go_rx.recv().unwrap();
        // Longer than --timeout: following has no read timeout.
        thread::sleep(Duration::from_millis(1500));
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[\"c\"]}}\n")
            .unwrap();
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[]}}\n").unwrap();
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[\"d\"]}}\n")
            .unwrap();
    });
    let mut child = initctl()
        .args([
            "logs",
            "web",
            "-f",
            "-n",
            "2",
            "--timeout",
            "1",
            "-s",
            fake.sock(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    reader.read_line(&mut first).unwrap();
    // The first batch arrived while the connection is still open.
    assert_eq!(first, "a\nb\n");
    go_tx.send(()).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "c\nd\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "");
    assert_eq!(
        fake.request(),
        r#"{"ServiceLogsFollow":{"name":"web","lines":2}}"#
    );
}

#[test]
fn logs_follow_error_exits_1() {
    let fake = Fake::start("follow-error", |s| {
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[\"a\"]}}\n")
            .unwrap();
        s.write_all(b"{\"Error\":{\"message\":\"service removed\"}}\n")
            .unwrap();
        wait_for_close(s);
    });
    let (out, _) = run_args(&["logs", "-f", "web", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "a\n");
    assert_eq!(stderr(&out), "✗ Error: service removed\n");
    fake.request();
}

#[test]
fn logs_follow_ends_quietly_when_the_reader_goes_away() {
    // `initctl logs -f web | head -1`, with init going quiet afterwards.
    let fake = Fake::start("follow-head", |s| {
        s.write_all(b"{\"ServiceLogs\":{\"logs\":[\"first\",\"second\"]}}\n")
            .unwrap();
        wait_for_close(s);
    });
    let mut child = initctl()
        .args(["logs", "-f", "web", "-s", fake.sock()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    drop(reader);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            panic!("initctl kept running after its reader went away");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "");
    fake.request();
}

#[test]
fn with_stdout_closed_nothing_goes_to_the_socket() {
    // Started with fd 1 closed, the socket must not become stdout: init
    // would get initctl's output as a second request.
    let (tx, rx) = mpsc::channel();
    let fake = Fake::start("closed-stdout", move |s| {
        s.write_all(b"\"Pong\"\n").unwrap();
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        tx.send(rest).unwrap();
    });
    let mut cmd = initctl();
    cmd.args(["-s", fake.sock(), "ping"]);
    // SAFETY: close(2) is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::libc::close(1);
            Ok(())
        });
    }
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fake.request(), "\"Ping\"");
    assert_eq!(
        rx.recv_timeout(WATCHDOG).unwrap(),
        "",
        "sent to init after the request"
    );
}

#[test]
fn output_into_a_pipe_nobody_reads_ends_quietly() {
    // `initctl ping | true`: the write fails with EPIPE and initctl ends
    // with 0 and no message, rather than being killed by SIGPIPE.
    let fake = Fake::answering("closed-pipe", &["\"Pong\""]);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let out = initctl()
        .args(["-s", fake.sock(), "ping"])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", out.status);
    assert_eq!(stderr(&out), "");
    fake.request();
}

#[test]
fn logs_follow_json_prints_each_raw_line() {
    let fake = Fake::answering(
        "follow-json",
        &[
            r#"{"ServiceLogs":{"logs":["a"]}}"#,
            r#"{"ServiceLogs":{"logs":[]}}"#,
        ],
    );
    let (out, _) = run_args(&["logs", "-f", "web", "--json", "-s", fake.sock()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "{\"ServiceLogs\":{\"logs\":[\"a\"]}}\n{\"ServiceLogs\":{\"logs\":[]}}\n"
    );
    fake.request();
}

#[test]
fn init_socket_env_and_config_file() {
    // INIT_SOCKET is used when no -s is given.
    let fake = Fake::answering("env", &["\"Pong\""]);
    let (out, _) = run(initctl().env("INIT_SOCKET", fake.sock()).arg("ping"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fake.request();

    // unix_socket_path from the file named by INITCTL_CONFIG.
    let fake = Fake::answering("file", &["\"Pong\""]);
    let config = fake.dir.join("initctl.yaml");
    std::fs::write(
        &config,
        format!(
            "protocol: unix\nunix_socket_path: {}\nvsock_cdi: 16\n",
            fake.sock()
        ),
    )
    .unwrap();
    let (out, _) = run(initctl().env("INITCTL_CONFIG", &config).arg("ping"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A misspelt key is named, not silently dropped.
    assert!(
        stderr(&out).contains("unknown key 'vsock_cdi'"),
        "{}",
        stderr(&out)
    );
    fake.request();
}

#[test]
fn invalid_config_file_exits_64_naming_it() {
    let dir = temp_dir("badconfig");
    let config = dir.join("initctl.yaml");
    std::fs::write(&config, "protocol: [carrier-pigeon\n").unwrap();
    let (out, _) = run_args(&["-c", config.to_str().unwrap(), "ping"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains(config.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_exit_64() {
    for args in [&["frobnicate"][..], &["stop"], &[], &["ping", "--bogus"]] {
        let (out, _) = run_args(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(stderr(&out).contains("initctl --help"), "{args:?}");
        assert_eq!(stdout(&out), "");
    }
    let (out, _) = run_args(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("logs-clear"));
    let (out, _) = run_args(&["-V"]);
    assert_eq!(
        stdout(&out),
        format!("initctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn vsock_connect_is_bounded_by_the_timeout() {
    if !Path::new("/dev/vsock").exists() {
        // Not a pass: say so in the test output.
        println!("SKIPPED vsock_connect_is_bounded_by_the_timeout: /dev/vsock is absent");
        return;
    }
    // No VSOCK loopback transport here: a connect to CID 1 never completes.
    let (out, took) = run_args(&[
        "-p",
        "vsock",
        "--vsock-cid",
        "1",
        "--vsock-port",
        "9001",
        "--timeout",
        "1",
        "ping",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let err = stderr(&out);
    assert!(err.contains("1:9001"), "{err}");
}

/// `logs -f` without a name against an init that does not know
/// `ServiceLogsFollowAll` (it answers with an error): one follow
/// connection per service, as before.
#[test]
fn logs_follow_all_falls_back_to_a_connection_per_service() {
    let dir = temp_dir("follow-all-old");
    let sock = dir.join("init.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let server = thread::spawn(move || {
        let mut requests = Vec::new();
        let answers: [&[u8]; 3] = [
            br#"{"ServiceList":{"services":[{"name":"web","enabled":true,"active":true,"restart_policy":"no","restart_count":0}]}}"#,
            br#"{"Error":{"message":"invalid request: unknown variant `ServiceLogsFollowAll`"}}"#,
            br#"{"ServiceLogs":{"logs":["[2026-01-01 00:00:00.000] hello"]}}"#,
        ];
        for answer in answers {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&s).read_line(&mut request).unwrap();
            requests.push(request.trim_end().to_string());
            s.write_all(answer).unwrap();
            s.write_all(b"\n").unwrap();
        }
        requests
    });
    let (out, _) = run_args(&["logs", "-f", "-s", sock.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "web [2026-01-01 00:00:00.000] hello\n");
    let requests = server.join().unwrap();
    assert_eq!(
        requests,
        [
            r#""ListServices""#,
            r#"{"ServiceLogsFollowAll":{"lines":50}}"#,
            r#"{"ServiceLogsFollow":{"name":"web","lines":50}}"#,
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
