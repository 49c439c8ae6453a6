//! The control protocol: serde's externally tagged enums, unit variants as
//! bare strings (`"Ping"`), one JSON value per request, each response
//! followed by `\n`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    ListServices,
    ServiceStatus {
        name: String,
    },
    ServiceStart {
        name: String,
    },
    ServiceStop {
        name: String,
    },
    ServiceRestart {
        name: String,
    },
    ServiceEnable {
        name: String,
        /// Also start the service (`initctl enable --now`).
        #[serde(default, skip_serializing_if = "is_false")]
        now: bool,
    },
    ServiceDisable {
        name: String,
    },
    ServiceLogs {
        name: String,
        lines: usize,
    },
    ServiceLogsClear {
        name: String,
    },
    /// Answer with the last `lines` lines, then keep the connection open and
    /// send each new line as a `ServiceLogs` response as it arrives.
    ServiceLogsFollow {
        name: String,
        lines: usize,
    },
    /// The same for every service on one connection: first one
    /// `ServicesLogs` with the last `lines` lines of each, then one per
    /// batch of new lines, naming its service (services a reload adds
    /// too). An addition to the seed, for `initctl logs -f` without a
    /// name, where a connection per service ran into the connection limit.
    ServiceLogsFollowAll {
        lines: usize,
    },
    SystemStatus,
    SystemReload,
    SystemReboot,
    SystemShutdown,
    Ping,
    /// Stream events (`Response::Event`, one per line) until the client
    /// closes: those kept after `since` first (or a `lost` event when some
    /// of them are gone), then each new one. Without `since`, new ones only.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// The Prometheus text exposition of init and its services.
    Metrics,
}

impl Request {
    /// Changes nothing: what a read-only connection may send. The one
    /// place that decides it; every request that is not read-only is
    /// written to init.log with who sent it.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Ping
            | Request::ListServices
            | Request::ServiceStatus { .. }
            | Request::SystemStatus
            | Request::ServiceLogs { .. }
            | Request::ServiceLogsFollow { .. }
            | Request::ServiceLogsFollowAll { .. }
            | Request::Events { .. }
            | Request::Metrics => true,
            Request::ServiceStart { .. }
            | Request::ServiceStop { .. }
            | Request::ServiceRestart { .. }
            | Request::ServiceEnable { .. }
            | Request::ServiceDisable { .. }
            | Request::ServiceLogsClear { .. }
            | Request::SystemReload
            | Request::SystemReboot
            | Request::SystemShutdown => false,
        }
    }
}

/// Some lines of one service's log (in `ServicesLogs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceLines {
    pub service: String,
    pub logs: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// A status is much larger than a Pong; responses are short-lived, so the
// size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Success {
        message: String,
        /// What could not be used, each `file: reason` (reload's invalid
        /// files and init.yaml errors). An addition to the seed, left out
        /// when empty; `message` still says it all for older clients.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
    },
    Error {
        message: String,
    },
    ServiceList {
        services: Vec<ServiceSummary>,
    },
    ServiceStatus {
        status: ServiceStatus,
    },
    ServiceLogs {
        logs: Vec<String>,
    },
    /// Lines of several services, each batch with its service's name
    /// (`ServiceLogsFollowAll`).
    ServicesLogs {
        logs: Vec<ServiceLines>,
    },
    SystemStatus {
        status: SystemStatus,
    },
    Pong,
    /// One event of an `Events` stream (boxed: an event is much larger
    /// than most responses; the JSON is the same).
    Event {
        event: Box<Event>,
    },
    /// The answer to `Metrics`: Prometheus text exposition format 0.0.4.
    Metrics {
        text: String,
    },
}

/// Something that happened in init: the same fields for every kind, those
/// that do not apply left out (null when read). `kind` is one of:
/// `state` (a service changed state: `from`, `to`, `pid`, `exit_code` or
/// `signal` when a process ended, `reason`, `restart_count`), `ready`,
/// `start-limit`, `enable`, `disable`, `reload` (`ok`, `message`),
/// `boot-finished` (`services`: those that did not come up), `shutdown`,
/// `reboot`, `final` (`services`: each one's last exit, just before init
/// ends), and `lost` (`lost` events after `since` are no longer kept).
/// A client should ignore kinds it does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1 for the first event of a boot, then one more for each.
    pub seq: u64,
    /// Wall-clock time, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `/proc/sys/kernel/random/boot_id` (empty if unreadable).
    pub boot_id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The code a process exited with (not set when a signal ended it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended a process, e.g. `SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
    /// Whether an enable, disable or reload worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceNote>,
    /// How many events were lost (`lost` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

/// One service in a `boot-finished` or `final` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceNote {
    pub name: String,
    pub state: String,
    /// Exit code, or 128+N for death by signal N; null if it never ended.
    #[serde(default)]
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Success {
            message: message.into(),
            errors: Vec::new(),
        }
    }
    pub fn err(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub enabled: bool,
    pub active: bool,
    pub restart_policy: String,
    pub restart_count: u32,
    /// One of the state names (`running`, `failed`, ...); an addition to the seed.
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dependencies {
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub required_by: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub enabled: bool,
    pub active: bool,
    pub pid: Option<u32>,
    pub restart_policy: String,
    pub restart_count: u32,
    pub restart_sec: u64,
    /// Exit code, or 128+N for death by signal N.
    pub exit_status: Option<i32>,
    pub exec_start: String,
    pub working_directory: Option<String>,
    pub dependencies: Dependencies,
    // Additions to the seed's fields.
    #[serde(default)]
    pub state: String,
    /// Name of the signal that ended the last run, e.g. `SIGKILL`.
    #[serde(default)]
    pub signal: Option<String>,
    /// Why the service is failed, invalid or waiting.
    #[serde(default)]
    pub reason: Option<String>,
    /// Required services this one waits for before it can start.
    #[serde(default)]
    pub waiting_on: Vec<String>,
    #[serde(default)]
    pub timeout_stop_sec: u64,
    #[serde(default)]
    pub log_dropped_lines: u64,
    #[serde(default)]
    pub log_dropped_bytes: u64,
    /// How the service's processes are held together: `cgroup`, or
    /// `process group` where init has no cgroup2 to use.
    #[serde(default)]
    pub containment: String,
    /// The service's cgroup directory; null without cgroups.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// How many processes are in that cgroup now; null without cgroups.
    #[serde(default)]
    pub cgroup_procs: Option<u32>,
    /// `Type`: simple, notify or oneshot.
    #[serde(default)]
    pub service_type: String,
    /// The last `STATUS=` a notify service sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemStatus {
    pub uptime_secs: u64,
    pub total_services: usize,
    pub active_services: usize,
    pub enabled_services: usize,
    pub log_dir: String,
    pub service_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_every_log_on_one_connection() {
        let r: Request = serde_json::from_str(r#"{"ServiceLogsFollowAll":{"lines":5}}"#).unwrap();
        assert_eq!(r, Request::ServiceLogsFollowAll { lines: 5 });
        assert!(r.is_read_only());
        let a = Response::ServicesLogs {
            logs: vec![ServiceLines {
                service: "a".into(),
                logs: vec!["x".into()],
            }],
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"ServicesLogs":{"logs":[{"service":"a","logs":["x"]}]}}"#
        );
    }

    #[test]
    fn wire_format_matches_the_seed() {
        assert_eq!(serde_json::to_string(&Request::Ping).unwrap(), r#""Ping""#);
        assert_eq!(
            serde_json::to_string(&Request::ServiceStatus { name: "a".into() }).unwrap(),
            r#"{"ServiceStatus":{"name":"a"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::ServiceEnable {
                name: "a".into(),
                now: false
            })
            .unwrap(),
            r#"{"ServiceEnable":{"name":"a"}}"#
        );
        let r: Request = serde_json::from_str(r#"{"ServiceLogs":{"name":"x","lines":5}}"#).unwrap();
        assert_eq!(
            r,
            Request::ServiceLogs {
                name: "x".into(),
                lines: 5
            }
        );
        assert_eq!(serde_json::to_string(&Response::Pong).unwrap(), r#""Pong""#);
        let r: Request = serde_json::from_str(r#"{"Events":{}}"#).unwrap();
        assert_eq!(r, Request::Events { since: None });
        let r: Request = serde_json::from_str(r#"{"Events":{"since":7}}"#).unwrap();
        assert_eq!(r, Request::Events { since: Some(7) });
        assert_eq!(
            serde_json::to_string(&Request::Metrics).unwrap(),
            r#""Metrics""#
        );
        let e: Response = serde_json::from_str(
            r#"{"Event":{"event":{"seq":1,"time":"t","boot_id":"b","kind":"new-kind","extra":1}}}"#,
        )
        .unwrap();
        assert!(
            matches!(e, Response::Event { event } if event.kind == "new-kind" && event.seq == 1)
        );
        assert_eq!(
            serde_json::to_string(&Response::err("no")).unwrap(),
            r#"{"Error":{"message":"no"}}"#
        );
    }

    /// The seed's Response, as an older initctl decodes it.
    #[derive(Debug, PartialEq, Deserialize)]
    enum SeedResponse {
        Success { message: String },
    }

    #[test]
    fn success_with_errors_still_decodes_as_the_seed_shape() {
        let plain = serde_json::to_string(&Response::ok("done")).unwrap();
        assert_eq!(plain, r#"{"Success":{"message":"done"}}"#);
        let r = Response::Success {
            message: "Reloaded; errors: a.service: bad".into(),
            errors: vec!["a.service: bad".into()],
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"Success":{"message":"Reloaded; errors: a.service: bad","errors":["a.service: bad"]}}"#
        );
        let old: SeedResponse = serde_json::from_str(&line).unwrap();
        assert_eq!(
            old,
            SeedResponse::Success {
                message: "Reloaded; errors: a.service: bad".into()
            }
        );
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        let seed: Response = serde_json::from_str(r#"{"Success":{"message":"x"}}"#).unwrap();
        assert_eq!(seed, Response::ok("x"));
    }

    #[test]
    fn a_status_without_the_later_fields_still_parses() {
        let seed = r#"{"name":"a","enabled":true,"active":false,"pid":null,
            "restart_policy":"no","restart_count":0,"restart_sec":0,"exit_status":null,
            "exec_start":"/bin/true","working_directory":null,"dependencies":
            {"before":[],"after":[],"requires":[],"required_by":[]}}"#;
        let st: ServiceStatus = serde_json::from_str(seed).unwrap();
        assert_eq!(st.name, "a");
        assert_eq!((st.cgroup, st.cgroup_procs), (None, None));
        assert_eq!(st.containment, "");
    }
}
