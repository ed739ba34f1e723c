//! The PostgreSQL backend: a pool of connections (`deadpool-postgres` over
//! `tokio-postgres`), shared by any number of collector replicas.
//!
//! - Dedupe: `reports.report_id` is `UNIQUE`; a report inserted by two
//!   replicas at once is stored by one, the other waits and skips it.
//! - Each upload's transaction (READ COMMITTED) starts by upserting its
//!   instance's row, which locks it until commit: uploads of one instance
//!   are handled one at a time across replicas, so the cost rules see
//!   each report once and in order, and a directive's delivery is decided
//!   once (the `deliveries` primary key backs that up).
//! - Rate limits: one row per instance in `rate_buckets`, refilled and
//!   taken in one statement by the database's clock ([`PgLimiter`]).
//! - Pruning takes a transaction-level advisory lock; a replica that
//!   cannot get it skips the round.
//!
//! Text PostgreSQL cannot hold (a NUL character) never reaches it: the rows
//! replace it (see [`rows::nul_free`](super::rows::nul_free)); the report's
//! JSON keeps it escaped.
//!
//! Connections are made without TLS: `sslmode=require` is refused; use a
//! local socket, a private network or a TLS tunnel.

mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use sonde_core::Directive;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::ingest::{self, IngestTx, RuleUpdate};
use super::rows::{Cost, MetricRow, Origin, PluginRow, Point, ReportRow, Snapshot, int, nul_free};
use super::{
    Backend, DeliveredDirective, DirectiveSource, DisableFact, Ingested, InstanceSummary,
    MetricFact, PluginFact, ReportFact, StoreError, StoredDirective, WindowRows, directive,
    directive_json, directive_parts,
};
use crate::config::{Policy, RateLimit};
use crate::limit::{RateLimiter, Throttled, wait_for};
use crate::policy::IssuedDisable;
use crate::retention::{Pruned, Retention};
use crate::upload::Received;

/// Longest wait for a free connection before a request fails (500): the
/// database is down or overloaded.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for a new connection to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times an upload's transaction is run again after PostgreSQL aborted it
/// for a deadlock or a serialization failure.
const RETRIES: usize = 3;
/// Admissions between two sweeps of full (idle) rate buckets.
const BUCKET_SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
pub(super) struct PgBackend {
    pool: Pool,
}

impl PgBackend {
    pub(super) async fn connect(url: &str, connections: usize) -> Result<PgBackend, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Url(
                "sslmode=require: this collector connects without TLS (use a local socket, a \
                 private network or a TLS tunnel, and sslmode=disable or prefer)"
                    .into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sonde-collector");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        migrate(&pool).await?;
        Ok(PgBackend { pool })
    }

    async fn try_ingest(
        &self,
        reports: &[Received],
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Ingested, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let ingested = ingest::run(&mut PgTx(&tx), reports, policy, now).await?;
        tx.commit().await?;
        Ok(ingested)
    }
}

/// Applies the migrations the database lacks, in one transaction under an
/// advisory lock (replicas starting together wait for the first).
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?;
    let version = i64::from(row.get::<_, i32>(0));
    let latest = schema::MIGRATIONS.len() as i64;
    if version > latest {
        return Err(StoreError::NewerSchema(version, latest));
    }
    for (n, sql) in schema::MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await?;
        let v = n as i32 + 1;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&v]).await?;
        tracing::info!(version = v, "database migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// Whether PostgreSQL aborted the transaction in a way that running it again
/// can fix.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ingest(
        &self,
        reports: Vec<Received>,
        policy: Arc<Policy>,
        now: SystemTime,
    ) -> Result<Ingested, StoreError> {
        let mut attempt = 0;
        loop {
            match self.try_ingest(&reports, &policy, now).await {
                Err(e) if retryable(&e) && attempt + 1 < RETRIES => {
                    attempt += 1;
                    tracing::debug!("upload transaction aborted ({e}); running it again");
                }
                done => return done,
            }
        }
    }

    async fn add_directive(
        &self,
        instance: Option<Uuid>,
        directive: Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        insert_directive(&**client, instance, &directive, source, now).await
    }

    async fn delete_directive(&self, id: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("DELETE FROM directives WHERE id = $1", &[&id]).await? > 0)
    }

    async fn instances(&self, limit: u32) -> Result<Vec<InstanceSummary>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT instance_id, first_seen, last_seen, reports FROM instances
                 ORDER BY last_report DESC NULLS LAST LIMIT $1",
            )
            .await?;
        let rows = client.query(&stmt, &[&i64::from(limit)]).await?;
        Ok(rows
            .iter()
            .map(|r| InstanceSummary {
                instance_id: r.get(0),
                first_seen: rfc3339(r.get(1)),
                last_seen: rfc3339(r.get(2)),
                reports: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    async fn reports(&self, instance: Uuid, limit: u32) -> Result<Option<Vec<String>>, StoreError> {
        let client = self.pool.get().await?;
        let known = client
            .query_opt("SELECT 1 FROM instances WHERE instance_id = $1", &[&instance])
            .await?;
        if known.is_none() {
            return Ok(None);
        }
        let stmt = client
            .prepare_cached(
                "SELECT body FROM reports WHERE instance_id = $1
                 ORDER BY received_at DESC, id DESC LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&instance, &i64::from(limit)]).await?;
        Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
    }

    async fn directives(&self, limit: u32) -> Result<Vec<StoredDirective>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT d.id, d.instance_id, d.body, d.source, d.created_at,
                        (SELECT COUNT(*) FROM deliveries v WHERE v.directive_id = d.id)
                 FROM directives d ORDER BY d.id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredDirective {
                    id: r.get(0),
                    instance_id: r.get(1),
                    directive: directive(r.get(2))?,
                    source: DirectiveSource::parse(r.get(3)),
                    created_at: rfc3339(r.get(4)),
                    delivered: r.get::<_, i64>(5).max(0) as u64,
                })
            })
            .collect()
    }

    async fn deliveries(
        &self,
        instance: Uuid,
        limit: u32,
    ) -> Result<Vec<DeliveredDirective>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT d.id, d.body, d.source, v.delivered_at, v.report_id
                 FROM deliveries v JOIN directives d ON d.id = v.directive_id
                 WHERE v.instance_id = $1 ORDER BY v.delivered_at DESC, d.id DESC LIMIT $2",
                &[&instance, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveredDirective {
                    id: r.get(0),
                    directive: directive(r.get(1))?,
                    source: DirectiveSource::parse(r.get(2)),
                    delivered_at: rfc3339(r.get(3)),
                    report_id: r.get(4),
                })
            })
            .collect()
    }

    async fn window(&self, since: SystemTime, limit: u32) -> Result<WindowRows, StoreError> {
        let client = self.pool.get().await?;
        let take = i64::from(limit) + 1;
        let mut w = WindowRows::default();
        let ms = |t: SystemTime| super::millis(t);
        for r in client
            .query(
                "SELECT instance_id, id, received_at, sonde_version, os, arch FROM reports
                 WHERE received_at >= $1 ORDER BY received_at DESC, id DESC LIMIT $2",
                &[&since, &take],
            )
            .await?
        {
            w.reports.push(ReportFact {
                instance_id: r.get(0),
                report: r.get(1),
                received_ms: ms(r.get(2)),
                sonde_version: r.get(3),
                os: r.get(4),
                arch: r.get(5),
            });
        }
        for r in client
            .query(
                "SELECT instance_id, report, plugin, state, reason, d_events, d_busy_us,
                        d_failures, peak_memory_bytes
                 FROM report_plugins WHERE received_at >= $1
                 ORDER BY received_at DESC, report DESC LIMIT $2",
                &[&since, &take],
            )
            .await?
        {
            w.plugins.push(PluginFact {
                instance_id: r.get(0),
                report: r.get(1),
                plugin: r.get(2),
                state: r.get(3),
                reason: r.get(4),
                d_events: r.get(5),
                d_busy_us: r.get(6),
                d_failures: r.get(7),
                peak_memory_bytes: r.get(8),
            });
        }
        for r in client
            .query(
                "SELECT instance_id, report, origin, owner, name, kind, unit, labels::text,
                        value, delta
                 FROM report_metrics WHERE received_at >= $1
                 ORDER BY received_at DESC, report DESC LIMIT $2",
                &[&since, &take],
            )
            .await?
        {
            w.metrics.push(MetricFact {
                instance_id: r.get(0),
                report: r.get(1),
                origin: r.get(2),
                owner: r.get(3),
                name: r.get(4),
                kind: r.get(5),
                unit: r.get(6),
                labels: r.get(7),
                value: r.get(8),
                delta: r.get(9),
            });
        }
        for r in client
            .query(
                "SELECT v.instance_id, d.source, d.body
                 FROM deliveries v JOIN directives d ON d.id = v.directive_id
                 WHERE d.action = 'disable_plugin'
                 ORDER BY v.delivered_at DESC, d.id DESC LIMIT $1",
                &[&take],
            )
            .await?
        {
            w.disables.push(DisableFact {
                instance_id: r.get(0),
                source: DirectiveSource::parse(r.get(1)),
                directive: directive(r.get(2))?,
            });
        }
        w.cut(limit);
        Ok(w)
    }

    async fn prune(&self, retention: &Retention, now: SystemTime) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let Some(age) = retention.max_age else { return Ok(pruned) };
        let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&schema::PRUNE_LOCK])
            .await?
            .get(0);
        if !locked {
            pruned.skipped = true;
            return Ok(pruned);
        }
        pruned.reports =
            tx.execute("DELETE FROM reports WHERE received_at < $1", &[&cutoff]).await?;
        pruned.instances =
            tx.execute("DELETE FROM instances WHERE last_seen < $1", &[&cutoff]).await?;
        tx.commit().await?;
        Ok(pruned)
    }

    fn rate_limiter(&self, rate: RateLimit) -> Arc<dyn RateLimiter> {
        Arc::new(PgLimiter {
            pool: self.pool.clone(),
            capacity: f64::from(rate.burst.max(1)),
            per_sec: f64::from(rate.reports_per_minute.max(1)) / 60.0,
            admitted: AtomicU64::new(0),
        })
    }
}

/// Token buckets in `rate_buckets`, shared by every replica: one statement
/// refills a bucket by the time since its last use (the database's clock)
/// and takes a token if there is one. Full buckets (idle long enough to have
/// refilled) are swept every [`BUCKET_SWEEP_EVERY`] admissions: a full
/// bucket is the same as none.
#[derive(Debug)]
pub(crate) struct PgLimiter {
    pool: Pool,
    capacity: f64,
    per_sec: f64,
    admitted: AtomicU64,
}

#[async_trait::async_trait]
impl RateLimiter for PgLimiter {
    async fn admit(&self, instance: Uuid) -> Result<Result<(), Throttled>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO rate_buckets AS b (instance_id, tokens, at, taken)
                 VALUES ($1, $2::float8 - 1, now(), true)
                 ON CONFLICT (instance_id) DO UPDATE SET
                   tokens = CASE
                     WHEN LEAST($2::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.at)::float8) * $3::float8) >= 1
                     THEN LEAST($2::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.at)::float8) * $3::float8) - 1
                     ELSE LEAST($2::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.at)::float8) * $3::float8)
                   END,
                   taken = LEAST($2::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.at)::float8) * $3::float8) >= 1,
                   at = GREATEST(b.at, now())
                 RETURNING taken, tokens",
            )
            .await?;
        let row = client.query_one(&stmt, &[&instance, &self.capacity, &self.per_sec]).await?;
        if self.admitted.fetch_add(1, Relaxed) % BUCKET_SWEEP_EVERY == BUCKET_SWEEP_EVERY - 1 {
            let full_after = self.capacity / self.per_sec;
            client
                .execute(
                    "DELETE FROM rate_buckets WHERE at < now() - make_interval(secs => $1)",
                    &[&full_after],
                )
                .await?;
        }
        let (taken, tokens): (bool, f64) = (row.get(0), row.get(1));
        Ok(if taken {
            Ok(())
        } else {
            Err(Throttled::OverRate { retry_after: wait_for(1.0 - tokens, self.per_sec) })
        })
    }
}

async fn insert_directive(
    client: &impl tokio_postgres::GenericClient,
    instance: Option<Uuid>,
    directive: &Directive,
    source: DirectiveSource,
    now: SystemTime,
) -> Result<i64, StoreError> {
    let body = directive_json(directive)?;
    let (action, plugin) = directive_parts(directive);
    let plugin = plugin.map(nul_free);
    let row = client
        .query_one(
            "INSERT INTO directives (instance_id, body, source, created_at, action, plugin)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&instance, &body, &source.as_str(), &now, &action, &plugin],
        )
        .await?;
    Ok(row.get(0))
}

/// RFC 3339 in UTC, to the millisecond.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An ingest transaction on PostgreSQL.
struct PgTx<'a>(&'a Transaction<'a>);

impl PgTx<'_> {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.0.prepare_cached(sql).await?;
        Ok(self.0.query(&stmt, params).await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let stmt = self.0.prepare_cached(sql).await?;
        Ok(self.0.execute(&stmt, params).await?)
    }

    async fn directives(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(self.query(sql, params).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl IngestTx for PgTx<'_> {
    async fn lock_instance(
        &mut self,
        instance: Uuid,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError> {
        // DO UPDATE (rather than DO NOTHING) locks an existing row until the
        // transaction ends.
        let rows = self
            .query(
                "INSERT INTO instances (instance_id, first_seen, last_seen, last_report, reports)
                 VALUES ($1, $2, $2, NULL, 0)
                 ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id
                 RETURNING last_report",
                &[&instance, &now],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    async fn snapshot(&mut self, id: i64) -> Result<Option<Snapshot>, StoreError> {
        let started = self.query("SELECT started FROM reports WHERE id = $1", &[&id]).await?;
        let Some(started) = started.first() else { return Ok(None) };
        let mut snap = Snapshot { started: started.get(0), ..Snapshot::default() };
        let plugins = self
            .query(
                "SELECT plugin, events, calls, busy_us, failures FROM report_plugins
                 WHERE report = $1",
                &[&id],
            )
            .await?;
        for r in &plugins {
            let n = |i| r.get::<_, i64>(i).max(0) as u64;
            let cost = Cost { events: n(1), calls: n(2), busy_us: n(3), failures: n(4) };
            snap.plugins.insert(r.get(0), cost);
        }
        let metrics = self
            .query(
                "SELECT origin, owner, name, labels::text, value, count, sum FROM report_metrics
                 WHERE report = $1",
                &[&id],
            )
            .await?;
        for r in &metrics {
            // jsonb prints its own way: back to the canonical JSON the new
            // rows are keyed by.
            let labels: BTreeMap<String, String> =
                serde_json::from_str(r.get(3)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let labels = serde_json::to_string(&labels).unwrap_or_default();
            let key = (Origin::parse(r.get(0)), r.get(1), r.get(2), labels);
            snap.series.insert(key, Point { value: r.get(4), count: r.get(5), sum: r.get(6) });
        }
        Ok(Some(snap))
    }

    async fn insert_report(
        &mut self,
        row: &ReportRow<'_>,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError> {
        let r = row.report;
        let h = &r.host;
        let cpus = i32::try_from(h.cpus).unwrap_or(i32::MAX);
        let rows = self
            .query(
                "INSERT INTO reports (report_id, instance_id, timestamp, received_at, started,
                     sonde_version, os, arch, cpus, installation_id, events_recorded,
                     events_dropped, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (report_id) DO NOTHING RETURNING id",
                &[
                    &r.report_id,
                    &r.instance_id,
                    &nul_free(&r.timestamp),
                    &now,
                    &r.started.as_deref().map(nul_free),
                    &nul_free(&h.sonde_version),
                    &nul_free(&h.os),
                    &nul_free(&h.arch),
                    &cpus,
                    &r.installation_id.as_deref().map(nul_free),
                    &row.events_recorded(),
                    &row.events_dropped(),
                    &row.body,
                ],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn insert_rows(
        &mut self,
        instance: Uuid,
        now: SystemTime,
        plugins: &[PluginRow],
        metrics: &[MetricRow],
    ) -> Result<(), StoreError> {
        if !plugins.is_empty() {
            let col = |f: fn(&PluginRow) -> i64| plugins.iter().map(f).collect::<Vec<i64>>();
            let opt = |f: fn(&PluginRow) -> Option<i64>| plugins.iter().map(f).collect::<Vec<_>>();
            let text = |f: fn(&PluginRow) -> &String| plugins.iter().map(f).collect::<Vec<_>>();
            let maybe =
                |f: fn(&PluginRow) -> &Option<String>| plugins.iter().map(f).collect::<Vec<_>>();
            self.execute(
                "INSERT INTO report_plugins (report, instance_id, received_at, plugin, version,
                     state, reason, until, last_failure, events, calls, busy_us, failures,
                     restarts, invalid_points, events_skipped, peak_memory_bytes,
                     d_events, d_calls, d_busy_us, d_failures)
                 SELECT t.report, $1, $2, t.plugin, t.version, t.state, t.reason, t.until,
                        t.last_failure, t.events, t.calls, t.busy_us, t.failures, t.restarts,
                        t.invalid_points, t.events_skipped, t.peak_memory_bytes,
                        t.d_events, t.d_calls, t.d_busy_us, t.d_failures
                 FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[],
                             $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[],
                             $18::int8[], $19::int8[], $20::int8[], $21::int8[])
                   AS t(report, plugin, version, state, reason, until, last_failure, events,
                        calls, busy_us, failures, restarts, invalid_points, events_skipped,
                        peak_memory_bytes, d_events, d_calls, d_busy_us, d_failures)",
                &[
                    &instance,
                    &now,
                    &col(|p| p.report),
                    &text(|p| &p.plugin),
                    &text(|p| &p.version),
                    &text(|p| &p.state),
                    &maybe(|p| &p.reason),
                    &maybe(|p| &p.until),
                    &maybe(|p| &p.last_failure),
                    &col(|p| int(p.cost.events)),
                    &col(|p| int(p.cost.calls)),
                    &col(|p| int(p.cost.busy_us)),
                    &col(|p| int(p.cost.failures)),
                    &col(|p| int(p.cost.restarts)),
                    &col(|p| int(p.cost.invalid_points)),
                    &col(|p| int(p.cost.events_skipped)),
                    &col(|p| int(p.cost.peak_memory_bytes)),
                    &opt(|p| p.interval.map(|d| int(d.events))),
                    &opt(|p| p.interval.map(|d| int(d.calls))),
                    &opt(|p| p.interval.map(|d| int(d.busy_us))),
                    &opt(|p| p.interval.map(|d| int(d.failures))),
                ],
            )
            .await?;
        }
        if !metrics.is_empty() {
            let text = |f: fn(&MetricRow) -> &String| metrics.iter().map(f).collect::<Vec<_>>();
            let maybe =
                |f: fn(&MetricRow) -> &Option<String>| metrics.iter().map(f).collect::<Vec<_>>();
            let float =
                |f: fn(&MetricRow) -> Option<f64>| metrics.iter().map(f).collect::<Vec<_>>();
            let origins: Vec<&str> = metrics.iter().map(|m| m.origin.as_str()).collect();
            self.execute(
                "INSERT INTO report_metrics (report, instance_id, received_at, origin, owner,
                     name, kind, unit, labels, value, delta, count, sum, d_sum, bounds, buckets,
                     fields)
                 SELECT t.report, $1, $2, t.origin, t.owner, t.name, t.kind, t.unit,
                        t.labels::jsonb, t.value, t.delta, t.count, t.sum, t.d_sum,
                        t.bounds::jsonb, t.buckets::jsonb, t.fields::jsonb
                 FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::float8[], $11::float8[],
                             $12::int8[], $13::float8[], $14::float8[], $15::text[],
                             $16::text[], $17::text[])
                   AS t(report, origin, owner, name, kind, unit, labels, value, delta, count,
                        sum, d_sum, bounds, buckets, fields)",
                &[
                    &instance,
                    &now,
                    &metrics.iter().map(|m| m.report).collect::<Vec<_>>(),
                    &origins,
                    &text(|m| &m.owner),
                    &text(|m| &m.name),
                    &text(|m| &m.kind),
                    &text(|m| &m.unit),
                    &text(|m| &m.labels),
                    &float(|m| m.value),
                    &float(|m| m.delta),
                    &metrics.iter().map(|m| m.count).collect::<Vec<_>>(),
                    &float(|m| m.sum),
                    &float(|m| m.d_sum),
                    &maybe(|m| &m.bounds),
                    &maybe(|m| &m.buckets),
                    &maybe(|m| &m.fields),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn update_instance(
        &mut self,
        instance: Uuid,
        last: i64,
        accepted: u32,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE instances SET last_seen = $2, last_report = $3, reports = reports + $4
             WHERE instance_id = $1",
            &[&instance, &now, &last, &i64::from(accepted)],
        )
        .await?;
        Ok(())
    }

    async fn rule_issues(
        &mut self,
        instance: Uuid,
    ) -> Result<HashMap<String, IssuedDisable>, StoreError> {
        let rows = self
            .query(
                "SELECT plugin, issued_at, for_secs, seen_disabled FROM rule_issues
                 WHERE instance_id = $1",
                &[&instance],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let issued = IssuedDisable {
                    issued_at: r.get::<_, i64>(1).max(0) as u64,
                    for_secs: r.get::<_, i64>(2).max(0) as u64,
                    seen_disabled: r.get(3),
                };
                (r.get(0), issued)
            })
            .collect())
    }

    async fn update_rule(
        &mut self,
        instance: Uuid,
        plugin: &str,
        update: RuleUpdate,
    ) -> Result<(), StoreError> {
        match update {
            RuleUpdate::Issued { directive, issued } => {
                self.execute(
                    "INSERT INTO rule_issues
                     (instance_id, plugin, directive_id, issued_at, for_secs, seen_disabled)
                     VALUES ($1, $2, $3, $4, $5, false)
                     ON CONFLICT (instance_id, plugin) DO UPDATE SET
                       directive_id = EXCLUDED.directive_id, issued_at = EXCLUDED.issued_at,
                       for_secs = EXCLUDED.for_secs, seen_disabled = false",
                    &[
                        &instance,
                        &plugin,
                        &directive,
                        &int(issued.issued_at),
                        &int(issued.for_secs),
                    ],
                )
                .await?
            }
            RuleUpdate::SeenDisabled => {
                self.execute(
                    "UPDATE rule_issues SET seen_disabled = true
                     WHERE instance_id = $1 AND plugin = $2",
                    &[&instance, &plugin],
                )
                .await?
            }
            RuleUpdate::Clear => {
                self.execute(
                    "DELETE FROM rule_issues WHERE instance_id = $1 AND plugin = $2",
                    &[&instance, &plugin],
                )
                .await?
            }
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
        insert_directive(&**self.0, instance, directive, source, now).await
    }

    async fn delivered_to(
        &mut self,
        instance: Uuid,
        report_id: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.directives(
            "SELECT d.id, d.body FROM deliveries v JOIN directives d ON d.id = v.directive_id
             WHERE v.instance_id = $1 AND v.report_id = $2 ORDER BY d.id LIMIT $3",
            &[&instance, &report_id, &(limit as i64)],
        )
        .await
    }

    async fn pending(
        &mut self,
        instance: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.directives(
            "SELECT d.id, d.body FROM directives d
             WHERE (d.instance_id IS NULL OR d.instance_id = $1)
               AND NOT EXISTS (SELECT 1 FROM deliveries v
                               WHERE v.directive_id = d.id AND v.instance_id = $1)
             ORDER BY d.id LIMIT $2",
            &[&instance, &(limit as i64)],
        )
        .await
    }

    async fn mark_delivered(
        &mut self,
        id: i64,
        instance: Uuid,
        report_id: Uuid,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO deliveries (directive_id, instance_id, report_id, delivered_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&id, &instance, &report_id, &now],
            )
            .await?;
        Ok(n > 0)
    }
}
