//! The offline reboot of a mock host, in place.

use super::{MockError, driver_dir, io, link_driver, write_boot_id};
use crate::host::HostRoot;
use crate::host::pcibind::PCIBACK;
use crate::vocab::PciAddress;

/// Apply a reboot to the tree: `proc/cmdline` becomes `cmdline`, the boot
/// id changes, and every function's `driver` link points at `pciback` when
/// `hidden` says so, else back at its own driver.
pub fn reboot(
    host: &HostRoot,
    cmdline: &[u8],
    hidden: &dyn Fn(&PciAddress) -> bool,
) -> Result<(), MockError> {
    if !host.is_mock() {
        return Err(MockError::NotMockHost(host.root().display().to_string()));
    }
    let line = host.path("proc/cmdline");
    std::fs::write(&line, [cmdline, b"\n"].concat()).map_err(io(&line))?;
    write_boot_id(&host.path(crate::host::procfs::BOOT_ID))?;
    let names = host.list_dir("sys/bus/pci/devices").unwrap_or_default();
    let mut slots = String::new();
    for name in names {
        let Ok(addr) = name.parse::<PciAddress>() else {
            continue;
        };
        let Ok(target) = host.read_link(&format!("sys/bus/pci/devices/{name}")) else {
            continue;
        };
        let rel = format!("sys/bus/pci/devices/{target}");
        let dev_rel = normalize(&rel);
        let own = host
            .read_to_string(&format!("{dev_rel}/.pcipass-driver"))
            .ok()
            .map(|s| s.trim().to_owned());
        let driver = if hidden(&addr) {
            Some(PCIBACK.to_owned())
        } else {
            own
        };
        let link = host.path(&format!("{dev_rel}/driver"));
        if let Ok(Some(old)) = crate::host::sysfs::bound_driver(host, &name) {
            let _ = std::fs::remove_file(host.path(&format!("sys/bus/pci/drivers/{old}/{name}")));
        }
        let _ = std::fs::remove_file(&link);
        // A new kernel: no override, and pciback's slots are its hide list.
        let _ = std::fs::write(host.path(&format!("{dev_rel}/driver_override")), "");
        if driver.as_deref() == Some(PCIBACK) {
            slots.push_str(&format!("{addr}\n"));
        }
        if let Some(driver) = driver {
            link_driver(host.root(), &dev_rel, &addr, &driver)?;
        }
    }
    driver_dir(host.root(), PCIBACK)?;
    let path = host.path(&format!("sys/bus/pci/drivers/{PCIBACK}/slots"));
    std::fs::write(&path, slots).map_err(io(&path))
}

/// Resolve `.` and `..` in a root-relative path.
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::super::relative;
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative("sys/bus/pci/devices", "sys/devices/pci0000:00/0000:00:02.0"),
            "../../../devices/pci0000:00/0000:00:02.0"
        );
        assert_eq!(relative("sys/devices/a/b", "sys/devices/a/c"), "../c");
        assert_eq!(
            normalize("sys/bus/pci/devices/../../../devices/x"),
            "sys/devices/x"
        );
    }
}
