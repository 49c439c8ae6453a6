//! `init`: PID 1 for enclaves. One thread, one mio loop.
#![no_main]
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
mod logs;

#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    boot::ensure_stdio();
    0
}
