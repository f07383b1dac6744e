//! The database file's identity: `(dev, inode)` of `pcipass.db` at open,
//! checked before each write so that a file deleted or replaced under the
//! running daemon makes writes fail instead of being acknowledged into a
//! file nobody will read again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Store, StoreError};

/// The database file as it was opened.
#[derive(Debug)]
pub(super) struct DbFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Whether the loss was logged already (logged once, not per write).
    reported: AtomicBool,
}

impl DbFile {
    /// The database file's path.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Remember the identity of the file at `path`.
    pub(super) fn new(path: &Path) -> std::io::Result<DbFile> {
        let meta = std::fs::metadata(path)?;
        Ok(DbFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            reported: AtomicBool::new(false),
        })
    }

    /// `Ok` when the path still names the file that was opened.
    fn check(&self) -> Result<(), StoreError> {
        let what = match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => return Ok(()),
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
            Err(_) => "made unreadable",
        };
        if !self.reported.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %self.path.display(),
                "the database file was {what} while pcipassd was running; \
                 every write is refused from now on (reads are served from memory); \
                 restart pcipassd to open the database that is there now, \
                 or put the original file back before restarting"
            );
        }
        Err(StoreError::DatabaseGone {
            path: self.path.clone(),
            what,
        })
    }
}

impl Store {
    /// Fail with [`StoreError::DatabaseGone`] when the database file was
    /// deleted or replaced since open; in-memory stores always pass.
    pub(super) fn check_file(&self) -> Result<(), StoreError> {
        match &self.file {
            Some(file) => file.check(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Object};
    use super::*;
    use crate::value::Value;

    fn pci(uuid: &str) -> Object {
        Object {
            class: "PCI".into(),
            reference: format!("OpaqueRef:{uuid}"),
            uuid: uuid.into(),
            fields: vec![("uuid".into(), Value::str(uuid))],
        }
    }

    #[test]
    fn writes_fail_once_the_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pcipass.db");
        let store = Store::open(&path).unwrap();
        store.apply(vec![Change::Create(pci("a"))]).unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = store.apply(vec![Change::Create(pci("b"))]).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::DatabaseGone {
                    what: "deleted",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            store.meta_set("k", "v"),
            Err(StoreError::DatabaseGone { .. })
        ));
        // Reads go on from memory; the failed write changed nothing.
        assert!(store.get("OpaqueRef:a").is_some());
        assert!(store.get("OpaqueRef:b").is_none());
        assert_eq!(store.generation(), 1);
    }

    #[test]
    fn writes_fail_once_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pcipass.db");
        let store = Store::open(&path).unwrap();
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let err = store.apply(vec![Change::Create(pci("b"))]).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::DatabaseGone {
                    what: "replaced by another file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("restart pcipassd"));
    }

    #[test]
    fn in_memory_store_has_no_file_to_check() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.check_file().is_ok());
    }
}
