//! `init`: PID 1 for enclaves. One thread, one mio loop.
//!
//! `#![no_main]`: the Rust runtime's start-up aborts when fds 0-2 are closed
//! and /dev/null is missing, which is how a bare kernel may start PID 1.
//! Not under `cfg(test)`: there the test harness must provide `main`, or the
//! unit-test binary would run init itself (and never exit).
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

mod boot;
#[macro_use]
mod console;
mod access;
mod cgroup;
mod check;
mod clients;
mod config;
mod control;
mod events;
mod graph;
mod logs;
mod metrics;
mod notify;
mod os;

mod reactor;
mod service;
mod spawn;
mod supervisor;
mod sys;
mod unit;
mod users;

use std::path::PathBuf;

/// sysexits.h EX_USAGE: a bad command line (init outside PID 1 only).
const EXIT_USAGE: i32 = 64;

const HELP: &str = "\
init - PID 1 and service supervisor for enclaves

Usage: init [OPTIONS]

Options:
  -c, --config <PATH>  init.yaml to use (default: $INIT_CONFIG, then /etc/init.yaml);
                       outside PID 1 a missing PATH exits 64
      --check          validate the config and every service file, print the
                       start order and every problem, start nothing
  -h, --help           show this help
  -V, --version        show the version
";

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    boot::ensure_stdio();
    if let Err(e) = sys::block_signals() {
        error!("cannot block signals: {e}");
    }
    let r = std::panic::catch_unwind(run);
    if sys::is_pid1() {
        // Only reached after a bug: PID 1 exiting would panic the kernel.
        error!("internal error in init's start-up");
        boot::finish(false)
    }
    r.unwrap_or_else(|_| {
        error!("internal error in init's start-up");
        1
    })
}

fn run() -> i32 {
    let mut args = pico_args::Arguments::from_env();
    let pid1 = sys::is_pid1();
    let help = args.contains(["-h", "--help"]);
    let version = args.contains(["-V", "--version"]);
    let check = args.contains("--check");
    if pid1 && (help || version || check) {
        // PID 1 must not exit: boot as usual.
        warn!("ignoring -h/-V/--check: running as PID 1");
    } else if help {
        print!("{HELP}");
        return 0;
    } else if version {
        println!("init {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let explicit: Option<PathBuf> = match args.opt_value_from_str(["-c", "--config"]) {
        Ok(p) => p,
        Err(e) => {
            warn!("{e}; ignoring it");
            None
        }
    };
    // The kernel hands PID 1 its leftover command-line words: never fatal.
    for word in args.finish() {
        warn!("ignoring unknown argument {:?}", word);
    }
    // Outside PID 1 an explicit file that is not there is a mistake worth
    // stopping for (EX_USAGE); PID 1 warns and carries on with defaults.
    if let Some(p) = explicit.as_deref().filter(|p| !pid1 && !p.exists()) {
        error!("{}: no such file (given with -c)", p.display());
        return EXIT_USAGE;
    }
    let path = config::choose_path(explicit.as_deref());
    if check && !pid1 {
        return check::run(&path);
    }
    let mut loaded = load_config(&path);
    if pid1 {
        if boot::boot(&loaded.config) {
            // After the root switch: the new root's /etc/init.yaml, if any.
            let new_root = PathBuf::from(config::DEFAULT_PATH);
            if new_root.exists() {
                loaded = load_config(&new_root);
            }
            boot::after_switch(&loaded.config);
        }
    } else {
        info!(
            "not PID 1 (pid {}): skipping boot duties",
            std::process::id()
        );
        if let Err(e) = sys::set_subreaper() {
            warn!("cannot become a child subreaper: {e}");
        }
    }
    let cfg = loaded.config;
    let source = loaded.source.unwrap_or(path);
    console::open_init_log(&supervisor::log_settings(&cfg));
    let mut sup = match reactor::Reactor::new(cfg, source) {
        Ok(s) => s,
        Err(reactor::SetupError::SocketInUse(e)) => {
            error!("{e}; not starting any service: exiting");
            return idle_forever(pid1);
        }
        Err(reactor::SetupError::Io(e)) => {
            error!("cannot set up the event loop: {e}");
            return idle_forever(pid1);
        }
    };
    sup.boot();
    let ending = sup.run();
    sup.final_cleanup();
    if pid1 {
        boot::finish(ending == supervisor::Ending::Reboot)
    }
    info!("exiting");
    0
}

fn load_config(path: &std::path::Path) -> config::Loaded {
    let loaded = config::load(path);
    for w in &loaded.warnings {
        warn!("{w}");
    }
    for e in &loaded.errors {
        error!("{e}");
    }
    loaded
}

/// Without an event loop there is nothing to supervise; PID 1 must still
/// not exit.
fn idle_forever(pid1: bool) -> i32 {
    if !pid1 {
        return 1;
    }
    loop {
        std::thread::park();
    }
}
