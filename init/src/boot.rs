//! PID-1 boot duties: stdio on /dev/console, filesystems, NSM driver,
//! heartbeat, root switch, and the final reboot(2). (Being written.)

use shared::config::InitConfig;

/// Make sure fds 0-2 are open before anything may use them. Always called
/// first thing in `main`, PID 1 or not.
pub fn ensure_stdio() {}

/// Boot duties when running as PID 1. Returns true when the root was
/// switched (main then re-reads `/etc/init.yaml` in the new root).
pub fn boot(_cfg: &InitConfig) -> bool {
    false
}

/// After a switch: mount the filesystems inside the new root.
pub fn after_switch(_cfg: &InitConfig) {}

/// Final step as PID 1: sync, then reboot(2) with power-off or restart.
/// Never returns.
pub fn finish(reboot: bool) -> ! {
    let _ = reboot;
    loop {
        std::thread::park();
    }
}
