//! Control requests: what each one does to the services, what it answers
//! (`Reply`), and the answers held back until a stop or restart has
//! happened (`Held`), decided by reading the machines. Enable, disable and
//! reload live here too, and so do the refusal of changes from a read-only
//! peer and the init.log line for each change (`request`).

use super::{ClientId, Ending, Out, Supervisor, Work};
use crate::access::{Role, Who};
use crate::os::{Containment, Os};
use crate::service::{Event, Req, State};
use crate::unit::{self, UnitFile};
use shared::protocol::{
    Request, Response, ServiceLines, ServiceStatus, ServiceSummary, SystemStatus,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest a stop/restart answer is held back waiting for the process.
pub const REPLY_WAIT: Duration = Duration::from_secs(4);
/// A restarted process must live this long before the restart is reported
/// as done: one that dies at once makes the restart fail.
pub const RESTART_GRACE: Duration = Duration::from_millis(100);
/// The largest `ServiceLogs` answer: bytes of the whole answer line as
/// sent, JSON escapes included.
pub const MAX_LOGS_RESPONSE: usize = 4 * 1024 * 1024;

/// What a request means for its connection (short-lived: the size of
/// `Now` does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// The answer, now.
    Now(Response),
    /// Held: the answer comes later as `Out::Answer` (or never, if the
    /// client goes away first).
    Later,
    /// The connection now follows a service's log or the events: these
    /// first answers (the last lines; the kept events), then `Out::Broadcast`
    /// responses.
    Stream(Vec<Response>),
}

pub(super) enum Wait {
    /// Answer `done` once all these services are down, or `late` if they
    /// are still stopping at the deadline.
    Stop {
        ids: Vec<usize>,
        done: String,
        late: String,
    },
    /// Answer once the run after `runs` has lived `RESTART_GRACE` (a
    /// notify service: is ready; a oneshot: is done), or failed.
    Restart { id: usize, name: String, runs: u64 },
    /// A started notify or oneshot service: answer once it is up (ready or
    /// done) or failed.
    Start { id: usize, name: String },
}

pub(super) struct Held {
    pub client: ClientId,
    wait: Wait,
    deadline: Instant,
    /// The next moment the answer may be decided (the grace of a restart).
    wake: Option<Instant>,
}

impl Held {
    pub fn wake(&self) -> Instant {
        self.wake.map_or(self.deadline, |w| w.min(self.deadline))
    }
}

/// A held answer, decided or not (short-lived: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Done(Response),
    Pending(Option<Instant>),
}

impl<O: Os> Supervisor<O> {
    /// Serve one request from `client`. A request that changes something
    /// is refused to a peer that may only read (and changes nothing), and
    /// is written to init.log with its peer otherwise.
    pub fn request(&mut self, client: ClientId, who: &Who, req: Request) -> Reply {
        if !req.is_read_only() || who.role == Role::Denied {
            match who.role {
                Role::Full => info!("request {} from {}", audit(&req), who.peer),
                Role::ReadOnly => return Reply::Now(Response::err(who.read_only_message())),
                Role::Denied => return Reply::Now(Response::err("permission denied")),
            }
        }
        let r = self.serve(client, req);
        self.drain();
        r
    }

    fn serve(&mut self, client: ClientId, req: Request) -> Reply {
        let name = match &req {
            Request::ServiceStatus { name }
            | Request::ServiceStart { name }
            | Request::ServiceStop { name }
            | Request::ServiceRestart { name }
            | Request::ServiceEnable { name, .. }
            | Request::ServiceDisable { name }
            | Request::ServiceLogs { name, .. }
            | Request::ServiceLogsClear { name }
            | Request::ServiceLogsFollow { name, .. } => Some(name.clone()),
            Request::Ping
            | Request::ListServices
            | Request::ServiceLogsFollowAll { .. }
            | Request::SystemStatus
            | Request::SystemReload
            | Request::SystemShutdown
            | Request::SystemReboot
            | Request::Events { .. }
            | Request::Metrics => None,
        };
        if let Some(n) = &name {
            if let Err(e) = unit::validate_name(n) {
                return Reply::Now(Response::err(e));
            }
        }
        let id = name.as_deref().and_then(|n| self.table.id_of(n));
        let name = name.unwrap_or_default();
        let unknown = || Reply::Now(Response::err(format!("Service '{name}' not found")));
        let now = |r: Response| Reply::Now(r);
        match req {
            Request::Ping => now(Response::Pong),
            Request::ListServices => now(Response::ServiceList {
                services: self.table.listed().map(|(_, s)| summary(s)).collect(),
            }),
            Request::SystemStatus => now(Response::SystemStatus {
                status: self.system_status(),
            }),
            Request::ServiceStatus { .. } => match id.and_then(|id| self.status(id)) {
                Some(status) => now(Response::ServiceStatus { status }),
                None => unknown(),
            },
            Request::ServiceStart { .. } => match id {
                Some(id) => {
                    let r = self.start_request(id, &name);
                    let starting = self
                        .table
                        .get(id)
                        .is_some_and(|s| *s.state() == State::Starting);
                    if starting && matches!(r, Response::Success { .. }) {
                        self.hold(client, Wait::Start { id, name });
                        Reply::Later
                    } else {
                        now(r)
                    }
                }
                None => unknown(),
            },
            Request::ServiceStop { .. } => match id {
                Some(id) => self.stop_request(client, id, &name),
                None => unknown(),
            },
            Request::ServiceRestart { .. } => match id {
                Some(id) => self.restart_request(client, id, &name),
                None => unknown(),
            },
            Request::ServiceEnable { now: start, .. } => {
                let r = self.enable(&name, start);
                self.emit_result("enable", Some(&name), &r);
                Reply::Now(r)
            }
            Request::ServiceDisable { .. } => {
                let r = self.disable(client, &name);
                match &r {
                    Reply::Now(r) => self.emit_result("disable", Some(&name), r),
                    // Renamed; the answer waits for the stop.
                    Reply::Later | Reply::Stream(_) => self.emit_result(
                        "disable",
                        Some(&name),
                        &Response::ok(format!("Service '{name}' disabled; stopping it")),
                    ),
                }
                r
            }
            Request::Events { since } => self.follow_events(client, since),
            Request::Metrics => {
                let (init, services) = self.figures();
                now(Response::Metrics {
                    text: crate::metrics::render(&init, &services),
                })
            }
            Request::ServiceLogs { lines, .. } => match id {
                Some(id) => now(Response::ServiceLogs {
                    logs: self.tail(id, lines),
                }),
                None => unknown(),
            },
            Request::ServiceLogsFollow { lines, .. } => match id {
                Some(id) => {
                    let logs = self.tail(id, lines);
                    self.followers.insert(client, Some(name.clone()));
                    Reply::Stream(vec![Response::ServiceLogs { logs }])
                }
                None => unknown(),
            },
            Request::ServiceLogsFollowAll { lines } => {
                // The whole first answer within one log answer's limit:
                // each service's share holds its lines, its name and
                // brackets, and the note of a cut tail.
                let share = (MAX_LOGS_RESPONSE - 200) / self.table.listed().count().max(1);
                let logs = self
                    .table
                    .listed()
                    .map(|(id, s)| {
                        let budget = share.saturating_sub(s.name.len() + 240);
                        ServiceLines {
                            service: s.name.clone(),
                            logs: self.tail_within(id, lines, budget),
                        }
                    })
                    .collect();
                self.followers.insert(client, None);
                Reply::Stream(vec![Response::ServicesLogs { logs }])
            }
            Request::ServiceLogsClear { .. } => match id.and_then(|id| self.table.get_mut(id)) {
                Some(s) => now(match s.out.log.clear(&self.logset) {
                    Ok(()) => Response::ok(format!("Logs of '{name}' cleared")),
                    Err(e) => Response::err(format!("cannot clear logs of '{name}': {e}")),
                }),
                None => unknown(),
            },
            // Answered at the end of the turn: every reload asked by then
            // is served by one (`answer_reloads`).
            Request::SystemReload => match self.ending {
                Some(_) => now(Response::err("system is shutting down")),
                None => {
                    self.reload_waiters.push(client);
                    Reply::Later
                }
            },
            Request::SystemShutdown => {
                self.begin_ending(Ending::PowerOff);
                now(Response::ok("System is shutting down"))
            }
            Request::SystemReboot => {
                self.begin_ending(Ending::Reboot);
                now(Response::ok("System is rebooting"))
            }
        }
    }

    fn system_status(&self) -> SystemStatus {
        let listed = || self.table.listed();
        SystemStatus {
            uptime_secs: self
                .os
                .now()
                .saturating_duration_since(self.started_at)
                .as_secs(),
            total_services: listed().count(),
            active_services: listed().filter(|(_, s)| s.state().active()).count(),
            enabled_services: listed().filter(|(_, s)| s.enabled()).count(),
            log_dir: self.cfg.log_dir.clone(),
            service_dir: self.cfg.service_dir.clone(),
        }
    }

    pub(super) fn status(&self, id: usize) -> Option<ServiceStatus> {
        let s = self.table.get(id)?;
        let (lines, bytes) = s.out.log.dropped();
        let d = s.def.as_ref();
        let m = s.m();
        let (containment, cgroup, cgroup_procs) = match self.os.containment(&s.name) {
            Containment::ProcessGroup => ("process group", None, None),
            Containment::Cgroup { path, procs } => {
                let procs = path
                    .as_ref()
                    .map(|_| u32::try_from(procs).unwrap_or(u32::MAX));
                ("cgroup", path, procs)
            }
        };
        Some(ServiceStatus {
            name: s.name.clone(),
            enabled: s.enabled(),
            active: s.state().active(),
            pid: s.proc_().map(|p| p.pid.as_raw() as u32),
            restart_policy: d.map_or("no", |d| d.restart.as_str()).into(),
            restart_count: m.restart_count(),
            restart_sec: d.map_or(0, |d| d.restart_sec),
            exit_status: m.last_exit().map(|e| e.code),
            exec_start: d.map(|d| d.exec_start.clone()).unwrap_or_default(),
            working_directory: d.and_then(|d| d.working_directory.clone()),
            dependencies: s.deps(),
            state: s.state().name().into(),
            signal: m
                .last_exit()
                .and_then(|e| e.signal)
                .map(crate::os::signal_name),
            reason: s.load_error.clone().or_else(|| m.reason()),
            waiting_on: s.state().waiting_on().to_vec(),
            timeout_stop_sec: d.map_or(0, |d| d.timeout_stop_sec),
            log_dropped_lines: lines,
            log_dropped_bytes: bytes,
            containment: containment.into(),
            cgroup,
            cgroup_procs,
            service_type: d
                .map_or(crate::unit::Kind::Simple, |d| d.kind)
                .as_str()
                .into(),
            status_text: s.status_text.clone(),
        })
    }

    /// The last lines of a service's log, as many of the newest as fit in
    /// `MAX_LOGS_RESPONSE` once encoded (counted while they are read, so no
    /// more is read than fits); when lines are left out, a last line says so.
    fn tail(&self, id: usize, lines: usize) -> Vec<String> {
        // `{"ServiceLogs":{"logs":[...]}}` and a newline, and the note.
        self.tail_within(id, lines, MAX_LOGS_RESPONSE - 30 - 200)
    }

    /// The last `lines` lines of a service's log, as many as fit in
    /// `budget` bytes of JSON; a note after them when older ones were cut.
    fn tail_within(&self, id: usize, lines: usize, budget: usize) -> Vec<String> {
        let Some(s) = self.table.get(id) else {
            return Vec::new();
        };
        let (mut logs, cut) =
            s.out
                .log
                .tail_within(&self.logset, lines.min(shared::MAX_LOG_LINES), budget);
        if cut {
            logs.push(format!(
                "[init] only the newest {} lines fit in the answer ({} MiB answer size limit); older lines not shown",
                logs.len(),
                MAX_LOGS_RESPONSE >> 20
            ));
        }
        logs
    }

    /// SIGHUP: reload at the end of this turn, with any client that asks.
    pub fn reload_on_signal(&mut self) {
        self.reload_by_signal = true;
    }

    /// End of a turn: one reload for every client (and a SIGHUP) that
    /// asked for one.
    pub(super) fn answer_reloads(&mut self) {
        let by_signal = std::mem::take(&mut self.reload_by_signal);
        if self.reload_waiters.is_empty() && !by_signal {
            return;
        }
        let r = match self.ending {
            Some(_) => Response::err("system is shutting down"),
            None => {
                let (message, errors) = self.reload();
                if by_signal {
                    info!("SIGHUP: {message}");
                }
                let r = Response::Success { message, errors };
                self.emit_result("reload", None, &r);
                r
            }
        };
        for client in std::mem::take(&mut self.reload_waiters) {
            self.out.push(Out::Answer(client, r.clone()));
        }
    }

    fn start_request(&mut self, id: usize, name: &str) -> Response {
        if self.ending.is_some() {
            return Response::err("system is shutting down");
        }
        let Some(s) = self.table.get(id) else {
            return Response::err(format!("Service '{name}' not found"));
        };
        // A file made invalid while it runs: no run after this one.
        let invalid_next = matches!(s.pending, Some(Err(_)))
            && !matches!(s.state(), State::Running | State::Starting);
        if s.def.is_none() || invalid_next {
            return Response::err(format!(
                "Service '{name}' is invalid: {}",
                s.load_error.clone().unwrap_or_default()
            ));
        }
        let running = *s.state() == State::Running;
        let kept = self.keep_up(id);
        if running {
            return Response::ok(format!("Service '{name}' is already running"));
        }
        let down = self.down_requirements(id);
        self.queue.push_back(Work::Start {
            id,
            manual: true,
            pull_in: true,
        });
        self.drain();
        // A start that failed keeps nothing up: the stops go on.
        if self.table.get(id).is_none_or(|s| s.state().down()) && !kept.is_empty() {
            self.stop_queue.extend(kept);
            self.queue_stops();
            self.drain();
        }
        // Named as a stop names the dependents it stopped.
        let started: Vec<&str> = down
            .iter()
            .filter_map(|r| self.table.get(*r))
            .filter(|r| r.state().active())
            .map(|r| r.name.as_str())
            .collect();
        let what = if started.is_empty() {
            format!("Service '{name}'")
        } else {
            format!(
                "Service '{name}' and what it requires ({})",
                started.join(", ")
            )
        };
        let Some(s) = self.table.get(id) else {
            return Response::err(format!("Service '{name}' is gone"));
        };
        let reason = s.m().reason().unwrap_or_default();
        match s.state() {
            State::Running => Response::ok(format!("{what} started")),
            State::Exited => Response::ok(format!(
                "Service '{name}' has already run (restart runs it again)"
            )),
            State::Starting => Response::ok(format!("{what} starting")),
            State::Stopping => Response::ok(format!(
                "Service '{name}' will start once its old process has exited"
            )),
            State::Waiting { .. } => Response::ok(format!("Service '{name}' is {reason}")),
            State::Deferred => Response::err(format!(
                "Service '{name}' could not start yet: {reason}; init tries again"
            )),
            State::Inactive | State::Invalid | State::AutoRestart | State::Failed => {
                Response::err(format!("Service '{name}' failed to start: {reason}"))
            }
        }
    }

    /// What `id` requires, transitively.
    fn all_requirements(&self, id: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(x) = todo.pop() {
            for r in self.deps.requires(x).iter().flatten() {
                if *r != id && found.insert(*r) {
                    todo.push(*r);
                }
            }
        }
        found
    }

    /// A start or restart by hand cancels the queued stops of the service
    /// and of what it requires (a stop still waiting for what requires
    /// them), as a systemd start job replaces waiting stop jobs.
    /// Returns the stops it cancelled.
    fn keep_up(&mut self, id: usize) -> Vec<usize> {
        let mut set = self.all_requirements(id);
        set.insert(id);
        set.into_iter()
            .filter(|x| self.stop_queue.remove(x))
            .collect()
    }

    /// What `id` requires (transitively) that is down now, in start order.
    fn down_requirements(&self, id: usize) -> Vec<usize> {
        let found = self.all_requirements(id);
        let down = |r: &usize| self.table.get(*r).is_some_and(|s| s.state().down());
        self.deps
            .order()
            .iter()
            .copied()
            .filter(|r| found.contains(r) && down(r))
            .collect()
    }

    fn stop_request(&mut self, client: ClientId, id: usize, name: &str) -> Reply {
        self.keep_down(id);
        let set = self.stop_set(id);
        if set
            .iter()
            .all(|x| self.table.get(*x).is_none_or(|s| s.state().down()))
        {
            return Reply::Now(Response::ok(format!("Service '{name}' is not running")));
        }
        let what = self.stop_phrase(name, &set);
        let wait = Wait::Stop {
            ids: set.clone(),
            done: format!("{what} stopped"),
            late: format!("{what} still stopping (SIGKILL follows at the stop timeout)"),
        };
        self.stop_and_hold(client, set, wait)
    }

    /// A stop or disable of `id` reaches it while invalid: a restart its
    /// file cut short does not resume once the file is fixed (an invalid
    /// service is down, so no stop is sent to it otherwise).
    fn keep_down(&mut self, id: usize) {
        if self
            .table
            .get(id)
            .is_some_and(|s| *s.state() == State::Invalid)
        {
            self.queue.push_back(Work::Feed(id, Event::Stop));
            self.drain();
        }
    }

    /// The service and everything that requires it and is not down.
    fn stop_set(&self, id: usize) -> Vec<usize> {
        let mut set = vec![id];
        set.extend(
            self.deps
                .dependents(id)
                .into_iter()
                .filter(|d| self.table.get(*d).is_some_and(|s| !s.state().down())),
        );
        set
    }

    /// "Service 'a'", plus what requires it when that is stopped too.
    fn stop_phrase(&self, name: &str, set: &[usize]) -> String {
        let also: Vec<&str> = set
            .iter()
            .skip(1)
            .filter_map(|d| self.table.get(*d).map(|s| s.name.as_str()))
            .collect();
        if also.is_empty() {
            format!("Service '{name}'")
        } else {
            format!(
                "Service '{name}' and what requires it ({})",
                also.join(", ")
            )
        }
    }

    fn stop_and_hold(&mut self, client: ClientId, set: Vec<usize>, wait: Wait) -> Reply {
        self.stop_queue.extend(set.iter().copied());
        self.queue_stops();
        self.hold(client, wait);
        Reply::Later
    }

    fn restart_request(&mut self, client: ClientId, id: usize, name: &str) -> Reply {
        if self.ending.is_some() {
            return Reply::Now(Response::err("system is shutting down"));
        }
        let Some(s) = self.table.get(id) else {
            return Reply::Now(Response::err(format!("Service '{name}' not found")));
        };
        let runs = s.m().runs();
        // A restart that could not start it again (a requirement missing,
        // invalid, disabled or failed) changes nothing, as systemd refuses
        // the job: no stop, and no queued stop cancelled.
        if let (Req::Failed(why), _) = self.requirements(id, true, true) {
            return Reply::Now(Response::err(format!(
                "Service '{name}' was not restarted: {why}"
            )));
        }
        // Restarts merge: one still held (its run ended by this one on
        // purpose) is answered by the run this one starts.
        for h in &mut self.held {
            if let Wait::Restart {
                id: held, runs: r, ..
            } = &mut h.wait
            {
                if *held == id {
                    *r = runs;
                }
            }
        }
        let _ = self.keep_up(id);
        self.queue.push_back(Work::Feed(id, Event::Restart));
        self.hold(
            client,
            Wait::Restart {
                id,
                name: name.to_string(),
                runs,
            },
        );
        Reply::Later
    }

    fn hold(&mut self, client: ClientId, wait: Wait) {
        self.held.push(Held {
            client,
            wait,
            deadline: self.os.now() + REPLY_WAIT,
            wake: None,
        });
    }

    /// Answer the held requests that are decided now.
    pub(super) fn answer_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = self.os.now();
        let held = std::mem::take(&mut self.held);
        for mut h in held {
            match self.outcome(&h.wait, now, now >= h.deadline) {
                Outcome::Done(r) => self.out.push(Out::Answer(h.client, r)),
                Outcome::Pending(wake) => {
                    h.wake = wake;
                    self.held.push(h);
                }
            }
        }
    }

    fn outcome(&self, w: &Wait, now: Instant, late: bool) -> Outcome {
        match w {
            Wait::Stop {
                ids,
                done,
                late: late_text,
            } => {
                let down = |id: &usize| self.table.get(*id).is_none_or(|s| s.state().down());
                // Up and no longer queued to stop: a start kept it up.
                let taken_back = ids
                    .iter()
                    .find(|id| !down(id) && !self.stop_queue.contains(id));
                if ids.iter().all(down) {
                    Outcome::Done(Response::ok(done.clone()))
                } else if let Some(s) = taken_back.and_then(|id| self.table.get(*id)) {
                    Outcome::Done(match s.state() {
                        State::Stopping => Response::ok(format!(
                            "Service '{}' is stopping; a start asked since starts it again",
                            s.name
                        )),
                        _ => Response::err(format!(
                            "Service '{}' was not stopped: a start cancelled its stop",
                            s.name
                        )),
                    })
                } else if late {
                    Outcome::Done(Response::ok(late_text.clone()))
                } else {
                    Outcome::Pending(None)
                }
            }
            Wait::Restart { id, name, runs } => {
                let Some(s) = self.table.get(*id) else {
                    return Outcome::Done(Response::err(format!("Service '{name}' is gone")));
                };
                let m = s.m();
                let why = || {
                    m.reason()
                        .or_else(|| m.last_exit().map(|e| e.reason()))
                        .unwrap_or_else(|| "it is stopped".into())
                };
                if m.runs() > *runs {
                    // The new run started: it must still be that run, alive
                    // (or, a oneshot, done).
                    let this_run = m.runs() == runs + 1;
                    return match s.state() {
                        State::Running if this_run => {
                            let since = m.run_started().unwrap_or(now);
                            let at = since + RESTART_GRACE;
                            if now >= at || late {
                                Outcome::Done(Response::ok(format!("Service '{name}' restarted")))
                            } else {
                                Outcome::Pending(Some(at))
                            }
                        }
                        State::Exited if this_run => Outcome::Done(Response::ok(format!(
                            "Service '{name}' restarted and finished"
                        ))),
                        State::Starting if this_run && late => Outcome::Done(Response::ok(
                            format!("Service '{name}' restarted; not up yet (starting)"),
                        )),
                        State::Starting if this_run => Outcome::Pending(None),
                        // Stopped by its start timeout or watchdog: the
                        // exit tells why.
                        State::Stopping if this_run && !late => Outcome::Pending(None),
                        _ => Outcome::Done(Response::err(format!(
                            "Service '{name}' did not survive its restart: {}",
                            why()
                        ))),
                    };
                }
                let not_restarted = || {
                    Outcome::Done(Response::err(format!(
                        "Service '{name}' did not restart: {}",
                        why()
                    )))
                };
                match s.state() {
                    State::Failed | State::Inactive | State::Invalid | State::Exited
                        if !m.restart_pending() =>
                    {
                        not_restarted()
                    }
                    State::Failed | State::Inactive | State::Invalid | State::Exited => {
                        Outcome::Pending(None)
                    }
                    State::Starting
                    | State::Running
                    | State::Stopping
                    | State::Waiting { .. }
                    | State::AutoRestart => {
                        if late {
                            Outcome::Done(Response::ok(format!(
                                "Service '{name}' is restarting (waiting for the old process to exit)"
                            )))
                        } else {
                            Outcome::Pending(None)
                        }
                    }
                    State::Deferred if late => Outcome::Done(Response::err(format!(
                        "Service '{name}' could not start yet: {}; init tries again",
                        why()
                    ))),
                    State::Deferred => Outcome::Pending(None),
                }
            }
            Wait::Start { id, name } => {
                let Some(s) = self.table.get(*id) else {
                    return Outcome::Done(Response::err(format!("Service '{name}' is gone")));
                };
                let m = s.m();
                match s.state() {
                    State::Running => {
                        Outcome::Done(Response::ok(format!("Service '{name}' started (ready)")))
                    }
                    State::Exited => Outcome::Done(Response::ok(format!(
                        "Service '{name}' started and finished"
                    ))),
                    State::Starting if late => Outcome::Done(Response::ok(format!(
                        "Service '{name}' is starting (not up yet)"
                    ))),
                    State::Starting => Outcome::Pending(None),
                    State::Inactive
                    | State::Invalid
                    | State::Waiting { .. }
                    | State::Stopping
                    | State::AutoRestart
                    | State::Failed
                    | State::Deferred => {
                        let why = m
                            .reason()
                            .or_else(|| m.last_exit().map(|e| e.reason()))
                            .unwrap_or_else(|| "it was stopped".into());
                        Outcome::Done(Response::err(format!(
                            "Service '{name}' failed to start: {why}"
                        )))
                    }
                }
            }
        }
    }

    fn enable(&mut self, name: &str, start: bool) -> Response {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        let mut msg;
        // `ServiceEnable = false` in the file on disk keeps it disabled
        // whatever the file is called: refuse before renaming anything.
        let file = if on.exists() { &on } else { &off };
        let turned_off = unit::read_file(file)
            .ok()
            .and_then(|t| unit::parse(&t).ok())
            .is_some_and(|(d, _)| !d.service_enable);
        if turned_off {
            let then = if file == &on {
                "run 'initctl reload'".to_string()
            } else {
                format!("run 'initctl enable {name}'")
            };
            return Response::err(format!(
                "Service '{name}' is disabled by 'ServiceEnable = false' in {}; set it to true, then {then}",
                file.display()
            ));
        }
        if on.exists() {
            if self.table.id_of(name).is_none() {
                // A file init has not loaded yet.
                self.reload_one(name, &on);
            }
            msg = format!("Service '{name}' is already enabled");
        } else if off.exists() {
            if let Err(e) = std::fs::rename(&off, &on) {
                return Response::err(format!(
                    "cannot rename {} to {}: {e}",
                    off.display(),
                    on.display()
                ));
            }
            msg = format!(
                "Service '{name}' enabled ({} renamed to {})",
                file_name(&off),
                file_name(&on)
            );
            self.reload_one(name, &on);
        } else {
            return Response::err(format!("Service '{name}' not found in {}", dir.display()));
        }
        if start {
            match self.table.id_of(name) {
                Some(id) => match self.start_request(id, name) {
                    Response::Error { message } => {
                        return Response::err(format!("{msg}; but {message}"))
                    }
                    Response::Success { message, .. } => msg = format!("{msg}; {message}"),
                    _ => {}
                },
                None => return Response::err(format!("{msg}; but it could not be loaded")),
            }
        }
        Response::ok(msg)
    }

    /// Answered at once, or held until the service has stopped.
    fn disable(&mut self, client: ClientId, name: &str) -> Reply {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        let now = |r: Response| Reply::Now(r);
        if !on.exists() {
            return now(if off.exists() {
                Response::ok(format!("Service '{name}' is already disabled"))
            } else {
                Response::err(format!("Service '{name}' not found in {}", dir.display()))
            });
        }
        if off.exists() {
            return now(Response::err(format!(
                "cannot disable '{name}': {} already exists; remove one of the two files",
                off.display()
            )));
        }
        if let Err(e) = std::fs::rename(&on, &off) {
            return now(Response::err(format!(
                "cannot rename {} to {}: {e}",
                on.display(),
                off.display()
            )));
        }
        let msg = format!(
            "Service '{name}' disabled ({} renamed to {})",
            file_name(&on),
            file_name(&off)
        );
        let Some(id) = self.table.id_of(name) else {
            return now(Response::ok(msg));
        };
        if let Some(s) = self.table.get_mut(id) {
            s.file_enabled = false;
        }
        self.keep_down(id);
        if self.table.get(id).is_none_or(|s| s.state().down()) {
            return now(Response::ok(msg));
        }
        let set = self.stop_set(id);
        let what = self.stop_phrase(name, &set).replacen("Service '", "'", 1);
        let wait = Wait::Stop {
            ids: set.clone(),
            done: format!("{msg}; {what} stopped"),
            late: format!("{msg}; {what} still stopping"),
        };
        self.stop_and_hold(client, set, wait)
    }

    /// Load or refresh one service file (after enable).
    fn reload_one(&mut self, name: &str, path: &Path) {
        let Ok(units) = unit::scan(Path::new(&self.cfg.service_dir)) else {
            return;
        };
        let Some(u) = units.into_iter().find(|u| u.name == name) else {
            return;
        };
        match self.table.id_of(name) {
            Some(id) => {
                if let Err(e) = self.update_service(id, u) {
                    error!("{}: {e}", path.display());
                }
            }
            None => {
                self.add_or_revive(u);
            }
        }
        self.rebuild_deps(false);
    }

    /// Apply a re-read file to a known service. Returns whether the
    /// definition changed, or the error.
    pub(super) fn update_service(&mut self, id: usize, u: UnitFile) -> Result<bool, String> {
        let Some(s) = self.table.get_mut(id) else {
            return Ok(false);
        };
        s.file_enabled = u.file_enabled;
        match u.def {
            Ok(new) => {
                s.load_error = None;
                let current = match &s.pending {
                    Some(Ok(d)) => Some(d),
                    Some(Err(_)) => None,
                    None => s.def.as_ref(),
                };
                if current == Some(&new) {
                    return Ok(false);
                }
                if s.state().active() && s.def.is_some() {
                    // Back to what runs: nothing left to take over.
                    s.pending = (s.def.as_ref() != Some(&new)).then_some(Ok(new));
                } else {
                    s.def = Some(new);
                    s.pending = None;
                }
                self.queue.push_back(Work::Feed(id, Event::Validated));
                Ok(true)
            }
            Err(e) => {
                if s.state().active() && s.def.is_some() {
                    // The running process goes on; the service is invalid
                    // once it has ended.
                    s.pending = Some(Err(e.clone()));
                } else {
                    s.def = None;
                    s.pending = None;
                    self.queue
                        .push_back(Work::Feed(id, Event::Invalidated(e.clone())));
                }
                s.load_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Re-read init.yaml's service settings and every service file; start
    /// what is new, stop what is gone, keep what runs unchanged.
    /// Returns the message and the errors (also in the message).
    pub fn reload(&mut self) -> (String, Vec<String>) {
        let msg = self.reload_files();
        self.drain();
        msg
    }

    fn reload_files(&mut self) -> (String, Vec<String>) {
        let mut errors = Vec::new();
        let loaded = crate::config::load(&self.config_path);
        errors.extend(loaded.errors);
        if loaded.source.is_some() {
            let c = loaded.config;
            self.cfg.environment = c.environment;
            self.cfg.max_log_size = c.max_log_size;
            self.cfg.max_log_files = c.max_log_files;
            self.cfg.service_dir = c.service_dir;
            self.logset = super::log_settings(&self.cfg);
        }
        let units = match unit::scan(Path::new(&self.cfg.service_dir)) {
            Ok(u) => u,
            Err(e) => {
                errors.push(e);
                return (format!("reload failed: {}", errors.join("; ")), errors);
            }
        };
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        let seen: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        let gone: Vec<(usize, String)> = self
            .table
            .listed()
            .filter(|(_, s)| !seen.contains(&s.name))
            .map(|(id, s)| (id, s.name.clone()))
            .collect();
        for (id, name) in gone {
            self.table.mark_removed(id);
            removed.push(name);
            self.stop_queue.insert(id);
        }
        self.queue_stops();
        let mut new_ids = Vec::new();
        let (mut now_enabled, mut now_disabled) = (Vec::new(), Vec::new());
        for u in units {
            let name = u.name.clone();
            let path = u.path.display().to_string();
            match self.table.id_of(&name) {
                Some(id) => {
                    // Invalid since it was loaded and never run: once fixed it
                    // is as good as new, and starts if enabled.
                    let fixed = self
                        .table
                        .get(id)
                        .is_some_and(|s| *s.state() == State::Invalid && s.m().runs() == 0);
                    let was = self.table.get(id).map(|s| s.enabled());
                    let result = self.update_service(id, u);
                    match (was, self.table.get(id).map(|s| s.enabled())) {
                        (Some(false), Some(true)) => now_enabled.push(name.clone()),
                        (Some(true), Some(false)) => now_disabled.push(name.clone()),
                        _ => {}
                    }
                    match result {
                        Ok(true) => {
                            if fixed {
                                new_ids.push(id);
                            }
                            changed.push(name)
                        }
                        Ok(false) => {}
                        Err(e) => errors.push(format!("{path}: {e}")),
                    }
                }
                None => {
                    if let Err(e) = &u.def {
                        errors.push(format!("{path}: {e}"));
                    }
                    new_ids.push(self.add_or_revive(u));
                    added.push(name);
                }
            }
        }
        self.rebuild_deps(true);
        // Validated/Invalidated first, then the starts.
        self.drain();
        for id in self.deps.order().to_vec() {
            let startable = self
                .table
                .get(id)
                .is_some_and(|s| s.enabled() && s.def.is_some());
            if new_ids.contains(&id) && startable {
                self.queue.push_back(Work::Start {
                    id,
                    manual: false,
                    pull_in: true,
                });
            }
            // Requirements may have changed for what waits.
            if matches!(
                self.table.get(id).map(|s| s.state()),
                Some(State::Waiting { .. })
            ) {
                self.queue.push_back(Work::Start {
                    id,
                    manual: false,
                    pull_in: false,
                });
            }
        }
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut msg = format!(
            "Reloaded: added {}; removed {}; changed {}",
            list(&added),
            list(&removed),
            list(&changed)
        );
        if !changed.is_empty() {
            msg.push_str(" (running services keep their old definition until restarted)");
        }
        // As systemd's daemon-reload: what boot starts changes, nothing
        // is started or stopped for it.
        if !now_enabled.is_empty() || !now_disabled.is_empty() {
            msg.push_str(&format!(
                "; now enabled {}; now disabled {} (at boot; start or stop them to apply now)",
                list(&now_enabled),
                list(&now_disabled)
            ));
        }
        if !errors.is_empty() {
            msg.push_str(&format!("; errors: {}", errors.join("; ")));
        }
        (msg, errors)
    }
}

/// A request as init.log shows it: Debug (strings quoted and escaped, so
/// a name cannot start a new line), at most 200 bytes.
fn audit(req: &Request) -> String {
    let mut s = format!("{req:?}");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn summary(s: &super::table::Service) -> ServiceSummary {
    ServiceSummary {
        name: s.name.clone(),
        enabled: s.enabled(),
        active: s.state().active(),
        restart_policy: s.def.as_ref().map_or("no", |d| d.restart.as_str()).into(),
        restart_count: s.m().restart_count(),
        state: s.state().name().into(),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
