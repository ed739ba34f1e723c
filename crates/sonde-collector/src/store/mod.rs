//! The SQLite store: reports (deduplicated by `report_id`), instances,
//! directives and their deliveries, and the disables the cost rules issued.
//!
//! One connection behind a mutex, in WAL mode. Every method blocks: the
//! routes call them through `tokio::task::spawn_blocking`, never on an async
//! worker. Times are stored as milliseconds since the Unix epoch and shown as
//! RFC 3339.

mod ingest;
mod read;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::Connection;
use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

pub use ingest::Ingested;
pub use read::{InstanceSummary, StoredDirective};

/// Version of the database layout, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock held by another process (a backup
/// or `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    report_id   TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    timestamp   TEXT NOT NULL,          -- as the host wrote it
    received_at INTEGER NOT NULL,       -- ms since the epoch
    body        TEXT NOT NULL           -- the Report, as Report::to_json
);
CREATE INDEX IF NOT EXISTS reports_by_instance ON reports (instance_id, received_at);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    last_report INTEGER NOT NULL,       -- rowid of its latest report: orders ties
    reports     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_last_report ON instances (last_report);
CREATE TABLE IF NOT EXISTS directives (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT,                   -- NULL: every instance
    body        TEXT NOT NULL,          -- the Directive's JSON
    source      TEXT NOT NULL,          -- 'admin' | 'rule'
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS directives_by_instance ON directives (instance_id);
CREATE TABLE IF NOT EXISTS deliveries (
    directive_id INTEGER NOT NULL REFERENCES directives (id) ON DELETE CASCADE,
    instance_id  TEXT NOT NULL,
    report_id    TEXT NOT NULL,         -- first report of the upload answered
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (directive_id, instance_id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_report ON deliveries (instance_id, report_id);
CREATE TABLE IF NOT EXISTS rule_issues (
    instance_id   TEXT NOT NULL,
    plugin        TEXT NOT NULL,
    directive_id  INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,     -- seconds since the epoch
    for_secs      INTEGER NOT NULL,
    seen_disabled INTEGER NOT NULL,
    PRIMARY KEY (instance_id, plugin)
);
";

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or set up.
    #[error("cannot open database {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer collector.
    #[error("database schema {0} is newer than this collector's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
    /// A statement failed.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// A stored value does not decode (the file was edited by hand?).
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(e)
    }
}

/// Who created a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveSource {
    /// `POST /v1/directives`.
    Admin,
    /// A `[[rule]]` of the policy.
    Rule,
}

impl DirectiveSource {
    fn as_str(self) -> &'static str {
        match self {
            DirectiveSource::Admin => "admin",
            DirectiveSource::Rule => "rule",
        }
    }
}

/// The reports and directives of a collector.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        Store::setup(conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })
    }

    /// A store that lives in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Stores `directive` for `instance` (`None`: every instance, including
    /// ones that first report later) and returns its id.
    pub fn add_directive(
        &self,
        instance: Option<Uuid>,
        directive: &Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        insert_directive(&conn, instance, directive, source, now)
    }

    /// Deletes directive `id` (and the record of its deliveries): instances
    /// that have not received it yet never will. False if there is none.
    pub fn delete_directive(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.execute("DELETE FROM directives WHERE id = ?1", [id])? > 0)
    }
}

fn insert_directive(
    conn: &Connection,
    instance: Option<Uuid>,
    directive: &Directive,
    source: DirectiveSource,
    now: SystemTime,
) -> Result<i64, StoreError> {
    let body = serde_json::to_string(directive).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO directives (instance_id, body, source, created_at) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![instance.map(|u| u.to_string()), body, source.as_str(), millis(now)],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Milliseconds since the Unix epoch (0 before it).
fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 in UTC, to the millisecond.
fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("instance id `{text}`: {e}")))
}

fn directive(body: &str) -> Result<Directive, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("directive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_file_is_opened_in_wal_mode_and_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let store = Store::open(&path).expect("open");
        let mode: String = store
            .conn
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        let stop = Directive::Stop { reason: "bye".into() };
        let id = store
            .add_directive(None, &stop, DirectiveSource::Admin, SystemTime::now())
            .expect("add");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        let listed = store.directives(10).expect("list");
        assert_eq!((listed[0].id, &listed[0].directive), (id, &stop));
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("prepare");
        assert!(matches!(Store::open(&path), Err(StoreError::NewerSchema(99))));
    }

    #[test]
    fn times_are_shown_as_rfc3339() {
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}
