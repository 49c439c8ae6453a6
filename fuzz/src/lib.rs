//! The fuzz targets' view of init: init is a binary crate, so the modules
//! under test are compiled here from init's own source files (`#[path]`),
//! not from copies. `sys` below (init's own sys/regular.rs plus `read`)
//! and the console macros are the shims: those files name nothing else of
//! init.
//!
//! Also the checks two targets share (the ExecStart splitter's properties).
#![allow(dead_code)]
// `Conn::next` is a fine name inside init; here it is a public method.
#![allow(clippy::should_implement_trait)]

/// init's console macros, printing to stderr.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { eprintln!($($t)*) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { eprintln!($($t)*) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { eprintln!($($t)*) } }

#[path = "../../init/src/access.rs"]
pub mod access;
#[path = "../../init/src/config.rs"]
pub mod config;
#[path = "../../init/src/control.rs"]
pub mod control;
#[path = "../../init/src/logs/mod.rs"]
pub mod logs;
#[path = "../../init/src/unit.rs"]
pub mod unit;
#[path = "../../init/src/users.rs"]
pub mod users;

/// `logs/pipe.rs` reads a service's pipe through `crate::sys::read`;
/// init's sys.rs brings the whole process layer with it. No target reads
/// a pipe; this is the same one-line body as init's.
#[path = "../../init/src/sys/regular.rs"]
mod regular;

mod sys {
    pub use crate::regular::*;

    pub fn read(fd: &std::os::fd::OwnedFd, buf: &mut [u8]) -> nix::Result<usize> {
        nix::unistd::read(fd, buf)
    }
}

/// Split `s` as ExecStart and check what must hold of the result:
/// non-empty on success, never more characters out than in, no expansion
/// (without quotes or backslashes it is `split_whitespace`), and quoting
/// each word back (single or double quotes) splits into the same words.
pub fn check_split(s: &str) -> Result<Vec<String>, String> {
    let r = unit::split_command(s);
    let plain = !s.contains(['\'', '"', '\\']);
    match &r {
        Ok(argv) => {
            assert!(!argv.is_empty(), "Ok with no words for {s:?}");
            let out: usize = argv.iter().map(|a| a.chars().count()).sum();
            assert!(out <= s.chars().count(), "{s:?} grew into {argv:?}");
            if plain {
                let want: Vec<&str> = s.split_whitespace().collect();
                assert_eq!(argv, &want, "{s:?}");
            }
            for quoted in [quote_single(argv), quote_double(argv)] {
                assert_eq!(
                    unit::split_command(&quoted).as_ref(),
                    Ok(argv),
                    "{s:?} -> {argv:?} -> {quoted:?}"
                );
            }
        }
        Err(e) => {
            assert!(
                [
                    "unbalanced single quote",
                    "unbalanced double quote",
                    "trailing backslash",
                    "empty command",
                ]
                .contains(&e.as_str()),
                "{e}"
            );
            if plain {
                assert_eq!(e, "empty command", "{s:?}");
                assert!(s.split_whitespace().next().is_none(), "{s:?}");
            }
        }
    }
    r
}

/// `'a'\''b'` style.
fn quote_single(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    words.join(" ")
}

/// `"a\"b"` style: `\` before each of `" \ $ ``.
fn quote_double(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| {
            let mut w = String::from('"');
            for c in a.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    w.push('\\');
                }
                w.push(c);
            }
            w.push('"');
            w
        })
        .collect();
    words.join(" ")
}
