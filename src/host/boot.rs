//! The bootloader configuration file: where it is, reading it with a
//! fingerprint, and replacing it atomically under the advisory lock that
//! `pcipassd` and `xen-cmdline` share.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::host::{HostError, HostRoot};

/// Where XenServer/XCP-ng keep grub.cfg, in the order xen-cmdline tries them.
pub const GRUB_CANDIDATES: [&str; 3] = [
    "boot/efi/EFI/xenserver/grub.cfg",
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
];

/// Identity of a file's content for caching: size, modification time, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i128,
    /// Inode (changes on atomic replace).
    pub ino: u64,
}

/// The fingerprint of a host file.
pub fn fingerprint(host: &HostRoot, rel: &str) -> Result<Fingerprint, HostError> {
    let meta = std::fs::metadata(host.path(rel)).map_err(|e| HostRoot::err("stat", rel, e))?;
    Ok(Fingerprint::of(&meta))
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// The host-relative path of grub.cfg (first candidate that exists).
pub fn locate(host: &HostRoot) -> Result<&'static str, HostError> {
    locate_fingerprinted(host).map(|(rel, _)| rel)
}

/// [`locate`] with the file's fingerprint, one `stat` per candidate tried
/// (the status of a function is computed on every call from this).
pub fn locate_fingerprinted(host: &HostRoot) -> Result<(&'static str, Fingerprint), HostError> {
    GRUB_CANDIDATES
        .into_iter()
        .find_map(|rel| {
            std::fs::metadata(host.path(rel))
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map(|meta| (rel, Fingerprint::of(&meta)))
        })
        .ok_or_else(|| {
            HostRoot::err(
                "find",
                "boot/grub/grub.cfg",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no grub.cfg in any known location",
                ),
            )
        })
}

/// Read grub.cfg with its fingerprint.
pub fn read(host: &HostRoot) -> Result<(&'static str, String, Fingerprint), HostError> {
    let (rel, print) = locate_fingerprinted(host)?;
    let text = host.read_to_string(rel)?;
    Ok((rel, text, print))
}

/// The advisory lock on the boot configuration, held until dropped.
#[derive(Debug)]
pub struct BootLock {
    _file: File,
}

/// Take the exclusive lock that serialises every read-modify-write of the
/// boot configuration (`grub.cfg.pcipass-lock` beside it). Blocks.
pub fn lock(host: &HostRoot) -> Result<BootLock, HostError> {
    let rel = format!("{}.pcipass-lock", locate(host)?);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(host.path(&rel))
        .map_err(|e| HostRoot::err("open", &rel, e))?;
    file.lock().map_err(|e| HostRoot::err("lock", &rel, e))?;
    Ok(BootLock { _file: file })
}

/// Crash simulation for tests: with `PCIPASS_FAULT=<step>` in the
/// environment the process aborts at that step of [`replace_atomic`]
/// (`after-create`, `after-write`, `after-fsync`, `after-rename`), as a
/// crash or power cut would stop it there.
fn fault_point(step: &str) {
    if std::env::var_os("PCIPASS_FAULT").is_some_and(|v| v == step) {
        std::process::abort();
    }
}

/// Replace `rel` with `text` atomically: a temporary file in the same
/// directory, fsync, rename over the old file, fsync of the directory. The
/// old file's mode is kept. A crash leaves the old or the new file.
pub fn replace_atomic(host: &HostRoot, rel: &str, text: &str) -> Result<(), HostError> {
    let path = host.path(rel);
    let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pcipass-tmp-{}", std::process::id()));
    let fail = |op, e| HostRoot::err(op, rel, e);
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    // Temporary files of writers that died mid-replace (we hold the lock).
    let prefix = format!(".{name}.pcipass-tmp-");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| fail("create", e))?;
        fault_point("after-create");
        file.write_all(text.as_bytes())
            .map_err(|e| fail("write", e))?;
        fault_point("after-write");
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("chmod", e))?;
        file.sync_all().map_err(|e| fail("fsync", e))?;
        fault_point("after-fsync");
        std::fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
        fault_point("after-rename");
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("fsync dir", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
