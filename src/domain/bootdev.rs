//! The PCI functions dom0 needs to boot: every function on the sysfs path
//! of the disks behind `/`, `/boot` and `/boot/efi`, through partitions,
//! device-mapper and md. That includes the root port in front of an NVMe
//! or HBA, which xapi's check misses.

use std::collections::BTreeSet;

use crate::domain::PciAddress;
use crate::host::procfs::{self, MountFormat};
use crate::host::{HostError, HostRoot, block};

/// The mount points whose devices are protected.
pub const BOOT_MOUNTS: [&str; 3] = ["/", "/boot", "/boot/efi"];

/// A mounted boot device and the PCI functions beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDisk {
    /// The source as mounted, e.g. `/dev/nvme0n1p2`.
    pub block_device: String,
    /// Every PCI function on the path to its disks.
    pub pci_functions: Vec<PciAddress>,
}

/// Why the boot devices are unknown.
#[derive(Debug, thiserror::Error)]
pub enum BootDevError {
    /// The mount table cannot be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// `/` is not in the mount table.
    #[error("/ is not in the mount table")]
    NoRoot,
    /// A boot mount's source is not a block device in sysfs.
    #[error("{mount_point} is mounted from {source_device}, which is not a block device in sysfs")]
    Unresolved {
        /// The mount point (`/`, `/boot` or `/boot/efi`).
        mount_point: String,
        /// The source as mounted.
        source_device: String,
    },
    /// A block device's stack (dm, md, partitions) is nested implausibly
    /// deep or loops.
    #[error("the block devices beneath {0} nest too deep")]
    TooDeep(String),
}

/// One mount: source, mount point, `major:minor` when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source device.
    pub source: String,
    /// Mount point.
    pub mount_point: String,
    /// `major:minor` (mountinfo only).
    pub dev: Option<String>,
    /// File system type, e.g. `ext4` or `autofs`.
    pub fstype: String,
}

/// Parse a mount table (pure).
pub fn parse_mounts(format: MountFormat, text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match format {
                MountFormat::MountInfo => {
                    let dash = fields.iter().position(|f| *f == "-")?;
                    Some(Mount {
                        source: unescape(fields.get(dash + 2)?),
                        mount_point: unescape(fields.get(4)?),
                        dev: fields.get(2).map(|s| (*s).to_owned()),
                        fstype: unescape(fields.get(dash + 1)?),
                    })
                }
                MountFormat::Mounts => Some(Mount {
                    source: unescape(fields.first()?),
                    mount_point: unescape(fields.get(1)?),
                    dev: None,
                    fstype: fields.get(2).map(|f| unescape(f)).unwrap_or_default(),
                }),
            }
        })
        .collect()
}

/// Undo the kernel's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.clone().take(3).collect();
            if code.len() == 3
                && let Ok(n) = u8::from_str_radix(&code, 8)
            {
                out.push(n as char);
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The PCI addresses named in a sysfs device path.
pub fn pci_functions_in_path(path: &str) -> Vec<PciAddress> {
    path.split('/')
        .filter_map(|c| c.parse::<PciAddress>().ok())
        .collect()
}

fn source_name(host: &HostRoot, mount: &Mount) -> Option<String> {
    let source = mount.source.as_str();
    let from_source = if let Some(dm) = source.strip_prefix("/dev/mapper/") {
        block::dm_device(host, dm)
    } else {
        source
            .strip_prefix("/dev/")
            .map(str::to_owned)
            .filter(|n| block::exists(host, n))
    };
    from_source.or_else(|| {
        mount
            .dev
            .as_deref()
            .and_then(|d| block::by_dev_number(host, d))
    })
}

/// The disks beneath block device `name`, recursively. Errors when a
/// device's slaves cannot be listed or the stack is too deep, never a
/// shorter list.
fn disks(
    host: &HostRoot,
    name: &str,
    depth: usize,
    out: &mut BTreeSet<String>,
) -> Result<(), BootDevError> {
    if depth > 16 {
        return Err(BootDevError::TooDeep(name.to_owned()));
    }
    let slaves = block::slaves(host, name)?;
    if !slaves.is_empty() {
        for slave in slaves {
            disks(host, &slave, depth + 1, out)?;
        }
        return Ok(());
    }
    match block::partition_parent(host, name) {
        Some(parent) => disks(host, &parent, depth + 1, out),
        None => {
            out.insert(name.to_owned());
            Ok(())
        }
    }
}

/// The boot disks of the host under `host`.
///
/// Fails closed: an unreadable mount table, a `/` missing from it, a boot
/// mount whose source cannot be resolved to a block device, or a block
/// device whose sysfs entries are missing is an error, never a shorter
/// list. `/boot` and `/boot/efi` may be absent (or an automount trigger
/// not yet mounted): they then have nothing to protect.
pub fn boot_devices(host: &HostRoot) -> Result<Vec<BootDisk>, BootDevError> {
    let (format, text) = procfs::read_mountinfo(host)?;
    let mounts = parse_mounts(format, &text);
    if !mounts.iter().any(|m| m.mount_point == "/") {
        return Err(BootDevError::NoRoot);
    }
    let mut result = Vec::new();
    for point in BOOT_MOUNTS {
        // The last mount on a point is the visible one; an autofs trigger
        // is not a file system (the one it mounts comes after it).
        let Some(mount) = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == point && (m.fstype != "autofs" || point == "/"))
        else {
            continue;
        };
        let Some(name) = source_name(host, mount) else {
            return Err(BootDevError::Unresolved {
                mount_point: point.to_owned(),
                source_device: mount.source.clone(),
            });
        };
        let mut found = BTreeSet::new();
        disks(host, &name, 0, &mut found)?;
        let mut functions = BTreeSet::new();
        for disk in found {
            functions.extend(pci_functions_in_path(&block::device_path(host, &disk)?));
        }
        if !functions.is_empty() {
            result.push(BootDisk {
                block_device: mount.source.clone(),
                pci_functions: functions.into_iter().collect(),
            });
        }
    }
    Ok(result)
}

/// The boot disk that needs `addr`, if any.
pub fn find_boot_disk_for<'a>(disks: &'a [BootDisk], addr: &PciAddress) -> Option<&'a BootDisk> {
    disks.iter().find(|d| d.pci_functions.contains(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_and_mounts() {
        let info = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n23 22 259:1 / /boot/efi rw - vfat /dev/nvme0n1p1 rw\n24 22 0:5 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
        let m = parse_mounts(MountFormat::MountInfo, info);
        assert_eq!(
            m[0],
            Mount {
                source: "/dev/nvme0n1p2".into(),
                mount_point: "/".into(),
                dev: Some("259:2".into()),
                fstype: "ext4".into(),
            }
        );
        assert_eq!(m[2].mount_point, "/mnt/a b");
        let m = parse_mounts(MountFormat::Mounts, "/dev/sda1 / ext4 rw 0 0\n");
        assert_eq!(m[0].source, "/dev/sda1");
    }

    #[test]
    fn path_components_give_every_function() {
        let path = "../../devices/pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme0/nvme0n1";
        let want: Vec<PciAddress> = vec![
            "0000:00:1d.0".parse().unwrap(),
            "0000:02:00.0".parse().unwrap(),
        ];
        assert_eq!(pci_functions_in_path(path), want);
    }
}
