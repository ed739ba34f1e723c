//! The whole-server benchmark's server: the routes and handlers of
//! `examples/axum-server`, with sonde's `SondeLayer` (telemetry on with
//! `--manifest`, off without) or, with `--peer`, one of the route-metrics
//! layers a Rust user would install instead, on the same three routes:
//!
//! - `axum-prometheus`: `axum_prometheus::PrometheusMetricLayer::pair()`
//!   (a counter, a histogram and a gauge per route, method and status,
//!   recorded through `metrics-exporter-prometheus`; the handle is kept,
//!   `/metrics` is not routed so the routes stay the same three);
//! - `otel`: `opentelemetry-instrumentation-tower`'s HTTP server layer with
//!   metrics only (tracing off), recording into an `SdkMeterProvider` with a
//!   `ManualReader` installed as the global meter provider.
//!
//! `cargo xtask bench` runs this binary for every server it measures
//! (sonde off, sonde on, each peer), so all of them are the same program
//! but for the layer.
//!
//! ```sh
//! sonde-bench-server --listen 127.0.0.1:3000 --peer axum-prometheus
//! sonde-bench-server --listen 127.0.0.1:3001 --manifest examples/sonde.toml --user-agents
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use sonde::{Manifest, Telemetry};
use sonde_axum::SondeLayer;

/// The example HTTP service, with sonde or a peer's metrics layer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// The sonde manifest; telemetry is off without one.
    #[arg(long, env = "SONDE_MANIFEST")]
    manifest: Option<PathBuf>,
    /// Record user agents (only if the operator allows it).
    #[arg(long)]
    user_agents: bool,
    /// A peer's route-metrics layer instead of sonde's (sonde's layer is
    /// then added only with `--manifest`).
    #[arg(long, value_enum, default_value_t = Peer::None)]
    peer: Peer,
    /// Also route `GET /metrics`: the peer's metrics as text, to check that
    /// it records (the benchmark leaves it off, so every server has the
    /// same three routes).
    #[arg(long)]
    metrics: bool,
}

/// The route-metrics layer in front of the routes besides sonde's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Peer {
    /// sonde's layer only (off without `--manifest`): the example server.
    None,
    /// `axum-prometheus` 0.10's `PrometheusMetricLayer`.
    AxumPrometheus,
    /// `opentelemetry-instrumentation-tower` 0.19's HTTP server metrics.
    Otel,
}

// The three handlers, as in `examples/axum-server`.

async fn user(Path(id): Path<u64>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": id, "name": format!("user {id}") }))
}

async fn orders() -> Json<serde_json::Value> {
    Json(serde_json::json!([{ "id": 1, "total": 42 }]))
}

async fn health() -> &'static str {
    "ok"
}

fn start_telemetry(manifest: Option<&PathBuf>) -> Result<Telemetry> {
    let Some(path) = manifest else { return Ok(Telemetry::off()) };
    let manifest = Manifest::load(path)?;
    Ok(Telemetry::builder(manifest).start()?)
}

/// A `ManualReader` the meter provider and `/metrics` share.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The OpenTelemetry metrics `reader` collects, one line per data point:
/// `name{attributes} value` (histograms: their count).
fn render_otel(reader: &SharedReader) -> String {
    fn points<T: std::fmt::Display + Copy>(out: &mut String, name: &str, data: &MetricData<T>) {
        let attrs = |kv: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
            kv.map(|kv| format!("{}={}", kv.key, kv.value)).collect::<Vec<_>>().join(",")
        };
        match data {
            MetricData::Histogram(h) => {
                for p in h.data_points() {
                    let _ = writeln!(
                        out,
                        "{name}{{{}}} count {}",
                        attrs(&mut p.attributes()),
                        p.count()
                    );
                }
            }
            MetricData::Sum(sum) => {
                for p in sum.data_points() {
                    let _ = writeln!(out, "{name}{{{}}} {}", attrs(&mut p.attributes()), p.value());
                }
            }
            _ => {}
        }
    }
    let mut rm = ResourceMetrics::default();
    if let Err(e) = reader.collect(&mut rm) {
        return format!("collect failed: {e}\n");
    }
    let mut out = String::new();
    for scope in rm.scope_metrics() {
        for m in scope.metrics() {
            match m.data() {
                AggregatedMetrics::F64(d) => points(&mut out, m.name(), d),
                AggregatedMetrics::U64(d) => points(&mut out, m.name(), d),
                AggregatedMetrics::I64(d) => points(&mut out, m.name(), d),
            }
        }
    }
    out
}

/// What must live as long as the server for a peer's metrics to be kept.
#[derive(Debug)]
enum PeerState {
    None,
    /// The Prometheus recorder's handle (what `/metrics` renders).
    AxumPrometheus(axum_prometheus::metrics_exporter_prometheus::PrometheusHandle),
    /// The meter provider the layer records into, and its reader.
    Otel(SdkMeterProvider, SharedReader),
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let telemetry = start_telemetry(args.manifest.as_ref())?;
    let mut app = Router::new()
        .route("/users/{id}", get(user))
        .route("/orders", get(orders))
        .route("/health", get(health));
    // `pair()` installs the global `metrics` recorder and spawns its
    // upkeep task on this runtime.
    let state = match args.peer {
        Peer::None => PeerState::None,
        Peer::AxumPrometheus => {
            let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
            app = app.layer(layer);
            PeerState::AxumPrometheus(handle)
        }
        Peer::Otel => {
            let reader = SharedReader(Arc::new(ManualReader::builder().build()));
            let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
            // The layer takes its meter from the global provider.
            opentelemetry::global::set_meter_provider(provider.clone());
            let layer = opentelemetry_instrumentation_tower::http::server::LayerBuilder::builder()
                .with_tracing(false)
                .build()
                .context("building the OpenTelemetry layer")?;
            app = app.layer(layer);
            PeerState::Otel(provider, reader)
        }
    };
    if args.peer == Peer::None || args.manifest.is_some() {
        app = app.layer(SondeLayer::new(telemetry.clone()).with_user_agent(args.user_agents));
    }
    if args.metrics {
        // Outside the layers: reading the metrics is not a request they count.
        let text = match &state {
            PeerState::None => None,
            PeerState::AxumPrometheus(handle) => Some(Arc::new({
                let handle = handle.clone();
                move || handle.render()
            })
                as Arc<dyn Fn() -> String + Send + Sync>),
            PeerState::Otel(_, reader) => Some(Arc::new({
                let reader = reader.clone();
                move || render_otel(&reader)
            })
                as Arc<dyn Fn() -> String + Send + Sync>),
        };
        if let Some(text) = text {
            app = app.route("/metrics", get(move || std::future::ready(text())));
        }
    }
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| args.listen.clone())?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    if let PeerState::Otel(provider, _) = state {
        let _ = provider.shutdown();
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown(Duration::from_secs(5))).await?;
    Ok(())
}

async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
