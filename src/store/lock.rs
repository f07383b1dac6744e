//! One state directory, one daemon: an exclusive `flock` on
//! `pcipassd.lock` in the state directory, held for the life of the
//! process, with the holder's pid written into the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "pcipassd.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "state directory {} is in use by another pcipassd (pid {}); \
         stop that daemon first or give this one another --state-dir",
        dir.display(),
        pid.as_deref().unwrap_or("unknown")
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// The holder's pid as written in the lock file, if readable.
        pid: Option<String>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the exclusive, non-blocking lock on `dir`'s lock file (created
/// 0600) and write this process's pid into it. Fails with
/// [`LockError::Held`] naming the holder's pid when another process has it.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    // Never truncate before holding the lock: the file holds the
    // current holder's pid.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .map(|_| text.trim().to_owned())
                .filter(|p| !p.is_empty());
            return Err(LockError::Held {
                dir: dir.to_owned(),
                pid,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        match lock_state_dir(dir.path()) {
            Err(LockError::Held { pid, dir: d }) => {
                assert_eq!(pid, Some(std::process::id().to_string()));
                assert_eq!(d, dir.path());
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // The refused attempt left the holder's pid in place.
        let again = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(again, text);
        drop(first);
        assert!(lock_state_dir(dir.path()).is_ok());
    }

    #[test]
    fn lock_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_state_dir(dir.path()).unwrap();
        let mode = std::fs::metadata(lock.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
