//! The clients: the Unix and VSOCK listeners and every control connection
//! (`control::Conn`: framing, buffers, limits). Requests go to the
//! supervisor; its answers, held answers and follower lines come back as
//! `Out` and are queued here. A connection that ends is reported to the
//! supervisor (`client_gone`) so nothing is kept for it. At accept each
//! connection gets its peer and role (`access::Who`); refused peers are
//! counted and logged here. A reserve fd lets init, out of fds, still
//! accept a client to tell it so.

use crate::access::{self, Peer, Refusals, Role, Who};
use crate::control::{Conn, Next, Stream};
use crate::os::Os;
use crate::supervisor::{ClientId, Out, Reply, Supervisor};
use crate::sys::FileId;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use shared::config::ControlConfig;
use shared::protocol::Response;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

pub const UNIX_LISTENER: Token = Token(2);
pub const VSOCK_LISTENER: Token = Token(3);
/// Tokens at or above this are connections.
pub const CONN_BASE: usize = 1 << 62;
const MAX_CONNS: usize = 256;
/// Requests served from one connection per loop turn before others get a turn.
const REQUESTS_PER_TURN: usize = 64;

pub struct Clients {
    unix: Option<mio::net::UnixListener>,
    /// The socket file we bound: removed at exit if still ours.
    unix_file: Option<FileId>,
    vsock: Option<vsock::VsockListener>,
    conns: BTreeMap<ClientId, Conn>,
    next: ClientId,
    /// Who may connect and what they may do (`control:` in init.yaml).
    rules: ControlConfig,
    own_uid: u32,
    unix_refused: Refusals,
    vsock_refused: Refusals,
    /// /dev/null, held so that init out of fds can still tell a client
    /// so (see `shed`).
    reserve: Option<std::fs::File>,
    /// Clients are being turned away for lack of fds (said once).
    shedding: bool,
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
            rules: c.clone(),
            own_uid: nix::unistd::geteuid().as_raw(),
            unix_refused: Refusals::default(),
            vsock_refused: Refusals::default(),
            reserve: open_reserve(),
            shedding: false,
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

    pub fn accept(&mut self, reg: &Registry, t: Token, now: Instant) {
        loop {
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
                    Some(Err(e)) if crate::sys::out_of_fds(&e) => return self.shed(t, now),
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
                    Some(Err(e)) if crate::sys::out_of_fds(&e) => return self.shed(t, now),
                    Some(Err(e)) => {
                        error!("vsock accept: {e}");
                        return;
                    }
                    None => return,
                }
            };
            self.shedding = false;
            let mut conn = Conn::new(stream, who, now);
            if who.role == Role::Denied {
                self.log_refusal(&who, now);
                // VSOCK: closed at once (the untrusted side holds nothing
                // here). Unix: kept until its first request, which is
                // answered "permission denied" (closing first would make
                // the client's write fail instead).
                if matches!(who.peer, Peer::Vsock { .. }) {
                    conn.send(&Response::err("permission denied"));
                    conn.flush(now);
                    continue;
                }
            }
            if self.conns.len() >= MAX_CONNS {
                conn.send(&Response::err("too many connections"));
                conn.flush(now);
                continue; // dropped here
            }
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
                }
                Err(e) => error!("register connection: {e}"),
            }
        }
    }

    /// Out of fds, with clients waiting on listener `t`: for each, let the
    /// reserve go, accept the client, tell it so, close it, take the
    /// reserve back (the libev/nginx trick). Otherwise they would wait
    /// unanswered until fds come back and another client knocks.
    fn shed(&mut self, t: Token, now: Instant) {
        if !self.shedding {
            warn!("out of file descriptors: turning clients away until some are free");
            self.shedding = true;
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
            conn.send(&Response::err("init is out of file descriptors"));
            conn.flush(now);
            drop(conn);
            self.reserve = open_reserve();
        }
    }

    /// Readiness of a connection: read, write, serve. True if it has more
    /// requests waiting than one turn serves.
    pub fn on_conn<O: Os>(
        &mut self,
        reg: &Registry,
        cid: ClientId,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) -> bool {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.fill(now);
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
        for n in 0.. {
            let Some(c) = self.conns.get_mut(&cid) else {
                return false;
            };
            if !c.wants_requests() {
                break;
            }
            if n == REQUESTS_PER_TURN {
                more = true;
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
                _ if c.who.role == Role::Denied => {
                    c.send(&Response::err("permission denied"));
                    c.close_after_flush = true;
                }
                Next::Invalid(msg) => c.send(&Response::err(msg)),
                Next::Fatal(msg) => {
                    c.send(&Response::err(msg));
                    c.close_after_flush = true;
                }
                Next::Request(req) => {
                    let reply = sup.request(cid, &c.who, req);
                    if let Some(c) = self.conns.get_mut(&cid) {
                        match reply {
                            Reply::Now(r) => c.send(&r),
                            Reply::Later => c.busy = true,
                            Reply::Stream(first) => c.start_follow(&first),
                        }
                    }
                }
            }
        }
        self.finish(reg, cid, sup, now);
        more
    }

    /// Flush a connection; drop it if it is done.
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
        if c.done() {
            if let Some(c) = self.conns.remove(&cid) {
                let _ = reg.deregister(&mut SourceFd(&c.stream.raw_fd()));
            }
            sup.client_gone(cid);
        }
    }

    /// Queue what the supervisor has for clients. Returns the clients that
    /// got a held answer (they may have more requests to serve).
    pub fn deliver(&mut self, out: Vec<Out>, now: Instant) -> Vec<ClientId> {
        let mut answered = Vec::new();
        for o in out {
            match o {
                Out::Answer(cid, r) => {
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.send(&r);
                        c.busy = false;
                        answered.push(cid);
                    }
                }
                Out::Stream(cid, r) => {
                    if let Some(c) = self.conns.get_mut(&cid) {
                        c.send_follow(&r);
                        c.flush(now);
                    }
                }
            }
        }
        answered
    }

    /// Deliver, then serve the clients that were waiting on an answer and
    /// settle every connection touched (flush, drop finished ones).
    pub fn deliver_and_serve<O: Os>(
        &mut self,
        reg: &Registry,
        sup: &mut Supervisor<O>,
        now: Instant,
    ) -> Vec<ClientId> {
        let mut again = Vec::new();
        let out = sup.take_out();
        let touched: Vec<ClientId> = out
            .iter()
            .map(|o| match o {
                Out::Answer(c, _) | Out::Stream(c, _) => *c,
            })
            .collect();
        let answered = self.deliver(out, now);
        for cid in touched {
            if answered.contains(&cid) {
                if self.serve(reg, cid, sup, now) {
                    again.push(cid);
                }
            } else {
                self.finish(reg, cid, sup, now);
            }
        }
        again
    }

    /// Drop connections idle past their timeout, and broken ones.
    pub fn on_timer<O: Os>(&mut self, reg: &Registry, sup: &mut Supervisor<O>, now: Instant) {
        let ids: Vec<ClientId> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| {
                if c.idle_deadline().is_some_and(|d| d <= now) {
                    c.broken = true;
                }
                c.broken.then_some(*id)
            })
            .collect();
        for cid in ids {
            self.finish(reg, cid, sup, now);
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
            let total = counter.total;
            let quiet = if unlogged > 0 {
                format!(", {unlogged} not logged since the last of these lines")
            } else {
                String::new()
            };
            warn!(
                "refused control connection from {}: {why} ({total} refused so far{quiet})",
                who.peer
            );
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(Conn::idle_deadline).min()
    }

    pub fn is_conn(t: Token) -> Option<ClientId> {
        t.0.checked_sub(CONN_BASE).map(|n| n as ClientId)
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
