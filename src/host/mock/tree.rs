//! Writing a [`MockHostBuilder`] out as a directory tree, and the grub.cfg
//! template it writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    MockDevice, MockError, MockHostBuilder, driver_dir, io, link_driver, relative, symlink, write,
    write_boot_id,
};
use crate::host::{MOCK_HOST_MARKER, facts};
use crate::vocab::PciAddress;

const DOM0_BASE: &str = "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles";

/// `proc/meminfo` of a dom0 booted with `dom0_mem=7584M` (its start).
const MEMINFO: &str = "MemTotal:        7592376 kB
MemFree:         5421340 kB
MemAvailable:    6702188 kB
Buffers:          112864 kB
Cached:          1237520 kB
SwapCached:            0 kB
Active:           904312 kB
Inactive:         812644 kB
SwapTotal:       1048572 kB
SwapFree:        1048572 kB
";

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
            if d.pcie {
                write(&dev.join("current_link_speed"), "8.0 GT/s PCIe\n")?;
                write(&dev.join("current_link_width"), "4\n")?;
            }
            if !d.reset.is_empty() {
                write(
                    &dev.join("reset_method"),
                    &format!("{}\n", d.reset.join(" ")),
                )?;
                write(&dev.join("reset"), "")?;
            }
            symlink(
                &relative("sys/bus/pci/devices", rel),
                &at(&format!("sys/bus/pci/devices/{}", d.address)),
            )?;
            write(&dev.join("driver_override"), "")?;
            if let Some(driver) = &d.driver {
                write(&dev.join(".pcipass-driver"), &format!("{driver}\n"))?;
                link_driver(dir, rel, &d.address, driver)?;
            }
            if let Some(pf) = d.physfn.and_then(|pf| dirs.get(&pf)) {
                symlink(&relative(rel, pf), &dev.join("physfn"))?;
            }
            for (n, vf) in virtfns.get(&d.address).into_iter().flatten().enumerate() {
                symlink(&relative(rel, &dirs[vf]), &dev.join(format!("virtfn{n}")))?;
            }
        }
        driver_dir(dir, crate::host::pcibind::PCIBACK)?;
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
        self.write_facts(dir)
    }

    /// The files [`crate::host::facts`] reads, as on an XCP-ng 8.3.0 dom0
    /// unless the builder says otherwise.
    fn write_facts(&self, dir: &Path) -> Result<(), MockError> {
        let at = |rel: &str| -> PathBuf { dir.join(rel) };
        if let Some(text) = &self.inventory {
            write(&at(facts::INVENTORY), text)?;
        }
        if let Some(text) = &self.os_release {
            write(&at(facts::OS_RELEASE), text)?;
        }
        let kernel = self.kernel_release.as_deref().unwrap_or("4.19.0+1");
        write(&at(facts::KERNEL_RELEASE), &format!("{kernel}\n"))?;
        write(&at(facts::HOSTNAME), &format!("{}\n", self.hostname))?;
        write(&at(facts::XEN_MAJOR), "4\n")?;
        write(&at(facts::XEN_MINOR), "17\n")?;
        let extra = self.xen_extra.as_deref().unwrap_or(".5-3");
        write(&at(facts::XEN_EXTRA), &format!("{extra}\n"))?;
        write(
            &at(facts::XEN_CAPABILITIES),
            "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64\n",
        )?;
        write(&at(facts::MEMINFO), MEMINFO)?;
        // What pcipassd-xen-facts.service records of `xl info` at boot on
        // a host with its IOMMU on (`hvm_directio`, `pv_directio`).
        write(
            &at(facts::XL_INFO),
            &format!(
                "host                   : {}\n\
                 xen_version            : 4.17{extra}\n\
                 virt_caps              : pv hvm hvm_directio pv_directio hap shadow gnttab-v1 gnttab-v2\n",
                self.hostname
            ),
        )?;
        if !self.pciback_module {
            // XCP-ng's kernel builds xen-pciback in: its modules.builtin
            // (here the one line that matters) lists it, and sysfs shows a
            // built-in module with parameters as a directory with
            // `parameters/` and no `initstate`.
            write(
                &at(&format!("lib/modules/{kernel}/modules.builtin")),
                &format!("{}\n", crate::host::modules::PCIBACK_BUILTIN_PATH),
            )?;
            let params = format!("{}/parameters", crate::host::modules::SYS_MODULE_PCIBACK);
            for (name, value) in [
                ("passthrough", "0"),
                ("permissive", "N"),
                ("verbose_request", "0"),
            ] {
                write(&at(&format!("{params}/{name}")), &format!("{value}\n"))?;
            }
        }
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
