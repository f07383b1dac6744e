//! The builder types: functions, disks, dm/md devices and the host that
//! holds them.

use crate::vocab::PciAddress;

/// One PCI function of a mock host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockDevice {
    /// Address.
    pub address: PciAddress,
    /// The bridge it sits behind (`None`: the root complex).
    pub parent: Option<PciAddress>,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Subsystem vendor and device.
    pub subsystem: (u16, u16),
    /// Revision.
    pub revision: u8,
    /// Its own driver.
    pub driver: Option<String>,
    /// `boot_vga` for display devices.
    pub boot_vga: Option<bool>,
    /// The physical function of a VF.
    pub physfn: Option<PciAddress>,
}

impl MockDevice {
    /// A device with defaults for everything but address, ids and class.
    pub fn new(address: &str, vendor: u16, device: u16, class: u32) -> MockDevice {
        MockDevice {
            address: address.parse().unwrap_or(PciAddress {
                domain: 0,
                bus: 0,
                slot: 0,
                function: 0,
            }),
            parent: None,
            vendor,
            device,
            class,
            subsystem: (vendor, device),
            revision: 1,
            driver: None,
            boot_vga: ((class >> 16) == 0x03).then_some(false),
            physfn: None,
        }
    }

    /// Behind bridge `parent`.
    pub fn behind(mut self, parent: &str) -> MockDevice {
        self.parent = parent.parse().ok();
        self
    }

    /// Bound to `driver`.
    pub fn driver(mut self, driver: &str) -> MockDevice {
        self.driver = Some(driver.to_owned());
        self
    }

    /// With these subsystem ids.
    pub fn subsystem(mut self, vendor: u16, device: u16) -> MockDevice {
        self.subsystem = (vendor, device);
        self
    }

    /// The firmware's boot display.
    pub fn boot_vga(mut self) -> MockDevice {
        self.boot_vga = Some(true);
        self
    }

    /// A VF of `pf`.
    pub fn vf_of(mut self, pf: &str) -> MockDevice {
        self.physfn = pf.parse().ok();
        self
    }
}

/// A disk on a device, with partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockDisk {
    /// Block device name, e.g. `nvme0n1`.
    pub name: String,
    /// Controller.
    pub controller: PciAddress,
    /// Path below the controller's directory, e.g. `nvme/nvme0/nvme0n1`.
    pub subpath: String,
    /// Partition names.
    pub partitions: Vec<String>,
}

/// A device-mapper or md device built on other block devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockVirtualDisk {
    /// Kernel name (`dm-0`, `md0`).
    pub name: String,
    /// For dm: the `/dev/mapper` name.
    pub dm_name: Option<String>,
    /// Underlying block devices.
    pub slaves: Vec<String>,
}

/// Builds mock hosts of any shape.
#[derive(Debug, Clone, Default)]
pub struct MockHostBuilder {
    /// Functions.
    pub devices: Vec<MockDevice>,
    /// Disks.
    pub disks: Vec<MockDisk>,
    /// dm / md devices.
    pub virtual_disks: Vec<MockVirtualDisk>,
    /// Mounts: (source, mount point, fs type).
    pub mounts: Vec<(String, String, String)>,
    /// Host name.
    pub hostname: String,
    /// Extra dom0 arguments for grub.cfg and `proc/cmdline`.
    pub dom0_extra: String,
}

impl MockHostBuilder {
    /// An empty host.
    pub fn new() -> MockHostBuilder {
        MockHostBuilder {
            hostname: "pcipass-mock".into(),
            ..MockHostBuilder::default()
        }
    }

    /// Add a function.
    pub fn device(mut self, device: MockDevice) -> MockHostBuilder {
        self.devices.push(device);
        self
    }

    /// Add a disk.
    pub fn disk(
        mut self,
        name: &str,
        controller: &str,
        subpath: &str,
        partitions: &[&str],
    ) -> MockHostBuilder {
        if let Ok(controller) = controller.parse() {
            self.disks.push(MockDisk {
                name: name.into(),
                controller,
                subpath: subpath.into(),
                partitions: partitions.iter().map(|p| (*p).to_owned()).collect(),
            });
        }
        self
    }

    /// Add a dm (`dm_name` set) or md device.
    pub fn virtual_disk(
        mut self,
        name: &str,
        dm_name: Option<&str>,
        slaves: &[&str],
    ) -> MockHostBuilder {
        self.virtual_disks.push(MockVirtualDisk {
            name: name.into(),
            dm_name: dm_name.map(str::to_owned),
            slaves: slaves.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Mount `source` on `point`.
    pub fn mount(mut self, source: &str, point: &str, fstype: &str) -> MockHostBuilder {
        self.mounts
            .push((source.into(), point.into(), fstype.into()));
        self
    }
}
