//! initctl: the control client of the enclave init. Sends one JSON request
//! line over a Unix socket or VSOCK and prints the answer.

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
/// init answered with an Error.
pub const EXIT_ERROR: i32 = 1;
/// init unreachable or silent, bad response, bad usage or bad config.
pub const EXIT_FAILURE: i32 = 2;
/// `status` of a service that is not active (like systemctl).
pub const EXIT_INACTIVE: i32 = 3;

const DEFAULT_CONFIG: &str = "/etc/initctl.yaml";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LINES: usize = 50;
/// A year: keeps `Instant::now() + timeout` far from overflowing.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 86400.0;
const CONFIG_KEYS: &[&str] = &["protocol", "unix_socket_path", "vsock_cid", "vsock_port"];

const HELP: &str = "\
initctl - control the enclave init system

Usage: initctl [OPTIONS] <COMMAND> [ARGS]

Commands:
  list                     List all services
  status <SERVICE>         Show a service's status (exit 3 if not active)
  start <SERVICE>          Start a service
  stop <SERVICE>           Stop a service
  restart <SERVICE>        Restart a service
  enable [--now] <SERVICE> Enable a service (--now: also start it)
  disable <SERVICE>        Disable a service
  logs <SERVICE>           Show a service's logs
      -n, --lines <N>      Number of lines (default 50)
      -f, --follow         Keep printing new lines as they arrive
  logs-clear <SERVICE>     Clear a service's logs
  system-status            Show the system status
  reload                   Reload service configurations
  reboot                   Reboot the enclave
  shutdown                 Shut the enclave down
  ping                     Check that init answers
  events                   Print init's events as they happen, until stopped
      --since <N>          First every kept event after number N
  metrics                  Print Prometheus text exposition metrics

Options (anywhere on the line):
  -c, --config <PATH>      Config file [env: INITCTL_CONFIG] [default: /etc/initctl.yaml]
  -p, --protocol <PROTO>   unix or vsock [default: from config]
  -s, --socket <PATH>      Unix socket path [env: INIT_SOCKET] [default: from config]
      --vsock-cid <CID>    VSOCK CID [default: from config]
      --vsock-port <PORT>  VSOCK port [default: from config]
      --timeout <SECONDS>  Bound on connecting and on waiting for the answer [default: 5]
      --json               Print init's raw JSON response line(s)
  -h, --help               Show this help
  -V, --version            Show the version

Exit status: 0 ok, 1 init answered with an error, 2 init unreachable, no
answer in time, bad response, bad usage or bad config, 3 service not active
(status).
";

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    List,
    Status(String),
    Start(String),
    Stop(String),
    Restart(String),
    Enable {
        name: String,
        now: bool,
    },
    Disable(String),
    Logs {
        name: String,
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
    pub fn request(&self) -> Request {
        let name = |n: &String| n.clone();
        match self {
            Command::List => Request::ListServices,
            Command::Status(n) => Request::ServiceStatus { name: name(n) },
            Command::Start(n) => Request::ServiceStart { name: name(n) },
            Command::Stop(n) => Request::ServiceStop { name: name(n) },
            Command::Restart(n) => Request::ServiceRestart { name: name(n) },
            Command::Enable { name: n, now } => Request::ServiceEnable {
                name: name(n),
                now: *now,
            },
            Command::Disable(n) => Request::ServiceDisable { name: name(n) },
            Command::Logs {
                name: n,
                lines,
                follow: false,
            } => Request::ServiceLogs {
                name: name(n),
                lines: *lines,
            },
            Command::Logs {
                name: n,
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
    Help,
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
    if p.contains(["-h", "--help"]) {
        return Ok(Action::Help);
    }
    if p.contains(["-V", "--version"]) {
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
    let now = p.contains("--now");
    let since: Option<u64> = p.opt_value_from_str("--since").map_err(e("--since"))?;

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
    let Some(cmd) = words.next() else {
        return Err("no command given".into());
    };
    let mut name = || {
        words
            .next()
            .ok_or_else(|| format!("'{cmd}' needs a service name"))
    };
    let command = match cmd.as_str() {
        "help" => return Ok(Action::Help),
        "list" => Command::List,
        "status" => Command::Status(name()?),
        "start" => Command::Start(name()?),
        "stop" => Command::Stop(name()?),
        "restart" => Command::Restart(name()?),
        "enable" => Command::Enable { name: name()?, now },
        "disable" => Command::Disable(name()?),
        "logs" => Command::Logs {
            name: name()?,
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
    if !is_logs && (lines.is_some() || follow) {
        return Err("-n/--lines and -f/--follow go with 'logs' only".into());
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

/// Read initctl.yaml. A missing file gives the defaults; an unreadable or
/// invalid one is an error naming the file. Unknown keys are warned about.
pub fn load_config(path: &Path) -> Result<InitctlConfig, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(InitctlConfig::default()),
        Err(e) => return Err(format!("cannot read config {}: {e}", path.display())),
    };
    let invalid = |e: serde_yaml::Error| format!("invalid config {}: {e}", path.display());
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(invalid)?;
    match &value {
        serde_yaml::Value::Null => return Ok(InitctlConfig::default()),
        serde_yaml::Value::Mapping(map) => {
            for key in map.keys() {
                let key = key.as_str().unwrap_or_default();
                if !CONFIG_KEYS.contains(&key) {
                    let file = path.display();
                    write_stderr(&format!(
                        "initctl: warning: {file}: unknown key '{key}' ignored\n"
                    ));
                }
            }
        }
        _ => {}
    }
    serde_yaml::from_value(value).map_err(invalid)
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
    let file = load_config(&config_path)?;
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
        (Command::Status(_), Response::ServiceStatus { status }) if !status.active => EXIT_INACTIVE,
        _ => EXIT_OK,
    }
}

/// Why a run ended early: a message for stderr and an exit status. A
/// closed stdout (`initctl logs -f | head -1`) ends quietly with 0.
struct Fail(i32, String);

fn fail(msg: String) -> Fail {
    Fail(EXIT_FAILURE, msg)
}

fn write_stdout(text: &str) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Fail(EXIT_OK, String::new())),
        Err(e) => Err(fail(format!("cannot write to stdout: {e}"))),
    }
}

/// Unlike eprint!, never panics (say, when stderr is a closed pipe).
fn write_stderr(text: &str) {
    let _ = io::stderr().write_all(text.as_bytes());
}

fn parse_response(line: &str, endpoint: &Endpoint) -> Result<Response, Fail> {
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

fn exchange(cli: &Cli, endpoint: &Endpoint) -> Result<i32, Fail> {
    let deadline = Instant::now() + cli.timeout;
    let mut conn = Conn::connect(endpoint, cli.timeout)
        .map_err(|e| fail(format!("cannot connect to init at {endpoint}: {e}")))?;
    if let Err(e) = conn.send(&cli.command.request(), deadline) {
        // init may answer and close before it reads the request (out of
        // fds, too many connections): read what it said.
        if !matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) {
            return Err(fail(format!(
                "cannot send the request to init at {endpoint}: {e}"
            )));
        }
    }
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
        let line = match conn.read_line(deadline) {
            Ok(Some(line)) => line,
            Ok(None) if deadline.is_none() => return Ok(EXIT_OK),
            Ok(None) => {
                return Err(fail(format!(
                    "init at {endpoint} closed the connection without answering"
                )))
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                return Err(fail(format!(
                    "no answer from init at {endpoint} within {:?}",
                    cli.timeout
                )))
            }
            Err(e) => return Err(fail(format!("cannot read from init at {endpoint}: {e}"))),
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

fn run(args: Vec<OsString>) -> i32 {
    let cli = match parse_args(args) {
        Ok(Action::Run(cli)) => cli,
        Ok(Action::Help) => return write_stdout(HELP).map_or_else(|f| f.0, |()| EXIT_OK),
        Ok(Action::Version) => {
            let v = format!("initctl {}\n", env!("CARGO_PKG_VERSION"));
            return write_stdout(&v).map_or_else(|f| f.0, |()| EXIT_OK);
        }
        Err(msg) => {
            write_stderr(&format!(
                "initctl: {msg}\nTry 'initctl --help' for more information.\n"
            ));
            return EXIT_FAILURE;
        }
    };
    let result = resolve_endpoint(&cli, |k| std::env::var(k).ok())
        .map_err(fail)
        .and_then(|endpoint| exchange(&cli, &endpoint));
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

fn main() {
    std::process::exit(run(std::env::args_os().skip(1).collect()));
}

#[cfg(test)]
mod tests;
