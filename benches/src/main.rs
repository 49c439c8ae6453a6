//! The benchmark: the real release `init` against s6, runit and
//! supervisord and against physical floors, in one run, one table.
//!
//! `cargo run --release -p benches -- [--quick] [--json PATH] [--only LIST]
//! [--no-install] [--keep]`. Needs gcc (the C helpers and floors are
//! compiled at run time); installs missing peers with `benches/setup` when
//! run as root. Figures are medians over repeated runs, with min and max.

mod figures;
mod procs;
mod report;
mod stats;
mod sup;

use figures::{Ctx, Tools};
use std::path::{Path, PathBuf};
use std::process::Command;
use sup::{Bins, Kind};

const HELP: &str = "\
benches - init against s6, runit, supervisord and the physical floors

Usage: cargo run --release -p benches -- [OPTIONS]

Options:
  --quick         short runs (under a minute once built)
  --json PATH     also write the table as JSON
  --only LIST     comma-separated: size,idle,restart,log,latency,life
  --no-install    do not run benches/setup for missing peers
  --keep          keep the work directory
  -h, --help
";

const FIGURES: &[&str] = &["size", "idle", "restart", "log", "latency", "life"];

const C_SOURCES: &[(&str, &str)] = &[
    ("stamp", include_str!("../c/stamp.c")),
    ("noop", include_str!("../c/noop.c")),
    ("lines", include_str!("../c/lines.c")),
    ("ticker", include_str!("../c/ticker.c")),
    ("parent", include_str!("../c/parent.c")),
    ("echo", include_str!("../c/echo.c")),
];

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

fn installed(kind: Kind) -> bool {
    kind.programs().iter().all(|p| on_path(p))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
}

/// Build init and initctl (release, dynamic) and the static trio.
fn build(root: &Path) -> Result<Option<PathBuf>, String> {
    eprintln!("benches: cargo build --release -p init -p initctl");
    let ok = cargo()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "init",
            "-p",
            "initctl",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("cargo build --release -p init -p initctl failed".into());
    }
    eprintln!("benches: static build (RUSTFLAGS=-C target-feature=+crt-static, --target x86_64-unknown-linux-gnu)");
    let target_dir = root.join("target/static");
    let ok = cargo()
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "init",
            "-p",
            "initctl",
            "-p",
            "benches",
            "--bin",
            "init",
            "--bin",
            "initctl",
            "--bin",
            "hello",
        ])
        .status()
        .is_ok_and(|s| s.success());
    Ok(ok.then(|| target_dir.join("x86_64-unknown-linux-gnu/release")))
}

fn compile_helpers(dir: &Path) -> Result<Tools, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (name, src) in C_SOURCES {
        let c = dir.join(format!("{name}.c"));
        std::fs::write(&c, src).map_err(|e| e.to_string())?;
        let ok = Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(dir.join(name))
            .arg(&c)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "gcc -static could not build {name}.c (install gcc and libc6-dev)"
            ));
        }
    }
    let p = |n: &str| dir.join(n);
    Ok(Tools {
        stamp: p("stamp"),
        noop: p("noop"),
        lines: p("lines"),
        ticker: p("ticker"),
        parent: p("parent"),
        echo: p("echo"),
    })
}

/// Raise the open-files limit to the hard one (1000 pidfds, supervisord's minfds).
fn raise_nofile() {
    let mut r = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn main() {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return;
    }
    let quick = args.contains("--quick");
    let no_install = args.contains("--no-install");
    let keep = args.contains("--keep");
    let json: Option<PathBuf> = args.opt_value_from_str("--json").unwrap_or_else(|e| {
        eprintln!("benches: --json: {e}");
        std::process::exit(2)
    });
    let only: Option<String> = args.opt_value_from_str("--only").unwrap_or(None);
    let rest = args.finish();
    if !rest.is_empty() {
        eprintln!("benches: unexpected arguments {rest:?}\n{HELP}");
        std::process::exit(2);
    }
    let want: Vec<&str> = match &only {
        Some(l) => l.split(',').collect(),
        None => FIGURES.to_vec(),
    };
    if let Some(bad) = want.iter().find(|w| !FIGURES.contains(w)) {
        eprintln!(
            "benches: --only: unknown figure '{bad}' (known: {})",
            FIGURES.join(",")
        );
        std::process::exit(2);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();

    // Peers: install the missing ones (as root), report the rest as missing.
    if !no_install && sup::PEERS.iter().any(|&k| !installed(k)) {
        eprintln!("benches: installing missing peers with benches/setup");
        let _ = Command::new(root.join("benches/setup")).status();
    }
    let peers: Vec<Kind> = sup::PEERS
        .iter()
        .copied()
        .filter(|&k| installed(k))
        .collect();
    for k in sup::PEERS.iter().filter(|k| !peers.contains(k)) {
        eprintln!(
            "benches: {} is not installed: reported as missing",
            k.name()
        );
    }

    let static_dir = match build(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("benches: {e}");
            std::process::exit(1);
        }
    };
    if static_dir.is_none() {
        eprintln!("benches: the static build failed: static rows are reported as failed");
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    raise_nofile();
    let tag = format!("enclave-bench-{}", std::process::id());
    let work = work_root().join(&tag);
    // The helpers on the temp dir's filesystem: /dev/shm may be noexec.
    let bin_dir = std::env::temp_dir().join(format!("{tag}-bin"));
    let tools = match compile_helpers(&bin_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("benches: {e}");
            std::process::exit(1);
        }
    };
    let bins = Bins {
        init: root.join("target/release/init"),
        initctl: root.join("target/release/initctl"),
        initctl_static: static_dir.as_ref().map(|d| d.join("initctl")),
    };
    let ctx = Ctx {
        quick,
        work: work.clone(),
        tools,
        bins,
        peers,
        seq: std::cell::Cell::new(0),
    };
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    for fig in FIGURES.iter().filter(|f| want.contains(f)) {
        match *fig {
            "size" => rows.extend(figures::sizes(&root, static_dir.as_deref())),
            "idle" => rows.extend(figures::idle_and_status(&ctx)),
            "restart" => rows.extend(figures::restart_gap(&ctx)),
            "log" => rows.extend(figures::log_throughput(&ctx)),
            "latency" => rows.extend(figures::log_latency(&ctx)),
            "life" => rows.extend(figures::lifecycle(&ctx)),
            _ => {}
        }
    }
    procs::kill_all_below_us();
    let secs = started.elapsed().as_secs_f64();
    let names: Vec<&str> = sup::PEERS.iter().map(|k| k.name()).collect();
    println!(
        "enclave-init benchmarks ({}; {secs:.0} s; medians with (min-max); preliminary on a shared machine)\n",
        if quick { "--quick" } else { "full" }
    );
    print!("{}", report::table(&rows, &names));
    let notes: Vec<String> = rows
        .iter()
        .filter(|r| !r.note.is_empty())
        .map(|r| format!("- {}: {}", r.figure, r.note))
        .collect();
    if !notes.is_empty() {
        println!("\n{}", notes.join("\n"));
    }
    for r in &rows {
        for (name, c) in std::iter::once(("init", &r.init))
            .chain(r.peers.iter().map(|(n, c)| (*n, c)))
            .chain(std::iter::once(("floor", &r.floor)))
        {
            if let report::Cell::Failed(why) = c {
                println!("- {} / {name}: failed: {why}", r.figure);
            }
        }
    }
    if let Some(path) = json {
        let meta = serde_json::json!({
            "quick": quick,
            "work_dir": work.display().to_string(),
            "seconds": secs,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "peers_missing": sup::PEERS.iter().filter(|k| !ctx.peers.contains(k)).map(|k| k.name()).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&report::to_json(&rows, meta)).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("benches: cannot write {}: {e}", path.display());
        }
    }
    println!(
        "\nwork directory (services, logs, stamps): {}",
        work.display()
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_dir_all(&bin_dir);
    }
}

/// Where the supervisors run and write their logs: a tmpfs (/dev/shm)
/// where there is one, as an enclave's root is in RAM; else the temp dir.
/// On a disk the harness's own clean-up between runs skewed the figures:
/// ext4 passes over inodes freed in the last minute when it allocates,
/// so after a run of 1,000 services was deleted the next supervisor's
/// 1,000 log files took over a second to create, whoever came next.
fn work_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
    if tmpfs && writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
