//! The dependency graph of the loaded services as resolved id edges, built
//! at load and at every reload from the definitions the next runs use (a
//! reloaded file's relations hold at once, as after systemd's
//! daemon-reload, while its running process keeps the rest): start order, what each
//! service requires, what requires it, what is ordered after it (to be
//! stopped first) and what it is ordered after (waited for while starting). Every query is pure: nothing here starts or stops.

use super::table::Table;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub struct Deps {
    order: Vec<usize>,
    /// What each service requires: resolved ids, or the name that names no service.
    requires: BTreeMap<usize, Vec<Result<usize, String>>>,
    /// What requires each service (the reverse of `requires`).
    required_by: BTreeMap<usize, Vec<usize>>,
    /// Services ordered after each one by an edge: stopped before it.
    later: BTreeMap<usize, Vec<usize>>,
    /// The reverse: what each one is ordered after (waited for while it
    /// starts).
    earlier: BTreeMap<usize, Vec<usize>>,
    pub warnings: Vec<String>,
    pub cycles: Vec<String>,
}

impl Deps {
    pub fn build(t: &Table) -> Deps {
        let listed: Vec<(usize, &super::table::Service)> = t.listed().collect();
        let nodes: Vec<crate::graph::Node> = listed
            .iter()
            .map(|(_, s)| crate::graph::Node::new(&s.name, s.next_def()))
            .collect();
        let o = crate::graph::order(&nodes);
        let ids: BTreeMap<&str, usize> = listed
            .iter()
            .map(|(id, s)| (s.name.as_str(), *id))
            .collect();
        let mut d = Deps {
            order: o
                .order
                .iter()
                .filter_map(|n| ids.get(n.as_str()).copied())
                .collect(),
            warnings: o.warnings,
            cycles: o.cycles,
            ..Deps::default()
        };
        let rank: BTreeMap<usize, usize> =
            d.order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut requires: BTreeMap<usize, Vec<Result<usize, String>>> = BTreeMap::new();
        let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
        for (id, s) in &listed {
            let Some(def) = s.next_def() else { continue };
            // A service named in its own Requires or RequiredBy is no
            // requirement (warned about by the graph): it would wait for
            // itself.
            for name in &def.requires {
                let r = ids.get(name.as_str()).copied().ok_or_else(|| name.clone());
                if r == Ok(*id) {
                    continue;
                }
                if let Ok(a) = r {
                    edges.insert((a, *id));
                }
                let v = requires.entry(*id).or_default();
                if !v.contains(&r) {
                    v.push(r);
                }
            }
            for name in &def.required_by {
                if let Some(b) = ids.get(name.as_str()).filter(|b| **b != *id) {
                    let v = requires.entry(*b).or_default();
                    if !v.contains(&Ok(*id)) {
                        v.push(Ok(*id));
                    }
                    edges.insert((*id, *b));
                }
            }
            for name in &def.after {
                if let Some(a) = ids.get(name.as_str()) {
                    edges.insert((*a, *id));
                }
            }
            for name in &def.before {
                if let Some(b) = ids.get(name.as_str()) {
                    edges.insert((*id, *b));
                }
            }
        }
        for (b, reqs) in &requires {
            for a in reqs.iter().flatten() {
                d.required_by.entry(*a).or_default().push(*b);
            }
        }
        d.requires = requires;
        // An edge a -> b orders b after a unless a cycle put b first.
        for (a, b) in edges {
            if a != b && rank.get(&a) < rank.get(&b) {
                d.later.entry(a).or_default().push(b);
                d.earlier.entry(b).or_default().push(a);
            }
        }
        d
    }

    /// Every listed service, in start order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
    pub fn requires(&self, id: usize) -> &[Result<usize, String>] {
        self.requires.get(&id).map_or(&[], Vec::as_slice)
    }
    pub fn required_by(&self, id: usize) -> &[usize] {
        self.required_by.get(&id).map_or(&[], Vec::as_slice)
    }
    pub fn later(&self, id: usize) -> &[usize] {
        self.later.get(&id).map_or(&[], Vec::as_slice)
    }
    pub fn earlier(&self, id: usize) -> &[usize] {
        self.earlier.get(&id).map_or(&[], Vec::as_slice)
    }
    /// Everything that (transitively) requires `id`.
    pub fn dependents(&self, id: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(x) = todo.pop() {
            for d in self.required_by(x) {
                if *d != id && found.insert(*d) {
                    todo.push(*d);
                }
            }
        }
        found
    }
}
