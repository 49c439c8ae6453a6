//! The per-service state machine. Every state and every transition lives in
//! `Machine::on`; it does no IO. The supervisor feeds it events and carries
//! out the action it returns.

use crate::sys::Exit;
use crate::unit::ServiceDef;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running: never started, stopped, or exited cleanly with no restart.
    Inactive,
    /// Wants to run; a required service is not up yet.
    Waiting,
    Running,
    /// SIGTERM sent; SIGKILL to the group at the deadline.
    Stopping,
    /// Exited; started again at the deadline.
    AutoRestart,
    /// Start failed, exited with failure, start limit hit, or a requirement failed.
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Waiting => "waiting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::AutoRestart => "auto-restart",
            State::Failed => "failed",
        }
    }
    /// A process of the service is alive.
    pub fn active(self) -> bool {
        matches!(self, State::Running | State::Stopping)
    }
    /// Neither running nor about to run.
    pub fn down(self) -> bool {
        matches!(self, State::Inactive | State::Failed)
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
    Exited(Exit),
    Deadline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Spawn the process now (state is already Running).
    Spawn,
    /// SIGTERM the process group.
    Term,
    /// SIGKILL the process group.
    Kill,
    /// Compute requirements and feed `Start { manual: false, .. }`.
    StartAgain,
}

/// The knobs of a definition the machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub restart: crate::unit::RestartPolicy,
    pub restart_sec: u64,
    pub timeout_stop_sec: u64,
    pub burst: u32,
    pub interval_sec: u64,
}

impl From<&ServiceDef> for Policy {
    fn from(d: &ServiceDef) -> Self {
        Policy {
            restart: d.restart,
            restart_sec: d.restart_sec,
            timeout_stop_sec: d.timeout_stop_sec,
            burst: d.start_limit_burst,
            interval_sec: d.start_limit_interval_sec,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub state: State,
    /// Why it is failed or waiting; the last start failure.
    pub reason: Option<String>,
    pub deadline: Option<Instant>,
    /// A restart is in progress: start again once stopped.
    pub start_after_stop: bool,
    /// Automatic restarts so far (not the first start, not manual ones).
    pub restart_count: u32,
    pub last_exit: Option<Exit>,
    /// Start times inside the start-limit window.
    starts: VecDeque<Instant>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: State::Inactive,
            reason: None,
            deadline: None,
            start_after_stop: false,
            restart_count: 0,
            last_exit: None,
            starts: VecDeque::new(),
        }
    }
}

impl Machine {
    pub fn on(&mut self, ev: Event, p: &Policy, now: Instant) -> Action {
        use State::*;
        match (self.state, ev) {
            (Running, Event::Start { .. }) => Action::None,
            (Stopping, Event::Start { .. }) | (Stopping, Event::Restart) => {
                self.start_after_stop = true;
                Action::None
            }
            (from, Event::Start { manual, req }) => {
                self.deadline = None;
                match req {
                    Req::Ready => {
                        if manual {
                            self.starts.clear();
                        }
                        if from == AutoRestart {
                            self.restart_count += 1;
                        }
                        self.starts.push_back(now);
                        self.state = Running;
                        self.reason = None;
                        Action::Spawn
                    }
                    Req::Wait(names) => {
                        self.state = Waiting;
                        self.reason = Some(format!("waiting for {}", names.join(", ")));
                        Action::None
                    }
                    Req::Failed(why) => {
                        self.state = Failed;
                        self.reason = Some(why);
                        Action::None
                    }
                }
            }
            (Running, ev @ (Event::Stop | Event::Restart)) => {
                self.start_after_stop = ev == Event::Restart;
                self.state = Stopping;
                self.deadline = Some(now + Duration::from_secs(p.timeout_stop_sec));
                Action::Term
            }
            (Stopping, Event::Stop) => {
                self.start_after_stop = false;
                Action::None
            }
            (Waiting | AutoRestart, Event::Stop) => {
                self.state = Inactive;
                self.deadline = None;
                self.reason = None;
                Action::None
            }
            (Inactive | Failed, Event::Stop) => Action::None,
            (_, Event::Restart) => Action::StartAgain,
            (Stopping, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                self.deadline = None;
                self.state = Inactive;
                if std::mem::take(&mut self.start_after_stop) {
                    self.starts.clear();
                    Action::StartAgain
                } else {
                    Action::None
                }
            }
            (Running, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                let why = match exit.signal {
                    Some(sig) => format!("killed by {}", crate::sys::signal_name(sig)),
                    None => format!("exited with code {}", exit.code),
                };
                self.after_end(exit.success(), why, p, now)
            }
            (Running, Event::SpawnFailed(why)) => self.after_end(false, why, p, now),
            (Stopping, Event::Deadline) => {
                self.deadline = None;
                Action::Kill
            }
            (AutoRestart, Event::Deadline) => Action::StartAgain,
            // Events that cannot apply in this state change nothing.
            (_, Event::Exited(_) | Event::SpawnFailed(_) | Event::Deadline) => Action::None,
        }
    }

    /// A run ended (exit or failed spawn): restart, fail, or rest.
    fn after_end(&mut self, success: bool, why: String, p: &Policy, now: Instant) -> Action {
        self.deadline = None;
        if p.restart.restarts(success) {
            let window = Duration::from_secs(p.interval_sec);
            while self
                .starts
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                self.starts.pop_front();
            }
            if self.starts.len() >= p.burst as usize {
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
            self.deadline = Some(now + Duration::from_secs(p.restart_sec));
        } else if success {
            self.state = State::Inactive;
            self.reason = None;
        } else {
            self.state = State::Failed;
            self.reason = Some(why);
        }
        Action::None
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

    #[test]
    fn always_restarts_after_restart_sec_and_counts() {
        let p = policy(RestartPolicy::Always);
        let mut m = Machine::default();
        let t = Instant::now();
        assert_eq!(m.on(start(), &p, t), Action::Spawn);
        assert_eq!(m.on(Event::Exited(OK), &p, t), Action::None);
        assert_eq!(m.state, State::AutoRestart);
        assert_eq!(m.deadline, Some(t + Duration::from_secs(2)));
        assert_eq!(m.on(Event::Deadline, &p, t), Action::StartAgain);
        assert_eq!(m.on(start(), &p, t), Action::Spawn);
        assert_eq!(m.restart_count, 1);
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
            m.on(
                Event::Start {
                    manual: false,
                    req: Req::Ready,
                },
                &p,
                t,
            );
            m.on(Event::Exited(BAD), &p, t);
        }
        assert_eq!(m.state, State::Failed);
        assert!(m.reason.as_deref().unwrap().starts_with("start limit hit"));
        let manual = Event::Start {
            manual: true,
            req: Req::Ready,
        };
        assert_eq!(m.on(manual, &p, t), Action::Spawn);
        m.on(Event::Exited(BAD), &p, t);
        assert_eq!(m.state, State::AutoRestart);
    }

    #[test]
    fn stop_escalates_and_suppresses_restart() {
        let p = policy(RestartPolicy::Always);
        let mut m = Machine::default();
        let t = Instant::now();
        m.on(start(), &p, t);
        assert_eq!(m.on(Event::Stop, &p, t), Action::Term);
        assert_eq!(m.deadline, Some(t + Duration::from_secs(3)));
        assert_eq!(m.on(Event::Deadline, &p, t), Action::Kill);
        assert_eq!(m.on(Event::Exited(BAD), &p, t), Action::None);
        assert_eq!(m.state, State::Inactive);
    }

    #[test]
    fn restart_waits_for_the_old_process() {
        let p = policy(RestartPolicy::No);
        let mut m = Machine::default();
        let t = Instant::now();
        m.on(start(), &p, t);
        assert_eq!(m.on(Event::Restart, &p, t), Action::Term);
        assert_eq!(m.on(Event::Exited(OK), &p, t), Action::StartAgain);
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
        assert_eq!(m.on(wait, &p, t), Action::None);
        assert_eq!(m.state, State::Waiting);
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
        m.on(start(), &policy(RestartPolicy::No), t);
        m.on(
            Event::SpawnFailed("exec x: No such file".into()),
            &policy(RestartPolicy::No),
            t,
        );
        assert_eq!(m.state, State::Failed);
        assert_eq!(m.reason.as_deref(), Some("exec x: No such file"));
    }
}
