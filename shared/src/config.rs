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
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            unix_socket_enabled: true,
            unix_socket_path: "/run/init.sock".into(),
            vsock_enabled: false,
            vsock_cid: 3,
            vsock_port: 9001,
        }
    }
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
