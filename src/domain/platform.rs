//! Functions the host's platform itself runs on, which no VM can drive:
//! the host bridge, the ISA (LPC) bridge with the legacy devices behind it,
//! memory controllers, interrupt controllers, timers, the RTC, the IOMMU,
//! the SMBus (memory SPD, sensors) and the BMC's IPMI interface. Hiding one
//! from dom0 takes something the host needs and gives a VM nothing it can
//! use, so every edit that newly hides one is refused.
//!
//! The class codes are the PCI SIG's, as Linux names them in
//! `include/linux/pci_ids.h` (`PCI_CLASS_BRIDGE_HOST` 0x0600,
//! `PCI_CLASS_BRIDGE_ISA` 0x0601, `PCI_BASE_CLASS_MEMORY` 0x05,
//! `PCI_CLASS_SYSTEM_PIC` 0x0800 .. `PCI_CLASS_SYSTEM_RTC` 0x0803,
//! `PCI_CLASS_SYSTEM_IOMMU` 0x0806, `PCI_CLASS_SERIAL_SMBUS` 0x0c05,
//! `PCI_CLASS_SERIAL_IPMI` 0x0c07).

/// What the function of `class` (sysfs `class`, `0xBBSSPP`) is, when it
/// is one the platform itself uses; `None` for any other.
pub fn platform_class(class: u32) -> Option<&'static str> {
    let (base, sub) = ((class >> 16) & 0xff, (class >> 8) & 0xff);
    Some(match (base, sub) {
        (0x05, 0x00) => "RAM controller",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x02) => "EISA bridge",
        (0x06, 0x03) => "MicroChannel bridge",
        (0x08, 0x00) => "interrupt controller",
        (0x08, 0x01) => "DMA controller",
        (0x08, 0x02) => "system timer",
        (0x08, 0x03) => "real-time clock",
        (0x08, 0x06) => "IOMMU",
        (0x0c, 0x05) => "SMBus controller",
        (0x0c, 0x07) => "IPMI interface",
        _ => return None,
    })
}

/// The class of sysfs's `class` text (`0x0c0500`); `None` when it is not
/// one.
pub fn parse_class(text: &str) -> Option<u32> {
    let digits = text.trim().strip_prefix("0x")?;
    (digits.len() == 6)
        .then(|| u32::from_str_radix(digits, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_own_classes_and_only_those() {
        for (class, want) in [
            ("0x060000", Some("host bridge")),
            ("0x060100", Some("ISA bridge")),
            ("0x0c0500", Some("SMBus controller")),
            ("0x0c0701", Some("IPMI interface")),
            ("0x058000", Some("memory controller")),
            ("0x050000", Some("RAM controller")),
            ("0x080020", Some("interrupt controller")),
            ("0x080600", Some("IOMMU")),
            ("0x080300", Some("real-time clock")),
            // What VMs are given: GPUs, audio, NICs, storage, USB, and
            // the system peripherals that are devices (SD host 0x0805).
            ("0x030000", None),
            ("0x040300", None),
            ("0x020000", None),
            ("0x010802", None),
            ("0x0c0330", None),
            ("0x080500", None),
            ("0x088000", None),
            // PCI-to-PCI bridges are not this rule's: their entry hides
            // what is behind them.
            ("0x060400", None),
        ] {
            let parsed = parse_class(class).unwrap();
            assert_eq!(platform_class(parsed), want, "{class}");
        }
        for bad in ["", "0x", "0x0c05", "0c0500", "0xzz0500", "0x0c050000"] {
            assert_eq!(parse_class(bad), None, "{bad:?}");
        }
    }
}
