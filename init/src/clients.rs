//! The clients: the Unix and VSOCK listeners and every control connection
//! (`control::Conn`: framing, buffers, timeouts). Requests go to the
//! supervisor; its answers, held answers and follower lines come back as
//! `Out` and are queued here. A connection that ends is reported to the
//! supervisor (`client_gone`) so nothing is kept for it. At accept each
//! connection gets its peer and role (`access::Who`); refused peers are
//! counted and logged here. Out of fds, init serves one client at a time
//! on a spare fd it holds for that, and with a second reserve fd still
//! accepts any other client to tell it so. At the end each connection is written
//! out and shut, and the reactor waits up to `FAREWELL` for its peer to
//! hang up (`part`), so the final event is read before init goes.
//!
//! Limits that keep one client from locking others out: each transport
//! has its own connection budget, and a new connection on a full one
//! closes that transport's longest idle connection, followers and clients
//! waiting for an answer last (`to_evict`); at most
//! `ACCEPTS_PER_TURN` connections are taken per listener per loop turn, so
//! a new client is read before a flood can push it out. All buffers of all
//! connections together stay under `CLIENT_MEMORY`: past it the biggest
//! consumers are dropped, read-only peers before full-access ones when
//! they hold enough (`to_shed`). Each connection closed for either is
//! logged (rate-limited), and one closed for room is told if it can be.
//! Per turn a connection is served at most `REQUESTS_PER_TURN` requests
//! and `INPUT_PER_TURN` bytes of them, and at most one expensive one.

use crate::access::{self, Peer, Refusals, Role, Who};
use crate::control::{Conn, Follows, Next, Stream, Transport};
use crate::os::Os;
use crate::supervisor::{ClientId, Out, Reply, Supervisor};
use crate::sys::FileId;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use shared::config::ControlConfig;
use shared::protocol::{Request, Response};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

pub const UNIX_LISTENER: Token = Token(2);
pub const VSOCK_LISTENER: Token = Token(3);
/// Tokens at or above this are connections.
pub const CONN_BASE: usize = 1 << 62;
/// Connections per transport (Unix, VSOCK): a flood on one never costs the
/// other a slot.
pub const CONNS_PER_TRANSPORT: usize = 256;
/// How long init, at the end, waits for its clients to take the final
/// event (and what else is queued for them) and hang up, before it kills
/// what is left and powers off.
pub const FAREWELL: Duration = Duration::from_secs(2);
/// Connections accepted from one listener per loop turn.
const ACCEPTS_PER_TURN: usize = 64;
/// Requests served from one connection per loop turn before others get a turn.
const REQUESTS_PER_TURN: usize = 64;
/// Request bytes taken from one connection per loop turn: what a turn
/// spends parsing one client's requests grows with their bytes, not their
/// number (64 pipelined 64 KiB values are 4 MiB to parse).
const INPUT_PER_TURN: u64 = shared::MAX_REQUEST_BYTES as u64;
/// Expensive requests (other than reload, which is coalesced) served per
/// loop turn per transport, in the order they waited on that transport: a
/// flood of them from the host never makes the operator inside wait.
const HEAVY_PER_TURN: usize = 1;
/// All connections' buffers together (input and output).
pub const CLIENT_MEMORY: usize = 16 * 1024 * 1024;
/// A connection that took output or sent a request this recently is
/// dropped for memory only after the stalled ones.
const FLOWING: Duration = Duration::from_secs(1);

/// Requests whose cost grows with the service directory, the logs, the
/// number of services or a service's processes (reading files, walking
/// every service): at most one per connection per loop turn, and
/// `HEAVY_PER_TURN` per transport (reloads apart: one reload serves all who asked
/// in a turn).
fn expensive(r: &Request) -> bool {
    match r {
        Request::SystemReload
        | Request::ServiceEnable { .. }
        | Request::ServiceLogs { .. }
        | Request::ServiceLogsFollow { .. }
        | Request::ServiceLogsFollowAll { .. }
        | Request::Metrics
        // The service's cgroup.procs is read for its process count.
        | Request::ServiceStatus { .. }
        | Request::ListServices
        | Request::SystemStatus => true,
        // A backlog to encode, like the last lines of a log.
        Request::Events { since } => since.is_some(),
        Request::ServiceStart { .. }
        | Request::ServiceStop { .. }
        | Request::ServiceRestart { .. }
        | Request::ServiceDisable { .. }
        | Request::ServiceLogsClear { .. }
        | Request::SystemReboot
        | Request::SystemShutdown
        | Request::Ping => false,
    }
}

/// A connection in line for an expensive request, that could be served now.
pub struct Waiting {
    pub transport: Transport,
    pub ticket: u64,
}

/// May an expensive request on `transport` go now? `mine`: its place in
/// line (None: it has not waited); `left`: what this turn still allows on
/// that transport; `line`: the others waiting. Only the same transport's
/// line counts, so neither transport ever waits behind the other's.
pub fn may_go(line: &[Waiting], transport: Transport, mine: Option<u64>, left: usize) -> bool {
    left > 0
        && !line
            .iter()
            .any(|w| w.transport == transport && mine.is_none_or(|m| w.ticket < m))
}

/// What the budget and memory decisions look at in one connection.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub id: ClientId,
    pub transport: Transport,
    /// Waiting for a held answer (a stop or restart, at most seconds).
    pub busy: bool,
    /// Following logs or events: quiet is not idle for it.
    pub following: bool,
    pub last_activity: Instant,
    pub memory: usize,
    /// Output not taken yet.
    pub queued: usize,
    /// A full-access peer: shed after the read-only ones.
    pub full: bool,
}

/// The connection to close so that one more fits in `transport`'s budget:
/// none while there is room; otherwise that transport's connection idle
/// longest, one waiting for a held answer or following only if all are.
pub fn to_evict(slots: &[Slot], transport: Transport, budget: usize) -> Option<ClientId> {
    let mine = slots.iter().filter(|s| s.transport == transport);
    if mine.clone().count() < budget {
        return None;
    }
    mine.min_by_key(|s| (s.busy || s.following, s.last_activity))
        .map(|s| s.id)
}

/// The connections to drop so that all of them hold at most `limit` bytes:
/// those that have stalled (output waiting, none taken and no request
/// within `FLOWING`) first, then the biggest first. When the read-only
/// peers (with the stalled) hold enough to get under `limit`, they go
/// before any full-access one, so a peer that may only read cannot push an
/// operator's answer out by asking for big ones; when they do not, they
/// are not dropped for a little they hold. A connection with nothing to
/// take (a quiet follower, a client between requests) has not stalled,
/// however long it has been quiet.
pub fn to_shed(slots: &[Slot], limit: usize, now: Instant) -> Vec<ClientId> {
    let mut total: usize = slots.iter().map(|s| s.memory).sum();
    let stalled =
        |s: &Slot| s.queued > 0 && now.saturating_duration_since(s.last_activity) >= FLOWING;
    let over = total.saturating_sub(limit);
    let read_only_first = slots
        .iter()
        .filter(|s| stalled(s) || !s.full)
        .map(|s| s.memory)
        .sum::<usize>()
        >= over;
    let mut order: Vec<&Slot> = slots.iter().filter(|s| s.memory > 0).collect();
    order.sort_unstable_by_key(|s| {
        let full_later = read_only_first && s.full;
        (!stalled(s), full_later, std::cmp::Reverse(s.memory), s.id)
    });
    let mut shed = Vec::new();
    for s in order {
        if total <= limit {
            break;
        }
        total = total.saturating_sub(s.memory);
        shed.push(s.id);
    }
    shed
}

pub struct Clients {
    unix: Option<mio::net::UnixListener>,
    /// The socket file we bound: removed at exit if still ours.
    unix_file: Option<FileId>,
    vsock: Option<vsock::VsockListener>,
    conns: BTreeMap<ClientId, Conn>,
    next: ClientId,
    /// The loop turn, and the expensive requests it may still serve.
    turn: u64,
    heavy_left: [usize; 2],
    /// The next place in the line for an expensive request.
    next_ticket: u64,
    /// Sum of what each connection was last counted at (`Conn::counted`).
    memory: usize,
    /// Tokens to come back to next turn.
    again: Vec<Token>,
    /// Who may connect and what they may do (`control:` in init.yaml).
    rules: ControlConfig,
    own_uid: u32,
    unix_refused: Refusals,
    vsock_refused: Refusals,
    /// Connections closed to make room or to free memory (logged at most
    /// once per 10 s, as refusals are).
    closed: Refusals,
    /// /dev/null, held so that init out of fds can still tell a client
    /// so (see `shed`).
    reserve: Option<std::fs::File>,
    /// /dev/null, held so that init out of fds can still serve one client
    /// (an operator asking what is wrong); taken back when a connection
    /// closes.
    spare: Option<std::fs::File>,
    /// init is out of fds (said once for the streak, which ends when a
    /// client is accepted on a free fd).
    shedding: bool,
    /// What connections read into (allocated and zeroed once).
    scratch: Vec<u8>,
}

/// The Unix control socket could not be bound because another process
/// serves it.
#[derive(Debug)]
pub struct SocketInUse(pub String);

impl Clients {
    /// Open the listeners the config asks for. A live socket of another
    /// process at the Unix path is an error; any other failure is logged
    /// (the other transport still serves).
    pub fn open(reg: &Registry, c: &ControlConfig) -> Result<Clients, SocketInUse> {
        let mut cl = Clients {
            unix: None,
            unix_file: None,
            vsock: None,
            conns: BTreeMap::new(),
            next: 0,
            turn: 0,
            heavy_left: [HEAVY_PER_TURN; 2],
            next_ticket: 0,
            memory: 0,
            again: Vec::new(),
            rules: c.clone(),
            own_uid: nix::unistd::geteuid().as_raw(),
            unix_refused: Refusals::default(),
            vsock_refused: Refusals::default(),
            closed: Refusals::default(),
            reserve: open_reserve(),
            spare: open_reserve(),
            shedding: false,
            scratch: vec![0; crate::control::READ_SIZE],
        };
        if c.unix_socket_enabled {
            let path = Path::new(&c.unix_socket_path);
            match bind_unix(path, c) {
                Ok(mut l) => match reg.register(&mut l, UNIX_LISTENER, Interest::READABLE) {
                    Ok(()) => {
                        info!("control socket listening on {}", c.unix_socket_path);
                        cl.unix_file = FileId::of(path);
                        cl.unix = Some(l);
                    }
                    Err(e) => error!("control socket {}: {e}", c.unix_socket_path),
                },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(SocketInUse(format!(
                        "control socket {}: {e}",
                        c.unix_socket_path
                    )));
                }
                Err(e) => error!("control socket {}: {e}", c.unix_socket_path),
            }
        }
        if c.vsock_enabled {
            let bound = vsock::VsockListener::bind_with_cid_port(c.vsock_cid, c.vsock_port)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    reg.register(
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
                    cl.vsock = Some(l);
                }
                Err(e) => error!(
                    "VSOCK control socket {}:{}: {e} (the Unix socket still works)",
                    c.vsock_cid, c.vsock_port
                ),
            }
        }
        Ok(cl)
    }

    /// Remove the socket file at exit, if it is still the one we bound.
    pub fn close(&mut self) {
        if let Some(f) = self.unix_file.take() {
            if let Err(e) = f.remove_if_unchanged() {
                warn!("cannot remove {}: {e}", f.path().display());
            }
        }
    }

    /// At the end, after the final event: each connection's output is
    /// written, its write side shut, and it is dropped once the peer hangs
    /// up. True while some are left (the reactor waits for them at most
    /// `FAREWELL`).
    pub fn part(&mut self, now: Instant) -> bool {
        let scratch = &mut self.scratch;
        self.conns.retain(|_, c| c.part(scratch, now));
        !self.conns.is_empty()
    }

    /// Take new connections (at most `ACCEPTS_PER_TURN`) and serve what
    /// they sent already. What to come back to next turn (the listener,
    /// connections with requests left) is in `take_again`.
    pub fn accept<O: Os>(
        &mut self,
        reg: &Registry,
        t: Token,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) {
        for n in 0.. {
            if n == ACCEPTS_PER_TURN {
                self.again.push(t);
                return;
            }
            let (stream, who) = if t == UNIX_LISTENER {
                match self.unix.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, _))) => match access::unix_who(&s, self.own_uid, &self.rules) {
                        Ok(who) => (Stream::Unix(s), who),
                        Err(e) => {
                            error!("control connection: cannot read its peer's credentials: {e}; closed");
                            continue;
                        }
                    },
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) if crate::sys::out_of_fds(&e) => {
                        return self.shed(reg, t, sup, now)
                    }
                    Some(Err(e)) => {
                        error!("accept: {e}");
                        return;
                    }
                    None => return,
                }
            } else {
                match self.vsock.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, addr))) => {
                        if let Err(e) = s.set_nonblocking(true) {
                            error!("vsock connection: {e}");
                            continue;
                        }
                        let who = Who {
                            peer: Peer::Vsock {
                                cid: addr.cid(),
                                port: addr.port(),
                            },
                            role: access::vsock_role(addr.cid(), &self.rules),
                        };
                        (Stream::Vsock(s), who)
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) if crate::sys::out_of_fds(&e) => {
                        return self.shed(reg, t, sup, now)
                    }
                    Some(Err(e)) => {
                        error!("vsock accept: {e}");
                        return;
                    }
                    None => return,
                }
            };
            // An fd was free (not the spare's): the streak is over.
            if self.spare.is_some() {
                self.shedding = false;
            }
            let mut conn = Conn::new(stream, who, now);
            if who.role == Role::Denied {
                self.log_refusal(&who, now);
                // VSOCK: closed at once (the untrusted side holds nothing
                // here). Unix: kept until its first request, which is
                // answered "permission denied" (closing first would make
                // the client's write fail instead).
                if matches!(who.peer, Peer::Vsock { .. }) {
                    conn.send(&Response::err("permission denied"), now);
                    conn.flush(now);
                    continue;
                }
            }
            self.make_room(reg, sup, conn.transport(), now);
            let cid = self.next;
            self.next += 1;
            let fd = conn.stream.raw_fd();
            match reg.register(
                &mut SourceFd(&fd),
                Token(CONN_BASE + cid as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(()) => {
                    self.conns.insert(cid, conn);
                    if self.on_conn(reg, cid, sup, now, true) {
                        self.again.push(Token(CONN_BASE + cid as usize));
                    }
                }
                Err(e) => error!("register connection: {e}"),
            }
        }
    }

    /// Out of fds, with clients waiting on listener `t`: the first is
    /// accepted on the spare's fd and served as any other, if the spare is
    /// free. For each other, let the reserve go, accept the client, tell it
    /// so, close it, take the reserve back (the libev/nginx trick).
    /// Otherwise they would wait unanswered until fds come back and another
    /// client knocks.
    fn shed<O: Os>(&mut self, reg: &Registry, t: Token, sup: &mut Supervisor<O>, now: Instant) {
        if !self.shedding {
            warn!("out of file descriptors: serving one client at a time, turning the others away until some are free");
            self.shedding = true;
        }
        if let Some(spare) = self.spare.take() {
            drop(spare);
            // Accepts on the fd just freed; out of fds again, it comes
            // back here with no spare.
            return self.accept(reg, t, sup, now);
        }
        loop {
            if self.reserve.take().is_none() {
                self.reserve = open_reserve();
                return;
            }
            let stream = if t == UNIX_LISTENER {
                let accepted = self.unix.as_ref().and_then(|l| l.accept().ok());
                accepted.map(|(s, _)| Stream::Unix(s))
            } else {
                let accepted = self.vsock.as_ref().and_then(|l| l.accept().ok());
                accepted.and_then(|(s, _)| s.set_nonblocking(true).ok().map(|()| Stream::Vsock(s)))
            };
            let Some(s) = stream else {
                self.reserve = open_reserve();
                return;
            };
            // Answered and closed before anything is read: who it is
            // does not matter.
            let nobody = Who {
                peer: Peer::Unix {
                    uid: u32::MAX,
                    gid: u32::MAX,
                    pid: 0,
                },
                role: Role::Denied,
            };
            let mut conn = Conn::new(s, nobody, now);
            conn.send(&Response::err("init is out of file descriptors"), now);
            conn.flush(now);
            drop(conn);
            self.reserve = open_reserve();
        }
    }

    /// Count a refused connection; log it unless too many came lately.
    fn log_refusal(&mut self, who: &Who, now: Instant) {
        let (counter, why) = match who.peer {
            Peer::Unix { .. } => (
                &mut self.unix_refused,
                "not uid 0, init's uid, or in control.unix_allowed_uids, unix_allowed_gids or unix_read_only_uids".to_string(),
            ),
            Peer::Vsock { .. } => (
                &mut self.vsock_refused,
                format!(
                    "not in control.vsock_allowed_cids {:?}",
                    self.rules.vsock_allowed_cids
                ),
            ),
        };
        if let Some(unlogged) = counter.count(now) {
            warn!(
                "refused control connection from {}: {why} ({} refused so far{})",
                who.peer,
                counter.total,
                not_logged(unlogged)
            );
        }
    }

    /// Sources `accept` left for the next turn.
    pub fn take_again(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.again)
    }

    /// A new connection on a full budget closes that transport's longest
    /// idle one.
    fn make_room<O: Os>(
        &mut self,
        reg: &Registry,
        sup: &mut Supervisor<O>,
        t: Transport,
        now: Instant,
    ) {
        if let Some(victim) = to_evict(&self.slots(), t, CONNS_PER_TRANSPORT) {
            let why = format!(
                "the {} connection budget ({CONNS_PER_TRANSPORT}) is full and it was idle longest",
                t.name()
            );
            // Told, as far as its socket takes it now: nothing of an
            // answer is cut, as an idle connection has none queued.
            if let Some(c) = self.conns.get_mut(&victim) {
                if c.queued() == 0 {
                    c.send(&Response::err(format!("connection closed: {why}")), now);
                    c.flush(now);
                }
            }
            self.log_closed(victim, &why, now);
            self.drop_conn(reg, victim, sup);
        }
    }

    /// Log a connection init closes to protect the others, unless too many
    /// were lately.
    fn log_closed(&mut self, cid: ClientId, why: &str, now: Instant) {
        let Some(peer) = self.conns.get(&cid).map(|c| c.who.peer) else {
            return;
        };
        if let Some(unlogged) = self.closed.count(now) {
            warn!(
                "closed control connection from {peer}: {why} ({} closed so far{})",
                self.closed.total,
                not_logged(unlogged)
            );
        }
    }

    fn slots(&self) -> Vec<Slot> {
        self.conns
            .iter()
            .map(|(id, c)| Slot {
                id: *id,
                transport: c.transport(),
                busy: c.busy,
                following: c.following,
                last_activity: c.last_activity,
                memory: c.counted,
                queued: c.queued(),
                full: c.who.role == Role::Full,
            })
            .collect()
    }

    /// A new loop turn begins (expensive requests are paced per turn; the
    /// spare fd is taken back if it is out).
    pub fn new_turn(&mut self) {
        self.turn = self.turn.wrapping_add(1);
        self.heavy_left = [HEAVY_PER_TURN; 2];
        // Lent to a client that was refused at once (never a connection):
        // taken back as soon as an fd is free.
        self.take_back_spare();
    }

    /// The spare, if lent, takes a free fd back (none: it stays out).
    fn take_back_spare(&mut self) {
        if self.spare.is_none() {
            self.spare = open_reserve();
        }
    }

    /// May `cid` be served the expensive request `req` now? A reload always
    /// (one per connection per turn is checked before); anything else if
    /// the turn has one left on its transport and no connection of that
    /// transport that could be served now has waited longer. A connection
    /// turned away gets its place in the line.
    fn admit(&mut self, cid: ClientId, req: &Request) -> bool {
        let turn = self.turn;
        if !matches!(req, Request::SystemReload) {
            let Some((transport, mine)) = self.conns.get(&cid).map(|c| (c.transport(), c.ticket))
            else {
                return false;
            };
            let line: Vec<Waiting> = self
                .conns
                .iter()
                .filter(|(id, c)| {
                    **id != cid
                        && c.pending.is_some()
                        && c.heavy_turn != Some(turn)
                        && c.wants_requests()
                })
                .filter_map(|(_, c)| {
                    c.ticket.map(|ticket| Waiting {
                        transport: c.transport(),
                        ticket,
                    })
                })
                .collect();
            let Some(left) = self.heavy_left.get_mut(transport.index()) else {
                return false;
            };
            if !may_go(&line, transport, mine, *left) {
                if let Some(c) = self.conns.get_mut(&cid) {
                    if c.ticket.is_none() {
                        c.ticket = Some(self.next_ticket);
                        self.next_ticket += 1;
                    }
                }
                return false;
            }
            *left -= 1;
        }
        if let Some(c) = self.conns.get_mut(&cid) {
            c.heavy_turn = Some(turn);
            c.ticket = None;
        }
        true
    }

    /// Readiness of a connection: read, write, serve. True if it has more
    /// requests waiting than one turn serves. `closed`: the event said the
    /// peer closed (or it is a backlog turn), so read to the end.
    pub fn on_conn<O: Os>(
        &mut self,
        reg: &Registry,
        cid: ClientId,
        sup: &mut Supervisor<O>,
        now: Instant,
        closed: bool,
    ) -> bool {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.fill(&mut self.scratch, closed);
            c.flush(now);
        }
        self.serve(reg, cid, sup, now)
    }

    /// Answer buffered requests while the client may take more; drop it
    /// when done. True if requests are left for another turn.
    pub fn serve<O: Os>(
        &mut self,
        reg: &Registry,
        cid: ClientId,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) -> bool {
        let mut more = false;
        let taken = self.conns.get(&cid).map_or(0, |c| c.taken);
        for n in 0.. {
            let Some(c) = self.conns.get_mut(&cid) else {
                return false;
            };
            if !c.wants_requests() {
                break;
            }
            let paced = (c.heavy_turn == Some(self.turn) && c.has_input())
                || (c.taken - taken >= INPUT_PER_TURN && (c.has_input() || c.may_have_more()));
            if n == REQUESTS_PER_TURN || paced {
                more = true;
                break;
            }
            let req = match c.pending.take() {
                Some(r) => r,
                None => match c.next(now) {
                    // Input left in the kernel while this client was busy
                    // sends no new edge: read again before waiting for one.
                    Next::Incomplete => {
                        if c.may_have_more() && c.fill(&mut self.scratch, true) {
                            continue;
                        }
                        break;
                    }
                    // A refused peer's first value of any kind is its one
                    // answer.
                    Next::Invalid(_) | Next::Fatal(_) | Next::Request(_)
                        if c.who.role == Role::Denied =>
                    {
                        c.send(&Response::err("permission denied"), now);
                        c.close_after_flush = true;
                        continue;
                    }
                    Next::Invalid(msg) => {
                        c.send(&Response::err(msg), now);
                        continue;
                    }
                    Next::Fatal(msg) => {
                        c.send(&Response::err(msg), now);
                        c.close_after_flush = true;
                        continue;
                    }
                    Next::Request(r) => r,
                },
            };
            if expensive(&req) && !self.admit(cid, &req) {
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.pending = Some(req);
                }
                more = true;
                break;
            }
            let Some(who) = self.conns.get(&cid).map(|c| c.who) else {
                return false;
            };
            let follows = Follows::of(&req);
            let mut reply = sup.request(cid, &who, req);
            if let Reply::Now(Response::Metrics { text }) = &mut reply {
                crate::metrics::refused(text, self.unix_refused.total, self.vsock_refused.total);
            }
            if let Some(c) = self.conns.get_mut(&cid) {
                match reply {
                    Reply::Now(r) => c.answer(r, now),
                    Reply::Later => c.busy = true,
                    Reply::Stream(first) => {
                        c.start_follow(first, follows.unwrap_or(Follows::Events), now)
                    }
                }
            }
        }
        self.finish(reg, cid, sup, now);
        more
    }

    /// Flush a connection, count its memory; drop it if it is done, and
    /// the biggest consumers if all connections hold too much.
    fn finish<O: Os>(
        &mut self,
        reg: &Registry,
        cid: ClientId,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        c.flush(now);
        let m = c.memory();
        self.memory = self.memory.saturating_sub(c.counted).saturating_add(m);
        c.counted = m;
        if c.done() {
            self.drop_conn(reg, cid, sup);
        }
        if self.memory > CLIENT_MEMORY {
            for victim in to_shed(&self.slots(), CLIENT_MEMORY, now) {
                let held = self.conns.get(&victim).map_or(0, |c| c.counted);
                let why = format!(
                    "clients together held over {} MiB; it held {} KiB",
                    CLIENT_MEMORY >> 20,
                    held >> 10
                );
                self.log_closed(victim, &why, now);
                self.drop_conn(reg, victim, sup);
            }
        }
    }

    fn drop_conn<O: Os>(&mut self, reg: &Registry, cid: ClientId, sup: &mut Supervisor<O>) {
        if let Some(c) = self.conns.remove(&cid) {
            self.memory = self.memory.saturating_sub(c.counted);
            let _ = reg.deregister(&mut SourceFd(&c.stream.raw_fd()));
            sup.client_gone(cid);
        }
        // Its fd is free now: before anything else can take it.
        self.take_back_spare();
    }

    /// Queue what the supervisor has for clients, and serve the clients
    /// that were waiting on an answer; settle every connection touched
    /// (flush, count its memory, drop finished ones). Follower output is
    /// encoded once for all its followers, and each follower is settled
    /// as soon as it has its copy, so the memory limit holds while a piece
    /// goes out to hundreds of them. Returns the answered clients that
    /// have more requests waiting.
    pub fn deliver_and_serve<O: Os>(
        &mut self,
        reg: &Registry,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) -> Vec<ClientId> {
        let mut answered = Vec::new();
        for o in sup.take_out() {
            match o {
                Out::Answer(cid, r) => {
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.answer(r, now);
                        c.busy = false;
                        if !answered.contains(&cid) {
                            answered.push(cid);
                        }
                    }
                }
                Out::Broadcast(cids, r) => {
                    let line = crate::control::encode_line(&r);
                    let lines = match &r {
                        Response::ServiceLogs { logs } => logs.len(),
                        Response::ServicesLogs { logs } => logs.iter().map(|s| s.logs.len()).sum(),
                        _ => 1,
                    };
                    drop(r);
                    for cid in cids {
                        if let Some(c) = self.conns.get_mut(&cid) {
                            c.send_follow(&line, lines, now);
                            self.finish(reg, cid, sup, now);
                        }
                    }
                }
            }
        }
        let mut again = Vec::new();
        for cid in answered {
            if self.serve(reg, cid, sup, now) {
                again.push(cid);
            }
        }
        again
    }

    /// Connections past their deadline: an incomplete request is answered
    /// with an error, an idle connection dropped; broken ones too.
    pub fn on_timer<O: Os>(&mut self, reg: &Registry, sup: &mut Supervisor<O>, now: Instant) {
        let ids: Vec<ClientId> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| {
                let due = c.deadline().is_some_and(|d| d <= now);
                if due {
                    c.expire(now);
                }
                (due || c.broken).then_some(*id)
            })
            .collect();
        for cid in ids {
            self.finish(reg, cid, sup, now);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(Conn::deadline).min()
    }

    pub fn is_conn(t: Token) -> Option<ClientId> {
        t.0.checked_sub(CONN_BASE).map(|n| n as ClientId)
    }
}

/// The tail of a rate-limited line: how many like it went unlogged.
/// ", N not logged since the last of these lines" for a rate-limited
/// line (`access::Refusals`), or nothing.
pub fn not_logged(n: u64) -> String {
    if n > 0 {
        format!(", {n} not logged since the last of these lines")
    } else {
        String::new()
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Bind the control socket, mode 0600, then give it `unix_socket_mode` and
/// `unix_socket_group` (if either fails it stays 0600). A stale socket file
/// is replaced; a live one (another process serves it) is `AddrInUse`; any
/// other kind of file at the path is left alone and reported. A missing
/// parent directory is created 0755.
fn bind_unix(path: &Path, c: &ControlConfig) -> std::io::Result<mio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if crate::sys::socket_is_live(path) {
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
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
        if let Ok(m) = std::fs::metadata(parent) {
            if m.permissions().mode() & 0o1002 == 0o002 {
                warn!(
                    "control socket directory {} is world-writable: anyone can replace the socket",
                    parent.display()
                );
            }
        }
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = mio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l?;
    if let Some(g) = &c.unix_socket_group {
        let set = access::group_id(g).and_then(|gid| {
            std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| e.to_string())
        });
        if let Err(e) = set {
            error!(
                "control socket {}: unix_socket_group: {e} (left as it is)",
                path.display()
            );
            return Ok(l);
        }
    }
    let mode = c.unix_socket_mode.0;
    if mode != 0o600 {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            error!(
                "control socket {}: unix_socket_mode {mode:04o}: {e} (left 0600)",
                path.display()
            );
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: ClientId, transport: Transport, age_s: u64, now: Instant) -> Slot {
        Slot {
            id,
            transport,
            busy: false,
            following: false,
            last_activity: now - Duration::from_secs(age_s),
            memory: 0,
            queued: 0,
            full: true,
        }
    }

    /// A connection reading an answer now, with `memory` bytes of it queued.
    fn reading(id: ClientId, memory: usize, now: Instant) -> Slot {
        Slot {
            memory,
            queued: memory,
            ..slot(id, Transport::Unix, 0, now)
        }
    }

    #[test]
    fn each_transport_has_its_own_budget() {
        let now = Instant::now() + Duration::from_secs(1000);
        // A full VSOCK budget (a flood from the host) and three Unix clients.
        let mut slots: Vec<Slot> = (0..4)
            .map(|i| slot(i, Transport::Vsock, 100 - i, now))
            .collect();
        slots.extend((10..13).map(|i| slot(i, Transport::Unix, 500, now)));
        // A local client fits without closing anything.
        assert_eq!(to_evict(&slots, Transport::Unix, 4), None);
        // One more VSOCK connection closes VSOCK's longest idle, never a
        // Unix one, however long idle that is.
        assert_eq!(to_evict(&slots, Transport::Vsock, 4), Some(0));
        // And the reverse.
        slots.push(slot(13, Transport::Unix, 1, now));
        assert_eq!(to_evict(&slots, Transport::Unix, 4), Some(10));
        assert_eq!(to_evict(&slots, Transport::Vsock, 5), None);
    }

    #[test]
    fn eviction_spares_a_client_waiting_for_its_answer() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mut slots: Vec<Slot> = (0..3)
            .map(|i| slot(i, Transport::Unix, 10 + i, now))
            .collect();
        slots[2].busy = true; // the oldest, but waiting for a stop
        assert_eq!(to_evict(&slots, Transport::Unix, 3), Some(1));
        for s in &mut slots {
            s.busy = true;
        }
        assert_eq!(to_evict(&slots, Transport::Unix, 3), Some(2));
    }

    #[test]
    fn memory_is_shed_biggest_first_stalled_before_flowing() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mb = 1024 * 1024;
        let mut slots = vec![
            slot(1, Transport::Unix, 60, now),  // stalled, 4 MiB
            slot(2, Transport::Unix, 0, now),   // flowing, 5 MiB
            slot(3, Transport::Vsock, 60, now), // stalled, 2 MiB
            slot(4, Transport::Unix, 60, now),  // stalled, 1 KiB
        ];
        for (s, m) in slots.iter_mut().zip([4 * mb, 5 * mb, 2 * mb, 1024]) {
            s.memory = m;
            s.queued = m;
        }
        assert!(to_shed(&slots, 16 * mb, now).is_empty());
        assert_eq!(to_shed(&slots, 9 * mb, now), vec![1]);
        assert_eq!(to_shed(&slots, 6 * mb, now), vec![1, 3]);
        assert_eq!(to_shed(&slots, 5 * mb, now), vec![1, 3, 4]);
        assert_eq!(to_shed(&slots, 2 * mb, now), vec![1, 3, 4, 2]);
    }

    /// Found by an adversarial review (c3): read-only peers reading big log
    /// answers slowly but steadily got a root `logs -n 10000` answer cut
    /// (once in 20), as the biggest was shed first whoever asked.
    #[test]
    fn read_only_peers_are_shed_before_a_full_access_one() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mb = 1024 * 1024;
        let mut slots = Vec::new();
        for i in 1..=4 {
            let mut s = reading(i, 4 * mb, now);
            s.full = false;
            slots.push(s);
        }
        slots.push(reading(9, 5 * mb, now));
        assert_eq!(to_shed(&slots, 16 * mb, now), vec![1, 2]);
        // Stalled, a full-access peer goes first all the same.
        slots[4].last_activity = now - Duration::from_secs(60);
        assert_eq!(to_shed(&slots, 16 * mb, now), vec![9]);
    }

    /// Found by an adversarial review (adv6): a quiet read-only follower
    /// (the host's `logs -f`, 8 KiB of buffers) was shed first though
    /// dropping it could not bring the total under the bound.
    #[test]
    fn a_small_read_only_follower_is_not_shed_for_nothing() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mb = 1024 * 1024;
        let mut slots = Vec::new();
        for i in 1..=4 {
            slots.push(reading(i, 4 * mb + 100 * 1024, now));
        }
        let mut host = slot(9, Transport::Vsock, 0, now);
        host.full = false;
        host.following = true;
        host.memory = 8 * 1024;
        slots.push(host);
        assert_eq!(to_shed(&slots, 16 * mb, now), vec![1]);
    }

    /// Found by an adversarial review: a quiet follower (nothing queued)
    /// counted as stalled and was dropped first, freeing nothing, while
    /// eight readers of 4 MiB log answers held the memory.
    #[test]
    fn a_quiet_connection_is_not_shed_before_those_holding_the_memory() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mb = 1024 * 1024;
        let mut quiet = slot(1, Transport::Unix, 60, now);
        quiet.following = true;
        quiet.memory = 8 * 1024;
        let mut slots = vec![quiet, slot(2, Transport::Unix, 60, now)];
        slots[1].memory = 4 * 1024; // between requests
        slots.extend((10..18).map(|i| reading(i, 4 * mb, now)));
        let shed = to_shed(&slots, 16 * mb, now);
        assert_eq!(shed, vec![10, 11, 12, 13, 14], "{shed:?}");
    }

    #[test]
    fn expensive_requests_wait_in_their_own_transport_s_line() {
        let line = [
            Waiting {
                transport: Transport::Vsock,
                ticket: 1,
            },
            Waiting {
                transport: Transport::Unix,
                ticket: 5,
            },
        ];
        // A Unix request new to the line waits behind the Unix waiter only.
        assert!(!may_go(&line, Transport::Unix, None, 1));
        assert!(may_go(&line[..1], Transport::Unix, None, 1));
        // With an older place than the Unix waiter it goes, whatever VSOCK
        // has waited longer.
        assert!(may_go(&line, Transport::Unix, Some(3), 1));
        // VSOCK's oldest goes; a newer VSOCK request waits for it.
        assert!(may_go(&line, Transport::Vsock, Some(1), 1));
        assert!(!may_go(&line, Transport::Vsock, Some(2), 1));
        // Nothing left of the turn on a transport: wait.
        assert!(!may_go(&[], Transport::Vsock, None, 0));
    }

    #[test]
    fn eviction_spares_a_follower() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mut slots: Vec<Slot> = (0..3)
            .map(|i| slot(i, Transport::Unix, 10 + i, now))
            .collect();
        slots[2].following = true; // the oldest, following quietly
        assert_eq!(to_evict(&slots, Transport::Unix, 3), Some(1));
        for s in &mut slots {
            s.following = true;
        }
        assert_eq!(to_evict(&slots, Transport::Unix, 3), Some(2));
    }
}
