//! dom0's virtual-terminal consoles as sysfs shows them
//! (`sys/class/vtconsole/vtconN`: `name`, `bind`), and whether a PCI
//! function is the boot VGA device (its `boot_vga`).

use crate::host::{HostError, HostRoot};

/// One console driver the VT layer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtConsole {
    /// Its `name`, as the kernel writes it (`(M) frame buffer device`,
    /// `(S) dummy device`, `(S) VGA+`).
    pub name: String,
    /// Whether it is bound to the virtual terminals (`bind` is 1).
    pub bound: bool,
}

/// Every console in `sys/class/vtconsole` (none when it is absent).
pub fn vt_consoles(host: &HostRoot) -> Result<Vec<VtConsole>, HostError> {
    let mut names = host
        .list_dir_if_exists("sys/class/vtconsole")?
        .unwrap_or_default();
    names.sort();
    let mut found = Vec::new();
    for entry in names {
        let attr = |a: &str| -> Result<String, HostError> {
            let bytes = host
                .read_if_exists(&format!("sys/class/vtconsole/{entry}/{a}"))?
                .unwrap_or_default();
            Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
        };
        found.push(VtConsole {
            name: attr("name")?,
            bound: attr("bind")? == "1",
        });
    }
    Ok(found)
}

/// The functions whose `boot_vga` is 1: the system display device (the
/// kernel marks the one the firmware's console was on).
pub fn boot_vga_devices(host: &HostRoot) -> Result<Vec<String>, HostError> {
    let mut found = Vec::new();
    for name in host.list_dir("sys/bus/pci/devices")? {
        if is_boot_vga(host, &name)? {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

/// Whether the function `name` is the boot VGA device (`boot_vga` is 1).
pub fn is_boot_vga(host: &HostRoot, name: &str) -> Result<bool, HostError> {
    Ok(host
        .read_if_exists(&format!("sys/bus/pci/devices/{name}/boot_vga"))?
        .is_some_and(|b| b.trim_ascii() == b"1"))
}
