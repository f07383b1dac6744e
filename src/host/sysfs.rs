//! sysfs under the root: the raw attributes of every PCI function in
//! `sys/bus/pci/devices`, and the host's `pci.ids`.

use crate::host::{HostError, HostRoot};

/// What sysfs says about one function, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPciFunction {
    /// Directory name, e.g. `0000:03:00.0`.
    pub name: String,
    /// `vendor`, e.g. `0x10de`.
    pub vendor: String,
    /// `device`.
    pub device: String,
    /// `class`, e.g. `0x030000`.
    pub class: String,
    /// `subsystem_vendor` (may be absent).
    pub subsystem_vendor: Option<String>,
    /// `subsystem_device` (may be absent).
    pub subsystem_device: Option<String>,
    /// `revision`.
    pub revision: Option<String>,
    /// Basename of the `driver` link.
    pub driver: Option<String>,
    /// Basename of the `physfn` link (a VF).
    pub physfn: Option<String>,
    /// Basenames of the `virtfnN` links, by N.
    pub virtfns: Vec<String>,
    /// `boot_vga`.
    pub boot_vga: Option<String>,
    /// The resolved device path below `sys/devices`.
    pub device_path: String,
}

fn basename(target: &str) -> String {
    target.rsplit('/').next().unwrap_or(target).to_owned()
}

/// The function's `class` attribute, as text (`0x0c0500`).
pub fn class_text(host: &HostRoot, name: &str) -> Result<String, HostError> {
    Ok(host
        .read_to_string(&format!("sys/bus/pci/devices/{name}/class"))?
        .trim()
        .to_owned())
}

/// The function's reset methods: the kernel's `reset_method` list (Linux
/// 5.15 on; absent when it has none), else `["reset"]` when an older
/// kernel gives it a `reset` file; empty when it has neither.
pub fn reset_methods(host: &HostRoot, name: &str) -> Result<Vec<String>, HostError> {
    let dir = format!("sys/bus/pci/devices/{name}");
    if let Some(text) = host.read_if_exists(&format!("{dir}/reset_method"))? {
        return Ok(String::from_utf8_lossy(&text)
            .split_whitespace()
            .map(str::to_owned)
            .collect());
    }
    Ok(if host.exists(&format!("{dir}/reset")) {
        vec!["reset".to_owned()]
    } else {
        Vec::new()
    })
}

/// Whether the function is PCIe: the kernel gives link attributes
/// (`current_link_speed`) to PCIe functions only.
pub fn is_pcie(host: &HostRoot, name: &str) -> bool {
    host.exists(&format!("sys/bus/pci/devices/{name}/current_link_speed"))
}

/// Scan every function. Failing to list `sys/bus/pci/devices` is an
/// error: the caller must not mistake an unreadable sysfs for a host
/// without devices. A function whose required attributes (vendor, device,
/// class) cannot be read, for instance because it disappeared mid-scan, is
/// logged and skipped.
pub fn scan_pci(host: &HostRoot) -> Result<Vec<RawPciFunction>, HostError> {
    let names = host.list_dir("sys/bus/pci/devices")?;
    Ok(names
        .into_iter()
        .filter_map(|name| read_function(host, name))
        .collect())
}

/// One function by its directory name; `None` when the host has no such
/// function (or its ids cannot be read).
pub fn read_one(host: &HostRoot, name: &str) -> Option<RawPciFunction> {
    if !host.exists(&format!("sys/bus/pci/devices/{name}")) {
        return None;
    }
    read_function(host, name.to_owned())
}

fn read_function(host: &HostRoot, name: String) -> Option<RawPciFunction> {
    let dir = format!("sys/bus/pci/devices/{name}");
    let attr = |a: &str| {
        host.read_to_string(&format!("{dir}/{a}"))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let required = |a: &str| match attr(a) {
        Some(v) => Some(v),
        None => {
            tracing::warn!(device = %name, attribute = a, "PCI function skipped: attribute unreadable");
            None
        }
    };
    let (vendor, device, class) = (required("vendor")?, required("device")?, required("class")?);
    let link = |l: &str| {
        host.read_link(&format!("{dir}/{l}"))
            .ok()
            .map(|t| basename(&t))
    };
    let mut virtfns: Vec<(u32, String)> = host
        .list_dir(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let n = entry.strip_prefix("virtfn")?.parse::<u32>().ok()?;
            Some((n, link(&entry)?))
        })
        .collect();
    virtfns.sort();
    let device_path = host.read_link(&dir).unwrap_or_default();
    Some(RawPciFunction {
        vendor,
        device,
        class,
        subsystem_vendor: attr("subsystem_vendor"),
        subsystem_device: attr("subsystem_device"),
        revision: attr("revision"),
        driver: link("driver"),
        physfn: link("physfn"),
        virtfns: virtfns.into_iter().map(|(_, v)| v).collect(),
        boot_vga: attr("boot_vga"),
        device_path,
        name,
    })
}

/// The name xen-pciback's PCI driver registers (`DRV_NAME`).
pub const PCIBACK_DRIVER: &str = "pciback";

/// The driver bound to PCI function `name` (basename of its `driver`
/// link), `None` when none is. A link that cannot be read for another
/// reason than its absence is an error.
pub fn bound_driver(host: &HostRoot, name: &str) -> Result<Option<String>, HostError> {
    Ok(host
        .read_link_if_exists(&format!("sys/bus/pci/devices/{name}/driver"))?
        .and_then(|target| target.rsplit('/').next().map(str::to_owned)))
}

/// The module that provides the driver bound to PCI function `name`
/// (basename of the driver's `module` link, e.g. `xhci_pci` for driver
/// `xhci_hcd`); `None` when the driver is built into the kernel (sysfs
/// gives it no `module` link). A link that cannot be read for another
/// reason is an error.
pub fn driver_module(host: &HostRoot, name: &str) -> Result<Option<String>, HostError> {
    Ok(host
        .read_link_if_exists(&format!("sys/bus/pci/devices/{name}/driver/module"))?
        .and_then(|target| target.rsplit('/').next().map(str::to_owned)))
}

/// The host's `pci.ids`, if it has one.
pub fn read_pci_ids(host: &HostRoot) -> Option<String> {
    ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"]
        .into_iter()
        .find_map(|p| host.read_to_string(p).ok())
}

/// Every entry of `sys/bus/pci/devices` with the target of its link (the
/// device's place in the PCI tree, e.g.
/// `../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0`). A listing or
/// a link that cannot be read is an error, never an empty tree.
pub fn device_links(host: &HostRoot) -> Result<Vec<(String, String)>, crate::host::HostError> {
    host.list_dir("sys/bus/pci/devices")?
        .into_iter()
        .map(|name| {
            let target = host.read_link(&format!("sys/bus/pci/devices/{name}"))?;
            Ok((name, target))
        })
        .collect()
}
