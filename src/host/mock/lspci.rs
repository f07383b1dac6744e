//! Importing a host from `lspci -mn` output.

use super::{MockDevice, MockHostBuilder};

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
