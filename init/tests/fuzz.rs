//! Throw garbage at the control socket: random bytes, truncated and mutated
//! requests, odd framings. init must answer every complete value or drop the
//! connection, never die, never hang another client, and never touch a
//! service because of it.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// xorshift64*: reproducible without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#""Ping""#,
    r#""ListServices""#,
    r#""SystemStatus""#,
    r#"{"ServiceStatus":{"name":"keeper"}}"#,
    r#"{"ServiceLogs":{"name":"keeper","lines":5}}"#,
    r#"{"ServiceStart":{"name":"keeper"}}"#,
    r#"{"ServiceStatus":{"name":"../../etc/passwd"}}"#,
    r#"{"ServiceLogs":{"name":"keeper","lines":18446744073709551615}}"#,
    r#"{"ServiceStop":{"name":"nope"}}"#,
    r#"{"ServiceEnable":{"name":"x/y","now":true}}"#,
    r#"[1,2,{"a":[[[[]]]]}]"#,
    r#"{"ServiceStatus":{"name":"\u0000"}}"#,
];

fn mutate(rng: &mut Rng, seed: &str) -> Vec<u8> {
    let mut v = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let alphabet = b"{}[]\":,\\\n 0a";
                v.insert(i, alphabet[rng.below(alphabet.len())]);
            }
            3 => v.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            4 => {
                let i = rng.below(v.len() + 1);
                v.splice(i..i, std::iter::repeat_n(b'[', rng.below(200)));
            }
            _ => v.extend_from_slice(b"\n"),
        }
    }
    v
}

#[test]
fn garbage_never_hurts_init_or_its_services() {
    let init = Init::start(&[("keeper", &svc("sleep 1000", ""))]);
    assert!(wait_for(
        || init.state("keeper") == "running",
        Duration::from_secs(10)
    ));
    let keeper = init.pid_of("keeper").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    for round in 0..400 {
        let seed = SEEDS[rng.below(SEEDS.len())];
        let input = if rng.below(5) == 0 {
            (0..rng.below(4096)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, seed)
        };
        let mut s = init.connect();
        s.set_read_timeout(Some(Duration::from_millis(60))).unwrap();
        // Sometimes dribble it byte by byte, sometimes half-close.
        if rng.below(4) == 0 {
            for chunk in input.chunks(1 + rng.below(7)) {
                if s.write_all(chunk).is_err() {
                    break;
                }
            }
        } else {
            let _ = s.write_all(&input);
        }
        if rng.below(4) != 0 {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        // Whatever comes back must be lines of JSON responses.
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "round {round}: answer is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(line)
                )
            });
            assert!(
                v.is_string() || v.is_object(),
                "round {round}: odd answer {v}"
            );
        }
        if round % 50 == 0 {
            assert_eq!(
                init.request(r#""Ping""#),
                serde_json::json!("Pong"),
                "round {round}"
            );
        }
    }
    // Still alive, still answering, the service untouched.
    assert_eq!(init.request(r#""Ping""#), serde_json::json!("Pong"));
    assert!(pid_alive(init.pid), "init died\n{}", init.stderr_text());
    assert_eq!(
        init.pid_of("keeper"),
        Some(keeper),
        "the service was disturbed"
    );
    assert!(
        init.rss_kib() < 50 * 1024,
        "init grew to {} KiB",
        init.rss_kib()
    );
    eprintln!("400 fuzz rounds in {:?}", started.elapsed());
}

/// Found by `cargo fuzz` (fuzz/, target `control_framing`): a value with no
/// end mark of its own (a number, `true`, `false`, `null`) that ended where
/// a read ended was taken as complete, so `12` and then `34` got two answers
/// where `1234` in one piece gets one: the answers depended on how the
/// transport cut the stream.
#[test]
fn a_value_cut_by_the_transport_is_still_one_value() {
    let init = Init::start(&[]);
    for (first, rest, want) in [
        ("12", "34 ", "number (`1234`)"),
        ("true", "x\n", "invalid request"),
    ] {
        let mut s = init.connect();
        s.write_all(first.as_bytes()).unwrap();
        // Two round trips on other connections: init has had a turn with
        // `first` in this connection's buffer.
        for _ in 0..2 {
            assert_eq!(init.request(r#""Ping""#), serde_json::json!("Pong"));
        }
        s.write_all(rest.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{first:?} + {rest:?}: {lines:?}");
        assert!(lines[0].contains(want), "{first:?} + {rest:?}: {lines:?}");
    }
}
