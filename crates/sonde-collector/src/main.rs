//! `sonde-collector`: the reference endpoint for sonde hosts. See the
//! library's documentation for the HTTP API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sonde_collector::{AdminAccess, CollectorState, Policy, Store};
use tracing_subscriber::EnvFilter;

/// The reference collector for sonde telemetry reports.
///
/// Stores reports in SQLite, rate-limits each host instance, and answers
/// with directives posted by an operator or issued by the policy's cost
/// rules.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Admin routes (/v1/directives, /v1/instances) need `Authorization: Bearer TOKEN` \
                  when --admin-token is set; without it they are open to loopback peers only when \
                  listening on a loopback address, and closed otherwise.\n\n\
                  Exit codes: 0 clean shutdown (Ctrl-C, SIGTERM); 1 serving failed; 2 bad \
                  arguments, policy, database or address.\n\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// SQLite database file, created if missing.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Policy file (TOML): next_update, [rate_limit], [[rule]].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Token required on admin routes (16 to 256 visible ASCII characters).
    #[arg(long, value_name = "TOKEN", env = "SONDE_COLLECTOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (listener, state) = match setup(args).await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::from(2);
            }
        };
        match sonde_collector::serve(listener, state, shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("serving failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn setup(args: Args) -> anyhow::Result<(tokio::net::TcpListener, CollectorState)> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let store = Store::open(&args.db)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    let admin = AdminAccess::new(args.admin_token, local)?;
    if admin == AdminAccess::Closed {
        tracing::warn!("no --admin-token and not on loopback: the admin API is closed");
    }
    tracing::info!(
        listen = %local,
        db = %args.db.display(),
        rules = policy.rules.len(),
        admin = ?admin,
        "collector ready"
    );
    Ok((listener, CollectorState::new(store, policy, admin)))
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
