//! The layer in a real axum router, with the real example plugins.

#![allow(clippy::unwrap_used, reason = "tests")]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use sonde::{Manifest, MetricValue, Report, Telemetry};
use sonde_axum::SondeLayer;
use sonde_tests::{Entry, plugin, write_manifest};
use tower::ServiceExt;

fn telemetry(dir: &std::path::Path) -> Telemetry {
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry::new("user-agent", plugin("user_agent.wasm")),
        Entry::new("route-latency", plugin("route_latency.wasm"))
            .config("routes", "/users/{id},<unmatched>"),
    ];
    let path = write_manifest(dir, "mode = \"local\"\nstate_dir = \"s\"", &entries);
    Telemetry::builder(Manifest::load(&path).unwrap()).ephemeral(true).start().unwrap()
}

fn app(layer: SondeLayer) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(layer)
}

async fn send(app: &Router, uri: &str) -> StatusCode {
    let req = Request::get(uri).header("user-agent", "curl/8.5.0").body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

fn series(r: &Report, plugin: &str) -> Vec<(String, f64)> {
    let p = r.plugins.iter().find(|p| p.name == plugin).unwrap();
    p.metrics
        .iter()
        .map(|m| {
            let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let v = match m.value {
                MetricValue::Scalar { value } => value,
                MetricValue::Histogram { count, .. } => count as f64,
                MetricValue::Other(_) => f64::NAN,
            };
            (labels.join(","), v)
        })
        .collect()
}

#[tokio::test]
async fn each_request_is_one_event_with_its_route_template_and_nothing_identifying() {
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path());
    let app = app(SondeLayer::new(t.clone()));
    assert_eq!(send(&app, "/users/12345?token=s3cr3t").await, StatusCode::OK);
    assert_eq!(send(&app, "/users/67890").await, StatusCode::OK);
    assert_eq!(send(&app, "/admin/passwords").await, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, "/boom").await, StatusCode::INTERNAL_SERVER_ERROR);
    let r = t.report().unwrap();
    assert_eq!(r.buffer.recorded, 4);
    assert_eq!(
        series(&r, "http-status"),
        vec![
            ("method=GET,status_class=2xx".to_string(), 2.0),
            ("method=GET,status_class=4xx".to_string(), 1.0),
            ("method=GET,status_class=5xx".to_string(), 1.0),
        ]
    );
    assert_eq!(
        series(&r, "route-latency"),
        vec![
            ("route=/users/{id}".to_string(), 2.0),
            ("route=<unmatched>".to_string(), 1.0),
            ("route=other".to_string(), 1.0),
        ]
    );
    assert_eq!(
        series(&r, "user-agent"),
        vec![("family=none".to_string(), 4.0)],
        "user agents are off by default"
    );
    let json = String::from_utf8(r.to_json()).unwrap();
    for secret in ["12345", "67890", "s3cr3t", "token", "admin", "passwords", "curl"] {
        assert!(!json.contains(secret), "`{secret}` reached the report");
    }
}

#[tokio::test]
async fn user_agents_are_recorded_only_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path());
    let app = app(SondeLayer::new(t.clone()).with_user_agent(true));
    send(&app, "/users/1").await;
    let r = t.report().unwrap();
    assert_eq!(series(&r, "user-agent"), vec![("family=curl".to_string(), 1.0)]);
}

#[tokio::test]
async fn an_overlong_user_agent_is_cut_and_counted_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path());
    let app = app(SondeLayer::new(t.clone()).with_user_agent(true));
    let long = format!("Mozilla/5.0 {}", "x".repeat(400));
    let req = Request::get("/users/1").header("user-agent", long).body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    send(&app, "/users/2").await;
    let r = t.report().unwrap();
    assert_eq!((r.buffer.recorded, r.buffer.truncated), (2, 1));
    let families = series(&r, "user-agent");
    assert_eq!(families.iter().map(|(_, n)| n).sum::<f64>(), 2.0, "{families:?}");
}

#[tokio::test]
async fn with_telemetry_off_requests_pass_through_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let off = Telemetry::off();
    assert!(!off.is_recording());
    let passing = app(SondeLayer::new(off).with_user_agent(true));
    assert_eq!(send(&passing, "/users/1").await, StatusCode::OK);
    assert_eq!(send(&passing, "/boom").await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(send(&passing, "/nowhere").await, StatusCode::NOT_FOUND);
    // The same layer over a recording runtime does record.
    let t = telemetry(dir.path());
    assert!(t.is_recording());
    send(&app(SondeLayer::new(t.clone())), "/users/1").await;
    assert_eq!(t.report().unwrap().buffer.recorded, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_metrics_handler_serves_the_local_view_and_503_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path());
    t.wait_until_loaded(std::time::Duration::from_secs(60)).unwrap();
    let app = app(SondeLayer::new(t.clone())).route("/metrics", sonde_axum::metrics_handler(t));
    assert_eq!(send(&app, "/users/7").await, StatusCode::OK);
    let res = app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], sonde::PROMETHEUS_CONTENT_TYPE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        page.contains("http_requests_total{sonde_plugin=\"http-status\",method=\"GET\",status_class=\"2xx\"} 1\n"),
        "{page}"
    );
    let off: Router =
        Router::new().route("/metrics", sonde_axum::metrics_handler(Telemetry::off()));
    let res = off.oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}
