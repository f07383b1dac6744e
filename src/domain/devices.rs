//! The PCI device model: [`PciFunction`] built from raw sysfs text, with
//! xapi's formatting of ids and the rules for which functions are listed
//! and which functions depend on each other.

use crate::domain::PciAddress;
use crate::domain::pciids::DeviceNames;
use crate::host::sysfs::{self, RawPciFunction};
use crate::host::{HostError, HostRoot};

/// Names of a function, "" when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Vendor.
    pub vendor: String,
    /// Device.
    pub device: String,
    /// Class (subclass name).
    pub class: String,
    /// Subsystem vendor.
    pub subsystem_vendor: String,
    /// Subsystem device.
    pub subsystem_device: String,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Address.
    pub address: PciAddress,
    /// 24-bit class code (base, sub, prog-if).
    pub class: u32,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Subsystem vendor id (absent for bridges on some kernels).
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem device id.
    pub subsystem_device_id: Option<u16>,
    /// Revision.
    pub revision: Option<u8>,
    /// Bound driver.
    pub driver: Option<String>,
    /// The physical function of a VF.
    pub physfn: Option<PciAddress>,
    /// The VFs of a PF.
    pub virtfns: Vec<PciAddress>,
    /// The firmware's boot display.
    pub boot_vga: bool,
    /// Names.
    pub names: Names,
}

/// Why raw sysfs text does not make a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// An attribute is not the number it should be.
    #[error("{device}: attribute {attribute} = {value:?} is not a number")]
    BadAttribute {
        /// The device.
        device: String,
        /// The sysfs attribute.
        attribute: &'static str,
        /// The value given.
        value: String,
    },
    /// The directory name is not an address.
    #[error("{0} is not a PCI address")]
    BadAddress(String),
}

fn number(device: &str, attribute: &'static str, value: &str) -> Result<u32, DeviceError> {
    let digits = value
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    u32::from_str_radix(digits, 16).map_err(|_| DeviceError::BadAttribute {
        device: device.to_owned(),
        attribute,
        value: value.to_owned(),
    })
}

impl PciFunction {
    /// Build a function from raw sysfs text (names left empty).
    pub fn from_raw(raw: &RawPciFunction) -> Result<PciFunction, DeviceError> {
        let address: PciAddress = raw
            .name
            .parse()
            .map_err(|_| DeviceError::BadAddress(raw.name.clone()))?;
        let n = |attribute, value: &str| number(&raw.name, attribute, value);
        let short = |attribute, value: &Option<String>| -> Result<Option<u16>, DeviceError> {
            value
                .as_deref()
                .map(|v| n(attribute, v).map(|x| x as u16))
                .transpose()
        };
        let parse_addr = |s: &String| s.parse::<PciAddress>().ok();
        Ok(PciFunction {
            address,
            class: n("class", &raw.class)? & 0x00ff_ffff,
            vendor_id: n("vendor", &raw.vendor)? as u16,
            device_id: n("device", &raw.device)? as u16,
            subsystem_vendor_id: short("subsystem_vendor", &raw.subsystem_vendor)?,
            subsystem_device_id: short("subsystem_device", &raw.subsystem_device)?,
            revision: short("revision", &raw.revision)?.map(|r| r as u8),
            driver: raw.driver.clone(),
            physfn: raw.physfn.as_ref().and_then(parse_addr),
            virtfns: raw.virtfns.iter().filter_map(parse_addr).collect(),
            boot_vga: raw.boot_vga.as_deref().map(str::trim) == Some("1"),
            names: Names::default(),
        })
    }

    /// Base class byte.
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// Subclass byte.
    pub fn sub_class(&self) -> u8 {
        (self.class >> 8) as u8
    }

    /// xapi's `class_id`: `%04x` of base and subclass.
    pub fn class_id(&self) -> String {
        format!("{:04x}", self.class >> 8)
    }

    /// `%04x` vendor id.
    pub fn vendor_id_hex(&self) -> String {
        format!("{:04x}", self.vendor_id)
    }

    /// `%04x` device id.
    pub fn device_id_hex(&self) -> String {
        format!("{:04x}", self.device_id)
    }

    /// `%04x` subsystem vendor id, "" for bridges.
    pub fn subsystem_vendor_id_hex(&self) -> String {
        self.subsystem_id(self.subsystem_vendor_id)
    }

    /// `%04x` subsystem device id, "" for bridges.
    pub fn subsystem_device_id_hex(&self) -> String {
        self.subsystem_id(self.subsystem_device_id)
    }

    fn subsystem_id(&self, id: Option<u16>) -> String {
        match id {
            Some(id) if !self.is_bridge() => format!("{id:04x}"),
            _ => String::new(),
        }
    }

    /// A bridge (base class 0x06: host, ISA, PCI-to-PCI, ...).
    pub fn is_bridge(&self) -> bool {
        self.base_class() == 0x06
    }

    /// Listed as a PCI object: every function that can be passed through,
    /// i.e. all but bridges. (xapi lists only storage, network and display
    /// controllers; USB controllers are what users hand to VMs most after
    /// GPUs.)
    pub fn is_listed(&self) -> bool {
        !self.is_bridge()
    }

    /// A display controller (base class 0x03).
    pub fn is_display(&self) -> bool {
        self.base_class() == 0x03
    }

    fn fill_names(&mut self, names: &DeviceNames) {
        self.names = Names {
            vendor: names.vendor(self.vendor_id),
            device: names.device(self.vendor_id, self.device_id),
            class: names.class(self.base_class(), self.sub_class()),
            subsystem_vendor: match self.subsystem_vendor_id {
                Some(v) if !self.is_bridge() => names.vendor(v),
                _ => String::new(),
            },
            subsystem_device: match (self.subsystem_vendor_id, self.subsystem_device_id) {
                (Some(v), Some(d)) if !self.is_bridge() => {
                    names.subsystem(self.vendor_id, self.device_id, v, d)
                }
                _ => String::new(),
            },
        };
    }
}

/// The other listed, non-VF functions of `f`'s slot (none for a VF).
pub fn dependencies(f: &PciFunction, all: &[PciFunction]) -> Vec<PciAddress> {
    if f.physfn.is_some() {
        return Vec::new();
    }
    all.iter()
        .filter(|o| {
            o.address != f.address
                && o.physfn.is_none()
                && o.is_listed()
                && o.address.same_slot(&f.address)
        })
        .map(|o| o.address)
        .collect()
}

/// Every PCI function of the host, named, sorted by address. Functions
/// whose attributes do not parse are logged and skipped; a sysfs that
/// cannot be listed is an error (never an empty host).
pub fn discover(host: &HostRoot) -> Result<Vec<PciFunction>, HostError> {
    let raw = sysfs::scan_pci(host)?;
    let names = DeviceNames::new(sysfs::read_pci_ids(host).as_deref());
    let mut functions: Vec<PciFunction> = raw
        .iter()
        .filter_map(|raw| match PciFunction::from_raw(raw) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("PCI function skipped: {e}");
                None
            }
        })
        .collect();
    for f in &mut functions {
        f.fill_names(&names);
    }
    functions.sort_by_key(|f| f.address);
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, class: &str) -> RawPciFunction {
        RawPciFunction {
            name: name.into(),
            vendor: "0x10de".into(),
            device: "0x1EB8".into(),
            class: class.into(),
            subsystem_vendor: Some("0x10de".into()),
            subsystem_device: Some("0x12a2".into()),
            revision: Some("0xa1".into()),
            ..RawPciFunction::default()
        }
    }

    #[test]
    fn formats_ids_like_xapi() {
        let f = PciFunction::from_raw(&raw("0000:3b:00.0", "0x030200")).unwrap();
        assert_eq!(
            (f.class_id(), f.vendor_id_hex(), f.device_id_hex()),
            ("0302".into(), "10de".into(), "1eb8".into())
        );
        assert_eq!(f.subsystem_device_id_hex(), "12a2");
        assert!(f.is_display() && f.is_listed());
        let bridge = PciFunction::from_raw(&raw("0000:00:01.0", "0x060400")).unwrap();
        assert!(!bridge.is_listed());
        assert_eq!(bridge.subsystem_vendor_id_hex(), "");
    }

    #[test]
    fn bad_attributes_are_errors() {
        let mut r = raw("0000:3b:00.0", "0x030200");
        r.vendor = "zz".into();
        assert!(matches!(
            PciFunction::from_raw(&r),
            Err(DeviceError::BadAttribute {
                attribute: "vendor",
                ..
            })
        ));
        assert!(PciFunction::from_raw(&raw("garbage", "0x030000")).is_err());
    }

    #[test]
    fn dependencies_are_slot_siblings() {
        let all: Vec<PciFunction> = ["0000:01:00.0", "0000:01:00.1", "0000:01:01.0"]
            .iter()
            .map(|n| PciFunction::from_raw(&raw(n, "0x030000")).unwrap())
            .collect();
        assert_eq!(dependencies(&all[0], &all), vec![all[1].address]);
    }
}
