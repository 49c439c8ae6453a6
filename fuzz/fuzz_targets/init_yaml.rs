//! The init.yaml loader on arbitrary text (`load` is `read_to_string`
//! plus this `parse`).
#![no_main]

use init_fuzz::config::parse;
use libfuzzer_sys::fuzz_target;
use shared::config::INIT_CONFIG_KEYS;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(p) => {
            let unknown = p.unknown;
            // Unknown keys are reported as unknown, at most one per byte.
            assert!(unknown.len() <= text.len());
            for k in &unknown {
                assert!(!INIT_CONFIG_KEYS.contains(&k.as_str()), "{k}");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
