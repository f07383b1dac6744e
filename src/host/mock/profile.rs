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

/// Create a mock host of `profile` in `dir`.
pub fn create(dir: &Path, profile: Profile) -> Result<(), MockError> {
    profile_builder(profile).write(dir)
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
