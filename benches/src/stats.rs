//! Medians, extremes and percentiles of samples, and the parsing of the
//! helpers' stamp lines.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p99: f64,
    pub n: usize,
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the middle two for an even count), min, max and p99.
pub fn stat(samples: &[f64]) -> Option<Stat> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: s[0],
        max: s[n - 1],
        p99: percentile(&s, 99.0),
        n,
    })
}

/// A stamp line written by the `stamp` helper: `PID START_NS END_NS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub pid: i32,
    pub start: i64,
    pub end: i64,
}

/// Every complete line of a stamp file (`PID START [END]`); a torn last
/// line is skipped. END defaults to START.
pub fn parse_stamps(text: &str) -> Vec<Stamp> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_ascii_whitespace();
            let pid = w.next()?.parse().ok()?;
            let start = w.next()?.parse().ok()?;
            let end = match w.next() {
                Some(e) => e.parse().ok()?,
                None => start,
            };
            Some(Stamp { pid, start, end })
        })
        .collect()
}

/// Restart gaps in seconds: from one run's end (just before it exits) to
/// the next run's start, in start order.
pub fn gaps(stamps: &[Stamp]) -> Vec<f64> {
    let mut s = stamps.to_vec();
    s.sort_by_key(|x| x.start);
    s.windows(2)
        .map(|w| (w[1].start - w[0].end) as f64 / 1e9)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = stat(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(stat(&[]).is_none());
        assert!(stat(&[f64::NAN]).is_none());
    }

    #[test]
    fn p99_is_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(stat(&v).unwrap().p99, 10.0);
    }

    #[test]
    fn stamps_parse_and_skip_torn_lines() {
        let s = parse_stamps("10 100 150\n11 400 420\n12 9\n13 70");
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[2],
            Stamp {
                pid: 12,
                start: 9,
                end: 9
            }
        );
        assert_eq!(parse_stamps("10 100 1x\n\nx y\n").len(), 0);
    }

    #[test]
    fn gaps_run_from_end_to_next_start() {
        let s = parse_stamps("2 5000000000 5000000100\n1 1000000000 1000000500\n");
        let g = gaps(&s);
        assert_eq!(g.len(), 1);
        assert!((g[0] - 3.9999995).abs() < 1e-9);
    }
}
