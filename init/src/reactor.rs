//! The reactor: one mio loop on one thread. It owns the poll, the signalfd
//! and the one timerfd, and routes each token to the component that owns
//! it: signals, deadlines and service tokens (pidfds, output pipes) to the
//! supervisor, listeners and connections to the clients. After each batch
//! it lets the supervisor finish its turn, delivers what it has for
//! clients, and arms the timer for the earliest deadline (re-armed only
//! when that deadline comes sooner, or the timer fired). When the
//! supervisor has finished, it gives the clients a bounded farewell.

use crate::clients::{Clients, SocketInUse, FAREWELL, UNIX_LISTENER, VSOCK_LISTENER};
use crate::notify::NotifySocket;
use crate::supervisor::{Ending, Supervisor, SVC_BASE};
use crate::sys::{self, RealOs};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::timerfd::TimerFd;
use shared::config::InitConfig;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIGNAL: Token = Token(0);
const TIMER: Token = Token(1);
// (2 and 3 are the listeners.)
const NOTIFY: Token = Token(4);
/// Notify messages read per loop turn before others get a turn.
const NOTICES_PER_TURN: usize = 64;

pub struct Reactor {
    poll: Poll,
    sigfd: SignalFd,
    timer: TimerFd,
    clients: Clients,
    /// None without a Unix control socket (it sits beside it) or when it
    /// could not be bound: notify services then never become ready.
    notify: Option<NotifySocket>,
    sup: Supervisor<RealOs>,
    /// Sources that still had data (or requests) when their turn ran out.
    backlog: BTreeSet<Token>,
    /// The deadline the timerfd is armed for, None when disarmed or fired.
    armed: Option<Instant>,
    /// Signals read and dropped (`sys::dropped_signals`): counted, logged
    /// at most once per 10 s.
    dropped: crate::access::Refusals,
}

/// Why the reactor could not be set up.
pub enum SetupError {
    Io(std::io::Error),
    /// Another init serves the control socket.
    SocketInUse(String),
}

impl From<std::io::Error> for SetupError {
    fn from(e: std::io::Error) -> Self {
        SetupError::Io(e)
    }
}

impl Reactor {
    pub fn new(cfg: InitConfig, config_path: PathBuf) -> Result<Self, SetupError> {
        sys::cloexec_inherited();
        sys::raise_fd_limit();
        let poll = Poll::new()?;
        let sigfd = sys::signalfd().map_err(std::io::Error::from)?;
        let timer = sys::timerfd().map_err(std::io::Error::from)?;
        let reg = poll.registry();
        reg.register(
            &mut SourceFd(&sigfd.as_raw_fd()),
            SIGNAL,
            Interest::READABLE,
        )?;
        reg.register(
            &mut SourceFd(&timer.as_fd().as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        let clients = match Clients::open(reg, &cfg.control) {
            Ok(c) => c,
            // PID 1 must not exit: go on with the other transport.
            Err(SocketInUse(e)) if sys::is_pid1() => {
                error!("{e}");
                let mut c = cfg.control.clone();
                c.unix_socket_enabled = false;
                Clients::open(reg, &c).map_err(|SocketInUse(e)| SetupError::SocketInUse(e))?
            }
            Err(SocketInUse(e)) => return Err(SetupError::SocketInUse(e)),
        };
        let mut os = RealOs::new(reg.try_clone()?);
        let notify = match cfg.control.unix_socket_enabled {
            true => {
                let path = format!("{}.notify", cfg.control.unix_socket_path);
                match NotifySocket::bind(Path::new(&path)) {
                    Ok(n) => {
                        reg.register(&mut SourceFd(&n.raw_fd()), NOTIFY, Interest::READABLE)?;
                        os.notify_socket = Some(path);
                        Some(n)
                    }
                    Err(e) => {
                        error!("notify socket {path}: {e}");
                        None
                    }
                }
            }
            false => None,
        };
        Ok(Reactor {
            notify,
            sup: Supervisor::new(os, cfg, config_path),
            poll,
            sigfd,
            timer,
            clients,
            backlog: BTreeSet::new(),
            armed: None,
            dropped: crate::access::Refusals::default(),
        })
    }

    pub fn boot(&mut self) {
        self.sup.boot();
        self.end_turn();
    }

    pub fn run(&mut self) -> Ending {
        let mut events = Events::with_capacity(256);
        let mut tokens: Vec<(Token, bool)> = Vec::with_capacity(256);
        loop {
            let busy = !self.backlog.is_empty() || self.sup.busy();
            let timeout = busy.then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                }
                continue;
            }
            self.clients.new_turn();
            // With each token: whether the peer may have closed (or it is
            // a backlog turn), so that a reader reads on to the end.
            tokens.clear();
            tokens.extend(
                events
                    .iter()
                    .map(|e| (e.token(), e.is_read_closed() || e.is_error())),
            );
            tokens.extend(
                std::mem::take(&mut self.backlog)
                    .into_iter()
                    .map(|t| (t, true)),
            );
            for &(t, closed) in &tokens {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.dispatch(t, closed)
                }));
                if r.is_err() {
                    error!("internal error while handling event {t:?}; carrying on");
                }
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.end_turn()));
            if r.is_err() {
                error!("internal error while settling; carrying on");
            }
            if let Some(ending) = self.sup.finished() {
                // The last event; followers get until `FAREWELL` to take
                // it and hang up.
                self.sup.final_event();
                self.deliver(Instant::now());
                self.farewell(&mut events);
                self.clients.close();
                return ending;
            }
        }
    }

    /// Wait, at most `FAREWELL`, until every client has taken what is
    /// queued for it and hung up (`Clients::part`). Nothing else is
    /// handled any more.
    fn farewell(&mut self, events: &mut Events) {
        let end = Instant::now() + FAREWELL;
        while self.clients.part(Instant::now()) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = self.poll.poll(events, Some(left)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                    break;
                }
            }
        }
    }

    fn dispatch(&mut self, t: Token, closed: bool) {
        let now = Instant::now();
        let reg = self.poll.registry();
        match t {
            SIGNAL => self.on_signals(),
            TIMER => {
                self.armed = None;
                sys::drain_counter(self.timer.as_fd().as_raw_fd());
                self.sup.on_timer();
                self.clients.on_timer(reg, &mut self.sup, now);
            }
            NOTIFY => {
                for n in 0.. {
                    let Some((pid, msg)) = self.notify.as_ref().and_then(|s| s.recv()) else {
                        break;
                    };
                    self.sup.on_notify(pid, crate::notify::parse(&msg));
                    if n + 1 == NOTICES_PER_TURN {
                        self.backlog.insert(NOTIFY);
                        break;
                    }
                }
            }
            UNIX_LISTENER | VSOCK_LISTENER => {
                self.clients.accept(reg, t, &mut self.sup, now);
                self.backlog.extend(self.clients.take_again());
            }
            Token(n) if n >= SVC_BASE => {
                if let Some(cid) = Clients::is_conn(t) {
                    if self.clients.on_conn(reg, cid, &mut self.sup, now, closed) {
                        self.backlog.insert(t);
                    }
                } else if self.sup.on_token(t) {
                    self.backlog.insert(t);
                }
            }
            _ => {}
        }
        self.deliver(now);
    }

    fn on_signals(&mut self) {
        let mut chld = false;
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => chld = true,
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                        info!("received signal {}: shutting down", info.ssi_signo);
                        self.sup.begin_ending(Ending::PowerOff);
                    }
                    Ok(Signal::SIGHUP) => self.sup.reload_on_signal(),
                    // One init does not use, whose default would end or
                    // stop it (outside PID 1).
                    _ => self.drop_signal(&info),
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
            self.sup.on_sigchld();
        }
    }

    fn drop_signal(&mut self, info: &nix::libc::signalfd_siginfo) {
        if let Some(unlogged) = self.dropped.count(Instant::now()) {
            info!(
                "ignored signal {} from pid {} uid {} ({} ignored so far{})",
                crate::os::signal_name(info.ssi_signo as i32),
                info.ssi_pid,
                info.ssi_uid,
                self.dropped.total,
                crate::clients::not_logged(unlogged)
            );
        }
    }

    /// Hand the supervisor's output to the clients, and serve the clients
    /// it answered.
    fn deliver(&mut self, now: Instant) {
        let reg = self.poll.registry();
        // Serving an answered client may bring more output: bounded rounds.
        for _ in 0..16 {
            for cid in self.clients.deliver_and_serve(reg, &mut self.sup, now) {
                self.backlog
                    .insert(Token(crate::clients::CONN_BASE + cid as usize));
            }
            if !self.sup.has_out() {
                return;
            }
        }
        self.backlog.insert(TIMER);
    }

    /// After each batch: the supervisor finishes its turn (held answers
    /// decided), clients get what is theirs, until nothing new comes; then
    /// the timer is armed for the earliest deadline.
    fn end_turn(&mut self) {
        let now = Instant::now();
        for round in 0.. {
            self.sup.tick();
            if !self.sup.has_out() {
                break;
            }
            if round == 16 {
                self.backlog.insert(TIMER);
                break;
            }
            self.deliver(now);
        }
        let next = [self.sup.next_deadline(), self.clients.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        // Re-armed only when the earliest deadline comes sooner than the
        // armed one: a deadline that moved later (a client's idle deadline
        // at each request) costs one early wake-up, not a syscall a turn.
        let rearm = match (next, self.armed) {
            (Some(n), Some(a)) => n < a,
            (None, None) => false,
            _ => true,
        };
        if rearm {
            let after = next.map(|d| d.saturating_duration_since(now));
            self.armed = next;
            if let Err(e) = sys::arm_timer(&self.timer, after) {
                self.armed = None;
                error!("timerfd: {e}");
            }
        }
    }

    /// After the loop: kill what is left in the services' cgroups and remove
    /// them, SIGKILL whatever else is left (orphans too), reap, sync.
    pub fn final_cleanup(&mut self) {
        self.clients.close();
        self.sup.release_all();
        sys::final_cleanup();
    }
}
