//! Loading `init.yaml`: `--config` > `INIT_CONFIG` > `/etc/init.yaml` >
//! built-in defaults. A file that is not YAML is one clear error; init
//! carries on with defaults. A bad value for one key is an error naming the
//! key, which takes its default; the file's other keys are kept. Unknown
//! keys are warnings. The file is read as a plain file
//! (a symlink is followed) of at most `unit::MAX_FILE_BYTES`: a FIFO or a
//! device is an error, never waited on.

use shared::config::{InitConfig, INIT_CONFIG_KEYS};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/init.yaml";

/// Which file to read: the explicit one, else `INIT_CONFIG`, else the default.
pub fn choose_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("INIT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

pub struct Loaded {
    pub config: InitConfig,
    /// The file the config came from, if one was read.
    pub source: Option<PathBuf>,
    pub warnings: Vec<String>,
    /// Each said once: the file could not be used at all (then `source` is
    /// None and defaults apply), or a key's value was bad (that key has its
    /// default).
    pub errors: Vec<String>,
}

pub fn load(path: &Path) -> Loaded {
    let mut out = Loaded {
        config: InitConfig::default(),
        source: None,
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let text = match crate::unit::read_file(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.warnings.push(format!(
                "{}: not found, using built-in defaults",
                path.display()
            ));
            return out;
        }
        Err(e) => {
            out.errors.push(format!(
                "{}: cannot read: {e}; using built-in defaults",
                path.display()
            ));
            return out;
        }
    };
    match parse(&text) {
        Ok(Parsed {
            config,
            unknown,
            bad,
        }) => {
            out.config = config;
            out.source = Some(path.to_path_buf());
            for k in unknown {
                out.warnings
                    .push(format!("{}: unknown key '{k}' ignored", path.display()));
            }
            for e in bad {
                out.errors
                    .push(format!("{}: {e}; using its default", path.display()));
            }
        }
        Err(e) => out
            .errors
            .push(format!("{}: {e}; using built-in defaults", path.display())),
    }
    out
}

#[derive(Debug)]
pub struct Parsed {
    pub config: InitConfig,
    /// Unknown keys, dotted (`control.bogus`).
    pub unknown: Vec<String>,
    /// `key: why` for each key whose value was bad (it has its default).
    pub bad: Vec<String>,
}

/// Parse init.yaml text key by key. An error only when the text is not
/// YAML, is nested too deep to parse (`shared::config::MAX_YAML_NESTING`)
/// or is not a mapping.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let value = shared::config::yaml_value(text)?;
    let mut unknown = Vec::new();
    collect_unknown(&value, "", &mut unknown);
    let (config, bad) = shared::config::from_yaml_by_key(&value)?;
    Ok(Parsed {
        config,
        unknown,
        bad,
    })
}

fn collect_unknown(v: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    let Some(map) = v.as_mapping() else { return };
    for (k, child) in map {
        let key = match k.as_str() {
            Some(s) if prefix.is_empty() => s.to_string(),
            Some(s) => format!("{prefix}.{s}"),
            None => format!("{prefix}.{k:?}"),
        };
        if !INIT_CONFIG_KEYS.contains(&key.as_str()) {
            out.push(key);
        } else if key != "environment" {
            collect_unknown(child, &key, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let Parsed {
            config: c, unknown, ..
        } = parse("service_dir: /s\ncontrol:\n  vsock_port: 7\n  bogus: 1\nextra: x\n").unwrap();
        assert_eq!(c.service_dir, "/s");
        assert_eq!(c.log_dir, "/log");
        assert_eq!(c.control.vsock_port, 7);
        assert_eq!(c.control.unix_socket_path, "/run/init.sock");
        assert_eq!(
            unknown,
            vec!["control.bogus".to_string(), "extra".to_string()]
        );
        let c = parse("# only a comment\n").unwrap().config;
        assert_eq!(c, InitConfig::default());
        let c = parse("nsm_driver_path: null\nenvironment:\n  A: b\n")
            .unwrap()
            .config;
        assert_eq!(c.nsm_driver_path, None);
        assert_eq!(c.environment.get("A").map(String::as_str), Some("b"));
    }

    #[test]
    fn errors_name_the_key_or_the_line() {
        let p = parse("service_dir: /s\nmax_log_size: lots\n").unwrap();
        assert_eq!(p.config.service_dir, "/s");
        assert_eq!(p.bad.len(), 1);
        assert!(p.bad[0].starts_with("max_log_size: "), "{:?}", p.bad);
        let e = parse("a: [\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
    }
}
