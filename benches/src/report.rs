//! One row per figure: init, each peer, the floor, the ratios and the
//! target; printed as a table and written as JSON.

use crate::stats::Stat;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Secs,
    Bytes,
    Count,
    PerSec,
    BytesPerSec,
}

/// A peer's cell: measured, not installed, or not applicable.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Got(Stat),
    Missing,
    NotApplicable,
    Failed(String),
}

/// A target: init against the floor, an absolute bound, the peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// init / floor at most this (lower is better) or at least (higher).
    pub floor_ratio: Option<f64>,
    /// init's median at most (lower is better) or at least this.
    pub absolute: Option<f64>,
    /// init better than every measured peer, by this factor (1.0 = ahead).
    pub peer_factor: Option<f64>,
    pub text: &'static str,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub unit: Unit,
    pub higher_is_better: bool,
    /// Which value of a Stat this row shows (the median, or the p99).
    pub p99: bool,
    pub init: Cell,
    pub peers: Vec<(&'static str, Cell)>,
    pub floor: Cell,
    pub target: Target,
    pub note: String,
}

impl Row {
    pub fn new(figure: impl Into<String>, unit: Unit, init: Cell) -> Row {
        Row {
            figure: figure.into(),
            unit,
            higher_is_better: matches!(unit, Unit::PerSec | Unit::BytesPerSec),
            p99: false,
            init,
            peers: Vec::new(),
            floor: Cell::NotApplicable,
            target: Target::default(),
            note: String::new(),
        }
    }

    fn value(&self, c: &Cell) -> Option<f64> {
        match c {
            Cell::Got(s) if self.p99 => Some(s.p99),
            Cell::Got(s) => Some(s.median),
            _ => None,
        }
    }

    /// The best peer's value (lowest, or highest when higher is better).
    pub fn best_peer(&self) -> Option<f64> {
        let vals = self.peers.iter().filter_map(|(_, c)| self.value(c));
        if self.higher_is_better {
            vals.reduce(f64::max)
        } else {
            vals.reduce(f64::min)
        }
    }

    pub fn ratio_peer(&self) -> Option<f64> {
        ratio(self.value(&self.init)?, self.best_peer()?)
    }

    pub fn ratio_floor(&self) -> Option<f64> {
        ratio(self.value(&self.init)?, self.value(&self.floor)?)
    }

    /// "met", "MISSED" or "?" (not enough data), "" without a target.
    pub fn verdict(&self) -> &'static str {
        let t = &self.target;
        if t.floor_ratio.is_none() && t.absolute.is_none() && t.peer_factor.is_none() {
            return "";
        }
        let Some(init) = self.value(&self.init) else {
            return "?";
        };
        let better_eq = |a: f64, b: f64| {
            if self.higher_is_better {
                a >= b
            } else {
                a <= b
            }
        };
        let mut unknown = false;
        let mut ok = true;
        if let Some(r) = t.floor_ratio {
            match self.ratio_floor() {
                Some(got) => ok &= better_eq(got, r),
                None => unknown = true,
            }
        }
        if let Some(a) = t.absolute {
            ok &= better_eq(init, a);
        }
        if let Some(f) = t.peer_factor {
            let peers: Vec<f64> = self
                .peers
                .iter()
                .filter_map(|(_, c)| self.value(c))
                .collect();
            if peers.is_empty() {
                unknown = true;
            }
            for p in peers {
                // Ahead by factor f: init*f beats p (lower) / init >= f*p (higher).
                ok &= if self.higher_is_better {
                    init >= f * p
                } else {
                    init * f <= p
                };
            }
        }
        match (ok, unknown) {
            (false, _) => "MISSED",
            (true, true) => "?",
            (true, false) => "met",
        }
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    if b == 0.0 {
        if a == 0.0 {
            Some(1.0)
        } else {
            None
        }
    } else {
        Some(a / b)
    }
}

/// A value in its unit, short.
pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Secs => {
            if v < 1e-3 {
                format!("{:.0}us", v * 1e6)
            } else if v < 1.0 {
                format!("{:.1}ms", v * 1e3)
            } else {
                format!("{v:.2}s")
            }
        }
        Unit::Bytes => {
            if v >= 1024.0 * 1024.0 {
                format!("{:.2}MiB", v / 1048576.0)
            } else {
                format!("{:.1}KiB", v / 1024.0)
            }
        }
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
        Unit::PerSec => {
            if v >= 1e6 {
                format!("{:.2}M/s", v / 1e6)
            } else {
                format!("{:.1}k/s", v / 1e3)
            }
        }
        Unit::BytesPerSec => format!("{:.0}MB/s", v / 1e6),
    }
}

impl Row {
    fn cell_text(&self, c: &Cell) -> String {
        match c {
            Cell::Got(s) => {
                let v = if self.p99 { s.p99 } else { s.median };
                let main = fmt_value(self.unit, v);
                if s.n > 1 && !self.p99 && s.min != s.max {
                    format!(
                        "{main} ({}-{})",
                        fmt_value(self.unit, s.min),
                        fmt_value(self.unit, s.max)
                    )
                } else {
                    main
                }
            }
            Cell::Missing => "missing".into(),
            Cell::NotApplicable => "-".into(),
            Cell::Failed(_) => "failed".into(),
        }
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r != 0.0 && r.abs() < 0.1 => format!("{r:.4}x"),
        Some(r) => format!("{r:.2}x"),
    }
}

/// The table: figure, init, each peer, floor, init/best peer, init/floor, target.
pub fn table(rows: &[Row], peer_names: &[&str]) -> String {
    let mut head: Vec<String> = vec!["figure".into(), "init".into()];
    head.extend(peer_names.iter().map(|s| s.to_string()));
    head.extend(["floor", "init/peer", "init/floor", "target", ""].map(String::from));
    let mut body: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let mut line = vec![r.figure.clone(), r.cell_text(&r.init)];
        for p in peer_names {
            let c = r
                .peers
                .iter()
                .find(|(n, _)| n == p)
                .map_or(Cell::NotApplicable, |(_, c)| c.clone());
            line.push(r.cell_text(&c));
        }
        line.push(r.cell_text(&r.floor));
        line.push(fmt_ratio(r.ratio_peer()));
        line.push(fmt_ratio(r.ratio_floor()));
        line.push(r.target.text.to_string());
        line.push(r.verdict().to_string());
        body.push(line);
    }
    let cols = head.len();
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            body.iter()
                .map(|l| l[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut put = |l: &[String]| {
        let cells: Vec<String> = l
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    };
    put(&head);
    put(&width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for l in &body {
        put(l);
    }
    out
}

fn cell_json(c: &Cell) -> Value {
    match c {
        Cell::Got(s) => {
            json!({"median": s.median, "min": s.min, "max": s.max, "p99": s.p99, "n": s.n})
        }
        Cell::Missing => json!("missing"),
        Cell::NotApplicable => Value::Null,
        Cell::Failed(why) => json!({ "failed": why }),
    }
}

pub fn to_json(rows: &[Row], meta: Value) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let peers: serde_json::Map<String, Value> = r
                .peers
                .iter()
                .map(|(n, c)| (n.to_string(), cell_json(c)))
                .collect();
            json!({
                "figure": r.figure,
                "unit": format!("{:?}", r.unit),
                "shows": if r.p99 { "p99" } else { "median" },
                "higher_is_better": r.higher_is_better,
                "init": cell_json(&r.init),
                "peers": peers,
                "floor": cell_json(&r.floor),
                "ratio_best_peer": r.ratio_peer(),
                "ratio_floor": r.ratio_floor(),
                "target": r.target.text,
                "verdict": r.verdict(),
                "note": r.note,
            })
        })
        .collect();
    json!({ "meta": meta, "rows": rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::stat;

    fn got(v: &[f64]) -> Cell {
        Cell::Got(stat(v).unwrap())
    }

    #[test]
    fn ratios_and_verdicts_lower_is_better() {
        let mut r = Row::new("gap", Unit::Secs, got(&[1.0, 1.1, 0.9]));
        r.peers = vec![
            ("s6", got(&[4.0])),
            ("runit", got(&[2.0])),
            ("x", Cell::Missing),
        ];
        r.floor = got(&[0.8]);
        r.target = Target {
            floor_ratio: Some(1.2),
            peer_factor: Some(1.0),
            text: "",
            ..Default::default()
        };
        assert_eq!(r.best_peer(), Some(2.0));
        assert_eq!(r.ratio_peer(), Some(0.5));
        assert!((r.ratio_floor().unwrap() - 1.25).abs() < 1e-12);
        assert_eq!(r.verdict(), "MISSED");
        r.floor = got(&[0.9]);
        assert_eq!(r.verdict(), "met");
        r.floor = Cell::Failed("x".into());
        assert_eq!(r.verdict(), "?");
    }

    #[test]
    fn higher_is_better_and_peer_factor() {
        let mut r = Row::new("log", Unit::BytesPerSec, got(&[400e6]));
        r.peers = vec![("s6", got(&[90e6])), ("runit", got(&[110e6]))];
        r.target.peer_factor = Some(4.0);
        assert_eq!(r.best_peer(), Some(110e6));
        assert_eq!(r.verdict(), "MISSED");
        r.peers.pop();
        assert_eq!(r.verdict(), "met");
    }

    #[test]
    fn zero_over_zero_is_one() {
        let mut r = Row::new("idle", Unit::Count, got(&[0.0]));
        r.floor = got(&[0.0]);
        r.target.absolute = Some(0.0);
        assert_eq!(r.ratio_floor(), Some(1.0));
        assert_eq!(r.verdict(), "met");
    }

    #[test]
    fn values_and_table() {
        assert_eq!(fmt_value(Unit::Secs, 0.000_123), "123us");
        assert_eq!(fmt_value(Unit::Secs, 0.0123), "12.3ms");
        assert_eq!(fmt_value(Unit::Bytes, 3.0 * 1048576.0), "3.00MiB");
        assert_eq!(fmt_value(Unit::PerSec, 45_600.0), "45.6k/s");
        let r = Row::new("gap", Unit::Secs, got(&[0.001, 0.002, 0.003]));
        let t = table(&[r], &["s6"]);
        assert!(t.contains("2.0ms (1.0ms-3.0ms)"), "{t}");
        assert_eq!(t.lines().count(), 3);
        let j = to_json(&[Row::new("x", Unit::Count, Cell::Missing)], json!({}));
        assert_eq!(j["rows"][0]["init"], "missing");
    }
}
