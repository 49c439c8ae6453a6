//! `init.yaml` and `initctl.yaml`, with the seed's defaults.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitConfig {
    pub service_dir: String,
    pub log_dir: String,
    pub control: ControlConfig,
    pub max_log_size: u64,
    pub max_log_files: u32,
    pub environment: BTreeMap<String, String>,
    pub vsock: HeartbeatConfig,
    pub nsm_driver_path: Option<String>,
    pub pivot_root: bool,
    pub pivot_root_dir: String,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            service_dir: "/service".into(),
            log_dir: "/log".into(),
            control: ControlConfig::default(),
            max_log_size: 10 * 1024 * 1024,
            max_log_files: 5,
            environment: BTreeMap::new(),
            vsock: HeartbeatConfig::default(),
            nsm_driver_path: Some("nsm.ko".into()),
            pivot_root: true,
            pivot_root_dir: "/rootfs".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlConfig {
    pub unix_socket_enabled: bool,
    pub unix_socket_path: String,
    pub vsock_enabled: bool,
    pub vsock_cid: u32,
    pub vsock_port: u32,
    /// Peer CIDs the VSOCK listener accepts; everyone else is refused at
    /// accept. `[]` refuses everyone.
    pub vsock_allowed_cids: Vec<u32>,
    /// VSOCK peers may only read (ping, list, status, logs).
    pub vsock_read_only: bool,
    /// The socket file's mode: an octal string (`"0660"`) or an integer.
    pub unix_socket_mode: SocketMode,
    /// The socket file's group: a gid or a name from /etc/group.
    pub unix_socket_group: Option<Group>,
    /// Unix peers admitted besides uid 0 and init's own uid.
    pub unix_allowed_uids: Vec<u32>,
    /// Unix peers admitted by group (primary or supplementary).
    pub unix_allowed_gids: Vec<u32>,
    /// Unix peers that may only read, whatever else admits them.
    pub unix_read_only_uids: Vec<u32>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            unix_socket_enabled: true,
            unix_socket_path: "/run/init.sock".into(),
            vsock_enabled: false,
            vsock_cid: 3,
            vsock_port: 9001,
            // The host as a QEMU/Firecracker guest sees it; the parent
            // instance as a Nitro enclave sees it.
            vsock_allowed_cids: vec![2, 3],
            vsock_read_only: true,
            unix_socket_mode: SocketMode(0o600),
            unix_socket_group: None,
            unix_allowed_uids: Vec::new(),
            unix_allowed_gids: Vec::new(),
            unix_read_only_uids: Vec::new(),
        }
    }
}

/// A file mode, at most 0777. YAML reads `0660` unquoted as the string
/// "0660", which is taken as octal; an integer is the mode itself
/// (`0o660` or 432), so a decimal `660` (over 0777) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Serialize for SocketMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        let bad = |what: String| {
            serde::de::Error::custom(format!(
                "unix_socket_mode: {what} is not a file mode from 0000 to 0777 (write it as an octal string, e.g. \"0660\")"
            ))
        };
        let mode = match Raw::deserialize(d)? {
            Raw::Int(n) => u32::try_from(n)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| bad(format!("{n} (octal {n:o})")))?,
            Raw::Text(t) => u32::from_str_radix(t.strip_prefix("0o").unwrap_or(&t), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| bad(format!("{t:?}")))?,
        };
        Ok(SocketMode(mode))
    }
}

/// A group given by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Group {
    Id(u32),
    Name(String),
}

/// The one-time readiness heartbeat to the parent (`vsock:` in init.yaml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatConfig {
    pub enabled: bool,
    pub cid: u32,
    pub port: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            enabled: true,
            cid: 3,
            port: 9000,
        }
    }
}

/// Every key init.yaml may hold, dotted, for unknown-key warnings.
pub const INIT_CONFIG_KEYS: &[&str] = &[
    "service_dir",
    "log_dir",
    "control",
    "control.unix_socket_enabled",
    "control.unix_socket_path",
    "control.vsock_enabled",
    "control.vsock_cid",
    "control.vsock_port",
    "control.vsock_allowed_cids",
    "control.vsock_read_only",
    "control.unix_socket_mode",
    "control.unix_socket_group",
    "control.unix_allowed_uids",
    "control.unix_allowed_gids",
    "control.unix_read_only_uids",
    "max_log_size",
    "max_log_files",
    "environment",
    "vsock",
    "vsock.enabled",
    "vsock.cid",
    "vsock.port",
    "nsm_driver_path",
    "pivot_root",
    "pivot_root_dir",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Unix,
    Vsock,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitctlConfig {
    pub protocol: Protocol,
    pub unix_socket_path: String,
    pub vsock_cid: u32,
    pub vsock_port: u32,
}

impl Default for InitctlConfig {
    fn default() -> Self {
        InitctlConfig {
            protocol: Protocol::Unix,
            unix_socket_path: "/run/init.sock".into(),
            vsock_cid: 3,
            vsock_port: 9001,
        }
    }
}

/// Largest init.yaml, initctl.yaml or service file read: 64 KiB. Parsed
/// YAML and TOML take 80-160 times the memory of their text (1 MiB of
/// `a,` in a list took 161 MiB), so this keeps any file under about 10 MiB
/// while parsed; a real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// Deepest nesting of `[` and `{` a YAML file may have. YAML's scanner
/// takes time in the square of the depth before serde_yaml's recursion
/// limit (128) refuses it: 6 s at 40,000 levels (release), 50 s at 100,000 (debug).
/// Nothing in init.yaml or initctl.yaml nests more than two deep.
pub const MAX_YAML_NESTING: usize = 64;

/// Parse YAML text, first refusing text nested deeper than
/// [`MAX_YAML_NESTING`]. An error gives the line (and column) where known.
pub fn yaml_value(text: &str) -> Result<serde_yaml::Value, String> {
    check_nesting(text)?;
    serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })
}

/// Every `[` and `{` opens a level and every `]` and `}` closes one,
/// wherever they are, in quotes and comments too: telling those apart as
/// YAML does would take a second YAML scanner, and counting too many only
/// refuses a file with dozens of unclosed brackets in its strings.
fn check_nesting(text: &str) -> Result<(), String> {
    let (mut depth, mut line) = (0usize, 1usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_NESTING {
                    return Err(format!(
                        "line {line}: nested deeper than {MAX_YAML_NESTING} levels of [ and {{ \
                         (brackets in strings and comments count too)"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    Ok(())
}

/// A config read key by key from a YAML value: each key the file gives
/// replaces the default unless its value is bad, in which case the key
/// keeps its default and its error is returned (`key: why`, dotted for
/// nested keys such as `control.vsock_port`). So a typo in one key costs
/// that key only. Keys of nested sections (`control`, `vsock`) are taken
/// one by one too. Null means defaults; anything but a mapping is an error.
pub fn from_yaml_by_key<T>(file: &serde_yaml::Value) -> Result<(T, Vec<String>), String>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    use serde_yaml::Value;
    if file.is_null() {
        return Ok((T::default(), Vec::new()));
    }
    if !file.is_mapping() {
        return Err("expected a mapping of keys to values".into());
    }
    let mut acc = serde_yaml::to_value(T::default()).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    // (path into the value, value from the file), depth first, in file order.
    let mut leaves: Vec<(Vec<Value>, Value)> = Vec::new();
    collect_leaves(&acc, file, &mut Vec::new(), &mut leaves);
    for (path, value) in leaves {
        let mut trial = acc.clone();
        set_path(&mut trial, &path, value);
        match serde_yaml::from_value::<T>(trial.clone()) {
            Ok(_) => acc = trial,
            Err(e) => {
                let key: Vec<String> = path.iter().map(key_text).collect();
                let key = key.join(".");
                let e = e.to_string();
                // The error may already name the key (SocketMode's does).
                let last = key.rsplit('.').next().unwrap_or_default();
                let e = e
                    .strip_prefix(&format!("{last}: "))
                    .unwrap_or(&e)
                    .to_string();
                errors.push(format!("{key}: {e}"));
            }
        }
    }
    let config = serde_yaml::from_value(acc).map_err(|e| e.to_string())?;
    Ok((config, errors))
}

/// Put `value` at `path`, making mappings on the way where needed.
fn set_path(at: &mut serde_yaml::Value, path: &[serde_yaml::Value], value: serde_yaml::Value) {
    let Some((first, rest)) = path.split_first() else {
        *at = value;
        return;
    };
    if !at.is_mapping() {
        *at = serde_yaml::Value::Mapping(Default::default());
    }
    if let Some(map) = at.as_mapping_mut() {
        let slot = map.entry(first.clone()).or_insert(serde_yaml::Value::Null);
        set_path(slot, rest, value);
    }
}

fn key_text(k: &serde_yaml::Value) -> String {
    match k.as_str() {
        Some(s) => s.to_string(),
        None => format!("{k:?}"),
    }
}

/// Walk `file` alongside `defaults`: descend where both are mappings (a
/// section with fields of its own), else the file's value is one leaf.
fn collect_leaves(
    defaults: &serde_yaml::Value,
    file: &serde_yaml::Value,
    path: &mut Vec<serde_yaml::Value>,
    out: &mut Vec<(Vec<serde_yaml::Value>, serde_yaml::Value)>,
) {
    let Some(map) = file.as_mapping() else {
        return;
    };
    for (k, v) in map {
        // A key the config does not have changes nothing (the caller warns
        // about it); trying each against all before it took 45 s for
        // 20,000 unknown keys.
        let Some(d) = defaults.get(k) else { continue };
        path.push(k.clone());
        if v.is_mapping() && d.as_mapping().is_some_and(|m| !m.is_empty()) {
            collect_leaves(d, v, path, out);
        } else {
            out.push((path.clone(), v.clone()));
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load<T: Default + Serialize + serde::de::DeserializeOwned>(text: &str) -> (T, Vec<String>) {
        from_yaml_by_key(&serde_yaml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn a_bad_key_takes_its_default_and_the_others_are_kept() {
        let (c, errors): (InitConfig, _) = load(
            "service_dir: /s\nmax_log_size: lots\ncontrol:\n  vsock_port: x\n  vsock_cid: 7\n  unix_socket_mode: \"0999\"\nenvironment:\n  A: b\nnsm_driver_path: null\n",
        );
        assert_eq!(c.service_dir, "/s");
        assert_eq!(c.max_log_size, InitConfig::default().max_log_size);
        assert_eq!(c.control.vsock_cid, 7);
        assert_eq!(c.control.vsock_port, 9001);
        assert_eq!(c.control.unix_socket_mode, SocketMode(0o600));
        assert_eq!(c.environment.get("A").map(String::as_str), Some("b"));
        assert_eq!(c.nsm_driver_path, None);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("max_log_size: "), "{errors:?}");
        assert!(errors[1].starts_with("control.vsock_port: "), "{errors:?}");
        assert!(
            errors[2].starts_with("control.unix_socket_mode: "),
            "{errors:?}"
        );
        assert!(
            !errors[2].contains("unix_socket_mode: unix_socket_mode"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_section_that_is_not_a_mapping_keeps_its_defaults() {
        let (c, errors): (InitConfig, _) = load("control: 5\nlog_dir: /l\n");
        assert_eq!(c.control, ControlConfig::default());
        assert_eq!(c.log_dir, "/l");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("control: "), "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_no_leaves() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("k{i}: 1\n"));
        }
        text.push_str("max_log_files: 3\ncontrol:\n  bogus: 1\n  vsock_port: 7\n");
        let (c, errors): (InitConfig, _) = load(&text);
        assert_eq!((c.max_log_files, c.control.vsock_port), (3, 7));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let at = |depth: usize| format!("a: 1\nb: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(yaml_value(&at(MAX_YAML_NESTING)).is_ok());
        let e = yaml_value(&at(MAX_YAML_NESTING + 1)).unwrap_err();
        assert!(e.starts_with("line 2: nested deeper than 64 levels"), "{e}");
        // Closed brackets free their level; braces count as brackets.
        let wide: String = (0..1000)
            .map(|i| format!("c{i}: [[1], {{d: 2}}, [[3]]]\n"))
            .collect();
        assert!(yaml_value(&wide).is_ok());
        let e = yaml_value(&format!("x: \"{}\"\n", "{".repeat(65))).unwrap_err();
        assert!(e.contains("strings and comments count too"), "{e}");
        let e = yaml_value("a: [1\n").unwrap_err();
        assert!(e.starts_with("line "), "{e}");
    }

    #[test]
    fn initctl_keys_too() {
        let (c, errors): (InitctlConfig, _) =
            load("protocol: carrier-pigeon\nunix_socket_path: /x.sock\n");
        assert_eq!(c.protocol, Protocol::Unix);
        assert_eq!(c.unix_socket_path, "/x.sock");
        assert!(errors[0].starts_with("protocol: "), "{errors:?}");
        assert!(
            from_yaml_by_key::<InitctlConfig>(&serde_yaml::from_str("- a\n").unwrap()).is_err()
        );
        let (c, e): (InitctlConfig, _) = load("# nothing\n");
        assert_eq!((c, e), (InitctlConfig::default(), vec![]));
    }
}
