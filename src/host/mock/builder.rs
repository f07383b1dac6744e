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
    /// A PCIe function (sysfs gives it link attributes), or conventional.
    pub pcie: bool,
    /// Its reset methods (`reset_method`; empty: none).
    pub reset: Vec<String>,
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
            pcie: true,
            // Endpoints reset by FLR; bridges by none of their own.
            reset: if (class >> 8) == 0x0604 {
                Vec::new()
            } else {
                vec!["flr".to_owned(), "bus".to_owned()]
            },
        }
    }

    /// A conventional PCI function (no link attributes).
    pub fn conventional(mut self) -> MockDevice {
        self.pcie = false;
        self
    }

    /// With these reset methods (none: `&[]`).
    pub fn reset(mut self, methods: &[&str]) -> MockDevice {
        self.reset = methods.iter().map(|m| (*m).to_owned()).collect();
        self
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

/// `etc/os-release` of an XCP-ng 8.3.0 dom0.
pub const XCP_NG_OS_RELEASE: &str = "NAME=\"XCP-ng\"
VERSION=\"8.3.0\"
ID=\"xenenterprise\"
ID_LIKE=\"centos rhel fedora\"
VERSION_ID=\"8.3.0\"
PRETTY_NAME=\"XCP-ng 8.3.0\"
ANSI_COLOR=\"0;31\"
HOME_URL=\"https://xcp-ng.org/\"
BUG_REPORT_URL=\"https://github.com/xcp-ng/xcp/issues\"
";

/// `etc/xensource-inventory` of an XCP-ng 8.3.0 dom0, with fresh
/// installation and control-domain uuids.
pub fn xcp_ng_inventory() -> String {
    let installation = uuid::Uuid::new_v4();
    let control_domain = uuid::Uuid::new_v4();
    format!(
        "PRIMARY_DISK='/dev/disk/by-id/nvme-pcipass-mock'
BACKUP_PARTITION='/dev/disk/by-id/nvme-pcipass-mock-part2'
PRODUCT_BRAND='XCP-ng'
PRODUCT_NAME='xenenterprise'
PRODUCT_VERSION='8.3.0'
PRODUCT_VERSION_TEXT='8.3'
PRODUCT_VERSION_TEXT_SHORT='8.3'
PLATFORM_NAME='XCP'
PLATFORM_VERSION='3.4.0'
BUILD_NUMBER='cloud'
COMPANY_NAME='Vates'
COMPANY_NAME_SHORT='Vates'
INSTALLATION_UUID='{installation}'
CONTROL_DOMAIN_UUID='{control_domain}'
DOM0_MEM='7584'
DOM0_VCPUS='16'
MANAGEMENT_INTERFACE='xenbr0'
MANAGEMENT_ADDRESS_TYPE='IPv4'
CURRENT_INTERFACES='xenbr0'
"
    )
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
    /// The text of `etc/xensource-inventory` (`None`: no such file).
    pub inventory: Option<String>,
    /// The text of `etc/os-release` (`None`: no such file).
    pub os_release: Option<String>,
    /// The running kernel's release (`None`: XCP-ng 8.3's `4.19.0+1`).
    pub kernel_release: Option<String>,
    /// Xen's extra version after `4.17` (`None`: XCP-ng 8.3's `.5-3`).
    pub xen_extra: Option<String>,
    /// True when the kernel has xen-pciback as a module, whose files the
    /// profile writes itself; false (the default): built in, as XCP-ng's
    /// kernel has it (`modules.builtin` lists it, and
    /// `sys/module/xen_pciback` has parameters but no `initstate`).
    pub pciback_module: bool,
}

impl MockHostBuilder {
    /// An empty host.
    pub fn new() -> MockHostBuilder {
        MockHostBuilder {
            hostname: "pcipass-mock".into(),
            inventory: Some(xcp_ng_inventory()),
            os_release: Some(XCP_NG_OS_RELEASE.to_owned()),
            ..MockHostBuilder::default()
        }
    }

    /// With this `etc/xensource-inventory` text (`None`: no inventory).
    pub fn inventory(mut self, text: Option<&str>) -> MockHostBuilder {
        self.inventory = text.map(str::to_owned);
        self
    }

    /// With this `etc/os-release` text (`None`: no os-release).
    pub fn os_release(mut self, text: Option<&str>) -> MockHostBuilder {
        self.os_release = text.map(str::to_owned);
        self
    }

    /// With this running kernel release (`proc/sys/kernel/osrelease`).
    pub fn kernel_release(mut self, release: &str) -> MockHostBuilder {
        self.kernel_release = Some(release.to_owned());
        self
    }

    /// With this Xen extra version (`sys/hypervisor/version/extra`, the
    /// part after `4.17`, e.g. `.5`).
    pub fn xen_extra(mut self, extra: &str) -> MockHostBuilder {
        self.xen_extra = Some(extra.to_owned());
        self
    }

    /// With a kernel that has xen-pciback as a module: the builder writes
    /// none of the built-in facts (the profile writes the module's).
    pub fn pciback_module(mut self) -> MockHostBuilder {
        self.pciback_module = true;
        self
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
