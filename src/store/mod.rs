//! The store: the SQLite object database ([`db`]), the users file
//! ([`users`]), the TLS material in the state directory ([`tls`]), the
//! state directory's one-daemon lock ([`lock`]), and PAM logins with the
//! host's accounts ([`pam`]).

pub mod db;
pub mod lock;
pub mod pam;
pub mod tls;
pub mod users;

pub use db::{AuditRow, Change, Event, Object, Operation, Store, StoreError, verify_chain};

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Create the state directory (and parents) and make it private (0700).
pub fn prepare_state_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Write a private file (0600) atomically: temporary file, fsync, rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
