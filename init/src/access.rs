//! Who is on the other end of a control connection and what it may do: the
//! peer (Unix credentials, VSOCK address), its role, the rules that give a
//! peer its role from `control:` in init.yaml (pure functions), reading a
//! Unix peer's credentials, and the rate limit on logging refusals. Which
//! requests a read-only peer may send is `Request::is_read_only`.

use shared::config::ControlConfig;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// The other end of a connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Unix { uid: u32, gid: u32, pid: i32 },
    Vsock { cid: u32, port: u32 },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Peer::Unix { uid, gid, pid } => write!(f, "unix uid {uid} gid {gid} (pid {pid})"),
            Peer::Vsock { cid, port } => write!(f, "vsock cid {cid} (port {port})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every request.
    Full,
    /// Only requests that change nothing.
    ReadOnly,
    /// Nothing: answered "permission denied" and closed.
    Denied,
}

/// A connection's peer and role, fixed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    pub peer: Peer,
    pub role: Role,
}

impl Who {
    /// The answer to a change from a read-only peer: names the key to change.
    pub fn read_only_message(&self) -> String {
        let how = match self.peer {
            Peer::Vsock { .. } => "set control.vsock_read_only: false to allow changes".into(),
            Peer::Unix { uid, .. } => format!("uid {uid} is in control.unix_read_only_uids"),
        };
        format!("permission denied: read-only connection ({how})")
    }
}

/// The role of a VSOCK peer: only listed CIDs get in (CID 1, a local
/// peer, too: it has no credentials to check), read-only unless
/// `vsock_read_only` is false.
pub fn vsock_role(cid: u32, c: &ControlConfig) -> Role {
    if !c.vsock_allowed_cids.contains(&cid) {
        Role::Denied
    } else if c.vsock_read_only {
        Role::ReadOnly
    } else {
        Role::Full
    }
}

/// The role of a Unix peer. A uid in `unix_read_only_uids` is read-only
/// whatever else admits it; uid 0, init's own uid, `unix_allowed_uids` and
/// any of `groups` (primary and supplementary) in `unix_allowed_gids` get
/// everything; anyone else nothing.
pub fn unix_role(uid: u32, groups: &[u32], own_uid: u32, c: &ControlConfig) -> Role {
    if c.unix_read_only_uids.contains(&uid) {
        Role::ReadOnly
    } else if uid == 0
        || uid == own_uid
        || c.unix_allowed_uids.contains(&uid)
        || groups.iter().any(|g| c.unix_allowed_gids.contains(g))
    {
        Role::Full
    } else {
        Role::Denied
    }
}

/// Who is on the other end of an accepted Unix connection (SO_PEERCRED;
/// the supplementary groups from SO_PEERGROUPS only when a gid rule needs
/// them).
pub fn unix_who(s: &impl AsFd, own_uid: u32, c: &ControlConfig) -> nix::Result<Who> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)?;
    let mut groups = vec![cred.gid()];
    if !c.unix_allowed_gids.is_empty() {
        groups.extend(peer_groups(s));
    }
    Ok(Who {
        peer: Peer::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        },
        role: unix_role(cred.uid(), &groups, own_uid, c),
    })
}

/// The peer's supplementary groups at connect time; none if the kernel
/// cannot tell (before 4.13).
fn peer_groups(s: &impl AsFd) -> Vec<u32> {
    let mut buf: Vec<nix::libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (buf.len() * std::mem::size_of::<nix::libc::gid_t>()) as nix::libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `buf`, which
        // holds that many, and sets `len` to what it wrote (or, with
        // ERANGE, to what it needs).
        let r = unsafe {
            nix::libc::getsockopt(
                s.as_fd().as_raw_fd(),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<nix::libc::gid_t>();
        if r == 0 {
            buf.truncate(n);
            return buf;
        }
        if nix::errno::Errno::last() != nix::errno::Errno::ERANGE {
            break;
        }
        buf.resize(n.clamp(1, 65536), 0);
    }
    Vec::new()
}

/// The gid of `unix_socket_group`: a number, or a name looked up in
/// /etc/group (`name:x:gid:members`).
pub fn group_id(g: &shared::config::Group) -> Result<u32, String> {
    use shared::config::Group;
    match g {
        Group::Id(id) => Ok(*id),
        Group::Name(name) => {
            let text = std::fs::read_to_string("/etc/group")
                .map_err(|e| format!("cannot read /etc/group: {e}"))?;
            group_in(&text, name).ok_or_else(|| format!("no group '{name}' in /etc/group"))
        }
    }
}

fn group_in(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    })
}

/// At most one refusal log line per this long (per transport).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refused connections: counted, and logged at most once per
/// `REFUSAL_LOG_EVERY`, so a peer that keeps trying cannot fill init.log.
/// Also what else must not fill it: signals init drops, reaped orphans
/// (those with a burst of a few lines per window, and a summary at its
/// end).
#[derive(Debug, Default)]
pub struct Refusals {
    pub total: u64,
    unlogged: u64,
    /// When the current window began (at its first line).
    window: Option<Instant>,
    /// Lines logged in it.
    logged: u32,
    /// Lines allowed per window (0 counts as 1).
    burst: u32,
}

impl Refusals {
    /// `burst` lines per window instead of one.
    pub fn with_burst(burst: u32) -> Self {
        Refusals {
            burst,
            ..Refusals::default()
        }
    }

    /// Count a refusal. `Some(n)`: log it now, `n` refusals before it went
    /// unlogged; `None`: do not log it.
    pub fn count(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        let open = self
            .window
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_EVERY);
        if !open {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged >= self.burst.max(1) {
            self.unlogged += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.unlogged))
    }

    /// When the window with unlogged ones in it ends (for `summary`).
    pub fn window_end(&self) -> Option<Instant> {
        let start = self.window.filter(|_| self.unlogged > 0)?;
        start.checked_add(REFUSAL_LOG_EVERY)
    }

    /// Once the window has ended: how many went unlogged in it, and since
    /// when (its start). The next `count` opens a new window.
    pub fn summary(&mut self, now: Instant) -> Option<(u64, Duration)> {
        if now < self.window_end()? {
            return None;
        }
        self.summary_now(now)
    }

    /// The same, whether or not the window has ended: for init's end,
    /// when no later line would carry the count.
    pub fn summary_now(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let start = self.window.filter(|_| self.unlogged > 0)?;
        self.window = None;
        let n = std::mem::take(&mut self.unlogged);
        Some((n, now.saturating_duration_since(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(yaml: &str) -> ControlConfig {
        let p = crate::config::parse(&format!("control:\n{yaml}")).unwrap();
        assert!(p.unknown.is_empty(), "{:?}", p.unknown);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        p.config.control
    }

    #[test]
    fn vsock_defaults_admit_host_and_parent_read_only() {
        let c = ControlConfig::default();
        assert_eq!(c.vsock_allowed_cids, vec![2, 3]);
        assert_eq!(vsock_role(2, &c), Role::ReadOnly);
        assert_eq!(vsock_role(3, &c), Role::ReadOnly);
        // The local CID has no credentials: refused unless listed.
        assert_eq!(vsock_role(1, &c), Role::Denied);
        assert_eq!(vsock_role(16, &c), Role::Denied);
        assert_eq!(vsock_role(u32::MAX, &c), Role::Denied);
    }

    #[test]
    fn vsock_list_and_read_only_key() {
        let c = control("  vsock_allowed_cids: [1, 16]\n  vsock_read_only: false\n");
        assert_eq!(vsock_role(1, &c), Role::Full);
        assert_eq!(vsock_role(16, &c), Role::Full);
        assert_eq!(vsock_role(3, &c), Role::Denied);
        let none = control("  vsock_allowed_cids: []\n");
        for cid in [0, 1, 2, 3, 16, u32::MAX] {
            assert_eq!(vsock_role(cid, &none), Role::Denied, "cid {cid}");
        }
    }

    #[test]
    fn unix_default_rule_is_root_or_own_uid() {
        let c = ControlConfig::default();
        assert_eq!(unix_role(0, &[0], 1000, &c), Role::Full);
        assert_eq!(unix_role(1000, &[1000], 1000, &c), Role::Full);
        assert_eq!(unix_role(1001, &[0], 1000, &c), Role::Denied);
        assert_eq!(unix_role(1001, &[1001, 0], 0, &c), Role::Denied);
    }

    #[test]
    fn unix_lists_widen_and_read_only_wins() {
        let c = control(
            "  unix_allowed_uids: [1001]\n  unix_allowed_gids: [50]\n  unix_read_only_uids: [1002, 0]\n",
        );
        assert_eq!(unix_role(1001, &[1001], 0, &c), Role::Full);
        // Supplementary groups count.
        assert_eq!(unix_role(1003, &[1003, 50], 0, &c), Role::Full);
        assert_eq!(unix_role(1003, &[1003], 0, &c), Role::Denied);
        assert_eq!(unix_role(1002, &[1002], 0, &c), Role::ReadOnly);
        assert_eq!(unix_role(1002, &[50], 0, &c), Role::ReadOnly);
        assert_eq!(unix_role(0, &[0], 0, &c), Role::ReadOnly);
    }

    #[test]
    fn read_only_message_names_the_key() {
        let v = Who {
            peer: Peer::Vsock { cid: 3, port: 5 },
            role: Role::ReadOnly,
        };
        let m = v.read_only_message();
        assert!(
            m.starts_with("permission denied: read-only connection"),
            "{m}"
        );
        assert!(m.contains("control.vsock_read_only: false"), "{m}");
        let u = Who {
            peer: Peer::Unix {
                uid: 7,
                gid: 7,
                pid: 9,
            },
            role: Role::ReadOnly,
        };
        assert!(u
            .read_only_message()
            .contains("control.unix_read_only_uids"));
        assert_eq!(u.peer.to_string(), "unix uid 7 gid 7 (pid 9)");
        assert_eq!(v.peer.to_string(), "vsock cid 3 (port 5)");
    }

    #[test]
    fn refusals_are_counted_and_logged_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        assert_eq!(r.count(t0), Some(0));
        for i in 1..100u64 {
            assert_eq!(r.count(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.count(t0 + REFUSAL_LOG_EVERY), Some(99));
        assert_eq!(r.count(t0 + REFUSAL_LOG_EVERY), None);
        assert_eq!(r.total, 102);
    }

    #[test]
    fn a_burst_per_window_then_a_summary_at_its_end() {
        let t0 = Instant::now();
        let mut r = Refusals::with_burst(3);
        assert_eq!(r.window_end(), None);
        for i in 0..3u64 {
            assert_eq!(r.count(t0 + Duration::from_millis(i)), Some(0));
        }
        assert_eq!(r.window_end(), None, "nothing unlogged yet");
        for i in 3..50u64 {
            assert_eq!(r.count(t0 + Duration::from_millis(i)), None);
        }
        let end = t0 + REFUSAL_LOG_EVERY;
        assert_eq!(r.window_end(), Some(end));
        assert_eq!(r.summary(end - Duration::from_millis(1)), None);
        assert_eq!(r.summary(end), Some((47, REFUSAL_LOG_EVERY)));
        assert_eq!(r.summary(end), None);
        assert_eq!(r.window_end(), None);
        // A new window, its own burst.
        assert_eq!(r.count(end + Duration::from_secs(5)), Some(0));
        assert_eq!(r.total, 51);
    }

    #[test]
    fn socket_mode_and_group_parse() {
        use shared::config::{Group, SocketMode};
        assert_eq!(ControlConfig::default().unix_socket_mode, SocketMode(0o600));
        // Unquoted 0660 is a string to YAML 1.2: taken as octal.
        for text in ["0660", "\"0660\"", "\"660\"", "0o660", "432", "\"0o660\""] {
            let c = control(&format!("  unix_socket_mode: {text}\n"));
            assert_eq!(c.unix_socket_mode, SocketMode(0o660), "{text}");
        }
        for bad in ["660", "\"0999\"", "\"abc\"", "0o1777", "-1"] {
            let p = crate::config::parse(&format!("control:\n  unix_socket_mode: {bad}\n"));
            assert!(p.unwrap().bad.len() == 1, "{bad} accepted");
        }
        let p = crate::config::parse("control:\n  unix_socket_mode: 660\n").unwrap();
        assert!(p.bad[0].contains("\"0660\""), "{:?}", p.bad);
        assert_eq!(p.config.control.unix_socket_mode, SocketMode(0o600));
        let c = control("  unix_socket_group: 100\n");
        assert_eq!(c.unix_socket_group, Some(Group::Id(100)));
        let c = control("  unix_socket_group: ops\n");
        assert_eq!(c.unix_socket_group, Some(Group::Name("ops".into())));
    }

    #[test]
    fn group_names_from_etc_group() {
        let t = "root:x:0:\nops:x:1234:alice,bob\nbad:x:zz:\n";
        assert_eq!(group_in(t, "ops"), Some(1234));
        assert_eq!(group_in(t, "root"), Some(0));
        assert_eq!(group_in(t, "bad"), None);
        assert_eq!(group_in(t, "op"), None);
    }

    #[test]
    fn every_request_is_classified() {
        use shared::protocol::Request;
        let n = || "a".to_string();
        let read = [
            Request::Ping,
            Request::ListServices,
            Request::ServiceStatus { name: n() },
            Request::SystemStatus,
            Request::ServiceLogs {
                name: n(),
                lines: 1,
            },
            Request::ServiceLogsFollow {
                name: n(),
                lines: 1,
            },
            Request::ServiceLogsFollowAll { lines: 1 },
        ];
        let change = [
            Request::ServiceStart { name: n() },
            Request::ServiceStop { name: n() },
            Request::ServiceRestart { name: n() },
            Request::ServiceEnable {
                name: n(),
                now: true,
            },
            Request::ServiceDisable { name: n() },
            Request::ServiceLogsClear { name: n() },
            Request::SystemReload,
            Request::SystemReboot,
            Request::SystemShutdown,
        ];
        assert!(read.iter().all(Request::is_read_only));
        assert!(!change.iter().any(Request::is_read_only));
    }
}
