//! The collector as hosts and operators see it: a real server on
//! 127.0.0.1:0, real HTTP, gzip uploads built from `sonde_core` types.
//!
//! Every test that touches the store runs twice, on SQLite and on a real
//! PostgreSQL 15 (`sonde-test-postgres`): `on_both!` makes a `sqlite` and a
//! `postgres` test of each.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sonde_collector::{AdminAccess, CollectorState, Policy, Received, Retention, Store, retention};
use sonde_core::{
    BufferStats, Directive, EndpointResponse, MAX_DIRECTIVE_METRICS, MAX_DIRECTIVES,
    MAX_RESPONSE_BYTES, PluginCost, PluginReport, PluginState, Report, ReportBatch,
};
use sonde_test_postgres::Postgres;
use tokio::sync::oneshot;
use uuid::Uuid;

const TOKEN: &str = "test-admin-token-0123456789";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Makes `name::sqlite` and `name::postgres` tests of `async fn name(Backend)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() -> anyhow::Result<()> {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() -> anyhow::Result<()> {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

/// Where a test's database is, to look at its tables.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// A collector serving in the background; stops when dropped.
struct Server {
    base: String,
    client: reqwest::Client,
    token: Option<&'static str>,
    state: CollectorState,
    db: Db,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn open(backend: Backend, dir: &Path) -> Result<(Store, Db)> {
    Ok(match backend {
        Backend::Sqlite => {
            let path = dir.join("collector.db");
            (Store::sqlite(&path)?, Db::Sqlite(path))
        }
        Backend::Postgres => {
            let url = tokio::task::spawn_blocking(|| Postgres::shared()?.database())
                .await?
                .map_err(anyhow::Error::msg)?;
            (Store::postgres(&url, 8).await?, Db::Postgres(url))
        }
    })
}

async fn start(backend: Backend, policy: &str, token: Option<&'static str>) -> Result<Server> {
    // The collector's logs (a 500's cause) go to the test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let policy = Policy::parse(policy, Path::new("policy.toml"))?;
    let dir = tempfile::tempdir()?;
    let (store, db) = open(backend, dir.path()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let admin = AdminAccess::new(token.map(String::from), addr)?;
    let state = CollectorState::new(store, policy, admin);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sonde_collector::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Ok(Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        token,
        state,
        db,
        stop: Some(stop),
        _dir: dir,
    })
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON, gzip-compressed like the host does.
    async fn upload(&self, body: &impl serde::Serialize) -> Result<reqwest::Response> {
        let json = serde_json::to_vec(body)?;
        self.upload_raw(gzip(&json), Some("gzip")).await
    }

    async fn upload_raw(&self, body: Vec<u8>, encoding: Option<&str>) -> Result<reqwest::Response> {
        let mut req = self.client.post(self.url("/v1/reports")).body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        Ok(req.send().await?)
    }

    /// Uploads and expects a 200 with an endpoint response.
    async fn answer(&self, body: &impl serde::Serialize) -> Result<EndpointResponse> {
        let resp = self.upload(body).await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status == StatusCode::OK, "{status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.admin(self.client.get(self.url(path))).send().await?;
        anyhow::ensure!(resp.status() == StatusCode::OK, "GET {path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    async fn post_directive(&self, instance: Option<Uuid>, directive: &Directive) -> Result<i64> {
        let body = json!({ "instance_id": instance, "directive": directive });
        let resp =
            self.admin(self.client.post(self.url("/v1/directives"))).json(&body).send().await?;
        anyhow::ensure!(resp.status() == StatusCode::CREATED, "{}", resp.status());
        let v: Value = resp.json().await?;
        v["id"].as_i64().context("id")
    }

    async fn stored(&self, instance: Uuid) -> Result<Vec<Report>> {
        let v = self.get(&format!("/v1/instances/{instance}/reports?limit=1000")).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// `GET /metrics`, as the admin.
    async fn metrics(&self) -> Result<String> {
        let resp = self.admin(self.client.get(self.url("/metrics"))).send().await?;
        anyhow::ensure!(resp.status() == StatusCode::OK, "GET /metrics: {}", resp.status());
        Ok(resp.text().await?)
    }

    /// The database as `--db` takes it.
    fn db_arg(&self) -> String {
        match &self.db {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(url) => url.clone(),
        }
    }

    /// Runs `sql` on the test's database: rows, columns joined by `|`.
    async fn sql(&self, sql: &str) -> Result<Vec<String>> {
        let sql = sql.to_string();
        let text = match &self.db {
            Db::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<String> {
                    let conn = rusqlite::Connection::open(path)?;
                    let mut stmt = conn.prepare(&sql)?;
                    let n = stmt.column_count();
                    let rows = stmt.query_map([], |row| {
                        (0..n)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => String::new(),
                                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        String::from_utf8_lossy(t).into_owned()
                                    }
                                    rusqlite::types::ValueRef::Blob(_) => "<blob>".into(),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .map(|cols| cols.join("|"))
                    })?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
                })
                .await??
            }
            Db::Postgres(url) => {
                let name = url.rsplit('/').next().context("database name")?.to_string();
                tokio::task::spawn_blocking(move || Postgres::shared()?.psql(&name, &sql))
                    .await?
                    .map_err(anyhow::Error::msg)?
            }
        };
        Ok(text.lines().filter(|l| !l.is_empty()).map(String::from).collect())
    }
}

/// The value of counter `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(&format!("{name}{{")))?.rsplit(' ').next()?.parse().ok()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("write to memory");
    enc.finish().expect("finish in memory")
}

fn plugin(name: &str, state: PluginState, events: u64, busy_us: u64) -> PluginReport {
    PluginReport {
        name: name.into(),
        version: "1.0.0".into(),
        state,
        reason: None,
        until: None,
        disabled_metrics: vec![],
        denied_metrics: vec![],
        last_failure: None,
        cost: PluginCost { events, calls: events / 100, busy_us, ..PluginCost::default() },
        metrics: vec![],
    }
}

fn report(instance: Uuid, plugins: Vec<PluginReport>) -> Report {
    let buffer =
        BufferStats { capacity: 1024, recorded: 10, processed: 10, ..BufferStats::default() };
    Report::new(instance, buffer, plugins)
}

fn stop(reason: &str) -> Directive {
    Directive::Stop { reason: reason.into() }
}

async fn error_of(resp: reqwest::Response) -> Result<(StatusCode, String)> {
    let status = resp.status();
    let v: Value = resp.json().await?;
    Ok((status, v["error"].as_str().context("error message")?.to_string()))
}

async fn a_report_is_stored_once_and_its_retry_is_accepted_as_zero(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    let r = report(instance, vec![]);
    assert_eq!(server.answer(&r).await?.accepted, Some(1));
    assert_eq!(server.answer(&r).await?.accepted, Some(0));
    assert_eq!(server.stored(instance).await?, vec![r]);
    Ok(())
}

async fn a_batch_is_accepted_whole_and_plain_json_is_accepted_too(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    let batch = ReportBatch { reports: (0..3).map(|_| report(instance, vec![])).collect() };
    assert_eq!(server.answer(&batch).await?.accepted, Some(3));
    let plain = serde_json::to_vec(&report(instance, vec![]))?;
    let resp = server.upload_raw(plain, None).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: EndpointResponse = resp.json().await?;
    assert_eq!(answer.accepted, Some(1));
    assert_eq!(server.stored(instance).await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn garbage_and_wrong_shapes_are_refused_with_a_json_400() -> Result<()> {
    let b = Backend::Sqlite;
    let server = start(b, "", None).await?;
    let (status, msg) = error_of(server.upload_raw(gzip(b"<html>"), Some("gzip")).await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("not a report"), "{msg}");
    let (status, _) =
        error_of(server.upload_raw(b"not gzip".to_vec(), Some("gzip")).await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, msg) =
        error_of(server.upload(&json!({"reports": [{"schema": 1}]})).await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("missing field"), "{msg}");
    let mixed = ReportBatch {
        reports: vec![report(Uuid::new_v4(), vec![]), report(Uuid::new_v4(), vec![])],
    };
    let (status, _) = error_of(server.upload(&mixed).await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = error_of(server.upload_raw(b"{}".to_vec(), Some("br")).await?).await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    Ok(())
}

#[tokio::test]
async fn oversize_uploads_are_refused_with_413() -> Result<()> {
    let b = Backend::Sqlite;
    let server = start(b, "", None).await?;
    // Over 1 MiB on the wire.
    let big = vec![b' '; sonde_collector::MAX_BODY_BYTES + 1];
    let (status, _) = error_of(server.upload_raw(big, None).await?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Small on the wire, over 16 MiB decompressed.
    let bomb = gzip(&vec![b' '; sonde_collector::MAX_DECODED_BYTES as usize + 1]);
    let (status, _) = error_of(server.upload_raw(bomb, Some("gzip")).await?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Too many reports in one batch.
    let instance = Uuid::new_v4();
    let batch = ReportBatch {
        reports: (0..=sonde_collector::MAX_REPORTS_PER_BATCH)
            .map(|_| report(instance, vec![]))
            .collect(),
    };
    let (status, _) = error_of(server.upload(&batch).await?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    Ok(())
}

async fn an_instance_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_stored(
    b: Backend,
) -> Result<()> {
    let server = start(b, "[rate_limit]\nreports_per_minute = 1\nburst = 2\n", None).await?;
    let instance = Uuid::new_v4();
    server.answer(&report(instance, vec![])).await?;
    server.answer(&report(instance, vec![])).await?;
    let resp = server.upload(&report(instance, vec![])).await?;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers().get("retry-after").context("Retry-After")?.to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(server.stored(instance).await?.len(), 2);
    // Other instances have their own bucket.
    server.answer(&report(Uuid::new_v4(), vec![])).await?;
    Ok(())
}

async fn a_manual_directive_reaches_its_instance_exactly_once(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let (target, other) = (Uuid::new_v4(), Uuid::new_v4());
    let directive = Directive::DisablePlugin {
        plugin: "user-agent".into(),
        for_secs: 3600,
        reason: "too chatty".into(),
    };
    server.post_directive(Some(target), &directive).await?;
    assert!(server.answer(&report(other, vec![])).await?.directives.is_empty());
    assert_eq!(server.answer(&report(target, vec![])).await?.directives, vec![directive]);
    assert!(server.answer(&report(target, vec![])).await?.directives.is_empty());
    let listed = server.get("/v1/directives").await?;
    assert_eq!(listed[0]["delivered"], 1);
    assert_eq!(listed[0]["source"], "admin");
    Ok(())
}

async fn a_directive_for_every_instance_reaches_each_of_them_once(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    server.answer(&report(a, vec![])).await?;
    server.post_directive(None, &stop("retired")).await?;
    for instance in [a, b] {
        let first = server.answer(&report(instance, vec![])).await?;
        assert_eq!(first.directives, vec![stop("retired")], "{instance}");
        let second = server.answer(&report(instance, vec![])).await?;
        assert!(second.directives.is_empty(), "{instance}");
    }
    Ok(())
}

async fn a_retried_upload_gets_back_what_its_lost_answer_carried(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    server.post_directive(Some(instance), &stop("bye")).await?;
    let r = report(instance, vec![]);
    assert_eq!(server.answer(&r).await?.directives, vec![stop("bye")]);
    let retry = server.answer(&r).await?;
    assert_eq!((retry.accepted, retry.directives), (Some(0), vec![stop("bye")]));
    assert!(server.answer(&report(instance, vec![])).await?.directives.is_empty());
    Ok(())
}

const RULES: &str = "next_update = \"30m\"\n\
    [[rule]]\nplugin = \"*\"\nmax_busy_us_per_event = 50.0\nmin_events = 1000\n\
    disable_for = \"1h\"\nreason = \"{plugin}: {busy_us_per_event} µs per event\"\n";

async fn the_cost_rule_disables_an_expensive_plugin_and_not_a_cheap_one(b: Backend) -> Result<()> {
    let server = start(b, RULES, None).await?;
    let instance = Uuid::new_v4();
    // Costs are cumulative: `n` intervals of the same cost each.
    let costs = |n: u64| {
        vec![
            plugin("cheap", PluginState::Running, n * 10_000, n * 100_000),
            plugin("pricey", PluginState::Running, n * 10_000, n * 1_200_000),
        ]
    };
    let running = || costs(1);
    let answer = server.answer(&report(instance, running())).await?;
    assert_eq!(answer.next_update_secs, Some(1800));
    assert_eq!(
        answer.directives,
        vec![Directive::DisablePlugin {
            plugin: "pricey".into(),
            for_secs: 3600,
            reason: "pricey: 120.0 µs per event".into(),
        }]
    );
    // A report built before the host applied it: no second directive.
    assert!(server.answer(&report(instance, running())).await?.directives.is_empty());
    // Applied, then back and still expensive: issued again.
    let mut disabled = running();
    disabled[1].state = PluginState::Disabled;
    assert!(server.answer(&report(instance, disabled)).await?.directives.is_empty());
    let again = server.answer(&report(instance, costs(2))).await?;
    assert_eq!(again.directives.len(), 1, "{again:?}");
    let listed = server.get("/v1/directives").await?;
    assert_eq!(listed[0]["source"], "rule");
    assert_eq!(listed[0]["instance_id"], instance.to_string());
    Ok(())
}

async fn the_read_api_lists_instances_and_their_reports_newest_first(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let older = report(a, vec![]);
    let newer = report(a, vec![plugin("p", PluginState::Running, 1, 1)]);
    server.answer(&older).await?;
    server.answer(&report(b, vec![])).await?;
    server.answer(&newer).await?;
    let instances = server.get("/v1/instances").await?;
    let ids: Vec<&str> = instances
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|i| i["instance_id"].as_str())
        .collect();
    assert_eq!(ids, vec![a.to_string(), b.to_string()]);
    assert_eq!(instances[0]["reports"], 2);
    assert!(instances[0]["first_seen"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(server.stored(a).await?, vec![newer.clone(), older]);
    let one: Vec<Report> =
        serde_json::from_value(server.get(&format!("/v1/instances/{a}/reports?limit=1")).await?)?;
    assert_eq!(one, vec![newer]);
    let resp = server
        .client
        .get(server.url(&format!("/v1/instances/{}/reports", Uuid::new_v4())))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = server.client.get(server.url("/healthz")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

async fn the_admin_token_is_enforced_and_uploads_need_none(b: Backend) -> Result<()> {
    let server = start(b, "", Some(TOKEN)).await?;
    let body = json!({ "instance_id": null, "directive": stop("x") });
    let url = server.url("/v1/directives");
    let none = server.client.post(&url).json(&body).send().await?;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let wrong = server.client.post(&url).bearer_auth("not-the-admin-token-at-all").json(&body);
    assert_eq!(wrong.send().await?.status(), StatusCode::UNAUTHORIZED);
    for path in ["/v1/directives", "/v1/instances"] {
        let resp = server.client.get(server.url(path)).send().await?;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let id = server.post_directive(None, &stop("x")).await?;
    server.answer(&report(Uuid::new_v4(), vec![])).await?;
    let delete = server.client.delete(server.url(&format!("/v1/directives/{id}")));
    assert_eq!(delete.send().await?.status(), StatusCode::UNAUTHORIZED);
    let delete = server.client.delete(server.url(&format!("/v1/directives/{id}")));
    assert_eq!(delete.bearer_auth(TOKEN).send().await?.status(), StatusCode::NO_CONTENT);
    Ok(())
}

async fn an_invalid_directive_is_refused_before_it_is_stored(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let url = server.url("/v1/directives");
    let forgot_instance = json!({ "directive": stop("x") });
    let resp = server.client.post(&url).json(&forgot_instance).send().await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let unknown = json!({ "instance_id": null, "directive": {"action": "launch"} });
    let resp = server.client.post(&url).json(&unknown).send().await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let empty =
        json!({ "instance_id": null, "directive": {"action": "enable_plugin", "plugin": ""} });
    let (status, msg) = error_of(server.client.post(&url).json(&empty).send().await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("plugin"), "{msg}");
    assert_eq!(server.get("/v1/directives").await?, json!([]));
    Ok(())
}

on_both!(
    a_report_is_stored_once_and_its_retry_is_accepted_as_zero,
    a_batch_is_accepted_whole_and_plain_json_is_accepted_too,
    a_report_repeated_inside_one_batch_is_stored_once,
    an_instance_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_stored,
    a_manual_directive_reaches_its_instance_exactly_once,
    a_directive_for_every_instance_reaches_each_of_them_once,
    a_retried_upload_gets_back_what_its_lost_answer_carried,
    directives_past_the_host_s_count_limit_wait_for_the_next_upload,
    directives_past_the_host_s_byte_limit_wait_for_the_next_upload,
    the_cost_rule_disables_an_expensive_plugin_and_not_a_cheap_one,
    the_cost_rule_judges_each_interval_so_a_costly_start_stops_tripping,
    the_read_api_lists_instances_and_their_reports_newest_first,
    the_admin_token_is_enforced_and_uploads_need_none,
    an_invalid_directive_is_refused_before_it_is_stored,
    each_report_is_stored_as_rows_for_analysis_with_interval_changes,
    a_report_from_a_newer_host_is_stored_as_it_was_sent,
    old_reports_are_pruned_on_a_schedule_and_counted_in_the_metrics,
    the_metrics_count_uploads_duplicates_and_refusals,
);

async fn a_report_repeated_inside_one_batch_is_stored_once(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let r = report(Uuid::new_v4(), vec![]);
    let batch = ReportBatch { reports: vec![r.clone(), r.clone()] };
    assert_eq!(server.answer(&batch).await?.accepted, Some(1));
    assert_eq!(server.stored(r.instance_id).await?, vec![r]);
    Ok(())
}

async fn directives_past_the_host_s_count_limit_wait_for_the_next_upload(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    for i in 0..MAX_DIRECTIVES + 3 {
        server.post_directive(Some(instance), &stop(&i.to_string())).await?;
    }
    let first = server.answer(&report(instance, vec![])).await?.directives;
    assert_eq!(first.len(), MAX_DIRECTIVES);
    let rest = server.answer(&report(instance, vec![])).await?.directives;
    let expected: Vec<Directive> =
        (MAX_DIRECTIVES..MAX_DIRECTIVES + 3).map(|i| stop(&i.to_string())).collect();
    assert_eq!(rest, expected);
    Ok(())
}

async fn directives_past_the_host_s_byte_limit_wait_for_the_next_upload(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    // Each is about 16 KiB of JSON: four fill a 64 KiB response.
    let big = Directive::DisableMetrics {
        plugin: "p".into(),
        metrics: vec!["m".repeat(250); MAX_DIRECTIVE_METRICS],
        for_secs: 3600,
        reason: String::new(),
    };
    for _ in 0..6 {
        server.post_directive(None, &big).await?;
    }
    let first = server.answer(&report(instance, vec![])).await?.directives;
    let body = serde_json::to_vec(&EndpointResponse {
        accepted: Some(u32::MAX),
        next_update_secs: Some(u64::MAX),
        directives: first.clone(),
    })?;
    assert!(body.len() <= MAX_RESPONSE_BYTES, "{}", body.len());
    assert!((1..6).contains(&first.len()), "{}", first.len());
    let second = server.answer(&report(instance, vec![])).await?.directives;
    assert_eq!(first.len() + second.len(), 6);
    Ok(())
}

async fn the_cost_rule_judges_each_interval_so_a_costly_start_stops_tripping(
    b: Backend,
) -> Result<()> {
    let server = start(b, RULES, None).await?;
    let instance = Uuid::new_v4();
    let p = |state, events, busy| vec![plugin("warmup", state, events, busy)];
    // 1,000 µs per event while the host started: disabled.
    let first = server.answer(&report(instance, p(PluginState::Running, 1000, 1_000_000))).await?;
    assert_eq!(first.directives.len(), 1, "{first:?}");
    server.answer(&report(instance, p(PluginState::Disabled, 1000, 1_000_000))).await?;
    // Back, and 1 µs per event since: not disabled again, though its
    // lifetime average (92 µs) is still over the rule's 50.
    let back = server.answer(&report(instance, p(PluginState::Running, 11_000, 1_010_000))).await?;
    assert!(back.directives.is_empty(), "{back:?}");
    let later =
        server.answer(&report(instance, p(PluginState::Running, 21_000, 1_020_000))).await?;
    assert!(later.directives.is_empty(), "{later:?}");
    let rows = server
        .sql(
            "SELECT state, events, d_events, d_busy_us FROM report_plugins
             ORDER BY report",
        )
        .await?;
    assert_eq!(
        rows,
        [
            "running|1000|1000|1000000",
            "disabled|1000|0|0",
            "running|11000|10000|10000",
            "running|21000|10000|10000"
        ]
    );
    Ok(())
}

fn series(
    name: &str,
    kind: sonde_core::MetricKind,
    status: &str,
    value: sonde_core::MetricValue,
) -> sonde_core::Metric {
    sonde_core::Metric {
        name: name.into(),
        kind,
        unit: "1".into(),
        labels: [("status".to_string(), status.to_string())].into(),
        value,
    }
}

async fn each_report_is_stored_as_rows_for_analysis_with_interval_changes(
    b: Backend,
) -> Result<()> {
    use sonde_core::{MetricKind, MetricValue};
    let server = start(b, "", None).await?;
    let instance = Uuid::new_v4();
    let at = |n: u64| {
        let mut p = plugin("http-status", PluginState::Running, n * 100, n * 50);
        p.metrics = vec![
            series(
                "http.requests",
                MetricKind::Counter,
                "200",
                MetricValue::Scalar { value: n as f64 * 10.0 },
            ),
            series(
                "http.requests",
                MetricKind::Counter,
                "500",
                MetricValue::Scalar { value: n as f64 },
            ),
            series(
                "http.latency",
                MetricKind::Histogram,
                "200",
                MetricValue::Histogram {
                    count: n * 4,
                    sum: n as f64 * 8.0,
                    bounds: vec![1.0, 5.0],
                    buckets: vec![n, n * 2, n],
                },
            ),
        ];
        let mut r = report(instance, vec![p]);
        r.started = Some("2026-12-01T00:00:00Z".into());
        r.sources.push(sonde_core::SourceReport {
            name: "metrics".into(),
            overflow_series: 0,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![series(
                "app.queue",
                MetricKind::Gauge,
                "ok",
                MetricValue::Scalar { value: 7.5 },
            )],
        });
        r
    };
    server.answer(&at(1)).await?;
    server.answer(&at(3)).await?;
    let facts = server.sql("SELECT DISTINCT sonde_version, os, arch, cpus FROM reports").await?;
    let h = sonde_core::HostFacts::current();
    assert_eq!(facts, [format!("{}|{}|{}|{}", h.sonde_version, h.os, h.arch, h.cpus)]);
    let fleet =
        server.sql("SELECT os, COUNT(DISTINCT instance_id) FROM reports GROUP BY os").await?;
    assert_eq!(fleet, [format!("{}|1", h.os)]);
    let plugins = server
        .sql("SELECT plugin, state, events, d_events, busy_us, d_busy_us FROM report_plugins ORDER BY report")
        .await?;
    assert_eq!(
        plugins,
        ["http-status|running|100|100|50|50", "http-status|running|300|200|150|100"]
    );
    // Fleet totals by label: the counters' changes, summed per status.
    let totals = server
        .sql(
            "SELECT labels ->> 'status', SUM(delta) FROM report_metrics
             WHERE name = 'http.requests' GROUP BY 1 ORDER BY 1",
        )
        .await?;
    assert_eq!(totals, ["200|30", "500|3"]);
    let hist = server
        .sql(
            "SELECT count, delta, sum, d_sum, origin, owner FROM report_metrics
             WHERE kind = 'histogram' ORDER BY report",
        )
        .await?;
    assert_eq!(hist, ["4|4|8|8|plugin|http-status", "12|8|24|16|plugin|http-status"]);
    let gauges = server
        .sql("SELECT origin, owner, value, delta FROM report_metrics WHERE kind = 'gauge'")
        .await?;
    assert_eq!(gauges, ["source|metrics|7.5|", "source|metrics|7.5|"]);
    Ok(())
}

/// A report as a newer host could write it: a plugin state and a metric
/// kind this collector does not know, and a value of a new shape.
fn newer_report(instance: Uuid) -> String {
    let r = report(instance, vec![plugin("p", PluginState::Running, 10, 10)]);
    let text = String::from_utf8(r.to_json()).expect("utf8");
    text.replace(r#""state":"running""#, r#""state":"hibernating""#).replace(
        r#""metrics":[]"#,
        r#""metrics":[{"name":"s","kind":"summary","unit":"ms","labels":{},"count":3,"quantiles":{"0.5":2.0}}]"#,
    )
}

async fn a_report_from_a_newer_host_is_stored_as_it_was_sent(b: Backend) -> Result<()> {
    let server = start(b, RULES, None).await?;
    let instance = Uuid::new_v4();
    let text = newer_report(instance);
    let resp = server.upload_raw(text.clone().into_bytes(), None).await?;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await?);
    let body = server
        .admin(server.client.get(server.url(&format!("/v1/instances/{instance}/reports"))))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(body, format!("[{text}]"));
    let rows = server.sql("SELECT state FROM report_plugins").await?;
    assert_eq!(rows, ["hibernating"]);
    let rows = server.sql("SELECT kind, fields ->> 'count' FROM report_metrics").await?;
    assert_eq!(rows, ["summary|3"]);
    Ok(())
}

async fn old_reports_are_pruned_on_a_schedule_and_counted_in_the_metrics(b: Backend) -> Result<()> {
    let server = start(b, "", None).await?;
    let store = server.state.store().clone();
    let (old, active) = (Uuid::new_v4(), Uuid::new_v4());
    let three_days_ago = SystemTime::now() - Duration::from_secs(3 * 86400);
    for (instance, when) in
        [(old, three_days_ago), (active, three_days_ago), (active, SystemTime::now())]
    {
        let r = report(instance, vec![plugin("p", PluginState::Running, 1, 1)]);
        let json = String::from_utf8(r.to_json())?;
        store.ingest(vec![Received { report: r, json }], Arc::new(Policy::default()), when).await?;
    }
    let retention = Retention { max_age: Some(Duration::from_secs(2 * 86400)), max_bytes: None };
    let task = retention::spawn(
        store,
        retention,
        Duration::from_millis(50),
        Arc::clone(server.state.stats()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let text = server.metrics().await?;
        if metric(&text, "sonde_collector_pruned_reports_total").is_some_and(|n| n > 0) {
            break text;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "never pruned: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    task.abort();
    assert_eq!(metric(&metrics, "sonde_collector_pruned_reports_total"), Some(2), "{metrics}");
    assert_eq!(metric(&metrics, "sonde_collector_pruned_instances_total"), Some(1), "{metrics}");
    assert!(metric(&metrics, "sonde_collector_prune_runs_total").is_some_and(|n| n >= 1));
    assert_eq!(server.stored(active).await?.len(), 1);
    let resp =
        server.client.get(server.url(&format!("/v1/instances/{old}/reports"))).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The pruned reports' rows went with them.
    assert_eq!(server.sql("SELECT COUNT(*) FROM report_plugins").await?, ["1"]);
    Ok(())
}

async fn the_metrics_count_uploads_duplicates_and_refusals(b: Backend) -> Result<()> {
    let server = start(b, "[rate_limit]\nreports_per_minute = 1\nburst = 2\n", Some(TOKEN)).await?;
    let r = report(Uuid::new_v4(), vec![]);
    server.answer(&r).await?;
    server.answer(&r).await?;
    assert_eq!(server.upload(&r).await?.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.upload_raw(b"{}".to_vec(), None).await?.status(), StatusCode::BAD_REQUEST);
    let resp = server.client.get(server.url("/metrics")).send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = server.metrics().await?;
    let value = |name: &str| metric(&text, name);
    assert_eq!(value("sonde_collector_uploads_total"), Some(2), "{text}");
    assert_eq!(value("sonde_collector_reports_stored_total"), Some(1), "{text}");
    assert_eq!(value("sonde_collector_reports_duplicate_total"), Some(1), "{text}");
    assert_eq!(value("sonde_collector_uploads_throttled_total"), Some(1), "{text}");
    assert_eq!(value("sonde_collector_uploads_refused_total"), Some(1), "{text}");
    Ok(())
}

// The fleet figures, their public form and the dashboard.
#[path = "collector/browser.rs"]
mod browser;
#[path = "collector/fleet.rs"]
mod fleet;
use browser::the_dashboard_shows_the_stored_fleet_in_a_real_browser;
use fleet::{
    fleet_windows_are_bounded_and_bad_ones_refused, public_figures_never_show_a_group_under_k,
    the_fleet_figures_match_what_the_instances_sent,
};
on_both!(
    the_fleet_figures_match_what_the_instances_sent,
    public_figures_never_show_a_group_under_k,
    fleet_windows_are_bounded_and_bad_ones_refused,
    the_dashboard_shows_the_stored_fleet_in_a_real_browser,
);
