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
