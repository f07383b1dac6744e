//! Block devices in sysfs: from a device name to the disks beneath it
//! (partitions to their disk, device-mapper and md to their slaves) and
//! to each disk's device path.

use crate::host::{HostError, HostRoot};

/// The name of the dm device called `dm_name` (`/dev/mapper/<dm_name>`).
pub fn dm_device(host: &HostRoot, dm_name: &str) -> Option<String> {
    host.list_dir("sys/class/block")
        .ok()?
        .into_iter()
        .find(|dev| {
            host.read_to_string(&format!("sys/class/block/{dev}/dm/name"))
                .is_ok_and(|n| n.trim() == dm_name)
        })
}

/// The block device with `major:minor`.
pub fn by_dev_number(host: &HostRoot, major_minor: &str) -> Option<String> {
    let target = host
        .read_link(&format!("sys/dev/block/{major_minor}"))
        .ok()?;
    target.rsplit('/').next().map(str::to_owned)
}

/// True when `sys/class/block/<name>` exists.
pub fn exists(host: &HostRoot, name: &str) -> bool {
    host.exists(&format!("sys/class/block/{name}"))
}

/// The devices `name` is built on (dm, md), empty for a plain disk (no
/// `slaves` directory). A `slaves` directory that exists but cannot be
/// listed is an error: a dm or md device must not pass for a plain disk.
pub fn slaves(host: &HostRoot, name: &str) -> Result<Vec<String>, HostError> {
    match host.list_dir(&format!("sys/class/block/{name}/slaves")) {
        Ok(names) => Ok(names),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The disk of a partition (`None` when `name` is not a partition).
pub fn partition_parent(host: &HostRoot, name: &str) -> Option<String> {
    if !host.exists(&format!("sys/class/block/{name}/partition")) {
        return None;
    }
    let target = host.read_link(&format!("sys/class/block/{name}")).ok()?;
    let mut parts = target.rsplit('/');
    parts.next();
    parts.next().map(str::to_owned)
}

/// The sysfs device path of a block device (the `sys/class/block` link's
/// target, e.g. `../../devices/pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/...`).
pub fn device_path(host: &HostRoot, name: &str) -> Result<String, HostError> {
    host.read_link(&format!("sys/class/block/{name}"))
}
