//! `sonde-collector`: the reference endpoint for sonde hosts. See the
//! library's documentation for the HTTP API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sonde_collector::fleet::{DEFAULT_K, MAX_WINDOW, MIN_K};
use sonde_collector::retention::{self, MIN_DB_SIZE, MIN_RETAIN, Retention};
use sonde_collector::store::DEFAULT_CONNECTIONS;
use sonde_collector::{AdminAccess, CollectorState, Db, Policy, Store, export};
use tracing_subscriber::EnvFilter;

/// The reference collector for sonde telemetry reports.
///
/// Stores reports in SQLite or PostgreSQL (any number of replicas on one
/// database), rate-limits each host instance, and answers with directives
/// posted by an operator or issued by the policy's cost rules.
#[derive(Debug, Parser)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "Admin routes (/v1/directives, /v1/instances) need `Authorization: Bearer TOKEN` \
                  when --admin-token is set; without it they are open to loopback peers only when \
                  listening on a loopback address, and closed otherwise.\n\n\
                  Exit codes: 0 clean shutdown (Ctrl-C, SIGTERM); 1 serving failed; 2 bad \
                  arguments, policy, database or address.\n\n\
                  GET /metrics (admin) serves the collector's own counters, pruning included.\n\n\
                  The dashboard is at /ui: the full view for admins, k-anonymous figures for \
                  everyone else.\n\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Option<SocketAddr>,
    /// SQLite database file (created if missing), or a PostgreSQL URL
    /// (postgres://user:password@host:port/database) shared by replicas.
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "SONDE_COLLECTOR_DB",
        hide_env_values = true,
        required = true
    )]
    db: Option<String>,
    /// The k of the public view (/ui without the admin token,
    /// /v1/fleet/public): no figure covers fewer than k instances.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_K,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_K)..))]
    k_anonymity: u32,
    /// PostgreSQL: most connections this process opens.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS)]
    db_connections: usize,
    /// Delete reports (and their rows) received longer ago than this, and
    /// instances not seen since, e.g. 30d. At least 1h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    retain: Option<Duration>,
    /// SQLite only: delete the oldest reports while the database holds more
    /// than this, e.g. 10GiB.
    #[arg(long, value_name = "SIZE", value_parser = retention::parse_size)]
    max_db_size: Option<u64>,
    /// How often to prune (with --retain or --max-db-size).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "10m")]
    prune_every: Duration,
    /// Policy file (TOML): next_update, [rate_limit], [[rule]].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Token required on admin routes (16 to 256 visible ASCII characters).
    #[arg(long, value_name = "TOKEN", env = "SONDE_COLLECTOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write the fleet's k-anonymous aggregates (CSV and JSON) to a
    /// directory: every group covers at least k instances, smaller ones are
    /// folded into `other`, no instance's data appears.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// The database, as for serving.
    #[arg(long, value_name = "PATH|URL", env = "SONDE_COLLECTOR_DB", hide_env_values = true)]
    db: String,
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    public: PathBuf,
    /// The window the figures cover, at most 31d.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "24h")]
    window: Duration,
    /// No group covers fewer than K instances.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_K,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_K)..))]
    k: u32,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
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
    if let Some(Command::Export(export)) = args.command {
        return runtime.block_on(async {
            match run_export(export).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::from(2)
                }
            }
        });
    }
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

async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    if args.window > MAX_WINDOW {
        bail!("--window must be at most {}", humantime::format_duration(MAX_WINDOW));
    }
    let db = Db::parse(&args.db);
    let store =
        Store::connect(&db, 2).await.with_context(|| format!("cannot open the database {db}"))?;
    let fleet = store.fleet(args.window, std::time::SystemTime::now(), Some(args.k)).await?;
    let files = export::write_public(&fleet, &args.public)
        .with_context(|| format!("cannot write into {}", args.public.display()))?;
    match args.format {
        Format::Json => {
            let summary = serde_json::json!({
                "dir": args.public,
                "files": files,
                "k": args.k,
                "since": fleet.since,
                "until": fleet.until,
                "instances": fleet.instances,
                "plugins": fleet.plugins.len(),
                "metric_groups": fleet.metrics.len(),
                "truncated": fleet.truncated,
            });
            println!("{summary}");
        }
        Format::Text => {
            let instances =
                fleet.instances.map_or_else(|| format!("fewer than {}", args.k), |n| n.to_string());
            println!(
                "wrote {} files to {} (k = {}; {} to {}): {instances} instances, {} plugin \
                 groups, {} metric groups{}",
                files.len(),
                args.public.display(),
                args.k,
                fleet.since,
                fleet.until,
                fleet.plugins.len(),
                fleet.metrics.len(),
                if fleet.truncated { " (row limit reached: oldest rows left out)" } else { "" }
            );
        }
    }
    Ok(())
}

async fn setup(args: Args) -> anyhow::Result<(tokio::net::TcpListener, CollectorState)> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let (Some(listen), Some(db)) = (args.listen, args.db.as_deref()) else {
        bail!("--listen and --db are required");
    };
    let db = Db::parse(db);
    let retention = Retention { max_age: args.retain, max_bytes: args.max_db_size };
    if retention.max_age.is_some_and(|d| d < MIN_RETAIN) {
        bail!("--retain must be at least {}", humantime::format_duration(MIN_RETAIN));
    }
    if let Some(size) = retention.max_bytes {
        if matches!(db, Db::Postgres(_)) {
            bail!("--max-db-size bounds a SQLite file; on PostgreSQL use --retain");
        }
        if size < MIN_DB_SIZE {
            bail!("--max-db-size must be at least {MIN_DB_SIZE} bytes");
        }
    }
    if args.prune_every < Duration::from_secs(1) {
        bail!("--prune-every must be at least 1s");
    }
    let store = Store::connect(&db, args.db_connections)
        .await
        .with_context(|| format!("cannot open the database {db}"))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    let admin = AdminAccess::new(args.admin_token, local)?;
    if admin == AdminAccess::Closed {
        tracing::warn!("no --admin-token and not on loopback: the admin API is closed");
    }
    tracing::info!(
        listen = %local,
        db = %db,
        backend = store.kind(),
        rules = policy.rules.len(),
        admin = ?admin,
        retain = ?retention.max_age,
        max_db_size = ?retention.max_bytes,
        "collector ready"
    );
    let state = CollectorState::new(store.clone(), policy, admin);
    state.set_k_anonymity(args.k_anonymity);
    if retention.is_set() {
        retention::spawn(store, retention, args.prune_every, std::sync::Arc::clone(state.stats()));
    }
    Ok((listener, state))
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
