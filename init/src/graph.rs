//! The dependency graph: startup order by Kahn's algorithm, ties broken by
//! name, cycles reported and then started in name order.

use std::collections::{BTreeMap, BTreeSet};

/// One service's edges as written in its file.
pub struct Node<'a> {
    pub name: &'a str,
    pub after: &'a [String],
    pub before: &'a [String],
    pub requires: &'a [String],
    pub required_by: &'a [String],
}

impl<'a> Node<'a> {
    /// A service's node; one without a valid definition has no edges.
    pub fn new(name: &'a str, def: Option<&'a crate::unit::ServiceDef>) -> Self {
        match def {
            Some(d) => Node {
                name,
                after: &d.after,
                before: &d.before,
                requires: &d.requires,
                required_by: &d.required_by,
            },
            None => Node {
                name,
                after: &[],
                before: &[],
                requires: &[],
                required_by: &[],
            },
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Order {
    /// Every node, in start order.
    pub order: Vec<String>,
    /// Each cycle found, as `a -> b -> a`.
    pub cycles: Vec<String>,
    /// Names in After/Before/Requires/RequiredBy that name no service, or
    /// the service itself.
    pub warnings: Vec<String>,
}

pub fn order(nodes: &[Node]) -> Order {
    let mut out = Order::default();
    let known: BTreeSet<&str> = nodes.iter().map(|n| n.name).collect();
    // succ[a] = services that must start after a.
    let mut succ: BTreeMap<&str, BTreeSet<&str>> =
        known.iter().map(|n| (*n, BTreeSet::new())).collect();
    let mut edge = |first: &str, then: &str, out: &mut Order, via: &str, owner: &str| {
        match (known.get(first), known.get(then)) {
            (Some(a), Some(b)) if a != b => {
                succ.entry(a).or_default().insert(b);
            }
            (Some(_), Some(_)) => out
                .warnings
                .push(format!("{owner}: {via} names itself; ignored")),
            _ if via == "Requires" => {} // reported by the supervisor as a failed requirement
            _ => {
                let missing = if known.contains(first) { then } else { first };
                out.warnings
                    .push(format!("{owner}: {via} names unknown service '{missing}'"));
            }
        }
    };
    for n in nodes {
        for d in n.after {
            edge(d, n.name, &mut out, "After", n.name);
        }
        for d in n.requires {
            edge(d, n.name, &mut out, "Requires", n.name);
        }
        for o in n.before {
            edge(n.name, o, &mut out, "Before", n.name);
        }
        for r in n.required_by {
            edge(n.name, r, &mut out, "RequiredBy", n.name);
        }
    }
    let mut indegree: BTreeMap<&str, usize> = known.iter().map(|n| (*n, 0)).collect();
    for targets in succ.values() {
        for t in targets {
            if let Some(d) = indegree.get_mut(t) {
                *d += 1;
            }
        }
    }
    let mut ready: BTreeSet<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    while let Some(n) = ready.pop_first() {
        out.order.push(n.to_string());
        indegree.remove(n);
        for t in succ.get(n).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(t) {
                *d -= 1;
                if *d == 0 {
                    ready.insert(t);
                }
            }
        }
    }
    // What is left sits on or behind a cycle.
    let left: BTreeSet<&str> = indegree.keys().copied().collect();
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for start in &left {
        if reported.contains(start) {
            continue;
        }
        if let Some(cycle) = find_cycle(start, &succ, &left) {
            if cycle.iter().any(|c| reported.contains(c)) {
                continue;
            }
            reported.extend(cycle.iter().copied());
            let mut s = cycle.join(" -> ");
            if let Some(first) = cycle.first() {
                s.push_str(" -> ");
                s.push_str(first);
            }
            out.cycles.push(s);
        }
    }
    out.order.extend(left.iter().map(|s| s.to_string()));
    out
}

/// A cycle through `start` within `left`, if there is one.
fn find_cycle<'a>(
    start: &'a str,
    succ: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    left: &BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    // Depth-first search keeping the path.
    let mut path = vec![start];
    let mut iters = vec![succ.get(start).map(|s| s.iter())];
    let mut seen = BTreeSet::from([start]);
    while let Some(top) = iters.last_mut() {
        match top.as_mut().and_then(|i| i.next()) {
            Some(&next) if next == start => return Some(path),
            Some(&next) if left.contains(next) && seen.insert(next) => {
                path.push(next);
                iters.push(succ.get(next).map(|s| s.iter()));
            }
            Some(_) => {}
            None => {
                iters.pop();
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    struct N(
        &'static str,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );

    fn run(ns: &[N]) -> Order {
        let nodes: Vec<Node> = ns
            .iter()
            .map(|n| Node {
                name: n.0,
                after: &n.1,
                before: &n.2,
                requires: &n.3,
                required_by: &n.4,
            })
            .collect();
        order(&nodes)
    }

    #[test]
    fn seed_example() {
        let o = run(&[
            N(
                "redis",
                v(&[]),
                v(&["cache-warmer", "webapp"]),
                v(&[]),
                v(&[]),
            ),
            N(
                "cache-warmer",
                v(&["redis"]),
                v(&["webapp"]),
                v(&["redis"]),
                v(&[]),
            ),
            N("database", v(&[]), v(&["webapp"]), v(&[]), v(&[])),
            N(
                "webapp",
                v(&["database", "cache-warmer"]),
                v(&[]),
                v(&["database"]),
                v(&[]),
            ),
        ]);
        assert_eq!(o.order, v(&["database", "redis", "cache-warmer", "webapp"]));
        assert!(o.cycles.is_empty() && o.warnings.is_empty());
    }

    #[test]
    fn cycles_are_named_and_still_ordered() {
        let o = run(&[
            N("a", v(&["b"]), v(&[]), v(&[]), v(&[])),
            N("b", v(&["a"]), v(&[]), v(&[]), v(&[])),
            N("c", v(&[]), v(&[]), v(&[]), v(&["d"])),
            N("d", v(&["ghost"]), v(&[]), v(&[]), v(&[])),
        ]);
        assert_eq!(o.order, v(&["c", "d", "a", "b"]));
        assert_eq!(o.cycles, v(&["a -> b -> a"]));
        assert_eq!(o.warnings, v(&["d: After names unknown service 'ghost'"]));
    }

    #[test]
    fn a_service_naming_itself_is_warned_about_and_ordered() {
        let o = run(&[
            N("a", v(&["a"]), v(&["a"]), v(&["a"]), v(&["a"])),
            N("b", v(&[]), v(&[]), v(&["a"]), v(&[])),
        ]);
        assert_eq!(o.order, v(&["a", "b"]));
        assert!(o.cycles.is_empty());
        assert_eq!(o.warnings.len(), 4, "{:?}", o.warnings);
        assert!(o
            .warnings
            .contains(&"a: Requires names itself; ignored".to_string()));
    }

    #[test]
    fn three_cycle_and_tail() {
        let o = run(&[
            N("x", v(&["z"]), v(&[]), v(&[]), v(&[])),
            N("y", v(&["x"]), v(&[]), v(&[]), v(&[])),
            N("z", v(&["y"]), v(&[]), v(&[]), v(&[])),
            N("w", v(&["z"]), v(&[]), v(&[]), v(&[])),
        ]);
        assert_eq!(o.cycles, v(&["x -> y -> z -> x"]));
        assert_eq!(o.order, v(&["w", "x", "y", "z"]));
    }
}
