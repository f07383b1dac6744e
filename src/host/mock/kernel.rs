//! The mock host's kernel, as far as binding PCI drivers goes: after a
//! write to one of the files [`crate::host::pcibind`] writes, the tree is
//! changed as Linux's driver core and xen-pciback would change it, and
//! the write fails where theirs would (the error is the write's).
//!
//! - `drivers/<d>/unbind`: the function must be bound to `d`, else
//!   `ENODEV`; its `driver` link goes.
//! - `drivers/<d>/bind`: the function must exist and `d` must take it,
//!   else `ENODEV`; a function another driver holds is `EBUSY`. `d` takes
//!   it when its `driver_override` names `d`, or, without an override,
//!   when `d` is its own driver (the mock's record of which driver its
//!   ids match) or `d` is pciback and the function is in pciback's
//!   `slots`. pciback records a function it takes by override in `slots`.
//! - `drivers/pciback/new_slot` adds to `slots`; `remove_slot` removes,
//!   `ENOENT` when absent.
//! - `driver_override` holds the name written (`"\n"`: none).
//! - `sys/bus/pci/drivers_probe`: binds an unbound function to the driver
//!   that would take it, if any; success either way.
//!
//! A driver is there when its directory `sys/bus/pci/drivers/<d>` is (a
//! module not loaded has none).

use std::io;

use super::reboot::normalize;
use crate::host::HostRoot;
use crate::host::pcibind::PCIBACK;
use crate::vocab::PciAddress;

/// Act on `value` written to `rel`.
pub fn written(host: &HostRoot, rel: &str, value: &str) -> io::Result<()> {
    let rel = rel.trim_start_matches('/');
    let parts: Vec<&str> = rel.split('/').collect();
    match parts[..] {
        ["sys", "bus", "pci", "drivers", driver, "unbind"] => {
            clear(host, rel)?;
            unbind(host, &address(value)?, driver)
        }
        ["sys", "bus", "pci", "drivers", driver, "bind"] => {
            clear(host, rel)?;
            bind(host, &address(value)?, driver)
        }
        ["sys", "bus", "pci", "drivers", PCIBACK, "new_slot"] => {
            clear(host, rel)?;
            let addr = address(value)?;
            let mut slots = slots(host)?;
            slots.push(addr);
            set_slots(host, &slots)
        }
        ["sys", "bus", "pci", "drivers", PCIBACK, "remove_slot"] => {
            clear(host, rel)?;
            let addr = address(value)?;
            let mut slots = slots(host)?;
            if !slots.contains(&addr) {
                return Err(io::Error::from_raw_os_error(ENOENT));
            }
            slots.retain(|s| *s != addr);
            set_slots(host, &slots)
        }
        ["sys", "bus", "pci", "drivers_probe"] => {
            clear(host, rel)?;
            let addr = address(value)?;
            if driver_of(host, &addr)?.is_none()
                && let Some(driver) = taker(host, &addr)?
            {
                attach(host, &addr, &driver)?;
            }
            Ok(())
        }
        ["sys", "bus", "pci", "devices", _, "driver_override"] => {
            std::fs::write(host.path(rel), value.trim())
        }
        _ => Ok(()),
    }
}

/// The kernel's errno values the model answers with.
const ENOENT: i32 = 2;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A write-only attribute reads empty again after the write.
fn clear(host: &HostRoot, rel: &str) -> io::Result<()> {
    std::fs::write(host.path(rel), b"")
}

fn address(value: &str) -> io::Result<PciAddress> {
    value.trim().parse().map_err(|_| errno(ENODEV))
}

/// The function's directory below `sys/devices`.
fn device_dir(host: &HostRoot, addr: &PciAddress) -> io::Result<String> {
    let target = host
        .read_link(&format!("sys/bus/pci/devices/{addr}"))
        .map_err(|_| errno(ENODEV))?;
    Ok(normalize(&format!("sys/bus/pci/devices/{target}")))
}

fn driver_of(host: &HostRoot, addr: &PciAddress) -> io::Result<Option<String>> {
    crate::host::pcibind::driver(host, addr).map_err(|e| e.source)
}

fn read_trimmed(host: &HostRoot, rel: &str) -> Option<String> {
    let text = host.read_to_string(rel).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// pciback's `slots`, one address per line.
fn slots(host: &HostRoot) -> io::Result<Vec<PciAddress>> {
    let text = host
        .read_to_string(&format!("sys/bus/pci/drivers/{PCIBACK}/slots"))
        .unwrap_or_default();
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

fn set_slots(host: &HostRoot, slots: &[PciAddress]) -> io::Result<()> {
    let text: String = slots.iter().map(|s| format!("{s}\n")).collect();
    std::fs::write(
        host.path(&format!("sys/bus/pci/drivers/{PCIBACK}/slots")),
        text,
    )
}

/// Whether `driver` would take `addr` (see the module documentation).
fn takes(host: &HostRoot, addr: &PciAddress, driver: &str) -> io::Result<bool> {
    if !host.exists(&format!("sys/bus/pci/drivers/{driver}")) {
        return Ok(false);
    }
    let dev = device_dir(host, addr)?;
    if let Some(named) = read_trimmed(host, &format!("{dev}/driver_override")) {
        return Ok(named == driver);
    }
    let own = read_trimmed(host, &format!("{dev}/.pcipass-driver"));
    Ok(own.as_deref() == Some(driver) || (driver == PCIBACK && slots(host)?.contains(addr)))
}

/// The driver a probe of `addr` binds it to.
fn taker(host: &HostRoot, addr: &PciAddress) -> io::Result<Option<String>> {
    let dev = device_dir(host, addr)?;
    let mut candidates = vec![PCIBACK.to_owned()];
    candidates.extend(read_trimmed(host, &format!("{dev}/driver_override")));
    candidates.extend(read_trimmed(host, &format!("{dev}/.pcipass-driver")));
    for driver in candidates {
        if takes(host, addr, &driver)? {
            return Ok(Some(driver));
        }
    }
    Ok(None)
}

fn unbind(host: &HostRoot, addr: &PciAddress, driver: &str) -> io::Result<()> {
    if driver_of(host, addr)?.as_deref() != Some(driver) {
        return Err(errno(ENODEV));
    }
    let dev = device_dir(host, addr)?;
    std::fs::remove_file(host.path(&format!("{dev}/driver")))?;
    let _ = std::fs::remove_file(host.path(&format!("sys/bus/pci/drivers/{driver}/{addr}")));
    Ok(())
}

fn bind(host: &HostRoot, addr: &PciAddress, driver: &str) -> io::Result<()> {
    device_dir(host, addr)?;
    if !takes(host, addr, driver)? {
        return Err(errno(ENODEV));
    }
    if driver_of(host, addr)?.is_some() {
        return Err(errno(EBUSY));
    }
    attach(host, addr, driver)
}

/// Link `addr` to `driver`; pciback records it in its slots.
fn attach(host: &HostRoot, addr: &PciAddress, driver: &str) -> io::Result<()> {
    let dev = device_dir(host, addr)?;
    super::link_driver(host.root(), &dev, addr, driver)
        .map_err(|e| io::Error::other(e.to_string()))?;
    if driver == PCIBACK {
        let mut slots = slots(host)?;
        if !slots.contains(addr) {
            slots.push(*addr);
            set_slots(host, &slots)?;
        }
    }
    Ok(())
}
