//! The bootloader configuration file: where it is, reading it with a
//! fingerprint, and replacing it atomically under the advisory lock that
//! `pcipassd` and `xen-cmdline` share.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use crate::host::{HostError, HostRoot};

/// `O_NOFOLLOW` (std does not name it and the crate has no libc): open
/// fails on a final symbolic link instead of following it. On other targets
/// only the check before the open guards the lock file.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const O_NOFOLLOW: i32 = 0o400_000;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const O_NOFOLLOW: i32 = 0o100_000;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
const O_NOFOLLOW: i32 = 0;

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
    let meta = std::fs::metadata(host.resolve(rel)?).map_err(|e| HostRoot::err("stat", rel, e))?;
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

/// What `grub-mkconfig` reads: the defaults file, host-relative.
pub const DEFAULT_GRUB: &str = "etc/default/grub";

/// The drop-in directory Debian's and Ubuntu's `grub-mkconfig` source
/// after [`DEFAULT_GRUB`] (`*.cfg`, in glob order).
pub const DEFAULT_GRUB_D: &str = "etc/default/grub.d";

/// pcipass's drop-in there: `zz-` so that it is sourced last.
pub const PCIPASS_DROPIN: &str = "etc/default/grub.d/zz-pcipass.cfg";

/// pcipass's drop-in for Xen's console (the host display), host-relative.
pub const PCIPASS_DISPLAY_DROPIN: &str = "etc/default/grub.d/zz-pcipass-display.cfg";

/// The generators, host-relative, in the order they are looked for.
const MKCONFIG_PROGRAMS: [&str; 4] = [
    "usr/sbin/grub-mkconfig",
    "usr/sbin/grub2-mkconfig",
    "sbin/grub-mkconfig",
    "sbin/grub2-mkconfig",
];

/// Whether this root's `grub-mkconfig` sources `/etc/default/grub.d/*.cfg`
/// (Debian's and Ubuntu's do; upstream GRUB's and Fedora's do not): read
/// from the program itself ([`sources_default_dropins`]), and where it is
/// not under the root (a mock host), from whether the directory exists.
pub fn mkconfig_reads_dropins(host: &HostRoot) -> bool {
    for rel in MKCONFIG_PROGRAMS {
        if let Ok(text) = host.read(rel) {
            return sources_default_dropins(&text);
        }
    }
    host.exists(DEFAULT_GRUB_D)
}

/// Whether the `grub-mkconfig` script `script` reads `/etc/default/grub.d/`:
/// a line that is not a comment names `default/grub.d/` under `/etc/`, or
/// under `${sysconfdir}/` / `$sysconfdir/` while the script sets
/// `sysconfdir` to `/etc` (Debian's real script:
/// `for x in ${sysconfdir}/default/grub.d/*.cfg ; do`, after
/// `sysconfdir="/etc"`). A script that sets `sysconfdir` elsewhere reads
/// another directory, where pcipass's drop-in is not: false, and pcipass
/// keeps its block in `/etc/default/grub`, which every generator reads.
pub fn sources_default_dropins(script: &[u8]) -> bool {
    let code = || {
        script
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.starts_with(b"#"))
    };
    let etc = code().any(|line| {
        [
            &b"sysconfdir=\"/etc\""[..],
            b"sysconfdir=/etc",
            b"sysconfdir='/etc'",
        ]
        .contains(&line)
    });
    let mut prefixes: Vec<&[u8]> = vec![b"/etc/default/grub.d/"];
    if etc {
        prefixes.extend([
            &b"${sysconfdir}/default/grub.d/"[..],
            b"$sysconfdir/default/grub.d/",
            b"\"${sysconfdir}\"/default/grub.d/",
            b"\"$sysconfdir\"/default/grub.d/",
        ]);
    }
    code().any(|line| {
        prefixes
            .iter()
            .any(|p| line.windows(p.len()).any(|w| w == *p))
    })
}

/// The command that regenerates grub.cfg on the running system (`/`):
/// `update-grub` where it exists (Debian, Ubuntu), else `grub-mkconfig` or
/// `grub2-mkconfig` writing the grub.cfg at `grub_rel`. `None` when none is
/// installed.
pub fn default_mkconfig_command(host: &HostRoot, grub_rel: &str) -> Option<Vec<String>> {
    for rel in ["usr/sbin/update-grub", "sbin/update-grub"] {
        if host.exists(rel) {
            return Some(vec![format!("/{rel}")]);
        }
    }
    MKCONFIG_PROGRAMS
        .iter()
        .find(|rel| host.exists(rel))
        .map(|rel| vec![format!("/{rel}"), "-o".into(), format!("/{grub_rel}")])
}

/// Create the directory `rel` (one level, mode 0755, its parent must
/// exist) unless it is there, e.g. `etc/modprobe.d` before pcipass's file
/// goes in it.
pub fn ensure_dir(host: &HostRoot, rel: &str) -> Result<(), HostError> {
    use std::os::unix::fs::DirBuilderExt;
    let (parent, name) = host.resolve_parent_and_name(rel)?;
    match std::fs::DirBuilder::new()
        .mode(0o755)
        .create(parent.join(name))
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(HostRoot::err("create", rel, e)),
    }
}

/// Whether `name` (in `/boot`) is an initramfs image the boot loader
/// loads: `initrd.img-<release>` (initramfs-tools) or
/// `initramfs-<release>.img` (dracut), and none of the files the builders
/// leave beside one while they work or as backups (`.new`, `.dpkg-bak`:
/// update-initramfs hard-links the old image there while it builds, and
/// a kill leaves it).
pub fn is_initramfs_image(name: &str) -> bool {
    const NOT_IMAGES: [&str; 7] = [
        ".new",
        ".bak",
        "-bak",
        ".old",
        ".dpkg-new",
        ".dpkg-tmp",
        ".dpkg-bak",
    ];
    (name.starts_with("initrd.img-") || name.starts_with("initramfs-"))
        && !NOT_IMAGES.iter().any(|s| name.ends_with(s))
}

/// A file's inode, size and mtime in nanoseconds ([`HostRoot::stamp`]).
pub type Stamp = (u64, u64, i128);

/// An initramfs image's name in `/boot` and its [`Stamp`].
pub type Image = (String, Stamp);

/// The initramfs images in `/boot` with their stamps
/// ([`HostRoot::stamp`]), by name: what a rebuild changes.
pub fn initramfs_images(host: &HostRoot) -> Result<Vec<Image>, HostError> {
    let mut found = Vec::new();
    for name in host.list_dir_if_exists("boot")?.unwrap_or_default() {
        if is_initramfs_image(&name)
            && let Some(stamp) = host.stamp(&format!("boot/{name}"))?
        {
            found.push((name, stamp));
        }
    }
    Ok(found)
}

/// Put `rel` back as it was before an edit: `old` bytes written back
/// atomically, or the file removed when there was none.
pub fn put_back(host: &HostRoot, rel: &str, old: Option<&[u8]>) -> Result<(), HostError> {
    match old {
        Some(bytes) => replace_atomic(host, rel, bytes),
        None => remove_durable(host, rel).map(drop),
    }
}

/// Remove `rel` durably (unlink, then fsync of its directory); `false`
/// when it did not exist.
pub fn remove_durable(host: &HostRoot, rel: &str) -> Result<bool, HostError> {
    let (dir, name) = host.resolve_parent_and_name(rel)?;
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(HostRoot::err("remove", rel, e)),
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HostRoot::err("fsync dir", rel, e))?;
    Ok(true)
}

/// Does the grub.cfg at `rel` say that `grub-mkconfig` generated it (its
/// header, as `grub-mkconfig` writes it: "It is automatically generated
/// by grub-mkconfig")? Only the first 4 KiB are searched.
pub fn generated_by_grub_mkconfig(host: &HostRoot, rel: &str) -> bool {
    host.read(rel).is_ok_and(|bytes| {
        let head = &bytes[..bytes.len().min(4096)];
        head.windows(b"generated by grub-mkconfig".len())
            .any(|w| w == b"generated by grub-mkconfig")
    })
}

/// The host-relative path of grub.cfg (first candidate that exists).
pub fn locate(host: &HostRoot) -> Result<&'static str, HostError> {
    locate_fingerprinted(host).map(|(rel, _)| rel)
}

/// [`locate`] with the file's fingerprint, one `stat` per candidate tried
/// (the status of a function is computed on every call from this). A
/// candidate that cannot be resolved inside the root (a link leaving it, a
/// link loop) is an error, not skipped.
pub fn locate_fingerprinted(host: &HostRoot) -> Result<(&'static str, Fingerprint), HostError> {
    for rel in GRUB_CANDIDATES {
        let path = host.resolve(rel)?;
        if let Some(meta) = std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
        {
            return Ok((rel, Fingerprint::of(&meta)));
        }
    }
    Err(HostRoot::err(
        "find",
        "boot/grub/grub.cfg",
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no grub.cfg in any known location",
        ),
    ))
}

/// The grubenv block GRUB loads beside grub.cfg (`$prefix/grubenv`).
pub fn grubenv_path(grub_rel: &str) -> String {
    match grub_rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/grubenv"),
        None => "grubenv".to_owned(),
    }
}

/// Fingerprints of the boot configuration file (grub.cfg, xen.cfg) and of
/// the grubenv beside a grub.cfg (absent: `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootFingerprint {
    /// grub.cfg.
    pub cfg: Fingerprint,
    /// grubenv, if there is one.
    pub env: Option<Fingerprint>,
}

/// grub.cfg and its grubenv, as bytes.
#[derive(Debug, Clone)]
pub struct GrubFiles {
    /// Host-relative path of grub.cfg.
    pub rel: &'static str,
    /// grub.cfg's bytes.
    pub cfg: Vec<u8>,
    /// grubenv's bytes, if there is one.
    pub env: Option<Vec<u8>>,
    /// Their fingerprints, taken before reading.
    pub print: BootFingerprint,
}

/// The fingerprint of grub.cfg and its grubenv.
pub fn grub_fingerprint(host: &HostRoot) -> Result<(&'static str, BootFingerprint), HostError> {
    let (rel, cfg) = locate_fingerprinted(host)?;
    let env = fingerprint(host, &grubenv_path(rel)).ok();
    Ok((rel, BootFingerprint { cfg, env }))
}

/// Read grub.cfg and its grubenv (bytes: grub.cfg need not be UTF-8).
pub fn read(host: &HostRoot) -> Result<GrubFiles, HostError> {
    let (rel, print) = grub_fingerprint(host)?;
    let cfg = host.read(rel)?;
    let env = match host.read(&grubenv_path(rel)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    Ok(GrubFiles {
        rel,
        cfg,
        env,
        print,
    })
}

/// The advisory lock on the boot configuration, held until dropped.
#[derive(Debug)]
pub struct BootLock {
    file: File,
}

impl BootLock {
    /// The locked file, to hand to a program that must hold the lock as
    /// long as it runs ([`crate::host::exec::run_holding`]).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Take the exclusive lock that serialises every read-modify-write of the
/// boot configuration (`grub.cfg.pcipass-lock` beside the resolved
/// grub.cfg, so beside a symlinked grub.cfg's target). Blocks. A lock path
/// that is a symbolic link is an error: the lock file is never created or
/// opened through a link.
pub fn lock(host: &HostRoot) -> Result<BootLock, HostError> {
    lock_beside(host, locate(host)?)
}

/// The lock of [`lock`] for the boot configuration file at `cfg`
/// (`<cfg>.pcipass-lock` beside the resolved file).
pub fn lock_beside(host: &HostRoot, cfg: &str) -> Result<BootLock, HostError> {
    let rel = format!("{cfg}.pcipass-lock");
    let (dir, name) = host.resolve_parent_and_name(cfg)?;
    let mut lock_name = name;
    lock_name.push(".pcipass-lock");
    let path = dir.join(lock_name);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(HostRoot::err(
            "open",
            &rel,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the lock file is a symbolic link",
            ),
        ));
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(O_NOFOLLOW)
        .open(&path)
        .map_err(|e| HostRoot::err("open", &rel, e))?;
    file.lock().map_err(|e| HostRoot::err("lock", &rel, e))?;
    Ok(BootLock { file })
}

/// Crash simulation for tests: with `PCIPASS_FAULT=<step>` in the
/// environment the process aborts at that step of [`replace_atomic`]
/// (`after-create`, `after-write`, `after-fsync`, `after-rename`) or of an
/// edit transaction (`txn-after-writes`, `txn-after-steps`,
/// `txn-after-early`), as a crash or power cut would stop it there.
pub fn fault_point(step: &str) {
    if std::env::var_os("PCIPASS_FAULT").is_some_and(|v| v == step) {
        std::process::abort();
    }
}

/// Replace `rel` with `bytes` atomically: a temporary file in the same
/// directory, fsync, rename over the old file, fsync of the directory. The
/// old file's mode is kept. A crash leaves the old or the new file.
/// A `rel` that is a symbolic link keeps the link: its target (resolved
/// under the root, see [`HostRoot::resolve`]) is replaced.
pub fn replace_atomic(host: &HostRoot, rel: &str, bytes: &[u8]) -> Result<(), HostError> {
    let (dir, name) = host.resolve_parent_and_name(rel)?;
    let path = dir.join(&name);
    let name = name.to_string_lossy().into_owned();
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
        file.write_all(bytes).map_err(|e| fail("write", e))?;
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

/// The lines of the generators' scripts that decide where they read
/// GRUB's defaults, verbatim: Debian 12's `/usr/sbin/grub-mkconfig`
/// (grub-common 2.06-13+deb12u2), Ubuntu 24.04's (which also prints each
/// file it sources), upstream GRUB's `util/grub-mkconfig.in` as installed
/// (2.12), Fedora's `/usr/sbin/grub2-mkconfig` (grub2-tools 2.06).
#[cfg(test)]
pub(crate) mod generators {
    /// Debian 12.
    pub const DEBIAN: &str = r#"sysconfdir="/etc"
grub_mkconfig_dir="${sysconfdir}"/grub.d
if test -f ${sysconfdir}/default/grub ; then
  . ${sysconfdir}/default/grub
fi
for x in ${sysconfdir}/default/grub.d/*.cfg ; do
  if [ -e "${x}" ]; then
    . "${x}"
  fi
done
"#;
    /// Ubuntu 24.04.
    pub const UBUNTU: &str = r#"sysconfdir="/etc"
grub_mkconfig_dir="${sysconfdir}"/grub.d
if test -f ${sysconfdir}/default/grub ; then
  gettext_printf "Sourcing file \`%s'\n" "${sysconfdir}/default/grub" 1>&2
  . ${sysconfdir}/default/grub
fi
for x in ${sysconfdir}/default/grub.d/*.cfg ; do
  if [ -e "${x}" ]; then
    gettext_printf "Sourcing file \`%s'\n" "${x}" 1>&2
    . "${x}"
  fi
done
"#;
    /// Upstream GRUB.
    pub const UPSTREAM: &str = r#"sysconfdir="/etc"
grub_mkconfig_dir="${sysconfdir}"/grub.d
if test -f ${sysconfdir}/default/grub ; then
  . ${sysconfdir}/default/grub
fi
"#;
    /// Fedora.
    pub const FEDORA: &str = r#"sysconfdir="/etc"
grub_mkconfig_dir="${sysconfdir}"/grub.d
if test -f ${sysconfdir}/default/grub ; then
  . ${sysconfdir}/default/grub
fi
"#;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    #[test]
    fn which_generators_source_default_grub_d() {
        let rows: &[(&str, &str, bool)] = &[
            ("Debian 12", generators::DEBIAN, true),
            ("Ubuntu 24.04", generators::UBUNTU, true),
            ("upstream GRUB", generators::UPSTREAM, false),
            ("Fedora", generators::FEDORA, false),
            // The literal path, as an older or patched script may spell it.
            (
                "literal",
                "for x in /etc/default/grub.d/*.cfg ; do . \"$x\"; done\n",
                true,
            ),
            (
                "unquoted variable",
                "sysconfdir=/etc\nfor x in $sysconfdir/default/grub.d/*.cfg; do . \"$x\"; done\n",
                true,
            ),
            // sysconfdir elsewhere: that directory, not /etc's, is read.
            (
                "another sysconfdir",
                "sysconfdir=\"/usr/local/etc\"\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do\n",
                false,
            ),
            // sysconfdir never set: not known to be /etc.
            (
                "no sysconfdir",
                "for x in ${sysconfdir}/default/grub.d/*.cfg ; do\n",
                false,
            ),
            (
                "a comment only",
                "sysconfdir=\"/etc\"\n# would read /etc/default/grub.d/*.cfg\n",
                false,
            ),
            (
                "the scripts' directory only",
                "grub_mkconfig_dir=/etc/grub.d\n",
                false,
            ),
            ("empty", "", false),
        ];
        for (what, script, want) in rows {
            assert_eq!(sources_default_dropins(script.as_bytes()), *want, "{what}");
        }
    }

    #[test]
    fn a_mock_root_with_a_generator_is_judged_by_the_generator() {
        let (dir, host) = mock();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(DEFAULT_GRUB_D)).unwrap();
        // No generator: the directory decides.
        assert!(mkconfig_reads_dropins(&host));
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/grub-mkconfig"), generators::UPSTREAM).unwrap();
        assert!(!mkconfig_reads_dropins(&host));
        std::fs::write(root.join("usr/sbin/grub-mkconfig"), generators::DEBIAN).unwrap();
        assert!(mkconfig_reads_dropins(&host));
    }

    fn mock() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/boot/grub")).unwrap();
        let host = HostRoot::new(dir.path().join("root"));
        (dir, host)
    }

    fn replace_through_link(target: &str) {
        let (_dir, host) = mock();
        let root = host.root().to_path_buf();
        std::fs::write(root.join("boot/grub/grub-real.cfg"), "old").unwrap();
        symlink(target, root.join("boot/grub/grub.cfg")).unwrap();
        let files = read(&host).unwrap();
        let rel = files.rel;
        assert_eq!(
            (rel, files.cfg.as_slice()),
            ("boot/grub/grub.cfg", &b"old"[..])
        );
        {
            let _lock = lock(&host).unwrap();
            replace_atomic(&host, rel, b"new").unwrap();
        }
        let link = root.join("boot/grub/grub.cfg");
        assert!(link.is_symlink(), "the link is kept");
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(target));
        assert_eq!(
            std::fs::read_to_string(root.join("boot/grub/grub-real.cfg")).unwrap(),
            "new"
        );
        assert!(root.join("boot/grub/grub-real.cfg.pcipass-lock").is_file());
        assert_eq!(fingerprint(&host, rel).unwrap().len, 3);
    }

    #[test]
    fn replace_writes_a_relative_link_target() {
        replace_through_link("grub-real.cfg");
    }

    #[test]
    fn replace_writes_an_absolute_link_target_inside_the_root() {
        replace_through_link("/boot/grub/grub-real.cfg");
    }

    #[test]
    fn replace_of_a_plain_file() {
        let (_dir, host) = mock();
        let cfg = host.root().join("boot/grub/grub.cfg");
        std::fs::write(&cfg, "old").unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let _lock = lock(&host).unwrap();
        replace_atomic(&host, "boot/grub/grub.cfg", b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let (dir, host) = mock();
        let root = host.root().to_path_buf();
        std::fs::write(root.join("boot/grub/grub.cfg"), "cfg").unwrap();
        // Dangling: following it would create the file outside the root.
        let outside = dir.path().join("created-outside");
        symlink(&outside, root.join("boot/grub/grub.cfg.pcipass-lock")).unwrap();
        assert!(lock(&host).is_err());
        assert!(!outside.exists());
        // Pointing at an existing file: not opened either.
        std::fs::remove_file(root.join("boot/grub/grub.cfg.pcipass-lock")).unwrap();
        symlink("grub.cfg", root.join("boot/grub/grub.cfg.pcipass-lock")).unwrap();
        assert!(lock(&host).is_err());
        assert_eq!(
            std::fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap(),
            "cfg"
        );
    }

    #[test]
    fn a_grub_link_leaving_the_root_fails_and_writes_nothing_outside() {
        let (dir, host) = mock();
        let root = host.root().to_path_buf();
        std::fs::write(dir.path().join("outside.cfg"), "outside").unwrap();
        symlink("../../../outside.cfg", root.join("boot/grub/grub.cfg")).unwrap();
        let e = read(&host).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(lock(&host).is_err());
        assert!(replace_atomic(&host, "boot/grub/grub.cfg", b"new").is_err());
        assert!(fingerprint(&host, "boot/grub/grub.cfg").is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("outside.cfg")).unwrap(),
            "outside"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["outside.cfg", "root"]);
        assert!(root.join("boot/grub/grub.cfg").is_symlink());
    }

    #[test]
    fn an_absolute_grub_link_never_reaches_the_machine() {
        let (_dir, host) = mock();
        let root = host.root().to_path_buf();
        symlink("/etc/passwd", root.join("boot/grub/grub.cfg")).unwrap();
        assert!(read(&host).unwrap_err().is_not_found());
        replace_atomic(&host, "boot/grub/grub.cfg", b"x").unwrap_err();
        assert!(!root.join("etc").exists());
    }
}
