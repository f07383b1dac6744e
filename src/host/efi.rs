//! The EFI firmware's view of the boot, under the root: which loader it
//! started this time (`BootCurrent` and its `Boot####` entry in efivarfs,
//! `sys/firmware/efi/efivars`), and the `xen.cfg` files on the ESP
//! (`boot/efi/EFI/*/`).

use crate::host::HostRoot;

/// The efivarfs directory, host-relative.
pub const EFIVARS: &str = "sys/firmware/efi/efivars";

/// Where the ESP is mounted, host-relative.
pub const ESP: &str = "boot/efi";

/// The EFI global variable vendor GUID (`BootCurrent`, `Boot####`).
pub const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The boot number in an efivarfs `BootCurrent` file (4 bytes of
/// attributes, then a little-endian u16).
pub fn boot_current(var: &[u8]) -> Option<u16> {
    match var {
        [_, _, _, _, lo, hi, ..] => Some(u16::from_le_bytes([*lo, *hi])),
        _ => None,
    }
}

/// The file path of an efivarfs `Boot####` file: after the 4 bytes of
/// attributes, an `EFI_LOAD_OPTION` (UEFI spec 3.1.3: u32 attributes, u16
/// length of the device path list, the UCS-2 description ending in NUL,
/// the device path list); the path is the first media file path node
/// (type 4, subtype 4, UCS-2, NUL-terminated), `\` turned into `/`.
pub fn load_option_path(var: &[u8]) -> Option<String> {
    let option = var.get(4..)?;
    let list_len = usize::from(u16::from_le_bytes([*option.get(4)?, *option.get(5)?]));
    let mut at = 6;
    // The description: UCS-2 up to and including a NUL code unit.
    loop {
        let unit = u16::from_le_bytes([*option.get(at)?, *option.get(at + 1)?]);
        at += 2;
        if unit == 0 {
            break;
        }
    }
    let list = option.get(at..at.checked_add(list_len)?)?;
    let mut node = 0;
    while node + 4 <= list.len() {
        let (kind, subtype) = (list[node], list[node + 1]);
        let len = usize::from(u16::from_le_bytes([list[node + 2], list[node + 3]]));
        if len < 4 || node + len > list.len() {
            return None;
        }
        if kind == 0x7f {
            return None;
        }
        if kind == 4 && subtype == 4 {
            let units: Vec<u16> = list[node + 4..node + len]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            let path = String::from_utf16(&units).ok()?;
            return Some(path.replace('\\', "/"));
        }
        node += len;
    }
    None
}

/// An efivarfs `Boot####` file for a loader at `path` on the ESP (`\\EFI\\xen\\xen.efi`):
/// the variable's attributes, then an `EFI_LOAD_OPTION` with a hard-drive
/// node and a file-path node (what a firmware boot manager writes; mock
/// hosts use it).
pub fn encode_load_option(description: &str, path: &str) -> Vec<u8> {
    let ucs2 = |s: &str| -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    };
    let file = ucs2(path);
    let mut list = vec![4, 1, 42, 0];
    list.extend([0u8; 38]);
    list.extend([4, 4]);
    list.extend(
        u16::try_from(4 + file.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    list.extend(file);
    list.extend([0x7f, 0xff, 4, 0]);
    let mut var = vec![7, 0, 0, 0];
    var.extend(1u32.to_le_bytes());
    var.extend(u16::try_from(list.len()).unwrap_or(u16::MAX).to_le_bytes());
    var.extend(ucs2(description));
    var.extend(list);
    var
}

/// An efivarfs `BootCurrent` file for boot entry `number`.
pub fn encode_boot_current(number: u16) -> Vec<u8> {
    let mut var = vec![7, 0, 0, 0];
    var.extend(number.to_le_bytes());
    var
}

/// The loader the firmware booted this time, as a host-relative path on
/// the ESP (`boot/efi/EFI/xen/xen.efi`); `None` without EFI variables or
/// when they do not say.
pub fn booted_loader(host: &HostRoot) -> Option<String> {
    let current = host
        .read(&format!("{EFIVARS}/BootCurrent-{EFI_GLOBAL_GUID}"))
        .ok()?;
    let number = boot_current(&current)?;
    let entry = host
        .read(&format!("{EFIVARS}/Boot{number:04X}-{EFI_GLOBAL_GUID}"))
        .ok()?;
    let path = load_option_path(&entry)?;
    Some(format!("{ESP}/{}", path.trim_start_matches('/')))
}

/// The `xen.cfg`-like files (`*.cfg` whose name starts with `xen`) in the
/// ESP's `EFI/*/` directories, host-relative, sorted.
pub fn xen_cfgs(host: &HostRoot) -> Vec<String> {
    let efi_dir = format!("{ESP}/EFI");
    let mut found = Vec::new();
    for vendor in host.list_dir(&efi_dir).unwrap_or_default() {
        let dir = format!("{efi_dir}/{vendor}");
        for name in host.list_dir(&dir).unwrap_or_default() {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("xen") && lower.ends_with(".cfg") {
                found.push(format!("{dir}/{name}"));
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firmware_entry_names_the_loader() {
        let var = encode_load_option("Xen", "\\EFI\\xen\\xen.efi");
        assert_eq!(load_option_path(&var).as_deref(), Some("/EFI/xen/xen.efi"));
        assert_eq!(boot_current(&[7, 0, 0, 0, 0x02, 0x00]), Some(2));
        assert_eq!(boot_current(&[7, 0, 0]), None);
        assert_eq!(load_option_path(&var[..20]), None, "truncated");
        assert_eq!(load_option_path(&[]), None);
    }

    #[test]
    fn the_booted_loader_is_read_from_efivarfs() {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join(EFIVARS);
        std::fs::create_dir_all(&vars).unwrap();
        std::fs::write(
            vars.join(format!("BootCurrent-{EFI_GLOBAL_GUID}")),
            [7, 0, 0, 0, 0x0a, 0],
        )
        .unwrap();
        std::fs::write(
            vars.join(format!("Boot000A-{EFI_GLOBAL_GUID}")),
            encode_load_option("Xen", "\\EFI\\XEN\\XEN.EFI"),
        )
        .unwrap();
        let esp = dir.path().join("boot/efi/EFI/xen");
        std::fs::create_dir_all(&esp).unwrap();
        std::fs::write(esp.join("xen.cfg"), "[global]\n").unwrap();
        std::fs::write(esp.join("grub.cfg"), "").unwrap();
        let host = HostRoot::new(dir.path());
        assert_eq!(
            booted_loader(&host).as_deref(),
            Some("boot/efi/EFI/XEN/XEN.EFI")
        );
        assert_eq!(xen_cfgs(&host), ["boot/efi/EFI/xen/xen.cfg"]);
        assert_eq!(booted_loader(&HostRoot::new("/nonexistent")), None);
    }
}
