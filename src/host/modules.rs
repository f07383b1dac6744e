//! The raw facts about xen-pciback for the running kernel: whether
//! `modules.builtin` names it, whether its module file is installed,
//! whether it is loaded, and the initramfs-tools and dracut configuration
//! that decides whether an initramfs loads it early.
//!
//! Only file access lives here; what the facts mean is decided in
//! `domain::pciback`. Reads fail closed: a missing file is a fact (`None`
//! or `false`), any other error (permission, I/O, a file where a directory
//! should be) is returned, so a caller never mistakes "could not read" for
//! "not there".

use std::io;

use crate::host::facts::KERNEL_RELEASE;
use crate::host::{HostError, HostRoot};

/// initramfs-tools' list of modules to load from the initramfs,
/// host-relative (initramfs-tools(5)).
pub const INITRAMFS_TOOLS_MODULES: &str = "etc/initramfs-tools/modules";

/// initramfs-tools' configuration directory, host-relative; its presence
/// means initramfs-tools is installed.
pub const INITRAMFS_TOOLS_DIR: &str = "etc/initramfs-tools";

/// dracut's main configuration file, host-relative (dracut.conf(5)).
pub const DRACUT_CONF: &str = "etc/dracut.conf";

/// The drop-ins dracut's package ships, read with [`DRACUT_CONF_D`]'s
/// (dracut.conf(5)).
pub const DRACUT_CONF_D_VENDOR: &str = "usr/lib/dracut/dracut.conf.d";

/// dracut's configuration drop-in directory, host-relative; only its
/// `*.conf` files are read (dracut.conf(5)).
pub const DRACUT_CONF_D: &str = "etc/dracut.conf.d";

/// The sysfs directory of the xen-pciback module, host-relative; it exists
/// while the module is loaded (and for a built-in module with parameters,
/// which xen-pciback always is: `hide`, `passthrough`, ...).
pub const SYS_MODULE_PCIBACK: &str = "sys/module/xen_pciback";

/// The file the kernel gives a loadable module in its [`SYS_MODULE_PCIBACK`]
/// directory (`live`, `coming`, `going`) and a built-in module never has
/// (`kernel/module/sysfs.c`'s module attributes, against `kernel/params.c`'s
/// `param_sysfs_builtin`, which makes only `parameters/`).
pub const SYS_MODULE_PCIBACK_INITSTATE: &str = "sys/module/xen_pciback/initstate";

/// The line `modules.builtin` carries when xen-pciback is built in (paths
/// relative to `lib/modules/<release>`, one per line).
pub const PCIBACK_BUILTIN_PATH: &str = "kernel/drivers/xen/xen-pciback/xen-pciback.ko";

/// The directory of the xen-pciback module file, relative to
/// `lib/modules/<release>`.
pub const PCIBACK_MODULE_DIR: &str = "kernel/drivers/xen/xen-pciback";

/// The file names the installed xen-pciback module may have (uncompressed
/// or compressed by the distribution).
pub const PCIBACK_MODULE_FILES: &[&str] = &[
    "xen-pciback.ko",
    "xen-pciback.ko.xz",
    "xen-pciback.ko.zst",
    "xen-pciback.ko.gz",
];

/// What the host says about xen-pciback and the initramfs generators, as
/// read; see [`pciback_facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcibackFacts {
    /// The running kernel's release ([`KERNEL_RELEASE`], trimmed).
    pub kernel_release: String,
    /// The bytes of `lib/modules/<release>/modules.builtin`; `None` when
    /// the file does not exist.
    pub modules_builtin: Option<Vec<u8>>,
    /// True when one of [`PCIBACK_MODULE_FILES`] is in
    /// `lib/modules/<release>/`[`PCIBACK_MODULE_DIR`].
    pub module_file: bool,
    /// True when [`SYS_MODULE_PCIBACK`] exists.
    pub loaded: bool,
    /// True when [`SYS_MODULE_PCIBACK_INITSTATE`] exists (then xen-pciback
    /// is a loaded module; a [`SYS_MODULE_PCIBACK`] without it is built in).
    pub initstate: bool,
    /// The bytes of [`INITRAMFS_TOOLS_MODULES`]; `None` when it does not
    /// exist.
    pub initramfs_tools_modules: Option<Vec<u8>>,
    /// True when [`INITRAMFS_TOOLS_DIR`] exists.
    pub initramfs_tools: bool,
    /// The dracut configuration files in the order dracut reads them:
    /// [`DRACUT_CONF`], then the `*.conf` files of [`DRACUT_CONF_D`] sorted
    /// by name; each with its host-relative path.
    pub dracut_confs: Vec<(String, Vec<u8>)>,
    /// True when [`DRACUT_CONF`] or [`DRACUT_CONF_D`] exists.
    pub dracut: bool,
}

/// Read the [`PcibackFacts`] of the running kernel. A missing file or
/// directory is a fact; any other error, and a missing, empty or unusable
/// kernel release, is an error.
pub fn pciback_facts(host: &HostRoot) -> Result<PcibackFacts, HostError> {
    let kernel_release = kernel_release(host)?;
    let lib = format!("lib/modules/{kernel_release}");
    let modules_builtin = host.read_if_exists(&format!("{lib}/modules.builtin"))?;
    let module_file = host
        .list_dir_if_exists(&format!("{lib}/{PCIBACK_MODULE_DIR}"))?
        .is_some_and(|names| {
            names
                .iter()
                .any(|n| PCIBACK_MODULE_FILES.contains(&n.as_str()))
        });
    let loaded = host.list_dir_if_exists(SYS_MODULE_PCIBACK)?.is_some();
    let initstate = loaded && host.read_if_exists(SYS_MODULE_PCIBACK_INITSTATE)?.is_some();
    let initramfs_tools = host.list_dir_if_exists(INITRAMFS_TOOLS_DIR)?.is_some();
    let initramfs_tools_modules = host.read_if_exists(INITRAMFS_TOOLS_MODULES)?;
    let mut dracut_confs = Vec::new();
    let main = host.read_if_exists(DRACUT_CONF)?;
    let mut dracut = main.is_some();
    if let Some(text) = main {
        dracut_confs.push((DRACUT_CONF.to_owned(), text));
    }
    // dracut reads the drop-ins of both directories sorted by name, a
    // file in /etc replacing the one of the same name in /usr/lib.
    let mut dropins = std::collections::BTreeMap::new();
    for dir in [DRACUT_CONF_D_VENDOR, DRACUT_CONF_D] {
        if let Some(names) = host.list_dir_if_exists(dir)? {
            dracut = true;
            for name in names.into_iter().filter(|n| n.ends_with(".conf")) {
                let rel = format!("{dir}/{name}");
                dropins.insert(name, rel);
            }
        }
    }
    for rel in dropins.into_values() {
        // A file removed between the listing and the read is skipped.
        if let Some(text) = host.read_if_exists(&rel)? {
            dracut_confs.push((rel, text));
        }
    }
    Ok(PcibackFacts {
        kernel_release,
        modules_builtin,
        module_file,
        loaded,
        initstate,
        initramfs_tools_modules,
        initramfs_tools,
        dracut_confs,
        dracut,
    })
}

/// The trimmed kernel release; an error when it is missing, unreadable,
/// empty or not usable as one path component.
/// The running kernel's release ([`KERNEL_RELEASE`], trimmed); an error
/// when it is missing, empty or unusable.
pub fn kernel_release(host: &HostRoot) -> Result<String, HostError> {
    let text = host.read_to_string(KERNEL_RELEASE)?;
    let release = text.trim();
    if release.is_empty() || release == "." || release == ".." || release.contains('/') {
        return Err(HostRoot::err(
            "read",
            KERNEL_RELEASE,
            io::Error::new(io::ErrorKind::InvalidData, "unusable kernel release"),
        ));
    }
    Ok(release.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    const REL: &str = "6.1.0-28-amd64";

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn mock() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), KERNEL_RELEASE, &format!("{REL}\n"));
        let host = HostRoot::new(dir.path());
        (dir, host)
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn an_empty_host_has_no_facts_but_the_release() {
        let (_dir, host) = mock();
        let facts = pciback_facts(&host).unwrap();
        assert_eq!(
            facts,
            PcibackFacts {
                kernel_release: REL.to_owned(),
                ..PcibackFacts::default()
            }
        );
    }

    #[test]
    fn a_missing_or_unusable_release_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        assert!(pciback_facts(&host).unwrap_err().is_not_found());
        for bad in ["", "  \n", "..", "a/b"] {
            write(dir.path(), KERNEL_RELEASE, bad);
            let e = pciback_facts(&host).unwrap_err();
            assert_eq!(e.source.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    #[test]
    fn a_debian_host_with_the_module() {
        let (dir, host) = mock();
        let lib = format!("lib/modules/{REL}");
        write(
            dir.path(),
            &format!("{lib}/modules.builtin"),
            "kernel/a.ko\n",
        );
        write(
            dir.path(),
            &format!("{lib}/{PCIBACK_MODULE_DIR}/xen-pciback.ko.xz"),
            "",
        );
        write(dir.path(), INITRAMFS_TOOLS_MODULES, "# list\nloop\n");
        write(dir.path(), SYS_MODULE_PCIBACK_INITSTATE, "live\n");
        let facts = pciback_facts(&host).unwrap();
        assert_eq!(
            facts.modules_builtin.as_deref(),
            Some(&b"kernel/a.ko\n"[..])
        );
        assert!(facts.module_file);
        assert!(facts.loaded);
        assert!(facts.initstate);
        assert!(facts.initramfs_tools);
        assert_eq!(
            facts.initramfs_tools_modules.as_deref(),
            Some(&b"# list\nloop\n"[..])
        );
        assert!(!facts.dracut);
        assert!(facts.dracut_confs.is_empty());
    }

    #[test]
    fn a_built_in_module_has_its_sysfs_directory_but_no_initstate() {
        let (dir, host) = mock();
        write(
            dir.path(),
            &format!("{SYS_MODULE_PCIBACK}/parameters/passthrough"),
            "0\n",
        );
        let facts = pciback_facts(&host).unwrap();
        assert!(facts.loaded);
        assert!(!facts.initstate);
    }

    #[test]
    fn other_files_in_the_module_directory_do_not_count() {
        let (dir, host) = mock();
        let d = format!("lib/modules/{REL}/{PCIBACK_MODULE_DIR}");
        write(dir.path(), &format!("{d}/xen-pciback.ko.bak"), "");
        write(dir.path(), &format!("{d}/other.ko"), "");
        assert!(!pciback_facts(&host).unwrap().module_file);
        for name in PCIBACK_MODULE_FILES {
            let (dir, host) = mock();
            write(dir.path(), &format!("{d}/{name}"), "");
            assert!(pciback_facts(&host).unwrap().module_file, "{name}");
        }
    }

    #[test]
    fn dracut_files_in_reading_order() {
        let (dir, host) = mock();
        write(dir.path(), DRACUT_CONF, "main");
        write(dir.path(), &format!("{DRACUT_CONF_D}/20-b.conf"), "b");
        write(dir.path(), &format!("{DRACUT_CONF_D}/10-a.conf"), "a");
        write(
            dir.path(),
            &format!("{DRACUT_CONF_D}/05-x.conf.rpmsave"),
            "x",
        );
        let facts = pciback_facts(&host).unwrap();
        assert!(facts.dracut);
        assert!(!facts.initramfs_tools);
        let got: Vec<(&str, &[u8])> = facts
            .dracut_confs
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("etc/dracut.conf", &b"main"[..]),
                ("etc/dracut.conf.d/10-a.conf", &b"a"[..]),
                ("etc/dracut.conf.d/20-b.conf", &b"b"[..]),
            ]
        );
    }

    #[test]
    fn vendor_dracut_drop_ins_are_read_and_etc_replaces_them_by_name() {
        let (dir, host) = mock();
        for (rel, text) in [
            ("usr/lib/dracut/dracut.conf.d/01-dist.conf", "dist"),
            ("usr/lib/dracut/dracut.conf.d/20-b.conf", "vendor b"),
            ("etc/dracut.conf.d/20-b.conf", "etc b"),
            ("etc/dracut.conf.d/30-c.conf", "c"),
        ] {
            write(dir.path(), rel, text);
        }
        let facts = pciback_facts(&host).unwrap();
        let got: Vec<(&str, &[u8])> = facts
            .dracut_confs
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("usr/lib/dracut/dracut.conf.d/01-dist.conf", &b"dist"[..]),
                ("etc/dracut.conf.d/20-b.conf", &b"etc b"[..]),
                ("etc/dracut.conf.d/30-c.conf", &b"c"[..]),
            ]
        );
    }

    #[test]
    fn an_empty_dracut_directory_still_means_dracut() {
        let (dir, host) = mock();
        std::fs::create_dir_all(dir.path().join(DRACUT_CONF_D)).unwrap();
        let facts = pciback_facts(&host).unwrap();
        assert!(facts.dracut);
        assert!(facts.dracut_confs.is_empty());
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_a_missing_one() {
        if is_root() {
            // Root reads files whatever their mode.
            return;
        }
        let (dir, host) = mock();
        write(dir.path(), INITRAMFS_TOOLS_MODULES, "xen-pciback\n");
        let path = dir.path().join(INITRAMFS_TOOLS_MODULES);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = pciback_facts(&host).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_an_error() {
        let (dir, host) = mock();
        write(dir.path(), DRACUT_CONF_D, "not a directory");
        assert!(!pciback_facts(&host).unwrap_err().is_not_found());
    }
}
