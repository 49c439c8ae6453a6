//! initctl: the control client of the enclave init. Sends JSON request
//! lines over a Unix socket or VSOCK (one per connection) and prints the
//! answers. The command table (`COMMANDS`) is the one list of commands:
//! --help and `initctl COMMAND --help` are made from it.
//!
//! initctl starts from libc's `main`, not through std's runtime start-up
//! (`no_main`, see [`main`]): a host script runs it once per question.
#![cfg_attr(not(test), no_main)]

mod all_logs;
mod render;
mod transport;

use pico_args::Arguments;
use shared::config::{InitctlConfig, Protocol};
use shared::protocol::{Request, Response};
use shared::MAX_LOG_LINES;
use std::ffi::OsString;
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transport::{Conn, Endpoint};

pub const EXIT_OK: i32 = 0;
/// init answered with an Error; a reload found invalid files; a stop
/// ended with the service still stopping.
pub const EXIT_ERROR: i32 = 1;
/// init unreachable or silent past --timeout, or a bad response.
pub const EXIT_FAILURE: i32 = 2;
/// `status` of a service that is not active (like systemctl).
pub const EXIT_INACTIVE: i32 = 3;
/// Bad usage: unknown command or option, missing name, bad option value,
/// a config file given with -c that is missing or not usable (sysexits.h
/// EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

const DEFAULT_CONFIG: &str = "/etc/initctl.yaml";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LINES: usize = 50;
/// A year: keeps `Instant::now() + timeout` far from overflowing.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 86400.0;
const CONFIG_KEYS: &[&str] = &["protocol", "unix_socket_path", "vsock_cid", "vsock_port"];
/// States `status` without a name reports: not what the service should be in.
const TROUBLE: &[&str] = &["failed", "auto-restart", "invalid"];

/// One command as --help and `initctl COMMAND --help` show it.
pub struct Usage {
    pub name: &'static str,
    pub args: &'static str,
    pub about: &'static str,
    /// Options and notes of this command, lines indented by 2.
    pub details: &'static str,
}

/// Every command, in --help order. A new command adds a row here, a
/// `Command` variant and an arm in `parse_args`.
pub const COMMANDS: &[Usage] = &[
    Usage {
        name: "list",
        args: "",
        about: "List all services with their state",
        details: "  STATE is one of running, starting, stopping, exited, waiting,\n  \
                  auto-restart, failed, invalid, inactive (from init; an older init\n  \
                  leaves it out and ACTIVE says it).\n",
    },
    Usage {
        name: "status",
        args: "[SERVICE...]",
        about: "Show services' status; without a name, the system's and what is in trouble",
        details: "  Exit 3 if a named service is not active, else 1 if one is not found;\n  \
                  without a name, exit 3 if any service is failed, auto-restart or\n  \
                  invalid.\n",
    },
    Usage {
        name: "start",
        args: "<SERVICE>",
        about: "Start a service (and what it requires)",
        details: "",
    },
    Usage {
        name: "stop",
        args: "<SERVICE>",
        about: "Stop a service (and what requires it)",
        details: "  Exit 1 if init answers that it is still stopping.\n",
    },
    Usage {
        name: "restart",
        args: "<SERVICE>",
        about: "Restart a service",
        details: "",
    },
    Usage {
        name: "enable",
        args: "[--now] <SERVICE>",
        about: "Enable a service",
        details: "      --now                also start it\n",
    },
    Usage {
        name: "disable",
        args: "<SERVICE>",
        about: "Disable a service (and stop it)",
        details: "",
    },
    Usage {
        name: "logs",
        args: "[SERVICE | --all]",
        about: "Show a service's logs; without a name, every service's",
        details: "  -n, --lines <N>          number of lines (default 50)\n  \
                  -f, --follow             keep printing new lines as they arrive\n      \
                  --all                every service (the same as no name): lines\n                           \
                  merged by their timestamps, each after its service's name\n",
    },
    Usage {
        name: "logs-clear",
        args: "<SERVICE>",
        about: "Clear a service's logs",
        details: "",
    },
    Usage {
        name: "system-status",
        args: "",
        about: "Show the system status",
        details: "",
    },
    Usage {
        name: "reload",
        args: "",
        about: "Reload init.yaml and the service files",
        details: "  Exit 1 if a file is invalid: those are listed on stderr, what was\n  \
                  added, removed or changed on stdout.\n",
    },
    Usage {
        name: "reboot",
        args: "",
        about: "Reboot the enclave",
        details: "",
    },
    Usage {
        name: "shutdown",
        args: "",
        about: "Shut the enclave down",
        details: "",
    },
    Usage {
        name: "ping",
        args: "",
        about: "Check that init answers",
        details: "",
    },
    Usage {
        name: "events",
        args: "[--since N]",
        about: "Print init's events as they happen, until stopped",
        details: "      --since <N>          first every kept event after number N\n",
    },
    Usage {
        name: "metrics",
        args: "",
        about: "Print metrics in the Prometheus text exposition format",
        details: "",
    },
];

const OPTIONS: &str = "\
Options (anywhere on the line):
  -c, --config <PATH>      Config file [env: INITCTL_CONFIG] [default: /etc/initctl.yaml]
  -p, --protocol <PROTO>   unix or vsock [default: from config]
  -s, --socket <PATH>      Unix socket path [env: INIT_SOCKET] [default: from config]
      --vsock-cid <CID>    VSOCK CID [default: from config]
      --vsock-port <PORT>  VSOCK port [default: from config]
      --timeout <SECONDS>  Bound on connecting and on waiting for each answer [default: 5]
      --json               Print init's raw JSON response line(s)
  -h, --help               Show this help (after a command: that command's)
  -V, --version            Show the version
";

const EXIT_STATUS: &str = "\
Exit status: 0 ok; 1 init answered with an error, a reload found invalid
files, or a stop is still stopping; 2 init unreachable, no answer in time
or a bad response; 3 a service not active (status); 64 bad usage or a bad
config file.
";

/// The whole --help text.
pub fn help() -> String {
    let mut s = String::from(
        "initctl - control the enclave init system\n\n\
         Usage: initctl [OPTIONS] <COMMAND> [ARGS]\n\nCommands:\n",
    );
    for u in COMMANDS {
        let words = format!("{} {}", u.name, u.args);
        s.push_str(&format!("  {:<24} {}\n", words.trim_end(), u.about));
    }
    s.push('\n');
    s.push_str(OPTIONS);
    s.push('\n');
    s.push_str(EXIT_STATUS);
    s
}

/// `initctl COMMAND --help`.
pub fn command_help(u: &Usage) -> String {
    let words = format!("{} {}", u.name, u.args);
    let mut s = format!(
        "Usage: initctl {} [OPTIONS]\n\n{}.\n",
        words.trim_end(),
        u.about
    );
    if !u.details.is_empty() {
        s.push('\n');
        s.push_str(u.details);
    }
    s.push_str("\nOptions for every command: see 'initctl --help'.\n");
    s
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    List,
    /// No names: the system status and the services in trouble.
    Status(Vec<String>),
    Start(String),
    Stop(String),
    Restart(String),
    Enable {
        name: String,
        now: bool,
    },
    Disable(String),
    /// No name: every service's lines, merged.
    Logs {
        name: Option<String>,
        lines: usize,
        follow: bool,
    },
    LogsClear(String),
    SystemStatus,
    Reload,
    Reboot,
    Shutdown,
    Ping,
    Events {
        since: Option<u64>,
    },
    Metrics,
}

impl Command {
    /// The (first) request the command sends: `status` of several names
    /// sends one per name, `status` and `logs` without a name start with
    /// `SystemStatus` and `ListServices`.
    pub fn request(&self) -> Request {
        let name = |n: &String| n.clone();
        match self {
            Command::List => Request::ListServices,
            Command::Status(names) => match names.first() {
                Some(n) => Request::ServiceStatus { name: name(n) },
                None => Request::SystemStatus,
            },
            Command::Start(n) => Request::ServiceStart { name: name(n) },
            Command::Stop(n) => Request::ServiceStop { name: name(n) },
            Command::Restart(n) => Request::ServiceRestart { name: name(n) },
            Command::Enable { name: n, now } => Request::ServiceEnable {
                name: name(n),
                now: *now,
            },
            Command::Disable(n) => Request::ServiceDisable { name: name(n) },
            Command::Logs { name: None, .. } => Request::ListServices,
            Command::Logs {
                name: Some(n),
                lines,
                follow: false,
            } => Request::ServiceLogs {
                name: name(n),
                lines: *lines,
            },
            Command::Logs {
                name: Some(n),
                lines,
                follow: true,
            } => Request::ServiceLogsFollow {
                name: name(n),
                lines: *lines,
            },
            Command::LogsClear(n) => Request::ServiceLogsClear { name: name(n) },
            Command::SystemStatus => Request::SystemStatus,
            Command::Reload => Request::SystemReload,
            Command::Reboot => Request::SystemReboot,
            Command::Shutdown => Request::SystemShutdown,
            Command::Ping => Request::Ping,
            Command::Events { since } => Request::Events { since: *since },
            Command::Metrics => Request::Metrics,
        }
    }
}

/// The command line after parsing; `None` fields were not given.
#[derive(Debug, Clone, PartialEq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub protocol: Option<Protocol>,
    pub socket: Option<PathBuf>,
    pub vsock_cid: Option<u32>,
    pub vsock_port: Option<u32>,
    pub timeout: Duration,
    pub json: bool,
    pub command: Command,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// --help: of one command, or all of them.
    Help(Option<&'static str>),
    Version,
    Run(Cli),
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "unix" => Ok(Protocol::Unix),
        "vsock" => Ok(Protocol::Vsock),
        _ => Err("expected 'unix' or 'vsock'".into()),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_TIMEOUT_SECS => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a number of seconds greater than 0, at most {MAX_TIMEOUT_SECS}"
        )),
    }
}

fn parse_lines(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_LOG_LINES => Ok(n),
        _ => Err(format!("expected a number from 0 to {MAX_LOG_LINES}")),
    }
}

fn path(s: &str) -> Result<PathBuf, &'static str> {
    if s.is_empty() {
        Err("empty path")
    } else {
        Ok(PathBuf::from(s))
    }
}

/// Parse the arguments (without the program name). Options may stand
/// anywhere, before or after the command words. Errors are usage errors.
pub fn parse_args(args: Vec<OsString>) -> Result<Action, String> {
    let mut p = Arguments::from_vec(args);
    let help = p.contains(["-h", "--help"]);
    if !help && p.contains(["-V", "--version"]) {
        return Ok(Action::Version);
    }
    let e = |opt: &'static str| move |e: pico_args::Error| format!("{opt}: {e}");
    let config = p
        .opt_value_from_fn(["-c", "--config"], path)
        .map_err(e("--config"))?;
    let protocol = p
        .opt_value_from_fn(["-p", "--protocol"], parse_protocol)
        .map_err(e("--protocol"))?;
    let socket = p
        .opt_value_from_fn(["-s", "--socket"], path)
        .map_err(e("--socket"))?;
    let vsock_cid = p
        .opt_value_from_str("--vsock-cid")
        .map_err(e("--vsock-cid"))?;
    let vsock_port = p
        .opt_value_from_str("--vsock-port")
        .map_err(e("--vsock-port"))?;
    let timeout = p
        .opt_value_from_fn("--timeout", parse_timeout)
        .map_err(e("--timeout"))?;
    let json = p.contains("--json");
    let lines = p
        .opt_value_from_fn(["-n", "--lines"], parse_lines)
        .map_err(e("--lines"))?;
    let follow = p.contains(["-f", "--follow"]);
    let since: Option<u64> = p.opt_value_from_str("--since").map_err(e("--since"))?;
    let now = p.contains("--now");
    let all = p.contains("--all");

    let mut words = Vec::new();
    for arg in p.finish() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument is not valid UTF-8: {a:?}"))?;
        if arg.len() > 1 && arg.starts_with('-') {
            return Err(format!("unknown or repeated option '{arg}'"));
        }
        words.push(arg);
    }
    let mut words = words.into_iter();
    let Some(mut cmd) = words.next() else {
        if help {
            return Ok(Action::Help(None));
        }
        return Err("no command given".into());
    };
    let help = help || cmd == "help";
    if cmd == "help" {
        match words.next() {
            Some(c) => cmd = c,
            None => return Ok(Action::Help(None)),
        }
    }
    let Some(usage) = COMMANDS.iter().find(|u| u.name == cmd) else {
        return Err(format!("unknown command '{cmd}'"));
    };
    if help {
        return Ok(Action::Help(Some(usage.name)));
    }
    let mut name = || {
        words
            .next()
            .ok_or_else(|| format!("'{cmd}' needs a service name"))
    };
    let command = match usage.name {
        "list" => Command::List,
        "status" => Command::Status(words.by_ref().collect()),
        "start" => Command::Start(name()?),
        "stop" => Command::Stop(name()?),
        "restart" => Command::Restart(name()?),
        "enable" => Command::Enable { name: name()?, now },
        "disable" => Command::Disable(name()?),
        "logs" => Command::Logs {
            name: words.next(),
            lines: lines.unwrap_or(DEFAULT_LINES),
            follow,
        },
        "logs-clear" => Command::LogsClear(name()?),
        "system-status" => Command::SystemStatus,
        "reload" => Command::Reload,
        "reboot" => Command::Reboot,
        "shutdown" => Command::Shutdown,
        "ping" => Command::Ping,
        "events" => Command::Events { since },
        "metrics" => Command::Metrics,
        other => return Err(format!("unknown command '{other}'")),
    };
    if let Some(extra) = words.next() {
        return Err(format!("unexpected argument '{extra}'"));
    }
    let is_logs = matches!(command, Command::Logs { .. });
    if !is_logs && (lines.is_some() || follow || all) {
        return Err("-n/--lines, -f/--follow and --all go with 'logs' only".into());
    }
    if all && matches!(command, Command::Logs { name: Some(_), .. }) {
        return Err("'logs' takes a service name or --all, not both".into());
    }
    if since.is_some() && !matches!(command, Command::Events { .. }) {
        return Err("--since goes with 'events' only".into());
    }
    if now && !matches!(command, Command::Enable { .. }) {
        return Err("--now goes with 'enable' only".into());
    }
    Ok(Action::Run(Cli {
        config,
        protocol,
        socket,
        vsock_cid,
        vsock_port,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        json,
        command,
    }))
}

/// A config file's text: a regular file (a FIFO is refused, not waited
/// on) of at most `shared::config::MAX_CONFIG_BYTES`.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |what: String| std::io::Error::new(ErrorKind::InvalidData, what);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let max = shared::config::MAX_CONFIG_BYTES;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(bad(format!("larger than {max} bytes")));
    }
    String::from_utf8(buf).map_err(|_| bad("not valid UTF-8".into()))
}

/// Read initctl.yaml. A missing file gives the defaults unless it was
/// given explicitly (`explicit`: -c); an unreadable file, or one that is
/// not YAML or not a mapping, is an error naming the file. A bad value for
/// one key is an error on stderr naming the key, which takes its default;
/// unknown keys are warned about.
pub fn load_config(path: &Path, explicit: bool) -> Result<InitctlConfig, String> {
    let text = match read_bounded(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound && !explicit => {
            return Ok(InitctlConfig::default())
        }
        Err(e) => return Err(format!("cannot read config {}: {e}", path.display())),
    };
    let file = path.display();
    let invalid = |e: String| format!("invalid config {file}: {e}");
    let value = shared::config::yaml_value(&text).map_err(invalid)?;
    if let serde_yaml::Value::Mapping(map) = &value {
        for key in map.keys() {
            let key = key.as_str().unwrap_or_default();
            if !CONFIG_KEYS.contains(&key) {
                write_stderr(&format!(
                    "initctl: warning: {file}: unknown key '{key}' ignored\n"
                ));
            }
        }
    }
    let (config, bad) = shared::config::from_yaml_by_key(&value).map_err(invalid)?;
    for e in bad {
        write_stderr(&format!("initctl: error: {file}: {e}; using its default\n"));
    }
    Ok(config)
}

/// Where to connect: CLI flag > environment (INIT_SOCKET) > file > default.
/// `env` looks up an environment variable (empty counts as unset).
pub fn resolve_endpoint(
    cli: &Cli,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, String> {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let config_path = cli
        .config
        .clone()
        .or_else(|| env("INITCTL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let file = load_config(&config_path, cli.config.is_some())?;
    Ok(match cli.protocol.unwrap_or(file.protocol) {
        Protocol::Unix => Endpoint::Unix(
            cli.socket
                .clone()
                .or_else(|| env("INIT_SOCKET").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(file.unix_socket_path)),
        ),
        Protocol::Vsock => Endpoint::Vsock {
            cid: cli.vsock_cid.unwrap_or(file.vsock_cid),
            port: cli.vsock_port.unwrap_or(file.vsock_port),
        },
    })
}

/// The exit status for a response to a command.
pub fn exit_code(command: &Command, response: &Response) -> i32 {
    match (command, response) {
        (_, Response::Error { .. }) => EXIT_ERROR,
        (_, Response::Success { errors, .. }) if !errors.is_empty() => EXIT_ERROR,
        (Command::Stop(_), Response::Success { message, .. })
            if message.contains(" still stopping") =>
        {
            EXIT_ERROR
        }
        // A oneshot that ran to completion is done, as systemd's
        // "active (exited)": not a failure to report.
        (Command::Status(_), Response::ServiceStatus { status })
            if !status.active && status.state != "exited" =>
        {
            EXIT_INACTIVE
        }
        _ => EXIT_OK,
    }
}

/// Why a run ended early: a message for stderr and an exit status. A
/// closed stdout (`initctl logs -f | head -1`) ends quietly with 0.
pub(crate) struct Fail(i32, String);

pub(crate) fn fail(msg: String) -> Fail {
    Fail(EXIT_FAILURE, msg)
}

pub(crate) fn write_stdout(text: &str) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Fail(EXIT_OK, String::new())),
        Err(e) => Err(fail(format!("cannot write to stdout: {e}"))),
    }
}

/// Unlike eprint!, never panics (say, when stderr is a closed pipe).
pub(crate) fn write_stderr(text: &str) {
    let _ = io::stderr().write_all(text.as_bytes());
}

pub(crate) fn parse_response(line: &str, endpoint: &Endpoint) -> Result<Response, Fail> {
    serde_json::from_str(line).map_err(|e| {
        let shown: String = line.chars().take(200).collect();
        fail(format!(
            "invalid response from init at {endpoint}: {e}: {shown:?}"
        ))
    })
}

/// Print one response (raw with --json) and give its exit status.
fn show(cli: &Cli, line: &str, response: &Response) -> Result<i32, Fail> {
    if cli.json {
        write_stdout(&format!("{line}\n"))?;
    } else {
        let r = match (&cli.command, response) {
            // While following, an empty batch is not worth a word.
            (Command::Logs { follow: true, .. }, Response::ServiceLogs { logs }) => {
                render::Rendered {
                    stdout: render::log_lines(logs),
                    stderr: String::new(),
                }
            }
            (_, Response::Event { event }) => render::Rendered {
                stdout: render::event_line(event),
                stderr: String::new(),
            },
            _ => render::render(response),
        };
        write_stdout(&r.stdout)?;
        write_stderr(&r.stderr);
    }
    Ok(exit_code(&cli.command, response))
}

/// Connect and send `request`; the deadline of the first answer.
pub(crate) fn open(
    cli: &Cli,
    endpoint: &Endpoint,
    request: &Request,
) -> Result<(Conn, Instant), Fail> {
    let deadline = Instant::now() + cli.timeout;
    let mut conn = Conn::connect(endpoint, cli.timeout)
        .map_err(|e| fail(format!("cannot connect to init at {endpoint}: {e}")))?;
    if let Err(e) = conn.send(request, deadline) {
        // init may answer and close before it reads the request (out of
        // fds, too many connections): read what it said.
        if !matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) {
            return Err(fail(format!(
                "cannot send the request to init at {endpoint}: {e}"
            )));
        }
    }
    Ok((conn, deadline))
}

/// The next answer line; `None` when init closed the connection and no
/// answer was due (`deadline: None`, following).
pub(crate) fn read_answer(
    cli: &Cli,
    endpoint: &Endpoint,
    conn: &mut Conn,
    deadline: Option<Instant>,
) -> Result<Option<String>, Fail> {
    match conn.read_line(deadline) {
        Ok(Some(line)) => Ok(Some(line)),
        Ok(None) if deadline.is_none() => Ok(None),
        Ok(None) => Err(fail(format!(
            "init at {endpoint} closed the connection without answering"
        ))),
        Err(e) if e.kind() == ErrorKind::TimedOut => Err(fail(format!(
            "no answer from init at {endpoint} within {:?}",
            cli.timeout
        ))),
        Err(e) => Err(fail(format!("cannot read from init at {endpoint}: {e}"))),
    }
}

/// One request, one answer: the raw line and the response.
pub(crate) fn ask(
    cli: &Cli,
    endpoint: &Endpoint,
    request: &Request,
) -> Result<(String, Response), Fail> {
    let (mut conn, deadline) = open(cli, endpoint, request)?;
    let line = read_answer(cli, endpoint, &mut conn, Some(deadline))?
        .ok_or_else(|| fail(format!("init at {endpoint} closed the connection")))?;
    let response = parse_response(&line, endpoint)?;
    Ok((line, response))
}

/// The command's request, its answer(s) printed; following goes on until
/// init closes the connection or our reader goes away.
fn exchange(cli: &Cli, endpoint: &Endpoint) -> Result<i32, Fail> {
    let (mut conn, deadline) = open(cli, endpoint, &cli.command.request())?;
    let following = matches!(
        cli.command,
        Command::Logs { follow: true, .. } | Command::Events { .. }
    );
    // Events come when they happen: no time limit on the first one.
    let events = matches!(cli.command, Command::Events { .. });
    let mut deadline = (!events).then_some(deadline);
    loop {
        if deadline.is_none() && !conn.has_line() {
            match conn.wait_readable_or_gone(io::stdout().as_fd()) {
                Ok(true) => return Ok(EXIT_OK),
                Ok(false) => {}
                Err(e) => return Err(fail(format!("poll: {e}"))),
            }
        }
        let Some(line) = read_answer(cli, endpoint, &mut conn, deadline)? else {
            return Ok(EXIT_OK);
        };
        let response = parse_response(&line, endpoint)?;
        let code = show(cli, &line, &response)?;
        if !following || code != EXIT_OK {
            return Ok(code);
        }
        // Following: no time limit after the first answer; stop quietly
        // when our reader goes away even if no new line comes.
        deadline = None;
    }
}

/// `status A B ...`: one block each, the worst exit status.
fn status_of(cli: &Cli, endpoint: &Endpoint, names: &[String]) -> Result<i32, Fail> {
    let mut worst = EXIT_OK;
    for (i, name) in names.iter().enumerate() {
        if i > 0 && !cli.json {
            write_stdout("\n")?;
        }
        let request = Request::ServiceStatus { name: name.clone() };
        let (line, response) = ask(cli, endpoint, &request)?;
        // Per name as for one (1 not found, 3 not active): the highest.
        worst = worst.max(show(cli, &line, &response)?);
    }
    Ok(worst)
}

/// `status` without a name: the system status, then the services that are
/// not in their expected state, with why. Exit 3 if there are any.
fn overview(cli: &Cli, endpoint: &Endpoint) -> Result<i32, Fail> {
    let (line, response) = ask(cli, endpoint, &Request::SystemStatus)?;
    let code = show(cli, &line, &response)?;
    if code != EXIT_OK {
        return Ok(code);
    }
    let (line, response) = ask(cli, endpoint, &Request::ListServices)?;
    let services = match response {
        Response::ServiceList { services } => services,
        other => return show(cli, &line, &other),
    };
    if cli.json {
        write_stdout(&format!("{line}\n"))?;
    }
    let trouble: Vec<_> = services
        .iter()
        .filter(|s| TROUBLE.contains(&s.state.as_str()))
        .collect();
    if trouble.is_empty() {
        return Ok(EXIT_OK);
    }
    if !cli.json {
        write_stdout("\nNot in their expected state:\n")?;
    }
    let width = trouble.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in trouble {
        let request = Request::ServiceStatus {
            name: s.name.clone(),
        };
        let (line, response) = ask(cli, endpoint, &request)?;
        if cli.json {
            write_stdout(&format!("{line}\n"))?;
            continue;
        }
        let reason = match &response {
            Response::ServiceStatus { status } => status.reason.clone(),
            _ => None,
        };
        let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        write_stdout(&format!("  {:<width$}  {}{why}\n", s.name, s.state))?;
    }
    Ok(EXIT_INACTIVE)
}

fn run_command(cli: &Cli, endpoint: &Endpoint) -> Result<i32, Fail> {
    match &cli.command {
        Command::Status(names) if names.is_empty() => overview(cli, endpoint),
        Command::Status(names) => status_of(cli, endpoint, names),
        Command::Logs {
            name: None,
            lines,
            follow,
        } => all_logs::run(cli, endpoint, *lines, *follow),
        _ => exchange(cli, endpoint),
    }
}

fn run(args: Vec<OsString>) -> i32 {
    let cli = match parse_args(args) {
        Ok(Action::Run(cli)) => cli,
        Ok(Action::Help(which)) => {
            let text = match COMMANDS.iter().find(|u| Some(u.name) == which) {
                Some(u) => command_help(u),
                None => help(),
            };
            return write_stdout(&text).map_or_else(|f| f.0, |()| EXIT_OK);
        }
        Ok(Action::Version) => {
            let v = format!("initctl {}\n", env!("CARGO_PKG_VERSION"));
            return write_stdout(&v).map_or_else(|f| f.0, |()| EXIT_OK);
        }
        Err(msg) => {
            write_stderr(&format!(
                "initctl: {msg}\nTry 'initctl --help' for more information.\n"
            ));
            return EXIT_USAGE;
        }
    };
    let result = resolve_endpoint(&cli, |k| std::env::var(k).ok())
        .map_err(|msg| Fail(EXIT_USAGE, msg))
        .and_then(|endpoint| run_command(&cli, &endpoint));
    match result {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                write_stderr(&format!("initctl: {msg}\n"));
            }
            code
        }
    }
}

/// The process's entry, called by libc. std's own start-up, skipped here,
/// cost about 100 us of every run (it reads /proc/self/maps to place a
/// stack guard, sets up an alternate signal stack and a panic catch around
/// `main`) and 140 KB of the binary. What of it initctl relies on is done
/// by [`start`]. std's `args_os` works without it (glibc hands the
/// arguments to std's initialiser), and `process::exit` flushes stdout.
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    start();
    std::process::exit(run(std::env::args_os().skip(1).collect()))
}

/// What std's start-up did that initctl needs: fds 0-2 that are closed
/// are opened on /dev/null (else the socket could become stdout and the
/// output go to init), and SIGPIPE is ignored (a reader that went away is
/// an EPIPE, which ends `logs -f` quietly, instead of death by signal).
fn start() {
    use nix::fcntl::{open, OFlag};
    use nix::libc;
    use nix::sys::signal::{signal, SigHandler, Signal};
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes exactly the three pollfds given.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
        let closed = fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0);
        for _ in closed {
            // open takes the lowest free fd: the first closed one left.
            // It stays open for good.
            match open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                Ok(null) => std::mem::forget(null),
                Err(_) => std::process::exit(EXIT_FAILURE),
            }
        }
    }
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

#[cfg(test)]
mod tests;
