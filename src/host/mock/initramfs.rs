//! The initramfs images of a mock host. A real initramfs is a compressed
//! cpio archive an initramfs builder packs from the root; what decides
//! whether xen-pciback loads before the native drivers is which files it
//! packed: the module list (`etc/initramfs-tools/modules`, dracut's
//! configuration) and the modprobe configuration (`etc/modprobe.d`, where
//! the `softdep` lines are). A mock image carries exactly those files, as
//! they were when it was built: the mock reboot reads the image the boot
//! loader loads, not the root, so an image nobody rebuilt (or a copy on the
//! ESP nobody refreshed) boots as it would on a real host.
//!
//! The format: a first line [`MAGIC`], then per file a line
//! `file <host-relative path> <length>` followed by that many bytes and a
//! newline.

use super::MockError;
use crate::host::modules::{
    DRACUT_CONF, DRACUT_CONF_D, DRACUT_CONF_D_VENDOR, INITRAMFS_TOOLS_MODULES,
};
use crate::host::{HostError, HostRoot, boot};

/// The first line of a mock initramfs image.
pub const MAGIC: &str = "pcipass mock initramfs";

/// The modprobe configuration directory an initramfs carries.
const MODPROBE_D: &str = "etc/modprobe.d";

/// The files a mock image holds: path and bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// The files of `host` an initramfs builder would pack that decide early
/// loading, in a stable order.
pub fn packed_files(host: &HostRoot) -> Result<Files, HostError> {
    let mut files = Vec::new();
    for rel in [INITRAMFS_TOOLS_MODULES, DRACUT_CONF] {
        if let Some(bytes) = host.read_if_exists(rel)? {
            files.push((rel.to_owned(), bytes));
        }
    }
    for dir in [DRACUT_CONF_D_VENDOR, DRACUT_CONF_D, MODPROBE_D] {
        let mut names = host.list_dir_if_exists(dir)?.unwrap_or_default();
        names.retain(|n| n.ends_with(".conf"));
        names.sort();
        for name in names {
            let rel = format!("{dir}/{name}");
            if let Some(bytes) = host.read_if_exists(&rel)? {
                files.push((rel, bytes));
            }
        }
    }
    Ok(files)
}

/// An image holding `files`.
pub fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("{MAGIC}\n").into_bytes();
    for (rel, bytes) in files {
        out.extend_from_slice(format!("file {rel} {}\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    out
}

/// The files of a mock image; `None` when `image` is not one (a real
/// image, an empty file, a damaged one).
pub fn unpack(image: &[u8]) -> Option<Files> {
    let mut rest = image.strip_prefix(MAGIC.as_bytes())?.strip_prefix(b"\n")?;
    let mut files = Vec::new();
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(rest.get(..end)?).ok()?;
        let (rel, len) = header.strip_prefix("file ")?.rsplit_once(' ')?;
        let len: usize = len.parse().ok()?;
        let body = rest.get(end + 1..)?;
        let bytes = body.get(..len)?;
        rest = body.get(len..)?.strip_prefix(b"\n")?;
        files.push((rel.to_owned(), bytes.to_vec()));
    }
    Some(files)
}

/// What `update-initramfs -u -k all` (or `dracut --regenerate-all`) does
/// on a mock host: every `boot/initrd.img-*` and `boot/initramfs-*.img`
/// is rebuilt from the root's files as they are now.
pub fn rebuild_all(host: &HostRoot) -> Result<(), MockError> {
    if !host.is_mock() {
        return Err(MockError::NotMockHost(host.root().display().to_string()));
    }
    let image = pack(&packed_files(host)?);
    let mut names = host.list_dir_if_exists("boot")?.unwrap_or_default();
    names.retain(|n| is_image_name(n));
    for name in names {
        boot::replace_atomic(host, &format!("boot/{name}"), &image)?;
    }
    Ok(())
}

/// Whether `name` in `/boot` is an initramfs image: Debian's
/// `initrd.img-<release>` or dracut's `initramfs-<release>.img`.
pub fn is_image_name(name: &str) -> bool {
    name.starts_with("initrd.img-") || (name.starts_with("initramfs-") && name.ends_with(".img"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_round_trip() {
        let files = vec![
            (
                "etc/initramfs-tools/modules".to_owned(),
                b"# list\nxen-pciback\n".to_vec(),
            ),
            (
                "etc/modprobe.d/pcipass.conf".to_owned(),
                b"softdep e1000e pre: xen-pciback".to_vec(),
            ),
            ("etc/modprobe.d/empty.conf".to_owned(), Vec::new()),
        ];
        assert_eq!(unpack(&pack(&files)), Some(files));
        assert_eq!(unpack(&pack(&[])), Some(Vec::new()));
    }

    #[test]
    fn what_is_not_a_mock_image() {
        for image in [
            &b""[..],
            b"\x1f\x8b\x08 a gzip'd cpio",
            b"pcipass mock initramfs",
            b"pcipass mock initramfs\nfile etc/x 10\nshort\n",
            b"pcipass mock initramfs\nfile etc/x 2\nab",
            b"pcipass mock initramfs\nfile etc/x two\nab\n",
        ] {
            assert_eq!(unpack(image), None, "{}", String::from_utf8_lossy(image));
        }
    }

    #[test]
    fn image_names() {
        assert!(is_image_name("initrd.img-6.1.0-28-amd64"));
        assert!(is_image_name("initramfs-6.8.5-301.fc40.x86_64.img"));
        assert!(!is_image_name("vmlinuz-6.1.0-28-amd64"));
        assert!(!is_image_name("initramfs-6.8.img.bak"));
    }
}
