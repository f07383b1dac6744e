//! Host access: every file-system read and write of the daemon, rooted at
//! `--root`.
//!
//! A real dom0 uses `/`; a mock host is any directory laid out the same way
//! (see [`mock`]). Code above this layer never builds or opens a path: it
//! asks [`HostRoot`] and the sub-modules for the data (sysfs attributes,
//! `/proc/cmdline`, the grub.cfg text) and gets typed results back.

pub mod block;
pub mod boot;
pub mod exec;
pub mod mock;
pub mod procfs;
pub mod sysfs;
pub mod watch;

use std::io;
use std::path::{Path, PathBuf};

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

    /// True when the root carries the mock-host marker.
    pub fn is_mock(&self) -> bool {
        self.path(MOCK_HOST_MARKER).exists()
    }

    /// Resolve a host-absolute or host-relative path under the root.
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

    /// Read a whole text file.
    pub fn read_to_string(&self, rel: &str) -> Result<String, HostError> {
        std::fs::read_to_string(self.path(rel)).map_err(|e| Self::err("read", rel, e))
    }

    /// The target of a symbolic link, as text.
    pub fn read_link(&self, rel: &str) -> Result<String, HostError> {
        std::fs::read_link(self.path(rel))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| Self::err("readlink", rel, e))
    }

    /// The entry names of a directory, sorted.
    pub fn list_dir(&self, rel: &str) -> Result<Vec<String>, HostError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path(rel)).map_err(|e| Self::err("list", rel, e))? {
            let entry = entry.map_err(|e| Self::err("list", rel, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// True when the path exists (following links).
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// True when the path is a symbolic link.
    pub fn is_symlink(&self, rel: &str) -> bool {
        self.path(rel).is_symlink()
    }
}
