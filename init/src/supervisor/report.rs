//! What the supervisor tells about itself: events (recorded in
//! `crate::events` and pushed to every follower of events, one copy for
//! all) and the figures of `initctl metrics` (rendered by
//! `crate::metrics`). Every state change goes through `emit_state` (which
//! also says when a notify service became ready), called from the one place
//! a machine changes (`Supervisor::feed`).

use super::table::Service;
use super::{ClientId, Ending, Out, Reply, Supervisor};
use crate::metrics::{InitFigures, ServiceFigures};
use crate::os::{Exit, Os};
use crate::service::State;
use shared::protocol::{Event, Response, ServiceNote};
use std::time::SystemTime;

/// A service that is up, as boot-finished counts it.
fn came_up(s: &State) -> bool {
    matches!(s, State::Running | State::Exited)
}

/// Still on its way up or down: boot has not settled.
fn settling(s: &State) -> bool {
    matches!(s, State::Waiting { .. } | State::Starting | State::Stopping)
}

impl<O: Os> Supervisor<O> {
    /// Record an event and push it to the followers of events.
    pub(super) fn emit(&mut self, e: Event) {
        let e = self.events.record(e, SystemTime::now());
        if !self.event_followers.is_empty() {
            let to = self.event_followers.iter().copied().collect();
            self.out
                .push(Out::Broadcast(to, Response::Event { event: Box::new(e) }));
        }
    }

    /// `client` follows events: the kept ones after `since` first (none
    /// without it), then each new one.
    pub(super) fn follow_events(&mut self, client: ClientId, since: Option<u64>) -> Reply {
        let first = since.map(|n| self.events.after(n)).unwrap_or_default();
        self.event_followers.insert(client);
        Reply::Stream(
            first
                .into_iter()
                .map(|event| Response::Event {
                    event: Box::new(event),
                })
                .collect(),
        )
    }

    /// A service changed state from `from` (and its process ended with
    /// `exit`, if that was the cause). A failure by the start limit is
    /// also a `start-limit` event.
    pub(super) fn emit_state(&mut self, id: usize, from: &str, exit: Option<Exit>) {
        let Some(s) = self.table.get(id) else {
            return;
        };
        let m = s.m();
        let pid = s
            .proc_()
            .map(|p| p.pid.as_raw())
            .or(exit.and(s.last_pid))
            .and_then(|p| u32::try_from(p).ok());
        let reason = m.reason();
        let e = Event {
            kind: "state".into(),
            service: Some(s.name.clone()),
            from: Some(from.into()),
            to: Some(s.state().name().into()),
            pid,
            exit_code: exit.filter(|e| e.signal.is_none()).map(|e| e.code),
            signal: exit.and_then(|e| e.signal).map(crate::os::signal_name),
            reason: reason.clone(),
            restart_count: Some(m.restart_count()),
            ..Event::default()
        };
        // The machine's reason for a start-limit failure says so.
        let limit = (*s.state() == State::Failed
            && reason
                .as_deref()
                .is_some_and(|r| r.starts_with("start limit hit")))
        .then(|| Event {
            kind: "start-limit".into(),
            service: Some(s.name.clone()),
            reason,
            restart_count: Some(m.restart_count()),
            ..Event::default()
        });
        // A notify service that left `starting` for `running` is ready.
        let ready = from == State::Starting.name() && *s.state() == State::Running;
        self.emit(e);
        if let Some(l) = limit {
            self.emit(l);
        }
        if ready {
            self.emit_ready(id);
        }
    }

    /// A notify service said it is ready.
    fn emit_ready(&mut self, id: usize) {
        let Some(s) = self.table.get(id) else {
            return;
        };
        let e = Event {
            kind: "ready".into(),
            service: Some(s.name.clone()),
            pid: s.proc_().and_then(|p| u32::try_from(p.pid.as_raw()).ok()),
            ..Event::default()
        };
        self.emit(e);
    }

    /// The result of an enable, disable or reload (`kind`).
    pub(super) fn emit_result(&mut self, kind: &str, service: Option<&str>, r: &Response) {
        let (ok, message) = match r {
            Response::Success { message, errors } => (errors.is_empty(), message.clone()),
            Response::Error { message } => (false, message.clone()),
            _ => return,
        };
        self.emit(Event {
            kind: kind.into(),
            service: service.map(String::from),
            ok: Some(ok),
            message: Some(message),
            ..Event::default()
        });
    }

    pub(super) fn emit_ending(&mut self, how: Ending) {
        self.boot_reported = true;
        let kind = match how {
            Ending::PowerOff => "shutdown",
            Ending::Reboot => "reboot",
        };
        self.emit(Event {
            kind: kind.into(),
            ..Event::default()
        });
    }

    /// The listed services `pick` picks: name, state, last exit.
    fn notes(&self, pick: impl Fn(&Service) -> bool) -> Vec<ServiceNote> {
        self.table
            .listed()
            .filter(|(_, s)| pick(s))
            .map(|(_, s)| {
                let exit = s.m().last_exit();
                ServiceNote {
                    name: s.name.clone(),
                    state: s.state().name().into(),
                    exit_status: exit.map(|e| e.code),
                    signal: exit.and_then(|e| e.signal).map(crate::os::signal_name),
                    reason: s.load_error.clone().or_else(|| s.m().reason()),
                }
            })
            .collect()
    }

    /// End of a turn: once the boot has settled (nothing waiting for a
    /// requirement or stopping), say so, with the enabled services that
    /// did not come up. Once per boot.
    pub(super) fn report_boot(&mut self) {
        if self.boot_reported
            || !self.queue.is_empty()
            || self.table.iter().any(|(_, s)| settling(s.state()))
        {
            return;
        }
        self.boot_reported = true;
        let services = self.notes(|s| s.enabled() && !came_up(s.state()));
        let message = if services.is_empty() {
            "every enabled service is up".to_string()
        } else {
            let names: Vec<&str> = services.iter().map(|n| n.name.as_str()).collect();
            format!("not up: {}", names.join(", "))
        };
        self.emit(Event {
            kind: "boot-finished".into(),
            message: Some(message),
            services,
            ..Event::default()
        });
    }

    /// Every service is down and init is about to end: the last event,
    /// with each service's last exit (after the orphans not yet summed
    /// up). Once.
    pub fn final_event(&mut self) {
        if std::mem::replace(&mut self.final_reported, true) {
            return;
        }
        let now = self.os.now();
        self.orphans_summary(now, true);
        let services = self.notes(|_| true);
        self.emit(Event {
            kind: "final".into(),
            message: Some(
                match self.ending {
                    Some(Ending::Reboot) => "rebooting",
                    _ => "powering off",
                }
                .into(),
            ),
            services,
            ..Event::default()
        });
    }

    /// The figures `initctl metrics` shows, as the supervisor knows them.
    pub(super) fn figures(&self) -> (InitFigures, Vec<ServiceFigures>) {
        let now = self.os.now();
        // Every service counts toward init's totals, those removed by a
        // reload and not yet down too, and those already forgotten.
        let (lines, bytes) = self
            .table
            .iter()
            .fold(self.forgotten_dropped, |(l, b), (_, s)| {
                let (lines, bytes) = s.out.log.dropped();
                (l.saturating_add(lines), b.saturating_add(bytes))
            });
        let init = InitFigures {
            uptime_secs: now.saturating_duration_since(self.started_at).as_secs_f64(),
            orphans_reaped: self.orphans.total,
            log_dropped_lines: lines,
            log_dropped_bytes: bytes,
        };
        let services = self
            .table
            .listed()
            .map(|(_, s)| {
                let (lines, _) = s.out.log.dropped();
                ServiceFigures {
                    name: s.name.clone(),
                    up: s.state().active(),
                    state: s.state().name(),
                    restarts: s.m().restart_count(),
                    last_exit: s.m().last_exit().map(|e| e.code),
                    since_change_secs: now
                        .saturating_duration_since(s.changed_at.unwrap_or(self.started_at))
                        .as_secs_f64(),
                    log_dropped_lines: lines,
                }
            })
            .collect();
        (init, services)
    }
}
