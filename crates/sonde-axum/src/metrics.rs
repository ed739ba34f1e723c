//! The site owner's `/metrics` page: [`Telemetry::prometheus_text`] served
//! for a Prometheus scraper.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use sonde::Telemetry;

/// A `GET` route serving [`Telemetry::prometheus_text`] (the plugins'
/// current series, the application's attached metrics and sonde's own
/// counters, in the Prometheus text format), for the router's state `S`:
///
/// ```no_run
/// # use axum::Router;
/// # fn app(telemetry: sonde::Telemetry) -> Router {
/// Router::new().route("/metrics", sonde_axum::metrics_handler(telemetry))
/// # }
/// ```
///
/// The page is built on tokio's blocking pool (it waits for sonde's
/// dispatcher), never on the async workers, and plugins are collected from
/// at most once per [`sonde::MIN_VIEW_INTERVAL`] however often it is
/// scraped. With telemetry off it answers `503 Service Unavailable`. It
/// works in `local` mode: nothing is sent anywhere. Whoever can reach the
/// route can read the series: serve it where only your scraper can.
pub fn metrics_handler<S>(telemetry: Telemetry) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let telemetry = telemetry.clone();
        async move {
            match tokio::task::spawn_blocking(move || telemetry.prometheus_text()).await {
                Ok(Ok(page)) => {
                    ([(header::CONTENT_TYPE, sonde::PROMETHEUS_CONTENT_TYPE)], page).into_response()
                }
                Ok(Err(e)) => unavailable(&e.to_string()),
                Err(_) => unavailable("the metrics page could not be built"),
            }
        }
    })
}

fn unavailable(why: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
}
