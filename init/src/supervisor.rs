//! The reactor: one mio loop on one thread owning every fd (signalfd, one
//! timerfd, listeners, connections, pidfds, output pipes), dispatching on
//! `Token`. Services' transitions come from `service::Machine`; this file
//! carries out their actions and keeps the services, the dependency order
//! and the clients together.

use crate::control::{Conn, Next, Stream};
use crate::logs::{LogSettings, ServiceLog, Stream as Out};
use crate::service::{Action, Event, Machine, Policy, Req, State};
use crate::sys::{self, Exit};
use crate::unit::{self, ServiceDef, UnitFile};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::timerfd::TimerFd;
use nix::unistd::Pid;
use shared::config::InitConfig;
use shared::protocol::{
    Dependencies, Request, Response, ServiceStatus, ServiceSummary, SystemStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIGNAL: Token = Token(0);
const TIMER: Token = Token(1);
const UNIX_LISTENER: Token = Token(2);
const VSOCK_LISTENER: Token = Token(3);
const SVC_BASE: usize = 1 << 32;
const CONN_BASE: usize = 1 << 48;
/// The longest a stop/restart answer is held back waiting for the process.
const REPLY_WAIT: Duration = Duration::from_secs(4);
const MAX_CONNS: usize = 256;
/// Bytes read from one source per wakeup before others get a turn.
const READ_BUDGET: usize = 1024 * 1024;
/// The largest `ServiceLogs` answer, in bytes of log text.
const MAX_LOGS_RESPONSE: usize = 4 * 1024 * 1024;

fn svc_token(id: usize, k: usize) -> Token {
    Token(SVC_BASE + id * 4 + k)
}

struct Proc {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

struct Service {
    name: String,
    file_enabled: bool,
    /// The definition the current or next run uses; None if never valid.
    def: Option<ServiceDef>,
    /// A changed definition from a reload, applied at the next start.
    pending: Option<ServiceDef>,
    load_error: Option<String>,
    m: Machine,
    proc_: Option<Proc>,
    /// stdout, stderr read ends; may outlive the process.
    pipes: [Option<OwnedFd>; 2],
    log: ServiceLog,
    /// Removed from disk by a reload: forget it once it is down.
    removed: bool,
}

impl Service {
    fn new(u: UnitFile) -> Self {
        let (def, load_error) = match u.def {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        };
        Service {
            log: ServiceLog::new(&u.name),
            name: u.name,
            file_enabled: u.file_enabled,
            def,
            pending: None,
            load_error,
            m: Machine::default(),
            proc_: None,
            pipes: [None, None],
            removed: false,
        }
    }
    fn enabled(&self) -> bool {
        self.file_enabled && self.def.as_ref().is_none_or(|d| d.service_enable)
    }
    fn policy(&self) -> Policy {
        self.def.as_ref().map(Policy::from).unwrap_or(Policy {
            restart: unit::RestartPolicy::No,
            restart_sec: 5,
            timeout_stop_sec: 10,
            burst: 5,
            interval_sec: 10,
        })
    }
    fn state_name(&self) -> &'static str {
        if self.def.is_none() && !self.m.state.active() {
            "invalid"
        } else {
            self.m.state.name()
        }
    }
    fn deps(&self) -> Dependencies {
        let d = self.def.as_ref();
        let get = |f: fn(&ServiceDef) -> &Vec<String>| d.map(f).cloned().unwrap_or_default();
        Dependencies {
            before: get(|d| &d.before),
            after: get(|d| &d.after),
            requires: get(|d| &d.requires),
            required_by: get(|d| &d.required_by),
        }
    }
}

enum WaitKind {
    /// Answer once all these services are down.
    Stop(String),
    /// Answer once the service runs a new process (not `old`).
    Restart(String, Option<Pid>),
}

struct Waiter {
    conn: usize,
    ids: Vec<usize>,
    kind: WaitKind,
    deadline: Instant,
}

/// How init should end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    PowerOff,
    Reboot,
}

pub struct Supervisor {
    poll: Poll,
    sigfd: SignalFd,
    timer: TimerFd,
    unix: Option<mio::net::UnixListener>,
    vsock: Option<vsock::VsockListener>,
    cfg: InitConfig,
    config_path: PathBuf,
    logset: LogSettings,
    services: BTreeMap<usize, Service>,
    next_id: usize,
    /// Start order (ids); reverse of it, refined by edges, is the stop order.
    order: Vec<usize>,
    conns: BTreeMap<usize, Conn>,
    next_conn: usize,
    waiters: Vec<Waiter>,
    stop_queue: BTreeSet<usize>,
    ending: Option<Ending>,
    /// Sources that still had data when their read budget ran out.
    backlog: BTreeSet<Token>,
    /// Per `logs -f` connection: what is still queued of its first answer
    /// (up to `MAX_LOGS_RESPONSE` of text), allowed on top of
    /// `FOLLOW_LIMIT` so a follower taking it in is not taken for one that
    /// stopped reading. Shrinks as the queue drains.
    follow_allowance: BTreeMap<usize, usize>,
    /// Guards pulling in requirements against Requires cycles.
    starting: BTreeSet<usize>,
    started_at: Instant,
    /// Requests handled so far: settle() goes round again after any.
    requests: u64,
}

impl Supervisor {
    pub fn new(cfg: InitConfig, config_path: PathBuf) -> std::io::Result<Self> {
        sys::cloexec_inherited();
        let poll = Poll::new()?;
        let sigfd = sys::signalfd()?;
        let timer = sys::timerfd()?;
        poll.registry().register(
            &mut SourceFd(&sigfd.as_raw_fd()),
            SIGNAL,
            Interest::READABLE,
        )?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_fd_raw()), TIMER, Interest::READABLE)?;
        let logset = log_settings(&cfg);
        let mut s = Supervisor {
            poll,
            sigfd,
            timer,
            unix: None,
            vsock: None,
            cfg,
            config_path,
            logset,
            services: BTreeMap::new(),
            next_id: 0,
            order: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            waiters: Vec::new(),
            stop_queue: BTreeSet::new(),
            ending: None,
            backlog: BTreeSet::new(),
            follow_allowance: BTreeMap::new(),
            starting: BTreeSet::new(),
            started_at: Instant::now(),
            requests: 0,
        };
        s.open_listeners();
        Ok(s)
    }

    fn open_listeners(&mut self) {
        let c = self.cfg.control.clone();
        if c.unix_socket_enabled {
            match bind_unix(Path::new(&c.unix_socket_path)) {
                Ok(mut l) => {
                    match self
                        .poll
                        .registry()
                        .register(&mut l, UNIX_LISTENER, Interest::READABLE)
                    {
                        Ok(()) => {
                            info!("control socket listening on {}", c.unix_socket_path);
                            self.unix = Some(l);
                        }
                        Err(e) => error!("control socket {}: {e}", c.unix_socket_path),
                    }
                }
                Err(e) => error!("control socket {}: {e}", c.unix_socket_path),
            }
        }
        if c.vsock_enabled {
            let bound = vsock::VsockListener::bind_with_cid_port(c.vsock_cid, c.vsock_port)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    self.poll.registry().register(
                        &mut SourceFd(&l.as_raw_fd()),
                        VSOCK_LISTENER,
                        Interest::READABLE,
                    )?;
                    Ok(l)
                });
            match bound {
                Ok(l) => {
                    info!(
                        "VSOCK control socket listening on {}:{}",
                        c.vsock_cid, c.vsock_port
                    );
                    self.vsock = Some(l);
                }
                Err(e) => error!(
                    "VSOCK control socket {}:{}: {e} (the Unix socket still works)",
                    c.vsock_cid, c.vsock_port
                ),
            }
        }
    }

    // ----- loading and order -------------------------------------------

    /// Load every service file and start the enabled ones in order.
    pub fn boot(&mut self) {
        if let Err(e) = std::fs::create_dir_all(&self.logset.dir) {
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
        self.compute_order(true);
        info!(
            "{} services loaded; start order: {}",
            self.services.len(),
            self.order
                .iter()
                .filter_map(|id| self.services.get(id).map(|s| s.name.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for id in self.order.clone() {
            if self
                .services
                .get(&id)
                .is_some_and(|s| s.enabled() && s.def.is_some())
            {
                self.start(id, false);
            }
        }
        self.settle();
    }

    fn add_service(&mut self, u: UnitFile) -> usize {
        for w in &u.warnings {
            warn!("{}: {w}", u.path.display());
        }
        if let Err(e) = &u.def {
            error!("{}: {e}", u.path.display());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.services.insert(id, Service::new(u));
        id
    }

    fn compute_order(&mut self, report: bool) {
        let ids: Vec<usize> = self.services.keys().copied().collect();
        let empty = Vec::new();
        let nodes: Vec<crate::graph::Node> = ids
            .iter()
            .filter_map(|id| self.services.get(id))
            .map(|s| {
                let d = s.def.as_ref();
                crate::graph::Node {
                    name: &s.name,
                    after: d.map_or(&empty, |d| &d.after),
                    before: d.map_or(&empty, |d| &d.before),
                    requires: d.map_or(&empty, |d| &d.requires),
                    required_by: d.map_or(&empty, |d| &d.required_by),
                }
            })
            .collect();
        let o = crate::graph::order(&nodes);
        if report {
            for w in &o.warnings {
                warn!("{w}");
            }
            for c in &o.cycles {
                warn!(
                    "dependency cycle: {c}; these services start after the others, in name order"
                );
            }
        }
        self.order = o.order.iter().filter_map(|n| self.id_of(n)).collect();
    }

    fn id_of(&self, name: &str) -> Option<usize> {
        self.services
            .iter()
            .find(|(_, s)| s.name == name && !s.removed)
            .map(|(id, _)| *id)
    }

    fn rank(&self, id: usize) -> usize {
        self.order
            .iter()
            .position(|x| *x == id)
            .unwrap_or(usize::MAX)
    }

    /// Is `a` ordered before `b` by an edge (so `b` must stop before `a`)?
    fn edge(&self, a: usize, b: usize) -> bool {
        let (Some(sa), Some(sb)) = (self.services.get(&a), self.services.get(&b)) else {
            return false;
        };
        let has = |v: &[String], n: &str| v.iter().any(|x| x == n);
        let fwd = sb
            .def
            .as_ref()
            .is_some_and(|d| has(&d.after, &sa.name) || has(&d.requires, &sa.name));
        let rev = sa
            .def
            .as_ref()
            .is_some_and(|d| has(&d.before, &sb.name) || has(&d.required_by, &sb.name));
        (fwd || rev) && self.rank(a) < self.rank(b)
    }

    /// Does `b` require `a` (b's Requires or a's RequiredBy)?
    fn requires(&self, b: usize, a: usize) -> bool {
        let (Some(sa), Some(sb)) = (self.services.get(&a), self.services.get(&b)) else {
            return false;
        };
        sb.def
            .as_ref()
            .is_some_and(|d| d.requires.contains(&sa.name))
            || sa
                .def
                .as_ref()
                .is_some_and(|d| d.required_by.contains(&sb.name))
    }

    fn required_ids(&self, id: usize) -> Vec<Result<usize, String>> {
        let mut out = Vec::new();
        let Some(s) = self.services.get(&id) else {
            return out;
        };
        for name in s.def.iter().flat_map(|d| d.requires.iter()) {
            out.push(self.id_of(name).ok_or_else(|| name.clone()));
        }
        for (other, o) in &self.services {
            if o.def
                .as_ref()
                .is_some_and(|d| d.required_by.contains(&s.name))
                && !out.contains(&Ok(*other))
            {
                out.push(Ok(*other));
            }
        }
        out
    }

    /// Everything that (transitively) requires `id`.
    fn dependents(&self, id: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(x) = todo.pop() {
            for other in self.services.keys() {
                if *other != id && !found.contains(other) && self.requires(*other, x) {
                    found.insert(*other);
                    todo.push(*other);
                }
            }
        }
        found
    }

    // ----- the state machine's actions --------------------------------

    /// Start a service, pulling in inactive requirements first.
    fn start(&mut self, id: usize, manual: bool) {
        if self.ending.is_some() || !self.starting.insert(id) {
            return;
        }
        let req = self.requirements(id, true);
        self.starting.remove(&id);
        self.feed(id, Event::Start { manual, req });
    }

    fn requirements(&mut self, id: usize, pull_in: bool) -> Req {
        let mut wait = Vec::new();
        let reqs = self.required_ids(id);
        if reqs.is_empty() {
            return Req::Ready;
        }
        // What requires this one: a requirement among them is a Requires cycle.
        let behind = self.dependents(id);
        for r in reqs {
            let rid = match r {
                Ok(rid) => rid,
                Err(name) => {
                    return Req::Failed(format!("required service '{name}' does not exist"))
                }
            };
            let Some(rs) = self.services.get(&rid) else {
                continue;
            };
            let name = rs.name.clone();
            if rs.def.is_none() {
                return Req::Failed(format!("required service '{name}' is invalid"));
            }
            if !rs.enabled() && !rs.m.state.active() {
                return Req::Failed(format!("required service '{name}' is disabled"));
            }
            // A Requires cycle (it requires us, maybe through others): the
            // cycle was warned about at load; start without waiting for it.
            if behind.contains(&rid) {
                continue;
            }
            if rs.m.state == State::Inactive && pull_in {
                self.start(rid, false);
            }
            match self
                .services
                .get(&rid)
                .map(|s| (s.m.state, s.m.reason.clone()))
            {
                Some((State::Running, _)) => {}
                Some((State::Failed, why)) => {
                    return Req::Failed(format!(
                        "required service '{name}' failed{}",
                        why.map(|w| format!(": {w}")).unwrap_or_default()
                    ))
                }
                Some((State::Inactive, _)) if !pull_in => {
                    return Req::Failed(format!("required service '{name}' is not running"))
                }
                _ => wait.push(name),
            }
        }
        if wait.is_empty() {
            Req::Ready
        } else {
            Req::Wait(wait)
        }
    }

    fn feed(&mut self, id: usize, ev: Event) {
        let now = Instant::now();
        let Some(s) = self.services.get_mut(&id) else {
            return;
        };
        let before = s.m.state;
        let action = s.m.on(ev, &s.policy(), now);
        let after = s.m.state;
        match action {
            Action::Spawn => self.spawn(id),
            Action::Term => self.signal(id, Signal::SIGTERM),
            Action::Kill => self.signal(id, Signal::SIGKILL),
            Action::StartAgain => self.start(id, false),
            Action::None => {}
        }
        if before != after && action == Action::None {
            self.note_transition(id, before);
        }
    }

    /// Lifecycle lines for transitions that did not log themselves.
    fn note_transition(&mut self, id: usize, before: State) {
        let Some(s) = self.services.get(&id) else {
            return;
        };
        let reason = s.m.reason.clone().unwrap_or_default();
        let msg = match s.m.state {
            State::Inactive if before == State::Stopping => "stopped".to_string(),
            State::Inactive => return,
            State::Failed => format!("failed: {reason}"),
            State::AutoRestart => format!("restarting in {}s", s.policy().restart_sec),
            State::Waiting => reason,
            State::Running | State::Stopping => return,
        };
        self.log_event(id, &msg);
    }

    fn log_event(&mut self, id: usize, msg: &str) {
        let mut out = Vec::new();
        if let Some(s) = self.services.get_mut(&id) {
            s.log.event(&self.logset, msg, &mut out);
            if matches!(s.m.state, State::Failed) || msg.starts_with("start failed") {
                warn!("{}: {msg}", s.name);
            } else {
                info!("{}: {msg}", s.name);
            }
        }
        self.forward(id, out);
    }

    fn spawn(&mut self, id: usize) {
        let Some(s) = self.services.get_mut(&id) else {
            return;
        };
        if let Some(new) = s.pending.take() {
            s.def = Some(new);
        }
        let Some(def) = s.def.clone() else {
            self.feed(id, Event::SpawnFailed("no valid definition".into()));
            return;
        };
        // Output of an earlier run still open (a leftover child holds it):
        // keep what it holds, then let it go.
        for k in 0..2 {
            self.read_pipe(id, k + 1);
            self.close_pipe(id, k);
        }
        match crate::spawn::spawn(&def, &self.cfg.environment) {
            Ok(sp) => {
                let pidfd = match sys::pidfd_open(sp.pid) {
                    Ok(fd) => {
                        let reg = self.poll.registry().register(
                            &mut SourceFd(&fd.as_raw_fd()),
                            svc_token(id, 0),
                            Interest::READABLE,
                        );
                        reg.ok().map(|_| fd)
                    }
                    Err(_) => None, // no pidfd: SIGCHLD and waitpid find the exit
                };
                for (k, fd) in [(1, &sp.stdout), (2, &sp.stderr)] {
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd.as_raw_fd()),
                        svc_token(id, k),
                        Interest::READABLE,
                    ) {
                        error!("register output pipe: {e}");
                    }
                }
                if let Some(s) = self.services.get_mut(&id) {
                    s.pipes = [Some(sp.stdout), Some(sp.stderr)];
                    s.proc_ = Some(Proc { pid: sp.pid, pidfd });
                }
                self.log_event(id, &format!("started with PID {}", sp.pid));
            }
            Err(why) => {
                self.log_event(id, &format!("start failed: {why}"));
                self.feed(id, Event::SpawnFailed(why));
            }
        }
    }

    fn signal(&mut self, id: usize, sig: Signal) {
        let Some(s) = self.services.get(&id) else {
            return;
        };
        let Some(p) = &s.proc_ else { return };
        let r = sys::signal_service(p.pid, p.pidfd.as_ref(), sig);
        let msg = match (sig, r) {
            (Signal::SIGTERM, Ok(())) => format!(
                "stopping: sent SIGTERM (SIGKILL after {}s)",
                s.policy().timeout_stop_sec
            ),
            (Signal::SIGKILL, Ok(())) => "stop timeout: sent SIGKILL to the process group".into(),
            (sig, Err(e)) => format!("cannot send {sig}: {e}"),
            (sig, Ok(())) => format!("sent {sig}"),
        };
        self.log_event(id, &msg);
    }

    fn service_of_pid(&self, pid: Pid) -> Option<usize> {
        self.services
            .iter()
            .find(|(_, s)| s.proc_.as_ref().is_some_and(|p| p.pid == pid))
            .map(|(id, _)| *id)
    }

    /// A child has exited and is not reaped yet: kill what is left of a
    /// service's group (its id cannot be recycled while the leader is a
    /// zombie), reap it, and tell the service's machine.
    fn child_exited(&mut self, pid: Pid) {
        let owner = self.service_of_pid(pid);
        if owner.is_some() && sys::group_alive(pid) {
            let _ = sys::signal_group(pid, Signal::SIGKILL);
        }
        let Some(exit) = sys::reap(pid) else { return };
        let Some(id) = owner else {
            info!("reaped orphan {pid} ({})", describe(exit));
            return;
        };
        if let Some(s) = self.services.get_mut(&id) {
            if let Some(Proc {
                pidfd: Some(fd), ..
            }) = s.proc_.take()
            {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
        // What it wrote before exiting is in its pipes: log that first.
        for k in 1..3 {
            self.read_pipe(id, k);
        }
        self.log_event(id, &describe(exit));
        self.feed(id, Event::Exited(exit));
    }

    fn reap_all(&mut self) {
        // Bounded: each round reaps one child.
        for _ in 0..100_000 {
            let Some(pid) = sys::peek_exited() else {
                return;
            };
            let before = self.service_of_pid(pid).is_some();
            self.child_exited(pid);
            if !before && sys::peek_exited() == Some(pid) {
                return; // could not reap it; do not spin
            }
        }
    }

    // ----- output pipes ------------------------------------------------

    fn read_pipe(&mut self, id: usize, k: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        let mut out = Vec::new();
        let stream = if k == 1 { Out::Stdout } else { Out::Stderr };
        let followed = self.conns.values().any(|c| c.follow == Some(id));
        loop {
            let Some(s) = self.services.get_mut(&id) else {
                return;
            };
            let Some(fd) = s.pipes.get(k - 1).and_then(|p| p.as_ref()) else {
                return;
            };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    s.log.close_stream(&self.logset, stream, &mut out);
                    self.forward(id, std::mem::take(&mut out));
                    self.close_pipe(id, k - 1);
                    return;
                }
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    if followed {
                        s.log.feed(&self.logset, stream, bytes, &mut out);
                    } else {
                        s.log.feed_unfollowed(&self.logset, stream, bytes);
                    }
                    total += n;
                    if total >= READ_BUDGET {
                        self.backlog.insert(svc_token(id, k));
                        break;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break, // EAGAIN: drained
            }
        }
        self.forward(id, out);
    }

    fn close_pipe(&mut self, id: usize, k: usize) {
        let Some(s) = self.services.get_mut(&id) else {
            return;
        };
        if let Some(fd) = s.pipes.get_mut(k).and_then(Option::take) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
            let stream = if k == 0 { Out::Stdout } else { Out::Stderr };
            let mut out = Vec::new();
            s.log.close_stream(&self.logset, stream, &mut out);
            self.forward(id, out);
        }
    }

    /// New log lines of a service go to its `logs -f` followers.
    fn forward(&mut self, id: usize, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let r = Response::ServiceLogs { logs: lines };
        for (cid, c) in self.conns.iter_mut().filter(|(_, c)| c.follow == Some(id)) {
            let allowance = self.follow_allowance.entry(*cid).or_default();
            *allowance = (*allowance).min(c.queued());
            c.send(&r);
            if c.queued() > crate::control::FOLLOW_LIMIT.saturating_add(*allowance) {
                c.broken = true; // a follower that stops reading is dropped
            }
        }
    }

    // ----- the loop ------------------------------------------------------

    pub fn run(&mut self) -> Ending {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = (!self.backlog.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                }
                continue;
            }
            let mut tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
            tokens.extend(std::mem::take(&mut self.backlog));
            for t in tokens {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(t)));
                if r.is_err() {
                    error!("internal error while handling event {t:?}; carrying on");
                }
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.settle()));
            if r.is_err() {
                error!("internal error while settling; carrying on");
            }
            if let Some(ending) = self.ending {
                if self.all_down() {
                    return ending;
                }
            }
        }
    }

    fn dispatch(&mut self, t: Token) {
        match t {
            SIGNAL => self.on_signals(),
            TIMER => {
                sys::drain_counter(self.timer.as_fd_raw());
                self.on_deadlines();
            }
            UNIX_LISTENER | VSOCK_LISTENER => self.accept(t),
            Token(n) if n >= CONN_BASE => self.on_conn(n - CONN_BASE),
            Token(n) if n >= SVC_BASE => {
                let (id, k) = ((n - SVC_BASE) / 4, (n - SVC_BASE) % 4);
                if k == 0 {
                    if let Some(pid) = self
                        .services
                        .get(&id)
                        .and_then(|s| s.proc_.as_ref())
                        .map(|p| p.pid)
                    {
                        self.child_exited(pid);
                    }
                } else {
                    self.read_pipe(id, k);
                }
            }
            _ => {}
        }
    }

    fn on_signals(&mut self) {
        let mut chld = false;
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => chld = true,
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                        info!("received signal {}: shutting down", info.ssi_signo);
                        self.begin_ending(Ending::PowerOff);
                    }
                    Ok(Signal::SIGHUP) => {
                        let msg = self.reload();
                        info!("SIGHUP: {msg}");
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error!("signalfd: {e}");
                    break;
                }
            }
        }
        if chld {
            self.reap_all();
        }
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .services
            .iter()
            .filter(|(_, s)| s.m.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.feed(id, Event::Deadline);
        }
        for c in self.conns.values_mut() {
            if c.idle_deadline().is_some_and(|d| d <= now) {
                c.broken = true;
            }
        }
        // Waiters whose time ran out are answered in settle().
    }

    /// After every batch of events: let dependency changes settle, answer
    /// waiting clients, serve connections, re-arm the one timer.
    fn settle(&mut self) {
        // A request served at the end (say one that came with its connection)
        // may queue stops, starts or a shutdown while no event is left to wake
        // the loop: go round again until a round serves no request.
        for round in 0.. {
            let served = self.requests;
            for _ in 0..8 {
                let mut changed = false;
                // Waiting services whose requirements moved.
                let waiting: Vec<usize> = self
                    .services
                    .iter()
                    .filter(|(_, s)| s.m.state == State::Waiting)
                    .map(|(id, _)| *id)
                    .collect();
                for id in waiting {
                    let req = self.requirements(id, false);
                    if !matches!(req, Req::Wait(_)) {
                        self.feed(id, Event::Start { manual: false, req });
                        changed = true;
                    }
                }
                changed |= self.settle_stops();
                if !changed {
                    break;
                }
            }
            self.answer_waiters();
            self.forget_removed();
            let ids: Vec<usize> = self.conns.keys().copied().collect();
            for cid in ids {
                self.serve(cid);
            }
            if self.requests == served {
                break;
            }
            if round == 16 {
                // Clients keep sending: poll without blocking, then come back.
                self.backlog.insert(TIMER);
                break;
            }
        }
        self.rearm();
    }

    /// Stop queued services, each once nothing ordered after it is up.
    fn settle_stops(&mut self) -> bool {
        let mut changed = false;
        for id in self.stop_queue.clone() {
            let Some(state) = self.services.get(&id).map(|s| s.m.state) else {
                self.stop_queue.remove(&id);
                continue;
            };
            match state {
                State::Inactive | State::Failed => {
                    self.stop_queue.remove(&id);
                }
                State::Stopping => {}
                State::Waiting | State::AutoRestart => {
                    self.feed(id, Event::Stop);
                    changed = true;
                }
                State::Running => {
                    let blocked = self.stop_queue.iter().any(|o| {
                        *o != id
                            && self.services.get(o).is_some_and(|s| !s.m.state.down())
                            && self.edge(id, *o)
                    });
                    if !blocked {
                        self.feed(id, Event::Stop);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    fn answer_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            let states: Vec<(State, Option<Pid>, Option<String>, bool)> = w
                .ids
                .iter()
                .filter_map(|id| self.services.get(id))
                .map(|s| {
                    (
                        s.m.state,
                        s.proc_.as_ref().map(|p| p.pid),
                        s.m.reason.clone(),
                        s.m.start_after_stop,
                    )
                })
                .collect();
            let reply = match &w.kind {
                WaitKind::Stop(name) => {
                    if states.iter().all(|(st, ..)| st.down()) {
                        Some(Response::ok(format!("Service '{name}' stopped")))
                    } else if now >= w.deadline {
                        Some(Response::ok(format!(
                            "Service '{name}' is still stopping (it gets SIGKILL at its stop timeout)"
                        )))
                    } else {
                        None
                    }
                }
                WaitKind::Restart(name, old) => match states.first() {
                    Some((State::Running, pid, ..)) if pid != old => {
                        Some(Response::ok(format!("Service '{name}' restarted")))
                    }
                    Some((State::Failed | State::Inactive, _, why, false)) => {
                        Some(Response::err(format!(
                            "Service '{name}' did not restart: {}",
                            why.clone().unwrap_or_else(|| "it is stopped".into())
                        )))
                    }
                    _ if now >= w.deadline => Some(Response::ok(format!(
                        "Service '{name}' is restarting (waiting for the old process to exit)"
                    ))),
                    None => Some(Response::err(format!("Service '{name}' is gone"))),
                    _ => None,
                },
            };
            match reply {
                Some(r) => {
                    if let Some(c) = self.conns.get_mut(&w.conn) {
                        c.send(&r);
                        c.busy = false;
                    }
                }
                None => self.waiters.push(w),
            }
        }
    }

    fn forget_removed(&mut self) {
        let gone: Vec<usize> = self
            .services
            .iter()
            .filter(|(_, s)| s.removed && s.m.state.down() && s.proc_.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            for k in 0..2 {
                self.close_pipe(id, k);
            }
            self.services.remove(&id);
            self.order.retain(|x| *x != id);
        }
    }

    fn rearm(&mut self) {
        let now = Instant::now();
        let next = self
            .services
            .values()
            .filter_map(|s| s.m.deadline)
            .chain(self.conns.values().filter_map(Conn::idle_deadline))
            .chain(self.waiters.iter().map(|w| w.deadline))
            .min();
        let after = next.map(|d| d.saturating_duration_since(now));
        if let Err(e) = sys::arm_timer(&self.timer, after) {
            error!("timerfd: {e}");
        }
    }

    fn all_down(&self) -> bool {
        self.services
            .values()
            .all(|s| s.proc_.is_none() && s.m.state.down())
    }

    pub fn begin_ending(&mut self, how: Ending) {
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
        self.stop_queue.extend(self.services.keys().copied());
    }

    /// After the loop: SIGKILL whatever is left (orphans too), reap, sync.
    pub fn final_cleanup(&mut self) {
        if sys::is_pid1() {
            sys::kill_all(Signal::SIGKILL);
        } else {
            for pid in sys::children_of_self() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            match nix::sys::wait::waitpid(
                Pid::from_raw(-1),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(_) => {}
                Err(_) => break, // ECHILD: all reaped
            }
        }
        sys::sync();
        info!("all services stopped; filesystems synced");
    }

    // ----- connections -----------------------------------------------------

    fn accept(&mut self, t: Token) {
        loop {
            let now = Instant::now();
            let stream = if t == UNIX_LISTENER {
                match self.unix.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, _))) => Stream::Unix(s),
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        error!("accept: {e}");
                        return;
                    }
                    None => return,
                }
            } else {
                match self.vsock.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, _))) => {
                        if let Err(e) = s.set_nonblocking(true) {
                            error!("vsock connection: {e}");
                            continue;
                        }
                        Stream::Vsock(s)
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        error!("vsock accept: {e}");
                        return;
                    }
                    None => return,
                }
            };
            let mut conn = Conn::new(stream, now);
            if self.conns.len() >= MAX_CONNS {
                conn.send(&Response::err("too many connections"));
                conn.flush(now);
                continue; // dropped here
            }
            let cid = self.next_conn;
            self.next_conn += 1;
            let fd = conn.stream.raw_fd();
            match self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(CONN_BASE + cid),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(()) => {
                    self.conns.insert(cid, conn);
                }
                Err(e) => error!("register connection: {e}"),
            }
        }
    }

    fn on_conn(&mut self, cid: usize) {
        let now = Instant::now();
        if let Some(c) = self.conns.get_mut(&cid) {
            c.fill(now);
            c.flush(now);
        }
        self.serve(cid);
    }

    /// Answer buffered requests while the client may take more; drop it when done.
    fn serve(&mut self, cid: usize) {
        let now = Instant::now();
        loop {
            let Some(c) = self.conns.get_mut(&cid) else {
                return;
            };
            if !c.wants_requests() {
                break;
            }
            match c.next() {
                // Input left in the kernel while this client was busy sends
                // no new edge: read again before waiting for one.
                Next::Incomplete => {
                    if !c.read_closed && c.fill(now) {
                        continue;
                    }
                    break;
                }
                Next::Invalid(msg) => c.send(&Response::err(msg)),
                Next::Fatal(msg) => {
                    c.send(&Response::err(msg));
                    c.close_after_flush = true;
                }
                Next::Request(req) => {
                    if let Some(r) = self.handle(cid, req) {
                        if let Some(c) = self.conns.get_mut(&cid) {
                            c.send(&r);
                        }
                    }
                }
            }
        }
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        c.flush(now);
        if c.done() {
            if let Some(c) = self.conns.remove(&cid) {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&c.stream.raw_fd()));
            }
            self.waiters.retain(|w| w.conn != cid);
            self.follow_allowance.remove(&cid);
        }
    }

    // ----- requests ------------------------------------------------------------

    /// Answer a request now (Some), or later through a waiter (None).
    fn handle(&mut self, cid: usize, req: Request) -> Option<Response> {
        self.requests += 1;
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
            _ => None,
        };
        if let Some(n) = &name {
            if let Err(e) = unit::validate_name(n) {
                return Some(Response::err(e));
            }
        }
        let name = name.unwrap_or_default();
        // Enable works on files init may not know yet.
        if let Request::ServiceEnable { now, .. } = req {
            return Some(self.enable(&name, now));
        }
        let id = self.id_of(&name);
        let unknown = || Some(Response::err(format!("Service '{name}' not found")));
        match req {
            Request::Ping => Some(Response::Pong),
            Request::ListServices => Some(Response::ServiceList {
                services: self.listed().map(|(_, s)| summary(s)).collect(),
            }),
            Request::SystemStatus => Some(Response::SystemStatus {
                status: SystemStatus {
                    uptime_secs: self.started_at.elapsed().as_secs(),
                    total_services: self.listed().count(),
                    active_services: self.listed().filter(|(_, s)| s.m.state.active()).count(),
                    enabled_services: self.listed().filter(|(_, s)| s.enabled()).count(),
                    log_dir: self.cfg.log_dir.clone(),
                    service_dir: self.cfg.service_dir.clone(),
                },
            }),
            Request::ServiceStatus { .. } => match id {
                Some(id) => self
                    .status(id)
                    .map(|status| Response::ServiceStatus { status }),
                None => unknown(),
            },
            Request::ServiceStart { .. } => match id {
                Some(id) => self.start_request(id, &name),
                None => unknown(),
            },
            Request::ServiceStop { .. } => match id {
                Some(id) => self.stop_request(cid, id, &name),
                None => unknown(),
            },
            Request::ServiceRestart { .. } => match id {
                Some(id) => self.restart_request(cid, id, &name),
                None => unknown(),
            },
            Request::ServiceDisable { .. } => Some(self.disable(cid, &name)),
            Request::ServiceLogs { lines, .. } => match id {
                Some(id) => Some(Response::ServiceLogs {
                    logs: self.tail(id, lines),
                }),
                None => unknown(),
            },
            Request::ServiceLogsFollow { lines, .. } => match id {
                Some(id) => {
                    let logs = self.tail(id, lines);
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.send(&Response::ServiceLogs { logs });
                        c.follow = Some(id);
                        self.follow_allowance.insert(cid, c.queued());
                    }
                    None
                }
                None => unknown(),
            },
            Request::ServiceLogsClear { .. } => match id {
                Some(id) => {
                    let r = self
                        .services
                        .get_mut(&id)
                        .map(|s| s.log.clear(&self.logset));
                    Some(match r {
                        Some(Ok(())) => Response::ok(format!("Logs of '{name}' cleared")),
                        Some(Err(e)) => {
                            Response::err(format!("cannot clear logs of '{name}': {e}"))
                        }
                        None => Response::err(format!("Service '{name}' not found")),
                    })
                }
                None => unknown(),
            },
            Request::SystemReload => Some(match self.ending {
                Some(_) => Response::err("system is shutting down"),
                None => Response::ok(self.reload()),
            }),
            Request::SystemShutdown | Request::SystemReboot => {
                let how = if req == Request::SystemReboot {
                    Ending::Reboot
                } else {
                    Ending::PowerOff
                };
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.send(&Response::ok(if how == Ending::Reboot {
                        "System is rebooting"
                    } else {
                        "System is shutting down"
                    }));
                    c.flush(Instant::now());
                }
                self.begin_ending(how);
                None
            }
            Request::ServiceEnable { .. } => None, // answered above
        }
    }

    /// Services shown to clients: not those a reload removed.
    fn listed(&self) -> impl Iterator<Item = (&usize, &Service)> {
        self.services.iter().filter(|(_, s)| !s.removed)
    }

    fn status(&self, id: usize) -> Option<ServiceStatus> {
        let s = self.services.get(&id)?;
        let (lines, bytes) = s.log.dropped();
        let d = s.def.as_ref();
        Some(ServiceStatus {
            name: s.name.clone(),
            enabled: s.enabled(),
            active: s.m.state.active(),
            pid: s.proc_.as_ref().map(|p| p.pid.as_raw() as u32),
            restart_policy: d.map_or("no", |d| d.restart.as_str()).into(),
            restart_count: s.m.restart_count,
            restart_sec: d.map_or(0, |d| d.restart_sec),
            exit_status: s.m.last_exit.map(|e| e.code),
            exec_start: d.map(|d| d.exec_start.clone()).unwrap_or_default(),
            working_directory: d.and_then(|d| d.working_directory.clone()),
            dependencies: s.deps(),
            state: s.state_name().into(),
            signal: s.m.last_exit.and_then(|e| e.signal).map(sys::signal_name),
            reason: s.load_error.clone().or_else(|| s.m.reason.clone()),
            waiting_on: match &s.m.reason {
                Some(r) if s.m.state == State::Waiting => r
                    .trim_start_matches("waiting for ")
                    .split(", ")
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            },
            timeout_stop_sec: d.map_or(0, |d| d.timeout_stop_sec),
            log_dropped_lines: lines,
            log_dropped_bytes: bytes,
        })
    }

    fn tail(&self, id: usize, lines: usize) -> Vec<String> {
        let Some(s) = self.services.get(&id) else {
            return Vec::new();
        };
        let mut logs = s.log.tail(&self.logset, lines.min(shared::MAX_LOG_LINES));
        // Keep the answer bounded: drop the oldest lines past the cap.
        let mut size = 0;
        let keep = logs
            .iter()
            .rev()
            .take_while(|l| {
                size += l.len() + 4;
                size <= MAX_LOGS_RESPONSE
            })
            .count();
        let skip = logs.len() - keep;
        logs.drain(..skip);
        logs
    }

    fn start_request(&mut self, id: usize, name: &str) -> Option<Response> {
        if self.ending.is_some() {
            return Some(Response::err("system is shutting down"));
        }
        let s = self.services.get(&id)?;
        if s.def.is_none() && s.pending.is_none() {
            return Some(Response::err(format!(
                "Service '{name}' is invalid: {}",
                s.load_error.clone().unwrap_or_default()
            )));
        }
        if s.m.state == State::Running {
            return Some(Response::ok(format!("Service '{name}' is already running")));
        }
        self.start(id, true);
        let s = self.services.get(&id)?;
        Some(match s.m.state {
            State::Running => Response::ok(format!("Service '{name}' started")),
            State::Stopping => Response::ok(format!(
                "Service '{name}' will start once its old process has exited"
            )),
            State::Waiting => Response::ok(format!(
                "Service '{name}' is {}",
                s.m.reason.clone().unwrap_or_else(|| "waiting".into())
            )),
            _ => Response::err(format!(
                "Service '{name}' failed to start: {}",
                s.m.reason.clone().unwrap_or_default()
            )),
        })
    }

    fn stop_request(&mut self, cid: usize, id: usize, name: &str) -> Option<Response> {
        let set = self.stop_set(id);
        if set
            .iter()
            .all(|x| self.services.get(x).is_none_or(|s| s.m.state.down()))
        {
            return Some(Response::ok(format!("Service '{name}' is not running")));
        }
        self.stop_queue.extend(set.iter().copied());
        self.wait(cid, set, WaitKind::Stop(name.to_string()));
        None
    }

    /// The service and everything that requires it and is not down.
    fn stop_set(&self, id: usize) -> Vec<usize> {
        let mut set = vec![id];
        set.extend(
            self.dependents(id)
                .into_iter()
                .filter(|d| self.services.get(d).is_some_and(|s| !s.m.state.down())),
        );
        set
    }

    fn restart_request(&mut self, cid: usize, id: usize, name: &str) -> Option<Response> {
        if self.ending.is_some() {
            return Some(Response::err("system is shutting down"));
        }
        let old = self
            .services
            .get(&id)
            .and_then(|s| s.proc_.as_ref())
            .map(|p| p.pid);
        self.stop_queue.remove(&id);
        self.feed(id, Event::Restart);
        self.wait(cid, vec![id], WaitKind::Restart(name.to_string(), old));
        None
    }

    fn wait(&mut self, cid: usize, ids: Vec<usize>, kind: WaitKind) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.busy = true;
        }
        self.waiters.push(Waiter {
            conn: cid,
            ids,
            kind,
            deadline: Instant::now() + REPLY_WAIT,
        });
    }

    // ----- enable, disable, reload ---------------------------------------------

    fn enable(&mut self, name: &str, now: bool) -> Response {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        let mut msg;
        // `ServiceEnable = false` in the file on disk keeps it disabled
        // whatever the file is called: refuse before renaming anything.
        let file = if on.exists() { &on } else { &off };
        let turned_off = std::fs::read_to_string(file)
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
            if self.id_of(name).is_none() {
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
        if now {
            match self.id_of(name) {
                Some(id) => match self.start_request(id, name) {
                    Some(Response::Error { message }) => {
                        return Response::err(format!("{msg}; but {message}"))
                    }
                    Some(Response::Success { message }) => msg = format!("{msg}; {message}"),
                    _ => {}
                },
                None => return Response::err(format!("{msg}; but it could not be loaded")),
            }
        }
        Response::ok(msg)
    }

    fn disable(&mut self, cid: usize, name: &str) -> Response {
        let dir = PathBuf::from(&self.cfg.service_dir);
        let on = unit::unit_path(&dir, name, true);
        let off = unit::unit_path(&dir, name, false);
        if !on.exists() {
            return if off.exists() {
                Response::ok(format!("Service '{name}' is already disabled"))
            } else {
                Response::err(format!("Service '{name}' not found in {}", dir.display()))
            };
        }
        if off.exists() {
            return Response::err(format!(
                "cannot disable '{name}': {} already exists; remove one of the two files",
                off.display()
            ));
        }
        if let Err(e) = std::fs::rename(&on, &off) {
            return Response::err(format!(
                "cannot rename {} to {}: {e}",
                on.display(),
                off.display()
            ));
        }
        let mut msg = format!(
            "Service '{name}' disabled ({} renamed to {})",
            file_name(&on),
            file_name(&off)
        );
        if let Some(id) = self.id_of(name) {
            if let Some(s) = self.services.get_mut(&id) {
                s.file_enabled = false;
            }
            if self.services.get(&id).is_some_and(|s| !s.m.state.down()) {
                self.stop_queue.extend(self.stop_set(id));
                msg.push_str(" and stopped");
            }
        }
        let _ = cid;
        Response::ok(msg)
    }

    /// Load or refresh one service file (after enable).
    fn reload_one(&mut self, name: &str, path: &Path) {
        let Ok(units) = unit::scan(Path::new(&self.cfg.service_dir)) else {
            return;
        };
        let Some(u) = units.into_iter().find(|u| u.name == name) else {
            return;
        };
        match self.id_of(name) {
            Some(id) => {
                if let Err(e) = self.update_service(id, u) {
                    error!("{}: {e}", path.display());
                }
            }
            None => {
                self.add_service(u);
            }
        }
        self.compute_order(false);
    }

    /// Apply a re-read file to a known service. Returns whether the
    /// definition changed, or the error.
    fn update_service(&mut self, id: usize, u: UnitFile) -> Result<bool, String> {
        let Some(s) = self.services.get_mut(&id) else {
            return Ok(false);
        };
        s.file_enabled = u.file_enabled;
        match u.def {
            Ok(new) => {
                s.load_error = None;
                let current = s.pending.as_ref().or(s.def.as_ref());
                if current == Some(&new) {
                    return Ok(false);
                }
                if s.m.state.active() && s.def.is_some() {
                    s.pending = Some(new);
                } else {
                    s.def = Some(new);
                    s.pending = None;
                }
                Ok(true)
            }
            Err(e) => {
                if !s.m.state.active() {
                    s.def = None;
                }
                s.pending = None;
                s.load_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Re-read init.yaml's service settings and every service file; start
    /// what is new, stop what is gone, keep what runs unchanged.
    pub fn reload(&mut self) -> String {
        let mut errors = Vec::new();
        let loaded = crate::config::load(&self.config_path);
        if let Some(e) = loaded.error {
            errors.push(e);
        } else if loaded.source.is_some() {
            let c = loaded.config;
            self.cfg.environment = c.environment;
            self.cfg.max_log_size = c.max_log_size;
            self.cfg.max_log_files = c.max_log_files;
            self.cfg.service_dir = c.service_dir;
            self.logset = log_settings(&self.cfg);
        }
        let units = match unit::scan(Path::new(&self.cfg.service_dir)) {
            Ok(u) => u,
            Err(e) => {
                errors.push(e);
                return format!("reload failed: {}", errors.join("; "));
            }
        };
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        let seen: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        for (id, s) in self.services.iter_mut() {
            if !seen.contains(&s.name) && !s.removed {
                s.removed = true;
                removed.push(s.name.clone());
                self.stop_queue.insert(*id);
            }
        }
        let mut new_ids = Vec::new();
        for u in units {
            let name = u.name.clone();
            let path = u.path.display().to_string();
            match self.id_of(&name) {
                Some(id) => {
                    // Invalid since it was loaded and never run: once fixed it
                    // is as good as new, and starts if enabled.
                    let fixed = self.services.get(&id).is_some_and(|s| {
                        s.def.is_none() && s.m.state == State::Inactive && s.m.last_exit.is_none()
                    });
                    match self.update_service(id, u) {
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
                    new_ids.push(self.add_service(u));
                    added.push(name);
                }
            }
        }
        self.compute_order(true);
        for id in self.order.clone() {
            if new_ids.contains(&id)
                && self
                    .services
                    .get(&id)
                    .is_some_and(|s| s.enabled() && s.def.is_some())
            {
                self.start(id, false);
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
        if !errors.is_empty() {
            msg.push_str(&format!("; errors: {}", errors.join("; ")));
        }
        msg
    }
}

fn summary(s: &Service) -> ServiceSummary {
    ServiceSummary {
        name: s.name.clone(),
        enabled: s.enabled(),
        active: s.m.state.active(),
        restart_policy: s.def.as_ref().map_or("no", |d| d.restart.as_str()).into(),
        restart_count: s.m.restart_count,
        state: s.state_name().into(),
    }
}

fn describe(e: Exit) -> String {
    match e.signal {
        Some(sig) => format!(
            "killed by {} (exit status {})",
            sys::signal_name(sig),
            e.code
        ),
        None => format!("exited with code {}", e.code),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn log_settings(cfg: &InitConfig) -> LogSettings {
    LogSettings {
        dir: PathBuf::from(&cfg.log_dir),
        max_size: cfg.max_log_size,
        max_files: cfg.max_log_files,
    }
}

/// Bind the control socket, mode 0600. A stale socket file is replaced; any
/// other kind of file at the path is left alone and reported.
fn bind_unix(path: &Path) -> std::io::Result<mio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if socket_is_live(path) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is listening on it; not replacing it",
                ));
            }
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "path exists and is not a socket; not replacing it",
            ));
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = mio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    l
}

/// Does something accept connections on the socket file at `path`? A
/// non-blocking connect: refused means stale; a full backlog means live.
fn socket_is_live(path: &Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EAGAIN || e == nix::errno::Errno::EINPROGRESS,
    }
}

trait AsFdRaw {
    fn as_fd_raw(&self) -> std::os::fd::RawFd;
}
impl AsFdRaw for TimerFd {
    fn as_fd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}
