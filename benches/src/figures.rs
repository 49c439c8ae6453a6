//! Each figure: run init, every peer and the floor the same way, in the
//! same run, interleaved where the figure allows, and make the rows.

use crate::procs;
use crate::report::{Cell, Row, Target, Unit};
use crate::stats::{self, gaps, parse_stamps, stat, Stamp};
use crate::sup::{self, mono_ns, Bins, Inst, Kind, Svc};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The compiled C helpers (see benches/c/).
pub struct Tools {
    pub stamp: PathBuf,
    pub noop: PathBuf,
    pub lines: PathBuf,
    pub ticker: PathBuf,
    pub parent: PathBuf,
    pub echo: PathBuf,
}

pub struct Ctx {
    pub quick: bool,
    pub work: PathBuf,
    pub tools: Tools,
    pub bins: Bins,
    /// Installed peers; the others are reported as missing.
    pub peers: Vec<Kind>,
    pub seq: std::cell::Cell<u32>,
}

impl Ctx {
    /// A fresh directory under the work directory.
    pub fn dir(&self, tag: &str) -> PathBuf {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let d = self.work.join(format!("{n:03}-{tag}"));
        let _ = fs::remove_dir_all(&d);
        let _ = fs::create_dir_all(&d);
        d
    }

    /// init first, then each installed peer.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut v = vec![Kind::Init];
        v.extend(&self.peers);
        v
    }

    /// One cell per peer, `missing` for those not installed.
    pub fn peer_cells(&self, mut f: impl FnMut(Kind) -> Cell) -> Vec<(&'static str, Cell)> {
        sup::PEERS
            .iter()
            .map(|&k| {
                let c = if self.peers.contains(&k) {
                    f(k)
                } else {
                    Cell::Missing
                };
                (k.name(), c)
            })
            .collect()
    }

    fn pick(&self, quick: usize, full: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    fn stamp_svc(&self, name: String, file: &Path, wait: bool, restart: bool) -> Svc {
        let mut argv = vec![path_str(&self.tools.stamp), path_str(file)];
        if wait {
            argv.push("-w".into());
        }
        Svc {
            name,
            argv,
            restart,
        }
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn cell(samples: &[f64]) -> Cell {
    stat(samples).map_or(Cell::Failed("no samples".into()), Cell::Got)
}

fn progress(msg: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("benches: [{t:5.1}s] {msg}");
}

/// Stamp lines of `file` once there are `n`, or what is there at `limit`.
fn wait_stamps(file: &Path, n: usize, limit: Duration) -> Vec<Stamp> {
    let end = Instant::now() + limit;
    loop {
        let s = parse_stamps(&fs::read_to_string(file).unwrap_or_default());
        if s.len() >= n || Instant::now() >= end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn connect(sock: &Path, limit: Duration) -> Option<UnixStream> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(s) = UnixStream::connect(sock) {
            return Some(s);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One `"Ping"` line out, one line back; seconds per round trip.
fn round_trips(conn: &mut BufReader<UnixStream>, count: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(count);
    let mut line = String::new();
    for _ in 0..count {
        let t = Instant::now();
        if conn.get_mut().write_all(b"\"Ping\"\n").is_err() {
            break;
        }
        line.clear();
        match conn.read_line(&mut line) {
            Ok(n) if n > 0 => out.push(t.elapsed().as_secs_f64()),
            _ => break,
        }
    }
    out
}

/// Requests per second of 8 clients, each on its own connection.
fn throughput(sock: &Path, secs: f64) -> Option<f64> {
    let barrier = std::sync::Barrier::new(8);
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let Some(c) = connect(sock, Duration::from_secs(2)) else {
                        barrier.wait();
                        return 0;
                    };
                    let mut c = BufReader::new(c);
                    barrier.wait();
                    let end = Instant::now() + Duration::from_secs_f64(secs);
                    let mut n = 0;
                    while Instant::now() < end {
                        n += round_trips(&mut c, 50).len();
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (total > 0).then(|| total as f64 / secs)
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Seconds from `sig` to the supervisor until every pid has exited.
fn time_shutdown(inst: &Inst, pids: &[i32], limit: Duration) -> Option<f64> {
    let mut fds: Vec<OwnedFd> = pids.iter().filter_map(|&p| pidfd(p)).collect();
    if fds.len() != pids.len() {
        return None;
    }
    let t0 = Instant::now();
    kill(Pid::from_raw(inst.pid), inst.stop_signal()).ok()?;
    while !fds.is_empty() {
        let left = limit.checked_sub(t0.elapsed())?;
        let ready: Vec<bool> = {
            let mut pf: Vec<PollFd> = fds
                .iter()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            let ms = PollTimeout::try_from(left.as_millis().min(1000) as i32)
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut pf, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return None,
            }
            pf.iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut i = 0;
        fds.retain(|_| {
            i += 1;
            !ready[i - 1]
        });
    }
    Some(t0.elapsed().as_secs_f64())
}

/// RSS and PSS of all the supervisor's processes together.
fn memory(inst: &Inst) -> (f64, f64) {
    let (mut rss, mut pss) = (0u64, 0u64);
    for p in inst.sup_pids() {
        if let Some((r, s)) = procs::rss_pss(p) {
            rss += r;
            pss += s;
        }
    }
    (rss as f64, pss as f64)
}

fn launch_or_note(
    ctx: &Ctx,
    kind: Kind,
    dir: &Path,
    svcs: &[Svc],
    fails: &mut HashMap<&'static str, String>,
) -> Option<Inst> {
    match sup::launch(kind, &ctx.bins, dir, svcs) {
        Ok(i) => Some(i),
        Err(e) => {
            fails.insert(kind.name(), format!("cannot start: {e}"));
            None
        }
    }
}

fn cell_for(
    samples: &HashMap<&'static str, Vec<f64>>,
    fails: &HashMap<&'static str, String>,
    name: &str,
) -> Cell {
    match samples.get(name).and_then(|s| stat(s)) {
        Some(s) => Cell::Got(s),
        None => Cell::Failed(fails.get(name).cloned().unwrap_or("no samples".into())),
    }
}

fn row_from(
    ctx: &Ctx,
    figure: &str,
    unit: Unit,
    samples: &HashMap<&'static str, Vec<f64>>,
    fails: &HashMap<&'static str, String>,
) -> Row {
    let mut r = Row::new(figure, unit, cell_for(samples, fails, "init"));
    r.peers = ctx.peer_cells(|k| cell_for(samples, fails, k.name()));
    if samples.contains_key("floor") {
        r.floor = cell_for(samples, fails, "floor");
    }
    r
}

/// Idle wakeups of 20 idle services (all supervisors at once, same
/// windows), then status queries against the same instances.
pub fn idle_and_status(ctx: &Ctx) -> Vec<Row> {
    progress("idle wakeups and status queries (20 services each)");
    let mut fails = HashMap::new();
    let mut insts = Vec::new();
    for kind in ctx.kinds() {
        let dir = ctx.dir(&format!("idle-{}", kind.name()));
        let file = dir.join("stamps");
        let svcs: Vec<Svc> = (0..20)
            .map(|i| ctx.stamp_svc(format!("svc{i:02}"), &file, true, true))
            .collect();
        if let Some(i) = launch_or_note(ctx, kind, &dir, &svcs, &mut fails) {
            insts.push((i, file));
        }
    }
    insts.retain(|(i, file)| {
        let ok = wait_stamps(file, 20, Duration::from_secs(30)).len() >= 20
            && i.wait_procs(20, Duration::from_secs(30));
        if !ok {
            fails.insert(i.kind.name(), "services did not all start".into());
        }
        ok
    });
    std::thread::sleep(Duration::from_millis(if ctx.quick { 500 } else { 1000 }));
    let (windows, secs) = if ctx.quick { (2, 1.5) } else { (3, 10.0) };
    let mut idle: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for _ in 0..windows {
        let count = |i: &Inst| -> u64 {
            i.sup_pids()
                .iter()
                .filter_map(|&p| procs::ctxt_switches(p))
                .sum()
        };
        let before: Vec<u64> = insts.iter().map(|(i, _)| count(i)).collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        for ((i, _), b) in insts.iter().zip(before) {
            let d = count(i).saturating_sub(b) as f64 * 10.0 / secs;
            idle.entry(i.kind.name()).or_default().push(d);
        }
    }
    idle.insert("floor", vec![0.0]);
    let mut rows = Vec::new();
    let mut r = row_from(
        ctx,
        "idle wakeups /10s, 20 services",
        Unit::Count,
        &idle,
        &fails,
    );
    r.target = Target {
        absolute: Some(0.0),
        text: "0",
        ..Default::default()
    };
    if ctx.quick {
        r.note = format!("{windows} windows of {secs} s, scaled to 10 s");
    }
    rows.push(r);

    // Status queries: each command once per turn, turns repeated.
    let runs = ctx.pick(40, 200);
    // supervisorctl starts a Python interpreter (about 0.2-0.5 s a run).
    let slow_runs = ctx.pick(8, 200);
    let mut cmds: Vec<(&'static str, Command)> = Vec::new();
    for (i, _) in &insts {
        match i.kind {
            Kind::Init => {
                if ctx.bins.initctl_static.is_some() {
                    cmds.push(("init-static", i.status_cmd(&ctx.bins, "svc00", true, false)));
                    cmds.push(("ping-static", i.status_cmd(&ctx.bins, "svc00", true, true)));
                }
                cmds.push((
                    "init-dynamic",
                    i.status_cmd(&ctx.bins, "svc00", false, false),
                ));
                cmds.push((
                    "ping-dynamic",
                    i.status_cmd(&ctx.bins, "svc00", false, true),
                ));
            }
            k => cmds.push((k.name(), i.status_cmd(&ctx.bins, "svc00", false, false))),
        }
    }
    cmds.push(("floor", Command::new(&ctx.tools.noop)));
    let mut st: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for turn in 0..runs {
        for (name, cmd) in cmds.iter_mut() {
            if *name == Kind::Supervisor.name() && turn >= slow_runs {
                continue;
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let t = Instant::now();
            match cmd.status() {
                Ok(s) if s.success() => st.entry(name).or_default().push(t.elapsed().as_secs_f64()),
                Ok(s) => {
                    fails.insert(name, format!("exit {s}"));
                }
                Err(e) => {
                    fails.insert(name, e.to_string());
                }
            }
        }
    }
    for (label, key, target) in [
        ("status query, initctl static", "init-static", true),
        ("status query, initctl dynamic", "init-dynamic", false),
    ] {
        let mut s = st.clone();
        if let Some(v) = st.get(key) {
            s.insert("init", v.clone());
        }
        let mut r = row_from(ctx, label, Unit::Secs, &s, &fails);
        if target {
            r.target = Target {
                floor_ratio: Some(1.3),
                peer_factor: Some(1.0),
                text: "<=1.3x floor, ahead of peers",
                ..Default::default()
            };
        }
        r.note = format!(
            "{runs} runs each ({slow_runs} of supervisorctl); floor: exec of a static no-op"
        );
        rows.push(r);
    }
    for (label, key) in [
        ("ping, initctl static", "ping-static"),
        ("ping, initctl dynamic", "ping-dynamic"),
    ] {
        let mut s: HashMap<&'static str, Vec<f64>> = HashMap::new();
        s.insert("init", st.get(key).cloned().unwrap_or_default());
        s.insert("floor", st.get("floor").cloned().unwrap_or_default());
        let mut r = row_from(ctx, label, Unit::Secs, &s, &fails);
        r.peers.iter_mut().for_each(|p| {
            if p.1 != Cell::Missing {
                p.1 = Cell::NotApplicable
            }
        });
        rows.push(r);
    }
    for (i, _) in insts {
        i.cleanup();
    }
    procs::kill_all_below_us();
    rows
}

/// A service that exits at once, restarted with no delay: exit to next exec.
pub fn restart_gap(ctx: &Ctx) -> Vec<Row> {
    progress("restart gap");
    let rounds = ctx.pick(1, 3);
    let mut samples: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut fails = HashMap::new();
    for _ in 0..rounds {
        // init alone; then the peers side by side: each throttles its
        // restarts to one a second, so sharing the machine costs them nothing.
        let groups: Vec<Vec<Kind>> = vec![vec![Kind::Init], ctx.peers.clone()];
        for group in groups {
            let mut running = Vec::new();
            for kind in group {
                let dir = ctx.dir(&format!("restart-{}", kind.name()));
                let file = dir.join("stamps");
                let svcs = [ctx.stamp_svc("flap".into(), &file, false, true)];
                if let Some(inst) = launch_or_note(ctx, kind, &dir, &svcs, &mut fails) {
                    running.push((inst, file));
                }
            }
            let start = Instant::now();
            for (inst, file) in &running {
                let (want, limit) = match inst.kind {
                    Kind::Init => (ctx.pick(200, 1000), 30.0),
                    // supervisord alone may take a second or two to start.
                    _ => (ctx.pick(2, 10), if ctx.quick { 5.0 } else { 14.0 }),
                };
                let left = Duration::from_secs_f64(limit).saturating_sub(start.elapsed());
                let s = wait_stamps(file, want + 1, left);
                if s.len() < 2 {
                    fails.insert(
                        inst.kind.name(),
                        format!("{} start(s) within {limit} s", s.len()),
                    );
                }
                samples
                    .entry(inst.kind.name())
                    .or_default()
                    .extend(gaps(&s));
            }
            for (inst, _) in running {
                inst.cleanup();
            }
            procs::kill_all_below_us();
        }
        let dir = ctx.dir("restart-floor");
        let file = dir.join("stamps");
        let k = ctx.pick(200, 1000);
        let ok = Command::new(&ctx.tools.parent)
            .arg("loop")
            .arg(k.to_string())
            .arg(&ctx.tools.stamp)
            .arg(&file)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let s = parse_stamps(&fs::read_to_string(&file).unwrap_or_default());
            samples.entry("floor").or_default().extend(gaps(&s));
        }
        let _ = fs::remove_dir_all(&dir);
    }
    let mut med = row_from(ctx, "restart gap, median", Unit::Secs, &samples, &fails);
    med.target = Target {
        floor_ratio: Some(1.2),
        peer_factor: Some(1.0),
        text: "<=1.2x floor, ahead of peers",
        ..Default::default()
    };
    med.note = "floor: fork+exec+wait of the same program by a C parent".into();
    let mut p99 = row_from(ctx, "restart gap, p99", Unit::Secs, &samples, &fails);
    p99.p99 = true;
    vec![med, p99]
}

/// Whether the tail of any of these files holds the end marker.
fn has_end(files: &[PathBuf]) -> bool {
    files.iter().any(|f| {
        let Ok(mut file) = fs::File::open(f) else {
            return false;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(600)));
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        buf.windows(9).any(|w| w == b"ENDOFDATA")
    })
}

/// One service writing 100-byte lines flat out into each supervisor's
/// logger with rotation on; floor `cat data | cat > file`, best of two.
pub fn log_throughput(ctx: &Ctx) -> Vec<Row> {
    let mb = ctx.pick(32, 256);
    progress(&format!("log throughput ({mb} MB of 100-byte lines)"));
    let lines = mb * 1024 * 1024 / 100;
    let bytes = (lines * 100) as f64;
    let rounds = ctx.pick(1, 3);
    let mut samples: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut fails = HashMap::new();
    let data_dir = ctx.dir("log-data");
    let data = data_dir.join("data");
    let made = fs::File::create(&data).ok().and_then(|f| {
        Command::new(&ctx.tools.lines)
            .arg(lines.to_string())
            .stdout(f)
            .status()
            .ok()
    });
    if !made.is_some_and(|s| s.success()) {
        fails.insert("floor", "cannot write the data file".into());
    }
    for _ in 0..rounds {
        for kind in ctx.kinds() {
            let dir = ctx.dir(&format!("log-{}", kind.name()));
            let stamp = dir.join("stamp");
            // The service replays the floor's data file the way the floor's
            // `cat data` does, so producer and file are the same on both
            // sides and the ratio is the supervisor's alone (generating the
            // lines cost the writer as much CPU as init's whole share).
            let svcs = [Svc {
                name: "writer".into(),
                argv: vec![
                    path_str(&ctx.tools.lines),
                    "-r".into(),
                    path_str(&data),
                    path_str(&stamp),
                    "-w".into(),
                ],
                restart: false,
            }];
            let Some(inst) = launch_or_note(ctx, kind, &dir, &svcs, &mut fails) else {
                continue;
            };
            let start = wait_stamps(&stamp, 1, Duration::from_secs(30));
            let files = inst.log_files("writer");
            let end = Instant::now() + Duration::from_secs(300);
            let mut done = None;
            if let Some(s) = start.first() {
                while Instant::now() < end {
                    if has_end(&inst.log_files("writer")) || has_end(&files) {
                        done = Some(mono_ns());
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                match done {
                    Some(t) => samples
                        .entry(kind.name())
                        .or_default()
                        .push(bytes / ((t - s.start) as f64 / 1e9)),
                    None => {
                        fails.insert(kind.name(), "the last line never reached the log".into());
                    }
                }
            }
            inst.cleanup();
            procs::kill_all_below_us();
        }
        let mut best: Option<f64> = None;
        for _ in 0..2 {
            let out = data_dir.join("out");
            let t = Instant::now();
            let ok = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cat '{}' | cat > '{}'",
                    data.display(),
                    out.display()
                ))
                .status()
                .is_ok_and(|s| s.success());
            let secs = t.elapsed().as_secs_f64();
            let _ = fs::remove_file(&out);
            if ok {
                best = Some(best.map_or(secs, |b: f64| b.min(secs)));
            }
        }
        if let Some(b) = best {
            samples.entry("floor").or_default().push(bytes / b);
        }
    }
    let _ = fs::remove_dir_all(&data_dir);
    let mut r = row_from(
        ctx,
        "log throughput, rotation 10MBx5",
        Unit::BytesPerSec,
        &samples,
        &fails,
    );
    r.target = Target {
        floor_ratio: Some(0.9),
        peer_factor: Some(4.0),
        text: ">=0.9x floor, >=4x s6-log/svlogd",
        ..Default::default()
    };
    r.note = format!(
        "{mb} MB, the service replays the floor's data file; floor: cat data | cat > file, best of two"
    );
    vec![r]
}

/// A line written by a service until an `initctl logs -f` follower has it.
pub fn log_latency(ctx: &Ctx) -> Vec<Row> {
    progress("log latency (initctl logs -f)");
    let want = ctx.pick(1000, 5000);
    let dir = ctx.dir("latency");
    let svcs = [Svc {
        name: "tick".into(),
        argv: vec![
            path_str(&ctx.tools.ticker),
            (want + 500).to_string(),
            "1000".into(),
        ],
        restart: false,
    }];
    let mut samples = Vec::new();
    let mut why = String::from("init did not start");
    if let Ok(inst) = sup::launch(Kind::Init, &ctx.bins, &dir, &svcs) {
        if connect(&inst.sock(), Duration::from_secs(10)).is_some() {
            let ctl = ctx
                .bins
                .initctl_static
                .clone()
                .unwrap_or(ctx.bins.initctl.clone());
            let follower = Command::new(ctl)
                .arg("-s")
                .arg(inst.sock())
                .args(["logs", "tick", "-f", "-n", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(mut f) = follower {
                if let Some(out) = f.stdout.take() {
                    let end = Instant::now() + Duration::from_secs(60);
                    for line in BufReader::new(out).lines() {
                        let now = mono_ns();
                        let Ok(line) = line else { break };
                        if let Some(ns) = line
                            .split_ascii_whitespace()
                            .last()
                            .and_then(|w| w.parse::<i64>().ok())
                        {
                            samples.push((now - ns) as f64 / 1e9);
                        }
                        if samples.len() >= want + 10 || Instant::now() > end {
                            break;
                        }
                    }
                }
                let _ = f.kill();
                let _ = f.wait();
                why = "no lines".into();
            }
        }
        inst.cleanup();
    }
    procs::kill_all_below_us();
    let s: Vec<f64> = samples.into_iter().skip(10).collect();
    let c = stat(&s).map_or(Cell::Failed(why), Cell::Got);
    let mut med = Row::new("log latency, median", Unit::Secs, c.clone());
    med.peers = ctx.peer_cells(|_| Cell::NotApplicable);
    med.target = Target {
        absolute: Some(200e-6),
        text: "<200us",
        ..Default::default()
    };
    med.note = "a line every ms; peers have no follower".into();
    let mut p99 = Row::new("log latency, p99", Unit::Secs, c);
    p99.peers = ctx.peer_cells(|_| Cell::NotApplicable);
    p99.p99 = true;
    vec![med, p99]
}

/// Start-up, memory, control round trips and throughput (init), shutdown,
/// with 1, 100 and 1000 services.
pub fn lifecycle(ctx: &Ctx) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut mem_pss: HashMap<(usize, &'static str), f64> = HashMap::new();
    for n in [1usize, 100, 1000] {
        progress(&format!(
            "start-up, memory, control, shutdown with {n} services"
        ));
        let rounds = match n {
            1 => 1,
            100 => ctx.pick(1, 5),
            _ => ctx.pick(1, 3),
        };
        // A quick run has no time for the peers' 1000-service start-up
        // and shutdown (tens of seconds each); a full run measures them.
        let kinds: Vec<Kind> = if ctx.quick && n == 1000 {
            vec![Kind::Init]
        } else {
            ctx.kinds()
        };
        let skipped = kinds.len() == 1;
        let mut start: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut stop: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut rss: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut pss: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut rtt: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut thr: HashMap<&'static str, Vec<f64>> = HashMap::new();
        let mut fails = HashMap::new();
        for round in 0..rounds {
            for &kind in &kinds {
                let dir = ctx.dir(&format!("life{n}-{}", kind.name()));
                let file = dir.join("stamps");
                let svcs: Vec<Svc> = (0..n)
                    .map(|i| ctx.stamp_svc(format!("s{i:04}"), &file, true, true))
                    .collect();
                progress(&format!("  {} with {n}", kind.name()));
                let Some(inst) = launch_or_note(ctx, kind, &dir, &svcs, &mut fails) else {
                    continue;
                };
                let stamps = wait_stamps(&file, n, Duration::from_secs(180));
                if stamps.len() < n {
                    fails.insert(kind.name(), format!("{} of {n} started", stamps.len()));
                    inst.cleanup();
                    procs::kill_all_below_us();
                    continue;
                }
                let last = stamps.iter().map(|s| s.start).max().unwrap_or(0);
                start
                    .entry(kind.name())
                    .or_default()
                    .push((last - inst.t_exec) as f64 / 1e9);
                progress(&format!("  {} with {n}: all started", kind.name()));
                inst.wait_procs(n, Duration::from_secs(60));
                std::thread::sleep(Duration::from_millis(300));
                let (r, p) = memory(&inst);
                rss.entry(kind.name()).or_default().push(r);
                pss.entry(kind.name()).or_default().push(p);
                if kind == Kind::Init && n >= 100 && round == 0 {
                    control(ctx, &inst, &mut rtt, &mut thr, &mut fails);
                }
                progress(&format!("  {} with {n}: measuring shutdown", kind.name()));
                let pids: Vec<i32> = stamps.iter().map(|s| s.pid).collect();
                match time_shutdown(&inst, &pids, Duration::from_secs(120)) {
                    Some(t) => stop.entry(kind.name()).or_default().push(t),
                    None => {
                        fails.insert(kind.name(), "shutdown not measured".into());
                    }
                }
                inst.cleanup();
                procs::kill_all_below_us();
            }
            if n > 1 {
                if let Some(t) = floor_spawn(ctx, n) {
                    start.entry("floor").or_default().push(t);
                }
            }
        }
        let first = rows.len();
        for (k, v) in &pss {
            if let Some(s) = stat(v) {
                mem_pss.insert((n, k), s.median);
            }
        }
        if n > 1 {
            let mut r = row_from(
                ctx,
                &format!("start-up, {n} services"),
                Unit::Secs,
                &start,
                &fails,
            );
            if n == 1000 {
                r.target = Target {
                    floor_ratio: Some(2.0),
                    peer_factor: Some(1.0),
                    text: "<=2x floor, ahead of peers",
                    ..Default::default()
                };
                r.note = "floor: a C parent forking 1000 of the same program".into();
            }
            rows.push(r);
            let mut r = row_from(
                ctx,
                &format!("shutdown, {n} services"),
                Unit::Secs,
                &stop,
                &fails,
            );
            if n == 100 {
                r.target = Target {
                    absolute: Some(0.1),
                    peer_factor: Some(1.0),
                    text: "<100ms, ahead of peers",
                    ..Default::default()
                };
            }
            rows.push(r);
        }
        for (what, m) in [("RSS", &rss), ("PSS", &pss)] {
            let mut r = row_from(
                ctx,
                &format!("memory {what}, {n} services"),
                Unit::Bytes,
                m,
                &fails,
            );
            if n == 100 {
                r.target = Target {
                    absolute: Some(4.0 * 1048576.0),
                    peer_factor: Some(1.0),
                    text: "<4MiB, ahead of peers",
                    ..Default::default()
                };
            }
            rows.push(r);
        }
        if n >= 100 {
            for (what, m, unit) in [
                ("control round trip", &rtt, Unit::Secs),
                ("control throughput, 8 clients", &thr, Unit::PerSec),
            ] {
                let mut r = row_from(ctx, &format!("{what}, {n} services"), unit, m, &fails);
                r.peers = ctx.peer_cells(|_| Cell::NotApplicable);
                r.target = if unit == Unit::Secs {
                    Target {
                        floor_ratio: Some(1.2),
                        text: "<=1.2x floor",
                        ..Default::default()
                    }
                } else if n == 1000 {
                    Target {
                        floor_ratio: Some(0.9),
                        text: ">=0.9x floor",
                        ..Default::default()
                    }
                } else {
                    Target::default()
                };
                r.note = match unit {
                    Unit::Secs => "floor: a C epoll line echo server, same client; client and server pinned to one CPU",
                    _ => "floor: a C epoll line echo server, same clients",
                }
                .into();
                rows.push(r);
            }
        }
        if skipped {
            rows[first..].iter_mut().for_each(skip_peers);
        }
    }
    // Per-service state: the PSS a service adds, from 100 to 1000.
    let quick = ctx.quick;
    let per = |k: &'static str| -> Cell {
        match (mem_pss.get(&(100, k)), mem_pss.get(&(1000, k))) {
            (Some(a), Some(b)) => Cell::Got(stats::Stat {
                median: (b - a) / 900.0,
                min: (b - a) / 900.0,
                max: (b - a) / 900.0,
                p99: (b - a) / 900.0,
                n: 1,
            }),
            _ => Cell::Failed("no memory figures".into()),
        }
    };
    let mut r = Row::new(
        "memory per service (PSS 100->1000)",
        Unit::Bytes,
        per("init"),
    );
    r.peers = ctx.peer_cells(|k| per(k.name()));
    if quick {
        skip_peers(&mut r);
    }
    r.target = Target {
        absolute: Some(16384.0),
        text: "<16KiB (+ log ring)",
        ..Default::default()
    };
    rows.push(r);
    rows
}

/// Peers not run (quick mode): "-" instead of "failed".
fn skip_peers(r: &mut Row) {
    let mut skipped = false;
    for (_, c) in r.peers.iter_mut() {
        if matches!(c, Cell::Failed(_)) {
            *c = Cell::NotApplicable;
            skipped = true;
        }
    }
    if skipped {
        r.note = [r.note.as_str(), "peers with 1000 services: full run only"]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
    }
}

/// Round trips over one kept-open connection and 8-client throughput,
/// init and the echo floor interleaved in blocks.
fn control(
    ctx: &Ctx,
    inst: &Inst,
    rtt: &mut HashMap<&'static str, Vec<f64>>,
    thr: &mut HashMap<&'static str, Vec<f64>>,
    fails: &mut HashMap<&'static str, String>,
) {
    let dir = ctx.dir("echo");
    let esock = dir.join("echo.sock");
    let echo = Command::new(&ctx.tools.echo)
        .arg(&esock)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    let Ok(mut echo) = echo else {
        fails.insert("floor", "echo server did not start".into());
        return;
    };
    let a = connect(&inst.sock(), Duration::from_secs(10));
    let b = connect(&esock, Duration::from_secs(10));
    if let (Some(a), Some(b)) = (a, b) {
        let (mut a, mut b) = (BufReader::new(a), BufReader::new(b));
        let total = ctx.pick(2000, 10_000);
        // The client and both servers share one CPU while round trips are
        // timed: unpinned, a median mostly says whether the scheduler put
        // client and server on the same core (about 15 us here) or not
        // (about 80 us, the other core's wake-up from idle).
        let pinned = [0, inst.pid, echo.id() as i32];
        for pid in pinned {
            pin(pid, Some(0));
        }
        for _ in 0..total / 1000 {
            rtt.entry("init")
                .or_default()
                .extend(round_trips(&mut a, 1000));
            rtt.entry("floor")
                .or_default()
                .extend(round_trips(&mut b, 1000));
        }
        for pid in pinned {
            pin(pid, None);
        }
    } else {
        fails.insert("init", "cannot connect".into());
    }
    let (runs, secs) = if ctx.quick { (1, 0.5) } else { (3, 2.0) };
    for _ in 0..runs {
        if let Some(t) = throughput(&inst.sock(), secs) {
            thr.entry("init").or_default().push(t);
        }
        if let Some(t) = throughput(&esock, secs) {
            thr.entry("floor").or_default().push(t);
        }
    }
    let _ = echo.kill();
    let _ = echo.wait();
    let _ = fs::remove_dir_all(&dir);
}

/// Bind `pid` (0: this thread) to `cpu`, or to every CPU again.
fn pin(pid: i32, cpu: Option<usize>) {
    use nix::libc;
    // SAFETY: a local, zeroed cpu_set_t filled by the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            if cpu.is_none_or(|want| want == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Seconds from the exec of a C parent until it has `n` children running.
fn floor_spawn(ctx: &Ctx, n: usize) -> Option<f64> {
    let dir = ctx.dir("spawn-floor");
    let file = dir.join("stamps");
    let t0 = mono_ns();
    let child = Command::new(&ctx.tools.parent)
        .arg("many")
        .arg(n.to_string())
        .arg(&ctx.tools.stamp)
        .arg(&file)
        .arg("-w")
        .process_group(0)
        .spawn()
        .ok()?;
    let s = wait_stamps(&file, n, Duration::from_secs(60));
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    procs::kill_all_below_us();
    let _ = fs::remove_dir_all(&dir);
    (s.len() >= n).then(|| (s.iter().map(|x| x.start).max().unwrap_or(0) - t0) as f64 / 1e9)
}

/// Stripped static sizes against a static hello-world, same profile.
pub fn sizes(root: &Path, static_dir: Option<&Path>) -> Vec<Row> {
    let size = |p: PathBuf| fs::metadata(p).ok().map(|m| m.len() as f64);
    let one = |v: Option<f64>| v.map_or(Cell::Failed("not built".into()), |v| cell(&[v]));
    let mut rows = Vec::new();
    let hello = static_dir.and_then(|d| size(d.join("hello")));
    for (bin, limit, text) in [
        ("init", 1.3, "<=1.3x hello-world"),
        ("initctl", 1.1, "<=1.1x hello-world"),
    ] {
        let mut r = Row::new(
            format!("size {bin}, static stripped"),
            Unit::Bytes,
            one(static_dir.and_then(|d| size(d.join(bin)))),
        );
        r.floor = one(hello);
        r.target = Target {
            floor_ratio: Some(limit),
            text,
            ..Default::default()
        };
        r.higher_is_better = false;
        r.note = "floor: static hello-world, same profile".into();
        rows.push(r);
        let mut r = Row::new(
            format!("size {bin}, dynamic"),
            Unit::Bytes,
            one(size(root.join("target/release").join(bin))),
        );
        r.higher_is_better = false;
        rows.push(r);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_is_found_in_a_tail() {
        let d = std::env::temp_dir().join(format!("benches-end-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let f = d.join("current");
        fs::write(
            &f,
            format!("{}\n@4000 0000000009 ENDOFDATAxx\n", "x".repeat(5000)),
        )
        .unwrap();
        assert!(has_end(&[d.join("missing"), f.clone()]));
        fs::write(&f, "0000000008 xxxx\n").unwrap();
        assert!(!has_end(&[f]));
        let _ = fs::remove_dir_all(&d);
    }
}
