//! What /proc says about processes: the tree, names, context switches,
//! memory; plus the clean-up of everything we started.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs;

/// `comm`, state and parent pid from the text of `/proc/PID/stat` (comm
/// may hold spaces and parentheses: it ends at the last `)`).
pub fn parse_stat(text: &str) -> Option<(String, char, i32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

pub struct ProcInfo {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
}

pub fn info(pid: i32) -> Option<ProcInfo> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, state, ppid) = parse_stat(&text)?;
    Some(ProcInfo { comm, state, ppid })
}

/// Every process on the machine: pid -> info.
pub fn all() -> HashMap<i32, ProcInfo> {
    let mut map = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                if let Some(i) = info(pid) {
                    map.insert(pid, i);
                }
            }
        }
    }
    map
}

/// `root` and everything below it, from a snapshot of [`all`].
pub fn descendants(map: &HashMap<i32, ProcInfo>, root: i32) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, i) in map {
        kids.entry(i.ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(k) = kids.get(&out[i]) {
            out.extend(k);
        }
        i += 1;
    }
    out
}

/// Context switches (voluntary + involuntary) of all of a process's threads.
pub fn ctxt_switches(pid: i32) -> Option<u64> {
    let mut total = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ended since the directory was read is skipped (it
        // made the whole count vanish, seen in the test under load).
        if let Ok(text) = fs::read_to_string(t.path().join("status")) {
            total += parse_ctxt(&text);
        }
    }
    Some(total)
}

pub fn parse_ctxt(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt"))
        .filter_map(|l| l.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// (RSS, PSS) in bytes from `/proc/PID/smaps_rollup`.
pub fn rss_pss(pid: i32) -> Option<(u64, u64)> {
    parse_rollup(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

pub fn parse_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Reap every exited child (we are a child subreaper, so orphans land here).
pub fn reap() {
    while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// SIGKILL every process below us except `keep`, then reap them.
pub fn kill_all_below_us() {
    let me = std::process::id() as i32;
    for _ in 0..50 {
        let map = all();
        let below: Vec<i32> = descendants(&map, me)
            .into_iter()
            .filter(|&p| p != me && map.get(&p).is_some_and(|i| i.state != 'Z'))
            .collect();
        for &p in &below {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        reap();
        if below.is_empty() {
            break;
        }
    }
    reap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let t = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 99 0 0 0";
        assert_eq!(parse_stat(t), Some(("a (b) c".into(), 'S', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn ctxt_and_rollup() {
        let s = "Name:\tinit\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxt(s), 15);
        let r = "00400000-7ffd [rollup]\nRss:                2048 kB\nPss:                1024 kB\nPss_Anon: 5 kB\n";
        assert_eq!(parse_rollup(r), Some((2048 * 1024, 1024 * 1024)));
        assert_eq!(parse_rollup("Rss: 1 kB\n"), None);
    }

    #[test]
    fn our_own_process_is_seen() {
        let me = std::process::id() as i32;
        let map = all();
        assert!(map.contains_key(&me));
        assert_eq!(descendants(&map, me)[0], me);
        assert!(ctxt_switches(me).is_some());
    }
}
