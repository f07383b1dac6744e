//! The object store: every XenAPI object in SQLite, served from memory.
//!
//! Reads never touch SQLite: the whole database is loaded at start-up and
//! kept in memory behind a read-write lock held only for lookups and for the
//! swap after a commit. Writes take one path: [`Store::apply`] runs a batch
//! of [`Change`]s in one SQLite transaction, then swaps the new objects in,
//! appends one [`Event`] per changed object to the event log and wakes the
//! `event.from` waiters. The generation counter (the event id) is persisted,
//! so tokens stay monotonic across restarts.

mod audit;
mod events;
mod file;
mod full;
mod meta;
mod object;
mod schema;
mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::Connection;

pub use audit::{AuditRow, verify_chain};
pub use object::{Change, Event, Object, Operation};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record does not decode.
    #[error("stored record {reference} is corrupt: {reason}")]
    Corrupt {
        /// The object.
        reference: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The database was written by a newer pcipass.
    #[error("database schema version {found} is newer than this build's {known}")]
    TooNew {
        /// The schema version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A change names an object that does not exist.
    #[error("no object {0}")]
    NoSuchObject(String),
    /// A create would reuse a ref or uuid.
    #[error("object {0} already exists")]
    Duplicate(String),
    /// The in-memory state was poisoned by a panic in another thread.
    #[error("store lock poisoned")]
    Poisoned,
    /// The file system holding the database is full: the change was not
    /// made.
    #[error(
        "the file system holding {} is full: the change was not made (logins still work; make \
         room there)",
        path.display()
    )]
    Full {
        /// The database file's path.
        path: std::path::PathBuf,
    },
    /// The database file was deleted or replaced under the running daemon:
    /// writes are refused, since nobody would read them again.
    #[error(
        "database file {} was {what} while pcipassd was running; \
         writes are refused: restart pcipassd",
        path.display()
    )]
    DatabaseGone {
        /// The database file's path.
        path: std::path::PathBuf,
        /// What happened to it ("deleted", "replaced by another file").
        what: &'static str,
    },
}

#[derive(Default)]
struct Memory {
    objects: HashMap<String, Arc<Object>>,
    by_class: HashMap<String, BTreeMap<String, ()>>,
    by_uuid: HashMap<(String, String), String>,
    generation: u64,
    /// Generation of the newest event of each class.
    class_generations: HashMap<String, u64>,
    log: VecDeque<Event>,
}

impl Memory {
    fn insert(&mut self, object: Arc<Object>) {
        self.by_class
            .entry(object.class.clone())
            .or_default()
            .insert(object.reference.clone(), ());
        self.by_uuid.insert(
            (object.class.clone(), object.uuid.clone()),
            object.reference.clone(),
        );
        self.objects.insert(object.reference.clone(), object);
    }

    fn remove(&mut self, reference: &str) -> Option<Arc<Object>> {
        let object = self.objects.remove(reference)?;
        if let Some(refs) = self.by_class.get_mut(&object.class) {
            refs.remove(reference);
        }
        self.by_uuid
            .remove(&(object.class.clone(), object.uuid.clone()));
        Some(object)
    }
}

/// The object store.
pub struct Store {
    connection: Mutex<Connection>,
    memory: RwLock<Memory>,
    generation_tx: tokio::sync::watch::Sender<u64>,
    /// The database file's identity at open; `None` for in-memory stores.
    file: Option<file::DbFile>,
    /// The database file this store is an in-memory copy of, made because
    /// its file system was full at start ([`full`]).
    in_memory_copy_of: Option<std::path::PathBuf>,
    /// Whether a full file system was logged since it last had room.
    full_logged: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Memory>, StoreError> {
        self.memory.read().map_err(|_| StoreError::Poisoned)
    }
}

/// A fresh `OpaqueRef:<uuid4>`.
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

/// A fresh uuid.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn pci(uuid: &str, pci_id: &str) -> Object {
        Object {
            class: "PCI".into(),
            reference: format!("OpaqueRef:{uuid}"),
            uuid: uuid.into(),
            fields: vec![
                ("uuid".into(), Value::str(uuid)),
                ("pci_id".into(), Value::str(pci_id)),
            ],
        }
    }

    #[test]
    fn objects_survive_reopen_with_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store
                .apply(vec![Change::Create(pci("a", "0000:00:02.0"))])
                .unwrap();
            store
                .apply(vec![Change::Update {
                    reference: "OpaqueRef:a".into(),
                    fields: vec![("pci_id".into(), Value::str("0000:00:03.0"))],
                }])
                .unwrap();
            assert_eq!(store.generation(), 2);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.generation(), 2);
        let a = store.by_uuid("PCI", "a").unwrap();
        assert_eq!(a.get_str("pci_id"), "0000:00:03.0");
        assert!(store.integrity_check().unwrap());
    }

    #[test]
    fn batch_is_atomic_and_logs_events() {
        let store = Store::open_in_memory().unwrap();
        store.apply(vec![Change::Create(pci("a", "x"))]).unwrap();
        let err = store.apply(vec![
            Change::Create(pci("b", "y")),
            Change::Delete("OpaqueRef:nope".into()),
        ]);
        assert!(matches!(err, Err(StoreError::NoSuchObject(_))));
        assert!(
            store.get("OpaqueRef:b").is_none(),
            "failed batch must not apply partly"
        );
        store
            .apply(vec![Change::Delete("OpaqueRef:a".into())])
            .unwrap();
        let events = store.events_since(0).unwrap();
        let ops: Vec<_> = events
            .iter()
            .map(|e| (e.operation, e.class.as_str()))
            .collect();
        assert_eq!(ops, vec![(Operation::Add, "PCI"), (Operation::Del, "PCI")]);
        assert!(store.all("PCI").is_empty());
    }

    #[test]
    fn an_event_holds_no_copy_of_its_record() {
        let store = Store::open_in_memory().unwrap();
        store.apply(vec![Change::Create(pci("a", "x"))]).unwrap();
        let first = store.get("OpaqueRef:a").unwrap();
        for n in 0..50 {
            store
                .apply(vec![Change::Update {
                    reference: "OpaqueRef:a".into(),
                    fields: vec![("pci_id".into(), Value::String(format!("x{n}")))],
                }])
                .unwrap();
        }
        // Nothing but this test holds the first version any more: 51
        // events, one record in memory.
        assert_eq!(Arc::strong_count(&first), 1);
        // Every add or change is read as the object is now (a reader's
        // window always holds the newest event, which wins).
        let events = store.events_since(0).unwrap();
        assert_eq!(events.len(), 51);
        assert!(events.iter().all(|e| e.snapshot.get_str("pci_id") == "x49"));
        // A deletion keeps the record as it was.
        store
            .apply(vec![Change::Delete("OpaqueRef:a".into())])
            .unwrap();
        let last = store.events_since(51).unwrap();
        assert_eq!(last[0].operation, Operation::Del);
        assert_eq!(last[0].snapshot.get_str("pci_id"), "x49");
    }

    #[test]
    fn unchanged_update_makes_no_event() {
        let store = Store::open_in_memory().unwrap();
        store.apply(vec![Change::Create(pci("a", "x"))]).unwrap();
        let g = store
            .apply(vec![Change::Update {
                reference: "OpaqueRef:a".into(),
                fields: vec![("pci_id".into(), Value::str("x"))],
            }])
            .unwrap();
        assert_eq!(g, 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn meta_values_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.meta_get("boot_id").unwrap(), None);
            store.meta_set("boot_id", "a").unwrap();
            store.meta_set("boot_id", "b").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.meta_get("boot_id").unwrap().as_deref(), Some("b"));
    }
}
