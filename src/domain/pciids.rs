//! Names of vendors, devices, subsystems and classes: from the host's
//! `pci.ids` when it has one, else from the database compiled into the
//! `pci-ids` crate, so names appear on a minimal host too.

use std::collections::HashMap;

use pci_ids::FromId;

/// A parsed `pci.ids` file.
#[derive(Debug, Default, Clone)]
pub struct PciIds {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    subsystems: HashMap<(u16, u16, u16, u16), String>,
    classes: HashMap<u8, String>,
    subclasses: HashMap<(u8, u8), String>,
}

fn hex<T: TryFrom<u32>>(s: &str) -> Option<T> {
    u32::from_str_radix(s, 16)
        .ok()
        .and_then(|n| T::try_from(n).ok())
}

impl PciIds {
    /// Parse `pci.ids` text; lines that do not parse are skipped.
    pub fn parse(text: &str) -> PciIds {
        let mut ids = PciIds::default();
        let (mut vendor, mut device, mut class) = (None::<u16>, None::<u16>, None::<u8>);
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let depth = line.bytes().take_while(|b| *b == b'\t').count();
            let body = &line[depth..];
            let (id, name) = match body.split_once("  ") {
                Some((id, name)) => (id.trim(), name.trim().to_owned()),
                None => continue,
            };
            match depth {
                0 if id.starts_with("C ") => {
                    class = hex(&id[2..]);
                    vendor = None;
                    if let Some(c) = class {
                        ids.classes.insert(c, name);
                    }
                }
                0 => {
                    vendor = hex(id);
                    class = None;
                    if let Some(v) = vendor {
                        ids.vendors.insert(v, name);
                    }
                }
                1 => {
                    if let Some(v) = vendor {
                        device = hex(id);
                        if let Some(d) = device {
                            ids.devices.insert((v, d), name);
                        }
                    } else if let (Some(c), Some(s)) = (class, hex::<u8>(id)) {
                        ids.subclasses.insert((c, s), name);
                    }
                }
                2 => {
                    if let (Some(v), Some(d)) = (vendor, device)
                        && let Some((sv, sd)) = id.split_once(' ')
                        && let (Some(sv), Some(sd)) = (hex(sv.trim()), hex(sd.trim()))
                    {
                        ids.subsystems.insert((v, d, sv, sd), name);
                    }
                }
                _ => {}
            }
        }
        ids
    }
}

/// Name lookups: the host's file when loaded, else the compiled-in one.
#[derive(Debug, Default, Clone)]
pub struct DeviceNames {
    host: Option<PciIds>,
}

impl DeviceNames {
    /// Names from the host's `pci.ids` text, if any.
    pub fn new(host_file: Option<&str>) -> DeviceNames {
        DeviceNames {
            host: host_file.map(PciIds::parse),
        }
    }

    /// Vendor name, "" when unknown.
    pub fn vendor(&self, vendor: u16) -> String {
        match &self.host {
            Some(ids) => ids.vendors.get(&vendor).cloned().unwrap_or_default(),
            None => pci_ids::Vendor::from_id(vendor)
                .map(|v| v.name().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Device name, "" when unknown.
    pub fn device(&self, vendor: u16, device: u16) -> String {
        match &self.host {
            Some(ids) => ids
                .devices
                .get(&(vendor, device))
                .cloned()
                .unwrap_or_default(),
            None => pci_ids::Device::from_vid_pid(vendor, device)
                .map(|d| d.name().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Subsystem name as libpci gives it, "" when unknown: the entry
    /// listed under the device, else, when the subsystem ids are the
    /// device's own ids (vendor and device both), the device's name. A
    /// subsystem whose vendor alone is the device's vendor has no
    /// fallback. (The subsystem vendor's name is [`DeviceNames::vendor`]
    /// of the subsystem vendor id, whatever the device.)
    pub fn subsystem(&self, vendor: u16, device: u16, sub_vendor: u16, sub_device: u16) -> String {
        let listed = self.listed_subsystem(vendor, device, sub_vendor, sub_device);
        if listed.is_empty() && (vendor, device) == (sub_vendor, sub_device) {
            return self.device(vendor, device);
        }
        listed
    }

    /// The subsystem entry listed under the device, "" when none.
    fn listed_subsystem(
        &self,
        vendor: u16,
        device: u16,
        sub_vendor: u16,
        sub_device: u16,
    ) -> String {
        match &self.host {
            Some(ids) => ids
                .subsystems
                .get(&(vendor, device, sub_vendor, sub_device))
                .cloned()
                .unwrap_or_default(),
            None => pci_ids::Device::from_vid_pid(vendor, device)
                .and_then(|d| {
                    d.subsystems()
                        .find(|s| s.subvendor() == sub_vendor && s.subdevice() == sub_device)
                })
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
        }
    }

    /// Class name: the subclass name, else the base class name.
    pub fn class(&self, base: u8, sub: u8) -> String {
        let (subclass, class) = match &self.host {
            Some(ids) => (
                ids.subclasses.get(&(base, sub)).cloned(),
                ids.classes.get(&base).cloned(),
            ),
            None => (
                pci_ids::Subclass::from_cid_sid(base, sub).map(|s| s.name().to_owned()),
                pci_ids::Class::from_id(base).map(|c| c.name().to_owned()),
            ),
        };
        subclass.or(class).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# test\n10de  NVIDIA Corp (host file)\n\t1eb8  Tesla T4 (host file)\n\t\t10de 12a2  T4 16GB\nC 03  Display controller\n\t00  VGA compatible controller\n\t\t00  VGA controller\n";

    #[test]
    fn host_file_wins() {
        let names = DeviceNames::new(Some(SAMPLE));
        assert_eq!(names.vendor(0x10de), "NVIDIA Corp (host file)");
        assert_eq!(names.device(0x10de, 0x1eb8), "Tesla T4 (host file)");
        assert_eq!(names.subsystem(0x10de, 0x1eb8, 0x10de, 0x12a2), "T4 16GB");
        assert_eq!(names.class(3, 0), "VGA compatible controller");
        assert_eq!(names.class(3, 0x80), "Display controller");
        assert_eq!(names.vendor(0x8086), "");
    }

    #[test]
    fn compiled_in_fallback() {
        let names = DeviceNames::new(None);
        assert_eq!(names.vendor(0x8086), "Intel Corporation");
        assert_eq!(names.class(0x01, 0x08), "Non-Volatile memory controller");
        assert_eq!(names.class(0x0c, 0x03), "USB controller");
        assert!(!names.device(0x10de, 0x1eb8).is_empty());
    }

    /// libpci (`lib/names.c`, `id_lookup_subsys`): the entry listed under
    /// the device; else, only when the subsystem vendor and device are the
    /// device's own, the device's name; else nothing.
    #[test]
    fn subsystem_names_follow_libpci() {
        let host = DeviceNames::new(Some(SAMPLE));
        let compiled = DeviceNames::new(None);
        let t4 = compiled.device(0x10de, 0x1eb8);
        let igpu = compiled.device(0x8086, 0x3e92);
        assert!(!igpu.is_empty());
        let cases: [(&DeviceNames, [u16; 4], &str); 9] = [
            // Listed under the device.
            (&host, [0x10de, 0x1eb8, 0x10de, 0x12a2], "T4 16GB"),
            // Subsystem ids are the device's own: the device's name.
            (
                &host,
                [0x10de, 0x1eb8, 0x10de, 0x1eb8],
                "Tesla T4 (host file)",
            ),
            (&compiled, [0x10de, 0x1eb8, 0x10de, 0x1eb8], &t4),
            (&compiled, [0x8086, 0x3e92, 0x8086, 0x3e92], &igpu),
            // Only the vendor is the device's: no fallback.
            (&host, [0x10de, 0x1eb8, 0x10de, 0x0001], ""),
            (&compiled, [0x8086, 0x3e92, 0x8086, 0x0001], ""),
            // Only the device id is the device's: no fallback.
            (&host, [0x10de, 0x1eb8, 0x1043, 0x1eb8], ""),
            // Own ids, but the device itself is unknown: nothing.
            (&host, [0x8086, 0x3e92, 0x8086, 0x3e92], ""),
            (&compiled, [0x8086, 0xfffe, 0x8086, 0xfffe], ""),
        ];
        for (names, [v, d, sv, sd], want) in cases {
            assert_eq!(
                names.subsystem(v, d, sv, sd),
                want,
                "{v:04x}:{d:04x} subsystem {sv:04x}:{sd:04x}"
            );
        }
    }
}
