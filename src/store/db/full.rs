//! A full state file system. SQLite answers `SQLITE_FULL`, or, when it
//! cannot even make its WAL files, an I/O error; either way, while the
//! file system has no room:
//!
//! - at start, the database is served from a copy in memory
//!   (`Store::open`), so that the daemon starts and root gets in to make
//!   room;
//! - while running, a change of sessions or tasks alone (a login, a
//!   logout, an `Async.` call) is kept in memory only, so that logins do
//!   not need the disk; any other change is refused with
//!   [`StoreError::Full`](super::StoreError::Full), naming the file system.

use std::path::Path;

use rusqlite::ErrorCode;

/// Classes whose changes may live in memory only while the disk is full:
/// they do not outlive a restart's sense anyway (sessions end with a
/// reboot, tasks are collected).
pub(super) const RUNTIME_CLASSES: &[&str] = &["session", "task"];

/// Free bytes under which a file system counts as full.
const ROOM: u64 = 1024 * 1024;

/// Whether `error`, from SQLite working on the database at `path`, means
/// its file system is full.
pub(super) fn is_full(error: &rusqlite::Error, path: &Path) -> bool {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => true,
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => no_room(path),
        _ => false,
    }
}

/// Whether the file system holding `path` has less than [`ROOM`] free
/// for an unprivileged writer (`statvfs`'s available blocks).
pub(super) fn no_room(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    rustix::fs::statvfs(dir).is_ok_and(|s| s.f_bavail.saturating_mul(s.f_frsize) < ROOM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_file_system_is_full() {
        let disk_full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            None,
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pcipass.db");
        assert!(is_full(&disk_full, &path));
        // An I/O error on a file system with room is no full disk.
        assert!(!no_room(&path));
        assert!(!is_full(&io, &path));
        assert!(!is_full(&busy, &path));
    }
}
