//! # The reference sonde collector
//!
//! An endpoint that sonde hosts send their reports to. It stores them
//! (deduplicated by `report_id`) with their runtime facts, plugin states and
//! costs and metric series in tables for analysis, rate-limits each host
//! instance, and answers with an
//! [`EndpointResponse`](sonde_core::EndpointResponse): how many reports it
//! took, when to report next, and directives, either posted by an operator
//! or issued by the policy's cost rules.
//!
//! ## Running it
//!
//! ```text
//! sonde-collector --listen 127.0.0.1:8080 --db collector.db \
//!     [--policy policy.toml] [--admin-token TOKEN] [--retain 30d] [--max-db-size 10GiB]
//! sonde-collector --listen 0.0.0.0:8080 --db postgres://sonde@db/telemetry --admin-token TOKEN
//! ```
//!
//! `--db` is a SQLite file (embedded, one process) or a PostgreSQL URL: any
//! number of collector processes behind a load balancer may share one
//! PostgreSQL database, and dedupe, directives, cost rules and rate limits
//! behave as with one ([`store`]). `--retain` prunes old reports on a
//! schedule ([`retention`]).
//!
//! Logs go to stderr (`RUST_LOG=debug` for one line per upload). Exit codes:
//! 0 after a clean shutdown (Ctrl-C or SIGTERM), 1 when serving fails, 2 for
//! bad arguments, a bad policy file, a database that cannot be opened or an
//! address that cannot be bound. The policy file format is in [`config`];
//! who may use the admin routes is in [`admin`].
//!
//! ## HTTP API
//!
//! Errors are `{"error": "<message>"}` with the status below.
//!
//! | route | who | request | answer |
//! |---|---|---|---|
//! | `POST /v1/reports` | hosts | `{"reports": [Report, ...]}` or one bare `Report`, JSON, gzip when `Content-Encoding: gzip` | `200` `EndpointResponse`; `400` not JSON / not a report / a report failing `Report::validate` / empty / mixed instances / other schema; `413` body over 1 MiB, over 16 MiB decompressed, or over 100 reports; `415` other encoding; `429` + `Retry-After: <secs>` over the rate limit (nothing stored) |
//! | `POST /v1/directives` | admin | `{"instance_id": "<uuid>" \| null, "directive": Directive}` (`null`: every instance, including ones that first report later) | `201` `{"id": N}`; `400` invalid |
//! | `GET /v1/directives?limit=N` | admin | | `200` `[{"id", "instance_id", "directive", "source": "admin"\|"rule", "created_at", "delivered"}]`, newest first |
//! | `DELETE /v1/directives/{id}` | admin | | `204`; `404` unknown id |
//! | `GET /v1/instances?limit=N` | admin | | `200` `[{"instance_id", "first_seen", "last_seen", "reports"}]`, last seen first |
//! | `GET /v1/instances/{id}/reports?limit=N` | admin | | `200` `[Report, ...]` newest received first (default 10), each as the host sent it; `404` unknown instance |
//! | `GET /v1/instances/{id}/directives?limit=N` | admin | | `200` `[{"id", "directive", "source", "delivered_at", "report_id"}]`, the directives delivered to the instance, newest first |
//! | `GET /v1/fleet?window=24h` | admin | | `200` [`fleet::Fleet`]: instances by version/OS/arch, reports per hour, plugins (states, who switched them off and why, cost percentiles), metric totals by label; `400` a window over 31 days |
//! | `GET /v1/fleet/public?window=24h` | anyone | | `200` the same, k-anonymous (`--k-anonymity`, default 5: no group under k instances, see [`fleet`]) |
//! | `GET /ui...` | anyone; admin for instances and directives | | the dashboard, HTML ([`ui`](#the-dashboard)) |
//! | `GET /metrics` | admin | | `200` the collector's own counters, Prometheus text format ([`stats`]) |
//! | `GET /healthz` | anyone | | `200` `ok` |
//!
//! Fleet figures read at most [`fleet::MAX_FLEET_ROWS`] rows of each kind
//! over at most [`fleet::MAX_WINDOW`] (`"truncated": true` when the oldest
//! rows of the window were left out).
//!
//! Lists default to 100 items (reports: 10) and return at most 1000. Admin
//! routes answer `401` (with `WWW-Authenticate: Bearer`) for a missing or
//! wrong token and `403` when they are closed to the peer.
//!
//! In a `200` to an upload, `accepted` counts newly stored reports (a
//! duplicate `report_id` counts 0), `next_update_secs` is the policy's
//! `next_update` when set, and `directives` are those the instance has not
//! received yet, oldest first, within the host's limits
//! ([`MAX_DIRECTIVES`](sonde_core::MAX_DIRECTIVES) and
//! [`MAX_RESPONSE_BYTES`](sonde_core::MAX_RESPONSE_BYTES)); the rest come
//! with the next upload. Each directive reaches each instance once; a retried
//! upload (same first `report_id`) gets again what its lost answer carried.
//!
//! ## The dashboard
//!
//! `/ui` serves HTML pages (no JavaScript): the fleet, plugins and their
//! cost, metric totals, and for admins each instance's page and the
//! directives in force (add, delete). Admins log in at `/ui/login` with the
//! admin token; everyone else sees k-anonymous figures only. Pages and who
//! sees what are listed in the `ui` module's source documentation
//! (`src/ui/mod.rs`). `sonde-collector export --public DIR` writes the same
//! k-anonymous figures as CSV and JSON ([`export`]).
//!
//! ## Key items
//!
//! - [`router`] and [`serve`]: the axum app, and serving it until shutdown.
//! - [`CollectorState`]: what the routes share, made from a [`Store`], a
//!   [`Policy`] and an [`AdminAccess`].
//! - [`Policy`] ([`config`]): the TOML policy, with errors that name file,
//!   line and key ([`PolicyError`]).
//! - [`Rule`] and [`step`] ([`policy`]): the cost rules and when they issue
//!   `disable_plugin`, decided without I/O.
//! - [`Store`] ([`store`]): SQLite or PostgreSQL behind one trait: dedupe,
//!   deliveries, the rows kept for analysis, versioned migrations.
//! - [`RateLimiter`] ([`limit`]): a token bucket per instance, in the
//!   process ([`Limiter`]) or in PostgreSQL for replicas.
//! - [`Retention`] ([`retention`]) and [`Stats`] ([`stats`]): pruning on a
//!   schedule, and the counters it and the routes keep.
//! - [`upload::decode`]: an upload body to reports, within
//!   [`MAX_BODY_BYTES`], [`MAX_DECODED_BYTES`] and [`MAX_REPORTS_PER_BATCH`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sonde_collector::{AdminAccess, CollectorState, Policy, Store};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let admin = AdminAccess::new(None, listener.local_addr()?)?;
//! let store = Store::sqlite("collector.db".as_ref())?;
//! let state = CollectorState::new(store, Policy::default(), admin);
//! sonde_collector::serve(listener, state, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod export;
pub mod fleet;
pub mod limit;
pub mod policy;
pub mod retention;
mod routes;
mod state;
pub mod stats;
pub mod store;
mod ui;
pub mod upload;

use std::future::Future;
use std::net::SocketAddr;

pub use admin::{AdminAccess, NewDirective};
pub use config::{Policy, PolicyError, RateLimit};
pub use limit::{Limiter, RateLimiter, Throttled};
pub use policy::{Rule, Step, step};
pub use retention::{Pruned, Retention};
pub use routes::{
    DEFAULT_LIST_LIMIT, DEFAULT_REPORTS_LIMIT, MAX_ADMIN_BODY_BYTES, MAX_LIST_LIMIT, router,
};
pub use state::{
    CollectorState, MAX_CACHED_WINDOWS, MAX_CONCURRENT_DECODES, MAX_CONCURRENT_FLEET_READS,
    PUBLIC_FLEET_TTL,
};
pub use stats::Stats;
pub use store::{Db, Store, StoreError};
pub use upload::{MAX_BODY_BYTES, MAX_DECODED_BYTES, MAX_REPORTS_PER_BATCH, Received};

/// Serves the collector on `listener` until `shutdown` completes, then
/// finishes the requests in flight. Peers' addresses are passed to the
/// routes, for the admin loopback check.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: CollectorState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
