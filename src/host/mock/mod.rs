//! Mock hosts: real directory trees laid out like a dom0 root, for tests,
//! demos and benchmarks.
//!
//! A mock host has `sys/devices/pci0000:00/...` device directories with
//! attribute files, `sys/bus/pci/devices/*` links to them, `driver`,
//! `physfn` and `virtfnN` links as in real sysfs, `sys/class/block/*` links
//! down to the PCI path of each disk, `proc/cmdline`,
//! `proc/self/mountinfo`, the self-description files [`crate::host::facts`]
//! reads (`etc/xensource-inventory`, `etc/os-release`, kernel and Xen
//! versions, `proc/meminfo`, the host name), and the marker file.
//! [`reboot()`] applies a new command line: the driver links of hidden
//! devices point at `pciback`, the others back at their own driver.
//!
//! The boot configuration depends on the [`Profile`]:
//!
//! - `demo`, `large`, `scale-N`: XCP-ng 8.3 with BIOS GRUB,
//!   `boot/grub/grub.cfg` in XCP-ng's layout ([`grub_cfg`]), kernel
//!   4.19.0+1 with xen-pciback built in (its `modules.builtin` lists it,
//!   `sys/module/xen_pciback` has parameters and no `initstate`);
//! - `demo-uefi`: the same grub.cfg at `boot/efi/EFI/xenserver/grub.cfg`,
//!   the loader `grubx64.efi` next to it, and EFI variables
//!   (`sys/firmware/efi/efivars`) whose `BootCurrent` entry names it;
//! - `debian`: a Debian 12 dom0, `etc/default/grub`,
//!   `etc/default/grub.d/xen.cfg` and the `boot/grub/grub.cfg` Debian's
//!   `grub-mkconfig` generated from them (stored in `data/debian12/`), the
//!   `boot/` files `grub-mkconfig` needs to generate it again, kernel
//!   6.1.0-28-amd64 with xen-pciback a module (`lib/modules/`), an
//!   `etc/initramfs-tools/modules` that lists nothing, no inventory;
//! - `xen-efi`: a Debian 12 dom0 started by Xen's EFI loader,
//!   `boot/efi/EFI/xen/xen.cfg`, no grub.cfg, the `debian` profile's
//!   kernel and modules (xen-pciback a module, the initramfs-tools list).

mod builder;
pub mod initramfs;
pub mod kernel;
mod lspci;
mod profile;
mod reboot;
mod tree;

use std::path::Path;

use crate::host::{HostRoot, MOCK_HOST_MARKER};
use crate::vocab::PciAddress;

pub use builder::{
    MockDevice, MockDisk, MockHostBuilder, MockVirtualDisk, XCP_NG_OS_RELEASE, xcp_ng_inventory,
};
pub use lspci::from_lspci;
pub use profile::{Profile, create, profile_builder};
pub use reboot::reboot;
pub use tree::grub_cfg;

/// Why a mock host could not be built or rebooted.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file under the root could not be read or written.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// The directory is not a mock host.
    #[error("{0} is not a mock host (no {MOCK_HOST_MARKER})")]
    NotMockHost(String),
    /// The directory exists and is not empty.
    #[error("{0} exists and is not empty")]
    NotEmpty(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MockError + '_ {
    move |source| MockError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), MockError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// `sys/bus/pci/drivers/<driver>` under `dir` with the files the kernel
/// gives a driver there (`bind`, `unbind`; pciback's `new_slot`,
/// `remove_slot` and `slots`), left as they are when present.
fn driver_dir(dir: &Path, driver: &str) -> Result<(), MockError> {
    let at = dir.join(format!("sys/bus/pci/drivers/{driver}"));
    std::fs::create_dir_all(&at).map_err(io(&at))?;
    let mut files = vec!["bind", "unbind"];
    if driver == crate::host::pcibind::PCIBACK {
        files.extend(["new_slot", "remove_slot", "slots"]);
    }
    for name in files {
        let path = at.join(name);
        if !path.exists() {
            write(&path, "")?;
        }
    }
    let probe = dir.join("sys/bus/pci/drivers_probe");
    if !probe.exists() {
        write(&probe, "")?;
    }
    Ok(())
}

/// Bind the function `addr` (its directory `dev`, root-relative) to
/// `driver` as sysfs shows it: the function's `driver` link, and the
/// driver's link named after the function.
fn link_driver(dir: &Path, dev: &str, addr: &PciAddress, driver: &str) -> Result<(), MockError> {
    driver_dir(dir, driver)?;
    let drivers = format!("sys/bus/pci/drivers/{driver}");
    symlink(&relative(dev, &drivers), &dir.join(format!("{dev}/driver")))?;
    symlink(
        &relative(&drivers, dev),
        &dir.join(format!("{drivers}/{addr}")),
    )
}

fn symlink(target: &str, link: &Path) -> Result<(), MockError> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(io(link))
}

/// A relative link target from directory `from` to `to` (both relative
/// to the root).
fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let to: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// The driver a mock function has of its own (bound whenever pciback does
/// not hold it) and the module that provides that driver (`None`: built
/// into the kernel, no `module` link); `None` for a function without one.
pub fn own_driver(host: &HostRoot, addr: &PciAddress) -> Option<(String, Option<String>)> {
    let target = host
        .read_link(&format!("sys/bus/pci/devices/{addr}"))
        .ok()?;
    let dev = reboot::normalize(&format!("sys/bus/pci/devices/{target}"));
    let driver = host
        .read_to_string(&format!("{dev}/.pcipass-driver"))
        .ok()?
        .trim()
        .to_owned();
    let module = host
        .read_link_if_exists(&format!("sys/bus/pci/drivers/{driver}/module"))
        .ok()
        .flatten()
        .and_then(|t| t.rsplit('/').next().map(str::to_owned));
    Some((driver, module))
}

/// A fresh boot id (a uuid, as the kernel makes) at `path`.
fn write_boot_id(path: &Path) -> Result<(), MockError> {
    write(path, &format!("{}\n", uuid::Uuid::new_v4()))
}

/// Mock hosts for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Profile, create};
    use crate::host::HostRoot;

    /// A fresh mock host of `profile` (the directory goes with the guard).
    pub(crate) fn host(profile: Profile) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        create(&root, profile).unwrap();
        (dir, HostRoot::new(root))
    }

    /// Make the kernel file `rel` unwritable: a directory in its place, so
    /// the step that writes it fails as it would on a kernel without it.
    pub(crate) fn break_file(host: &HostRoot, rel: &str) {
        let path = host.path(rel);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
    }
}
