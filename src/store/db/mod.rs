//! The object store: every XenAPI object in SQLite, served from memory.
//!
//! Reads never touch SQLite: the whole database is loaded at start-up and
//! kept in memory behind a read-write lock held only for lookups and for the
//! swap after a commit. Writes take one path: [`Store::apply`] runs a batch
//! of [`Change`]s in one SQLite transaction, then swaps the new objects in,
//! appends one [`Event`] per changed object to the event log and wakes the
//! `event.from` waiters. The generation counter (the event id) is persisted,
//! so tokens stay monotonic across restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use crate::value::Value;

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE objects (
         ref TEXT PRIMARY KEY,
         class TEXT NOT NULL,
         uuid TEXT NOT NULL,
         record TEXT NOT NULL,
         UNIQUE (class, uuid)
     );
     CREATE INDEX objects_class ON objects (class);",
];

/// How many events the log keeps for `event.from` / `event.next`.
const EVENT_LOG_CAPACITY: usize = 65_536;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record does not decode.
    #[error("stored record {reference} is corrupt: {reason}")]
    Corrupt { reference: String, reason: String },
    /// The database was written by a newer pcipass.
    #[error("database schema version {found} is newer than this build's {known}")]
    TooNew { found: i64, known: i64 },
    /// A change names an object that does not exist.
    #[error("no object {0}")]
    NoSuchObject(String),
    /// A create would reuse a ref or uuid.
    #[error("object {0} already exists")]
    Duplicate(String),
    /// The in-memory state was poisoned by a panic in another thread.
    #[error("store lock poisoned")]
    Poisoned,
}

/// One stored object: its class, ref, uuid and every field (uuid included)
/// in datamodel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Class name, e.g. `PCI`.
    pub class: String,
    /// `OpaqueRef:<uuid4>`.
    pub reference: String,
    /// The object's uuid.
    pub uuid: String,
    /// Fields in order.
    pub fields: Vec<(String, Value)>,
}

impl Object {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A string field, or "" when absent or not a string.
    pub fn get_str(&self, name: &str) -> &str {
        self.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// Set a field, appending it when new.
    pub fn set(&mut self, name: &str, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Created.
    Add,
    /// Modified (or touched by `event.inject`).
    Mod,
    /// Destroyed.
    Del,
}

impl Operation {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Mod => "mod",
            Operation::Del => "del",
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    /// Generation at which it happened (1-based, monotonic).
    pub id: u64,
    /// Class name.
    pub class: String,
    /// What happened.
    pub operation: Operation,
    /// The object's ref.
    pub reference: String,
    /// The object after the change; `None` for `Del`.
    pub snapshot: Option<Arc<Object>>,
}

/// A change in a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create an object.
    Create(Object),
    /// Replace some fields of an object.
    Update {
        /// The object.
        reference: String,
        /// Fields to set.
        fields: Vec<(String, Value)>,
    },
    /// Destroy an object.
    Delete(String),
    /// Record a `mod` event for an unchanged object (`event.inject`).
    Touch(String),
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open (creating or migrating) the database at `path` and load it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let connection = Connection::open(path)?;
        let store = Store::from_connection(connection)?;
        // The database holds sessions: readable by its owner only.
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
            }
        }
        Ok(store)
    }

    /// An in-memory store (tests, benches).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut connection: Connection) -> Result<Store, StoreError> {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut connection)?;
        let mut memory = Memory::default();
        {
            let mut statement =
                connection.prepare("SELECT ref, class, uuid, record FROM objects")?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (reference, class, uuid, record) = row?;
                let fields: Vec<(String, Value)> =
                    serde_json::from_str(&record).map_err(|e| StoreError::Corrupt {
                        reference: reference.clone(),
                        reason: e.to_string(),
                    })?;
                memory.insert(Arc::new(Object {
                    class,
                    reference,
                    uuid,
                    fields,
                }));
            }
        }
        memory.generation = connection
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        let (generation_tx, _) = tokio::sync::watch::channel(memory.generation);
        Ok(Store {
            connection: Mutex::new(connection),
            memory: RwLock::new(memory),
            generation_tx,
        })
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Memory>, StoreError> {
        self.memory.read().map_err(|_| StoreError::Poisoned)
    }

    /// An object by ref.
    pub fn get(&self, reference: &str) -> Option<Arc<Object>> {
        self.read().ok()?.objects.get(reference).cloned()
    }

    /// An object by ref, only if it is of `class`.
    pub fn get_of(&self, class: &str, reference: &str) -> Option<Arc<Object>> {
        self.get(reference).filter(|o| o.class == class)
    }

    /// The object of `class` with `uuid`.
    pub fn by_uuid(&self, class: &str, uuid: &str) -> Option<Arc<Object>> {
        let memory = self.read().ok()?;
        let reference = memory.by_uuid.get(&(class.to_owned(), uuid.to_owned()))?;
        memory.objects.get(reference).cloned()
    }

    /// Every object of `class`, ordered by ref.
    pub fn all(&self, class: &str) -> Vec<Arc<Object>> {
        self.all_at_generation(class).1
    }

    /// Number of objects per class.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let Ok(memory) = self.read() else {
            return Vec::new();
        };
        let mut counts: Vec<_> = memory
            .by_class
            .iter()
            .map(|(c, r)| (c.clone(), r.len()))
            .collect();
        counts.sort();
        counts
    }

    /// The current generation (id of the newest event).
    pub fn generation(&self) -> u64 {
        self.read().map(|m| m.generation).unwrap_or(0)
    }

    /// The generation of the newest change to an object of `class` (0 if
    /// none since the store was opened): equal values mean the class's
    /// objects are unchanged.
    pub fn class_generation(&self, class: &str) -> u64 {
        self.read()
            .ok()
            .and_then(|m| m.class_generations.get(class).copied())
            .unwrap_or(0)
    }

    /// Every object of `class`, ordered by ref, with the class generation
    /// they belong to (read together).
    pub fn all_at_generation(&self, class: &str) -> (u64, Vec<Arc<Object>>) {
        let Ok(memory) = self.read() else {
            return (0, Vec::new());
        };
        let generation = memory.class_generations.get(class).copied().unwrap_or(0);
        let objects = memory
            .by_class
            .get(class)
            .map(|refs| {
                refs.keys()
                    .filter_map(|r| memory.objects.get(r).cloned())
                    .collect()
            })
            .unwrap_or_default();
        (generation, objects)
    }

    /// A receiver that changes whenever the generation moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Events with id greater than `since`, oldest first; `None` when the
    /// log no longer reaches back that far.
    pub fn events_since(&self, since: u64) -> Option<Vec<Event>> {
        let memory = self.read().ok()?;
        if since >= memory.generation {
            return Some(Vec::new());
        }
        let oldest = memory
            .log
            .front()
            .map(|e| e.id)
            .unwrap_or(memory.generation + 1);
        if since + 1 < oldest {
            return None;
        }
        Some(
            memory
                .log
                .iter()
                .filter(|e| e.id > since)
                .cloned()
                .collect(),
        )
    }

    /// Apply a batch of changes atomically: all of them reach SQLite and
    /// memory, or none. Returns the new generation.
    pub fn apply(&self, changes: Vec<Change>) -> Result<u64, StoreError> {
        if changes.is_empty() {
            return Ok(self.generation());
        }
        let mut connection = self.connection.lock().map_err(|_| StoreError::Poisoned)?;
        // Compute the new objects against the current memory state. Only
        // this function writes, and it holds the connection lock, so the
        // state cannot move underneath.
        let mut staged: Vec<(Operation, String, String, Option<Arc<Object>>)> =
            Vec::with_capacity(changes.len());
        let mut pending: HashMap<String, Option<Arc<Object>>> = HashMap::new();
        {
            let memory = self.read()?;
            let current =
                |reference: &str, pending: &HashMap<String, Option<Arc<Object>>>| match pending
                    .get(reference)
                {
                    Some(state) => state.clone(),
                    None => memory.objects.get(reference).cloned(),
                };
            for change in changes {
                match change {
                    Change::Create(object) => {
                        if current(&object.reference, &pending).is_some() {
                            return Err(StoreError::Duplicate(object.reference));
                        }
                        let key = (object.class.clone(), object.uuid.clone());
                        if memory.by_uuid.contains_key(&key)
                            && !pending.contains_key(&memory.by_uuid[&key])
                        {
                            return Err(StoreError::Duplicate(object.uuid));
                        }
                        let object = Arc::new(object);
                        pending.insert(object.reference.clone(), Some(object.clone()));
                        staged.push((
                            Operation::Add,
                            object.class.clone(),
                            object.reference.clone(),
                            Some(object),
                        ));
                    }
                    Change::Update { reference, fields } => {
                        let old = current(&reference, &pending)
                            .ok_or_else(|| StoreError::NoSuchObject(reference.clone()))?;
                        let mut new = (*old).clone();
                        for (name, value) in fields {
                            new.set(&name, value);
                        }
                        if new == *old {
                            continue;
                        }
                        let new = Arc::new(new);
                        pending.insert(reference.clone(), Some(new.clone()));
                        staged.push((Operation::Mod, new.class.clone(), reference, Some(new)));
                    }
                    Change::Touch(reference) => {
                        let object = current(&reference, &pending)
                            .ok_or_else(|| StoreError::NoSuchObject(reference.clone()))?;
                        staged.push((
                            Operation::Mod,
                            object.class.clone(),
                            reference,
                            Some(object),
                        ));
                    }
                    Change::Delete(reference) => {
                        let old = current(&reference, &pending)
                            .ok_or_else(|| StoreError::NoSuchObject(reference.clone()))?;
                        pending.insert(reference.clone(), None);
                        staged.push((Operation::Del, old.class.clone(), reference, None));
                    }
                }
            }
        }
        if staged.is_empty() {
            return Ok(self.generation());
        }
        let first_generation = self.generation() + 1;
        let last_generation = first_generation + staged.len() as u64 - 1;
        let transaction = connection.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO objects (ref, class, uuid, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ref) DO UPDATE SET record = excluded.record",
            )?;
            let mut delete = transaction.prepare_cached("DELETE FROM objects WHERE ref = ?1")?;
            for (reference, state) in &pending {
                match state {
                    Some(object) => {
                        let record = serde_json::to_string(&object.fields).map_err(|e| {
                            StoreError::Corrupt {
                                reference: reference.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                        upsert.execute(params![reference, object.class, object.uuid, record])?;
                    }
                    None => {
                        delete.execute(params![reference])?;
                    }
                }
            }
            transaction.execute(
                "INSERT INTO meta (key, value) VALUES ('generation', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![last_generation.to_string()],
            )?;
        }
        transaction.commit()?;

        let mut memory = self.memory.write().map_err(|_| StoreError::Poisoned)?;
        for (reference, state) in pending {
            memory.remove(&reference);
            if let Some(object) = state {
                memory.insert(object);
            }
        }
        for (id, (operation, class, reference, snapshot)) in (first_generation..).zip(staged) {
            match memory.class_generations.get_mut(&class) {
                Some(generation) => *generation = id,
                None => {
                    memory.class_generations.insert(class.clone(), id);
                }
            }
            memory.log.push_back(Event {
                id,
                class,
                operation,
                reference,
                snapshot,
            });
        }
        while memory.log.len() > EVENT_LOG_CAPACITY {
            memory.log.pop_front();
        }
        memory.generation = last_generation;
        drop(memory);
        self.generation_tx.send_replace(last_generation);
        Ok(last_generation)
    }

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

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
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
