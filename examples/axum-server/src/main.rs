//! An axum service with sonde embedded: three routes, one layer, a reload on
//! SIGHUP and a flush on shutdown. This is all an embedder writes.
//!
//! ```sh
//! sonde-example-server --listen 127.0.0.1:3000 --manifest examples/sonde.toml --metrics
//! ```
//!
//! With `--metrics`, `GET /metrics` serves the site owner's own view in the
//! Prometheus text format (`sonde_axum::metrics_handler`); it works in
//! `local` mode, where nothing leaves the host.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use clap::Parser;
use sonde::{Manifest, Telemetry};
use sonde_axum::SondeLayer;

/// An example HTTP service with sonde telemetry.
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
    /// Serve `GET /metrics`: the plugins' series, sonde's own counters and
    /// any application metrics, in the Prometheus text format.
    #[arg(long)]
    metrics: bool,
}

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

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG").unwrap_or_else(
            |_| tracing_subscriber::EnvFilter::new("warn,sonde_example_server=info"),
        ))
        .init();
    let args = Args::parse();
    let telemetry = start_telemetry(args.manifest.as_ref())?;
    let mut app = Router::new()
        .route("/users/{id}", get(user))
        .route("/orders", get(orders))
        .route("/health", get(health))
        .layer(SondeLayer::new(telemetry.clone()).with_user_agent(args.user_agents));
    if args.metrics {
        // Added after the layer: scrapes are not recorded as requests.
        app = app.route("/metrics", sonde_axum::metrics_handler(telemetry.clone()));
    }
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| args.listen.clone())?;
    println!("listening on {}", listener.local_addr()?);

    #[cfg(unix)]
    if let Some(path) = args.manifest.clone() {
        let telemetry = telemetry.clone();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let (t, p) = (telemetry.clone(), path.clone());
                // reload() waits for the dispatcher: keep it off the workers.
                let outcome = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
                    Ok(t.reload(&Manifest::load(&p)?)?)
                })
                .await;
                match outcome {
                    Ok(Ok(changes)) => tracing::info!("manifest reloaded: {}", changes.join("; ")),
                    Ok(Err(e)) => tracing::warn!("manifest not reloaded: {e:#}"),
                    Err(e) => tracing::warn!("manifest not reloaded: {e}"),
                }
            }
        });
    }

    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    // One last report, sent within 5 s or kept in the spool for next time.
    tokio::task::spawn_blocking(move || telemetry.shutdown(Duration::from_secs(5))).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
