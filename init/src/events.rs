//! Events: what happened in init, as clients of `initctl events` see it.
//! This module owns the ring of the last `EVENTS_KEPT` events, their
//! sequence numbers (1 for the first of each boot), the boot id (read
//! once) and the wall-clock time of each (RFC 3339 UTC, milliseconds), and
//! what a client reconnecting `since` a number gets first. It does no IO
//! but reading the boot id; the supervisor records events and pushes each
//! to its followers.

use shared::protocol::Event;
use std::collections::VecDeque;
use std::time::SystemTime;

/// How many events are kept for clients that reconnect with `since`.
pub const EVENTS_KEPT: usize = 1024;
/// The longest text field of an event (bytes); longer is cut, so the ring
/// stays small whatever a reload error or a reason says.
pub const TEXT_MAX: usize = 1024;
/// Services listed in one `boot-finished` or `final` event.
pub const SERVICES_MAX: usize = 1024;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub struct Events {
    kept: VecDeque<Event>,
    /// The number the next event gets.
    next: u64,
    boot_id: String,
}

/// The kernel's boot id, or "" if it cannot be read.
pub fn read_boot_id() -> String {
    crate::sys::read_regular(std::path::Path::new(BOOT_ID), 128)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Events {
    pub fn new(boot_id: String) -> Self {
        Events {
            kept: VecDeque::new(),
            next: 1,
            boot_id,
        }
    }

    /// The number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// Number, time and keep `e`; returns it as kept.
    pub fn record(&mut self, mut e: Event, wall: SystemTime) -> Event {
        e.seq = self.next;
        self.next += 1;
        e.time = crate::logs::rfc3339(wall);
        e.boot_id.clone_from(&self.boot_id);
        for t in [&mut e.reason, &mut e.message, &mut e.service]
            .into_iter()
            .flatten()
        {
            cut(t);
        }
        e.services.truncate(SERVICES_MAX);
        for n in &mut e.services {
            for t in n.reason.iter_mut() {
                cut(t);
            }
        }
        if self.kept.len() == EVENTS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(e.clone());
        e
    }

    /// What a client that has seen every event up to `since` gets first:
    /// the kept events after it, preceded by a `lost` event (numbered as
    /// the last lost one) if some of those have aged out. A `since` past
    /// the newest (another boot's number) counts as 0.
    pub fn after(&self, since: u64) -> Vec<Event> {
        let since = if since > self.last_seq() { 0 } else { since };
        let first = self.kept.front().map_or(self.next, |e| e.seq);
        let mut v = Vec::new();
        if since + 1 < first {
            v.push(Event {
                seq: first - 1,
                time: crate::logs::rfc3339(SystemTime::now()),
                boot_id: self.boot_id.clone(),
                kind: "lost".into(),
                lost: Some(first - 1 - since),
                message: Some(format!(
                    "{} events after {since} are no longer kept (init keeps the last {EVENTS_KEPT})",
                    first - 1 - since
                )),
                ..Event::default()
            });
        }
        v.extend(self.kept.iter().filter(|e| e.seq > since).cloned());
        v
    }
}

/// Cut `s` to at most `TEXT_MAX` bytes, on a character boundary.
fn cut(s: &mut String) {
    if s.len() > TEXT_MAX {
        let mut n = TEXT_MAX - 3;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
        s.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> Event {
        Event {
            kind: kind.into(),
            ..Event::default()
        }
    }

    #[test]
    fn numbers_start_at_one_and_carry_time_and_boot_id() {
        let mut e = Events::new("b-1".into());
        assert_eq!(e.last_seq(), 0);
        assert!(e.after(0).is_empty());
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_123);
        let got = e.record(ev("state"), t);
        assert_eq!(got.seq, 1);
        assert_eq!(got.time, "2000-02-29T00:00:00.123Z");
        assert_eq!(got.boot_id, "b-1");
        assert_eq!(e.record(ev("x"), t).seq, 2);
        let after: Vec<u64> = e.after(0).iter().map(|e| e.seq).collect();
        assert_eq!(after, vec![1, 2]);
        assert_eq!(e.after(1).len(), 1);
        assert!(e.after(2).is_empty());
        // Another boot's number: everything kept.
        assert_eq!(e.after(99).len(), 2);
    }

    #[test]
    fn since_an_aged_out_number_starts_with_a_lost_event() {
        let mut e = Events::new(String::new());
        let n = EVENTS_KEPT as u64 + 10;
        for _ in 0..n {
            e.record(ev("state"), SystemTime::now());
        }
        // Kept: 11 ..= 1034.
        let all = e.after(0);
        assert_eq!(all.len(), EVENTS_KEPT + 1);
        assert_eq!(all[0].kind, "lost");
        assert_eq!((all[0].seq, all[0].lost), (10, Some(10)));
        assert_eq!(all[1].seq, 11);
        let from5 = e.after(5);
        assert_eq!((from5[0].seq, from5[0].lost), (10, Some(5)));
        assert_eq!(from5[1].seq, 11);
        // Nothing lost after 10: no lost event.
        let from10 = e.after(10);
        assert_eq!(from10.len(), EVENTS_KEPT);
        assert_eq!(from10[0].seq, 11);
        assert_eq!(e.after(n - 1).len(), 1);
    }

    #[test]
    fn long_texts_are_cut() {
        let mut e = Events::new(String::new());
        let mut x = ev("reload");
        x.message = Some("é".repeat(5000));
        let got = e.record(x, SystemTime::now());
        let m = got.message.as_deref().unwrap();
        assert!(m.len() <= TEXT_MAX && m.ends_with("..."), "{}", m.len());
    }

    #[test]
    fn a_missing_boot_id_is_empty_not_an_error() {
        // Whatever this machine has, reading it never panics; the id is
        // one line without its newline.
        let id = read_boot_id();
        assert!(!id.contains('\n'));
    }
}
