//! Whether dom0's console is on a PCI function now. The kernel puts its
//! text console (`vgacon`) and its framebuffer console (`fbcon`, on the
//! primary framebuffer) on the boot VGA device, so a function carries
//! the console when it is that device and a console other than the dummy
//! one is bound to the virtual terminals. Taking it from dom0 now would
//! leave the host without a local console.

use crate::host::console::VtConsole;

/// The console on the function, if `boot_vga` and a real console is
/// bound: its name without the kernel's `(M)`/`(S)` mark.
pub fn console_on(boot_vga: bool, consoles: &[VtConsole]) -> Option<String> {
    if !boot_vga {
        return None;
    }
    consoles
        .iter()
        .filter(|c| c.bound)
        .map(|c| {
            c.name
                .split_once(") ")
                .map_or(c.name.as_str(), |(_, rest)| rest)
                .to_owned()
        })
        .find(|name| !name.is_empty() && name != "dummy device")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vt(name: &str, bound: bool) -> VtConsole {
        VtConsole {
            name: name.into(),
            bound,
        }
    }

    #[test]
    fn the_boot_vga_device_with_a_real_console_bound() {
        // As a Debian 12 dom0 shows it once bochs-drm took over the VGA.
        let fbcon = [
            vt("(S) dummy device", false),
            vt("(M) frame buffer device", true),
        ];
        for (boot_vga, consoles, want) in [
            (true, &fbcon[..], Some("frame buffer device")),
            (false, &fbcon[..], None),
            (true, &[vt("(S) VGA+", true)][..], Some("VGA+")),
            // Only the dummy console: nothing to lose (serial-only host).
            (true, &[vt("(S) dummy device", true)][..], None),
            (true, &[vt("(M) frame buffer device", false)][..], None),
            (true, &[][..], None),
        ] {
            assert_eq!(
                console_on(boot_vga, consoles).as_deref(),
                want,
                "{boot_vga} {consoles:?}"
            );
        }
    }
}
