//! The per-service state machine: every state, what it means, and the
//! decision for every (state, event) pair, in `Machine::on`. The match there
//! names each pair explicitly (no wildcard arms), so adding a state or an
//! event makes the compiler ask for each decision. It does no IO: the
//! supervisor feeds it events and carries out the `Step` it returns; status,
//! list and held answers read the machine instead of re-deriving it.

use crate::os::Exit;
use crate::unit::{Kind, ServiceDef};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: never started, stopped, or exited cleanly with no restart.
    Inactive,
    /// Its file is invalid and nothing of it runs; `reason` says why.
    Invalid,
    /// Wants to run; these required services are not up yet.
    Waiting {
        on: Vec<String>,
    },
    /// Exec'd, not yet up: a notify service before `READY=1` (deadline:
    /// `TimeoutStartSec`), a oneshot until it exits.
    Starting,
    Running,
    /// A oneshot that ran to completion (exit 0): up, with no process.
    Exited,
    /// The stop signal was sent; SIGKILL to the group at the deadline.
    Stopping,
    /// Exited; started again at the deadline.
    AutoRestart,
    /// Start failed, exited with failure, start limit hit, or a requirement failed.
    Failed,
    /// Wants to run, but its last start found init out of resources (fds,
    /// processes, memory): not its fault, so that start counts toward
    /// nothing (not the start limit, not a run; a restart is counted once,
    /// however often it is deferred); started again at the
    /// deadline, [`DEFER_FIRST`] after the first such failure, doubling up
    /// to [`DEFER_MAX`].
    Deferred,
}

/// The first wait of a deferred start.
pub const DEFER_FIRST: Duration = Duration::from_secs(1);
/// The longest wait of a deferred start.
pub const DEFER_MAX: Duration = Duration::from_secs(30);

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Invalid => "invalid",
            State::Waiting { .. } => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Exited => "exited",
            State::Stopping => "stopping",
            State::AutoRestart => "auto-restart",
            State::Failed => "failed",
            State::Deferred => "deferred",
        }
    }
    /// A process of the service is alive.
    pub fn active(&self) -> bool {
        match self {
            State::Starting | State::Running | State::Stopping => true,
            State::Inactive
            | State::Exited
            | State::Invalid
            | State::Waiting { .. }
            | State::AutoRestart
            | State::Failed
            | State::Deferred => false,
        }
    }
    /// The required services it waits for (empty unless waiting).
    pub fn waiting_on(&self) -> &[String] {
        match self {
            State::Waiting { on } => on,
            State::Inactive
            | State::Invalid
            | State::Starting
            | State::Running
            | State::Exited
            | State::Stopping
            | State::AutoRestart
            | State::Failed
            | State::Deferred => &[],
        }
    }
    /// Neither running nor about to run.
    pub fn down(&self) -> bool {
        match self {
            State::Inactive | State::Invalid | State::Failed | State::Exited => true,
            State::Waiting { .. }
            | State::Starting
            | State::Running
            | State::Stopping
            | State::AutoRestart
            | State::Deferred => false,
        }
    }
}

/// Can the service's requirements let it start now?
#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Ready,
    Wait(Vec<String>),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start: by a user (`manual`, clears the start limit) or automatically
    /// (boot, a requirement came up, restart timer).
    Start {
        manual: bool,
        req: Req,
    },
    Stop,
    Restart,
    SpawnFailed(String),
    /// The spawn failed for lack of resources (fds, processes, memory), not
    /// through the service's fault; what ran out.
    OutOfResources(String),
    /// The current process exited (already reaped).
    Exited(Exit),
    /// The machine's own deadline passed.
    Deadline,
    /// A reload found the file invalid.
    Invalidated(String),
    /// A reload found the file valid again.
    Validated,
    /// The service said `READY=1`.
    Ready,
    /// The service said `WATCHDOG=1`.
    WatchdogPing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Spawn the process now (state is already Running).
    Spawn,
    /// Send the stop signal (`KillSignal`) to the service.
    Term,
    /// SIGABRT to the service (its watchdog ran out); SIGKILL follows at
    /// the stop timeout.
    Abort,
    /// SIGKILL the process group.
    Kill,
    /// Compute requirements and feed `Start { manual, .. }`: `manual` when
    /// a user asked (restart, or start during a stop), so it counts as
    /// theirs (a fresh start limit, no automatic restart).
    StartAgain {
        manual: bool,
    },
}

/// What `on` decided: the action to carry out and the line to log, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub log: Option<String>,
    /// A run ended for good on its own (no restart follows): Some(true) if
    /// it succeeded. What `SuccessAction` / `FailureAction` act on; not set
    /// for a stop by a user or a shutdown.
    pub ended: Option<bool>,
}

/// The knobs of a definition the machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub restart: crate::unit::RestartPolicy,
    pub restart_sec: u64,
    pub timeout_stop_sec: u64,
    pub burst: u32,
    pub interval_sec: u64,
    pub kind: crate::unit::Kind,
    pub timeout_start_sec: Option<u64>,
    pub watchdog_sec: u64,
}

impl Policy {
    /// The policy of a service without a valid definition.
    pub const NONE: Policy = Policy {
        restart: crate::unit::RestartPolicy::No,
        restart_sec: 5,
        timeout_stop_sec: 10,
        burst: 5,
        interval_sec: 10,
        kind: crate::unit::Kind::Simple,
        timeout_start_sec: None,
        watchdog_sec: 0,
    };
}

impl From<&ServiceDef> for Policy {
    fn from(d: &ServiceDef) -> Self {
        Policy {
            restart: d.restart,
            restart_sec: d.restart_sec,
            timeout_stop_sec: d.timeout_stop_sec,
            burst: d.start_limit_burst,
            interval_sec: d.start_limit_interval_sec,
            kind: d.kind,
            timeout_start_sec: d.timeout_start_sec,
            watchdog_sec: d.watchdog_sec,
        }
    }
}

/// `now + secs`, or None when that is past what `Instant` can hold (a
/// deadline that far away never fires).
fn after(now: Instant, secs: u64) -> Option<Instant> {
    now.checked_add(Duration::from_secs(secs))
}

#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    /// Why it is failed or invalid; the last failure while auto-restarting.
    reason: Option<String>,
    deadline: Option<Instant>,
    /// A restart is in progress: start again once stopped.
    start_after_stop: bool,
    /// Stopping because the run failed (start timeout, watchdog): once it
    /// has exited, the run ends as a failure, for why.
    stop_failure: Option<String>,
    /// Set by this step when a run ended for good (see `Step::ended`).
    ended: Option<bool>,
    /// Automatic restarts so far (not the first start, not manual ones).
    restart_count: u32,
    last_exit: Option<Exit>,
    /// Runs started so far (spawns): a held restart answer compares it.
    runs: u64,
    /// When the current run was started.
    run_started: Option<Instant>,
    /// Start times inside the start-limit window.
    starts: VecDeque<Instant>,
    /// Starts in a row deferred for lack of resources (0 unless running
    /// or deferred).
    deferrals: u32,
    /// Invalid, and was to run again when its file became invalid (a
    /// restart, a wait for requirements, a deferred start): it starts once
    /// the file is valid again, unless it is stopped meanwhile.
    resume: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: State::Inactive,
            reason: None,
            deadline: None,
            start_after_stop: false,
            stop_failure: None,
            ended: None,
            restart_count: 0,
            last_exit: None,
            runs: 0,
            run_started: None,
            starts: VecDeque::new(),
            deferrals: 0,
            resume: false,
        }
    }
}

impl Machine {
    /// A machine for a file that could not be loaded.
    pub fn invalid(reason: String) -> Self {
        Machine {
            state: State::Invalid,
            reason: Some(reason),
            ..Machine::default()
        }
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    /// Why it is failed, invalid, waiting, being stopped as a failure
    /// (start timeout, watchdog), or why its last run ended badly.
    pub fn reason(&self) -> Option<String> {
        match self.state.waiting_on() {
            [] => self.stop_failure.clone().or_else(|| self.reason.clone()),
            on => Some(format!("waiting for {}", on.join(", "))),
        }
    }
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }
    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }
    pub fn runs(&self) -> u64 {
        self.runs
    }
    pub fn run_started(&self) -> Option<Instant> {
        self.run_started
    }
    /// Stopping, and will start again once the process has exited.
    pub fn restart_pending(&self) -> bool {
        self.start_after_stop
    }
    /// Stopping because the run failed (start timeout, watchdog).
    pub fn stopping_as_failure(&self) -> bool {
        self.stop_failure.is_some()
    }

    pub fn on(&mut self, ev: Event, p: &Policy, now: Instant) -> Step {
        use Event as E;
        use State as S;
        let before = self.state.clone();
        self.ended = None;
        let action = match (&self.state, ev) {
            // ----- start
            (S::Starting | S::Running | S::Exited, E::Start { .. }) => Action::None,
            (S::Invalid, E::Start { .. } | E::Restart) => Action::None,
            (S::Stopping, E::Start { .. } | E::Restart) => {
                self.start_after_stop = true;
                self.stop_failure = None;
                Action::None
            }
            (
                S::Inactive | S::Waiting { .. } | S::AutoRestart | S::Failed | S::Deferred,
                E::Start { manual, req },
            ) => self.start(manual, req, p, now),
            (
                S::Inactive | S::Waiting { .. } | S::AutoRestart | S::Failed | S::Deferred,
                E::Restart,
            ) => Action::StartAgain { manual: true },
            // A oneshot that is done runs again on restart.
            (S::Exited, E::Restart) => {
                self.state = S::Inactive;
                Action::StartAgain { manual: true }
            }
            // ----- stop
            (S::Starting | S::Running, E::Stop) => self.term(false, p, now),
            (S::Starting | S::Running, E::Restart) => self.term(true, p, now),
            (S::Stopping, E::Stop) => {
                self.start_after_stop = false;
                self.stop_failure = None;
                Action::None
            }
            (S::Exited, E::Stop) => {
                self.state = S::Inactive;
                Action::None
            }
            (S::Waiting { .. } | S::AutoRestart | S::Deferred, E::Stop) => {
                self.state = S::Inactive;
                self.deadline = None;
                self.reason = None;
                Action::None
            }
            (S::Invalid, E::Stop) => {
                self.resume = false;
                Action::None
            }
            (S::Inactive | S::Failed, E::Stop) => Action::None,
            // ----- the process ended
            (S::Stopping, E::Exited(exit)) => {
                self.last_exit = Some(exit);
                self.ended();
                self.state = S::Inactive;
                let failure = self.stop_failure.take();
                if std::mem::take(&mut self.start_after_stop) {
                    Action::StartAgain { manual: true }
                } else if let Some(why) = failure {
                    self.after_end(false, why, false, p, now)
                } else {
                    Action::None
                }
            }
            // A oneshot is done when it exits 0.
            (S::Starting, E::Exited(exit)) if p.kind == Kind::Oneshot && exit.success() => {
                self.last_exit = Some(exit);
                self.ended();
                self.state = S::Exited;
                self.reason = None;
                self.ended = Some(true);
                Action::None
            }
            // A notify service that exits before it is ready failed to start.
            (S::Starting, E::Exited(exit)) if p.kind == Kind::Notify => {
                self.last_exit = Some(exit);
                self.ended();
                let why = format!("exited before it was ready: {}", exit.reason());
                self.after_end(false, why, false, p, now)
            }
            (S::Starting | S::Running, E::Exited(exit)) => {
                self.last_exit = Some(exit);
                self.ended();
                self.after_end(exit.success(), exit.reason(), false, p, now)
            }
            (S::Starting | S::Running, E::SpawnFailed(why)) => {
                self.ended();
                self.after_end(false, why, true, p, now)
            }
            (S::Starting | S::Running, E::OutOfResources(what)) => self.defer(what, now),
            // No process in these states: an exit or spawn failure cannot
            // be theirs, and changes nothing.
            (
                S::Inactive
                | S::Invalid
                | S::Exited
                | S::Waiting { .. }
                | S::AutoRestart
                | S::Failed
                | S::Deferred,
                E::Exited(_) | E::SpawnFailed(_) | E::OutOfResources(_),
            ) => Action::None,
            (S::Stopping, E::SpawnFailed(_) | E::OutOfResources(_)) => Action::None,
            // ----- deadlines
            (S::Stopping, E::Deadline) => {
                self.deadline = None;
                Action::Kill
            }
            (S::AutoRestart | S::Deferred, E::Deadline) => {
                self.deadline = None;
                Action::StartAgain { manual: false }
            }
            // Not ready within TimeoutStartSec: stopped, and a failure.
            (S::Starting, E::Deadline) => {
                let secs = p.timeout_start_sec.unwrap_or(0);
                let action = self.term(false, p, now);
                self.stop_failure = Some(format!("not ready within {secs}s (TimeoutStartSec)"));
                action
            }
            // No WATCHDOG=1 within WatchdogSec: aborted, and a failure.
            (S::Running, E::Deadline) if self.deadline.is_some() => {
                self.term(false, p, now);
                self.stop_failure = Some(format!(
                    "watchdog timeout: no WATCHDOG=1 within {}s",
                    p.watchdog_sec
                ));
                Action::Abort
            }
            (
                S::Inactive | S::Invalid | S::Waiting { .. } | S::Running | S::Exited | S::Failed,
                E::Deadline,
            ) => Action::None,
            // ----- what the service says (notify)
            (S::Starting, E::Ready) if p.kind == Kind::Notify => {
                self.state = S::Running;
                self.deadline = self.watchdog(p, now);
                Action::None
            }
            (S::Running, E::WatchdogPing) => {
                self.deadline = self.watchdog(p, now);
                Action::None
            }
            (
                S::Inactive
                | S::Invalid
                | S::Waiting { .. }
                | S::Starting
                | S::Running
                | S::Exited
                | S::Stopping
                | S::AutoRestart
                | S::Failed
                | S::Deferred,
                E::Ready | E::WatchdogPing,
            ) => Action::None,
            // ----- the file changed
            (
                S::Inactive
                | S::Invalid
                | S::Exited
                | S::Waiting { .. }
                | S::AutoRestart
                | S::Failed
                | S::Deferred,
                E::Invalidated(why),
            ) => {
                self.resume = match self.state {
                    S::AutoRestart | S::Waiting { .. } | S::Deferred => true,
                    S::Invalid => self.resume,
                    _ => false,
                };
                self.state = S::Invalid;
                self.deadline = None;
                self.reason = Some(why);
                Action::None
            }
            // The running process keeps the definition it was started with.
            (S::Starting | S::Running | S::Stopping, E::Invalidated(_)) => Action::None,
            (S::Invalid, E::Validated) => {
                self.state = S::Inactive;
                self.reason = None;
                if std::mem::take(&mut self.resume) {
                    Action::StartAgain { manual: false }
                } else {
                    Action::None
                }
            }
            (
                S::Inactive
                | S::Waiting { .. }
                | S::Starting
                | S::Running
                | S::Exited
                | S::Stopping
                | S::AutoRestart
                | S::Failed
                | S::Deferred,
                E::Validated,
            ) => Action::None,
        };
        // A streak of deferred starts ends when the service leaves them.
        if !matches!(self.state, S::Starting | S::Running | S::Deferred) {
            self.deferrals = 0;
        }
        let log = self.transition_line(&before, action, p);
        Step {
            action,
            log,
            ended: self.ended.take(),
        }
    }

    fn start(&mut self, manual: bool, req: Req, p: &Policy, now: Instant) -> Action {
        self.deadline = None;
        // A start by hand begins a fresh start limit, even if it must wait.
        if manual {
            self.starts.clear();
        }
        // An automatic restart counts when it is decided, as systemd's
        // NRestarts, whether it starts at once or waits for a requirement.
        if self.state == State::AutoRestart && !manual {
            self.restart_count = self.restart_count.saturating_add(1);
        }
        match req {
            Req::Ready => {
                self.starts.push_back(now);
                self.reason = None;
                match p.kind {
                    Kind::Simple => {
                        self.state = State::Running;
                    }
                    Kind::Notify | Kind::Oneshot => {
                        self.state = State::Starting;
                        self.deadline = p.timeout_start_sec.and_then(|s| after(now, s));
                    }
                }
                self.runs += 1;
                self.run_started = Some(now);
                Action::Spawn
            }
            Req::Wait(on) => {
                self.state = State::Waiting { on };
                self.reason = None;
                Action::None
            }
            Req::Failed(why) => {
                self.state = State::Failed;
                self.reason = Some(why);
                Action::None
            }
        }
    }

    /// The watchdog deadline of a ready notify service (None: no watchdog).
    fn watchdog(&self, p: &Policy, now: Instant) -> Option<Instant> {
        (p.kind == Kind::Notify && p.watchdog_sec > 0)
            .then(|| after(now, p.watchdog_sec))
            .flatten()
    }

    fn term(&mut self, restart: bool, p: &Policy, now: Instant) -> Action {
        self.start_after_stop = restart;
        self.stop_failure = None;
        self.state = State::Stopping;
        self.deadline = after(now, p.timeout_stop_sec);
        Action::Term
    }

    fn ended(&mut self) {
        self.deadline = None;
        self.run_started = None;
    }

    /// The spawn found init out of resources: not a run. Take back what
    /// `start` counted (a restart it counted stays counted: the deferred
    /// start is the same restart) and try again later, waiting longer each
    /// time in a row.
    fn defer(&mut self, what: String, now: Instant) -> Action {
        self.starts.pop_back();
        self.runs = self.runs.saturating_sub(1);
        self.ended();
        self.deferrals = self.deferrals.saturating_add(1);
        self.state = State::Deferred;
        self.reason = Some(format!("waiting for resources: {what}"));
        let doublings = self.deferrals.saturating_sub(1).min(5);
        self.deadline = now.checked_add(DEFER_FIRST.saturating_mul(1 << doublings).min(DEFER_MAX));
        Action::None
    }

    /// A run ended (exit or failed spawn): restart, fail, or rest.
    fn after_end(
        &mut self,
        success: bool,
        why: String,
        spawn_failed: bool,
        p: &Policy,
        now: Instant,
    ) -> Action {
        if !p.restart.restarts(success) {
            self.state = if success {
                State::Inactive
            } else {
                State::Failed
            };
            self.reason = (!success).then_some(why);
            self.ended = Some(success);
            return Action::None;
        }
        let window = Duration::from_secs(p.interval_sec);
        while self
            .starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.starts.pop_front();
        }
        if self.starts.len() >= p.burst as usize {
            self.ended = Some(false);
            self.state = State::Failed;
            self.reason = Some(format!(
                "start limit hit: {} starts within {}s ({why})",
                self.starts.len(),
                p.interval_sec
            ));
            return Action::None;
        }
        self.state = State::AutoRestart;
        self.reason = (!success).then_some(why);
        if p.restart_sec == 0 && !spawn_failed {
            // No delay: start again in this turn. A failing exec still goes
            // through the timer, so it cannot spin inside one turn.
            return Action::StartAgain { manual: false };
        }
        // A deadline beyond what the clock can hold never fires: the
        // service stays in auto-restart until started or stopped by hand.
        self.deadline = after(now, p.restart_sec);
        Action::None
    }

    /// The lifecycle line for a transition that does not log itself (a
    /// spawn or a signal logs what it did when it is carried out).
    fn transition_line(&self, before: &State, action: Action, p: &Policy) -> Option<String> {
        // (Entering auto-restart is logged even when it starts again at once.)
        let restarting = self.state == State::AutoRestart;
        if *before == self.state || (action != Action::None && !restarting) {
            return None;
        }
        match &self.state {
            State::Inactive if *before == State::Stopping => Some("stopped".into()),
            State::Running if *before == State::Starting => Some("ready".into()),
            State::Exited => Some("finished".into()),
            State::Inactive | State::Starting | State::Running | State::Stopping => None,
            State::Invalid => self.reason.as_ref().map(|r| format!("invalid: {r}")),
            State::Failed => Some(format!("failed: {}", self.reason.as_deref().unwrap_or(""))),
            State::AutoRestart => Some(format!("restarting in {}s", p.restart_sec)),
            State::Waiting { .. } => self.reason(),
            // Once per streak, not at every retry.
            State::Deferred if self.deferrals == 1 => Some(format!(
                "{}; trying again in {}s, then less often (at most every {}s)",
                self.reason.as_deref().unwrap_or(""),
                DEFER_FIRST.as_secs(),
                DEFER_MAX.as_secs()
            )),
            State::Deferred => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::RestartPolicy;

    fn policy(restart: RestartPolicy) -> Policy {
        Policy {
            restart,
            restart_sec: 2,
            timeout_stop_sec: 3,
            burst: 3,
            interval_sec: 10,
            kind: Kind::Simple,
            timeout_start_sec: None,
            watchdog_sec: 0,
        }
    }
    const OK: Exit = Exit {
        code: 0,
        signal: None,
    };
    const BAD: Exit = Exit {
        code: 3,
        signal: None,
    };
    fn start() -> Event {
        Event::Start {
            manual: false,
            req: Req::Ready,
        }
    }
    fn act(m: &mut Machine, ev: Event, p: &Policy, t: Instant) -> Action {
        m.on(ev, p, t).action
    }

    #[test]
    fn always_restarts_after_restart_sec_and_counts() {
        let p = policy(RestartPolicy::Always);
        let mut m = Machine::default();
        let t = Instant::now();
        assert_eq!(act(&mut m, start(), &p, t), Action::Spawn);
        let step = m.on(Event::Exited(OK), &p, t);
        assert_eq!(step.action, Action::None);
        assert_eq!(step.log.as_deref(), Some("restarting in 2s"));
        assert_eq!(m.state, State::AutoRestart);
        assert_eq!(m.deadline, Some(t + Duration::from_secs(2)));
        assert_eq!(
            act(&mut m, Event::Deadline, &p, t),
            Action::StartAgain { manual: false }
        );
        assert_eq!(act(&mut m, start(), &p, t), Action::Spawn);
        assert_eq!(m.restart_count, 1);
        assert_eq!(m.runs, 2);
    }

    #[test]
    fn restart_sec_zero_starts_again_at_once_but_not_after_a_failed_exec() {
        let p = Policy {
            restart_sec: 0,
            ..policy(RestartPolicy::Always)
        };
        let mut m = Machine::default();
        let t = Instant::now();
        act(&mut m, start(), &p, t);
        assert_eq!(
            act(&mut m, Event::Exited(BAD), &p, t),
            Action::StartAgain { manual: false }
        );
        assert_eq!(m.state, State::AutoRestart);
        act(&mut m, start(), &p, t);
        assert_eq!(
            act(&mut m, Event::SpawnFailed("no".into()), &p, t),
            Action::None
        );
        assert_eq!(m.deadline, Some(t));
    }

    #[test]
    fn policies_decide_on_exit() {
        let t = Instant::now();
        for (pol, exit, want) in [
            (RestartPolicy::No, OK, State::Inactive),
            (RestartPolicy::No, BAD, State::Failed),
            (RestartPolicy::OnFailure, OK, State::Inactive),
            (RestartPolicy::OnFailure, BAD, State::AutoRestart),
            (RestartPolicy::OnSuccess, OK, State::AutoRestart),
            (RestartPolicy::OnSuccess, BAD, State::Failed),
        ] {
            let mut m = Machine::default();
            m.on(start(), &policy(pol), t);
            m.on(Event::Exited(exit), &policy(pol), t);
            assert_eq!(m.state, want, "{pol:?} {exit:?}");
        }
    }

    #[test]
    fn start_limit_fails_and_manual_start_clears_it() {
        let p = policy(RestartPolicy::Always);
        let mut m = Machine::default();
        let t = Instant::now();
        for _ in 0..3 {
            m.on(start(), &p, t);
            m.on(Event::Exited(BAD), &p, t);
        }
        assert_eq!(m.state, State::Failed);
        assert!(m.reason().unwrap().starts_with("start limit hit"));
        let manual = Event::Start {
            manual: true,
            req: Req::Ready,
        };
        assert_eq!(act(&mut m, manual, &p, t), Action::Spawn);
        m.on(Event::Exited(BAD), &p, t);
        assert_eq!(m.state, State::AutoRestart);
    }

    #[test]
    fn stop_escalates_and_suppresses_restart() {
        let p = policy(RestartPolicy::Always);
        let mut m = Machine::default();
        let t = Instant::now();
        m.on(start(), &p, t);
        assert_eq!(act(&mut m, Event::Stop, &p, t), Action::Term);
        assert_eq!(m.deadline, Some(t + Duration::from_secs(3)));
        assert_eq!(act(&mut m, Event::Deadline, &p, t), Action::Kill);
        let step = m.on(Event::Exited(BAD), &p, t);
        assert_eq!(step.log.as_deref(), Some("stopped"));
        assert_eq!(m.state, State::Inactive);
    }

    #[test]
    fn restart_waits_for_the_old_process() {
        let p = policy(RestartPolicy::No);
        let mut m = Machine::default();
        let t = Instant::now();
        m.on(start(), &p, t);
        assert_eq!(act(&mut m, Event::Restart, &p, t), Action::Term);
        assert!(m.restart_pending());
        assert_eq!(
            act(&mut m, Event::Exited(OK), &p, t),
            Action::StartAgain { manual: true }
        );
        assert_eq!(m.restart_count, 0);
    }

    #[test]
    fn requirements() {
        let p = policy(RestartPolicy::No);
        let mut m = Machine::default();
        let t = Instant::now();
        let wait = Event::Start {
            manual: false,
            req: Req::Wait(vec!["db".into()]),
        };
        let step = m.on(wait, &p, t);
        assert_eq!(step.action, Action::None);
        assert_eq!(step.log.as_deref(), Some("waiting for db"));
        assert_eq!(
            m.state,
            State::Waiting {
                on: vec!["db".into()]
            }
        );
        let fail = Event::Start {
            manual: false,
            req: Req::Failed("required service 'db' failed".into()),
        };
        m.on(fail, &p, t);
        assert_eq!(m.state, State::Failed);
    }

    #[test]
    fn spawn_failure_follows_the_policy() {
        let t = Instant::now();
        let mut m = Machine::default();
        let p = policy(RestartPolicy::No);
        m.on(start(), &p, t);
        m.on(Event::SpawnFailed("exec x: No such file".into()), &p, t);
        assert_eq!(m.state, State::Failed);
        assert_eq!(m.reason().as_deref(), Some("exec x: No such file"));
    }

    #[test]
    fn stale_events_change_nothing_without_a_process() {
        let p = policy(RestartPolicy::Always);
        let t = Instant::now();
        let mut m = Machine::default();
        for ev in [
            Event::Exited(BAD),
            Event::Deadline,
            Event::SpawnFailed("x".into()),
        ] {
            assert_eq!(act(&mut m, ev, &p, t), Action::None);
            assert_eq!(m.state, State::Inactive);
        }
        m.on(start(), &p, t);
        m.on(Event::Exited(BAD), &p, t);
        // A second exit of the same run: nothing.
        assert_eq!(act(&mut m, Event::Exited(BAD), &p, t), Action::None);
        assert_eq!(m.state, State::AutoRestart);
    }

    #[test]
    fn out_of_resources_defers_backs_off_and_counts_nothing() {
        let p = policy(RestartPolicy::No);
        let t = Instant::now();
        let mut m = Machine::default();
        let no_fds = || Event::OutOfResources("Too many open files".into());
        assert_eq!(act(&mut m, start(), &p, t), Action::Spawn);
        let step = m.on(no_fds(), &p, t);
        assert_eq!(step.action, Action::None);
        assert_eq!(
            step.log.as_deref(),
            Some("waiting for resources: Too many open files; trying again in 1s, then less often (at most every 30s)")
        );
        assert_eq!(m.state.name(), "deferred");
        assert_eq!(m.deadline, Some(t + DEFER_FIRST));
        for want in [2, 4, 8, 16, 30, 30, 30] {
            assert_eq!(
                act(&mut m, Event::Deadline, &p, t),
                Action::StartAgain { manual: false }
            );
            assert_eq!(act(&mut m, start(), &p, t), Action::Spawn);
            assert_eq!(m.on(no_fds(), &p, t).log, None, "said once per streak");
            assert_eq!(m.deadline, Some(t + Duration::from_secs(want)));
        }
        assert!(m.starts.is_empty());
        assert_eq!((m.runs, m.restart_count), (0, 0));
        // Nothing of a process in these states: it changes nothing.
        for ev in [no_fds(), Event::Exited(BAD), Event::SpawnFailed("x".into())] {
            assert_eq!(act(&mut m, ev, &p, t), Action::None);
            assert_eq!(m.state, State::Deferred);
        }
        assert_eq!(act(&mut m, Event::Stop, &p, t), Action::None);
        assert_eq!(
            (m.state.clone(), m.deadline, m.deferrals),
            (State::Inactive, None, 0)
        );
    }

    #[test]
    fn huge_durations_never_overflow() {
        let p = Policy {
            restart_sec: u64::MAX,
            timeout_stop_sec: u64::MAX,
            ..policy(RestartPolicy::Always)
        };
        let t = Instant::now();
        let mut m = Machine::default();
        m.on(start(), &p, t);
        assert_eq!(act(&mut m, Event::Stop, &p, t), Action::Term);
        assert_eq!(m.deadline, None);
        m.on(Event::Exited(BAD), &p, t);
        m.on(start(), &p, t);
        m.on(Event::Exited(BAD), &p, t);
        assert_eq!(m.state, State::AutoRestart);
        assert_eq!(m.deadline, None);
    }

    #[test]
    fn invalid_files() {
        let p = policy(RestartPolicy::Always);
        let t = Instant::now();
        let mut m = Machine::invalid("bad".into());
        assert_eq!(m.state.name(), "invalid");
        assert_eq!(act(&mut m, start(), &p, t), Action::None);
        m.on(Event::Validated, &p, t);
        assert_eq!(m.state, State::Inactive);
        m.on(start(), &p, t);
        // A running process keeps its definition.
        m.on(Event::Invalidated("bad again".into()), &p, t);
        assert_eq!(m.state, State::Running);
        m.on(Event::Exited(BAD), &p, t);
        assert_eq!(m.state, State::AutoRestart);
        m.on(Event::Invalidated("bad again".into()), &p, t);
        assert_eq!(m.state, State::Invalid);
        assert_eq!(m.deadline, None);
    }
}
