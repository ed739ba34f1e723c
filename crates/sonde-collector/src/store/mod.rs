//! Where a collector keeps what it received: reports (deduplicated by
//! `report_id`), the rows derived from them for analysis, instances,
//! directives and their deliveries, and the disables the cost rules issued.
//!
//! One [`Store`] over one of two backends, chosen by `--db`:
//!
//! - **SQLite** (a file path; the default): embedded, one process, one
//!   connection in WAL mode. Rate limits are kept in the process.
//! - **PostgreSQL** (`postgres://...`): any number of collector processes
//!   (replicas) on one database, through a connection pool. Everything that
//!   must hold across replicas is in the database: dedupe is a unique
//!   constraint, each upload's transaction locks its instance's row first
//!   (so a directive goes out once and a cost rule fires once whichever
//!   replica answers), and rate limits are token buckets in a table.
//!
//! Both apply their versioned schema migrations when opened and refuse a
//! database written by a newer collector. The tables (names and columns are
//! the same in both; SQLite keeps times as milliseconds since the Unix
//! epoch, PostgreSQL as `timestamptz`):
//!
//! | table | one row per | for |
//! |---|---|---|
//! | `reports` | stored report: its JSON as received, `received_at`, and the runtime facts (`sonde_version`, `os`, `arch`, `cpus`, `installation_id`, `started`, `events_recorded`, `events_dropped`) | instances in a window by version, OS, arch; reports per hour |
//! | `report_plugins` | plugin of a report: `state`, `reason`, `until`, `last_failure`, cumulative cost, and the interval's `d_events`, `d_calls`, `d_busy_us`, `d_failures` | instances running a plugin, cost percentiles |
//! | `report_metrics` | series of a report: `origin` (`plugin`/`source`), `owner`, `name`, `kind`, `unit`, `labels` (JSON), `value`, `delta`, histogram `count`/`sum`/`d_sum`/`bounds`/`buckets` | fleet totals by label |
//! | `instances` | instance: first and last seen, report count | |
//! | `directives`, `deliveries` | directive (`action`, `plugin`, `source` admin/rule); its delivery to an instance | disabled by whom, why |
//!
//! A change over an interval (`d_*`, `delta`) is taken against the
//! instance's previous stored report of the same run (`started`); the first
//! report of a run counts everything since its start; a value that went down
//! starts over; when the previous report was pruned the change is `NULL`.
//! Pruning: [`crate::retention`].

mod ingest;
mod postgres;
mod read;
mod rows;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

pub use ingest::Ingested;
pub use read::{DeliveredDirective, InstanceSummary, StoredDirective};
pub(crate) use read::{DisableFact, MetricFact, PluginFact, ReportFact, WindowRows};

use crate::config::{Policy, RateLimit};
use crate::limit::RateLimiter;
use crate::retention::{Pruned, Retention};
use crate::upload::Received;

/// Connections a PostgreSQL store opens at most when not told otherwise:
/// enough for the decodes and reads in flight on a small machine; replicas
/// times this must stay under the server's `max_connections` (100 by
/// default).
pub const DEFAULT_CONNECTIONS: usize = 16;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite file could not be opened or set up.
    #[error("cannot open database {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL URL is not one.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The database was written by a newer collector.
    #[error("database schema {0} is newer than this collector's ({1})")]
    NewerSchema(i64, i64),
    /// A SQLite statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL statement failed.
    #[error("database error: {}", pg_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had (the server is down, or every
    /// connection stayed busy past the wait).
    #[error("no database connection: {0}")]
    Pool(String),
    /// A stored value does not decode (the database was edited by hand?).
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
    /// The blocking task running SQLite work panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A PostgreSQL error with what the server said (its `Display` alone is
/// "db error").
fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Pool(e.to_string())
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

    fn parse(s: &str) -> DirectiveSource {
        if s == "rule" { DirectiveSource::Rule } else { DirectiveSource::Admin }
    }
}

/// Which database, from `--db`: a `postgres://` (or `postgresql://`) URL,
/// else the path of a SQLite file.
#[derive(Clone, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl Db {
    /// Reads a `--db` value.
    pub fn parse(value: &str) -> Db {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Db::Postgres(value.to_string())
        } else {
            Db::Sqlite(PathBuf::from(value))
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Shown without the password.
impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(path) => write!(f, "{}", path.display()),
            Db::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// What each backend does; [`Store`] is this behind an `Arc`. The two
/// implementations sit beside it: `sqlite.rs` and `postgres.rs`. The ingest
/// algorithm itself is shared ([`ingest::IngestTx`]).
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    async fn ingest(
        &self,
        reports: Vec<Received>,
        policy: Arc<Policy>,
        now: SystemTime,
    ) -> Result<Ingested, StoreError>;
    async fn add_directive(
        &self,
        instance: Option<Uuid>,
        directive: Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError>;
    async fn delete_directive(&self, id: i64) -> Result<bool, StoreError>;
    async fn instances(&self, limit: u32) -> Result<Vec<InstanceSummary>, StoreError>;
    async fn reports(&self, instance: Uuid, limit: u32) -> Result<Option<Vec<String>>, StoreError>;
    async fn directives(&self, limit: u32) -> Result<Vec<StoredDirective>, StoreError>;
    async fn deliveries(
        &self,
        instance: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveredDirective>, StoreError>;
    /// The rows received at or after `since`, at most `limit` of each kind.
    async fn window(&self, since: SystemTime, limit: u32) -> Result<WindowRows, StoreError>;
    async fn prune(&self, retention: &Retention, now: SystemTime) -> Result<Pruned, StoreError>;
    fn rate_limiter(&self, rate: RateLimit) -> Arc<dyn RateLimiter>;
}

/// The reports and directives of a collector, on SQLite or PostgreSQL;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens `db`: a SQLite file (created if missing), or a PostgreSQL
    /// database through a pool of at most `connections`. Migrations are
    /// applied first.
    pub async fn connect(db: &Db, connections: usize) -> Result<Store, StoreError> {
        match db {
            Db::Sqlite(path) => Store::sqlite(path),
            Db::Postgres(url) => Store::postgres(url, connections).await,
        }
    }

    /// Opens (creating if needed) the SQLite database at `path`, in WAL mode.
    pub fn sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store { backend: Arc::new(sqlite::SqliteBackend::open(path)?) })
    }

    /// A SQLite store that lives in memory, for tests.
    pub fn sqlite_in_memory() -> Result<Store, StoreError> {
        Ok(Store { backend: Arc::new(sqlite::SqliteBackend::in_memory()?) })
    }

    /// Connects to the PostgreSQL database at `url` with a pool of at most
    /// `connections`, and applies the migrations (one replica at a time).
    pub async fn postgres(url: &str, connections: usize) -> Result<Store, StoreError> {
        Ok(Store { backend: Arc::new(postgres::PgBackend::connect(url, connections).await?) })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// Stores `reports` (all of one instance, at least one) unless stored
    /// already, applies `policy`'s cost rules to the new ones, and returns
    /// the directives that answer them, recorded as delivered; all in one
    /// transaction.
    pub async fn ingest(
        &self,
        reports: Vec<Received>,
        policy: Arc<Policy>,
        now: SystemTime,
    ) -> Result<Ingested, StoreError> {
        self.backend.ingest(reports, policy, now).await
    }

    /// Stores `directive` for `instance` (`None`: every instance, including
    /// ones that first report later) and returns its id.
    pub async fn add_directive(
        &self,
        instance: Option<Uuid>,
        directive: Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        self.backend.add_directive(instance, directive, source, now).await
    }

    /// Deletes directive `id` (and the record of its deliveries): instances
    /// that have not received it yet never will. False if there is none.
    pub async fn delete_directive(&self, id: i64) -> Result<bool, StoreError> {
        self.backend.delete_directive(id).await
    }

    /// Up to `limit` instances, most recently seen first.
    pub async fn instances(&self, limit: u32) -> Result<Vec<InstanceSummary>, StoreError> {
        self.backend.instances(limit).await
    }

    /// Up to `limit` stored reports of `instance` as their JSON (as
    /// received), newest first; `None` if the instance never reported.
    pub async fn reports(
        &self,
        instance: Uuid,
        limit: u32,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.backend.reports(instance, limit).await
    }

    /// Up to `limit` directives, newest first, with their delivery counts.
    pub async fn directives(&self, limit: u32) -> Result<Vec<StoredDirective>, StoreError> {
        self.backend.directives(limit).await
    }

    /// Up to `limit` directives delivered to `instance`, newest first.
    pub async fn deliveries(
        &self,
        instance: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveredDirective>, StoreError> {
        self.backend.deliveries(instance, limit).await
    }

    /// The fleet's figures over the `window` before `now` (at most
    /// [`MAX_WINDOW`](crate::fleet::MAX_WINDOW)), from at most
    /// [`MAX_FLEET_ROWS`](crate::fleet::MAX_FLEET_ROWS) rows of each kind;
    /// with `k`, k-anonymous ([`crate::fleet`]).
    pub async fn fleet(
        &self,
        window: Duration,
        now: SystemTime,
        k: Option<u32>,
    ) -> Result<crate::fleet::Fleet, StoreError> {
        let window = window.min(crate::fleet::MAX_WINDOW);
        let since = now.checked_sub(window).unwrap_or(UNIX_EPOCH);
        let rows = self.backend.window(since, crate::fleet::MAX_FLEET_ROWS).await?;
        Ok(crate::fleet::Fleet::from_rows(&rows, since, now, k))
    }

    /// Prunes what `retention` says is too old (or, on SQLite, over its size
    /// bound) at time `now`.
    pub async fn prune(
        &self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<Pruned, StoreError> {
        self.backend.prune(retention, now).await
    }

    /// The rate limiter for this store: in the process for SQLite, in the
    /// database (shared by every replica) for PostgreSQL.
    pub fn rate_limiter(&self, rate: RateLimit) -> Arc<dyn RateLimiter> {
        self.backend.rate_limiter(rate)
    }
}

/// `url` without its user, password and query (which may hold a password).
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}/{path}")
}

/// A directive's `action` and the plugin it is about, if any, for the
/// `directives` table's columns.
fn directive_parts(d: &Directive) -> (&'static str, Option<&str>) {
    match d {
        Directive::DisablePlugin { plugin, .. } => ("disable_plugin", Some(plugin)),
        Directive::EnablePlugin { plugin } => ("enable_plugin", Some(plugin)),
        Directive::DisableMetrics { plugin, .. } => ("disable_metrics", Some(plugin)),
        Directive::EnableMetrics { plugin, .. } => ("enable_metrics", Some(plugin)),
        Directive::Stop { .. } => ("stop", None),
    }
}

fn directive_json(d: &Directive) -> Result<String, StoreError> {
    serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))
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

fn directive(body: &str) -> Result<Directive, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("directive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_as_rfc3339() {
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn a_db_value_is_a_postgres_url_or_a_file_and_shows_no_password() {
        let pg = Db::parse("postgres://sonde:secret@db:5432/telemetry");
        assert!(matches!(pg, Db::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://db:5432/telemetry");
        let q = Db::parse("postgresql://db/t?password=secret&sslmode=disable");
        assert_eq!(q.to_string(), "postgresql://db/t");
        assert_eq!(Db::parse("collector.db"), Db::Sqlite("collector.db".into()));
    }
}
