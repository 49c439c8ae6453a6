//! Containment by cgroup2: each service runs in a cgroup of its own, so a
//! process that leaves the service's process group (`setsid`, `setpgid`)
//! is still found, counted and killed. This module owns the layout and
//! every access to cgroupfs:
//!
//! ```text
//! <cgroup2 mount><init's cgroup>/init-<pid>[-<n>]/   the tree of this init
//!                                  <name>.service/   one per service
//! ```
//!
//! The mount is the `cgroup2` entry of /proc/self/mountinfo
//! (/sys/fs/cgroup/unified on a hybrid layout, /sys/fs/cgroup on a unified
//! one); init's cgroup is the `0::` line of /proc/self/cgroup. The tree is
//! made at the first start (an init that starts nothing leaves nothing
//! behind, even when killed) with the first free name, so inits sharing a
//! cgroup (tests, PID 1s of sibling PID namespaces) each get their own.
//! init itself stays where it was started: no controller is enabled in the
//! tree, so cgroup2's "no internal processes" rule does not come into it.
//!
//! Where `Tree::find` or `Tree::create` fails (no cgroup2, no permission,
//! read-only) init keeps containment by process group alone, and status
//! says so.

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rounds of "read cgroup.procs, SIGKILL every new pid" where there is no
/// cgroup.kill: enough to catch what forks while it is being killed.
const KILL_ROUNDS: usize = 16;
/// How long the exit clean-up waits for killed cgroups to empty.
const CLEANUP_WAIT: Duration = Duration::from_secs(1);

/// This init's cgroup tree.
pub struct Tree {
    /// init's own cgroup, where the tree goes.
    base: PathBuf,
    /// The tree, once created.
    dir: Option<PathBuf>,
    /// cgroup.kill exists (Linux 5.14 and later).
    kill_file: bool,
}

impl Tree {
    /// Find cgroup2 and init's cgroup in it (the tree is made later, by
    /// `create`). `INIT_NO_CGROUPS` set: behave as if there were no cgroup2
    /// (tests); `INIT_NO_CGROUP_KILL` set: as if there were no cgroup.kill.
    pub fn find() -> Result<Tree, String> {
        if std::env::var_os("INIT_NO_CGROUPS").is_some() {
            return Err("INIT_NO_CGROUPS is set".into());
        }
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        let own = own_cgroup(&own).ok_or("no cgroup2 entry (0::) in /proc/self/cgroup")?;
        let base = locate(&cgroup2_mounts(&mountinfo), own)
            .ok_or_else(|| format!("no cgroup2 mount holds init's cgroup {own}"))?;
        if !base.join("cgroup.procs").exists() {
            return Err(format!("{} is not a cgroup2 directory", base.display()));
        }
        Ok(Tree {
            base,
            dir: None,
            kill_file: false,
        })
    }

    /// Create the tree if it is not there yet: true when it was made now.
    pub fn create(&mut self) -> Result<bool, String> {
        if self.dir.is_some() {
            return Ok(false);
        }
        let pid = std::process::id();
        let mut last = String::new();
        for n in 1..=100 {
            let name = match n {
                1 => format!("init-{pid}"),
                n => format!("init-{pid}-{n}"),
            };
            let dir = self.base.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    self.kill_file = dir.join("cgroup.kill").exists()
                        && std::env::var_os("INIT_NO_CGROUP_KILL").is_none();
                    self.dir = Some(dir);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = format!("{} exists", dir.display());
                }
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
            }
        }
        Err(format!("no free name for init's cgroup: {last}"))
    }

    /// The tree; None before `create`.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn has_kill(&self) -> bool {
        self.kill_file
    }

    /// The cgroup of service `name` (a valid service name: no `/`, no `..`;
    /// the suffix keeps it clear of cgroupfs's own file names); None
    /// before `create`.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{name}.service")))
    }

    /// Before a start (after `create`): create the service's cgroup if
    /// needed and kill what is still in it (a start never runs next to a
    /// leftover). Returns the number killed and the cgroup.procs path for
    /// the child to join.
    pub fn prepare(&self, name: &str) -> Result<(usize, CString), String> {
        let cg = self.path(name).ok_or("init's cgroup tree is not created")?;
        let left = match std::fs::create_dir(&cg) {
            // Just made: nothing can be in it yet.
            Ok(()) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => count(&cg).unwrap_or(0),
            Err(e) => return Err(format!("cannot create cgroup {}: {e}", cg.display())),
        };
        if left > 0 {
            self.kill(name);
        }
        let procs = cg.join("cgroup.procs");
        let procs = CString::new(procs.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("cgroup path {} holds a NUL", cg.display()))?;
        Ok((left, procs))
    }

    /// SIGKILL everything in the service's cgroup. Asynchronous: the
    /// processes die soon after, never waited for here.
    pub fn kill(&self, name: &str) {
        if let Some(cg) = self.path(name) {
            kill_cgroup(&cg, self.kill_file);
        }
    }

    /// Processes in the service's cgroup; None when it has none yet.
    pub fn count(&self, name: &str) -> Option<usize> {
        count(&self.path(name)?)
    }

    /// Remove the service's cgroup if it is empty: false while it still
    /// has processes (EBUSY), true when it is gone.
    pub fn remove(&self, name: &str) -> bool {
        let Some(cg) = self.path(name) else {
            return true;
        };
        match std::fs::remove_dir(&cg) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => false,
            Err(e) => {
                warn!("cannot remove cgroup {}: {e}", cg.display());
                true
            }
        }
    }

    /// At exit: kill what is left in every service cgroup, wait a little
    /// for them to empty, remove them and the tree.
    pub fn remove_all(&self) {
        let Some(dir) = &self.dir else { return };
        let subs: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        };
        for cg in &subs {
            if count(cg).unwrap_or(0) > 0 {
                kill_cgroup(cg, self.kill_file);
            }
        }
        let until = Instant::now() + CLEANUP_WAIT;
        let mut left = subs;
        loop {
            left.retain(|cg| std::fs::remove_dir(cg).is_err() && cg.exists());
            if left.is_empty() || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for cg in &left {
            warn!("cgroup {} is not empty; left in place", cg.display());
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// The number of processes in a cgroup (lines of cgroup.procs).
fn count(cg: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(cg.join("cgroup.procs")).ok()?;
    Some(text.lines().filter(|l| !l.is_empty()).count())
}

/// SIGKILL a whole cgroup: by cgroup.kill, else by signalling every pid in
/// cgroup.procs, again while new ones appear (bounded). Without
/// cgroup.kill a pid may in principle be recycled between reading and
/// killing it, as with any pid-based kill; cgroup.kill has no such gap.
fn kill_cgroup(cg: &Path, kill_file: bool) {
    if kill_file && std::fs::write(cg.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let mut seen = BTreeSet::new();
    for _ in 0..KILL_ROUNDS {
        let Ok(text) = std::fs::read_to_string(cg.join("cgroup.procs")) else {
            return;
        };
        let new: Vec<i32> = text
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 0 && seen.insert(*p))
            .collect();
        if new.is_empty() {
            return;
        }
        for p in new {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// init's cgroup2 path from a /proc/self/cgroup text: the `0::` line.
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The cgroup2 mounts of a mountinfo text: (root inside the hierarchy,
/// mount point), in order.
fn cgroup2_mounts(mountinfo: &str) -> Vec<(String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split(' ');
            let root = f.nth(3)?;
            let point = f.next()?;
            Some((unescape(root), PathBuf::from(unescape(point))))
        })
        .collect()
}

/// The directory of cgroup `own` under the first mount whose root holds it.
fn locate(mounts: &[(String, PathBuf)], own: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|(root, point)| {
        let rest = if root == "/" {
            own
        } else {
            own.strip_prefix(root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))?
        };
        let rest = rest.trim_start_matches('/');
        Some(if rest.is_empty() {
            point.clone()
        } else {
            point.join(rest)
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (c, oct) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_cgroup2_mount_and_init_s_cgroup() {
        let m = cgroup2_mounts(HYBRID);
        assert_eq!(m, vec![("/".into(), "/sys/fs/cgroup/unified".into())]);
        let own = own_cgroup("4:memory:/x\n0::/\n").unwrap();
        assert_eq!(locate(&m, own), Some("/sys/fs/cgroup/unified".into()));
        let own = own_cgroup("0::/user.slice/s-1.scope\n").unwrap();
        assert_eq!(
            locate(&m, own),
            Some("/sys/fs/cgroup/unified/user.slice/s-1.scope".into())
        );
        assert_eq!(own_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn a_mount_of_a_subtree_holds_only_what_is_under_it() {
        let text = "50 1 0:40 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = cgroup2_mounts(text);
        assert_eq!(
            locate(&m, "/docker/abc/init"),
            Some("/sys/fs/cgroup/init".into())
        );
        assert_eq!(locate(&m, "/docker/abc"), Some("/sys/fs/cgroup".into()));
        assert_eq!(locate(&m, "/docker/abcd"), None);
        assert_eq!(locate(&m, "/other"), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let text = "50 1 0:40 / /mnt/a\\040b\\134c rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mounts(text)[0].1, PathBuf::from("/mnt/a b\\c"));
        assert_eq!(unescape("\\12"), "\\12");
        assert_eq!(unescape("x\\"), "x\\");
    }
}
