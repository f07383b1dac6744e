//! Mock hosts: real directory trees laid out like a dom0 root, for tests,
//! demos and benchmarks.
//!
//! A mock host has `sys/devices/pci0000:00/...` device directories with
//! attribute files, `sys/bus/pci/devices/*` links to them, `driver`,
//! `physfn` and `virtfnN` links as in real sysfs, `sys/class/block/*` links
//! down to the PCI path of each disk, `proc/cmdline`,
//! `proc/self/mountinfo`, `boot/grub/grub.cfg` in XCP-ng's layout, and the
//! marker file. [`reboot`] applies a new command line: the driver links of
//! hidden devices point at `pciback`, the others back at their own driver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::host::{HostRoot, MOCK_HOST_MARKER};
use crate::vocab::PciAddress;

/// Why a mock host could not be built or rebooted.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The directory is not a mock host.
    #[error("{0} is not a mock host (no {MOCK_HOST_MARKER})")]
    NotMockHost(String),
    /// The directory exists and is not empty.
    #[error("{0} exists and is not empty")]
    NotEmpty(String),
}

/// A built-in host shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A workstation-like server: iGPU, discrete GPU + audio, NVMe boot
    /// disk behind a root port, SATA, USB, NICs, an SR-IOV NIC.
    Demo,
    /// The demo plus SR-IOV NICs to reach 4096+ functions.
    Large,
    /// The demo plus SR-IOV NICs (a PF and 127 VFs each) to reach at
    /// least this many functions (`scale-N`), for scale benchmarks.
    Scale(usize),
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "demo" => Ok(Profile::Demo),
            "large" => Ok(Profile::Large),
            other => match other.strip_prefix("scale-").and_then(|n| n.parse().ok()) {
                Some(n) if n <= 65_536 => Ok(Profile::Scale(n)),
                _ => Err(format!(
                    "unknown profile {other:?} (profiles: demo, large, scale-N)"
                )),
            },
        }
    }
}

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

const DOM0_BASE: &str = "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles";

/// The XCP-ng grub.cfg layout (entries `XCP-ng`, `XCP-ng (Serial)`, safe
/// mode and fallbacks) with `dom0` as the dom0 arguments.
pub fn grub_cfg(dom0: &str) -> String {
    let serial_dom0 = dom0.replace("console=hvc0 console=tty0", "console=tty0 console=hvc0");
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\nset default=0\nset timeout=5\n\
menuentry 'XCP-ng' {{\n\tsearch --label --set root root-pcipass\n\tmultiboot2 /boot/xen.gz dom0_mem=7584M,max:7584M watchdog ucode=scan dom0_max_vcpus=1-16 crashkernel=256M,below=4G console=vga vga=mode-0x0311\n\tmodule2 /boot/vmlinuz-4.19-xen {dom0}\n\tmodule2 /boot/initrd-4.19-xen.img\n}}\n\
menuentry 'XCP-ng (Serial)' {{\n\tsearch --label --set root root-pcipass\n\tmultiboot2 /boot/xen.gz com1=115200,8n1 console=com1,vga dom0_mem=7584M,max:7584M watchdog ucode=scan dom0_max_vcpus=1-16 crashkernel=256M,below=4G\n\tmodule2 /boot/vmlinuz-4.19-xen {serial_dom0}\n\tmodule2 /boot/initrd-4.19-xen.img\n}}\n\
menuentry 'XCP-ng in Safe Mode' {{\n\tsearch --label --set root root-pcipass\n\tmultiboot2 /boot/xen.gz nosmp noreboot noirqbalance no-mce no-bootscrub no-numa no-hap no-mmcfg max_cstate=0 nmi=ignore allow_unsafe dom0_mem=7584M,max:7584M com1=115200,8n1 console=com1,vga\n\tmodule2 /boot/vmlinuz-4.19-xen earlyprintk=xen root=LABEL=root-pcipass ro nolvm hpet=disable console=tty0 console=hvc0\n\tmodule2 /boot/initrd-4.19-xen.img\n}}\n\
menuentry 'XCP-ng (Xen 4.17.5 / Linux 4.19.0+1)' {{\n\tsearch --label --set root root-pcipass\n\tmultiboot2 /boot/xen-fallback.gz dom0_mem=7584M,max:7584M watchdog ucode=scan dom0_max_vcpus=1-16 crashkernel=256M,below=4G\n\tmodule2 /boot/vmlinuz-fallback root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0\n\tmodule2 /boot/initrd-fallback.img\n}}\n"
    )
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

    fn device_dirs(&self) -> BTreeMap<PciAddress, String> {
        let by_addr: BTreeMap<PciAddress, &MockDevice> =
            self.devices.iter().map(|d| (d.address, d)).collect();
        let mut dirs = BTreeMap::new();
        for d in &self.devices {
            let mut chain = vec![d.address];
            let mut cursor = d.parent.or_else(|| {
                d.physfn
                    .and_then(|pf| by_addr.get(&pf).and_then(|p| p.parent))
            });
            while let Some(p) = cursor {
                if chain.contains(&p) || chain.len() > 16 {
                    break;
                }
                chain.push(p);
                cursor = by_addr.get(&p).and_then(|x| x.parent);
            }
            chain.reverse();
            let mut path = format!("sys/devices/pci{:04x}:00", d.address.domain);
            for a in chain {
                path.push('/');
                path.push_str(&a.to_string());
            }
            dirs.insert(d.address, path);
        }
        dirs
    }

    /// Write the host under `dir` (which must be absent or empty).
    pub fn write(&self, dir: &Path) -> Result<(), MockError> {
        if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
            return Err(MockError::NotEmpty(dir.display().to_string()));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let at = |rel: &str| -> PathBuf { dir.join(rel) };
        write(&at(MOCK_HOST_MARKER), "pcipass mock host\n")?;
        write(&at("etc/hostname"), &format!("{}\n", self.hostname))?;
        let dirs = self.device_dirs();
        let mut virtfns: BTreeMap<PciAddress, Vec<PciAddress>> = BTreeMap::new();
        for d in &self.devices {
            if let Some(pf) = d.physfn {
                virtfns.entry(pf).or_default().push(d.address);
            }
        }
        for d in &self.devices {
            let rel = &dirs[&d.address];
            let dev = at(rel);
            std::fs::create_dir_all(&dev).map_err(io(&dev))?;
            let attrs = [
                ("vendor", format!("0x{:04x}\n", d.vendor)),
                ("device", format!("0x{:04x}\n", d.device)),
                ("class", format!("0x{:06x}\n", d.class)),
                ("subsystem_vendor", format!("0x{:04x}\n", d.subsystem.0)),
                ("subsystem_device", format!("0x{:04x}\n", d.subsystem.1)),
                ("revision", format!("0x{:02x}\n", d.revision)),
            ];
            for (name, value) in attrs {
                write(&dev.join(name), &value)?;
            }
            if let Some(vga) = d.boot_vga {
                write(&dev.join("boot_vga"), if vga { "1\n" } else { "0\n" })?;
            }
            symlink(
                &relative("sys/bus/pci/devices", rel),
                &at(&format!("sys/bus/pci/devices/{}", d.address)),
            )?;
            if let Some(driver) = &d.driver {
                write(&dev.join(".pcipass-driver"), &format!("{driver}\n"))?;
                std::fs::create_dir_all(at(&format!("sys/bus/pci/drivers/{driver}")))
                    .map_err(io(dir))?;
                symlink(
                    &relative(rel, &format!("sys/bus/pci/drivers/{driver}")),
                    &dev.join("driver"),
                )?;
            }
            if let Some(pf) = d.physfn.and_then(|pf| dirs.get(&pf)) {
                symlink(&relative(rel, pf), &dev.join("physfn"))?;
            }
            for (n, vf) in virtfns.get(&d.address).into_iter().flatten().enumerate() {
                symlink(&relative(rel, &dirs[vf]), &dev.join(format!("virtfn{n}")))?;
            }
        }
        std::fs::create_dir_all(at("sys/bus/pci/drivers/pciback")).map_err(io(dir))?;
        let mut minor = 0;
        let mut block_dirs: BTreeMap<String, String> = BTreeMap::new();
        for disk in &self.disks {
            let Some(ctrl) = dirs.get(&disk.controller) else {
                continue;
            };
            let disk_rel = format!("{ctrl}/{}", disk.subpath);
            block_dirs.insert(disk.name.clone(), disk_rel.clone());
            for part in &disk.partitions {
                block_dirs.insert(part.clone(), format!("{disk_rel}/{part}"));
            }
        }
        for v in &self.virtual_disks {
            block_dirs.insert(
                v.name.clone(),
                format!("sys/devices/virtual/block/{}", v.name),
            );
        }
        for (name, rel) in &block_dirs {
            let path = at(rel);
            minor += 1;
            write(&path.join("dev"), &format!("259:{minor}\n"))?;
            if self.disks.iter().any(|d| d.partitions.contains(name)) {
                write(&path.join("partition"), "1\n")?;
            }
            symlink(
                &relative("sys/class/block", rel),
                &at(&format!("sys/class/block/{name}")),
            )?;
            symlink(
                &relative("sys/dev/block", rel),
                &at(&format!("sys/dev/block/259:{minor}")),
            )?;
        }
        for v in &self.virtual_disks {
            let path = at(&block_dirs[&v.name]);
            if let Some(dm) = &v.dm_name {
                write(&path.join("dm/name"), &format!("{dm}\n"))?;
            }
            std::fs::create_dir_all(path.join("slaves")).map_err(io(&path))?;
            for s in &v.slaves {
                if let Some(target) = block_dirs.get(s) {
                    symlink(
                        &relative(&block_dirs[&v.name].clone().add_slaves(), target),
                        &path.join("slaves").join(s),
                    )?;
                }
            }
        }
        let mut mountinfo = String::new();
        for (i, (source, point, fstype)) in self.mounts.iter().enumerate() {
            let name = source
                .trim_start_matches("/dev/")
                .trim_start_matches("mapper/");
            let dev = block_dirs
                .get(name)
                .and_then(|rel| std::fs::read_to_string(at(rel).join("dev")).ok())
                .map(|d| d.trim().to_owned())
                .unwrap_or_else(|| "0:0".into());
            mountinfo.push_str(&format!(
                "{} 1 {dev} / {point} rw,relatime shared:{} - {fstype} {source} rw\n",
                20 + i,
                i + 1
            ));
        }
        write(&at("proc/self/mountinfo"), &mountinfo)?;
        let dom0 = format!("{DOM0_BASE}{}", self.dom0_extra);
        write(&at("proc/cmdline"), &format!("{dom0}\n"))?;
        write_boot_id(&at(crate::host::procfs::BOOT_ID))?;
        write(&at("boot/grub/grub.cfg"), &grub_cfg(&dom0))?;
        Ok(())
    }
}

trait SlavesDir {
    fn add_slaves(self) -> String;
}

impl SlavesDir for String {
    fn add_slaves(self) -> String {
        format!("{self}/slaves")
    }
}

fn demo_builder() -> MockHostBuilder {
    MockHostBuilder::new()
        .device(MockDevice::new("0000:00:00.0", 0x8086, 0x3e30, 0x060000).driver("skl_uncore"))
        .device(
            MockDevice::new("0000:00:02.0", 0x8086, 0x3e92, 0x030000)
                .driver("i915")
                .boot_vga(),
        )
        .device(MockDevice::new("0000:00:01.0", 0x8086, 0x1901, 0x060400).driver("pcieport"))
        .device(
            MockDevice::new("0000:01:00.0", 0x10de, 0x1e87, 0x030000)
                .behind("0000:00:01.0")
                .driver("nouveau")
                .subsystem(0x1043, 0x8670),
        )
        .device(
            MockDevice::new("0000:01:00.1", 0x10de, 0x10f8, 0x040300)
                .behind("0000:00:01.0")
                .driver("snd_hda_intel")
                .subsystem(0x1043, 0x8670),
        )
        .device(MockDevice::new("0000:00:14.0", 0x8086, 0xa36d, 0x0c0330).driver("xhci_hcd"))
        .device(MockDevice::new("0000:00:17.0", 0x8086, 0xa352, 0x010601).driver("ahci"))
        .device(MockDevice::new("0000:00:1d.0", 0x8086, 0xa330, 0x060400).driver("pcieport"))
        .device(
            MockDevice::new("0000:02:00.0", 0x144d, 0xa808, 0x010802)
                .behind("0000:00:1d.0")
                .driver("nvme")
                .subsystem(0x144d, 0xa801),
        )
        .device(MockDevice::new("0000:00:1f.6", 0x8086, 0x15bb, 0x020000).driver("e1000e"))
        .device(MockDevice::new("0000:00:1c.0", 0x8086, 0xa338, 0x060400).driver("pcieport"))
        .device(
            MockDevice::new("0000:03:00.0", 0x8086, 0x1572, 0x020000)
                .behind("0000:00:1c.0")
                .driver("i40e")
                .subsystem(0x8086, 0x0001),
        )
        .device(
            MockDevice::new("0000:03:00.1", 0x8086, 0x1572, 0x020000)
                .behind("0000:00:1c.0")
                .driver("i40e")
                .subsystem(0x8086, 0x0001),
        )
        .device(
            MockDevice::new("0000:03:02.0", 0x8086, 0x154c, 0x020000)
                .vf_of("0000:03:00.0")
                .driver("iavf"),
        )
        .device(
            MockDevice::new("0000:03:02.1", 0x8086, 0x154c, 0x020000)
                .vf_of("0000:03:00.0")
                .driver("iavf"),
        )
        .device(
            MockDevice::new("0000:03:02.2", 0x8086, 0x154c, 0x020000)
                .vf_of("0000:03:00.0")
                .driver("iavf"),
        )
        .device(
            MockDevice::new("0000:03:02.3", 0x8086, 0x154c, 0x020000)
                .vf_of("0000:03:00.0")
                .driver("iavf"),
        )
        .disk(
            "nvme0n1",
            "0000:02:00.0",
            "nvme/nvme0/nvme0n1",
            &["nvme0n1p1", "nvme0n1p2"],
        )
        .disk(
            "sda",
            "0000:00:17.0",
            "ata1/host0/target0:0:0/0:0:0:0/block/sda",
            &["sda1"],
        )
        .mount("/dev/nvme0n1p2", "/", "ext4")
        .mount("/dev/nvme0n1p1", "/boot/efi", "vfat")
}

/// The builder of a profile.
pub fn profile_builder(profile: Profile) -> MockHostBuilder {
    let mut builder = demo_builder();
    let nics = match profile {
        Profile::Demo => 0,
        // 32 SR-IOV NICs, each a PF with 127 VFs: 4096 functions.
        Profile::Large => 32,
        Profile::Scale(n) => n
            .saturating_sub(builder.devices.len())
            .div_ceil(128)
            .min(200),
    };
    {
        for nic in 0..nics as u8 {
            let bus = 0x10 + nic;
            let pf = format!("0000:{bus:02x}:00.0");
            builder =
                builder.device(MockDevice::new(&pf, 0x15b3, 0x101b, 0x020000).driver("mlx5_core"));
            for vf in 0..127u16 {
                let devfn = 0x10 + vf;
                let addr = format!("0000:{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7);
                builder = builder.device(
                    MockDevice::new(&addr, 0x15b3, 0x101c, 0x020000)
                        .vf_of(&pf)
                        .driver("mlx5_core"),
                );
            }
        }
    }
    builder
}

/// A builder for the machine that `lspci -mn` printed: every function at
/// its address (domain 0), flat under the root complex, no drivers.
pub fn from_lspci(text: &str) -> MockHostBuilder {
    let mut builder = MockHostBuilder::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let (mut prog_if, mut revision) = (0u32, 0u8);
        let mut rest = line.trim();
        let Some((slot, tail)) = rest.split_once(' ') else {
            continue;
        };
        rest = tail;
        while !rest.is_empty() {
            rest = rest.trim_start();
            if let Some(q) = rest.strip_prefix('"') {
                let end = q.find('"').unwrap_or(q.len());
                fields.push(q[..end].to_owned());
                rest = q.get(end + 1..).unwrap_or("");
            } else {
                let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some(p) = word.strip_prefix("-p") {
                    prog_if = u32::from_str_radix(p, 16).unwrap_or(0);
                } else if let Some(r) = word.strip_prefix("-r") {
                    revision = u8::from_str_radix(r, 16).unwrap_or(0);
                }
                rest = tail;
            }
        }
        let [class, vendor, device, sub_vendor, sub_device] = &fields[..] else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).unwrap_or(0);
        let mut d = MockDevice::new(
            &format!("0000:{slot}"),
            hex(vendor) as u16,
            hex(device) as u16,
            hex(class) << 8 | prog_if,
        );
        d.revision = revision;
        d.subsystem = (hex(sub_vendor) as u16, hex(sub_device) as u16);
        builder = builder.device(d);
    }
    builder
}

/// Create a mock host of `profile` in `dir`.
pub fn create(dir: &Path, profile: Profile) -> Result<(), MockError> {
    profile_builder(profile).write(dir)
}

/// A fresh boot id (a uuid, as the kernel makes) at `path`.
fn write_boot_id(path: &Path) -> Result<(), MockError> {
    write(path, &format!("{}\n", uuid::Uuid::new_v4()))
}

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
            Some("pciback".to_owned())
        } else {
            own
        };
        let link = host.path(&format!("{dev_rel}/driver"));
        let _ = std::fs::remove_file(&link);
        if let Some(driver) = driver {
            std::fs::create_dir_all(host.path(&format!("sys/bus/pci/drivers/{driver}")))
                .map_err(io(&link))?;
            symlink(
                &relative(&dev_rel, &format!("sys/bus/pci/drivers/{driver}")),
                &link,
            )?;
        }
    }
    Ok(())
}

/// Resolve `.` and `..` in a root-relative path.
fn normalize(path: &str) -> String {
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

    #[test]
    fn profiles_parse() {
        assert_eq!("demo".parse::<Profile>(), Ok(Profile::Demo));
        assert!("huge".parse::<Profile>().is_err());
        assert!(profile_builder(Profile::Large).devices.len() >= 4096);
    }
}
