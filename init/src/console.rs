//! init's own messages: to stderr (the console when PID 1) and, once the
//! log directory is known, to `<log_dir>/init.log` through the log module.

use std::cell::RefCell;
use std::fmt::Arguments;
#[cfg(not(test))]
use std::io::Write;

/// Where init's messages go besides stderr.
type Sink = Box<dyn FnMut(&str)>;

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

/// Route every later message also to `sink` (init.log).
pub fn set_sink(sink: Sink) {
    SINK.with(|s| *s.borrow_mut() = Some(sink));
}

pub fn write(level: &str, args: Arguments) {
    let line = format!("init: {level}: {args}");
    // Unit tests: through the test harness's capture, not straight to fd 2.
    #[cfg(test)]
    eprintln!("{line}");
    #[cfg(not(test))]
    let _ = writeln!(std::io::stderr(), "{line}");
    SINK.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(f) = s.as_mut() {
                f(&format!("[{level}] {args}"));
            }
        }
    });
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::console::write("info", format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::console::write("warn", format_args!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::console::write("error", format_args!($($t)*)) } }

/// From now on also write init's messages to `<log_dir>/init.log`.
pub fn open_init_log(settings: &crate::logs::LogSettings) {
    let _ = std::fs::create_dir_all(&settings.dir);
    let settings = settings.clone();
    let mut log = crate::logs::ServiceLog::new("init");
    set_sink(Box::new(move |line| {
        let mut out = Vec::new();
        log.event(&settings, line, &mut out);
    }));
}
