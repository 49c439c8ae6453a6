//! The dependency graph applied to live services: start order, what a
//! service requires, what requires it, and stopping in reverse order.

use super::*;

impl Supervisor {
    pub(super) fn compute_order(&mut self, report: bool) {
        let nodes: Vec<crate::graph::Node> = self
            .services
            .values()
            .map(|s| crate::graph::Node::new(&s.name, s.def.as_ref()))
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

    pub(super) fn rank(&self, id: usize) -> usize {
        self.order
            .iter()
            .position(|x| *x == id)
            .unwrap_or(usize::MAX)
    }

    /// Is `a` ordered before `b` by an edge (so `b` must stop before `a`)?
    pub(super) fn edge(&self, a: usize, b: usize) -> bool {
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
    pub(super) fn requires(&self, b: usize, a: usize) -> bool {
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

    pub(super) fn required_ids(&self, id: usize) -> Vec<Result<usize, String>> {
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
    pub(super) fn dependents(&self, id: usize) -> BTreeSet<usize> {
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

    pub(super) fn requirements(&mut self, id: usize, pull_in: bool) -> Req {
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

    /// The service and everything that requires it and is not down.
    pub(super) fn stop_set(&self, id: usize) -> Vec<usize> {
        let mut set = vec![id];
        set.extend(
            self.dependents(id)
                .into_iter()
                .filter(|d| self.services.get(d).is_some_and(|s| !s.m.state.down())),
        );
        set
    }

    /// Stop queued services, each once nothing ordered after it is up.
    pub(super) fn settle_stops(&mut self) -> bool {
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
}
