//! `initctl metrics`: init's and its services' figures as the Prometheus
//! text exposition format (0.0.4), every name prefixed `enclave_init_`,
//! each with its HELP and TYPE lines, label values escaped. This module
//! owns the names and the text, and reading init's own RSS and open fds
//! from /proc (never blocking); the supervisor and the clients hand it the
//! rest.

use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Default)]
pub struct InitFigures {
    pub uptime_secs: f64,
    pub log_dropped_lines: u64,
    pub log_dropped_bytes: u64,
    /// Children init reaped that were no service's main process.
    pub orphans_reaped: u64,
}

#[derive(Debug)]
pub struct ServiceFigures {
    pub name: String,
    pub up: bool,
    pub state: &'static str,
    pub restarts: u32,
    /// Exit code, or 128+N for death by signal N.
    pub last_exit: Option<i32>,
    pub since_change_secs: f64,
    pub log_dropped_lines: u64,
}

/// The text for the supervisor's figures (the clients add theirs with
/// `refused`).
pub fn render(init: &InitFigures, services: &[ServiceFigures]) -> String {
    let mut t = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(t, "# HELP enclave_init_{name} {help}");
        let _ = writeln!(t, "# TYPE enclave_init_{name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(t, "enclave_init_{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since init started.",
        &one(format!("{:.3}", init.uptime_secs)),
    );
    if let Some(rss) = rss_bytes() {
        metric(
            "resident_memory_bytes",
            "gauge",
            "init's resident set size.",
            &one(rss.to_string()),
        );
    }
    if let Some(n) = open_fds() {
        metric(
            "open_fds",
            "gauge",
            "File descriptors init has open.",
            &one(n.to_string()),
        );
    }
    metric(
        "log_dropped_lines_total",
        "counter",
        "Service log lines dropped because they could not be written.",
        &one(init.log_dropped_lines.to_string()),
    );
    metric(
        "log_dropped_bytes_total",
        "counter",
        "Service log bytes dropped because they could not be written.",
        &one(init.log_dropped_bytes.to_string()),
    );
    metric(
        "orphans_reaped_total",
        "counter",
        "Orphaned processes init reaped (each logged only for the first few in 10 s).",
        &one(init.orphans_reaped.to_string()),
    );
    let per = |f: &dyn Fn(&ServiceFigures) -> Option<String>| -> Vec<(String, String)> {
        services
            .iter()
            .filter_map(|s| f(s).map(|v| (labels(&[("service", &s.name)]), v)))
            .collect()
    };
    metric(
        "service_up",
        "gauge",
        "1 if a process of the service is alive.",
        &per(&|s| Some(u8::from(s.up).to_string())),
    );
    let states: Vec<(String, String)> = services
        .iter()
        .map(|s| {
            (
                labels(&[("service", &s.name), ("state", s.state)]),
                "1".into(),
            )
        })
        .collect();
    metric(
        "service_state",
        "gauge",
        "The service's current state (the series with value 1).",
        &states,
    );
    metric(
        "service_restarts_total",
        "counter",
        "Automatic restarts of the service.",
        &per(&|s| Some(s.restarts.to_string())),
    );
    metric(
        "service_last_exit_status",
        "gauge",
        "Exit code of the service's last run, or 128+N for death by signal N.",
        &per(&|s| s.last_exit.map(|c| c.to_string())),
    );
    metric(
        "service_seconds_since_state_change",
        "gauge",
        "Seconds since the service's state last changed (or init started).",
        &per(&|s| Some(format!("{:.3}", s.since_change_secs))),
    );
    metric(
        "service_log_dropped_lines_total",
        "counter",
        "Log lines of the service dropped because they could not be written.",
        &per(&|s| Some(s.log_dropped_lines.to_string())),
    );
    t
}

/// The clients' figure: connections refused, by transport.
pub fn refused(t: &mut String, unix: u64, vsock: u64) {
    let name = "enclave_init_connections_refused_total";
    let _ = writeln!(t, "# HELP {name} Control connections refused.");
    let _ = writeln!(t, "# TYPE {name} counter");
    for (tr, n) in [("unix", unix), ("vsock", vsock)] {
        let _ = writeln!(t, "{name}{} {n}", labels(&[("transport", tr)]));
    }
}

/// `{a="x",b="y"}` with each value escaped (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// VmRSS of /proc/self/status, in bytes.
fn rss_bytes() -> Option<u64> {
    let status = crate::sys::read_regular(Path::new("/proc/self/status"), 64 * 1024).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Entries of /proc/self/fd (the directory's own fd included while it is
/// read, so one is taken off).
fn open_fds() -> Option<usize> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let init = InitFigures {
            uptime_secs: 1.5,
            ..InitFigures::default()
        };
        let services = vec![ServiceFigures {
            name: "we\"ird\\na\nme".into(),
            up: true,
            state: "running",
            restarts: 3,
            last_exit: Some(137),
            since_change_secs: 2.0,
            log_dropped_lines: 0,
        }];
        let mut t = render(&init, &services);
        refused(&mut t, 1, 2);
        for l in t.lines() {
            assert!(
                l.starts_with("# HELP enclave_init_")
                    || l.starts_with("# TYPE enclave_init_")
                    || l.starts_with("enclave_init_"),
                "{l}"
            );
            if !l.starts_with('#') {
                let (_, value) = l.rsplit_once(' ').unwrap();
                value.parse::<f64>().unwrap();
            }
        }
        assert!(
            t.contains("enclave_init_service_restarts_total{service=\"we\\\"ird\\\\na\\nme\"} 3\n")
        );
        assert!(t.contains("enclave_init_service_last_exit_status{service="));
        assert!(t.contains("enclave_init_connections_refused_total{transport=\"vsock\"} 2\n"));
        assert!(t.contains("enclave_init_uptime_seconds 1.500\n"));
        assert!(t.contains("enclave_init_orphans_reaped_total 0\n"));
        assert!(t.contains("enclave_init_open_fds "));
        assert!(t.contains("enclave_init_resident_memory_bytes "));
    }
}
