//! The ExecStart splitter on arbitrary text: see `check_split` for what
//! must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = init_fuzz::check_split(&String::from_utf8_lossy(data));
});
