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

mod deps;
mod requests;

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
/// One read from a service's output pipe.
const PIPE_READ: usize = 64 * 1024;
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
    /// Answer `done` once all these services are down, or `late` if they
    /// are still stopping at the deadline.
    Stop { done: String, late: String },
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
    /// The socket file `unix` was bound to: removed at exit if still there.
    unix_file: Option<sys::FileId>,
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
    /// Guards pulling in requirements against Requires cycles.
    starting: BTreeSet<usize>,
    started_at: Instant,
    /// The read buffer for output pipes (see `read_pipe`).
    pipe_buf: Vec<u8>,
    /// Requests handled so far: settle() goes round again after any.
    requests: u64,
}

impl Supervisor {
    pub fn new(cfg: InitConfig, config_path: PathBuf) -> std::io::Result<Self> {
        sys::cloexec_inherited();
        sys::raise_fd_limit();
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
            unix_file: None,
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
            starting: BTreeSet::new(),
            started_at: Instant::now(),
            pipe_buf: Vec::new(),
            requests: 0,
        };
        s.open_listeners()?;
        Ok(s)
    }

    /// Err only when another process serves our Unix socket and we are not
    /// PID 1: our services would run twice, with no socket to control them.
    fn open_listeners(&mut self) -> std::io::Result<()> {
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
                            self.unix_file = sys::FileId::of(Path::new(&c.unix_socket_path));
                        }
                        Err(e) => error!("control socket {}: {e}", c.unix_socket_path),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !sys::is_pid1() => {
                    let msg = format!("control socket {}: {e}", c.unix_socket_path);
                    return Err(std::io::Error::new(e.kind(), msg));
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
        Ok(())
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

    fn id_of(&self, name: &str) -> Option<usize> {
        self.services
            .iter()
            .find(|(_, s)| s.name == name && !s.removed)
            .map(|(id, _)| *id)
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
        if owner.is_some() {
            // ESRCH (nothing left in the group) is the common, fine case.
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
        // One buffer for all reads, allocated once (taken out while in use).
        let mut buf = std::mem::take(&mut self.pipe_buf);
        buf.resize(PIPE_READ, 0);
        self.read_pipe_into(id, k, &mut buf);
        self.pipe_buf = buf;
    }

    fn read_pipe_into(&mut self, id: usize, k: usize, buf: &mut [u8]) {
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
            match nix::unistd::read(fd, &mut *buf) {
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
        for c in self.conns.values_mut().filter(|c| c.follow == Some(id)) {
            c.send_follow(&r);
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
        // A socket file left behind refuses connections ("is init running?").
        if let Some(f) = self.unix_file.take() {
            if let Err(e) = f.remove_if_unchanged() {
                warn!(
                    "control socket {}: cannot remove it: {e}",
                    f.path().display()
                );
            }
        }
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
        }
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
