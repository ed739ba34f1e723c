//! The SQLite backend: one connection behind a mutex, in WAL mode, used
//! from the blocking pool (never on an async worker). Writes run in
//! `BEGIN IMMEDIATE` transactions. Rate limits are kept in the process
//! ([`Limiter`]): this backend is for one collector process.

mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sonde_core::Directive;
use uuid::Uuid;

use super::ingest::{self, IngestTx, RuleUpdate};
use super::rows::{
    Cost, MetricRow, Origin, PluginRow, Point, Previous, ReportRow, Snapshot, int, rows,
};
use super::{
    Backend, DeliveredDirective, DirectiveSource, DisableFact, Ingested, InstanceSummary,
    MetricFact, PluginFact, ReportFact, StoreError, StoredDirective, WindowRows, directive,
    directive_json, directive_parts, millis, rfc3339,
};
use crate::config::{Policy, RateLimit};
use crate::limit::{Limiter, RateLimiter};
use crate::policy::IssuedDisable;
use crate::retention::{PRUNE_CHUNK, Pruned, Retention};
use crate::upload::Received;

/// How long a statement waits for a lock held by another process (a backup
/// or `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports deleted at a time for the size bound, the bound checked between
/// (a few hundred KiB to a few MiB of reports).
const SIZE_CHUNK: i64 = 50;

#[derive(Debug)]
pub(super) struct SqliteBackend {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteBackend {
    pub(super) fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        let conn = setup(conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        Ok(SqliteBackend { conn: Arc::new(Mutex::new(conn)) })
    }

    pub(super) fn in_memory() -> Result<SqliteBackend, StoreError> {
        let conn = setup(Connection::open_in_memory()?)?;
        Ok(SqliteBackend { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut conn.lock())).await?
    }
}

/// Applies the migrations this database lacks, each in a transaction.
fn setup(mut conn: Connection) -> Result<Connection, StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let latest = schema::MIGRATIONS.len() as i64;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > latest {
        return Err(StoreError::NewerSchema(version, latest));
    }
    for (n, sql) in schema::MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        if n + 1 == ROWS_VERSION {
            let filled = backfill(&tx)?;
            if filled > 0 {
                tracing::info!(reports = filled, "analysis rows made for the stored reports");
            }
        }
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
        if version > 0 {
            tracing::info!(from = n, to = n + 1, "database migrated");
        }
    }
    Ok(conn)
}

/// The schema version that added the analysis rows.
const ROWS_VERSION: usize = 2;

/// Makes the analysis rows of the reports stored before they existed, one
/// instance at a time in the order they were stored (so the intervals are
/// right). A body that does not read as a report is left without rows.
fn backfill(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let mut stmt = tx.prepare(
        "SELECT id, instance_id, received_at, body FROM reports ORDER BY instance_id, id",
    )?;
    let mut stored = stmt.query([])?;
    let (mut current, mut prev, mut filled) = (String::new(), Previous::None, 0);
    while let Some(row) = stored.next()? {
        let (id, instance, at, body): (i64, String, i64, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        if instance != current {
            current = instance.clone();
            prev = Previous::None;
        }
        let Ok(report) = sonde_core::Report::from_json(body.as_bytes()) else { continue };
        let (plugins, metrics, next) = rows(id, &ReportRow { report: &report, body: &body }, &prev);
        insert_rows(tx, &instance, at, &plugins, &metrics)?;
        prev = Previous::Report(next);
        filled += 1;
    }
    Ok(filled)
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ingest(
        &self,
        reports: Vec<Received>,
        policy: Arc<Policy>,
        now: SystemTime,
    ) -> Result<Ingested, StoreError> {
        // The shared algorithm is async over IngestTx; on this backend every
        // step completes at once, on this blocking thread.
        let handle = tokio::runtime::Handle::current();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ingested =
                handle.block_on(ingest::run(&mut SqliteTx(&tx), &reports, &policy, now))?;
            tx.commit()?;
            Ok(ingested)
        })
        .await
    }

    async fn add_directive(
        &self,
        instance: Option<Uuid>,
        directive: Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        self.with(move |conn| insert_directive(conn, instance, &directive, source, now)).await
    }

    async fn delete_directive(&self, id: i64) -> Result<bool, StoreError> {
        self.with(move |conn| Ok(conn.execute("DELETE FROM directives WHERE id = ?1", [id])? > 0))
            .await
    }

    async fn instances(&self, limit: u32) -> Result<Vec<InstanceSummary>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT instance_id, first_seen, last_seen, reports FROM instances
                 ORDER BY last_report DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            rows.map(|row| {
                let (id, first, last, reports) = row?;
                Ok(InstanceSummary {
                    instance_id: uuid(&id)?,
                    first_seen: rfc3339(first),
                    last_seen: rfc3339(last),
                    reports: reports.max(0) as u64,
                })
            })
            .collect()
        })
        .await
    }

    async fn reports(&self, instance: Uuid, limit: u32) -> Result<Option<Vec<String>>, StoreError> {
        self.with(move |conn| {
            let id = instance.to_string();
            let known = conn
                .query_row("SELECT 1 FROM instances WHERE instance_id = ?1", [&id], |_| Ok(()))
                .optional()?;
            if known.is_none() {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT body FROM reports WHERE instance_id = ?1
                 ORDER BY received_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit], |row| row.get::<_, String>(0))?;
            Ok(Some(rows.collect::<Result<_, _>>()?))
        })
        .await
    }

    async fn directives(&self, limit: u32) -> Result<Vec<StoredDirective>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.id, d.instance_id, d.body, d.source, d.created_at,
                        (SELECT COUNT(*) FROM deliveries v WHERE v.directive_id = d.id)
                 FROM directives d ORDER BY d.id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (id, instance, body, source, created, delivered) = row?;
                Ok(StoredDirective {
                    id,
                    instance_id: instance.as_deref().map(uuid).transpose()?,
                    directive: directive(&body)?,
                    source: DirectiveSource::parse(&source),
                    created_at: rfc3339(created),
                    delivered: delivered.max(0) as u64,
                })
            })
            .collect()
        })
        .await
    }

    async fn deliveries(
        &self,
        instance: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveredDirective>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.id, d.body, d.source, v.delivered_at, v.report_id
                 FROM deliveries v JOIN directives d ON d.id = v.directive_id
                 WHERE v.instance_id = ?1 ORDER BY v.delivered_at DESC, d.id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![instance.to_string(), limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?;
            rows.map(|row| {
                let (id, body, source, at, report) = row?;
                Ok(DeliveredDirective {
                    id,
                    directive: directive(&body)?,
                    source: DirectiveSource::parse(&source),
                    delivered_at: rfc3339(at),
                    report_id: uuid(&report)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn window(&self, since: SystemTime, limit: u32) -> Result<WindowRows, StoreError> {
        self.with(move |conn| window(conn, millis(since), limit)).await
    }

    async fn prune(&self, retention: &Retention, now: SystemTime) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        if let Some(age) = retention.max_age {
            let cutoff = millis(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
            // One chunk per transaction, so uploads go on in between.
            loop {
                let n = self
                    .with(move |conn| {
                        Ok(conn.execute(
                            "DELETE FROM reports WHERE id IN
                             (SELECT id FROM reports WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
                            params![cutoff, PRUNE_CHUNK],
                        )?)
                    })
                    .await?;
                pruned.reports += n as u64;
                if (n as i64) < PRUNE_CHUNK {
                    break;
                }
            }
            pruned.instances = self
                .with(move |conn| {
                    Ok(conn.execute("DELETE FROM instances WHERE last_seen < ?1", [cutoff])? as u64)
                })
                .await?;
        }
        if let Some(max) = retention.max_bytes {
            // The oldest go first, a small chunk at a time, until the pages
            // in use are under the bound.
            loop {
                let n = self
                    .with(move |conn| {
                        if used_bytes(conn)? <= max {
                            return Ok(0);
                        }
                        Ok(conn.execute(
                            "DELETE FROM reports WHERE id IN
                             (SELECT id FROM reports ORDER BY id LIMIT ?1)",
                            [SIZE_CHUNK],
                        )?)
                    })
                    .await?;
                pruned.by_size += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    fn rate_limiter(&self, rate: RateLimit) -> Arc<dyn RateLimiter> {
        Arc::new(Limiter::new(rate))
    }
}

/// Bytes of the database's pages in use (the file minus its free pages).
fn used_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let pragma = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
    let used = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
    Ok(used.max(0) as u64)
}

impl SqliteBackend {
    /// Bytes in use, for tests of the size bound.
    #[cfg(test)]
    async fn used(&self) -> Result<u64, StoreError> {
        self.with(|conn| used_bytes(conn)).await
    }
}

fn insert_directive(
    conn: &Connection,
    instance: Option<Uuid>,
    directive: &Directive,
    source: DirectiveSource,
    now: SystemTime,
) -> Result<i64, StoreError> {
    let body = directive_json(directive)?;
    let (action, plugin) = directive_parts(directive);
    conn.execute(
        "INSERT INTO directives (instance_id, body, source, created_at, action, plugin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            instance.map(|u| u.to_string()),
            body,
            source.as_str(),
            millis(now),
            action,
            plugin
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Inserts the analysis rows of reports of `instance` received at `now`
/// (ms since the epoch).
fn insert_rows(
    conn: &Connection,
    instance: &str,
    now: i64,
    plugins: &[PluginRow],
    metrics: &[MetricRow],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO report_plugins (report, instance_id, received_at, plugin, version, state,
             reason, until, last_failure, events, calls, busy_us, failures, restarts,
             invalid_points, events_skipped, peak_memory_bytes,
             d_events, d_calls, d_busy_us, d_failures)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21)",
    )?;
    for p in plugins {
        let c = &p.cost;
        let d = p.interval;
        stmt.execute(params![
            p.report,
            instance,
            now,
            p.plugin,
            p.version,
            p.state,
            p.reason,
            p.until,
            p.last_failure,
            int(c.events),
            int(c.calls),
            int(c.busy_us),
            int(c.failures),
            int(c.restarts),
            int(c.invalid_points),
            int(c.events_skipped),
            int(c.peak_memory_bytes),
            d.map(|d| int(d.events)),
            d.map(|d| int(d.calls)),
            d.map(|d| int(d.busy_us)),
            d.map(|d| int(d.failures)),
        ])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO report_metrics (report, instance_id, received_at, origin, owner, name,
             kind, unit, labels, value, delta, count, sum, d_sum, bounds, buckets, fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    for m in metrics {
        stmt.execute(params![
            m.report,
            instance,
            now,
            m.origin.as_str(),
            m.owner,
            m.name,
            m.kind,
            m.unit,
            m.labels,
            m.value,
            m.delta,
            m.count,
            m.sum,
            m.d_sum,
            m.bounds,
            m.buckets,
            m.fields,
        ])?;
    }
    Ok(())
}

/// The fleet rows received at or after `since` (ms), newest first, at most
/// `limit` of each kind (one more is read to tell whether there were more).
fn window(conn: &Connection, since: i64, limit: u32) -> Result<WindowRows, StoreError> {
    let take = i64::from(limit) + 1;
    let mut w = WindowRows::default();
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id, id, received_at, sonde_version, os, arch FROM reports
         WHERE received_at >= ?1 ORDER BY received_at DESC, id DESC LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![since, take])?;
    while let Some(r) = rows.next()? {
        w.reports.push(ReportFact {
            instance_id: uuid(&r.get::<_, String>(0)?)?,
            report: r.get(1)?,
            received_ms: r.get(2)?,
            sonde_version: r.get(3)?,
            os: r.get(4)?,
            arch: r.get(5)?,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id, report, plugin, state, reason, d_events, d_busy_us, d_failures,
                peak_memory_bytes
         FROM report_plugins WHERE received_at >= ?1 ORDER BY received_at DESC, report DESC
         LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![since, take])?;
    while let Some(r) = rows.next()? {
        w.plugins.push(PluginFact {
            instance_id: uuid(&r.get::<_, String>(0)?)?,
            report: r.get(1)?,
            plugin: r.get(2)?,
            state: r.get(3)?,
            reason: r.get(4)?,
            d_events: r.get(5)?,
            d_busy_us: r.get(6)?,
            d_failures: r.get(7)?,
            peak_memory_bytes: r.get(8)?,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id, report, origin, owner, name, kind, unit, labels, value, delta
         FROM report_metrics WHERE received_at >= ?1 ORDER BY received_at DESC, report DESC
         LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![since, take])?;
    while let Some(r) = rows.next()? {
        w.metrics.push(MetricFact {
            instance_id: uuid(&r.get::<_, String>(0)?)?,
            report: r.get(1)?,
            origin: r.get(2)?,
            owner: r.get(3)?,
            name: r.get(4)?,
            kind: r.get(5)?,
            unit: r.get(6)?,
            labels: r.get(7)?,
            value: r.get(8)?,
            delta: r.get(9)?,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT v.instance_id, d.source, d.body
         FROM deliveries v JOIN directives d ON d.id = v.directive_id
         WHERE d.action = 'disable_plugin' ORDER BY v.delivered_at DESC, d.id DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query(params![take])?;
    while let Some(r) = rows.next()? {
        w.disables.push(DisableFact {
            instance_id: uuid(&r.get::<_, String>(0)?)?,
            source: DirectiveSource::parse(&r.get::<_, String>(1)?),
            directive: directive(&r.get::<_, String>(2)?)?,
        });
    }
    w.cut(limit);
    Ok(w)
}

fn uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("instance id `{text}`: {e}")))
}

/// An ingest transaction on SQLite.
struct SqliteTx<'a>(&'a Transaction<'a>);

impl SqliteTx<'_> {
    fn select(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl IngestTx for SqliteTx<'_> {
    async fn lock_instance(
        &mut self,
        instance: Uuid,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError> {
        // The transaction is IMMEDIATE: it holds the write lock already.
        let last: i64 = self.0.query_row(
            "INSERT INTO instances (instance_id, first_seen, last_seen, last_report, reports)
             VALUES (?1, ?2, ?2, 0, 0)
             ON CONFLICT (instance_id) DO UPDATE SET instance_id = excluded.instance_id
             RETURNING last_report",
            params![instance.to_string(), millis(now)],
            |row| row.get(0),
        )?;
        Ok((last > 0).then_some(last))
    }

    async fn snapshot(&mut self, id: i64) -> Result<Option<Snapshot>, StoreError> {
        let started = self
            .0
            .query_row("SELECT started FROM reports WHERE id = ?1", [id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?;
        let Some(started) = started else { return Ok(None) };
        let mut snap = Snapshot { started, ..Snapshot::default() };
        let mut stmt = self.0.prepare_cached(
            "SELECT plugin, events, calls, busy_us, failures FROM report_plugins WHERE report = ?1",
        )?;
        let rows = stmt.query_map([id], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok((
                r.get::<_, String>(0)?,
                Cost { events: n(1)?, calls: n(2)?, busy_us: n(3)?, failures: n(4)? },
            ))
        })?;
        for row in rows {
            let (plugin, cost) = row?;
            snap.plugins.insert(plugin, cost);
        }
        let mut stmt = self.0.prepare_cached(
            "SELECT origin, owner, name, labels, value, count, sum FROM report_metrics
             WHERE report = ?1",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                (Origin::parse(&r.get::<_, String>(0)?), r.get(1)?, r.get(2)?, r.get(3)?),
                Point { value: r.get(4)?, count: r.get(5)?, sum: r.get(6)? },
            ))
        })?;
        for row in rows {
            let (key, point) = row?;
            snap.series.insert(key, point);
        }
        Ok(Some(snap))
    }

    async fn insert_report(
        &mut self,
        row: &ReportRow<'_>,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError> {
        let r = row.report;
        let inserted = self.0.execute(
            "INSERT INTO reports (report_id, instance_id, timestamp, received_at, started,
                 sonde_version, os, arch, cpus, installation_id, events_recorded, events_dropped,
                 body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (report_id) DO NOTHING",
            params![
                r.report_id.to_string(),
                r.instance_id.to_string(),
                r.timestamp,
                millis(now),
                r.started,
                r.host.sonde_version,
                r.host.os,
                r.host.arch,
                r.host.cpus,
                r.installation_id,
                row.events_recorded(),
                row.events_dropped(),
                row.body,
            ],
        )?;
        Ok((inserted > 0).then(|| self.0.last_insert_rowid()))
    }

    async fn insert_rows(
        &mut self,
        instance: Uuid,
        now: SystemTime,
        plugins: &[PluginRow],
        metrics: &[MetricRow],
    ) -> Result<(), StoreError> {
        insert_rows(self.0, &instance.to_string(), millis(now), plugins, metrics)
    }

    async fn update_instance(
        &mut self,
        instance: Uuid,
        last: i64,
        accepted: u32,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE instances SET last_seen = ?2, last_report = ?3, reports = reports + ?4
             WHERE instance_id = ?1",
            params![instance.to_string(), millis(now), last, accepted],
        )?;
        Ok(())
    }

    async fn rule_issues(
        &mut self,
        instance: Uuid,
    ) -> Result<HashMap<String, IssuedDisable>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT plugin, issued_at, for_secs, seen_disabled FROM rule_issues
             WHERE instance_id = ?1",
        )?;
        let rows = stmt.query_map([instance.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                IssuedDisable {
                    issued_at: row.get::<_, i64>(1)?.max(0) as u64,
                    for_secs: row.get::<_, i64>(2)?.max(0) as u64,
                    seen_disabled: row.get(3)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn update_rule(
        &mut self,
        instance: Uuid,
        plugin: &str,
        update: RuleUpdate,
    ) -> Result<(), StoreError> {
        let instance = instance.to_string();
        match update {
            RuleUpdate::Issued { directive, issued } => self.0.execute(
                "INSERT OR REPLACE INTO rule_issues
                 (instance_id, plugin, directive_id, issued_at, for_secs, seen_disabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![instance, plugin, directive, int(issued.issued_at), int(issued.for_secs)],
            )?,
            RuleUpdate::SeenDisabled => self.0.execute(
                "UPDATE rule_issues SET seen_disabled = 1 WHERE instance_id = ?1 AND plugin = ?2",
                params![instance, plugin],
            )?,
            RuleUpdate::Clear => self.0.execute(
                "DELETE FROM rule_issues WHERE instance_id = ?1 AND plugin = ?2",
                params![instance, plugin],
            )?,
        };
        Ok(())
    }

    async fn insert_directive(
        &mut self,
        instance: Option<Uuid>,
        directive: &Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        insert_directive(self.0, instance, directive, source, now)
    }

    async fn delivered_to(
        &mut self,
        instance: Uuid,
        report_id: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.select(
            "SELECT d.id, d.body FROM deliveries v JOIN directives d ON d.id = v.directive_id
             WHERE v.instance_id = ?1 AND v.report_id = ?2 ORDER BY d.id LIMIT ?3",
            params![instance.to_string(), report_id.to_string(), limit as i64],
        )
    }

    async fn pending(
        &mut self,
        instance: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.select(
            "SELECT d.id, d.body FROM directives d
             WHERE (d.instance_id IS NULL OR d.instance_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM deliveries v
                               WHERE v.directive_id = d.id AND v.instance_id = ?1)
             ORDER BY d.id LIMIT ?2",
            params![instance.to_string(), limit as i64],
        )
    }

    async fn mark_delivered(
        &mut self,
        id: i64,
        instance: Uuid,
        report_id: Uuid,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let n = self.0.execute(
            "INSERT INTO deliveries (directive_id, instance_id, report_id, delivered_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![id, instance.to_string(), report_id.to_string(), millis(now)],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_database_file_is_opened_in_wal_mode_at_the_latest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let store = SqliteBackend::open(&path).expect("open");
        let conn = store.conn.lock();
        let mode: String =
            conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("pragma");
        assert_eq!(mode, "wal");
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("pragma");
        assert_eq!(version, schema::MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("prepare");
        assert!(matches!(SqliteBackend::open(&path), Err(StoreError::NewerSchema(99, _))));
    }

    /// A database as the first collectors left it: version 1, a report and
    /// a directive delivered to its instance.
    #[tokio::test]
    async fn a_version_1_database_is_migrated_with_its_reports_and_deliveries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let plugin = sonde_core::PluginReport {
            name: "p".into(),
            version: "1".into(),
            state: sonde_core::PluginState::Running,
            reason: None,
            until: None,
            last_failure: None,
            disabled_metrics: vec![],
            denied_metrics: vec![],
            cost: sonde_core::PluginCost { events: 10, busy_us: 20, ..Default::default() },
            metrics: vec![],
        };
        let report = sonde_core::Report::new(Uuid::new_v4(), Default::default(), vec![plugin]);
        let body = String::from_utf8(report.to_json()).expect("utf8");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(schema::MIGRATIONS[0]).expect("v1");
        conn.pragma_update(None, "user_version", 1).expect("version");
        let (instance, rid) = (report.instance_id.to_string(), report.report_id.to_string());
        conn.execute(
            "INSERT INTO reports VALUES (?1, ?2, ?3, 1000, ?4)",
            params![rid, instance, report.timestamp, body],
        )
        .expect("report");
        conn.execute("INSERT INTO instances VALUES (?1, 1000, 1000, 1, 1)", [&instance])
            .expect("instance");
        conn.execute(
            "INSERT INTO directives (instance_id, body, source, created_at)
             VALUES (?1, '{\"action\":\"disable_plugin\",\"plugin\":\"p\",\"for_secs\":60,\"reason\":\"\"}', 'admin', 1)",
            [&instance],
        )
        .expect("directive");
        conn.execute("INSERT INTO deliveries VALUES (1, ?1, ?2, 1)", params![instance, rid])
            .expect("delivery");
        drop(conn);

        let store = Store::sqlite(&path).expect("migrated");
        let stored = store.reports(report.instance_id, 10).await.expect("read");
        assert_eq!(stored, Some(vec![body]));
        let backend = SqliteBackend::open(&path).expect("reopen");
        let (os, plugin): (String, String) = backend
            .conn
            .lock()
            .query_row(
                "SELECT r.os, d.plugin FROM reports r, directives d WHERE r.id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("columns");
        assert_eq!((os.as_str(), plugin.as_str()), (std::env::consts::OS, "p"));
        // Its rows were made by the migration, interval and all.
        let row: (String, i64, i64, i64) = backend
            .conn
            .lock()
            .query_row(
                "SELECT plugin, events, d_events, received_at FROM report_plugins WHERE report = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("backfilled");
        assert_eq!(row, ("p".to_string(), 10, 10, 1000));
        // Delivered before the migration: not delivered again.
        let next = sonde_core::Report::new(report.instance_id, Default::default(), vec![]);
        let json = String::from_utf8(next.to_json()).expect("utf8");
        let got = store
            .ingest(
                vec![Received { report: next, json }],
                Arc::new(Policy::default()),
                SystemTime::now(),
            )
            .await
            .expect("ingest");
        assert_eq!((got.accepted, got.duplicates, got.directives.len()), (1, 0, 0));
    }

    #[tokio::test]
    async fn the_size_bound_deletes_the_oldest_reports_until_the_data_fits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SqliteBackend::open(&dir.path().join("c.db")).expect("open");
        let instance = Uuid::new_v4();
        let policy = Arc::new(Policy::default());
        let padding = "x".repeat(4000);
        for _ in 0..400 {
            let report = sonde_core::Report::new(instance, Default::default(), vec![]);
            let json = format!(
                "{{\"pad\":\"{padding}\",{}",
                &String::from_utf8(report.to_json()).expect("utf8")[1..]
            );
            backend
                .ingest(vec![Received { report, json }], Arc::clone(&policy), SystemTime::now())
                .await
                .expect("ingest");
        }
        let before = backend.used().await.expect("used");
        assert!(before > 1_600_000, "{before}");
        let max = before / 2;
        let retention = Retention { max_age: None, max_bytes: Some(max) };
        let pruned = backend.prune(&retention, SystemTime::now()).await.expect("prune");
        assert!(backend.used().await.expect("used") <= max);
        assert!((200..=260).contains(&pruned.by_size), "{pruned:?}");
        let left = backend.reports(instance, 1000).await.expect("read").expect("known");
        assert_eq!(left.len() as u64, 400 - pruned.by_size);
    }
}
