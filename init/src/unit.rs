//! Service definitions: `<name>.service` TOML files in `service_dir`.
//! Each file is read as a plain file of at most [`MAX_FILE_BYTES`] (a FIFO,
//! a device or a huge file is refused, never waited on or read into memory),
//! and every duration key is bounded by [`MAX_DURATION_SEC`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest service file (and init.yaml) init reads: 64 KiB, so that no
/// file's parsed value can take much memory (see
/// `shared::config::MAX_CONFIG_BYTES`).
pub const MAX_FILE_BYTES: u64 = shared::config::MAX_CONFIG_BYTES;

/// Largest `RestartSec`, `TimeoutStopSec`, `StartLimitIntervalSec`,
/// `TimeoutStartSec` and `WatchdogSec`: one year. Larger values are an error at load, so every deadline init computes
/// from them is representable.
pub const MAX_DURATION_SEC: u64 = 365 * 24 * 3600;

/// The text of a service file (or init.yaml): a plain file, followed through
/// a symlink, of at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> std::io::Result<String> {
    crate::sys::read_regular(path, MAX_FILE_BYTES)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure,
    OnSuccess,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::OnSuccess => "on-success",
        }
    }

    /// Should a run that ended with `success` be restarted?
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::OnSuccess => success,
        }
    }
}

/// `Type`: when a started service counts as up (dependents start, `start`
/// answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Up once exec'd (the seed's behaviour).
    Simple,
    /// Up once it sends `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// Runs to completion; up (`exited`) once it exited 0.
    Oneshot,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Simple => "simple",
            Kind::Notify => "notify",
            Kind::Oneshot => "oneshot",
        }
    }
}

/// `SuccessAction` / `FailureAction`: what the system does when the service
/// ends for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndAction {
    None,
    Poweroff,
    Reboot,
}

/// The default `TimeoutStartSec` of a notify service (a oneshot has none
/// unless set).
pub const DEFAULT_TIMEOUT_START_SEC: u64 = 90;

/// The file as written; keys as the seed, plus the later ones.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUnit {
    exec_start: Option<String>,
    #[serde(default)]
    environment: Vec<String>,
    restart: Option<RestartPolicy>,
    restart_sec: Option<u64>,
    working_directory: Option<String>,
    service_enable: Option<bool>,
    #[serde(default)]
    before: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    required_by: Vec<String>,
    timeout_stop_sec: Option<u64>,
    start_limit_burst: Option<u32>,
    start_limit_interval_sec: Option<u64>,
    #[serde(rename = "Type")]
    kind: Option<Kind>,
    timeout_start_sec: Option<u64>,
    watchdog_sec: Option<u64>,
    success_action: Option<EndAction>,
    failure_action: Option<EndAction>,
    user: Option<StrOrNum>,
    group: Option<StrOrNum>,
    #[serde(default)]
    supplementary_groups: Vec<StrOrNum>,
    kill_signal: Option<StrOrNum>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// A name or a number (`User = "app"` or `User = 1000`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(u32),
}

impl StrOrNum {
    fn text(self) -> String {
        match self {
            StrOrNum::Str(s) => s,
            StrOrNum::Num(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub exec_start: String,
    pub argv: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub restart: RestartPolicy,
    pub restart_sec: u64,
    pub working_directory: Option<String>,
    pub service_enable: bool,
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub required_by: Vec<String>,
    pub timeout_stop_sec: u64,
    pub start_limit_burst: u32,
    pub start_limit_interval_sec: u64,
    pub kind: Kind,
    /// How long a notify (or oneshot) service may take to be up; None: no
    /// limit.
    pub timeout_start_sec: Option<u64>,
    /// A notify service must send `WATCHDOG=1` this often once ready (0: off).
    pub watchdog_sec: u64,
    pub success_action: EndAction,
    pub failure_action: EndAction,
    /// `User`, `Group`, `SupplementaryGroups`; None: as init (root).
    pub run_as: Option<crate::users::RunAs>,
    /// Sent to stop the service (SIGKILL follows at `TimeoutStopSec`).
    pub kill_signal: nix::sys::signal::Signal,
}

/// Parse a service file's text. Unknown keys are returned as warnings.
pub fn parse(text: &str) -> Result<(ServiceDef, Vec<String>), String> {
    let raw: RawUnit = toml::from_str(text).map_err(|e| clip(e.to_string().trim()))?;
    let exec_start = raw
        .exec_start
        .filter(|s| !s.trim().is_empty())
        .ok_or("missing required key ExecStart")?;
    let argv = split_command(&exec_start).map_err(|e| format!("ExecStart: {e}"))?;
    let mut environment = Vec::new();
    for entry in raw.environment {
        match entry.split_once('=') {
            Some((k, v)) if !k.is_empty() => environment.push((k.to_string(), v.to_string())),
            _ => return Err(format!("Environment: '{entry}' is not KEY=VALUE")),
        }
    }
    let duration = |key: &str, v: Option<u64>, default: u64| match v {
        Some(v) if v > MAX_DURATION_SEC => Err(format!(
            "{key}: {v} is more than the maximum {MAX_DURATION_SEC} (one year)"
        )),
        v => Ok(v.unwrap_or(default)),
    };
    let restart_sec = duration("RestartSec", raw.restart_sec, 5)?;
    let timeout_stop_sec = duration("TimeoutStopSec", raw.timeout_stop_sec, 10)?;
    let start_limit_interval_sec =
        duration("StartLimitIntervalSec", raw.start_limit_interval_sec, 10)?;
    let kind = raw.kind.unwrap_or(Kind::Simple);
    let timeout_start_sec = match (raw.timeout_start_sec, kind) {
        // 0 means no limit, as in systemd.
        (Some(0), _) => None,
        (Some(v), _) => Some(duration("TimeoutStartSec", Some(v), 0)?),
        (None, Kind::Notify) => Some(DEFAULT_TIMEOUT_START_SEC),
        (None, Kind::Simple | Kind::Oneshot) => None,
    };
    let watchdog_sec = duration("WatchdogSec", raw.watchdog_sec, 0)?;
    let user = raw.user.map(StrOrNum::text);
    let group = raw.group.map(StrOrNum::text);
    let supplementary: Vec<String> = raw
        .supplementary_groups
        .into_iter()
        .map(StrOrNum::text)
        .collect();
    let run_as = crate::users::resolve(user.as_deref(), group.as_deref(), &supplementary)?;
    let kill_signal = match raw.kill_signal.map(StrOrNum::text) {
        None => nix::sys::signal::Signal::SIGTERM,
        Some(s) => parse_signal(&s).ok_or(format!("KillSignal: unknown signal '{s}'"))?,
    };
    let warnings = raw
        .unknown
        .keys()
        .map(|k| format!("unknown key '{k}' ignored"))
        .collect();
    Ok((
        ServiceDef {
            exec_start,
            argv,
            environment,
            restart: raw.restart.unwrap_or(RestartPolicy::No),
            restart_sec,
            working_directory: raw.working_directory,
            service_enable: raw.service_enable.unwrap_or(true),
            before: raw.before,
            after: raw.after,
            requires: raw.requires,
            required_by: raw.required_by,
            timeout_stop_sec,
            start_limit_burst: raw.start_limit_burst.unwrap_or(5),
            start_limit_interval_sec,
            kind,
            timeout_start_sec,
            watchdog_sec,
            success_action: raw.success_action.unwrap_or(EndAction::None),
            failure_action: raw.failure_action.unwrap_or(EndAction::None),
            run_as,
            kill_signal,
        },
        warnings,
    ))
}

/// `SIGINT`, `INT` or `2`.
fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// An error message short enough for a status line: toml quotes the
/// offending source line, which may be huge.
fn clip(msg: &str) -> String {
    const MAX: usize = 400;
    match msg.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &msg[..cut]),
        None => msg.to_string(),
    }
}

/// Split a command line with shell-style quoting: whitespace separates,
/// '...' is literal, "..." allows \" \\ \$ \` escapes, \x outside quotes
/// is x. No expansion of any kind.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unbalanced single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unbalanced double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unbalanced double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err("empty command".into());
    }
    Ok(out)
}

/// A service name is the file stem: `[A-Za-z0-9@._-]+`, no `..`, and not
/// `init` (which names init's own log).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c))
    {
        return Err(format!(
            "invalid service name '{name}': use letters, digits and @ . _ -"
        ));
    }
    if name.contains("..") || name == "." {
        return Err(format!(
            "invalid service name '{name}': '..' is not allowed"
        ));
    }
    if name == "init" {
        return Err("invalid service name 'init': reserved for init's own log".into());
    }
    Ok(())
}

/// One file found in the service directory.
#[derive(Debug, Clone)]
pub struct UnitFile {
    pub name: String,
    pub path: PathBuf,
    /// `.service` (true) or `.service.disabled` (false).
    pub file_enabled: bool,
    pub def: Result<ServiceDef, String>,
    pub warnings: Vec<String>,
}

impl UnitFile {
    /// Enabled = `.service` file and `ServiceEnable` not false.
    pub fn enabled(&self) -> bool {
        self.file_enabled && self.def.as_ref().map_or(true, |d| d.service_enable)
    }
}

pub fn unit_path(dir: &Path, name: &str, enabled: bool) -> PathBuf {
    dir.join(if enabled {
        format!("{name}.service")
    } else {
        format!("{name}.service.disabled")
    })
}

/// Read every `*.service` and `*.service.disabled` in `dir`, sorted by name.
/// Problems with the directory itself are returned as the error.
pub fn scan(dir: &Path) -> Result<Vec<UnitFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut by_name: BTreeMap<String, UnitFile> = BTreeMap::new();
    let mut dup_warnings = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(fname) = file_name.to_str() else {
            continue;
        };
        let (name, file_enabled) = if let Some(n) = fname.strip_suffix(".service") {
            (n, true)
        } else if let Some(n) = fname.strip_suffix(".service.disabled") {
            (n, false)
        } else {
            continue;
        };
        let path = entry.path();
        let (def, warnings) = match validate_name(name) {
            Err(e) => (Err(e), Vec::new()),
            Ok(()) => match read_file(&path) {
                Err(e) => (Err(format!("cannot read: {e}")), Vec::new()),
                Ok(text) => match parse(&text) {
                    Ok((d, w)) => (Ok(d), w),
                    Err(e) => (Err(e), Vec::new()),
                },
            },
        };
        let unit = UnitFile {
            name: name.to_string(),
            path,
            file_enabled,
            def,
            warnings,
        };
        match by_name.get(name) {
            Some(existing) if existing.file_enabled => {
                dup_warnings.push((name.to_string(), fname.to_string()));
            }
            Some(_) => {
                dup_warnings.push((name.to_string(), format!("{name}.service.disabled")));
                by_name.insert(name.to_string(), unit);
            }
            None => {
                by_name.insert(name.to_string(), unit);
            }
        }
    }
    for (name, ignored) in dup_warnings {
        if let Some(u) = by_name.get_mut(&name) {
            u.warnings.push(format!(
                "both {name}.service and {name}.service.disabled exist; {ignored} ignored"
            ));
        }
    }
    Ok(by_name.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_command(r#"/bin/sh -c 'echo "a b"; exit 3' x\ y "q\"z""#).unwrap(),
            vec!["/bin/sh", "-c", "echo \"a b\"; exit 3", "x y", "q\"z"]
        );
        assert_eq!(split_command("a ''").unwrap(), vec!["a", ""]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn parses_the_seed_example() {
        let (d, w) = parse(
            r#"ExecStart = "/usr/bin/myapp --port 8080"
Environment = ["A=1", "B=x=y"]
Restart = "on-failure"
RestartSec = 10
After = ["database"]
Bogus = 1
"#,
        )
        .unwrap();
        assert_eq!(d.argv, vec!["/usr/bin/myapp", "--port", "8080"]);
        assert_eq!(d.environment[1], ("B".into(), "x=y".into()));
        assert_eq!(d.restart, RestartPolicy::OnFailure);
        assert_eq!(d.restart_sec, 10);
        assert_eq!(d.timeout_stop_sec, 10);
        assert_eq!(d.start_limit_burst, 5);
        assert_eq!(w, vec!["unknown key 'Bogus' ignored".to_string()]);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse("Restart = \"no\"").unwrap_err().contains("ExecStart"));
        assert!(parse("ExecStart = \"x\"\nRestart = \"sometimes\"").is_err());
        assert!(parse("ExecStart = \"x\"\nRestartSec = -1").is_err());
        assert!(parse("ExecStart = \"x\"\nEnvironment = [\"NOEQ\"]").is_err());
        assert!(parse("ExecStart = [").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        for key in ["RestartSec", "TimeoutStopSec", "StartLimitIntervalSec"] {
            let (d, _) = parse(&format!("ExecStart = \"x\"\n{key} = 31536000")).unwrap();
            let secs = [
                d.restart_sec,
                d.timeout_stop_sec,
                d.start_limit_interval_sec,
            ];
            assert!(secs.contains(&MAX_DURATION_SEC), "{key}");
            for v in [31_536_001, i64::MAX] {
                let e = parse(&format!("ExecStart = \"x\"\n{key} = {v}")).unwrap_err();
                assert_eq!(
                    e,
                    format!("{key}: {v} is more than the maximum 31536000 (one year)")
                );
            }
        }
    }

    #[test]
    fn huge_errors_are_clipped() {
        let text = format!("ExecStart = \"x\"\nA = {}", "[".repeat(100_000));
        let e = parse(&text).unwrap_err();
        assert!(e.len() < 500, "{}", e.len());
    }

    #[test]
    fn names() {
        assert!(validate_name("web-app_1@x.y").is_ok());
        for bad in ["", "../x", "a/b", "..", "a..b", "sp ace", "init"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        use RestartPolicy::*;
        assert!(!No.restarts(true) && !No.restarts(false));
        assert!(Always.restarts(true) && Always.restarts(false));
        assert!(!OnFailure.restarts(true) && OnFailure.restarts(false));
        assert!(OnSuccess.restarts(true) && !OnSuccess.restarts(false));
    }
}
