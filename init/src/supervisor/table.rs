//! The service table: each service's definition (and the one a reload
//! left for its next run), state machine, current
//! process and output, by id, with indexes by pid and by deadline kept in
//! step with the machines (a machine changes only through `Table::feed`),
//! and by name for the listed (not removed) services.

use crate::logs::pipe::Output;
use crate::os::Proc;
use crate::service::{Event, Machine, Policy, State, Step};
use crate::unit::{ServiceDef, UnitFile};
use shared::protocol::Dependencies;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

pub struct Service {
    pub name: String,
    pub file_enabled: bool,
    /// The definition the current or next run uses; None if never valid.
    pub def: Option<ServiceDef>,
    /// What a reload read while a process of the old run was alive: the
    /// changed definition, or why the file is now invalid. It takes over
    /// once none is (`Table::apply_pending`), so the old run keeps its own
    /// settings to the end and the next start, however it comes, takes the
    /// new ones whole (or finds the service invalid). What follows the
    /// end (`policy`, the end action) is the new file's already.
    pub pending: Option<Result<ServiceDef, String>>,
    pub load_error: Option<String>,
    m: Machine,
    proc_: Option<Proc>,
    pub out: Output,
    /// Removed from disk by a reload: forget it once it is down.
    removed: bool,
    /// The last `STATUS=` of the current run (notify socket).
    pub status_text: Option<String>,
    /// The pid of the last process, kept once it has exited (events).
    pub last_pid: Option<i32>,
    /// When the state last changed (metrics).
    pub changed_at: Option<Instant>,
}

impl Service {
    fn new(u: UnitFile) -> Self {
        let (def, load_error, m) = match u.def {
            Ok(d) => (Some(d), None, Machine::default()),
            Err(e) => (None, Some(e.clone()), Machine::invalid(e)),
        };
        Service {
            out: Output::new(&u.name),
            name: u.name,
            file_enabled: u.file_enabled,
            def,
            pending: None,
            load_error,
            m,
            proc_: None,
            removed: false,
            status_text: None,
            last_pid: None,
            changed_at: None,
        }
    }
    pub fn removed(&self) -> bool {
        self.removed
    }
    pub fn m(&self) -> &Machine {
        &self.m
    }
    pub fn state(&self) -> &State {
        self.m.state()
    }
    pub fn proc_(&self) -> Option<&Proc> {
        self.proc_.as_ref()
    }
    /// Started at boot: the file's name and the next run's `ServiceEnable`.
    pub fn enabled(&self) -> bool {
        self.file_enabled && self.next_def().is_none_or(|d| d.service_enable)
    }
    /// The machine's policy: the running definition's for the run itself
    /// (type, timeouts, watchdog), the next run's for what follows its end
    /// (`Restart`, `RestartSec`, the start limit), as after systemd's
    /// daemon-reload.
    pub fn policy(&self) -> Policy {
        let mut p = self.def.as_ref().map(Policy::from).unwrap_or(Policy::NONE);
        if let Some(Ok(next)) = &self.pending {
            let n = Policy::from(next);
            (p.restart, p.restart_sec) = (n.restart, n.restart_sec);
            (p.burst, p.interval_sec) = (n.burst, n.interval_sec);
        }
        p
    }
    /// The definition the next run uses: the dependency graph's. A file
    /// made invalid keeps the running one's until that run ends.
    pub fn next_def(&self) -> Option<&ServiceDef> {
        match &self.pending {
            Some(Ok(d)) => Some(d),
            Some(Err(_)) | None => self.def.as_ref(),
        }
    }
    pub fn deps(&self) -> Dependencies {
        let d = self.next_def();
        let get = |f: fn(&ServiceDef) -> &Vec<String>| d.map(f).cloned().unwrap_or_default();
        Dependencies {
            before: get(|d| &d.before),
            after: get(|d| &d.after),
            requires: get(|d| &d.requires),
            required_by: get(|d| &d.required_by),
        }
    }
}

#[derive(Default)]
pub struct Table {
    services: BTreeMap<usize, Service>,
    by_pid: BTreeMap<i32, usize>,
    /// Listed (not removed) services by name.
    by_name: BTreeMap<String, usize>,
    /// How many are marked removed and not forgotten yet.
    removed: usize,
    timers: BTreeSet<(Instant, usize)>,
    next_id: usize,
    next_gen: u32,
}

impl Table {
    pub fn add(&mut self, u: UnitFile) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.by_name.insert(u.name.clone(), id);
        self.services.insert(id, Service::new(u));
        id
    }
    pub fn get(&self, id: usize) -> Option<&Service> {
        self.services.get(&id)
    }
    pub fn get_mut(&mut self, id: usize) -> Option<&mut Service> {
        self.services.get_mut(&id)
    }
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Service)> {
        self.services.iter().map(|(id, s)| (*id, s))
    }
    pub fn ids(&self) -> Vec<usize> {
        self.services.keys().copied().collect()
    }
    pub fn len(&self) -> usize {
        self.services.len()
    }
    /// Services shown to clients: not those a reload removed.
    pub fn listed(&self) -> impl Iterator<Item = (usize, &Service)> {
        self.iter().filter(|(_, s)| !s.removed)
    }
    pub fn id_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    /// A reload found its file gone: no longer listed, forgotten once down.
    pub fn mark_removed(&mut self, id: usize) {
        if let Some(s) = self.services.get_mut(&id) {
            if !s.removed {
                s.removed = true;
                self.removed += 1;
                if self.by_name.get(&s.name) == Some(&id) {
                    self.by_name.remove(&s.name);
                }
            }
        }
    }
    /// A reload found the file of a service it had removed back before
    /// that one was forgotten: listed again, the same service.
    pub fn revive(&mut self, name: &str) -> Option<usize> {
        if self.removed == 0 || self.by_name.contains_key(name) {
            return None;
        }
        let (id, s) = self
            .services
            .iter_mut()
            .find(|(_, s)| s.removed && s.name == name)?;
        s.removed = false;
        self.removed -= 1;
        self.by_name.insert(name.to_string(), *id);
        Some(*id)
    }
    pub fn any_removed(&self) -> bool {
        self.removed > 0
    }
    pub fn by_pid(&self, pid: i32) -> Option<usize> {
        self.by_pid.get(&pid).copied()
    }

    /// Feed an event to a service's machine. Returns the step and whether
    /// the state changed.
    pub fn feed(&mut self, id: usize, ev: Event, now: Instant) -> Option<(Step, bool)> {
        let s = self.services.get_mut(&id)?;
        let before = (s.m.state().clone(), s.m.deadline());
        let policy = s.policy();
        let step = s.m.on(ev, &policy, now);
        if let Some(d) = before.1 {
            self.timers.remove(&(d, id));
        }
        if let Some(d) = s.m.deadline() {
            self.timers.insert((d, id));
        }
        let changed = before.0 != *s.m.state();
        if changed {
            s.changed_at = Some(now);
        }
        Some((step, changed))
    }

    /// Once no process of the old run is alive, what a reload read takes
    /// over. Returns why the file is invalid, if it is: the caller feeds
    /// `Invalidated`.
    pub fn apply_pending(&mut self, id: usize) -> Option<String> {
        let s = self.services.get_mut(&id)?;
        if s.m.state().active() {
            return None;
        }
        match s.pending.take()? {
            Ok(new) => {
                s.def = Some(new);
                None
            }
            Err(why) => {
                s.def = None;
                Some(why)
            }
        }
    }

    /// A new generation number for a process and its pipes.
    pub fn next_gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }
    pub fn set_proc(&mut self, id: usize, p: Proc) {
        if let Some(s) = self.services.get_mut(&id) {
            self.by_pid.insert(p.pid.as_raw(), id);
            if let Some(old) = s.proc_.replace(p) {
                self.by_pid.remove(&old.pid.as_raw());
            }
        }
    }
    pub fn take_proc(&mut self, id: usize) -> Option<Proc> {
        let s = self.services.get_mut(&id)?;
        let p = s.proc_.take()?;
        s.last_pid = Some(p.pid.as_raw());
        self.by_pid.remove(&p.pid.as_raw());
        Some(p)
    }

    /// Services whose machine deadline has passed.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        self.timers
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect()
    }
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(d, _)| *d)
    }

    pub fn remove(&mut self, id: usize) -> Option<Service> {
        let s = self.services.remove(&id)?;
        if s.removed {
            self.removed -= 1;
        }
        if self.by_name.get(&s.name) == Some(&id) {
            self.by_name.remove(&s.name);
        }
        if let Some(d) = s.m.deadline() {
            self.timers.remove(&(d, id));
        }
        if let Some(p) = &s.proc_ {
            self.by_pid.remove(&p.pid.as_raw());
        }
        Some(s)
    }
}
