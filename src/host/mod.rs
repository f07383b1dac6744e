//! Host access: every file-system read and write of the daemon, rooted at
//! `--root`.
//!
//! A real dom0 uses `/`; a mock host is any directory laid out the same way
//! (see [`mock`]). Code above this layer never builds or opens a path: it
//! asks [`HostRoot`] and the sub-modules for the data (sysfs attributes,
//! `/proc/cmdline`, the grub.cfg text) and gets typed results back.

pub mod block;
pub mod boot;
pub mod console;
pub mod efi;
pub mod exec;
pub mod facts;
pub mod mock;
pub mod modules;
pub mod netdev;
pub mod pcibind;
pub mod procfs;
pub mod sysfs;
pub mod watch;
pub mod xenstore;

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Marker file that makes a root a mock host.
pub const MOCK_HOST_MARKER: &str = ".pcipass-mock-host";

/// Why a host file could not be read or written. Carries the host-relative
/// path; never shown to API clients.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct HostError {
    /// What was attempted ("read", "write", ...).
    pub op: &'static str,
    /// The path relative to the root.
    pub path: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl HostError {
    /// True when the file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// `Ok(None)` for a result that failed only because the path is absent.
fn absent_is_none<T>(result: Result<T, HostError>) -> Result<Option<T>, HostError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The root under which every host path is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    /// A host rooted at `root` (`/` on a real dom0).
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot { root: root.into() }
    }

    /// The root directory itself (for logs and for handing to child
    /// processes such as `xen-cmdline --root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root carries the mock-host marker (the marker is
    /// looked up through [`HostRoot::resolve`], so a marker link that leaves
    /// the root does not count).
    pub fn is_mock(&self) -> bool {
        self.resolve(MOCK_HOST_MARKER).is_ok_and(|p| p.exists())
    }

    /// The lexical join of `rel` under the root, resolving nothing. Only for
    /// building a mock host; everything that reads or writes host files goes
    /// through [`HostRoot::resolve`].
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub(crate) fn err(op: &'static str, rel: &str, source: io::Error) -> HostError {
        HostError {
            op,
            path: format!("/{}", rel.trim_start_matches('/')),
            source,
        }
    }

    /// True when the root is the machine's `/`, where the OS already
    /// resolves paths the way a chroot at the root would.
    fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Resolve `rel` (host-absolute or host-relative) under the root the way
    /// a chroot at the root would: symbolic links are followed (at most
    /// [`MAX_SYMLINKS`] of them), an absolute link target starts again at
    /// the root, and a `..` that would climb above the root is an error
    /// (kind `InvalidInput`), never clamped. A component that does not exist
    /// resolves to the path it would have, so opening it gives `NotFound`
    /// and creating it creates it inside the root. On a root of `/` this is
    /// the plain join (no system calls; the kernel keeps `..` at `/`).
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, HostError> {
        self.resolve_with(rel, true, true)
    }

    /// [`HostRoot::resolve`] that leaves the final component alone: the
    /// directories above it are resolved, but a final symbolic link is not
    /// followed (for reading or testing the link itself).
    pub fn resolve_nofollow(&self, rel: &str) -> Result<PathBuf, HostError> {
        self.resolve_with(rel, false, true)
    }

    /// The resolved directory and the final name of `rel`, the final
    /// component followed too, so a writer replacing a file that is a
    /// symbolic link writes the link's target and keeps the link. An error
    /// when `rel` resolves to the root itself (there is no name to write).
    /// The links are followed here even on a root of `/` (the OS would
    /// follow them on open, but a rename replaces the link itself).
    pub fn resolve_parent_and_name(&self, rel: &str) -> Result<(PathBuf, OsString), HostError> {
        let path = self.resolve_with(rel, true, false)?;
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) if path != self.root => {
                Ok((dir.to_path_buf(), name.to_os_string()))
            }
            _ => Err(Self::err(
                "resolve",
                rel,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path names no file under the root",
                ),
            )),
        }
    }

    /// The walk behind the `resolve*` methods; `fast` allows the plain join
    /// on a root of `/`.
    fn resolve_with(
        &self,
        rel: &str,
        follow_final: bool,
        fast: bool,
    ) -> Result<PathBuf, HostError> {
        if fast && self.is_real_root() {
            return Ok(self.path(rel));
        }
        let fail = |source| Self::err("resolve", rel, source);
        // Components still to walk, the next one last.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, Path::new(rel.trim_start_matches('/')));
        // Directories resolved so far, relative to the root; never a link.
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0;
        // Once a component is missing nothing below it can be a link.
        let mut missing = false;
        while let Some(name) = pending.pop() {
            if name == ".." {
                if done.pop().is_none() {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "path leaves the host root",
                    )));
                }
                continue;
            }
            let is_final = pending.is_empty();
            if missing || (is_final && !follow_final) {
                done.push(name);
                continue;
            }
            let mut here = self.root.clone();
            here.extend(&done);
            here.push(&name);
            match std::fs::symlink_metadata(&here) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(fail(too_many_links()));
                    }
                    let target = std::fs::read_link(&here).map_err(fail)?;
                    if target.is_absolute() {
                        done.clear();
                    }
                    push_components(&mut pending, &target);
                }
                Ok(_) => done.push(name),
                // Missing, not a directory, no permission, ...: the
                // caller's own operation on the path reports it.
                Err(_) => {
                    missing = true;
                    done.push(name);
                }
            }
        }
        let mut path = self.root.clone();
        path.extend(done);
        Ok(path)
    }

    /// Read a whole text file.
    pub fn read_to_string(&self, rel: &str) -> Result<String, HostError> {
        std::fs::read_to_string(self.resolve(rel)?).map_err(|e| Self::err("read", rel, e))
    }

    /// Read a whole file as bytes.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, HostError> {
        std::fs::read(self.resolve(rel)?).map_err(|e| Self::err("read", rel, e))
    }

    /// [`HostRoot::read`], `None` when the file does not exist (any other
    /// failure is an error: a file that cannot be read is not absent).
    pub fn read_if_exists(&self, rel: &str) -> Result<Option<Vec<u8>>, HostError> {
        absent_is_none(self.read(rel))
    }

    /// [`HostRoot::read_link`], `None` when there is no such link.
    pub fn read_link_if_exists(&self, rel: &str) -> Result<Option<String>, HostError> {
        absent_is_none(self.read_link(rel))
    }

    /// [`HostRoot::list_dir`], `None` when the directory does not exist.
    pub fn list_dir_if_exists(&self, rel: &str) -> Result<Option<Vec<String>>, HostError> {
        absent_is_none(self.list_dir(rel))
    }

    /// The target of a symbolic link, as text (the link itself is read; the
    /// directories above it are resolved).
    pub fn read_link(&self, rel: &str) -> Result<String, HostError> {
        std::fs::read_link(self.resolve_nofollow(rel)?)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| Self::err("readlink", rel, e))
    }

    /// The entry names of a directory, sorted.
    pub fn list_dir(&self, rel: &str) -> Result<Vec<String>, HostError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.resolve(rel)?).map_err(|e| Self::err("list", rel, e))? {
            let entry = entry.map_err(|e| Self::err("list", rel, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// A file's identity and change marks (inode, size, mtime in
    /// nanoseconds), following links; `None` when it does not exist.
    pub fn stamp(&self, rel: &str) -> Result<Option<boot::Stamp>, HostError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.resolve(rel)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some((
                m.ino(),
                m.size(),
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err("stat", rel, e)),
        }
    }

    /// True when the path exists (following links, inside the root); false
    /// too when it cannot be resolved under the root.
    pub fn exists(&self, rel: &str) -> bool {
        self.resolve(rel).is_ok_and(|p| p.exists())
    }

    /// True when the path is a symbolic link (the directories above it are
    /// resolved; the link itself is not followed).
    pub fn is_symlink(&self, rel: &str) -> bool {
        self.resolve_nofollow(rel).is_ok_and(|p| p.is_symlink())
    }
}

/// How many symbolic links one resolution follows before giving up, as the
/// Linux kernel does.
pub const MAX_SYMLINKS: usize = 40;

/// Push the components of `path` onto `pending` so that the first is popped
/// first; `.` and the root are dropped (the caller handles an absolute
/// target before).
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let start = pending.len();
    for component in path.components() {
        match component {
            Component::Normal(name) => pending.push(name.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    pending[start..].reverse();
}

/// The error of a resolution that followed too many links (`ELOOP`).
fn too_many_links() -> io::Error {
    if cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        // ELOOP on these targets.
        io::Error::from_raw_os_error(40)
    } else {
        io::Error::other("too many levels of symbolic links")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mock() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        (dir, host)
    }

    fn leaves_root(e: &HostError) -> bool {
        e.source.kind() == io::ErrorKind::InvalidInput
            && e.source.to_string().contains("leaves the host root")
    }

    #[test]
    fn an_absolute_link_target_starts_at_the_root() {
        let (dir, host) = mock();
        std::fs::write(dir.path().join("boot/grub/real.cfg"), "inside").unwrap();
        symlink("/boot/grub/real.cfg", dir.path().join("boot/grub/grub.cfg")).unwrap();
        assert_eq!(
            host.resolve("boot/grub/grub.cfg").unwrap(),
            dir.path().join("boot/grub/real.cfg")
        );
        assert_eq!(
            host.read_to_string("/boot/grub/grub.cfg").unwrap(),
            "inside"
        );
        assert_eq!(host.read("boot/grub/grub.cfg").unwrap(), b"inside");
        assert!(host.exists("boot/grub/grub.cfg"));
    }

    #[test]
    fn a_relative_link_inside_the_root() {
        let (dir, host) = mock();
        std::fs::write(dir.path().join("etc/target"), "t").unwrap();
        symlink("../../etc/target", dir.path().join("boot/grub/grub.cfg")).unwrap();
        symlink("boot/grub", dir.path().join("g")).unwrap();
        assert_eq!(
            host.resolve("g/grub.cfg").unwrap(),
            dir.path().join("etc/target")
        );
        assert_eq!(host.read_to_string("g/grub.cfg").unwrap(), "t");
        // '..' after a directory link climbs from the link's target.
        assert_eq!(host.resolve("g/..").unwrap(), dir.path().join("boot"));
    }

    #[test]
    fn a_link_climbing_above_the_root_is_an_error() {
        let (dir, host) = mock();
        symlink("../../../etc/passwd", dir.path().join("boot/grub/grub.cfg")).unwrap();
        let e = host.resolve("boot/grub/grub.cfg").unwrap_err();
        assert!(leaves_root(&e), "{e}");
        let e = host.read_to_string("boot/grub/grub.cfg").unwrap_err();
        assert!(leaves_root(&e), "{e}");
        assert!(!host.exists("boot/grub/grub.cfg"));
        // The link itself is inside and can be read.
        assert!(host.is_symlink("boot/grub/grub.cfg"));
        assert_eq!(
            host.read_link("boot/grub/grub.cfg").unwrap(),
            "../../../etc/passwd"
        );
        let e = host.resolve("../etc").unwrap_err();
        assert!(leaves_root(&e), "{e}");
        let e = host.list_dir("boot/../..").unwrap_err();
        assert!(leaves_root(&e), "{e}");
    }

    #[test]
    fn an_absolute_link_never_reads_the_machine() {
        let (dir, host) = mock();
        symlink("/etc/passwd", dir.path().join("boot/grub/grub.cfg")).unwrap();
        let e = host.read_to_string("boot/grub/grub.cfg").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        std::fs::write(dir.path().join("etc/passwd"), "mock passwd").unwrap();
        assert_eq!(
            host.read_to_string("boot/grub/grub.cfg").unwrap(),
            "mock passwd"
        );
        // A directory link to / lists the root, not the machine.
        symlink("/", dir.path().join("slash")).unwrap();
        assert_eq!(host.list_dir("slash").unwrap(), host.list_dir("/").unwrap());
        assert_eq!(host.resolve("slash/..").unwrap_err().op, "resolve");
    }

    #[test]
    fn link_loops_are_an_error() {
        let (dir, host) = mock();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        symlink("self", dir.path().join("self")).unwrap();
        for rel in ["a", "self", "a/x"] {
            let e = host.resolve(rel).unwrap_err();
            assert_eq!(e.source.raw_os_error(), Some(40), "{rel}: {e}");
            assert!(host.read_to_string(rel).is_err());
        }
        // 40 links in a chain resolve; 41 do not.
        std::fs::write(dir.path().join("end"), "end").unwrap();
        let mut prev = "end".to_string();
        for i in 0..=MAX_SYMLINKS {
            let name = format!("l{i}");
            symlink(&prev, dir.path().join(&name)).unwrap();
            prev = name;
        }
        assert_eq!(host.read_to_string("l39").unwrap(), "end");
        assert!(host.resolve("l40").is_err());
    }

    #[test]
    fn missing_components_resolve_to_their_place() {
        let (dir, host) = mock();
        assert_eq!(
            host.resolve("boot/none/x").unwrap(),
            dir.path().join("boot/none/x")
        );
        symlink("/boot/grub/new.cfg", dir.path().join("dangling")).unwrap();
        assert_eq!(
            host.resolve("dangling").unwrap(),
            dir.path().join("boot/grub/new.cfg")
        );
        assert!(host.read_to_string("dangling").unwrap_err().is_not_found());
        assert_eq!(
            host.resolve_nofollow("dangling").unwrap(),
            dir.path().join("dangling")
        );
        let (parent, name) = host.resolve_parent_and_name("dangling").unwrap();
        assert_eq!(parent, dir.path().join("boot/grub"));
        assert_eq!(name, "new.cfg");
        assert!(host.resolve_parent_and_name("boot/..").is_err());
    }

    #[test]
    fn the_real_root_is_a_plain_join() {
        let host = HostRoot::new("/");
        assert_eq!(
            host.resolve("/proc/cmdline").unwrap(),
            Path::new("/proc/cmdline")
        );
        assert_eq!(host.resolve("../x").unwrap(), Path::new("/../x"));
    }

    #[test]
    fn the_mock_marker_is_resolved_inside() {
        let (dir, host) = mock();
        assert!(!host.is_mock());
        symlink("/etc/marker", dir.path().join(MOCK_HOST_MARKER)).unwrap();
        assert!(!host.is_mock());
        std::fs::write(dir.path().join("etc/marker"), "").unwrap();
        assert!(host.is_mock());
    }
}
