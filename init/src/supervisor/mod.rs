//! The supervisor: the services (`table`), their dependency graph (`deps`),
//! one work queue, and what each control request does (`requests`). It owns
//! no fd of its own: it touches processes and fds only through `Os`, and it
//! learns of events through its entry points (`on_token`, `on_sigchld`,
//! `on_timer`, `on_notify`, `request`, `client_gone`), each of which ends in one drain
//! of the queue. What it has to say to clients is queued in `out` for the
//! reactor to deliver. Tests drive it with a fake `Os` and clock.
//!
//! Every effect (start, event to a machine, re-checking what waits on a
//! changed service, stop-queue progress, the beginning of the end) is a `Work` item, drained in one
//! place, in order: nothing recurses, and there are no fixed rounds.

use crate::logs::{LogSettings, Pipe};
use crate::os::{Os, Proc, SpawnError};
use crate::service::{Action, Event, Req, State};
use crate::unit::{self, EndAction, UnitFile};
use mio::Token;
use nix::sys::signal::Signal;
use shared::config::InitConfig;
use shared::protocol::{Response, ServiceLines};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod deps;
mod report;
mod requests;
mod table;
#[cfg(test)]
mod tests;

use requests::Held;
pub use requests::Reply;
use table::Table;

/// Tokens at or above this belong to services (pidfds and output pipes).
pub const SVC_BASE: usize = 1 << 61;
/// Work items done per drain before the reactor gets a turn.
const DRAIN_BUDGET: usize = 100_000;
/// Reaped orphans logged one by one per 10 s; the rest in a summary.
const ORPHAN_LINES: u32 = 10;
/// New log lines go to followers in pieces of at most this much text (one
/// longer line alone), so each follower is judged and every client's
/// memory counted between pieces.
const FOLLOW_PIECE: usize = 64 * 1024;

/// What a service token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The pidfd of a process: it has exited (or will be checked).
    Exit,
    Out(Pipe),
}

/// A token for one source of one process generation of a service: id in
/// bits 24..61, generation (mod 2^22) in bits 2..24, source in bits 0..2.
pub fn token(id: usize, gen: u32, src: Source) -> Token {
    let k = match src {
        Source::Exit => 0,
        Source::Out(p) => 1 + p.index(),
    };
    Token(SVC_BASE | (id << 24) | ((gen as usize & 0x3F_FFFF) << 2) | k)
}

fn decode(t: Token) -> Option<(usize, u32, Source)> {
    let n = t.0.checked_sub(SVC_BASE)?;
    let src = match n & 3 {
        0 => Source::Exit,
        1 => Source::Out(Pipe::Stdout),
        2 => Source::Out(Pipe::Stderr),
        _ => return None,
    };
    Some((n >> 24, ((n >> 2) & 0x3F_FFFF) as u32, src))
}

fn same_gen(a: u32, b: u32) -> bool {
    a & 0x3F_FFFF == b & 0x3F_FFFF
}

/// How init should end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    PowerOff,
    Reboot,
}

/// A client of the supervisor (a control connection), as the reactor numbers it.
pub type ClientId = u64;

/// Something for the reactor to deliver to a client.
#[derive(Debug, PartialEq)]
pub enum Out {
    /// The answer to a held request.
    Answer(ClientId, Response),
    /// New lines or an event for these followers (one copy for all).
    Broadcast(Vec<ClientId>, Response),
}

enum Work {
    /// Check the requirements and feed `Start`; `pull_in` starts inactive
    /// requirements first.
    Start {
        id: usize,
        manual: bool,
        pull_in: bool,
    },
    /// Feed an event to the machine and carry out its step.
    Feed(usize, Event),
    /// A service's state changed: re-check what waits on it.
    Changed(usize),
    /// Stop what the stop queue allows now.
    Stops,
    /// Begin shutting down or rebooting (a service's end action).
    End(Ending),
}

pub struct Supervisor<O: Os> {
    os: O,
    cfg: InitConfig,
    config_path: PathBuf,
    logset: LogSettings,
    table: Table,
    deps: deps::Deps,
    queue: VecDeque<Work>,
    /// Services to stop, each once what is ordered after it is down.
    stop_queue: BTreeSet<usize>,
    /// A `Work::Stops` is in the queue.
    stops_queued: bool,
    held: Vec<Held>,
    /// Followers: the name of the service each streaming client follows
    /// (a service removed and added back is followed on, as `journalctl
    /// -f -u`). None: every service's (`ServiceLogsFollowAll`).
    followers: BTreeMap<ClientId, Option<String>>,
    /// The events kept, and the clients that follow them.
    events: crate::events::Events,
    event_followers: BTreeSet<ClientId>,
    /// The boot-finished event was sent (or shutdown began before it).
    boot_reported: bool,
    /// The final event was sent.
    final_reported: bool,
    /// Clients waiting for the reload at the end of this turn.
    reload_waiters: Vec<ClientId>,
    /// A SIGHUP asked for a reload this turn (served by the same one).
    reload_by_signal: bool,
    out: Vec<Out>,
    ending: Option<Ending>,
    started_at: Instant,
    /// The read buffer for output pipes, allocated once.
    pipe_buf: Vec<u8>,
    /// Services whose log file may be let go at the end of the turn (see
    /// `release_logs`).
    idle_logs: BTreeSet<usize>,
    /// Orphans reaped: counted (the metric), logged a few per 10 s.
    orphans: crate::access::Refusals,
    /// Log lines and bytes dropped by services a reload has since
    /// forgotten: the metrics are counters and must not fall.
    forgotten_dropped: (u64, u64),
}

impl<O: Os> Supervisor<O> {
    pub fn new(os: O, cfg: InitConfig, config_path: PathBuf) -> Self {
        let logset = log_settings(&cfg);
        let started_at = os.now();
        Supervisor {
            os,
            cfg,
            config_path,
            logset,
            table: Table::default(),
            deps: deps::Deps::default(),
            queue: VecDeque::new(),
            stop_queue: BTreeSet::new(),
            stops_queued: false,
            held: Vec::new(),
            followers: BTreeMap::new(),
            events: crate::events::Events::new(crate::events::read_boot_id()),
            event_followers: BTreeSet::new(),
            boot_reported: false,
            final_reported: false,
            reload_waiters: Vec::new(),
            reload_by_signal: false,
            out: Vec::new(),
            ending: None,
            started_at,
            pipe_buf: Vec::new(),
            idle_logs: BTreeSet::new(),
            orphans: crate::access::Refusals::with_burst(ORPHAN_LINES),
            forgotten_dropped: (0, 0),
        }
    }

    #[cfg(test)]
    pub fn os(&mut self) -> &mut O {
        &mut self.os
    }

    // ----- entry points --------------------------------------------------

    /// Load every service file and start the enabled ones in order.
    pub fn boot(&mut self) {
        if let Err(e) = crate::logs::create_dir(&self.logset.dir) {
            error!("log directory {}: {e}", self.logset.dir.display());
        }
        match unit::scan(Path::new(&self.cfg.service_dir)) {
            Ok(units) => {
                for u in units {
                    self.add_service(u);
                }
            }
            Err(e) => error!("service directory: {e}"),
        }
        self.rebuild_deps(true);
        info!(
            "{} services loaded; start order: {}",
            self.table.len(),
            self.deps
                .order()
                .iter()
                .filter_map(|id| self.table.get(*id).map(|s| s.name.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for id in self.deps.order().to_vec() {
            if self
                .table
                .get(id)
                .is_some_and(|s| s.enabled() && s.def.is_some())
            {
                self.queue.push_back(Work::Start {
                    id,
                    manual: false,
                    pull_in: true,
                });
            }
        }
        self.drain();
    }

    /// Readiness of a service token. Returns true when a pipe still has
    /// data after its read budget (the reactor comes back to it soon).
    pub fn on_token(&mut self, t: Token) -> bool {
        let Some((id, gen, src)) = decode(t) else {
            return false;
        };
        let more = match src {
            Source::Exit => {
                // Only the current process of the service, and only once it
                // has really exited: an event of an earlier run is ignored.
                let current = self
                    .table
                    .get(id)
                    .and_then(|s| s.proc_())
                    .filter(|p| same_gen(p.gen, gen));
                if current.is_some_and(|p| self.os.exited(p)) {
                    self.proc_exited(id);
                }
                false
            }
            Source::Out(pipe) => {
                let current = self
                    .table
                    .get(id)
                    .is_some_and(|s| s.out.is_current(pipe, gen));
                current && self.read_pipe(id, pipe)
            }
        };
        self.drain();
        more
    }

    /// A message on the notify socket from `pid`: believed only from a
    /// service's main process or a process in its group.
    pub fn on_notify(&mut self, pid: i32, n: crate::notify::Notice) {
        let id = self.table.by_pid(pid).or_else(|| {
            self.os
                .process_group(pid)
                .and_then(|g| self.table.by_pid(g))
        });
        let Some(id) = id else {
            return;
        };
        if let Some(text) = n.status {
            if let Some(s) = self.table.get_mut(id) {
                s.status_text = Some(text);
            }
        }
        if n.ready {
            self.feed(id, Event::Ready);
        }
        if n.watchdog {
            self.feed(id, Event::WatchdogPing);
        }
        self.drain();
    }

    /// SIGCHLD: find every exited child; services' and orphans'.
    pub fn on_sigchld(&mut self) {
        for _ in 0..100_000 {
            let Some(pid) = self.os.next_exited() else {
                break;
            };
            match self.table.by_pid(pid.as_raw()) {
                Some(id) => {
                    if !self.proc_exited(id) {
                        break; // could not reap it: do not spin
                    }
                }
                None => match self.os.reap(pid) {
                    Some(exit) => {
                        let now = self.os.now();
                        self.orphans_summary(now, false);
                        if self.orphans.count(now).is_some() {
                            info!("reaped orphan {pid} ({})", exit.describe());
                        }
                    }
                    None => break, // could not reap it: do not spin
                },
            }
        }
        self.drain();
    }

    /// A window of orphans not logged one by one has ended: one line for
    /// them all, so a service that makes orphans without end (one user's
    /// fork loop) cannot rotate the audit lines out of init.log.
    /// At init's end (`at_end`) the window still open is summed up too.
    pub(super) fn orphans_summary(&mut self, now: Instant, at_end: bool) {
        let summary = if at_end {
            self.orphans.summary_now(now)
        } else {
            self.orphans.summary(now)
        };
        if let Some((n, over)) = summary {
            info!(
                "reaped {n} more orphans in the last {} s ({} in all)",
                over.as_secs().max(1),
                self.orphans.total
            );
        }
    }

    /// The timer fired: machines' deadlines that are due, the end of a
    /// window of orphans.
    pub fn on_timer(&mut self) {
        let now = self.os.now();
        self.orphans_summary(now, false);
        for id in self.table.due(now) {
            self.queue.push_back(Work::Feed(id, Event::Deadline));
        }
        self.drain();
    }

    /// A client went away: forget its held answers and its following.
    pub fn client_gone(&mut self, client: ClientId) {
        self.held.retain(|h| h.client != client);
        self.followers.remove(&client);
        self.event_followers.remove(&client);
        self.reload_waiters.retain(|c| *c != client);
    }

    /// The earliest deadline: a machine's, a held answer's, or the end of
    /// a window of orphans not logged yet.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.table
            .next_deadline()
            .into_iter()
            .chain(self.held.iter().map(Held::wake))
            .chain(self.orphans.window_end())
            .min()
    }

    /// Work left over after a drain budget ran out.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    /// End of a loop turn: finish the work, reload once for all who asked,
    /// answer held requests that are decided, forget removed services that
    /// are down.
    pub fn tick(&mut self) {
        self.drain();
        self.answer_reloads();
        self.answer_held();
        self.forget_removed();
        self.report_boot();
        self.release_logs();
    }

    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// Take what is to be delivered to clients.
    pub fn take_out(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// Every service is down once init is ending: return how to end.
    pub fn finished(&self) -> Option<Ending> {
        let ending = self.ending?;
        self.table
            .iter()
            .all(|(_, s)| s.proc_().is_none() && s.state().down())
            .then_some(ending)
    }

    /// After the loop (every service down): remove the services' cgroups.
    pub fn release_all(&mut self) {
        self.os.release_all();
    }

    pub fn begin_ending(&mut self, how: Ending) {
        self.queue.push_back(Work::End(how));
        self.drain();
    }

    fn end(&mut self, how: Ending) {
        if self.ending.is_some() {
            return;
        }
        info!(
            "{}: stopping services in reverse dependency order",
            if how == Ending::Reboot {
                "reboot"
            } else {
                "shutdown"
            }
        );
        self.ending = Some(how);
        self.emit_ending(how);
        self.stop_queue.extend(self.table.ids());
        self.queue_stops();
    }

    // ----- the queue -----------------------------------------------------

    fn drain(&mut self) {
        for _ in 0..DRAIN_BUDGET {
            let Some(w) = self.queue.pop_front() else {
                return;
            };
            match w {
                Work::Start {
                    id,
                    manual,
                    pull_in,
                } => self.start(id, manual, pull_in),
                Work::Feed(id, ev) => self.feed(id, ev),
                Work::Changed(id) => self.changed(id),
                Work::Stops => {
                    self.stops_queued = false;
                    self.stops();
                }
                Work::End(how) => self.end(how),
            }
        }
    }

    fn start(&mut self, id: usize, manual: bool, pull_in: bool) {
        if self.ending.is_some() {
            return;
        }
        // Queued to stop (waiting for what is ordered after it): no
        // automatic start, whatever the policy says.
        if !manual && self.stop_queue.contains(&id) {
            self.feed(id, Event::Stop);
            return;
        }
        let (req, pull) = self.requirements(id, pull_in, manual);
        if pull.is_empty() {
            self.feed(id, Event::Start { manual, req });
            return;
        }
        // Start the requirements first, then look again.
        self.queue.push_front(Work::Start {
            id,
            manual,
            pull_in: false,
        });
        for rid in pull.into_iter().rev() {
            self.queue.push_front(Work::Start {
                id: rid,
                manual: false,
                pull_in: true,
            });
        }
    }

    fn feed(&mut self, id: usize, ev: Event) {
        let now = self.os.now();
        let from = self.table.get(id).map_or("", |s| s.state().name());
        let exit = match &ev {
            Event::Exited(e) => Some(*e),
            _ => None,
        };
        let Some((step, changed)) = self.table.feed(id, ev, now) else {
            return;
        };
        if let Some(line) = &step.log {
            self.log_event(id, line);
        }
        match step.action {
            Action::Spawn => self.spawn(id),
            Action::Term | Action::Abort | Action::Kill => self.signal(id, step.action),
            Action::StartAgain { manual } => self.queue.push_back(Work::Start {
                id,
                manual,
                pull_in: true,
            }),
            Action::None => {}
        }
        if changed {
            self.emit_state(id, from, exit);
            self.queue.push_back(Work::Changed(id));
        }
        if let Some(success) = step.ended {
            self.end_action(id, success);
        }
        if let Some(why) = self.table.apply_pending(id) {
            self.rebuild_deps(false);
            self.queue
                .push_front(Work::Feed(id, Event::Invalidated(why)));
        }
    }

    /// A run ended for good: its `SuccessAction` or `FailureAction`, if
    /// any, shuts the system down, saying why on the console and in
    /// init.log.
    fn end_action(&mut self, id: usize, success: bool) {
        let Some(s) = self.table.get(id) else {
            return;
        };
        // The file's as it is now: a reload that took the action out is
        // obeyed, though the run began before it.
        let Some(d) = s.next_def() else { return };
        let (key, action) = match success {
            true => ("SuccessAction", d.success_action),
            false => ("FailureAction", d.failure_action),
        };
        let how = match action {
            EndAction::None => return,
            EndAction::Poweroff => Ending::PowerOff,
            EndAction::Reboot => Ending::Reboot,
        };
        let m = s.m();
        let status = match (m.last_exit(), m.reason()) {
            (Some(e), Some(r)) if r != e.reason() => format!("{}; {r}", e.describe()),
            (Some(e), _) => e.describe(),
            (None, r) => r.unwrap_or_default(),
        };
        let what = if how == Ending::Reboot {
            "rebooting"
        } else {
            "powering off"
        };
        info!("{}: ended ({status}); {key}: {what}", s.name);
        self.queue.push_back(Work::End(how));
    }

    /// What waits on `id` may start or fail now; the stop queue may move.
    fn changed(&mut self, id: usize) {
        let mut next = self.deps.required_by(id).to_vec();
        next.extend(self.deps.later(id));
        for d in next {
            if matches!(
                self.table.get(d).map(|s| s.state()),
                Some(State::Waiting { .. })
            ) {
                self.queue.push_back(Work::Start {
                    id: d,
                    manual: false,
                    pull_in: false,
                });
            }
        }
        self.queue_stops();
    }

    fn queue_stops(&mut self) {
        if !self.stop_queue.is_empty() && !self.stops_queued {
            self.stops_queued = true;
            self.queue.push_back(Work::Stops);
        }
    }

    /// Can `id` start now? The answer, and the inactive requirements to
    /// start first when `pull_in`; for a start by hand also those being
    /// stopped (not for a failure), to start again once down. Reads only.
    fn requirements(&self, id: usize, pull_in: bool, manual: bool) -> (Req, Vec<usize>) {
        let reqs = self.deps.requires(id);
        if reqs.is_empty() && self.deps.earlier(id).is_empty() {
            return (Req::Ready, Vec::new());
        }
        // What requires this one: a requirement among them is a Requires
        // cycle, warned about at load; start without waiting for it.
        let behind = self.deps.dependents(id);
        let (mut wait, mut pull) = (Vec::new(), Vec::new());
        for r in reqs {
            let rid = match r {
                Ok(rid) => *rid,
                Err(name) => {
                    let why = format!("required service '{name}' does not exist");
                    return (Req::Failed(why), Vec::new());
                }
            };
            let Some(rs) = self.table.get(rid) else {
                continue;
            };
            let name = &rs.name;
            let fail = |why: String| (Req::Failed(why), Vec::new());
            if rs.def.is_none() {
                return fail(format!("required service '{name}' is invalid"));
            }
            if !rs.enabled() && !rs.state().active() {
                return fail(format!("required service '{name}' is disabled"));
            }
            if behind.contains(&rid) {
                continue;
            }
            match rs.state() {
                // Up: exec'd (simple), ready (notify), done (oneshot).
                State::Running | State::Exited => {}
                State::Failed => {
                    let why = rs
                        .m()
                        .reason()
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default();
                    return fail(format!("required service '{name}' failed{why}"));
                }
                State::Invalid => return fail(format!("required service '{name}' is invalid")),
                State::Inactive if pull_in => {
                    pull.push(rid);
                    wait.push(name.clone());
                }
                State::Inactive => {
                    return fail(format!("required service '{name}' is not running"));
                }
                State::Stopping
                    if pull_in
                        && manual
                        && !rs.m().restart_pending()
                        && !rs.m().stopping_as_failure()
                        && !self.stop_queue.contains(&rid) =>
                {
                    pull.push(rid);
                    wait.push(name.clone());
                }
                State::Waiting { .. }
                | State::Starting
                | State::Stopping
                | State::AutoRestart
                | State::Deferred => wait.push(name.clone()),
            }
        }
        // Ordered after (`After`, or the other's `Before`) without being
        // required: wait only while that one is on its way up.
        for e in self.deps.earlier(id) {
            let Some(es) = self.table.get(*e) else {
                continue;
            };
            let on_its_way = matches!(es.state(), State::Starting | State::Waiting { .. });
            if on_its_way && !behind.contains(e) && !wait.contains(&es.name) {
                wait.push(es.name.clone());
            }
        }
        if wait.is_empty() {
            (Req::Ready, pull)
        } else {
            (Req::Wait(wait), pull)
        }
    }

    /// Stop queued services, each once nothing ordered after it is up.
    fn stops(&mut self) {
        for id in self.stop_queue.clone() {
            let Some(state) = self.table.get(id).map(|s| s.state().clone()) else {
                self.stop_queue.remove(&id);
                continue;
            };
            match state {
                State::Inactive | State::Invalid | State::Failed => {
                    self.stop_queue.remove(&id);
                }
                State::Exited => {
                    self.feed(id, Event::Stop);
                    self.stop_queue.remove(&id);
                }
                // Already stopping: a restart in progress becomes a stop.
                State::Stopping if self.table.get(id).is_some_and(|s| s.m().restart_pending()) => {
                    self.feed(id, Event::Stop)
                }
                State::Stopping => {}
                State::Waiting { .. } | State::AutoRestart | State::Deferred => {
                    self.feed(id, Event::Stop)
                }
                State::Starting | State::Running => {
                    let blocked = self.deps.later(id).iter().any(|o| {
                        self.stop_queue.contains(o)
                            && self.table.get(*o).is_some_and(|s| !s.state().down())
                    });
                    if !blocked {
                        self.feed(id, Event::Stop);
                    }
                }
            }
        }
    }

    // ----- carrying out actions ------------------------------------------

    fn spawn(&mut self, id: usize) {
        let Some(s) = self.table.get(id) else {
            return;
        };
        let Some(def) = s.def.clone() else {
            let why = "no valid definition".to_string();
            self.queue
                .push_front(Work::Feed(id, Event::SpawnFailed(why)));
            return;
        };
        let name = s.name.clone();
        // Output of an earlier run still open (a leftover child holds it):
        // keep what it holds, then let it go.
        for pipe in Pipe::ALL {
            self.read_pipe(id, pipe);
            self.close_pipe(id, pipe);
        }
        match self.os.spawn(&name, &def, &self.cfg.environment) {
            Ok(sp) => {
                let gen = self.table.next_gen();
                if let Some(fd) = &sp.pidfd {
                    self.os.watch(fd.as_raw_fd(), token(id, gen, Source::Exit));
                }
                if let Some(pipes) = sp.pipes {
                    for pipe in Pipe::ALL {
                        if let Some(fd) = pipes.get(pipe.index()) {
                            self.os
                                .watch(fd.as_raw_fd(), token(id, gen, Source::Out(pipe)));
                        }
                    }
                    if let Some(s) = self.table.get_mut(id) {
                        s.out.attach(pipes, gen);
                    }
                }
                if let Some(s) = self.table.get_mut(id) {
                    s.status_text = None;
                }
                let pid = sp.pid;
                self.table.set_proc(
                    id,
                    Proc {
                        pid,
                        pidfd: sp.pidfd,
                        gen,
                    },
                );
                self.log_event(id, &format!("started with PID {pid}"));
            }
            // Not its fault: the machine defers it (and says so once).
            Err(SpawnError::Resources(what)) => self
                .queue
                .push_front(Work::Feed(id, Event::OutOfResources(what))),
            Err(SpawnError::Fault(why)) => {
                self.log_event(id, &format!("start failed: {why}"));
                self.queue
                    .push_front(Work::Feed(id, Event::SpawnFailed(why)));
            }
        }
    }

    /// Carry out a signal action: the stop signal (`KillSignal`), SIGABRT
    /// for a missed watchdog, or SIGKILL at the stop timeout. Any signal
    /// but SIGKILL is followed by SIGCONT to the same group, as systemd
    /// does: a stopped process (SIGSTOP, a debugger) would otherwise keep
    /// it pending until the SIGKILL at `TimeoutStopSec`.
    fn signal(&mut self, id: usize, action: Action) {
        let Some(s) = self.table.get(id) else {
            return;
        };
        let Some(p) = s.proc_() else { return };
        let timeout = s.policy().timeout_stop_sec;
        let kill_signal = s.def.as_ref().map_or(Signal::SIGTERM, |d| d.kill_signal);
        let (sig, what) = match action {
            Action::Abort => (Signal::SIGABRT, "watchdog timeout: sent"),
            Action::Kill => (Signal::SIGKILL, "stop timeout: sent"),
            _ => (kill_signal, "stopping: sent"),
        };
        let sent = self.os.signal(p, sig);
        if sent.is_ok() && !matches!(sig, Signal::SIGKILL | Signal::SIGCONT) {
            // Its failure says nothing more than the signal's success did.
            let _ = self.os.signal(p, Signal::SIGCONT);
        }
        let msg = match (sig, sent) {
            (Signal::SIGKILL, Ok(())) => format!("{what} SIGKILL to all its processes"),
            (sig, Ok(())) => format!("{what} {sig} (SIGKILL after {timeout}s)"),
            (sig, Err(e)) => format!("cannot send {sig}: {e}"),
        };
        self.log_event(id, &msg);
    }

    /// The current process of `id` has exited and is not reaped yet: kill
    /// what is left of its group (the id cannot be recycled while the
    /// leader is a zombie), reap it, log what it wrote, tell the machine.
    /// False if it could not be reaped.
    fn proc_exited(&mut self, id: usize) -> bool {
        let Some(p) = self.table.get(id).and_then(|s| s.proc_()) else {
            return false;
        };
        self.os.kill_leftovers(p);
        let pid = p.pid;
        let Some(exit) = self.os.reap(pid) else {
            return false;
        };
        if let Some(p) = self.table.take_proc(id) {
            if let Some(fd) = &p.pidfd {
                self.os.unwatch(fd.as_raw_fd());
            }
        }
        for pipe in Pipe::ALL {
            if !self.read_pipe(id, pipe) {
                self.end_partial_line(id, pipe);
            }
        }
        self.log_event(id, &exit.describe());
        self.queue.push_back(Work::Feed(id, Event::Exited(exit)));
        true
    }

    // ----- output ----------------------------------------------------------

    fn followed(&self, id: usize) -> bool {
        let name = self.table.get(id).map(|s| s.name.as_str());
        self.followers
            .values()
            .any(|f| f.as_deref().is_none_or(|f| Some(f) == name))
    }

    /// Read a pipe into the service's log. True if data is left.
    fn read_pipe(&mut self, id: usize, pipe: Pipe) -> bool {
        let followed = self.followed(id);
        let mut buf = std::mem::take(&mut self.pipe_buf);
        buf.resize(crate::logs::pipe::PIPE_READ, 0);
        let mut lines = Vec::new();
        let r = match self.table.get_mut(id) {
            Some(s) => s
                .out
                .read(pipe, &self.logset, followed, &mut buf, &mut lines),
            None => crate::logs::pipe::Drained::Empty,
        };
        self.pipe_buf = buf;
        self.forward(id, lines);
        match r {
            crate::logs::pipe::Drained::Empty => false,
            crate::logs::pipe::Drained::More => true,
            crate::logs::pipe::Drained::Eof => {
                self.close_pipe(id, pipe);
                false
            }
        }
    }

    /// The run ended and its pipe is drained: a last line it left without
    /// a newline is its own and is logged now, before its exit line,
    /// though a child it left may still hold the pipe (what that child
    /// writes starts a new line).
    fn end_partial_line(&mut self, id: usize, pipe: Pipe) {
        let mut lines = Vec::new();
        if let Some(s) = self.table.get_mut(id) {
            s.out.log.close_stream(&self.logset, pipe, &mut lines);
        }
        self.forward(id, lines);
    }

    fn close_pipe(&mut self, id: usize, pipe: Pipe) {
        let mut lines = Vec::new();
        let fd = match self.table.get_mut(id) {
            Some(s) => s.out.close(pipe, &self.logset, &mut lines),
            None => None,
        };
        if let Some(fd) = fd {
            self.os.unwatch(fd.as_raw_fd());
        }
        self.forward(id, lines);
        self.release_log(id);
    }

    /// A service with no process and no open pipe writes to its log
    /// rarely: its file is let go at the end of the turn if it is still
    /// so then (the next line reopens it), so a stopped service holds no
    /// fd of init's, while a restart within the turn (`RestartSec = 0`)
    /// writes its exit, restart and start lines through one open file.
    fn release_log(&mut self, id: usize) {
        self.idle_logs.insert(id);
    }

    fn release_logs(&mut self) {
        for id in std::mem::take(&mut self.idle_logs) {
            if let Some(s) = self.table.get_mut(id) {
                if s.proc_().is_none() && Pipe::ALL.iter().all(|p| s.out.fd(*p).is_none()) {
                    s.out.log.close_file();
                }
            }
        }
    }

    fn log_event(&mut self, id: usize, msg: &str) {
        let mut lines = Vec::new();
        if let Some(s) = self.table.get_mut(id) {
            s.out.log.event(&self.logset, msg, &mut lines);
            if matches!(s.state(), State::Failed | State::Deferred)
                || msg.starts_with("start failed")
            {
                warn!("{}: {msg}", s.name);
            } else {
                info!("{}: {msg}", s.name);
            }
        }
        self.forward(id, lines);
        self.release_log(id);
    }

    /// New log lines of a service go to its followers, and to those of
    /// every service with its name.
    fn forward(&mut self, id: usize, lines: Vec<String>) {
        if lines.is_empty() || self.followers.is_empty() {
            return;
        }
        let service = self
            .table
            .get(id)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut one = Vec::new();
        let mut all = Vec::new();
        for (c, f) in &self.followers {
            match f {
                Some(f) if *f == service => one.push(*c),
                Some(_) => {}
                None => all.push(*c),
            }
        }
        // In pieces, each shared by all its followers (encoded once for
        // them by `Clients`).
        let mut lines = lines.into_iter().peekable();
        while lines.peek().is_some() {
            let mut piece = Vec::new();
            let mut bytes = 0;
            while let Some(l) =
                lines.next_if(|l| piece.is_empty() || bytes + l.len() <= FOLLOW_PIECE)
            {
                bytes += l.len();
                piece.push(l);
            }
            if !all.is_empty() {
                let logs = if one.is_empty() {
                    std::mem::take(&mut piece)
                } else {
                    piece.clone()
                };
                let service = service.clone();
                let r = Response::ServicesLogs {
                    logs: vec![ServiceLines { service, logs }],
                };
                self.out.push(Out::Broadcast(all.clone(), r));
            }
            if !one.is_empty() {
                let r = Response::ServiceLogs { logs: piece };
                self.out.push(Out::Broadcast(one.clone(), r));
            }
        }
    }

    // ----- loading ---------------------------------------------------------

    fn add_service(&mut self, u: UnitFile) -> usize {
        warn_of(&u);
        if let Err(e) = &u.def {
            error!("{}: {e}", u.path.display());
        }
        self.table.add(u)
    }

    /// A file with no listed service of its name: a service a reload
    /// removed that is not gone yet comes back as the same service (its
    /// process, log and cgroup; no stop for it any more), any other is
    /// added. Starting it is the caller's.
    fn add_or_revive(&mut self, u: UnitFile) -> usize {
        let Some(id) = self.table.revive(&u.name) else {
            return self.add_service(u);
        };
        warn_of(&u);
        let path = u.path.clone();
        self.stop_queue.remove(&id);
        if let Err(e) = self.update_service(id, u) {
            error!("{}: {e}", path.display());
        }
        id
    }

    fn rebuild_deps(&mut self, report: bool) {
        self.deps = deps::Deps::build(&self.table);
        if report {
            for w in &self.deps.warnings {
                warn!("{w}");
            }
            for c in &self.deps.cycles {
                warn!(
                    "dependency cycle: {c}; these services start after the others, in name order"
                );
            }
        }
    }

    fn forget_removed(&mut self) {
        if !self.table.any_removed() {
            return;
        }
        let gone: Vec<usize> = self
            .table
            .iter()
            .filter(|(_, s)| s.removed() && s.state().down() && s.proc_().is_none())
            .map(|(id, _)| id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in gone {
            for pipe in Pipe::ALL {
                self.close_pipe(id, pipe);
            }
            if let Some(s) = self.table.remove(id) {
                self.os.release(&s.name);
                let (lines, bytes) = s.out.log.dropped();
                let (l, b) = self.forgotten_dropped;
                self.forgotten_dropped = (l.saturating_add(lines), b.saturating_add(bytes));
            }
            self.stop_queue.remove(&id);
        }
        self.rebuild_deps(false);
    }
}

/// A service file's warnings, in init's log.
fn warn_of(u: &UnitFile) {
    for w in &u.warnings {
        warn!("{}: {w}", u.path.display());
    }
}

pub fn log_settings(cfg: &InitConfig) -> LogSettings {
    LogSettings {
        dir: PathBuf::from(&cfg.log_dir),
        max_size: cfg.max_log_size,
        max_files: cfg.max_log_files,
    }
}
