//! Writes and the event log: [`Store::apply`] commits a batch to SQLite
//! and memory and appends its events; `event.from` reads them back.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use super::{Change, Event, Object, Operation, Store, StoreError, full};

/// How many events the log keeps for `event.from` / `event.next`.
const EVENT_LOG_CAPACITY: usize = 65_536;

impl Store {
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
                .map(|e| {
                    let mut event = e.clone();
                    if event.operation != Operation::Del
                        && let Some(now) = memory.objects.get(&event.reference)
                    {
                        event.snapshot = now.clone();
                    }
                    event
                })
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
        let mut staged: Vec<(Operation, String, String, Arc<Object>)> =
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
                            object,
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
                        staged.push((Operation::Mod, new.class.clone(), reference, new));
                    }
                    Change::Touch(reference) => {
                        let object = current(&reference, &pending)
                            .ok_or_else(|| StoreError::NoSuchObject(reference.clone()))?;
                        staged.push((Operation::Mod, object.class.clone(), reference, object));
                    }
                    Change::Delete(reference) => {
                        let old = current(&reference, &pending)
                            .ok_or_else(|| StoreError::NoSuchObject(reference.clone()))?;
                        pending.insert(reference.clone(), None);
                        staged.push((Operation::Del, old.class.clone(), reference, old));
                    }
                }
            }
        }
        if staged.is_empty() {
            return Ok(self.generation());
        }
        let first_generation = self.generation() + 1;
        let last_generation = first_generation + staged.len() as u64 - 1;
        // A deleted or replaced file would swallow this write unseen.
        self.check_file()?;
        match persist(&mut connection, &pending, last_generation) {
            Ok(()) => {
                self.full_logged
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            Err(StoreError::Sqlite(e)) if self.is_full(&e) => {
                let runtime = staged
                    .iter()
                    .all(|(_, class, _, _)| full::RUNTIME_CLASSES.contains(&class.as_str()));
                let path = self.path().unwrap_or_default();
                if !runtime {
                    return Err(StoreError::Full { path });
                }
                if !self
                    .full_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(
                        database = %path.display(),
                        "the state file system is full: sessions and tasks are kept in memory \
                         only, every other change is refused until there is room"
                    );
                }
            }
            Err(e) => return Err(e),
        }
        drop(connection);
        self.publish(pending, staged, first_generation, last_generation)
    }

    /// Whether `error` means the database's file system is full.
    fn is_full(&self, error: &rusqlite::Error) -> bool {
        self.path().is_some_and(|p| full::is_full(error, &p))
    }

    /// The database file (or the one this store copies in memory).
    fn path(&self) -> Option<std::path::PathBuf> {
        self.in_memory_copy_of
            .clone()
            .or_else(|| self.file.as_ref().map(|f| f.path().to_owned()))
    }

    /// The committed changes into memory and the event log.
    fn publish(
        &self,
        pending: HashMap<String, Option<Arc<Object>>>,
        staged: Vec<(Operation, String, String, Arc<Object>)>,
        first_generation: u64,
        last_generation: u64,
    ) -> Result<u64, StoreError> {
        let mut memory = self.memory.write().map_err(|_| StoreError::Poisoned)?;
        for (reference, state) in pending {
            memory.remove(&reference);
            if let Some(object) = state {
                memory.insert(object);
            }
        }
        for (id, (operation, class, reference, object)) in (first_generation..).zip(staged) {
            // An add or a change keeps no copy of the record: a reader gets
            // the object as it is when it reads ([`Store::events_since`]).
            // Every window a reader asks for runs to the newest event, so a
            // later event of the object is in it too and wins (events are
            // coalesced per object, the newest state winning): no reader
            // needs the record as it was. So an event costs a few bytes,
            // not the size of its record, and the log's memory is not write
            // size times event count. A deletion keeps the record as it was
            // (who may see it is decided from it).
            let snapshot = match operation {
                Operation::Del => object,
                Operation::Add | Operation::Mod => unresolved(),
            };
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
}

/// The record an add or change event carries in the log until it is read
/// (one shared empty object).
fn unresolved() -> Arc<Object> {
    static EMPTY: std::sync::OnceLock<Arc<Object>> = std::sync::OnceLock::new();
    EMPTY
        .get_or_init(|| {
            Arc::new(Object {
                class: String::new(),
                reference: String::new(),
                uuid: String::new(),
                fields: Vec::new(),
            })
        })
        .clone()
}

/// Write `pending` and the generation in one SQLite transaction.
fn persist(
    connection: &mut rusqlite::Connection,
    pending: &HashMap<String, Option<Arc<Object>>>,
    last_generation: u64,
) -> Result<(), StoreError> {
    let transaction = connection.transaction()?;
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO objects (ref, class, uuid, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ref) DO UPDATE SET record = excluded.record",
        )?;
        let mut delete = transaction.prepare_cached("DELETE FROM objects WHERE ref = ?1")?;
        for (reference, state) in pending {
            match state {
                Some(object) => {
                    let record =
                        serde_json::to_string(&object.fields).map_err(|e| StoreError::Corrupt {
                            reference: reference.clone(),
                            reason: e.to_string(),
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
    Ok(())
}
