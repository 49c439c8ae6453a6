//! Turning responses into the text a person reads, as the seed printed it.

use shared::protocol::{Event, Response, ServiceNote, ServiceStatus, ServiceSummary, SystemStatus};
use std::fmt::Write;

/// What to print for one response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub stdout: String,
    pub stderr: String,
}

pub fn render(response: &Response) -> Rendered {
    let mut out = Rendered::default();
    match response {
        Response::Success { message, errors } if errors.is_empty() => {
            out.stdout = format!("✓ {message}\n")
        }
        Response::Success { message, errors } => {
            // What was done on stdout, each error apart on stderr; the
            // message also ends with them for older clients.
            let all = format!("; errors: {}", errors.join("; "));
            let done = message.strip_suffix(&all).unwrap_or(message);
            out.stdout = format!("✓ {done}\n");
            for e in errors {
                out.stderr.push_str(&format!("✗ Error: {e}\n"));
            }
        }
        Response::Error { message } => out.stderr = format!("✗ Error: {message}\n"),
        Response::ServiceList { services } => out.stdout = list(services),
        Response::ServiceStatus { status } => out.stdout = status_block(status),
        Response::ServiceLogs { logs } if logs.is_empty() => {
            out.stderr = "No logs available\n".into()
        }
        Response::ServiceLogs { logs } => out.stdout = log_lines(logs),
        Response::ServicesLogs { logs } => {
            for l in logs {
                for line in &l.logs {
                    out.stdout.push_str(&format!("{} {line}\n", l.service));
                }
            }
        }
        Response::SystemStatus { status } => out.stdout = system_status(status),
        Response::Pong => out.stdout = "✓ Pong - init system is responsive\n".into(),
        Response::Event { event } => out.stdout = event_line(event),
        Response::Metrics { text } => out.stdout = text.clone(),
    }
    out
}

pub fn log_lines(logs: &[String]) -> String {
    logs.iter().map(|l| format!("{l}\n")).collect()
}

/// The seed's table plus a STATE column: `failed`, `auto-restart` and
/// `invalid` are all "inactive" to ACTIVE. An init that sends no state
/// gets active/inactive there too.
pub fn list(services: &[ServiceSummary]) -> String {
    if services.is_empty() {
        return "No services found\n".into();
    }
    let mut s = format!(
        "{:<25} {:<10} {:<10} {:<15} {:<8} {}\n{}\n",
        "NAME",
        "ENABLED",
        "ACTIVE",
        "RESTART",
        "RESTARTS",
        "STATE",
        "-".repeat(88)
    );
    for svc in services {
        let active = if svc.active { "active" } else { "inactive" };
        let state = if svc.state.is_empty() {
            active
        } else {
            svc.state.as_str()
        };
        let _ = writeln!(
            s,
            "{:<25} {:<10} {:<10} {:<15} {:<8} {}",
            svc.name,
            if svc.enabled { "enabled" } else { "disabled" },
            active,
            svc.restart_policy,
            svc.restart_count,
            state
        );
    }
    s
}

/// `active (running)`, `inactive (dead)`, or the state name when it says
/// more than that (`failed`, `inactive (waiting)`, `active (stopping)`).
fn status_word(st: &ServiceStatus) -> String {
    match (st.active, st.state.as_str()) {
        (true, "" | "running" | "active") => "active (running)".into(),
        (true, state) => format!("active ({state})"),
        (false, "" | "stopped" | "inactive" | "dead") => "inactive (dead)".into(),
        (false, "failed") => "failed".into(),
        (false, "exited") => "done (exited)".into(),
        (false, state) => format!("inactive ({state})"),
    }
}

pub fn status_block(st: &ServiceStatus) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(s, "  {label}: {value}");
    };
    line("Enabled", &if st.enabled { "yes" } else { "no" });
    line("Status", &status_word(st));
    if let Some(reason) = &st.reason {
        line("Reason", reason);
    }
    if let Some(pid) = st.pid {
        line("PID", &pid);
    }
    // An init that predates service types sends none; simple is the default.
    if !matches!(st.service_type.as_str(), "" | "simple") {
        line("Type", &st.service_type);
    }
    if let Some(text) = &st.status_text {
        line("Notify Status", text);
    }
    // An init that predates containment says nothing about it.
    match (&st.cgroup, st.containment.as_str()) {
        (Some(cg), _) => {
            let n = st.cgroup_procs.unwrap_or(0);
            let es = if n == 1 { "" } else { "es" };
            line("CGroup", &format!("{cg} ({n} process{es})"));
        }
        // "cgroup" without one: init has not started anything yet.
        (None, "" | "cgroup") => {}
        (None, how) => line("CGroup", &format!("none ({how} only)")),
    }
    // An invalid file has no command or policy to show: its reason says why.
    if st.state != "invalid" {
        line("Command", &st.exec_start);
        if let Some(wd) = &st.working_directory {
            line("Working Directory", wd);
        }
        line("Restart Policy", &st.restart_policy);
        line("Restart Delay", &format!("{}s", st.restart_sec));
    }
    line("Restart Count", &st.restart_count);
    if let Some(code) = st.exit_status {
        match &st.signal {
            Some(sig) => line("Last Exit Code", &format!("{code} ({sig})")),
            None => line("Last Exit Code", &code),
        }
    }
    let deps = &st.dependencies;
    for (label, names) in [
        ("After", &deps.after),
        ("Requires", &deps.requires),
        ("Before", &deps.before),
        ("Required By", &deps.required_by),
        ("Waiting On", &st.waiting_on),
    ] {
        if !names.is_empty() {
            line(label, &names.join(", "));
        }
    }
    format!("Service: {}\n{s}", st.name)
}

/// `2d 5h 32m 15s`, leaving out leading zero units: `5m 3s`, `0s`.
pub fn uptime(secs: u64) -> String {
    let parts = [
        (secs / 86400, "d"),
        (secs % 86400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn system_status(st: &SystemStatus) -> String {
    format!(
        "System Status\n  Uptime: {}\n  Services: {} total, {} enabled, {} active\n  \
         Service Directory: {}\n  Log Directory: {}\n",
        uptime(st.uptime_secs),
        st.total_services,
        st.enabled_services,
        st.active_services,
        st.service_dir,
        st.log_dir
    )
}

/// One readable line for an event: time, number, then what happened.
pub fn event_line(e: &Event) -> String {
    let mut s = format!("{} #{} ", e.time, e.seq);
    let svc = e.service.as_deref().unwrap_or("");
    match e.kind.as_str() {
        "state" => {
            let _ = write!(
                s,
                "{svc}: {} -> {}",
                e.from.as_deref().unwrap_or("?"),
                e.to.as_deref().unwrap_or("?")
            );
            let mut more = Vec::new();
            if let Some(pid) = e.pid {
                more.push(format!("pid {pid}"));
            }
            if let Some(sig) = &e.signal {
                more.push(format!("killed by {sig}"));
            } else if let Some(c) = e.exit_code {
                more.push(format!("exit code {c}"));
            }
            if let Some(n) = e.restart_count.filter(|n| *n > 0) {
                more.push(format!("restarts {n}"));
            }
            if !more.is_empty() {
                let _ = write!(s, " ({})", more.join(", "));
            }
            if let Some(r) = &e.reason {
                let _ = write!(s, ": {r}");
            }
        }
        "boot-finished" | "final" => {
            let _ = write!(s, "{}", e.kind);
            if let Some(m) = &e.message {
                let _ = write!(s, ": {m}");
            }
            let notes: Vec<String> = e.services.iter().map(note).collect();
            if !notes.is_empty() {
                let _ = write!(s, " [{}]", notes.join("; "));
            }
        }
        kind => {
            let _ = write!(s, "{kind}");
            if !svc.is_empty() {
                let _ = write!(s, " {svc}");
            }
            if let Some(ok) = e.ok {
                let _ = write!(s, " {}", if ok { "ok" } else { "failed" });
            }
            if let Some(m) = e.message.as_ref().or(e.reason.as_ref()) {
                let _ = write!(s, ": {m}");
            }
        }
    }
    // One line, whatever the texts hold.
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.push('\n');
    s
}

fn note(n: &ServiceNote) -> String {
    let mut s = format!("{} {}", n.name, n.state);
    match (&n.signal, n.exit_status) {
        (Some(sig), _) => {
            let _ = write!(s, " killed by {sig}");
        }
        (None, Some(c)) => {
            let _ = write!(s, " exit {c}");
        }
        (None, None) => {}
    }
    if let Some(r) = &n.reason {
        let _ = write!(s, " ({r})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::Dependencies;

    fn summary(name: &str, enabled: bool, active: bool, policy: &str, n: u32) -> ServiceSummary {
        ServiceSummary {
            name: name.into(),
            enabled,
            active,
            restart_policy: policy.into(),
            restart_count: n,
            state: String::new(),
        }
    }

    #[test]
    fn uptime_leaves_out_leading_zero_units() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(5 * 60 + 3), "5m 3s");
        assert_eq!(uptime(3600), "1h 0m 0s");
        assert_eq!(uptime(2 * 86400 + 5 * 3600 + 32 * 60 + 15), "2d 5h 32m 15s");
        assert_eq!(uptime(86400 + 7), "1d 0h 0m 7s");
    }

    #[test]
    fn list_matches_the_seed_table() {
        let mut failed = summary("worker", true, false, "no", 1);
        failed.state = "failed".into();
        let text = list(&[
            summary("webapp", true, true, "always", 3),
            summary("cache", false, false, "on-failure", 0),
            failed,
        ]);
        let expected = "\
NAME                      ENABLED    ACTIVE     RESTART         RESTARTS STATE
----------------------------------------------------------------------------------------
webapp                    enabled    active     always          3        active
cache                     disabled   inactive   on-failure      0        inactive
worker                    enabled    inactive   no              1        failed
";
        assert_eq!(text, expected);
        assert_eq!(list(&[]), "No services found\n");
    }

    fn webapp() -> ServiceStatus {
        ServiceStatus {
            name: "webapp".into(),
            enabled: true,
            active: true,
            pid: Some(1234),
            restart_policy: "always".into(),
            restart_count: 3,
            restart_sec: 5,
            exit_status: Some(0),
            exec_start: "/usr/bin/python3 /app/server.py".into(),
            working_directory: Some("/app".into()),
            dependencies: Dependencies {
                before: vec!["monitor".into()],
                after: vec!["database".into(), "cache".into()],
                requires: vec!["database".into()],
                required_by: vec![],
            },
            state: "running".into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_matches_the_spec_example() {
        let expected = "\
Service: webapp
  Enabled: yes
  Status: active (running)
  PID: 1234
  Command: /usr/bin/python3 /app/server.py
  Working Directory: /app
  Restart Policy: always
  Restart Delay: 5s
  Restart Count: 3
  Last Exit Code: 0
  After: database, cache
  Requires: database
  Before: monitor
";
        assert_eq!(status_block(&webapp()), expected);
    }

    #[test]
    fn status_of_a_failed_service_shows_state_reason_signal_and_waits() {
        let st = ServiceStatus {
            name: "worker".into(),
            enabled: false,
            active: false,
            pid: None,
            restart_policy: "no".into(),
            restart_sec: 2,
            exit_status: Some(137),
            signal: Some("SIGKILL".into()),
            exec_start: "/bin/worker".into(),
            state: "failed".into(),
            reason: Some("killed by SIGKILL".into()),
            waiting_on: vec!["db".into()],
            dependencies: Dependencies {
                required_by: vec!["web".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let expected = "\
Service: worker
  Enabled: no
  Status: failed
  Reason: killed by SIGKILL
  Command: /bin/worker
  Restart Policy: no
  Restart Delay: 2s
  Restart Count: 0
  Last Exit Code: 137 (SIGKILL)
  Required By: web
  Waiting On: db
";
        assert_eq!(status_block(&st), expected);
    }

    #[test]
    fn status_shows_the_containment() {
        let mut st = webapp();
        st.containment = "cgroup".into();
        st.cgroup = Some("/sys/fs/cgroup/init-1/webapp.service".into());
        st.service_type = "notify".into();
        st.status_text = Some("serving".into());
        let b = status_block(&st);
        assert!(
            b.contains("  Type: notify\n") && b.contains("  Notify Status: serving\n"),
            "{b}"
        );
        st.service_type = "simple".into();
        st.status_text = None;
        assert!(!status_block(&st).contains("Type:"));
        st.cgroup_procs = Some(3);
        let text = status_block(&st);
        let want = "  PID: 1234\n  CGroup: /sys/fs/cgroup/init-1/webapp.service (3 processes)\n";
        assert!(text.contains(want), "{text}");
        st.cgroup_procs = Some(1);
        assert!(status_block(&st).contains("(1 process)\n"));
        st.containment = "process group".into();
        st.cgroup = None;
        st.cgroup_procs = None;
        let text = status_block(&st);
        assert!(
            text.contains("  CGroup: none (process group only)\n"),
            "{text}"
        );
    }

    #[test]
    fn status_words() {
        let mut st = ServiceStatus::default();
        assert_eq!(status_word(&st), "inactive (dead)");
        st.state = "stopped".into();
        assert_eq!(status_word(&st), "inactive (dead)");
        st.state = "waiting".into();
        assert_eq!(status_word(&st), "inactive (waiting)");
        st.active = true;
        st.state = String::new();
        assert_eq!(status_word(&st), "active (running)");
        st.state = "stopping".into();
        assert_eq!(status_word(&st), "active (stopping)");
    }

    #[test]
    fn other_responses() {
        let r = render(&Response::ok("Service 'webapp' started"));
        assert_eq!(r.stdout, "✓ Service 'webapp' started\n");
        assert!(r.stderr.is_empty());
        let r = render(&Response::err("no such service"));
        assert_eq!(r.stderr, "✗ Error: no such service\n");
        assert!(r.stdout.is_empty());
        let r = render(&Response::ServiceLogs {
            logs: vec!["a".into(), "b".into()],
        });
        assert_eq!(r.stdout, "a\nb\n");
        let r = render(&Response::ServiceLogs { logs: vec![] });
        assert_eq!(
            (r.stdout.as_str(), r.stderr.as_str()),
            ("", "No logs available\n")
        );
        assert!(render(&Response::Pong).stdout.starts_with("✓ Pong"));
        let r = render(&Response::Success {
            message: "Reloaded: added a; errors: x.service: bad; y.service: worse".into(),
            errors: vec!["x.service: bad".into(), "y.service: worse".into()],
        });
        assert_eq!(r.stdout, "✓ Reloaded: added a\n");
        assert_eq!(
            r.stderr,
            "✗ Error: x.service: bad\n✗ Error: y.service: worse\n"
        );
        let st = SystemStatus {
            uptime_secs: 2 * 86400 + 5 * 3600 + 32 * 60 + 15,
            total_services: 12,
            active_services: 9,
            enabled_services: 10,
            log_dir: "/log".into(),
            service_dir: "/service".into(),
        };
        let expected = "\
System Status
  Uptime: 2d 5h 32m 15s
  Services: 12 total, 10 enabled, 9 active
  Service Directory: /service
  Log Directory: /log
";
        assert_eq!(
            render(&Response::SystemStatus { status: st }).stdout,
            expected
        );
    }
}
