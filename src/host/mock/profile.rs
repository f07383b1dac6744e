//! The built-in host shapes: demo, large and scale-N.

use std::path::Path;
use std::str::FromStr;

use super::{MockDevice, MockError, MockHostBuilder};

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
    /// The demo's devices on a Debian 12 dom0 started by Xen's own EFI
    /// loader: `boot/efi/EFI/xen/xen.efi` and its `xen.cfg` (`[global]
    /// default=`, `options=`, `kernel=FILE dom0 args`, `ramdisk=`), EFI
    /// variables whose `BootCurrent` entry names that loader, no grub.cfg.
    XenEfi,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "demo" => Ok(Profile::Demo),
            "large" => Ok(Profile::Large),
            "xen-efi" => Ok(Profile::XenEfi),
            other => match other.strip_prefix("scale-").and_then(|n| n.parse().ok()) {
                Some(n) if n <= 65_536 => Ok(Profile::Scale(n)),
                _ => Err(format!(
                    "unknown profile {other:?} (profiles: demo, xen-efi, large, scale-N)"
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
        Profile::Demo | Profile::XenEfi => 0,
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
                .write(dir)?;
            xen_efi_boot(dir)
        }
        _ => profile_builder(profile).write(dir),
    }
}

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
    for (name, bytes) in [
        ("xen.cfg", cfg.as_bytes()),
        ("xen.efi", &b""[..]),
        ("vmlinuz-6.1.0-28-amd64", &b""[..]),
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
        assert!("huge".parse::<Profile>().is_err());
        assert!(profile_builder(Profile::Large).devices.len() >= 4096);
    }
}
