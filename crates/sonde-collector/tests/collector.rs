//! The collector as hosts and operators see it: a real server on
//! 127.0.0.1:0, real HTTP, gzip uploads built from `sonde_core` types.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sonde_collector::{AdminAccess, CollectorState, Policy, Store};
use sonde_core::{
    BufferStats, Directive, EndpointResponse, PluginCost, PluginReport, PluginState, Report,
    ReportBatch,
};
use tokio::sync::oneshot;
use uuid::Uuid;

const TOKEN: &str = "test-admin-token-0123456789";

/// A collector serving in the background; stops when dropped.
struct Server {
    base: String,
    client: reqwest::Client,
    token: Option<&'static str>,
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

async fn start(policy: &str, token: Option<&'static str>) -> Result<Server> {
    let policy = Policy::parse(policy, Path::new("policy.toml"))?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("collector.db"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let admin = AdminAccess::new(token.map(String::from), addr)?;
    let state = CollectorState::new(store, policy, admin);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sonde_collector::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Ok(Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        token,
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

#[tokio::test]
async fn a_report_is_stored_once_and_its_retry_is_accepted_as_zero() -> Result<()> {
    let server = start("", None).await?;
    let instance = Uuid::new_v4();
    let r = report(instance, vec![]);
    assert_eq!(server.answer(&r).await?.accepted, Some(1));
    assert_eq!(server.answer(&r).await?.accepted, Some(0));
    assert_eq!(server.stored(instance).await?, vec![r]);
    Ok(())
}

#[tokio::test]
async fn a_batch_is_accepted_whole_and_plain_json_is_accepted_too() -> Result<()> {
    let server = start("", None).await?;
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
    let server = start("", None).await?;
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
    let server = start("", None).await?;
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

#[tokio::test]
async fn an_instance_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_stored()
-> Result<()> {
    let server = start("[rate_limit]\nreports_per_minute = 1\nburst = 2\n", None).await?;
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

#[tokio::test]
async fn a_manual_directive_reaches_its_instance_exactly_once() -> Result<()> {
    let server = start("", None).await?;
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

#[tokio::test]
async fn a_directive_for_every_instance_reaches_each_of_them_once() -> Result<()> {
    let server = start("", None).await?;
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

#[tokio::test]
async fn a_retried_upload_gets_back_what_its_lost_answer_carried() -> Result<()> {
    let server = start("", None).await?;
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

#[tokio::test]
async fn the_cost_rule_disables_an_expensive_plugin_and_not_a_cheap_one() -> Result<()> {
    let server = start(RULES, None).await?;
    let instance = Uuid::new_v4();
    let running = || {
        vec![
            plugin("cheap", PluginState::Running, 10_000, 100_000),
            plugin("pricey", PluginState::Running, 10_000, 1_200_000),
        ]
    };
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
    let again = server.answer(&report(instance, running())).await?;
    assert_eq!(again.directives.len(), 1, "{again:?}");
    let listed = server.get("/v1/directives").await?;
    assert_eq!(listed[0]["source"], "rule");
    assert_eq!(listed[0]["instance_id"], instance.to_string());
    Ok(())
}

#[tokio::test]
async fn the_read_api_lists_instances_and_their_reports_newest_first() -> Result<()> {
    let server = start("", None).await?;
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

#[tokio::test]
async fn the_admin_token_is_enforced_and_uploads_need_none() -> Result<()> {
    let server = start("", Some(TOKEN)).await?;
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

#[tokio::test]
async fn an_invalid_directive_is_refused_before_it_is_stored() -> Result<()> {
    let server = start("", None).await?;
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
