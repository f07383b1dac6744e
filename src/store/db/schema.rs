//! Opening the database: pragmas, schema migrations and loading every
//! object into memory.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension};

use super::{Memory, Object, Store, StoreError};
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
    // The audit of boot-configuration edits (`Store::audit_append`): each
    // record chained to the one before by its hash.
    "CREATE TABLE audit (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         prev TEXT NOT NULL,
         hash TEXT NOT NULL,
         record TEXT NOT NULL
     );",
];

impl Store {
    /// Open (creating or migrating) the database at `path` and load it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let opened = Connection::open(path)
            .map_err(StoreError::from)
            .and_then(Store::from_connection);
        let mut store = match opened {
            Ok(store) => store,
            // A full file system: SQLite cannot even make its WAL files.
            // Serve from a copy in memory rather than not at all (root
            // must get in to make room).
            Err(StoreError::Sqlite(e)) if super::full::is_full(&e, path) => {
                return Store::open_in_memory_copy(path);
            }
            Err(e) => return Err(e),
        };
        // SQLite could make its files in what room there was, but the
        // start's own writes (the host record, agent_start_time) would
        // fail: served from memory as well.
        if super::full::no_room(path) {
            // What this connection read, through its WAL: a copy made
            // from the file alone (`immutable`) would miss what the WAL
            // still holds.
            let loaded = store.memory.into_inner().unwrap_or_else(|p| p.into_inner());
            drop(store.connection);
            return Store::serve_from_memory(path, Some(loaded));
        }
        store.file = Some(
            super::file::DbFile::new(path).map_err(|e| StoreError::Corrupt {
                reference: path.display().to_string(),
                reason: format!("cannot stat the database file: {e}"),
            })?,
        );
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

    /// The store of a database on a full file system: its objects read
    /// from the file as it is (read-only, `immutable`: no WAL file is
    /// made), served from a database in memory. Nothing reaches the file
    /// until a restart finds room.
    fn open_in_memory_copy(path: &Path) -> Result<Store, StoreError> {
        let loaded = if path.exists() {
            // A WAL left by an earlier run (a checkpoint the full disk
            // cut short) holds committed pages the file lacks: read
            // through it when its files are there (read-only needs no
            // room then); only without one is the file alone the
            // database (`immutable`, which makes no WAL file).
            let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
            let shm = std::path::PathBuf::from(format!("{}-shm", path.display()));
            let read_only = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
            let through_wal = (wal.exists() && shm.exists())
                .then(|| Connection::open_with_flags(path, read_only).ok())
                .flatten()
                .and_then(|file| load(&file).ok());
            match through_wal {
                Some(memory) => Some(memory),
                None => {
                    let uri = format!("file:{}?immutable=1", path.display());
                    let file = Connection::open_with_flags(
                        uri,
                        read_only | rusqlite::OpenFlags::SQLITE_OPEN_URI,
                    )?;
                    Some(load(&file)?)
                }
            }
        } else {
            None
        };
        Store::serve_from_memory(path, loaded)
    }

    /// The store serving `loaded` (the objects of the database at `path`)
    /// from a database in memory.
    fn serve_from_memory(path: &Path, loaded: Option<Memory>) -> Result<Store, StoreError> {
        let mut memory_db = Connection::open_in_memory()?;
        memory_db.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut memory_db)?;
        let memory = match loaded {
            Some(memory) => {
                let transaction = memory_db.transaction()?;
                for object in memory.objects.values() {
                    let record =
                        serde_json::to_string(&object.fields).map_err(|e| StoreError::Corrupt {
                            reference: object.reference.clone(),
                            reason: e.to_string(),
                        })?;
                    transaction.execute(
                        "INSERT INTO objects (ref, class, uuid, record) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![object.reference, object.class, object.uuid, record],
                    )?;
                }
                transaction.commit()?;
                memory
            }
            None => Memory::default(),
        };
        tracing::error!(
            database = %path.display(),
            "the state file system is full: pcipassd serves from a copy of its database in \
             memory; sessions, tasks and every change of its own objects are lost at the next \
             start. Make room on that file system and restart pcipassd"
        );
        let (generation_tx, _) = tokio::sync::watch::channel(memory.generation);
        Ok(Store {
            connection: Mutex::new(memory_db),
            memory: RwLock::new(memory),
            generation_tx,
            file: None,
            in_memory_copy_of: Some(path.to_owned()),
            full_logged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn from_connection(mut connection: Connection) -> Result<Store, StoreError> {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut connection)?;
        let memory = load(&connection)?;
        let (generation_tx, _) = tokio::sync::watch::channel(memory.generation);
        Ok(Store {
            connection: Mutex::new(connection),
            memory: RwLock::new(memory),
            generation_tx,
            file: None,
            in_memory_copy_of: None,
            full_logged: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// The objects and the generation of a database.
fn load(connection: &Connection) -> Result<Memory, StoreError> {
    let mut memory = Memory::default();
    {
        let mut statement = connection.prepare("SELECT ref, class, uuid, record FROM objects")?;
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
    Ok(memory)
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
