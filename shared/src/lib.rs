//! Types both `init` and `initctl` speak: the JSON control protocol and the
//! configuration files. Parsing of YAML/TOML happens in the binaries; this
//! crate only needs serde.

pub mod config;
pub mod protocol;

/// The largest request the server accepts, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The most log lines one `ServiceLogs` request may ask for.
pub const MAX_LOG_LINES: usize = 10_000;
/// VMADDR_CID_ANY.
pub const VSOCK_CID_ANY: u32 = u32::MAX;
