//! The supervisors under test: how each is configured for the same job,
//! started, asked for status and stopped. Each is set up the way its own
//! documentation recommends: s6 and runit with a run script and a logger
//! per service (`s6-log t n5 s10000000`, `svlogd -tt` with `s10000000` and
//! `n5`), supervisord with its own rotation (10MB, 5 backups), init with
//! its defaults plus the same rotation.

use crate::procs;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    S6,
    Runit,
    Supervisor,
}

pub const PEERS: [Kind; 3] = [Kind::S6, Kind::Runit, Kind::Supervisor];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Init => "init",
            Kind::S6 => "s6",
            Kind::Runit => "runit",
            Kind::Supervisor => "supervisor",
        }
    }

    /// The programs the peer needs (all must be on PATH).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Init => &[],
            Kind::S6 => &["s6-svscan", "s6-supervise", "s6-log", "s6-svstat"],
            Kind::Runit => &["runsvdir", "runsv", "svlogd", "sv"],
            Kind::Supervisor => &["supervisord", "supervisorctl"],
        }
    }

    /// Process names that count as the supervisor (not the services).
    fn comms(self) -> &'static [&'static str] {
        match self {
            Kind::Init => &["init"],
            Kind::S6 => &["s6-svscan", "s6-supervise", "s6-log"],
            Kind::Runit => &["runsvdir", "runsv", "svlogd"],
            Kind::Supervisor => &["supervisord"],
        }
    }

    /// How many supervisor processes run once `n` services are up.
    pub fn expected_procs(self, n: usize) -> usize {
        match self {
            Kind::Init | Kind::Supervisor => 1,
            // s6-svscan, an s6-supervise for each service and for its logger, the s6-log.
            Kind::S6 => 1 + 3 * n,
            // runsvdir, one runsv (service and logger) and one svlogd each.
            Kind::Runit => 1 + 2 * n,
        }
    }
}

/// Where the binaries are.
pub struct Bins {
    pub init: PathBuf,
    pub initctl: PathBuf,
    pub initctl_static: Option<PathBuf>,
}

pub struct Svc {
    pub name: String,
    pub argv: Vec<String>,
    /// Restart at once whenever it exits; otherwise never restart.
    pub restart: bool,
}

pub struct Inst {
    pub kind: Kind,
    pub dir: PathBuf,
    pub child: Child,
    pub pid: i32,
    /// CLOCK_MONOTONIC just before the spawn, ns.
    pub t_exec: i64,
}

pub fn mono_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

fn script(path: &Path, body: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

fn quote_sh(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// init.yaml and one `.service` file each.
pub fn init_config(dir: &Path, svcs: &[Svc]) -> String {
    let mut units = Vec::new();
    for s in svcs {
        let exec = s
            .argv
            .iter()
            .map(|a| a.replace('\\', "\\\\").replace('"', "\\\""))
            .collect::<Vec<_>>()
            .join(" ");
        let restart = if s.restart { "always" } else { "no" };
        units.push((
            format!("{}.service", s.name),
            format!(
                "ExecStart = \"{exec}\"\nRestart = \"{restart}\"\nRestartSec = 0\nStartLimitBurst = 4000000000\n"
            ),
        ));
    }
    let d = dir.display();
    let yaml = format!(
        "service_dir: {d}/svc\nlog_dir: {d}/log\ncontrol: {{ unix_socket_path: {d}/init.sock }}\n\
         max_log_size: 10485760\nmax_log_files: 5\nvsock: {{ enabled: false }}\n\
         nsm_driver_path: null\npivot_root: false\n"
    );
    let _ = fs::create_dir_all(dir.join("svc"));
    for (name, text) in units {
        let _ = fs::write(dir.join("svc").join(name), text);
    }
    yaml
}

pub fn supervisord_config(dir: &Path, svcs: &[Svc]) -> String {
    let d = dir.display();
    let minfds = (svcs.len() * 4 + 200).max(1024);
    let mut c = format!(
        "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
         [supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
         childlogdir={d}/log\nloglevel=warn\nminfds={minfds}\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
    );
    for s in svcs {
        let cmd = s.argv.join(" ");
        let _ = write!(
            c,
            "\n[program:{n}]\ncommand={cmd}\nautostart=true\nautorestart={r}\nstartsecs=0\n\
             startretries=1000000\nredirect_stderr=true\nstdout_logfile={d}/log/{n}.log\n\
             stdout_logfile_maxbytes=10MB\nstdout_logfile_backups=5\nstopsignal=TERM\n",
            n = s.name,
            r = s.restart
        );
    }
    c
}

/// Write the supervisor's configuration for these services into `dir`.
pub fn configure(kind: Kind, dir: &Path, svcs: &[Svc]) -> io::Result<()> {
    fs::create_dir_all(dir.join("log"))?;
    match kind {
        Kind::Init => fs::write(dir.join("init.yaml"), init_config(dir, svcs))?,
        Kind::Supervisor => fs::write(dir.join("supervisord.conf"), supervisord_config(dir, svcs))?,
        Kind::S6 | Kind::Runit => {
            for s in svcs {
                let sd = dir.join("svc").join(&s.name);
                fs::create_dir_all(sd.join("log"))?;
                let logdir = dir.join("log").join(&s.name);
                fs::create_dir_all(&logdir)?;
                script(
                    &sd.join("run"),
                    &format!("exec 2>&1\nexec {}", quote_sh(&s.argv)),
                )?;
                // Both restart a service whose run script exits (`restart`
                // is not expressible); one-shot helpers wait instead (-w).
                let logger = if kind == Kind::S6 {
                    format!("exec s6-log t n5 s10000000 {}", logdir.display())
                } else {
                    fs::write(logdir.join("config"), "s10000000\nn5\n")?;
                    format!("exec svlogd -tt {}", logdir.display())
                };
                script(&sd.join("log").join("run"), &logger)?;
            }
            fs::create_dir_all(dir.join("svc"))?;
        }
    }
    Ok(())
}

/// Configure and start. The supervisor's own output goes to `dir/sup.out`.
pub fn launch(kind: Kind, bins: &Bins, dir: &Path, svcs: &[Svc]) -> io::Result<Inst> {
    configure(kind, dir, svcs)?;
    let d = dir.to_path_buf();
    let mut cmd = match kind {
        Kind::Init => {
            let mut c = Command::new(&bins.init);
            c.arg("-c").arg(d.join("init.yaml"));
            c
        }
        Kind::S6 => {
            // -c: room for every service and its logger (default 500).
            let mut c = Command::new("s6-svscan");
            c.arg("-c")
                .arg((2 * svcs.len() + 10).max(500).to_string())
                .arg(d.join("svc"));
            c
        }
        Kind::Runit => {
            let mut c = Command::new("runsvdir");
            c.arg(d.join("svc"));
            c
        }
        Kind::Supervisor => {
            let mut c = Command::new("supervisord");
            c.arg("-c").arg(d.join("supervisord.conf"));
            c
        }
    };
    let out = fs::File::create(d.join("sup.out"))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let t_exec = mono_ns();
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    Ok(Inst {
        kind,
        dir: d,
        child,
        pid,
        t_exec,
    })
}

impl Inst {
    /// Pids of the supervisor's own processes (root, supervisors, loggers).
    pub fn sup_pids(&self) -> Vec<i32> {
        let map = procs::all();
        procs::descendants(&map, self.pid)
            .into_iter()
            .filter(|p| {
                map.get(p)
                    .is_some_and(|i| i.state != 'Z' && self.kind.comms().contains(&i.comm.as_str()))
            })
            .collect()
    }

    /// Wait until `n` services' worth of supervisor processes run.
    pub fn wait_procs(&self, n: usize, limit: Duration) -> bool {
        let want = self.kind.expected_procs(n);
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.sup_pids().len() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("init.sock")
    }

    /// The signal that stops every service and the supervisor. runsvdir
    /// exits on SIGTERM and leaves its services running; SIGHUP is the one
    /// that sends TERM to each runsv first (runsvdir(8)).
    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self.kind {
            Kind::Runit => Signal::SIGHUP,
            _ => Signal::SIGTERM,
        }
    }

    /// The command that asks about one service.
    pub fn status_cmd(&self, bins: &Bins, svc: &str, static_ctl: bool, ping: bool) -> Command {
        match self.kind {
            Kind::Init => {
                let ctl = match (&bins.initctl_static, static_ctl) {
                    (Some(p), true) => p.clone(),
                    _ => bins.initctl.clone(),
                };
                let mut c = Command::new(ctl);
                c.arg("-s").arg(self.sock());
                if ping {
                    c.arg("ping");
                } else {
                    c.args(["status", svc]);
                }
                c
            }
            Kind::S6 => {
                let mut c = Command::new("s6-svstat");
                c.arg(self.dir.join("svc").join(svc));
                c
            }
            Kind::Runit => {
                let mut c = Command::new("sv");
                c.arg("status").arg(self.dir.join("svc").join(svc));
                c
            }
            Kind::Supervisor => {
                let mut c = Command::new("supervisorctl");
                c.arg("-c")
                    .arg(self.dir.join("supervisord.conf"))
                    .args(["status", svc]);
                c
            }
        }
    }

    /// The files a service's newest log lines are in: the current file and
    /// the most recently rotated one.
    pub fn log_files(&self, svc: &str) -> Vec<PathBuf> {
        let log = self.dir.join("log");
        match self.kind {
            Kind::Init => vec![
                log.join(format!("{svc}.log")),
                log.join(format!("{svc}.log.1")),
            ],
            Kind::Supervisor => vec![
                log.join(format!("{svc}.log")),
                log.join(format!("{svc}.log.1")),
            ],
            Kind::S6 | Kind::Runit => {
                let d = log.join(svc);
                let mut v = vec![d.join("current")];
                let newest = fs::read_dir(&d).ok().and_then(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with('@'))
                        })
                        .max()
                });
                v.extend(newest);
                v
            }
        }
    }

    /// Kill whatever is left of it and reap.
    pub fn cleanup(mut self) {
        let map = procs::all();
        for p in procs::descendants(&map, self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
        procs::kill_all_below_us();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, restart: bool) -> Svc {
        Svc {
            name: name.into(),
            argv: vec!["/bin/x".into(), "a b".into()],
            restart,
        }
    }

    #[test]
    fn init_files_have_restart_policy_and_no_delay() {
        let dir = std::env::temp_dir().join(format!("benches-unit-{}", std::process::id()));
        let yaml = init_config(&dir, &[svc("a", true)]);
        assert!(yaml.contains("max_log_size: 10485760") && yaml.contains("pivot_root: false"));
        let unit = fs::read_to_string(dir.join("svc/a.service")).unwrap();
        assert!(unit.contains("Restart = \"always\"") && unit.contains("RestartSec = 0"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn supervisord_gets_rotation_and_restart() {
        let c = supervisord_config(Path::new("/w"), &[svc("a", false)]);
        assert!(c.contains("[program:a]") && c.contains("autorestart=false"));
        assert!(
            c.contains("stdout_logfile_maxbytes=10MB") && c.contains("stdout_logfile_backups=5")
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(quote_sh(&["a".into(), "it's".into()]), r"'a' 'it'\''s'");
        assert_eq!(Kind::S6.expected_procs(10), 31);
    }
}
