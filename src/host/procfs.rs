//! `/proc` under the root: the running kernel's command line, the boot id
//! and the mount table.

use crate::host::boot::{Fingerprint, fingerprint};
use crate::host::{HostError, HostRoot};

/// The running kernel's command line, host-relative.
pub const CMDLINE: &str = "proc/cmdline";

/// The running kernel's command line as bytes (it need not be UTF-8),
/// the trailing newline removed.
pub fn read_cmdline(host: &HostRoot) -> Result<Vec<u8>, HostError> {
    let mut bytes = host.read(CMDLINE)?;
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | 0)) {
        bytes.pop();
    }
    Ok(bytes)
}

/// The kernel's random id of the current boot, host-relative; it changes
/// at every boot, whoever started the reboot.
pub const BOOT_ID: &str = "proc/sys/kernel/random/boot_id";

/// The id of the current boot (trimmed); an error when it is missing or
/// empty (a mock host made by an older pcipass has none).
pub fn read_boot_id(host: &HostRoot) -> Result<String, HostError> {
    let id = host.read_to_string(BOOT_ID)?.trim().to_owned();
    if id.is_empty() {
        return Err(HostError {
            op: "read",
            path: BOOT_ID.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "empty boot id"),
        });
    }
    Ok(id)
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
