//! `/proc` under the root: the running kernel's command line and the mount
//! table.

use crate::host::boot::{Fingerprint, fingerprint};
use crate::host::{HostError, HostRoot};

/// The running kernel's command line, host-relative.
pub const CMDLINE: &str = "proc/cmdline";

/// The running kernel's command line (one line, newline trimmed).
pub fn read_cmdline(host: &HostRoot) -> Result<String, HostError> {
    Ok(host
        .read_to_string(CMDLINE)?
        .trim_end_matches(['\n', '\0'])
        .to_owned())
}

/// The fingerprint of `proc/cmdline` (a mock host's changes on reboot; a
/// real one never changes while running).
pub fn cmdline_fingerprint(host: &HostRoot) -> Result<Fingerprint, HostError> {
    fingerprint(host, CMDLINE)
}

/// The mount table: `proc/self/mountinfo` (format `mountinfo`), else
/// `proc/mounts` (format `mounts`).
pub fn read_mountinfo(host: &HostRoot) -> Result<(MountFormat, String), HostError> {
    match host.read_to_string("proc/self/mountinfo") {
        Ok(text) => Ok((MountFormat::MountInfo, text)),
        Err(e) if e.is_not_found() => {
            Ok((MountFormat::Mounts, host.read_to_string("proc/mounts")?))
        }
        Err(e) => Err(e),
    }
}

/// Which mount-table format [`read_mountinfo`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFormat {
    /// `/proc/self/mountinfo`.
    MountInfo,
    /// `/proc/mounts`.
    Mounts,
}
