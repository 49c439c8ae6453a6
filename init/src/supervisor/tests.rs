//! The supervisor's decisions, in-process: a fake `Os` (processes that
//! exit when the test says so, signals recorded, a clock moved by hand)
//! drives the real `Supervisor`, so each test takes microseconds and no
//! real process is involved. Service files are real files in a temp dir.

use super::requests::{REPLY_WAIT, RESTART_GRACE};
use super::*;
use crate::os::{Exit, SpawnError, Spawned};
use crate::unit::ServiceDef;
use shared::protocol::{Request, Response};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

// ----- the fake OS ---------------------------------------------------------

#[derive(Debug)]
struct FakeProc {
    service: String,
    exit: Option<Exit>,
    reaped: bool,
}

#[derive(Default)]
struct FakeOs {
    t: Option<Instant>,
    next_pid: i32,
    procs: BTreeMap<i32, FakeProc>,
    /// Every signal sent: (pid, signal, the group was signalled while its
    /// leader was unreaped).
    signals: Vec<(i32, Signal)>,
    /// Signals the fake processes obey: these exit at once on SIGTERM.
    obey_term: BTreeSet<String>,
    /// Stopped processes (SIGSTOP): a signal other than SIGKILL stays
    /// pending on them until a SIGCONT.
    frozen: BTreeSet<i32>,
    pending: BTreeMap<i32, Signal>,
    /// exec_start values whose spawn fails.
    fail_exec: BTreeSet<String>,
    /// Every spawn fails with EMFILE.
    no_fds: bool,
    /// Anything the supervisor did that it must never do.
    violations: Vec<String>,
    /// Process groups of processes that are not main processes (pid ->
    /// group leader), for notify senders.
    groups: BTreeMap<i32, i32>,
}

impl FakeOs {
    fn pid_alive(&self, pid: i32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.exit.is_none())
    }
    fn exit(&mut self, pid: i32, e: Exit) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.exit.is_none() {
                p.exit = Some(e);
            }
        }
    }
    /// The signals sent but the SIGCONT after each stop signal.
    fn stop_signals(&self) -> Vec<(i32, Signal)> {
        let sent = self.signals.iter().copied();
        sent.filter(|(_, sig)| *sig != Signal::SIGCONT).collect()
    }
    fn live_of(&self, service: &str) -> usize {
        self.procs
            .values()
            .filter(|p| p.service == service && p.exit.is_none())
            .count()
    }
}

fn code(c: i32) -> Exit {
    Exit {
        code: c,
        signal: None,
    }
}
fn by(sig: Signal) -> Exit {
    Exit {
        code: 128 + sig as i32,
        signal: Some(sig as i32),
    }
}

impl Os for FakeOs {
    fn now(&self) -> Instant {
        self.t.unwrap_or_else(Instant::now)
    }
    fn spawn(
        &mut self,
        _: &str,
        def: &ServiceDef,
        _: &BTreeMap<String, String>,
    ) -> Result<Spawned, SpawnError> {
        if self.no_fds {
            return Err(SpawnError::Resources("Too many open files".into()));
        }
        if self.fail_exec.contains(&def.exec_start) {
            return Err(SpawnError::Fault(format!(
                "cannot execute {}: No such file",
                def.exec_start
            )));
        }
        self.next_pid += 1;
        let service = def.exec_start.split(' ').nth(1).unwrap_or("").to_string();
        self.procs.insert(
            self.next_pid,
            FakeProc {
                service,
                exit: None,
                reaped: false,
            },
        );
        Ok(Spawned {
            pid: nix::unistd::Pid::from_raw(self.next_pid),
            pidfd: None,
            pipes: None,
        })
    }
    fn signal(&mut self, p: &Proc, sig: Signal) -> Result<(), String> {
        let pid = p.pid.as_raw();
        match self.procs.get(&pid) {
            Some(fp) if !fp.reaped => {}
            other => self
                .violations
                .push(format!("{sig} to pid {pid}, which is {other:?}")),
        }
        self.signals.push((pid, sig));
        let obeys = self
            .procs
            .get(&pid)
            .is_some_and(|fp| self.obey_term.contains(&fp.service));
        if sig == Signal::SIGCONT {
            self.frozen.remove(&pid);
            if let Some(pending) = self.pending.remove(&pid) {
                self.exit(pid, by(pending));
            }
        } else if sig == Signal::SIGKILL {
            self.exit(pid, by(sig));
        } else if obeys && self.frozen.contains(&pid) {
            self.pending.insert(pid, sig);
        } else if obeys {
            self.exit(pid, by(sig));
        }
        Ok(())
    }
    fn kill_leftovers(&mut self, p: &Proc) {
        let pid = p.pid.as_raw();
        match self.procs.get(&pid) {
            Some(fp) if fp.exit.is_some() && !fp.reaped => {}
            other => self.violations.push(format!(
                "group of {pid} killed while the leader is {other:?}"
            )),
        }
    }
    fn exited(&mut self, p: &Proc) -> bool {
        self.procs
            .get(&p.pid.as_raw())
            .is_some_and(|fp| fp.exit.is_some() && !fp.reaped)
    }
    fn next_exited(&mut self) -> Option<nix::unistd::Pid> {
        self.procs
            .iter()
            .find(|(_, p)| p.exit.is_some() && !p.reaped)
            .map(|(pid, _)| nix::unistd::Pid::from_raw(*pid))
    }
    fn reap(&mut self, pid: nix::unistd::Pid) -> Option<Exit> {
        let p = self.procs.get_mut(&pid.as_raw())?;
        if p.reaped {
            return None;
        }
        let e = p.exit?;
        p.reaped = true;
        Some(e)
    }
    fn watch(&mut self, _: std::os::fd::RawFd, _: Token) {}
    fn unwatch(&mut self, _: std::os::fd::RawFd) {}
    fn process_group(&self, pid: i32) -> Option<i32> {
        self.groups.get(&pid).copied()
    }
}

// ----- the rig ---------------------------------------------------------------

/// A local root client.
const ROOT: crate::access::Who = crate::access::Who {
    peer: crate::access::Peer::Unix {
        uid: 0,
        gid: 0,
        pid: 1,
    },
    role: crate::access::Role::Full,
};

static DIRS: AtomicU32 = AtomicU32::new(0);

struct Rig {
    sup: Supervisor<FakeOs>,
    dir: PathBuf,
    next_client: ClientId,
    /// Every answer delivered, by client.
    answers: BTreeMap<ClientId, Vec<Response>>,
    /// Every log line streamed to a follower, by client.
    streamed: BTreeMap<ClientId, Vec<String>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service file whose ExecStart names the service (`run <name>`), so
/// the fake knows whose process it is.
fn svc(name: &str, extra: &str) -> (String, String) {
    (
        name.to_string(),
        format!("ExecStart = \"run {name}\"\n{extra}\n"),
    )
}

fn rig(files: &[(String, String)]) -> Rig {
    rig_failing(files, &[])
}

/// `rig`, with these exec_start values failing from the boot on.
fn rig_failing(files: &[(String, String)], fail: &[&str]) -> Rig {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("init-sup-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("services")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join("services").join(format!("{name}.service")), text).unwrap();
    }
    let cfg = InitConfig {
        service_dir: dir.join("services").display().to_string(),
        log_dir: dir.join("log").display().to_string(),
        ..InitConfig::default()
    };
    let mut os = FakeOs {
        t: Some(Instant::now()),
        ..FakeOs::default()
    };
    os.fail_exec.extend(fail.iter().map(|f| f.to_string()));
    let mut sup = Supervisor::new(os, cfg, dir.join("init.yaml"));
    sup.boot();
    let mut r = Rig {
        sup,
        dir,
        next_client: 1,
        answers: BTreeMap::new(),
        streamed: BTreeMap::new(),
    };
    r.tick();
    r
}

impl Rig {
    fn os(&mut self) -> &mut FakeOs {
        self.sup.os()
    }
    fn tick(&mut self) {
        self.sup.tick();
        for o in self.sup.take_out() {
            match o {
                Out::Answer(c, r) => self.answers.entry(c).or_default().push(r),
                Out::Broadcast(to, Response::ServiceLogs { logs }) => {
                    for c in to {
                        self.streamed.entry(c).or_default().extend(logs.clone());
                    }
                }
                Out::Broadcast(..) => {}
            }
        }
    }
    fn id(&self, name: &str) -> usize {
        self.sup.table.id_of(name).unwrap()
    }
    fn state(&self, name: &str) -> &'static str {
        self.sup.table.get(self.id(name)).unwrap().state().name()
    }
    fn pid(&self, name: &str) -> Option<i32> {
        let s = self.sup.table.get(self.id(name))?;
        s.proc_().map(|p| p.pid.as_raw())
    }
    fn gen(&self, name: &str) -> u32 {
        self.sup
            .table
            .get(self.id(name))
            .unwrap()
            .proc_()
            .unwrap()
            .gen
    }
    fn restarts(&self, name: &str) -> u32 {
        self.sup
            .table
            .get(self.id(name))
            .unwrap()
            .m()
            .restart_count()
    }
    /// The current process of `name` exits; the supervisor hears of it by
    /// SIGCHLD.
    fn exit(&mut self, name: &str, e: Exit) {
        let pid = self.pid(name).unwrap();
        self.os().exit(pid, e);
        self.sup.on_sigchld();
        self.tick();
    }
    /// A process that already got its exit (SIGKILL in the fake) is reaped.
    fn exit_pid(&mut self, pid: i32) {
        self.os().exit(pid, by(Signal::SIGKILL));
        self.sup.on_sigchld();
        self.tick();
    }
    fn advance(&mut self, d: Duration) {
        let os = self.os();
        os.t = Some(os.now() + d);
        self.sup.on_timer();
        self.tick();
    }
    fn send(&mut self, req: Request) -> (ClientId, Reply) {
        let c = self.next_client;
        self.next_client += 1;
        let r = self.sup.request(c, &ROOT, req);
        self.tick();
        (c, r)
    }
    fn answer(&self, c: ClientId) -> Option<&Response> {
        let v = self.answers.get(&c)?;
        assert_eq!(v.len(), 1, "answered more than once: {v:?}");
        v.first()
    }
    fn no_violations(&mut self) {
        let v = std::mem::take(&mut self.os().violations);
        assert!(v.is_empty(), "{v:?}");
    }
}

fn name(n: &str) -> String {
    n.to_string()
}

fn ok_text(r: &Response) -> &str {
    match r {
        Response::Success { message, .. } => message,
        other => panic!("not a success: {other:?}"),
    }
}

fn err_text(r: &Response) -> &str {
    match r {
        Response::Error { message } => message,
        other => panic!("not an error: {other:?}"),
    }
}

// ----- the tests -------------------------------------------------------------

#[test]
fn a_stale_exit_event_never_touches_the_new_process() {
    // SIGCHLD and the old pidfd's readiness arrive in one batch: the
    // SIGCHLD path reaps the old process and starts the new one; the old
    // pidfd event that follows must do nothing to the new process.
    let mut r = rig(&[svc("api", "Restart = \"on-failure\"\nRestartSec = 2")]);
    r.os().obey_term.insert(name("api"));
    let (old_pid, old_gen) = (r.pid("api").unwrap(), r.gen("api"));
    let id = r.id("api");
    let (c, reply) = r.send(Request::ServiceRestart { name: name("api") });
    assert_eq!(reply, Reply::Later);
    assert!(!r.os().pid_alive(old_pid), "SIGTERM was obeyed");
    r.sup.on_sigchld();
    let new_pid = r.pid("api").unwrap();
    assert_ne!(new_pid, old_pid);
    r.sup.on_token(token(id, old_gen, Source::Exit));
    r.tick();
    assert!(r.os().pid_alive(new_pid));
    assert_eq!(r.pid("api"), Some(new_pid));
    assert_eq!(
        r.os().signals,
        vec![(old_pid, Signal::SIGTERM), (old_pid, Signal::SIGCONT)]
    );
    r.advance(RESTART_GRACE);
    assert_eq!(ok_text(r.answer(c).unwrap()), "Service 'api' restarted");
    r.no_violations();
}

#[test]
fn the_current_pidfd_event_reaps_once_and_sigchld_after_it_finds_nothing() {
    let mut r = rig(&[svc("a", "Restart = \"always\"\nRestartSec = 1")]);
    let (pid, gen, id) = (r.pid("a").unwrap(), r.gen("a"), r.id("a"));
    // Readiness before the exit (spurious): nothing happens.
    r.sup.on_token(token(id, gen, Source::Exit));
    assert_eq!(r.pid("a"), Some(pid));
    r.os().exit(pid, code(1));
    r.sup.on_token(token(id, gen, Source::Exit));
    r.sup.on_sigchld();
    r.sup.on_token(token(id, gen, Source::Exit));
    r.tick();
    assert_eq!(r.state("a"), "auto-restart");
    assert!(r.os().signals.is_empty());
    r.no_violations();
}

#[test]
fn every_restart_policy() {
    for (policy, exit, want) in [
        ("no", code(0), "inactive"),
        ("no", code(1), "failed"),
        ("always", code(0), "auto-restart"),
        ("always", code(1), "auto-restart"),
        ("on-failure", code(0), "inactive"),
        ("on-failure", code(2), "auto-restart"),
        ("on-failure", by(Signal::SIGSEGV), "auto-restart"),
        ("on-success", code(0), "auto-restart"),
        ("on-success", code(1), "failed"),
    ] {
        let mut r = rig(&[svc("s", &format!("Restart = \"{policy}\""))]);
        r.exit("s", exit);
        assert_eq!(r.state("s"), want, "{policy} {exit:?}");
        r.no_violations();
    }
}

#[test]
fn restart_sec_counts_from_the_exit() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 2")]);
    r.advance(Duration::from_secs(5));
    r.exit("s", code(1));
    r.advance(Duration::from_millis(1999));
    assert_eq!(r.state("s"), "auto-restart");
    r.advance(Duration::from_millis(1));
    assert_eq!(r.state("s"), "running");
    assert_eq!(r.restarts("s"), 1);
}

#[test]
fn restart_sec_zero_restarts_in_the_same_turn() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 0")]);
    let first = r.pid("s").unwrap();
    r.exit("s", code(0));
    assert_eq!(r.state("s"), "running");
    assert_ne!(r.pid("s"), Some(first));
}

#[test]
fn start_limit_under_the_fake_clock() {
    let extra =
        "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 3\nStartLimitIntervalSec = 10";
    let mut r = rig(&[svc("s", extra)]);
    for _ in 0..2 {
        r.exit("s", code(1));
        r.advance(Duration::from_secs(1));
        assert_eq!(r.state("s"), "running");
    }
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "failed");
    // Spread out, the same number of crashes is fine.
    let mut r = rig(&[svc("s", extra)]);
    for _ in 0..6 {
        r.advance(Duration::from_secs(6));
        r.exit("s", code(1));
        r.advance(Duration::from_secs(1));
        assert_eq!(r.state("s"), "running");
    }
    assert_eq!(r.restarts("s"), 6);
}

#[test]
fn a_failing_exec_counts_toward_the_start_limit() {
    let mut r = rig(&[svc(
        "s",
        "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 2",
    )]);
    r.os().fail_exec.insert(name("run s"));
    r.exit("s", code(1));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "failed");
}

/// Found by an adversarial review (s9): `restart` of a service failed by
/// its start limit gave it one run, not a fresh burst as `start` does.
#[test]
fn a_restart_by_hand_clears_the_start_limit() {
    let extra =
        "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 2\nStartLimitIntervalSec = 100";
    let mut r = rig(&[svc("s", extra)]);
    r.exit("s", code(1));
    r.advance(Duration::from_secs(1));
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "failed");
    assert!(r.reason("s").contains("start limit"), "{}", r.reason("s"));
    r.send(Request::ServiceRestart { name: name("s") });
    assert_eq!(r.state("s"), "running");
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "auto-restart", "{}", r.reason("s"));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "running");
    r.no_violations();
}

/// Found by an adversarial review (s3): a `start` or `restart` asked while
/// the service waits out RestartSec was counted as an automatic restart.
#[test]
fn a_start_by_hand_during_the_restart_wait_is_no_automatic_restart() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 5")]);
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "auto-restart");
    r.send(Request::ServiceStart { name: name("s") });
    assert_eq!(r.state("s"), "running");
    r.exit("s", code(1));
    r.send(Request::ServiceRestart { name: name("s") });
    assert_eq!(r.state("s"), "running");
    assert_eq!(r.restarts("s"), 0);
    r.exit("s", code(1));
    r.advance(Duration::from_secs(5));
    assert_eq!(r.state("s"), "running");
    assert_eq!(r.restarts("s"), 1, "the timer's start is one");
    r.no_violations();
}

/// Found by an adversarial review (adv6): an automatic restart that had
/// to wait for a requirement was never counted.
#[test]
fn an_automatic_restart_that_waits_for_a_requirement_is_counted() {
    let always = "Restart = \"always\"";
    let mut r = rig(&[
        svc("db", &format!("{always}\nRestartSec = 5")),
        svc(
            "app",
            &format!("{always}\nRestartSec = 1\nRequires = [\"db\"]"),
        ),
    ]);
    r.exit("db", code(1));
    r.exit("app", code(1));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("app"), "waiting");
    r.advance(Duration::from_secs(4));
    assert_eq!(r.state("app"), "running");
    assert_eq!((r.restarts("db"), r.restarts("app")), (1, 1));
}

#[test]
fn stop_escalates_to_sigkill_and_answers_once() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nTimeoutStopSec = 3")]);
    let pid = r.pid("s").unwrap();
    let (c, reply) = r.send(Request::ServiceStop { name: name("s") });
    assert_eq!(reply, Reply::Later);
    let term = vec![(pid, Signal::SIGTERM), (pid, Signal::SIGCONT)];
    assert_eq!(r.os().signals, term);
    r.advance(Duration::from_millis(2999));
    assert_eq!(r.os().signals, term);
    assert!(r.answer(c).is_none());
    r.advance(Duration::from_millis(1));
    // SIGKILL needs no SIGCONT.
    assert_eq!(r.os().signals[2..], [(pid, Signal::SIGKILL)]);
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "inactive", "a stop is not restarted");
    assert_eq!(ok_text(r.answer(c).unwrap()), "Service 's' stopped");
    r.advance(Duration::from_secs(60));
    assert_eq!(r.answers.get(&c).map(Vec::len), Some(1));
    r.no_violations();
}

/// A stopped process (SIGSTOP, a debugger) keeps the stop signal pending
/// until it runs again: SIGCONT follows the stop signal to the same
/// process, so a frozen service ends at once instead of at the SIGKILL.
#[test]
fn a_stop_continues_a_stopped_process_so_it_ends_at_once() {
    let mut r = rig(&[svc("s", "TimeoutStopSec = 30")]);
    r.os().obey_term.insert(name("s"));
    let pid = r.pid("s").unwrap();
    r.os().frozen.insert(pid);
    let (c, _) = r.send(Request::ServiceStop { name: name("s") });
    assert_eq!(
        r.os().signals,
        vec![(pid, Signal::SIGTERM), (pid, Signal::SIGCONT)]
    );
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "inactive");
    assert_eq!(ok_text(r.answer(c).unwrap()), "Service 's' stopped");
    let last = r.sup.table.get(r.id("s")).unwrap().m().last_exit();
    assert_eq!(last, Some(by(Signal::SIGTERM)));
    r.advance(Duration::from_secs(60));
    assert!(!r.os().signals.contains(&(pid, Signal::SIGKILL)));
    r.no_violations();
}

#[test]
fn a_stop_answer_not_decided_in_time_says_still_stopping() {
    let mut r = rig(&[svc("s", "TimeoutStopSec = 30")]);
    let (c, _) = r.send(Request::ServiceStop { name: name("s") });
    r.advance(REPLY_WAIT);
    assert!(ok_text(r.answer(c).unwrap()).contains("still stopping"));
    r.exit("s", by(Signal::SIGTERM));
    assert_eq!(r.answers.get(&c).map(Vec::len), Some(1));
}

#[test]
fn a_deadline_after_the_exit_does_nothing() {
    let mut r = rig(&[svc("s", "TimeoutStopSec = 3")]);
    let pid = r.pid("s").unwrap();
    r.send(Request::ServiceStop { name: name("s") });
    r.exit("s", by(Signal::SIGTERM));
    r.advance(Duration::from_secs(10));
    assert_eq!(r.os().stop_signals(), vec![(pid, Signal::SIGTERM)]);
    assert_eq!(r.state("s"), "inactive");
    r.no_violations();
}

#[test]
fn an_exit_during_a_stop_is_a_stop_not_a_crash() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 0")]);
    r.send(Request::ServiceStop { name: name("s") });
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "inactive");
    assert_eq!(r.restarts("s"), 0);
}

#[test]
fn a_stop_during_a_restart_cancels_the_start() {
    // Found by the random schedules (seed 1): restart, then stop before the
    // old process has exited, and the service came back.
    let mut r = rig(&[svc("c", "")]);
    let (restart, _) = r.send(Request::ServiceRestart { name: name("c") });
    let (stop, _) = r.send(Request::ServiceStop { name: name("c") });
    r.exit("c", by(Signal::SIGTERM));
    assert_eq!(r.state("c"), "inactive");
    assert_eq!(r.os().next_pid, 1, "not started again");
    let msg = err_text(r.answer(restart).unwrap()).to_string();
    assert!(msg.contains("did not restart"), "{msg}");
    assert_eq!(ok_text(r.answer(stop).unwrap()), "Service 'c' stopped");
}

#[test]
fn a_crash_while_queued_to_stop_is_not_restarted() {
    // Found by the random schedules (seed 31): `a` waits in the stop queue
    // for `c` (ordered after it) to stop, and crashes meanwhile.
    let mut r = rig(&[
        svc("a", "Restart = \"always\"\nRestartSec = 0"),
        svc("c", "After = [\"a\"]"),
    ]);
    r.send(Request::ServiceStop { name: name("c") });
    let (stop_a, _) = r.send(Request::ServiceStop { name: name("a") });
    assert_eq!(r.state("a"), "running", "waits for c");
    r.exit("a", code(1));
    assert_eq!(r.state("a"), "inactive");
    assert_eq!(r.os().next_pid, 2, "not started again");
    assert_eq!(ok_text(r.answer(stop_a).unwrap()), "Service 'a' stopped");
}

#[test]
fn a_client_gone_while_its_answer_is_held_gets_nothing_and_breaks_nothing() {
    let mut r = rig(&[svc("s", "")]);
    let (c, _) = r.send(Request::ServiceStop { name: name("s") });
    r.sup.client_gone(c);
    r.exit("s", by(Signal::SIGTERM));
    r.advance(REPLY_WAIT * 2);
    assert!(!r.answers.contains_key(&c));
    assert_eq!(r.state("s"), "inactive");
    assert!(r.sup.held.is_empty());
}

#[test]
fn a_restart_whose_new_process_dies_at_once_fails() {
    let mut r = rig(&[svc("s", "Restart = \"on-failure\"\nRestartSec = 2")]);
    r.os().obey_term.insert(name("s"));
    let (c, _) = r.send(Request::ServiceRestart { name: name("s") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "running");
    assert!(r.answer(c).is_none(), "held for the grace period");
    r.exit("s", code(3));
    let msg = err_text(r.answer(c).unwrap()).to_string();
    assert!(msg.contains("did not survive its restart"), "{msg}");
    assert!(msg.contains("exited with code 3"), "{msg}");
}

/// A second restart while the first is held (its new run up, the grace
/// period not over) ends the first one's run on purpose: both are answered
/// by the run the second starts, as restarts merge.
#[test]
fn a_restart_asked_during_another_answers_both() {
    let mut r = rig(&[svc("s", "Restart = \"on-failure\"\nRestartSec = 2")]);
    r.os().obey_term.insert(name("s"));
    let (a, _) = r.send(Request::ServiceRestart { name: name("s") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "running");
    assert!(r.answer(a).is_none(), "held for the grace period");
    let (b, _) = r.send(Request::ServiceRestart { name: name("s") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "running");
    assert!(r.answer(a).is_none(), "{:?}", r.answer(a));
    r.advance(RESTART_GRACE);
    assert_eq!(ok_text(r.answer(a).unwrap()), "Service 's' restarted");
    assert_eq!(ok_text(r.answer(b).unwrap()), "Service 's' restarted");
    r.no_violations();
}

#[test]
fn restart_of_a_stopped_service_starts_it() {
    let mut r = rig(&[svc("s", "")]);
    r.os().obey_term.insert(name("s"));
    r.send(Request::ServiceStop { name: name("s") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "inactive");
    let (c, _) = r.send(Request::ServiceRestart { name: name("s") });
    assert_eq!(r.state("s"), "running");
    r.advance(RESTART_GRACE);
    assert_eq!(ok_text(r.answer(c).unwrap()), "Service 's' restarted");
}

#[test]
fn a_dependent_waits_for_a_restarting_requirement_then_starts() {
    let mut r = rig(&[
        svc("db", "Restart = \"always\"\nRestartSec = 5"),
        svc("app", "Requires = [\"db\"]\nServiceEnable = false"),
    ]);
    assert_eq!(r.state("app"), "inactive");
    r.exit("db", code(1));
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    assert_eq!(
        reply,
        Reply::Now(Response::ok("Service 'app' is waiting for db"))
    );
    let id = r.id("app");
    let st = r.sup.status(id).unwrap();
    assert_eq!(st.waiting_on, vec![name("db")]);
    assert_eq!(st.reason.as_deref(), Some("waiting for db"));
    r.advance(Duration::from_secs(5));
    assert_eq!(r.state("db"), "running");
    assert_eq!(r.state("app"), "running");
}

/// Found by an adversarial review: a service that required itself stayed
/// waiting for itself, and each look at it queued another, so init spun
/// and grew by about 150 MB/s. A requirement on itself is no requirement
/// (warned about at load, as a cycle is).
#[test]
fn a_service_that_requires_itself_starts_and_leaves_no_work() {
    let mut r = rig(&[
        svc("a", "Requires = [\"a\"]"),
        svc("b", "RequiredBy = [\"b\"]\nAfter = [\"b\"]"),
        svc("c", "Requires = [\"a\", \"b\"]"),
    ]);
    for n in ["a", "b", "c"] {
        assert_eq!(r.state(n), "running", "{n}");
    }
    assert!(r.sup.queue.is_empty(), "work left: {}", r.sup.queue.len());
    r.exit("a", code(1));
    r.tick();
    assert!(r.sup.queue.is_empty(), "work left: {}", r.sup.queue.len());
    let (_, reply) = r.send(Request::ServiceStart { name: name("a") });
    assert!(
        matches!(reply, Reply::Now(Response::Success { .. })),
        "{reply:?}"
    );
    assert_eq!(r.state("a"), "running");
    assert!(r.sup.queue.is_empty(), "work left: {}", r.sup.queue.len());
}

#[test]
fn a_requirement_that_fails_fails_what_waits_on_it() {
    let mut r = rig(&[
        svc(
            "db",
            "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 1",
        ),
        svc("app", "Requires = [\"db\"]\nServiceEnable = false"),
    ]);
    r.os().fail_exec.insert(name("run db"));
    r.exit("db", code(1));
    assert_eq!(r.state("db"), "failed");
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    let Reply::Now(resp) = reply else { panic!() };
    assert!(err_text(&resp).contains("required service 'db' failed"));
    assert_eq!(r.state("app"), "failed");
}

#[test]
fn a_manual_start_pulls_in_its_requirements_first() {
    let mut r = rig(&[
        svc("db", ""),
        svc("app", "Requires = [\"db\"]\nServiceEnable = false"),
    ]);
    r.exit("db", code(0));
    assert_eq!(r.state("db"), "inactive");
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    let started = "Service 'app' and what it requires (db) started";
    assert_eq!(reply, Reply::Now(Response::ok(started)));
    let (db, app) = (r.pid("db").unwrap(), r.pid("app").unwrap());
    assert!(db < app, "db was spawned first");
}

#[test]
fn shutdown_stops_in_reverse_order_each_after_what_follows_it() {
    let mut r = rig(&[
        svc("a", ""),
        svc("b", "After = [\"a\"]"),
        svc("c", "After = [\"b\"]"),
    ]);
    let (a, b, c) = (
        r.pid("a").unwrap(),
        r.pid("b").unwrap(),
        r.pid("c").unwrap(),
    );
    assert!(a < b && b < c, "started in order");
    r.sup.begin_ending(Ending::PowerOff);
    r.tick();
    assert_eq!(r.os().stop_signals(), vec![(c, Signal::SIGTERM)]);
    r.exit("c", by(Signal::SIGTERM));
    assert_eq!(r.os().stop_signals().last(), Some(&(b, Signal::SIGTERM)));
    r.exit("b", by(Signal::SIGTERM));
    assert_eq!(r.os().stop_signals().last(), Some(&(a, Signal::SIGTERM)));
    assert_eq!(r.sup.finished(), None);
    r.exit("a", by(Signal::SIGTERM));
    assert_eq!(r.sup.finished(), Some(Ending::PowerOff));
    r.no_violations();
}

#[test]
fn stopping_a_requirement_stops_its_dependents_first() {
    let mut r = rig(&[svc("db", ""), svc("app", "Requires = [\"db\"]")]);
    let (db, app) = (r.pid("db").unwrap(), r.pid("app").unwrap());
    let (c, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.os().stop_signals(), vec![(app, Signal::SIGTERM)]);
    r.exit("app", by(Signal::SIGTERM));
    assert_eq!(r.os().stop_signals().last(), Some(&(db, Signal::SIGTERM)));
    r.exit("db", by(Signal::SIGTERM));
    assert_eq!(
        ok_text(r.answer(c).unwrap()),
        "Service 'db' and what requires it (app) stopped"
    );
}

/// Found by an adversarial review (s11): `start db` while db waits in the
/// stop queue for what requires it answered "already running" and left it
/// queued, so db was stopped anyway. A start takes it out of the queue, as
/// a systemd start job replaces a waiting stop job, and the held stop is
/// answered that it was cancelled.
#[test]
fn a_start_during_a_pending_dependency_stop_keeps_the_service() {
    let mut r = rig(&[svc("db", ""), svc("app", "Requires = [\"db\"]")]);
    r.os().obey_term.insert(name("db"));
    let (db, app) = (r.pid("db").unwrap(), r.pid("app").unwrap());
    let (stop, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.state("app"), "stopping", "app ignores SIGTERM");
    assert_eq!(r.state("db"), "running", "waits for app");
    let (_, reply) = r.send(Request::ServiceStart { name: name("db") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(ok_text(&a), "Service 'db' is already running");
    let msg = err_text(r.answer(stop).unwrap()).to_string();
    assert_eq!(
        msg,
        "Service 'db' was not stopped: a start cancelled its stop"
    );
    r.exit_pid(app);
    assert_eq!(r.state("app"), "inactive");
    assert_eq!(r.state("db"), "running");
    assert_eq!(r.pid("db"), Some(db), "never stopped");
    assert!(!r.os().stop_signals().contains(&(db, Signal::SIGTERM)));
    r.no_violations();
}

/// Found by an adversarial review (adv6): `start app` while app is being
/// stopped for `stop db` brought app back but let db be stopped under it;
/// in a chain, `start b` kept b and let c go. A start keeps up what it
/// requires too.
#[test]
fn a_start_during_a_dependency_stop_keeps_what_it_requires() {
    let mut r = rig(&[svc("db", ""), svc("app", "Requires = [\"db\"]")]);
    r.os().obey_term.insert(name("db"));
    let (db, app) = (r.pid("db").unwrap(), r.pid("app").unwrap());
    let (stop, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.state("app"), "stopping");
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(ok_text(&a).contains("will start once"), "{a:?}");
    let msg = err_text(r.answer(stop).unwrap()).to_string();
    assert_eq!(
        msg,
        "Service 'db' was not stopped: a start cancelled its stop"
    );
    r.exit_pid(app);
    assert_eq!(r.state("app"), "running");
    assert_eq!(r.state("db"), "running");
    assert_eq!(r.pid("db"), Some(db), "never stopped");

    let mut r = rig(&[
        svc("c", ""),
        svc("b", "Requires = [\"c\"]"),
        svc("a", "Requires = [\"b\"]"),
    ]);
    r.os().obey_term.insert(name("c"));
    r.os().obey_term.insert(name("b"));
    let (a, c) = (r.pid("a").unwrap(), r.pid("c").unwrap());
    r.send(Request::ServiceStop { name: name("c") });
    assert_eq!(r.state("a"), "stopping");
    r.send(Request::ServiceStart { name: name("b") });
    r.exit_pid(a);
    assert_eq!(r.state("a"), "inactive", "stopped as asked");
    assert_eq!(r.state("b"), "running");
    assert_eq!(r.pid("c"), Some(c), "b runs, so c does");
    r.no_violations();
}

/// Found by an adversarial review (adv7): `start app` while what it
/// requires was being stopped (app already down) failed app once db was
/// down. A start by hand starts the requirement again once it is down.
#[test]
fn a_start_by_hand_brings_back_a_requirement_being_stopped() {
    let mut r = rig(&[svc("db", ""), svc("app", "Requires = [\"db\"]")]);
    r.os().obey_term.insert(name("app"));
    r.send(Request::ServiceStop { name: name("app") });
    r.sup.on_sigchld();
    r.tick();
    let (stop, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.state("db"), "stopping");
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(ok_text(&a).contains("waiting for db"), "{a:?}");
    let msg = ok_text(r.answer(stop).unwrap()).to_string();
    assert_eq!(
        msg,
        "Service 'db' is stopping; a start asked since starts it again"
    );
    r.exit("db", by(Signal::SIGTERM));
    assert_eq!(r.state("db"), "running");
    assert_eq!(r.state("app"), "running");
    r.no_violations();
}

/// Found by an adversarial review (adv7): a start that failed (a missing
/// requirement) still cancelled the stop of what it requires.
#[test]
fn a_start_that_fails_cancels_no_stop() {
    let mut r = rig(&[
        svc("db", ""),
        svc("app2", "Requires = [\"db\"]"),
        svc("app", "Requires = [\"db\", \"missing\"]"),
    ]);
    r.os().obey_term.insert(name("db"));
    assert_eq!(r.state("app"), "failed");
    let (db, app2) = (r.pid("db").unwrap(), r.pid("app2").unwrap());
    let (stop, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.state("app2"), "stopping");
    let (_, reply) = r.send(Request::ServiceStart { name: name("app") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(err_text(&a).contains("'missing' does not exist"), "{a:?}");
    r.exit_pid(app2);
    r.sup.on_sigchld();
    r.tick();
    assert!(
        !r.os().pid_alive(db),
        "db stopped as asked: {}",
        r.state("db")
    );
    let msg = ok_text(r.answer(stop).unwrap()).to_string();
    assert!(msg.ends_with("stopped"), "{msg}");
    r.no_violations();
}

#[test]
fn reload_adds_removes_and_changes() {
    let mut r = rig(&[svc("keep", ""), svc("gone", ""), svc("edit", "")]);
    let keep = r.pid("keep").unwrap();
    let dir = r.dir.join("services");
    std::fs::remove_file(dir.join("gone.service")).unwrap();
    std::fs::write(dir.join("edit.service"), "ExecStart = \"run edit --new\"\n").unwrap();
    std::fs::write(dir.join("new.service"), "ExecStart = \"run new\"\n").unwrap();
    std::fs::write(dir.join("bad.service"), "ExecStart = [\n").unwrap();
    let (c, reply) = r.send(Request::SystemReload);
    assert_eq!(reply, Reply::Later, "answered at the end of the turn");
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert!(
        msg.starts_with("Reloaded: added bad, new; removed gone; changed edit"),
        "{msg}"
    );
    assert!(msg.contains("errors: "), "{msg}");
    assert_eq!(r.pid("keep"), Some(keep), "unchanged and untouched");
    assert_eq!(r.state("new"), "running");
    assert_eq!(r.state("bad"), "invalid");
    // The removed one is stopped, then forgotten.
    r.exit_by_name_of_removed("gone");
    assert!(r.sup.table.iter().all(|(_, s)| s.name != "gone"));
    // Fixing the invalid file starts it.
    std::fs::write(dir.join("bad.service"), "ExecStart = \"run bad\"\n").unwrap();
    r.send(Request::SystemReload);
    assert_eq!(r.state("bad"), "running");
    r.no_violations();
}

/// A file renamed to or from `.disabled` on disk changes what boot starts:
/// reload says so (it said "changed none"), and, as systemd's
/// daemon-reload, starts or stops nothing for it.
#[test]
fn reload_reports_files_enabled_or_disabled_on_disk() {
    let mut r = rig(&[svc("c", "")]);
    let c_pid = r.pid("c").unwrap();
    let dir = r.dir.join("services");
    std::fs::write(dir.join("b.service.disabled"), "ExecStart = \"run b\"\n").unwrap();
    let (c, _) = r.send(Request::SystemReload);
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert_eq!(msg, "Reloaded: added b; removed none; changed none");
    std::fs::rename(dir.join("b.service.disabled"), dir.join("b.service")).unwrap();
    std::fs::rename(dir.join("c.service"), dir.join("c.service.disabled")).unwrap();
    let (c, _) = r.send(Request::SystemReload);
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert_eq!(
        msg,
        "Reloaded: added none; removed none; changed none; now enabled b; now disabled c \
         (at boot; start or stop them to apply now)"
    );
    assert_eq!(r.state("b"), "inactive");
    assert_eq!(r.pid("c"), Some(c_pid), "still running, untouched");
    r.no_violations();
}

/// Found by an adversarial review (s1): a reload's new Type and
/// TimeoutStartSec did not decide the next run, because the machine took
/// the start with the old definition and the new one was swapped in only
/// at the spawn after it. A simple service made notify was "running" at
/// once; a notify one made simple was killed at the old TimeoutStartSec.
#[test]
fn a_type_changed_by_reload_decides_the_next_run() {
    let mut r = rig(&[svc("api", "")]);
    r.os().obey_term.insert(name("api"));
    let file = r.dir.join("services").join("api.service");
    let notify = "ExecStart = \"run api\"\nType = \"notify\"\nTimeoutStartSec = 5\n";
    std::fs::write(&file, notify).unwrap();
    r.send(Request::SystemReload);
    assert_eq!(r.state("api"), "running", "the old run goes on");
    r.send(Request::ServiceRestart { name: name("api") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("api"), "starting", "a notify run is up once ready");
    ready(&mut r, "api");
    assert_eq!(r.state("api"), "running");
    std::fs::write(&file, "ExecStart = \"run api\"\n").unwrap();
    r.send(Request::SystemReload);
    r.send(Request::ServiceRestart { name: name("api") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("api"), "running", "a simple run is up at once");
    let pid = r.pid("api");
    r.advance(Duration::from_secs(6));
    assert_eq!(r.state("api"), "running");
    assert_eq!(r.pid("api"), pid, "not stopped at the old TimeoutStartSec");
    r.no_violations();
}

/// Found by an adversarial review (adv7): a reload that took
/// `FailureAction = "poweroff"` out still powered off when the run that
/// began before it failed; the same for `Restart`. What follows a run's
/// end is the file's as it is now, as after systemd's daemon-reload.
#[test]
fn what_follows_a_runs_end_is_the_reloaded_files() {
    let mut r = rig(&[svc("s", "FailureAction = \"poweroff\"")]);
    let file = r.dir.join("services").join("s.service");
    std::fs::write(&file, "ExecStart = \"run s\"\n").unwrap();
    r.send(Request::SystemReload);
    r.exit("s", code(3));
    assert_eq!(r.state("s"), "failed");
    assert!(
        r.sup.ending.is_none(),
        "powered off by an action the file lost"
    );

    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 0")]);
    let file = r.dir.join("services").join("s.service");
    std::fs::write(&file, "ExecStart = \"run s\"\nRestart = \"no\"\n").unwrap();
    r.send(Request::SystemReload);
    r.exit("s", code(3));
    assert_eq!(r.state("s"), "failed", "not restarted");
    assert_eq!(r.os().next_pid, 1);
    r.no_violations();
}

/// Found by an adversarial review (s2): a `Requires` added by a reload was
/// ignored by the next start, as the dependency graph was built from the
/// running definition and not rebuilt when the new one took over.
#[test]
fn requires_added_by_reload_governs_the_next_start() {
    let restarts = "Restart = \"always\"\nRestartSec = 1";
    let mut r = rig(&[svc("db", ""), svc("app", restarts)]);
    r.os().obey_term.insert(name("db"));
    r.send(Request::ServiceStop { name: name("db") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("db"), "inactive");
    let file = r.dir.join("services").join("app.service");
    let text = format!("ExecStart = \"run app\"\n{restarts}\nRequires = [\"db\"]\n");
    std::fs::write(file, text).unwrap();
    r.send(Request::SystemReload);
    r.exit("app", code(1));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("db"), "running", "pulled in by the new Requires");
    assert_eq!(r.state("app"), "running");
    r.no_violations();
}

/// Found by an adversarial review (adv6): a running service whose file a
/// reload made invalid was restarted, and could be started, with its old
/// definition. Once its run ends it is invalid.
#[test]
fn a_file_made_invalid_while_running_makes_the_service_invalid_once_it_ends() {
    let restarts = "Restart = \"always\"\nRestartSec = 1";
    let mut r = rig(&[svc("s", restarts)]);
    let file = r.dir.join("services").join("s.service");
    let broken = format!("ExecStart = \"run s\"\n{restarts}\nbogus = [\n");
    std::fs::write(&file, broken).unwrap();
    r.send(Request::SystemReload);
    assert_eq!(r.state("s"), "running", "the running process goes on");
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "invalid");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "invalid");
    let (_, reply) = r.send(Request::ServiceStart { name: name("s") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(err_text(&a).contains("is invalid"), "{a:?}");
    assert_eq!(r.os().next_pid, 1, "never started again");
    // Fixed, it starts.
    std::fs::write(&file, format!("ExecStart = \"run s\"\n{restarts}\n")).unwrap();
    r.send(Request::SystemReload);
    r.send(Request::ServiceStart { name: name("s") });
    assert_eq!(r.state("s"), "running");
    r.no_violations();
}

/// Found by adversarial review 9 (/tmp/wadv9/repro/wadv9_probes.patch):
/// a restart cut short by an invalid file resumed once the file was fixed
/// even after `stop` or `disable` of the (invalid, so down) service. Both
/// keep it down. (A stop of a requirement does not reach it: an invalid
/// file names no requirements, and once fixed it starts with what its new
/// file requires, as a new file does.)
#[test]
fn a_stop_or_disable_while_invalid_keeps_a_cut_short_restart_down() {
    let restarts = "Restart = \"always\"\nRestartSec = 5";
    for how in ["stop", "disable"] {
        let app = format!("{restarts}\nRequires = [\"db\"]");
        let mut r = rig(&[svc("db", ""), svc("s", &app)]);
        r.os().obey_term.insert(name("db"));
        let dir = r.dir.join("services");
        r.exit("s", code(1));
        assert_eq!(r.state("s"), "auto-restart");
        std::fs::write(dir.join("s.service"), "ExecStart = [\n").unwrap();
        r.send(Request::SystemReload);
        assert_eq!(r.state("s"), "invalid", "{how}");
        let file = if how == "stop" {
            r.send(Request::ServiceStop { name: name("s") });
            "s.service"
        } else {
            r.send(Request::ServiceDisable { name: name("s") });
            "s.service.disabled"
        };
        let fixed = format!("ExecStart = \"run s\"\n{app}\n");
        std::fs::write(dir.join(file), fixed).unwrap();
        r.send(Request::SystemReload);
        assert_eq!(r.state("s"), "inactive", "{how}");
        assert_eq!(r.state("db"), "running", "{how}");
        r.no_violations();
    }
}

/// A restart that could not start the service again (a requirement a
/// reload added does not exist) is refused before it stops anything, as
/// systemd refuses the job: the running process was killed and the
/// service failed. A stop of a requirement that was waiting goes on.
#[test]
fn a_restart_that_cannot_start_again_stops_nothing() {
    let mut r = rig(&[svc("db", ""), svc("app", "Requires = [\"db\"]")]);
    let old = r.pid("app").unwrap();
    let file = r.dir.join("services").join("app.service");
    std::fs::write(
        file,
        "ExecStart = \"run app\"\nRequires = [\"db\", \"ghost\"]\n",
    )
    .unwrap();
    r.send(Request::SystemReload);
    let (c, reply) = r.send(Request::ServiceRestart { name: name("app") });
    let a = match reply {
        Reply::Now(a) => a,
        _ => r.answer(c).unwrap().clone(),
    };
    assert_eq!(
        err_text(&a),
        "Service 'app' was not restarted: required service 'ghost' does not exist"
    );
    assert_eq!(r.state("app"), "running");
    assert_eq!(r.pid("app"), Some(old), "its process untouched");
    assert!(r.os().stop_signals().is_empty(), "{:?}", r.os().signals);
    // Asked while db's stop waits for app: that stop is not cancelled.
    let (stop, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(r.state("app"), "stopping");
    let (c, reply) = r.send(Request::ServiceRestart { name: name("app") });
    assert!(matches!(reply, Reply::Now(_)), "{reply:?}");
    assert!(!r.answers.contains_key(&c));
    r.exit("app", by(Signal::SIGTERM));
    r.exit("db", by(Signal::SIGTERM));
    assert_eq!((r.state("app"), r.state("db")), ("inactive", "inactive"));
    let done = ok_text(r.answer(stop).unwrap());
    assert_eq!(done, "Service 'db' and what requires it (app) stopped");
    r.no_violations();
}

/// Found by adversarial review 8 (/tmp/wadv8/repro/2): a `logs -f s`
/// follower was tied to the service's id, so once a reload removed s and
/// a later one added it back it got none of its lines, and `initctl logs
/// -f` hung. It follows the name, as `journalctl -f -u` does.
#[test]
fn a_follower_follows_a_service_removed_and_added_back() {
    let mut r = rig(&[svc("s", "")]);
    let (c, reply) = r.send(Request::ServiceLogsFollow {
        name: name("s"),
        lines: 0,
    });
    assert!(matches!(reply, Reply::Stream(_)), "{reply:?}");
    r.os().obey_term.insert(name("s"));
    let file = r.dir.join("services").join("s.service");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    r.send(Request::SystemReload);
    r.sup.on_sigchld();
    r.tick();
    assert!(r.sup.table.id_of("s").is_none(), "s is gone");
    std::fs::write(&file, text).unwrap();
    r.send(Request::SystemReload);
    assert_eq!(r.state("s"), "running");
    let pid = r.pid("s").unwrap();
    let got = r.streamed.get(&c).cloned().unwrap_or_default();
    let want = format!("[init] started with PID {pid}");
    assert!(got.iter().any(|l| l.ends_with(&want)), "{got:?}");
    r.no_violations();
}

/// A service that was to run again when a reload made its file invalid
/// (its restart cut short) runs again once a reload fixes the file, as one
/// that was never run does; one stopped by hand stays down.
#[test]
fn a_restart_cut_short_by_an_invalid_file_resumes_once_it_is_fixed() {
    let restarts = "Restart = \"always\"\nRestartSec = 1";
    let mut r = rig(&[svc("s", restarts), svc("t", restarts)]);
    let dir = r.dir.join("services");
    for n in ["s", "t"] {
        std::fs::write(dir.join(format!("{n}.service")), "ExecStart = [\n").unwrap();
    }
    r.send(Request::SystemReload);
    r.exit("s", code(1));
    r.send(Request::ServiceStop { name: name("t") });
    r.exit("t", by(Signal::SIGTERM));
    assert_eq!((r.state("s"), r.state("t")), ("invalid", "invalid"));
    for n in ["s", "t"] {
        let fixed = format!("ExecStart = \"run {n}\"\n{restarts}\n");
        std::fs::write(dir.join(format!("{n}.service")), fixed).unwrap();
    }
    r.send(Request::SystemReload);
    assert_eq!(r.state("s"), "running", "its restart resumed");
    assert_eq!(r.state("t"), "inactive", "stopped by hand, it stays down");
    r.no_violations();
}

/// Found by an adversarial review (adv7): `start` during the stop of a
/// service whose file a reload made invalid promised a start that never
/// came. It is refused, as the file is invalid.
#[test]
fn a_start_during_the_stop_of_a_service_made_invalid_is_refused() {
    let mut r = rig(&[svc("s", "")]);
    let file = r.dir.join("services").join("s.service");
    std::fs::write(&file, "ExecStart = [\n").unwrap();
    r.send(Request::SystemReload);
    r.send(Request::ServiceStop { name: name("s") });
    assert_eq!(r.state("s"), "stopping");
    let (_, reply) = r.send(Request::ServiceStart { name: name("s") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(
        err_text(&a).starts_with("Service 's' is invalid: "),
        "{a:?}"
    );
    r.exit("s", by(Signal::SIGTERM));
    assert_eq!(r.state("s"), "invalid");
    r.no_violations();
}

/// Found by an adversarial review (adv6): a file removed (its service
/// stopping, slowly) and put back before the old process was gone made a
/// second service of the same name, and a second process beside the first.
/// It is the same service again: it runs once the old process is gone.
#[test]
fn a_file_removed_and_put_back_before_its_service_is_gone_is_the_same_service() {
    let mut r = rig(&[svc("s", "TimeoutStopSec = 10")]);
    let old = r.pid("s").unwrap();
    let file = r.dir.join("services").join("s.service");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    r.send(Request::SystemReload);
    assert_eq!(r.os().stop_signals(), vec![(old, Signal::SIGTERM)]);
    std::fs::write(&file, &text).unwrap();
    let (c, _) = r.send(Request::SystemReload);
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert!(msg.starts_with("Reloaded: added s;"), "{msg}");
    assert_eq!(r.os().live_of("s"), 1);
    assert_eq!(r.sup.table.len(), 1, "one service");
    r.exit("s", by(Signal::SIGTERM));
    assert_eq!(
        r.state("s"),
        "running",
        "started again once the old one is gone"
    );
    assert_ne!(r.pid("s"), Some(old));
    assert_eq!(r.os().live_of("s"), 1);
    r.no_violations();
}

/// Found by an adversarial review (adv6): `ServiceEnable = false` set by a
/// reload on a running service was not reported and was not what the
/// service counted as until its run ended.
#[test]
fn service_enable_false_by_reload_is_reported_at_once() {
    let mut r = rig(&[svc("s", "")]);
    let file = r.dir.join("services").join("s.service");
    std::fs::write(&file, "ExecStart = \"run s\"\nServiceEnable = false\n").unwrap();
    let (c, _) = r.send(Request::SystemReload);
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert!(msg.contains("now disabled s"), "{msg}");
    assert!(!r.sup.table.get(r.id("s")).unwrap().enabled());
    assert_eq!(r.state("s"), "running", "nothing stopped for it");
}

/// Reloads asked in the same turn are one reload: each asker gets its
/// answer (the same one); one that left first gets none.
#[test]
fn reloads_in_one_turn_are_coalesced() {
    let mut r = rig(&[svc("keep", "")]);
    let dir = r.dir.join("services");
    std::fs::write(dir.join("new.service"), "ExecStart = \"run new\"\n").unwrap();
    for c in [10, 11, 12] {
        assert_eq!(r.sup.request(c, &ROOT, Request::SystemReload), Reply::Later);
    }
    r.sup.client_gone(12);
    r.tick();
    let a = ok_text(r.answer(10).unwrap()).to_string();
    // Had it reloaded twice, the second would have added nothing.
    assert!(a.starts_with("Reloaded: added new;"), "{a}");
    assert_eq!(r.answer(11), r.answer(10));
    assert_eq!(r.answer(12), None);
    assert_eq!(r.state("new"), "running");
    // A later turn reloads again.
    let (c, _) = r.send(Request::SystemReload);
    assert!(ok_text(r.answer(c).unwrap()).starts_with("Reloaded: added none;"));
}

/// A SIGHUP and clients' reloads in the same turn are one reload.
#[test]
fn a_sighup_reload_is_coalesced_with_clients_reloads() {
    let mut r = rig(&[svc("keep", "")]);
    let dir = r.dir.join("services");
    std::fs::write(dir.join("new.service"), "ExecStart = \"run new\"\n").unwrap();
    r.sup.reload_on_signal();
    r.sup.reload_on_signal();
    assert_eq!(
        r.sup.request(10, &ROOT, Request::SystemReload),
        Reply::Later
    );
    r.tick();
    let a = ok_text(r.answer(10).unwrap()).to_string();
    assert!(a.starts_with("Reloaded: added new;"), "{a}");
    assert_eq!(r.state("new"), "running");
    // A SIGHUP alone reloads at the end of its turn.
    std::fs::write(dir.join("other.service"), "ExecStart = \"run other\"\n").unwrap();
    r.sup.reload_on_signal();
    assert!(r.sup.table.iter().all(|(_, s)| s.name != "other"));
    r.tick();
    assert_eq!(r.state("other"), "running");
}

impl Rig {
    fn exit_by_name_of_removed(&mut self, name: &str) {
        let pid = self
            .sup
            .table
            .iter()
            .find(|(_, s)| s.name == name)
            .and_then(|(_, s)| s.proc_())
            .map(|p| p.pid.as_raw())
            .unwrap();
        assert!(self.os().signals.contains(&(pid, Signal::SIGTERM)));
        self.os().exit(pid, by(Signal::SIGTERM));
        self.sup.on_sigchld();
        self.tick();
    }
}

#[test]
fn disable_stops_and_answers_once_stopped() {
    let mut r = rig(&[svc("s", "")]);
    let (c, reply) = r.send(Request::ServiceDisable { name: name("s") });
    assert_eq!(reply, Reply::Later);
    assert!(r.dir.join("services/s.service.disabled").exists());
    r.exit("s", by(Signal::SIGTERM));
    let msg = ok_text(r.answer(c).unwrap()).to_string();
    assert!(
        msg.contains("disabled") && msg.ends_with("stopped"),
        "{msg}"
    );
    let (_, reply) = r.send(Request::ServiceEnable {
        name: name("s"),
        now: true,
    });
    let Reply::Now(resp) = reply else { panic!() };
    assert!(ok_text(&resp).contains("started"), "{resp:?}");
    assert_eq!(r.state("s"), "running");
}

#[test]
fn requests_during_shutdown_start_nothing() {
    let mut r = rig(&[svc("s", "")]);
    r.sup.begin_ending(Ending::PowerOff);
    r.exit("s", by(Signal::SIGTERM));
    let (_, reply) = r.send(Request::ServiceStart { name: name("s") });
    assert_eq!(reply, Reply::Now(Response::err("system is shutting down")));
    assert_eq!(r.sup.finished(), Some(Ending::PowerOff));
}

// ----- random schedules --------------------------------------------------------

/// xorshift64*: small, seedable, good enough to pick actions.
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

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// One random schedule; panics with the seed on the first broken invariant.
fn schedule(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let files = [
        svc("a", "Restart = \"always\"\nRestartSec = 0\nStartLimitBurst = 1000"),
        svc("b", "Restart = \"on-failure\"\nRestartSec = 1\nTimeoutStopSec = 2"),
        svc("c", "Restart = \"no\"\nAfter = [\"a\"]"),
        svc("d", "Restart = \"always\"\nRestartSec = 2\nStartLimitBurst = 3\nStartLimitIntervalSec = 10\nAfter = [\"b\"]"),
        svc("e", "Type = \"notify\"\nRestart = \"on-failure\"\nRestartSec = 1\nTimeoutStartSec = 3\nWatchdogSec = 2\nTimeoutStopSec = 2\nAfter = [\"b\"]"),
        svc("f", "Type = \"oneshot\"\nAfter = [\"e\"]"),
    ];
    let mut r = rig(&files);
    r.os().obey_term.insert(name("a"));
    r.os().obey_term.insert(name("c"));
    let mut gens: Vec<(usize, u32)> = Vec::new();
    let mut held: BTreeMap<ClientId, String> = BTreeMap::new();
    let mut gone: BTreeSet<ClientId> = BTreeSet::new();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    // Services stopped by a request, and not started since.
    let mut stopped: BTreeSet<&str> = BTreeSet::new();
    let mut spawned_before = r.os().next_pid;
    let mut log: Vec<String> = Vec::new();
    for step in 0..steps {
        let n = NAMES[rng.below(NAMES.len())];
        let signals_before = r.os().signals.len();
        let action = rng.below(100);
        let what = match action {
            0..=19 => {
                // A live process exits (maybe not the current one).
                let live: Vec<i32> = r
                    .os()
                    .procs
                    .iter()
                    .filter(|(_, p)| p.exit.is_none())
                    .map(|(pid, _)| *pid)
                    .collect();
                if live.is_empty() {
                    "no live process".to_string()
                } else {
                    let pid = live[rng.below(live.len())];
                    let e = [code(0), code(1), by(Signal::SIGSEGV)][rng.below(3)];
                    r.os().exit(pid, e);
                    format!("pid {pid} exits {e:?}")
                }
            }
            20..=34 => {
                r.sup.on_sigchld();
                "SIGCHLD".into()
            }
            35..=49 => {
                // Readiness of any pidfd ever issued: current or stale.
                if gens.is_empty() {
                    "no pidfd".into()
                } else {
                    let (id, gen) = gens[rng.below(gens.len())];
                    r.sup.on_token(token(id, gen, Source::Exit));
                    format!("pidfd event {id}/{gen}")
                }
            }
            50..=59 => {
                let (c, reply) = r.send(Request::ServiceStop { name: name(n) });
                stopped.insert(n);
                if reply == Reply::Later {
                    held.insert(c, format!("stop {n}"));
                }
                format!("stop {n}")
            }
            60..=66 => {
                let (c, reply) = r.send(Request::ServiceRestart { name: name(n) });
                stopped.remove(n);
                if reply == Reply::Later {
                    held.insert(c, format!("restart {n}"));
                }
                format!("restart {n}")
            }
            67..=73 => {
                stopped.remove(n);
                r.send(Request::ServiceStart { name: name(n) });
                format!("start {n}")
            }
            74..=77 => {
                let open: Vec<ClientId> = held
                    .keys()
                    .copied()
                    .filter(|c| !gone.contains(c) && !r.answers.contains_key(c))
                    .collect();
                if let Some(c) = open.get(rng.below(open.len().max(1))) {
                    r.sup.client_gone(*c);
                    gone.insert(*c);
                    format!("client {c} gone")
                } else {
                    "no client".into()
                }
            }
            78..=84 => {
                // READY=1 or WATCHDOG=1 from any live process (its service's
                // or another's).
                let live: Vec<i32> = r
                    .os()
                    .procs
                    .iter()
                    .filter(|(_, p)| p.exit.is_none())
                    .map(|(pid, _)| *pid)
                    .collect();
                match live.get(rng.below(live.len().max(1))) {
                    Some(&pid) => {
                        let ready = rng.below(2) == 0;
                        r.sup.on_notify(
                            pid,
                            crate::notify::Notice {
                                ready,
                                watchdog: !ready,
                                status: None,
                            },
                        );
                        format!(
                            "pid {pid} says {}",
                            if ready { "READY" } else { "WATCHDOG" }
                        )
                    }
                    None => "no live process".into(),
                }
            }
            _ => {
                let ms = [0, 1, 50, 100, 999, 1000, 2000, 4000][rng.below(8)];
                r.advance(Duration::from_millis(ms));
                format!("advance {ms} ms")
            }
        };
        r.tick();
        log.push(what);
        let fail = |why: String, log: &[String]| -> ! {
            let tail: Vec<&String> = log.iter().rev().take(12).collect();
            panic!("seed {seed}, step {step}: {why}\nlast steps (newest first): {tail:#?}")
        };
        // Generations issued so far (for stale events later).
        for (id, s) in r.sup.table.iter() {
            if let Some(p) = s.proc_() {
                if !gens.contains(&(id, p.gen)) {
                    gens.push((id, p.gen));
                }
            }
        }
        let v = std::mem::take(&mut r.os().violations);
        if !v.is_empty() {
            fail(format!("{v:?}"), &log);
        }
        for n in NAMES {
            // At most one live process per service.
            if r.os().live_of(n) > 1 {
                fail(
                    format!("{n} has {} live processes", r.os().live_of(n)),
                    &log,
                );
            }
            // Down (inactive, failed, a oneshot done): nothing of it runs.
            let id = r.id(n);
            let down = r.sup.table.get(id).unwrap().state().down();
            if down && r.os().live_of(n) > 0 {
                fail(format!("{n} is {} with a live process", r.state(n)), &log);
            }
            let c = r.restarts(n);
            if c < counts.get(n).copied().unwrap_or(0) {
                fail(format!("restart_count of {n} went down"), &log);
            }
            counts.insert(n, c);
        }
        // Signals only to the current process of a service being stopped.
        let sent: Vec<(i32, Signal)> = r.os().signals[signals_before..].to_vec();
        for (pid, sig) in sent {
            let owner = r.os().procs.get(&pid).map(|p| p.service.clone());
            let ok = owner.as_deref().is_some_and(|o| {
                r.sup.table.id_of(o).is_some_and(|id| {
                    let s = r.sup.table.get(id).unwrap();
                    let current = s.proc_().map(|p| p.pid.as_raw()) == Some(pid);
                    // It may have obeyed and been reaped within the step.
                    current && *s.state() == State::Stopping || r.os().procs[&pid].reaped
                })
            });
            if !ok {
                fail(format!("{sig} sent to {pid} ({owner:?})"), &log);
            }
        }
        // A service stopped by request is not started again by policy.
        let spawned: Vec<String> = r
            .os()
            .procs
            .range(spawned_before + 1..)
            .map(|(_, p)| p.service.clone())
            .collect();
        spawned_before = r.os().next_pid;
        for s in spawned {
            if stopped.contains(s.as_str()) {
                fail(format!("{s} was started again after a stop request"), &log);
            }
        }
        // Each answer at most once.
        for (c, v) in &r.answers {
            if v.len() > 1 {
                fail(
                    format!("client {c} answered {} times: {v:?}", v.len()),
                    &log,
                );
            }
        }
    }
    // In the end every held request is answered exactly once (or its
    // client went away): let every process obey and time run out.
    for _ in 0..10 {
        let pids: Vec<i32> = r.os().procs.keys().copied().collect();
        for pid in pids {
            r.os().exit(pid, by(Signal::SIGTERM));
        }
        r.sup.on_sigchld();
        r.advance(Duration::from_secs(5));
    }
    for (c, what) in &held {
        let n = r.answers.get(c).map_or(0, Vec::len);
        let want = usize::from(!gone.contains(c));
        assert_eq!(
            n, want,
            "seed {seed}: client {c} ({what}) answered {n} times"
        );
    }
    assert!(r.sup.held.is_empty(), "seed {seed}: held answers left");
}

#[test]
fn random_schedules_keep_every_invariant() {
    // 1,000 schedules of 150 steps (INIT_SCHEDULES=N for more); a failing
    // seed is printed, and becomes a test of its own above.
    let n = std::env::var("INIT_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    for seed in 0..n {
        schedule(seed, 150);
    }
}

// ----- out of resources at spawn -------------------------------------------

impl Rig {
    fn reason(&self, name: &str) -> String {
        let s = self.sup.table.get(self.id(name)).unwrap();
        s.m().reason().unwrap_or_default()
    }
    /// How long until the machine's own deadline.
    fn due_in(&mut self, name: &str) -> Option<Duration> {
        let now = self.os().now();
        let s = self.sup.table.get(self.id(name)).unwrap();
        s.m().deadline().map(|d| d.saturating_duration_since(now))
    }
    fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

#[test]
fn a_spawn_without_fds_is_deferred_backs_off_and_counts_toward_nothing() {
    let extra =
        "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 3\nStartLimitIntervalSec = 1000";
    let mut r = rig(&[svc("s", extra)]);
    r.os().no_fds = true;
    r.exit("s", code(1));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "deferred");
    assert_eq!(r.reason("s"), "waiting for resources: Too many open files");
    assert_eq!(r.restarts("s"), 1, "the restart is counted once");
    assert_eq!(r.sup.table.get(r.id("s")).unwrap().m().runs(), 1);
    for want in [1, 2, 4, 8, 16, 30, 30, 30] {
        assert_eq!(r.due_in("s"), Some(Duration::from_secs(want)));
        r.advance(Duration::from_secs(want));
        assert_eq!(r.state("s"), "deferred");
    }
    assert_eq!(r.restarts("s"), 1);
    // Said once for the streak, in the service's log.
    assert_eq!(r.log_text("s").matches("waiting for resources").count(), 1);
    r.os().no_fds = false;
    r.advance(Duration::from_secs(30));
    assert_eq!(r.state("s"), "running");
    assert_eq!(r.restarts("s"), 1);
    assert_eq!(r.sup.table.get(r.id("s")).unwrap().m().runs(), 2);
    // Two starts in the window (boot, this one), not eleven: a crash now
    // is restarted, not a start-limit failure.
    r.exit("s", code(1));
    assert_eq!(r.state("s"), "auto-restart", "{}", r.reason("s"));
    // A new streak is said again.
    r.os().no_fds = true;
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "deferred");
    assert_eq!(r.due_in("s"), Some(Duration::from_secs(1)));
    assert_eq!(r.log_text("s").matches("waiting for resources").count(), 2);
    r.no_violations();
}

#[test]
fn a_first_start_without_fds_is_deferred_not_failed_whatever_the_policy() {
    let mut r = rig(&[svc("s", "Restart = \"no\"\nServiceEnable = false")]);
    assert_eq!(r.state("s"), "inactive");
    r.os().no_fds = true;
    let (_, reply) = r.send(Request::ServiceStart { name: name("s") });
    let Reply::Now(resp) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        err_text(&resp),
        "Service 's' could not start yet: waiting for resources: Too many open files; init tries again"
    );
    assert_eq!(r.state("s"), "deferred");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "deferred");
    r.os().no_fds = false;
    r.advance(Duration::from_secs(2));
    assert_eq!(r.state("s"), "running");
    assert_eq!(r.restarts("s"), 0);
    r.exit("s", code(0));
    assert_eq!(r.state("s"), "inactive");
    r.no_violations();
}

#[test]
fn a_manual_start_of_a_deferred_service_tries_at_once() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 1")]);
    r.os().no_fds = true;
    r.exit("s", code(1));
    for _ in 0..6 {
        let d = r.due_in("s").unwrap();
        r.advance(d);
    }
    assert_eq!(r.due_in("s"), Some(Duration::from_secs(30)));
    r.os().no_fds = false;
    let (_, reply) = r.send(Request::ServiceStart { name: name("s") });
    assert_eq!(
        reply,
        Reply::Now(Response::ok("Service 's' started".to_string()))
    );
    assert_eq!(r.state("s"), "running");
}

#[test]
fn a_dependent_waits_for_a_deferred_requirement_and_a_stop_ends_the_retries() {
    let mut r = rig(&[
        svc("db", "Restart = \"no\""),
        svc(
            "api",
            "Restart = \"no\"\nServiceEnable = false\nRequires = [\"db\"]\nAfter = [\"db\"]",
        ),
    ]);
    r.exit("db", code(0));
    assert_eq!(r.state("db"), "inactive");
    r.os().no_fds = true;
    r.send(Request::ServiceStart { name: name("api") });
    assert_eq!(r.state("db"), "deferred");
    assert_eq!(r.state("api"), "waiting");
    r.os().no_fds = false;
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("db"), "running");
    assert_eq!(r.state("api"), "running");
    // Deferred again, then stopped: no more retries.
    r.os().obey_term.insert(name("api"));
    r.os().obey_term.insert(name("db"));
    r.send(Request::ServiceStop { name: name("db") });
    for _ in 0..2 {
        r.sup.on_sigchld(); // api, then db
        r.tick();
    }
    assert_eq!(r.state("db"), "inactive");
    r.os().no_fds = true;
    r.send(Request::ServiceStart { name: name("db") });
    assert_eq!(r.state("db"), "deferred");
    let (c, _) = r.send(Request::ServiceStop { name: name("db") });
    assert_eq!(ok_text(r.answer(c).unwrap()), "Service 'db' stopped");
    assert_eq!(r.state("db"), "inactive");
    assert_eq!(r.due_in("db"), None);
    r.os().no_fds = false;
    r.advance(Duration::from_secs(60));
    assert_eq!(r.state("db"), "inactive");
    r.no_violations();
}

#[test]
fn shutdown_with_a_deferred_service_finishes() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 1")]);
    r.os().no_fds = true;
    r.exit("s", code(1));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("s"), "deferred");
    r.sup.begin_ending(Ending::PowerOff);
    r.tick();
    assert_eq!(r.state("s"), "inactive");
    assert_eq!(r.sup.finished(), Some(Ending::PowerOff));
}

#[test]
fn a_restart_deferred_for_lack_of_fds_says_so_when_it_is_late() {
    let mut r = rig(&[svc("s", "Restart = \"no\"")]);
    r.os().obey_term.insert(name("s"));
    r.os().no_fds = true;
    let (c, reply) = r.send(Request::ServiceRestart { name: name("s") });
    assert_eq!(reply, Reply::Later);
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("s"), "deferred");
    r.advance(REPLY_WAIT);
    assert_eq!(
        err_text(r.answer(c).unwrap()),
        "Service 's' could not start yet: waiting for resources: Too many open files; init tries again"
    );
    r.no_violations();
}

// ----- service types, readiness and end actions ----------------------------

fn ready(r: &mut Rig, name: &str) {
    let pid = r.pid(name).unwrap();
    r.sup.on_notify(
        pid,
        crate::notify::Notice {
            ready: true,
            ..Default::default()
        },
    );
    r.tick();
}

/// A oneshot runs to completion and is `exited`; what requires it starts
/// only then, and does not start if it failed.
#[test]
fn a_oneshot_runs_before_what_requires_it() {
    let mut r = rig(&[
        svc("keys", "Type = \"oneshot\""),
        svc("app", "Requires = [\"keys\"]\nAfter = [\"keys\"]"),
    ]);
    assert_eq!(r.state("keys"), "starting");
    assert_eq!(r.state("app"), "waiting");
    assert!(r.pid("app").is_none());
    r.exit("keys", code(0));
    assert_eq!(r.state("keys"), "exited");
    assert_eq!(r.state("app"), "running");
    // Stopping what requires it leaves the oneshot done; a manual start of
    // it does not run it again, a restart does.
    let (_, reply) = r.send(Request::ServiceStart { name: name("keys") });
    let Reply::Now(a) = reply else {
        panic!("{reply:?}")
    };
    assert!(ok_text(&a).contains("already run"), "{a:?}");
    assert!(r.pid("keys").is_none());
    r.send(Request::ServiceRestart { name: name("keys") });
    assert_eq!(r.state("keys"), "starting");

    let mut r = rig(&[
        svc("keys", "Type = \"oneshot\""),
        svc("app", "Requires = [\"keys\"]"),
    ]);
    r.exit("keys", code(1));
    assert_eq!(r.state("keys"), "failed");
    assert_eq!(r.state("app"), "failed");
    let why = r.reason("app");
    assert!(why.contains("required service 'keys' failed"), "{why}");
    r.no_violations();
}

/// A notify service is `starting` until READY=1 from its own processes;
/// `start` is answered once it is ready; what is ordered after it (After
/// alone, no Requires) waits for it.
#[test]
fn a_notify_service_is_up_once_ready() {
    let mut r = rig(&[
        svc("db", "Type = \"notify\"\nServiceEnable = false"),
        svc("web", "After = [\"db\"]\nServiceEnable = false"),
    ]);
    let (c, reply) = r.send(Request::ServiceStart { name: name("db") });
    assert_eq!(reply, Reply::Later);
    assert_eq!(r.state("db"), "starting");
    let (_, wr) = r.send(Request::ServiceStart { name: name("web") });
    assert_eq!(r.state("web"), "waiting");
    let Reply::Now(wr) = wr else { panic!("{wr:?}") };
    assert!(ok_text(&wr).contains("waiting for db"), "{wr:?}");
    assert!(r.answer(c).is_none());
    // A stranger's READY=1 is not believed; one from the service's group is.
    r.sup.on_notify(
        4242,
        crate::notify::Notice {
            ready: true,
            status: Some("lies".into()),
            ..Default::default()
        },
    );
    r.tick();
    assert_eq!(r.state("db"), "starting");
    let leader = r.pid("db").unwrap();
    r.os().groups.insert(777, leader);
    r.sup.on_notify(
        777,
        crate::notify::Notice {
            ready: true,
            status: Some("serving".into()),
            ..Default::default()
        },
    );
    r.tick();
    assert_eq!(r.state("db"), "running");
    assert!(ok_text(r.answer(c).unwrap()).contains("started"));
    assert_eq!(r.state("web"), "running");
    let st = r.sup.status(r.id("db")).unwrap();
    assert_eq!(st.status_text.as_deref(), Some("serving"));
    assert_eq!(st.service_type, "notify");
    let ev = r.event_lines();
    let at = |l: &str| ev.iter().position(|e| e == l);
    assert!(
        at("state db starting>running") < at("ready db") && at("ready db").is_some(),
        "{ev:?}"
    );
}

/// Not ready within TimeoutStartSec: stopped (stop signal, then SIGKILL)
/// and counted as a failure for Restart.
#[test]
fn a_notify_service_not_ready_in_time_is_stopped_and_failed() {
    let mut r = rig(&[svc(
        "db",
        "Type = \"notify\"\nTimeoutStartSec = 5\nRestart = \"on-failure\"\nRestartSec = 1",
    )]);
    let pid = r.pid("db").unwrap();
    r.advance(Duration::from_secs(4));
    assert_eq!(r.state("db"), "starting");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("db"), "stopping");
    assert!(r.os().signals.contains(&(pid, Signal::SIGTERM)));
    r.exit("db", by(Signal::SIGTERM));
    assert_eq!(r.state("db"), "auto-restart");
    let why = r.reason("db");
    assert!(why.contains("not ready within 5s"), "{why}");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("db"), "starting");
    assert_eq!(r.restarts("db"), 1);
    r.no_violations();
}

/// A restarted notify service stopped by its start timeout: the restart's
/// answer waits for the exit and says why (it said the old run's "killed
/// by SIGTERM" as soon as the stop began).
#[test]
fn a_restart_not_ready_in_time_says_so() {
    let mut r = rig(&[svc("db", "Type = \"notify\"\nTimeoutStartSec = 2")]);
    r.os().obey_term.insert(name("db"));
    ready(&mut r, "db");
    let (c, _) = r.send(Request::ServiceRestart { name: name("db") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("db"), "starting");
    r.advance(Duration::from_secs(2));
    assert!(r.answer(c).is_none(), "{:?}", r.answer(c));
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("db"), "failed");
    let msg = err_text(r.answer(c).unwrap()).to_string();
    assert!(msg.contains("not ready within 2s"), "{msg}");
}

/// Found by an adversarial review (adv6): the same, with a stop that
/// outlasts the answer's wait: the late answer gave the old run's exit.
#[test]
fn a_restart_not_ready_in_time_and_slow_to_stop_says_why() {
    let mut r = rig(&[svc(
        "db",
        "Type = \"notify\"\nTimeoutStartSec = 2\nTimeoutStopSec = 10",
    )]);
    ready(&mut r, "db");
    let old = r.pid("db").unwrap();
    let (c, _) = r.send(Request::ServiceRestart { name: name("db") });
    r.os().exit(old, by(Signal::SIGTERM));
    r.sup.on_sigchld();
    r.tick();
    r.advance(Duration::from_secs(2));
    assert_eq!(r.state("db"), "stopping");
    assert!(
        r.reason("db").contains("not ready within 2s"),
        "{}",
        r.reason("db")
    );
    r.advance(REPLY_WAIT);
    let msg = err_text(r.answer(c).unwrap()).to_string();
    assert!(msg.contains("not ready within 2s"), "{msg}");
}

/// Once ready, WATCHDOG=1 must come within WatchdogSec: a miss aborts the
/// service (SIGABRT, SIGKILL at the stop timeout) and is a failure.
#[test]
fn a_missed_watchdog_aborts_the_service() {
    let mut r = rig(&[svc(
        "db",
        "Type = \"notify\"\nWatchdogSec = 3\nTimeoutStopSec = 2",
    )]);
    ready(&mut r, "db");
    let pid = r.pid("db").unwrap();
    for _ in 0..3 {
        r.advance(Duration::from_secs(2));
        r.sup.on_notify(
            pid,
            crate::notify::Notice {
                watchdog: true,
                ..Default::default()
            },
        );
        r.tick();
    }
    assert_eq!(r.state("db"), "running");
    r.advance(Duration::from_secs(3));
    assert_eq!(r.state("db"), "stopping");
    assert_eq!(
        r.os().signals,
        vec![(pid, Signal::SIGABRT), (pid, Signal::SIGCONT)]
    );
    r.advance(Duration::from_secs(2));
    assert!(r.os().signals.contains(&(pid, Signal::SIGKILL)));
    r.exit_pid(pid);
    assert_eq!(r.state("db"), "failed");
    let why = r.reason("db");
    assert!(why.contains("watchdog timeout"), "{why}");
    r.no_violations();
}

/// KillSignal is what a stop sends.
#[test]
fn kill_signal_is_the_stop_signal() {
    let mut r = rig(&[svc("a", "KillSignal = \"SIGINT\"")]);
    let pid = r.pid("a").unwrap();
    r.send(Request::ServiceStop { name: name("a") });
    assert_eq!(
        r.os().signals,
        vec![(pid, Signal::SIGINT), (pid, Signal::SIGCONT)]
    );
}

/// FailureAction/SuccessAction end the system when the service ends for
/// good on its own; a stop by a user does not, nor does a run that is
/// restarted.
#[test]
fn end_actions_shut_down_when_the_service_ends_for_good() {
    let mut r = rig(&[svc(
        "main",
        "FailureAction = \"poweroff\"\nRestart = \"on-failure\"\nRestartSec = 1\nStartLimitBurst = 2",
    )]);
    r.exit("main", code(3));
    assert!(r.sup.ending.is_none(), "restarted, not ended");
    r.advance(Duration::from_secs(1));
    r.exit("main", code(3));
    assert_eq!(r.state("main"), "failed");
    assert_eq!(r.sup.ending, Some(Ending::PowerOff));

    let mut r = rig(&[svc("job", "Type = \"oneshot\"\nSuccessAction = \"reboot\"")]);
    r.exit("job", code(0));
    assert_eq!(r.sup.ending, Some(Ending::Reboot));

    let mut r = rig(&[svc(
        "main",
        "SuccessAction = \"poweroff\"\nFailureAction = \"poweroff\"",
    )]);
    r.os().obey_term.insert("main".into());
    r.send(Request::ServiceStop { name: name("main") });
    r.sup.on_sigchld();
    r.tick();
    assert_eq!(r.state("main"), "inactive");
    assert!(r.sup.ending.is_none());
}

// ----- events (what a sequence of decisions emits) --------------------------

impl Rig {
    /// Every event kept so far, as one short line each: `kind service
    /// from>to` for state changes, `kind service` otherwise.
    fn event_lines(&self) -> Vec<String> {
        self.sup
            .events
            .after(0)
            .iter()
            .map(|e| {
                let svc = e.service.as_deref().unwrap_or("-");
                match (e.from.as_deref(), e.to.as_deref()) {
                    (Some(f), Some(t)) => format!("{} {svc} {f}>{t}", e.kind),
                    _ => format!("{} {svc}", e.kind),
                }
            })
            .collect()
    }
    fn events_after(&self, seq: u64) -> Vec<shared::protocol::Event> {
        self.sup.events.after(seq)
    }
}

#[test]
fn a_start_stop_crash_restart_sequence_emits_each_change_in_order() {
    let mut r = rig(&[svc(
        "s",
        "Restart = \"on-failure\"\nRestartSec = 1\nServiceEnable = false",
    )]);
    let at_boot = r.event_lines();
    assert_eq!(at_boot, vec!["boot-finished -"], "nothing enabled");
    r.send(Request::ServiceStart { name: name("s") });
    let pid = r.pid("s").unwrap();
    r.os().obey_term.insert(name("s"));
    r.send(Request::ServiceStop { name: name("s") });
    r.sup.on_sigchld();
    r.send(Request::ServiceStart { name: name("s") });
    r.exit("s", code(3));
    r.advance(Duration::from_secs(1));
    r.send(Request::ServiceRestart { name: name("s") });
    r.sup.on_sigchld();
    r.advance(RESTART_GRACE);
    assert_eq!(
        r.event_lines(),
        vec![
            "boot-finished -",
            "state s inactive>running",
            "state s running>stopping",
            "state s stopping>inactive",
            "state s inactive>running",
            "state s running>auto-restart",
            "state s auto-restart>running",
            "state s running>stopping",
            "state s stopping>inactive",
            "state s inactive>running",
        ]
    );
    let all = r.events_after(0);
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    // The first run: its pid; its end by SIGTERM; the crash: code 3, the
    // reason, the restart counted when it starts again.
    assert_eq!(all[1].pid, Some(pid as u32));
    assert_eq!(all[3].pid, Some(pid as u32));
    assert_eq!(all[3].signal.as_deref(), Some("SIGTERM"));
    assert_eq!(all[3].exit_code, None);
    assert_eq!(all[5].exit_code, Some(3));
    assert_eq!(all[5].reason.as_deref(), Some("exited with code 3"));
    assert_eq!(all[6].restart_count, Some(1));
    assert!(all.iter().all(|e| e.time.ends_with('Z')));
}

#[test]
fn followers_of_events_get_each_new_one_and_the_kept_ones_since() {
    let mut r = rig(&[svc("s", "")]);
    let (c, reply) = r.send(Request::Events { since: None });
    assert_eq!(reply, Reply::Stream(vec![]));
    let last = r.sup.events.last_seq();
    r.sup.request(c, &ROOT, Request::Ping);
    r.exit("s", code(0));
    // Rig::tick keeps answers only: look at what it dropped by hand.
    r.sup.begin_ending(Ending::PowerOff);
    let out = r.sup.take_out();
    let got: Vec<(Vec<ClientId>, String)> = out
        .into_iter()
        .filter_map(|o| match o {
            Out::Broadcast(to, Response::Event { event }) => Some((to, event.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![(vec![c], "shutdown".to_string())]);
    // Reconnecting since `last`: the exit, then the shutdown, nothing lost.
    let (c2, reply) = r.send(Request::Events { since: Some(last) });
    let Reply::Stream(first) = reply else {
        panic!("{reply:?}")
    };
    let kinds: Vec<String> = first
        .iter()
        .map(|e| match e {
            Response::Event { event } => format!("{} {}", event.seq, event.kind),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            format!("{} state", last + 1),
            format!("{} shutdown", last + 2)
        ]
    );
    r.sup.client_gone(c);
    r.sup.client_gone(c2);
    r.sup.final_event();
    assert!(r.sup.take_out().is_empty(), "no follower left");
    assert_eq!(r.event_lines().last().unwrap(), "final -");
}

impl Rig {
    fn boot_finished(&self) -> Vec<shared::protocol::Event> {
        self.events_after(0)
            .into_iter()
            .filter(|e| e.kind == "boot-finished")
            .collect()
    }
}

#[test]
fn boot_finished_once_all_is_up() {
    let mut r = rig(&[svc("ok", ""), svc("bad", "Restart = \"no\"")]);
    let boot = r.boot_finished();
    assert_eq!(boot.len(), 1);
    assert!(boot[0].services.is_empty(), "{:?}", boot[0]);
    // Once only.
    r.exit("bad", code(1));
    r.tick();
    assert_eq!(r.boot_finished().len(), 1);
}

#[test]
fn boot_finished_waits_for_what_waits_and_names_what_did_not_come_up() {
    let dep = "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 2";
    let mut r = rig_failing(
        &[
            svc("ok", ""),
            svc("dep", dep),
            svc("app", "Requires = [\"dep\"]"),
        ],
        &["run dep"],
    );
    // dep failed to start and will try again: app waits, boot has not
    // settled.
    assert_eq!(r.state("app"), "waiting");
    assert!(r.boot_finished().is_empty());
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state("dep"), "failed");
    let boot = r.boot_finished();
    assert_eq!(boot.len(), 1);
    let names: Vec<(&str, &str)> = boot[0]
        .services
        .iter()
        .map(|n| (n.name.as_str(), n.state.as_str()))
        .collect();
    assert_eq!(names, vec![("app", "failed"), ("dep", "failed")]);
    assert!(boot[0].services[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("start limit hit"));
}

#[test]
fn a_crash_loop_ends_in_a_start_limit_event() {
    let mut r = rig(&[svc(
        "s",
        "Restart = \"always\"\nRestartSec = 1\nStartLimitBurst = 2\nStartLimitIntervalSec = 10",
    )]);
    r.exit("s", code(1));
    r.advance(Duration::from_secs(1));
    r.exit("s", code(1));
    let lines = r.event_lines();
    assert_eq!(
        &lines[lines.len() - 2..],
        ["state s running>failed", "start-limit s"]
    );
    let e = r.events_after(0).pop().unwrap();
    assert!(e.reason.unwrap().starts_with("start limit hit"));
}

#[test]
fn enable_disable_and_reload_results_are_events() {
    let mut r = rig(&[svc("s", "")]);
    r.send(Request::ServiceDisable { name: name("s") });
    r.send(Request::ServiceDisable { name: name("nope") });
    r.send(Request::SystemReload);
    r.send(Request::ServiceEnable {
        name: name("s"),
        now: false,
    });
    let results: Vec<(String, Option<String>, Option<bool>)> = r
        .events_after(0)
        .into_iter()
        .filter(|e| e.kind != "state" && e.kind != "boot-finished")
        .map(|e| (e.kind, e.service, e.ok))
        .collect();
    assert_eq!(
        results,
        vec![
            ("disable".into(), Some(name("s")), Some(true)),
            ("disable".into(), Some(name("nope")), Some(false)),
            ("reload".into(), None, Some(true)),
            ("enable".into(), Some(name("s")), Some(true)),
        ]
    );
}

#[test]
fn metrics_show_each_service_and_a_read_only_peer_may_ask() {
    let mut r = rig(&[svc("s", "Restart = \"always\"\nRestartSec = 0")]);
    r.exit("s", code(1));
    let ro = crate::access::Who {
        role: crate::access::Role::ReadOnly,
        ..ROOT
    };
    let Reply::Now(Response::Metrics { text }) = r.sup.request(9, &ro, Request::Metrics) else {
        panic!("no metrics")
    };
    assert!(
        text.contains("enclave_init_service_restarts_total{service=\"s\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("enclave_init_service_last_exit_status{service=\"s\"} 1\n"));
    assert!(text.contains("enclave_init_service_up{service=\"s\"} 1\n"));
    assert!(text.contains("enclave_init_service_state{service=\"s\",state=\"running\"} 1\n"));
    let reply = r.sup.request(9, &ro, Request::Events { since: Some(0) });
    assert!(matches!(reply, Reply::Stream(v) if !v.is_empty()));
}

/// A flood of orphans cannot flood init.log (a service making 950 a
/// second rotated the audit lines out in under 10 s): the first few in a
/// 10 s window get a line each, the rest one summary line when the window
/// ends (the timer is armed for it), and all of them the metric.
#[test]
fn orphan_lines_are_rate_limited_with_a_count() {
    let mut r = rig(&[]);
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = lines.clone();
    crate::console::set_sink(Box::new(move |l| sink.borrow_mut().push(l.to_string())));
    let orphan = |r: &mut Rig| {
        let os = r.os();
        os.next_pid += 1;
        let p = FakeProc {
            service: String::new(),
            exit: Some(code(0)),
            reaped: false,
        };
        os.procs.insert(os.next_pid, p);
        r.sup.on_sigchld();
        r.tick();
    };
    let count = |what: &str| lines.borrow().iter().filter(|l| l.contains(what)).count();
    let t0 = r.os().now();
    // 1,000 orphans in 5 s.
    for _ in 0..1000 {
        orphan(&mut r);
        r.advance(Duration::from_millis(5));
    }
    let first: Vec<String> = lines.borrow().iter().take(12).cloned().collect();
    assert_eq!(count("reaped orphan"), 10, "{first:?}");
    assert_eq!(count("more orphans"), 0);
    assert_eq!(r.sup.next_deadline(), Some(t0 + Duration::from_secs(10)));
    r.advance(Duration::from_secs(5));
    let summary = "[info] reaped 990 more orphans in the last 10 s (1000 in all)";
    assert_eq!(count(summary), 1, "{:?}", lines.borrow());
    assert_eq!(r.sup.next_deadline(), None);
    // The next one opens a new window.
    orphan(&mut r);
    assert_eq!(count("reaped orphan"), 11);
    let Reply::Now(Response::Metrics { text }) = r.sup.request(9, &ROOT, Request::Metrics) else {
        panic!("no metrics")
    };
    assert!(
        text.contains("\nenclave_init_orphans_reaped_total 1001\n"),
        "{text}"
    );
    crate::console::set_sink(Box::new(|_| {}));
}

/// Orphans counted in a window that has not ended when init ends get
/// their summary line before the last event, not never.
#[test]
fn orphans_in_the_last_window_are_summed_up_at_the_end() {
    let mut r = rig(&[]);
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = lines.clone();
    crate::console::set_sink(Box::new(move |l| sink.borrow_mut().push(l.to_string())));
    for _ in 0..25 {
        let os = r.os();
        os.next_pid += 1;
        let p = FakeProc {
            service: String::new(),
            exit: Some(code(0)),
            reaped: false,
        };
        os.procs.insert(os.next_pid, p);
        r.sup.on_sigchld();
        r.advance(Duration::from_millis(100));
    }
    let count = |what: &str| lines.borrow().iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("more orphans"), 0, "the window has not ended");
    r.sup.final_event();
    let summary = "[info] reaped 15 more orphans in the last 2 s (25 in all)";
    assert_eq!(count(summary), 1, "{:?}", lines.borrow());
    crate::console::set_sink(Box::new(|_| {}));
}
