//! The private key-value table and the integrity check.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

impl Store {
    /// A value of the store's private key-value table (`meta`), which
    /// holds daemon state that is no XenAPI object, e.g. the last boot id.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(connection
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get::<_, String>(0)
            })
            .optional()?)
    }

    /// Set a value of the private key-value table (see [`Store::meta_get`]);
    /// the key `generation` belongs to [`Store::apply`].
    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        self.check_file()?;
        connection.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Run SQLite's integrity check; `Ok(true)` when it says `ok`.
    pub fn integrity_check(&self) -> Result<bool, StoreError> {
        let connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        let answer: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(answer == "ok")
    }
}
