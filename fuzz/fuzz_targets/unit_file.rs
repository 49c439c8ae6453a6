//! The service-file parser on arbitrary text (what `scan` does with a
//! file's contents), and name validation on its first line (what `scan`
//! does with a file name).
#![no_main]

use init_fuzz::unit::{parse, unit_path, validate_name};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok((def, warnings)) => {
            // ExecStart is what the splitter makes of it.
            assert!(!def.exec_start.trim().is_empty());
            assert_eq!(
                init_fuzz::check_split(&def.exec_start),
                Ok(def.argv.clone())
            );
            for (k, _) in &def.environment {
                assert!(!k.is_empty() && !k.contains('='), "{k:?}");
            }
            for w in &warnings {
                assert!(w.starts_with("unknown key '"), "{w}");
            }
        }
        // One message, no longer than the clipped parser error or the
        // text it quotes.
        Err(e) => assert!(!e.is_empty() && e.len() <= 500 + text.len(), "{e}"),
    }

    // A valid name keeps the file inside the service directory.
    let name = text.lines().next().unwrap_or("");
    if validate_name(name).is_ok() {
        let dir = Path::new("/service");
        for enabled in [true, false] {
            let p = unit_path(dir, name, enabled);
            assert_eq!(p.parent(), Some(dir), "{name:?}");
            assert!(p.components().all(|c| matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )));
        }
        assert!(name != "init" && !name.contains(".."));
    }
});
