//! The audit table: records appended with a hash chain (each record's
//! hash is SHA-256 of the previous hash and the record), bounded to the
//! newest ones. An edited, removed or reordered record breaks the chain
//! ([`verify_chain`]).

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its place, increasing.
    pub seq: i64,
    /// The hash of the record before it (64 zeros for the first ever).
    pub prev: String,
    /// SHA-256 of `prev` and `record`, hex.
    pub hash: String,
    /// The record (JSON text).
    pub record: String,
}

/// The hash that chains `record` to `prev`.
pub fn chain_hash(prev: &str, record: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(record.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Check the chain of `rows` (oldest first): each row's hash is its own,
/// and each row's `prev` is the hash of the row before it. The first
/// broken link, if any.
pub fn verify_chain(rows: &[AuditRow]) -> Result<(), String> {
    for (i, row) in rows.iter().enumerate() {
        if chain_hash(&row.prev, &row.record) != row.hash {
            return Err(format!("record {} does not match its hash", row.seq));
        }
        if let Some(before) = i.checked_sub(1).map(|j| &rows[j])
            && before.hash != row.prev
        {
            return Err(format!(
                "record {} does not follow record {} (one was removed or changed)",
                row.seq, before.seq
            ));
        }
    }
    Ok(())
}

impl Store {
    /// Append `record`, chained to the newest one; keep the newest
    /// `keep` records.
    pub fn audit_append(&self, record: &str, keep: usize) -> Result<(), StoreError> {
        let mut connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        self.check_file()?;
        let transaction = connection.transaction()?;
        let prev: String = transaction
            .query_row(
                "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok("0".repeat(64)),
                e => Err(e),
            })?;
        let hash = chain_hash(&prev, record);
        transaction.execute(
            "INSERT INTO audit (prev, hash, record) VALUES (?1, ?2, ?3)",
            params![prev, hash, record],
        )?;
        transaction.execute(
            "DELETE FROM audit WHERE seq NOT IN (SELECT seq FROM audit ORDER BY seq DESC LIMIT ?1)",
            params![i64::try_from(keep).unwrap_or(i64::MAX)],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Every kept audit record, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        let mut statement =
            connection.prepare("SELECT seq, prev, hash, record FROM audit ORDER BY seq")?;
        let rows = statement
            .query_map([], |r| {
                Ok(AuditRow {
                    seq: r.get(0)?,
                    prev: r.get(1)?,
                    hash: r.get(2)?,
                    record: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_bounded_and_an_edited_record_is_found() {
        let store = Store::open_in_memory().unwrap();
        for n in 0..7 {
            store.audit_append(&format!("{{\"n\":{n}}}"), 5).unwrap();
        }
        let rows = store.audit_rows().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].record, "{\"n\":2}");
        assert_eq!(verify_chain(&rows), Ok(()));

        let mut edited = rows.clone();
        edited[2].record = "{\"n\":99}".into();
        assert!(
            verify_chain(&edited)
                .unwrap_err()
                .contains("does not match its hash")
        );
        let mut removed = rows.clone();
        removed.remove(2);
        assert!(
            verify_chain(&removed)
                .unwrap_err()
                .contains("does not follow")
        );
        // A record edited with its hash recomputed still breaks the link
        // to the next one.
        let mut rehashed = rows;
        rehashed[2].record = "{\"n\":99}".into();
        rehashed[2].hash = chain_hash(&rehashed[2].prev, &rehashed[2].record);
        assert!(
            verify_chain(&rehashed)
                .unwrap_err()
                .contains("does not follow")
        );
    }
}
