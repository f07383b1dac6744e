//! The built-in host shapes: demo, demo-uefi, debian, xen-efi, large and
//! scale-N.

use std::path::Path;
use std::str::FromStr;

use super::{MockDevice, MockError, MockHostBuilder};

/// A built-in host shape, by name: `demo`, `demo-uefi`, `debian`,
/// `xen-efi`, `large`, `scale-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A workstation-like server: iGPU, discrete GPU + audio, NVMe boot
    /// disk behind a root port, SATA, USB, NICs, an SR-IOV NIC.
    Demo,
    /// The demo booting with UEFI: XCP-ng's UEFI layout, grub.cfg at
    /// `boot/efi/EFI/xenserver/grub.cfg` (no `boot/grub/grub.cfg`), the
    /// loader `boot/efi/EFI/xenserver/grubx64.efi`, and EFI variables whose
    /// `BootCurrent` entry (`Boot0001`, "XCP-ng") names that loader.
    DemoUefi,
    /// The demo's devices on a Debian 12 Xen dom0 booted by GRUB:
    /// `etc/default/grub`, `etc/default/grub.d/xen.cfg`, `boot/grub/grub.cfg`
    /// as Debian's `grub-mkconfig` generated it, the kernel, initrd, config
    /// and Xen files `grub-mkconfig` needs to regenerate it, kernel
    /// 6.1.0-28-amd64 with xen-pciback built as a module, no inventory.
    Debian,
    /// The demo plus SR-IOV NICs to reach 4096+ functions.
    Large,
    /// The demo plus SR-IOV NICs (a PF and 127 VFs each) to reach at
    /// least this many functions (`scale-N`), for scale benchmarks.
    Scale(usize),
    /// The demo's devices on a Debian 12 dom0 started by Xen's own EFI
    /// loader: `boot/efi/EFI/xen/xen.efi` and its `xen.cfg` (`[global]
    /// default=`, `options=`, `kernel=FILE dom0 args`, `ramdisk=`), EFI
    /// variables whose `BootCurrent` entry names that loader, no grub.cfg;
    /// the `debian` profile's kernel, with xen-pciback a module.
    XenEfi,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "demo" => Ok(Profile::Demo),
            "demo-uefi" => Ok(Profile::DemoUefi),
            "debian" => Ok(Profile::Debian),
            "large" => Ok(Profile::Large),
            "xen-efi" => Ok(Profile::XenEfi),
            other => match other.strip_prefix("scale-").and_then(|n| n.parse().ok()) {
                Some(n) if n <= 65_536 => Ok(Profile::Scale(n)),
                _ => Err(format!(
                    "unknown profile {other:?} (profiles: demo, demo-uefi, debian, xen-efi, large, scale-N)"
                )),
            },
        }
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
        Profile::Demo | Profile::DemoUefi | Profile::Debian | Profile::XenEfi => 0,
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

/// Debian 12's os-release.
const DEBIAN_OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"
NAME=\"Debian GNU/Linux\"
VERSION_ID=\"12\"
VERSION=\"12 (bookworm)\"
VERSION_CODENAME=bookworm
ID=debian
";

/// Create a mock host of `profile` in `dir`.
pub fn create(dir: &Path, profile: Profile) -> Result<(), MockError> {
    match profile {
        Profile::XenEfi => {
            profile_builder(profile)
                .inventory(None)
                .os_release(Some(DEBIAN_OS_RELEASE))
                .kernel_release(DEBIAN_KERNEL)
                .pciback_module()
                .write(dir)?;
            debian_modules(dir)?;
            xen_efi_boot(dir)?;
            installed_initramfs(dir)
        }
        Profile::DemoUefi => {
            profile_builder(profile).write(dir)?;
            demo_uefi_boot(dir)
        }
        Profile::Debian => {
            profile_builder(profile)
                .inventory(None)
                .os_release(Some(DEBIAN_OS_RELEASE))
                .kernel_release(DEBIAN_KERNEL)
                .pciback_module()
                .xen_extra(".5")
                .write(dir)?;
            debian_modules(dir)?;
            debian_boot(dir)?;
            installed_initramfs(dir)
        }
        Profile::Demo | Profile::Large | Profile::Scale(_) => profile_builder(profile).write(dir),
    }
}

/// The initramfs images as the installer left them: built from the
/// files as shipped (xen-pciback not listed), and the ESP's copy the same
/// as `/boot`'s where Xen's EFI loader boots one.
fn installed_initramfs(dir: &Path) -> Result<(), MockError> {
    let host = crate::host::HostRoot::new(dir);
    super::initramfs::rebuild_all(&host)?;
    let image = host.read(&format!("boot/initrd.img-{DEBIAN_KERNEL}"))?;
    let esp_copy = format!("boot/efi/EFI/xen/initrd.img-{DEBIAN_KERNEL}");
    if host.exists(&esp_copy) {
        crate::host::boot::replace_atomic(&host, &esp_copy, &image)?;
    }
    Ok(())
}

/// The bytes of the mock kernel image `release` (its `/boot` file and any
/// copy of it, so that a copy can be told by its bytes).
fn kernel_image(release: &str) -> Vec<u8> {
    format!("a mock Linux kernel image, release {release}\n").into_bytes()
}

/// A `MockError::Io` maker for a host-relative path.
fn io_at(what: &str) -> impl FnOnce(std::io::Error) -> MockError + '_ {
    move |source| MockError::Io {
        path: what.to_owned(),
        source,
    }
}

/// Write `bytes` at host-relative `rel` under `dir`, parents included.
fn put(dir: &Path, rel: &str, bytes: &[u8]) -> Result<(), MockError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(rel))?;
    }
    std::fs::write(&path, bytes).map_err(io_at(rel))
}

/// Write the EFI variables of a firmware that booted `Boot0001`, named
/// `description`, whose loader is `loader` on the ESP (`\EFI\...`).
fn efi_boot_vars(dir: &Path, description: &str, loader: &str) -> Result<(), MockError> {
    use crate::host::efi;
    let guid = efi::EFI_GLOBAL_GUID;
    put(
        dir,
        &format!("{}/BootCurrent-{guid}", efi::EFIVARS),
        &efi::encode_boot_current(1),
    )?;
    put(
        dir,
        &format!("{}/Boot0001-{guid}", efi::EFIVARS),
        &efi::encode_load_option(description, loader),
    )
}

/// Where XCP-ng's UEFI installation keeps grub.cfg, host-relative.
const XCP_NG_EFI_GRUB_CFG: &str = "boot/efi/EFI/xenserver/grub.cfg";

/// Turn a written demo tree into one booted with UEFI the way XCP-ng
/// installs it: grub.cfg moves to the ESP's `EFI/xenserver/`, next to
/// the GRUB loader the firmware's `BootCurrent` entry names.
fn demo_uefi_boot(dir: &Path) -> Result<(), MockError> {
    let bios = "boot/grub/grub.cfg";
    let cfg = std::fs::read(dir.join(bios)).map_err(io_at(bios))?;
    put(dir, XCP_NG_EFI_GRUB_CFG, &cfg)?;
    put(dir, "boot/efi/EFI/xenserver/grubx64.efi", b"")?;
    efi_boot_vars(dir, "XCP-ng", "\\EFI\\xenserver\\grubx64.efi")?;
    std::fs::remove_file(dir.join(bios)).map_err(io_at(bios))?;
    // The empty `boot/grub` directory goes too: no BIOS GRUB on this host.
    let _ = std::fs::remove_dir(dir.join("boot/grub"));
    Ok(())
}

/// The Debian 12 kernel release of the `debian` profile.
const DEBIAN_KERNEL: &str = "6.1.0-28-amd64";

/// `etc/default/grub` as grub2-common 2.06-13+deb12u2 installs it
/// (`data/debian12/README.md` says where each file comes from).
const DEBIAN_DEFAULT_GRUB: &[u8] = include_bytes!("data/debian12/grub");

/// `etc/default/grub.d/xen.cfg` as xen-hypervisor-common 4.17 ships it
/// (unchanged: `XEN_OVERRIDE_GRUB_DEFAULT` unset).
const DEBIAN_XEN_CFG: &[u8] = include_bytes!("data/debian12/xen.cfg");

/// `boot/grub/grub.cfg` as Debian's real `grub-mkconfig` generated it for
/// this root (`tests/python/test_grub_mkconfig.py` regenerates it and
/// checks it is byte for byte the same).
const DEBIAN_GRUB_CFG: &[u8] = include_bytes!("data/debian12/generated-grub.cfg");

/// What the dom0 kernel gets from the default entry of
/// [`DEBIAN_GRUB_CFG`], 'Debian GNU/Linux, with Xen hypervisor': the
/// arguments after the kernel path of its line
/// `module2 /boot/vmlinuz-6.1.0-28-amd64 placeholder root=/dev/nvme0n1p2 ro  quiet`
/// (line 180), as GRUB joins words (one space) and Xen passes them on
/// (loaded by GRUB 2, Xen keeps the first word, so `placeholder` stays).
const DEBIAN_DOM0_CMDLINE: &str = "placeholder root=/dev/nvme0n1p2 ro quiet";

/// A Multiboot2 header (magic `0xe85250d6`, architecture 0, length 24,
/// checksum, end tag), which `grub-file --is-x86-multiboot2` looks for;
/// the Xen file is this, zero padded to 64 bytes.
const MULTIBOOT2_HEADER: [u8; 24] = [
    0xd6, 0x50, 0x52, 0xe8, 0, 0, 0, 0, 24, 0, 0, 0, 0x12, 0xaf, 0xad, 0x17, 0, 0, 0, 0, 8, 0, 0, 0,
];

/// Built-in modules of Debian's 6.1 amd64 kernel (a short excerpt of
/// `modules.builtin`; xen-pciback is not among them).
const DEBIAN_MODULES_BUILTIN: &str = "kernel/fs/binfmt_script.ko
kernel/fs/nls/nls_base.ko
kernel/crypto/crypto.ko
kernel/crypto/crypto_algapi.ko
kernel/lib/zlib_inflate/zlib_inflate.ko
kernel/lib/xz/xz_dec.ko
kernel/lib/zstd/zstd_decompress.ko
kernel/drivers/xen/xenbus/xenbus_probe_frontend.ko
kernel/drivers/tty/serial/serial_core.ko
kernel/drivers/tty/serial/8250/8250.ko
kernel/drivers/tty/serial/8250/8250_base.ko
kernel/drivers/base/firmware_loader/firmware_class.ko
kernel/drivers/input/input-core.ko
kernel/drivers/rtc/rtc-cmos.ko
kernel/net/unix/unix.ko
kernel/net/ipv6/ipv6.ko
";

/// `etc/initramfs-tools/modules` with no module listed (as
/// initramfs-tools ships it: comments only).
const DEBIAN_INITRAMFS_MODULES: &str = "# Modules to add to the initramfs, one per line, as NAME or
# NAME ARGUMENTS (for example: xen-pciback hide=(0000:01:00.0)).
# Run update-initramfs -u after editing.
";

/// Turn a written demo tree into a Debian 12 Xen dom0: GRUB's inputs and
/// the grub.cfg Debian's `grub-mkconfig` made from them, the boot files it
/// needs to make it again, and the command line the default entry boots.
fn debian_boot(dir: &Path) -> Result<(), MockError> {
    let kernel = DEBIAN_KERNEL;
    let mut xen = MULTIBOOT2_HEADER.to_vec();
    xen.resize(64, 0);
    // The builder wrote its own dom0 arguments; this host boots grub.cfg's.
    let cmdline = format!("{DEBIAN_DOM0_CMDLINE}\n");
    let files: [(String, &[u8]); 8] = [
        ("etc/default/grub".into(), DEBIAN_DEFAULT_GRUB),
        ("etc/default/grub.d/xen.cfg".into(), DEBIAN_XEN_CFG),
        (format!("boot/vmlinuz-{kernel}"), b""),
        (format!("boot/initrd.img-{kernel}"), b""),
        (format!("boot/config-{kernel}"), b"CONFIG_XEN_DOM0=y\n"),
        ("boot/xen-4.17-amd64.gz".into(), &xen),
        ("proc/cmdline".into(), cmdline.as_bytes()),
        // Last, as update-grub runs after the packages it reads: grub.cfg
        // is not older than any of its inputs.
        ("boot/grub/grub.cfg".into(), DEBIAN_GRUB_CFG),
    ];
    for (rel, bytes) in &files {
        put(dir, rel, bytes)?;
    }
    Ok(())
}

/// The kernel side of a Debian 12 dom0 (Debian's 6.1 kernel): its
/// `modules.builtin` without xen-pciback, the xen-pciback module file, the
/// initramfs-tools module list as shipped, and each native driver's
/// `module` link in sysfs. xen-pciback is not loaded.
fn debian_modules(dir: &Path) -> Result<(), MockError> {
    let kernel = DEBIAN_KERNEL;
    let pciback = format!("lib/modules/{kernel}/kernel/drivers/xen/xen-pciback/xen-pciback.ko");
    let files: [(String, &[u8]); 3] = [
        (
            format!("lib/modules/{kernel}/modules.builtin"),
            DEBIAN_MODULES_BUILTIN.as_bytes(),
        ),
        (pciback, b""),
        (
            "etc/initramfs-tools/modules".into(),
            DEBIAN_INITRAMFS_MODULES.as_bytes(),
        ),
    ];
    for (rel, bytes) in &files {
        put(dir, rel, bytes)?;
    }
    // Each driver's `module` link, as sysfs shows a driver a module
    // provides (Debian builds these as modules; `pcieport` and the uncore
    // driver are built in, so they have none).
    for (driver, module) in DEBIAN_DRIVER_MODULES {
        let drivers = format!("sys/bus/pci/drivers/{driver}");
        let modules = format!("sys/module/{module}");
        for d in [&drivers, &modules] {
            std::fs::create_dir_all(dir.join(d)).map_err(io_at(d))?;
        }
        super::symlink(
            &super::relative(&drivers, &modules),
            &dir.join(format!("{drivers}/module")),
        )?;
    }
    Ok(())
}

/// The demo's drivers that Debian's kernel has as modules, with the module
/// that provides each (a driver's name is not always its module's:
/// `xhci_hcd` is registered by `xhci_pci`).
const DEBIAN_DRIVER_MODULES: [(&str, &str); 9] = [
    ("i915", "i915"),
    ("nouveau", "nouveau"),
    ("snd_hda_intel", "snd_hda_intel"),
    ("xhci_hcd", "xhci_pci"),
    ("ahci", "ahci"),
    ("nvme", "nvme"),
    ("e1000e", "e1000e"),
    ("i40e", "i40e"),
    ("iavf", "iavf"),
];

/// Turn a written demo tree into one booted by Xen's EFI loader: the
/// running command line becomes the dom0 arguments of `xen.cfg`'s
/// default section, and grub.cfg goes.
fn xen_efi_boot(dir: &Path) -> Result<(), MockError> {
    use crate::host::efi;
    let io = |what: &str| {
        let path = what.to_owned();
        move |source: std::io::Error| MockError::Io { path, source }
    };
    let cmdline = std::fs::read_to_string(dir.join("proc/cmdline")).map_err(io("proc/cmdline"))?;
    let esp = dir.join("boot/efi/EFI/xen");
    std::fs::create_dir_all(&esp).map_err(io("boot/efi/EFI/xen"))?;
    let cfg = format!(
        "# Xen's EFI loader configuration (docs/misc/efi.pandoc)\n\
         [global]\n\
         default=debian-xen\n\
         \n\
         [debian-xen]\n\
         options=dom0_mem=4096M,max:4096M iommu=1\n\
         kernel=vmlinuz-6.1.0-28-amd64 {}\n\
         ramdisk=initrd.img-6.1.0-28-amd64\n",
        cmdline.trim_end()
    );
    // Debian's kernel package installs to /boot; the operator copied the
    // kernel and its initramfs beside xen.efi, where the loader reads them.
    let kernel = kernel_image(DEBIAN_KERNEL);
    for (rel, bytes) in [
        (format!("boot/vmlinuz-{DEBIAN_KERNEL}"), &kernel[..]),
        (format!("boot/initrd.img-{DEBIAN_KERNEL}"), &b""[..]),
    ] {
        put(dir, &rel, bytes)?;
    }
    for (name, bytes) in [
        ("xen.cfg", cfg.as_bytes()),
        ("xen.efi", &b""[..]),
        ("vmlinuz-6.1.0-28-amd64", &kernel[..]),
        ("initrd.img-6.1.0-28-amd64", &b""[..]),
    ] {
        std::fs::write(esp.join(name), bytes).map_err(io(name))?;
    }
    let vars = dir.join(efi::EFIVARS);
    std::fs::create_dir_all(&vars).map_err(io(efi::EFIVARS))?;
    let guid = efi::EFI_GLOBAL_GUID;
    std::fs::write(
        vars.join(format!("BootCurrent-{guid}")),
        efi::encode_boot_current(1),
    )
    .map_err(io("BootCurrent"))?;
    std::fs::write(
        vars.join(format!("Boot0001-{guid}")),
        efi::encode_load_option("Xen", "\\EFI\\xen\\xen.efi"),
    )
    .map_err(io("Boot0001"))?;
    std::fs::remove_file(dir.join("boot/grub/grub.cfg")).map_err(io("boot/grub/grub.cfg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse() {
        assert_eq!("demo".parse::<Profile>(), Ok(Profile::Demo));
        assert_eq!("demo-uefi".parse::<Profile>(), Ok(Profile::DemoUefi));
        assert_eq!("debian".parse::<Profile>(), Ok(Profile::Debian));
        assert_eq!("xen-efi".parse::<Profile>(), Ok(Profile::XenEfi));
        assert_eq!("large".parse::<Profile>(), Ok(Profile::Large));
        assert_eq!("scale-300".parse::<Profile>(), Ok(Profile::Scale(300)));
        let err = "huge".parse::<Profile>().unwrap_err();
        for name in ["demo", "demo-uefi", "debian", "xen-efi", "large", "scale-N"] {
            assert!(err.contains(name), "{err} lists {name}");
        }
        assert!(profile_builder(Profile::Large).devices.len() >= 4096);
    }

    fn read(dir: &Path, rel: &str) -> Vec<u8> {
        std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    #[test]
    fn debian_has_grub_mkconfig_inputs_and_output() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create(dir, Profile::Debian).unwrap();
        for (rel, data) in [
            ("etc/default/grub", DEBIAN_DEFAULT_GRUB),
            ("etc/default/grub.d/xen.cfg", DEBIAN_XEN_CFG),
            ("boot/grub/grub.cfg", DEBIAN_GRUB_CFG),
        ] {
            assert_eq!(read(dir, rel), data, "{rel}");
        }
        assert!(!dir.join(crate::host::facts::INVENTORY).exists());
        assert_eq!(
            read(dir, crate::host::facts::OS_RELEASE),
            DEBIAN_OS_RELEASE.as_bytes()
        );
        assert!(read(dir, "boot/vmlinuz-6.1.0-28-amd64").is_empty());
        // The installer's initramfs: xen-pciback not in its module list.
        let image = read(dir, "boot/initrd.img-6.1.0-28-amd64");
        let files = crate::host::mock::initramfs::unpack(&image).unwrap();
        let list = &files
            .iter()
            .find(|(rel, _)| rel == "etc/initramfs-tools/modules")
            .unwrap()
            .1;
        assert!(
            !list
                .split(|b| *b == b'\n')
                .any(|l| l.trim_ascii() == b"xen-pciback")
        );
        assert_eq!(
            read(dir, "boot/config-6.1.0-28-amd64"),
            b"CONFIG_XEN_DOM0=y\n"
        );
        // The README's printf, then 40 zero bytes.
        let mut xen = b"\xd6PR\xe8\0\0\0\0\x18\0\0\0\x12\xaf\xad\x17\0\0\0\0\x08\0\0\0".to_vec();
        xen.extend([0; 40]);
        assert_eq!(read(dir, "boot/xen-4.17-amd64.gz"), xen);
        let magic = u32::from_le_bytes([xen[0], xen[1], xen[2], xen[3]]);
        let sum = [0usize, 4, 8, 12].iter().fold(0u32, |acc, &at| {
            acc.wrapping_add(u32::from_le_bytes([
                xen[at],
                xen[at + 1],
                xen[at + 2],
                xen[at + 3],
            ]))
        });
        assert_eq!((magic, sum), (0xe852_50d6, 0), "multiboot2 header");
        assert_eq!(
            read(dir, crate::host::facts::KERNEL_RELEASE),
            b"6.1.0-28-amd64\n"
        );
        assert_eq!(read(dir, crate::host::facts::XEN_MAJOR), b"4\n");
        assert_eq!(read(dir, crate::host::facts::XEN_MINOR), b"17\n");
        let builtin =
            String::from_utf8(read(dir, "lib/modules/6.1.0-28-amd64/modules.builtin")).unwrap();
        let lines: Vec<&str> = builtin.lines().collect();
        assert!((10..=30).contains(&lines.len()));
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("kernel/") && l.ends_with(".ko"))
        );
        assert!(!builtin.contains("pciback"));
        assert!(
            read(
                dir,
                "lib/modules/6.1.0-28-amd64/kernel/drivers/xen/xen-pciback/xen-pciback.ko"
            )
            .is_empty()
        );
        let modules = String::from_utf8(read(dir, "etc/initramfs-tools/modules")).unwrap();
        assert!(modules.lines().all(|l| l.starts_with('#')));
        assert_eq!(
            read(dir, "proc/cmdline"),
            b"placeholder root=/dev/nvme0n1p2 ro quiet\n"
        );
        // The command line is the default Xen entry's dom0 line, words
        // joined by one space.
        let cfg = String::from_utf8(DEBIAN_GRUB_CFG.to_vec()).unwrap();
        let xen_entry = cfg
            .split("menuentry 'Debian GNU/Linux, with Xen hypervisor'")
            .nth(1)
            .unwrap();
        let module = xen_entry
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("module2\t/boot/vmlinuz-6.1.0-28-amd64 ")
            })
            .unwrap();
        assert_eq!(
            module.split_whitespace().collect::<Vec<_>>().join(" "),
            DEBIAN_DOM0_CMDLINE
        );
    }

    #[test]
    fn demo_uefi_boots_grub_from_the_esp() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create(dir, Profile::DemoUefi).unwrap();
        let demo_tmp = tempfile::tempdir().unwrap();
        create(demo_tmp.path(), Profile::Demo).unwrap();
        assert_eq!(
            read(dir, XCP_NG_EFI_GRUB_CFG),
            read(demo_tmp.path(), "boot/grub/grub.cfg")
        );
        assert!(!dir.join("boot/grub/grub.cfg").exists());
        assert!(read(dir, "boot/efi/EFI/xenserver/grubx64.efi").is_empty());
        assert_eq!(
            read(dir, crate::host::facts::OS_RELEASE),
            read(demo_tmp.path(), crate::host::facts::OS_RELEASE)
        );
        assert!(dir.join(crate::host::facts::INVENTORY).exists());
        assert_eq!(
            crate::host::efi::booted_loader(&crate::host::HostRoot::new(dir)).as_deref(),
            Some("boot/efi/EFI/xenserver/grubx64.efi")
        );
    }
}
