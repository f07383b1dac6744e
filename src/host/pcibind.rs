//! Which driver holds a PCI function now, and the kernel's files that
//! change it at runtime (Linux `Documentation/ABI/testing/sysfs-bus-pci`):
//!
//! - the function's `driver` link names the driver bound to it;
//! - writing its address to `drivers/<driver>/unbind` releases it;
//! - writing a driver's name to its `driver_override` makes that driver
//!   the only one that may take it (`"\n"` clears it); xen-pciback's probe
//!   takes a function whose override names `pciback` (Linux 4.9, "xen/
//!   pciback: support driver_override"), and records it in its `slots`;
//! - writing its address to `drivers/<driver>/bind` binds it, with the
//!   probe's error as the write's (`ENODEV`: the driver does not take it,
//!   `EBUSY`: another driver holds it);
//! - `drivers/pciback/remove_slot` forgets a function pciback would take
//!   again at the next probe (`ENOENT` when it has no slot).
//!
//! Each step is one `write(2)` of a file that exists: nothing is created,
//! so a kernel without the file fails the step, as it should. On a mock
//! host the writes land in the mock's files, and its kernel model
//! ([`crate::host::mock::kernel`]) turns them into `driver` links.

use std::io::Write;

use crate::host::{HostError, HostRoot};
use crate::vocab::PciAddress;

/// xen-pciback's driver name in sysfs.
pub use crate::host::sysfs::PCIBACK_DRIVER as PCIBACK;

/// The driver bound to `addr` now (`None`: none).
pub fn driver(host: &HostRoot, addr: &PciAddress) -> Result<Option<String>, HostError> {
    crate::host::sysfs::bound_driver(host, &addr.to_string())
}

/// The functions `driver` holds now: sysfs lists each, by address, in the
/// driver's directory.
pub fn held_by(host: &HostRoot, driver: &str) -> Result<Vec<PciAddress>, HostError> {
    let names = host
        .list_dir_if_exists(&format!("sys/bus/pci/drivers/{driver}"))?
        .unwrap_or_default();
    let mut held: Vec<PciAddress> = names.iter().filter_map(|n| n.parse().ok()).collect();
    held.sort();
    Ok(held)
}

/// The driver `addr`'s `driver_override` names (`None`: no override; the
/// kernel reads `(null)` then).
pub fn override_of(host: &HostRoot, addr: &PciAddress) -> Result<Option<String>, HostError> {
    let Some(bytes) =
        host.read_if_exists(&format!("sys/bus/pci/devices/{addr}/driver_override"))?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    Ok((!text.is_empty() && text != "(null)").then_some(text))
}

/// Make `driver` the only driver that may take `addr` (`None`: clear it).
pub fn set_override(
    host: &HostRoot,
    addr: &PciAddress,
    driver: Option<&str>,
) -> Result<(), HostError> {
    write_attr(
        host,
        &format!("sys/bus/pci/devices/{addr}/driver_override"),
        driver.unwrap_or("\n"),
    )
}

/// Release `addr` from `driver`.
pub fn unbind(host: &HostRoot, addr: &PciAddress, driver: &str) -> Result<(), HostError> {
    write_attr(
        host,
        &format!("sys/bus/pci/drivers/{driver}/unbind"),
        &addr.to_string(),
    )
}

/// Bind `addr` to `driver`.
pub fn bind(host: &HostRoot, addr: &PciAddress, driver: &str) -> Result<(), HostError> {
    write_attr(
        host,
        &format!("sys/bus/pci/drivers/{driver}/bind"),
        &addr.to_string(),
    )
}

/// Ask the kernel to bind `addr` to whichever driver takes it (nothing
/// binding is not an error: read the driver link after).
pub fn probe(host: &HostRoot, addr: &PciAddress) -> Result<(), HostError> {
    write_attr(host, "sys/bus/pci/drivers_probe", &addr.to_string())
}

/// Make pciback take `addr` at its next probe (its `new_slot`).
pub fn new_slot(host: &HostRoot, addr: &PciAddress) -> Result<(), HostError> {
    write_attr(
        host,
        &format!("sys/bus/pci/drivers/{PCIBACK}/new_slot"),
        &addr.to_string(),
    )
}

/// Make pciback forget `addr` (nothing to forget is not an error).
pub fn remove_slot(host: &HostRoot, addr: &PciAddress) -> Result<(), HostError> {
    match write_attr(
        host,
        &format!("sys/bus/pci/drivers/{PCIBACK}/remove_slot"),
        &addr.to_string(),
    ) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// One write of `value` to the kernel attribute `rel`, which must exist.
fn write_attr(host: &HostRoot, rel: &str, value: &str) -> Result<(), HostError> {
    let path = host.resolve(rel)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| HostRoot::err("open", rel, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| HostRoot::err("write", rel, e))?;
    drop(file);
    if host.is_mock() {
        crate::host::mock::kernel::written(host, rel, value)
            .map_err(|e| HostRoot::err("write", rel, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::Profile;
    use crate::host::mock::testing::{break_file, host};

    fn demo() -> (tempfile::TempDir, HostRoot) {
        host(Profile::Demo)
    }

    fn errno(e: &HostError) -> Option<i32> {
        e.source.raw_os_error()
    }

    #[test]
    fn a_function_moves_to_pciback_by_override_and_back_to_its_driver() {
        let (_dir, host) = demo();
        let usb: PciAddress = "0000:00:14.0".parse().unwrap();
        assert_eq!(driver(&host, &usb).unwrap().as_deref(), Some("xhci_hcd"));
        assert_eq!(override_of(&host, &usb).unwrap(), None);

        set_override(&host, &usb, Some(PCIBACK)).unwrap();
        assert_eq!(override_of(&host, &usb).unwrap().as_deref(), Some(PCIBACK));
        // Bound elsewhere: pciback cannot take it yet.
        assert_eq!(errno(&bind(&host, &usb, PCIBACK).unwrap_err()), Some(16));
        // Not pciback's to release.
        assert_eq!(errno(&unbind(&host, &usb, PCIBACK).unwrap_err()), Some(19));
        unbind(&host, &usb, "xhci_hcd").unwrap();
        assert_eq!(driver(&host, &usb).unwrap(), None);
        // The override keeps its own driver out.
        assert_eq!(errno(&bind(&host, &usb, "xhci_hcd").unwrap_err()), Some(19));
        bind(&host, &usb, PCIBACK).unwrap();
        assert_eq!(driver(&host, &usb).unwrap().as_deref(), Some(PCIBACK));
        let slots = host
            .read_to_string("sys/bus/pci/drivers/pciback/slots")
            .unwrap();
        assert_eq!(slots, "0000:00:14.0\n");

        unbind(&host, &usb, PCIBACK).unwrap();
        remove_slot(&host, &usb).unwrap();
        remove_slot(&host, &usb).unwrap();
        set_override(&host, &usb, None).unwrap();
        assert_eq!(override_of(&host, &usb).unwrap(), None);
        bind(&host, &usb, "xhci_hcd").unwrap();
        assert_eq!(driver(&host, &usb).unwrap().as_deref(), Some("xhci_hcd"));
    }

    #[test]
    fn a_step_whose_file_cannot_be_written_fails_and_changes_nothing() {
        let (_dir, host) = demo();
        let usb: PciAddress = "0000:00:14.0".parse().unwrap();
        break_file(&host, "sys/bus/pci/drivers/xhci_hcd/unbind");
        let e = unbind(&host, &usb, "xhci_hcd").unwrap_err();
        assert_eq!(e.op, "open");
        assert_eq!(driver(&host, &usb).unwrap().as_deref(), Some("xhci_hcd"));
        // A driver that is not there has no files to write.
        assert!(bind(&host, &usb, "vfio-pci").unwrap_err().is_not_found());
    }
}
