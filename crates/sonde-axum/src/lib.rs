//! # sonde for axum and hyper
//!
//! [`SondeLayer`] records one [`HTTP_REQUEST`] event per request into a
//! [`sonde::Telemetry`]: the route *template* (axum's [`MatchedPath`], e.g.
//! `/users/{id}`; unmatched requests get [`UNMATCHED_ROUTE`]), the method
//! (one of the standard ones, else `OTHER`), the status, the duration in
//! microseconds and, only if the operator enables it, the user agent.
//!
//! No query string, path parameter, header or client address ever enters an
//! event: the layer never reads them. Recording is `Telemetry::record`:
//! no allocation, no lock, no log, never blocks the request. With telemetry
//! off ([`Telemetry::is_recording`] is false) the layer reads nothing, not
//! even the clock: requests only pass through.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use sonde::{Manifest, Telemetry};
//! use sonde_axum::SondeLayer;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::builder(Manifest::load("sonde.toml".as_ref())?).start()?;
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hi" }))
//!     .layer(SondeLayer::new(telemetry));
//! # Ok(()) }
//! ```
//!
//! [`metrics_handler`] serves the site owner's own view of the process,
//! [`Telemetry::prometheus_text`], for a Prometheus scraper.

#![deny(missing_docs)]

mod metrics;

pub use metrics::metrics_handler;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use arrayvec::ArrayString;
use axum::extract::MatchedPath;
use http::{Method, Request, Response};
use sonde::{EventKind, Telemetry};
use tower::{Layer, Service};

/// The event kind the layer records.
pub static HTTP_REQUEST: EventKind =
    EventKind::new("http.request", &["method", "route", "status", "duration_us", "user_agent"]);

/// The `route` of a request no route matched (404s, scanners): a fixed
/// placeholder, never the raw path.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

/// Records one event per request. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SondeLayer {
    telemetry: Telemetry,
    user_agent: bool,
}

impl SondeLayer {
    /// A layer recording into `telemetry`, without user agents.
    pub fn new(telemetry: Telemetry) -> SondeLayer {
        SondeLayer { telemetry, user_agent: false }
    }

    /// Also records the `User-Agent` header (cut to the event's text room).
    /// Off by default: only turn it on when the operator allows it.
    pub fn with_user_agent(mut self, enabled: bool) -> SondeLayer {
        self.user_agent = enabled;
        self
    }
}

impl<S> Layer<S> for SondeLayer {
    type Service = SondeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SondeService { inner, layer: self.clone() }
    }
}

/// The service [`SondeLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct SondeService<S> {
    inner: S,
    layer: SondeLayer,
}

/// The method label: the standard methods by name, anything else `OTHER`.
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

impl<S, B, R> Service<Request<B>> for SondeService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Telemetry off: no clock read, no copy, no event; the request only
        // passes through.
        if !self.layer.telemetry.is_recording() {
            return ResponseFuture { inner: self.inner.call(req), pending: None };
        }
        // What the event needs is kept: a `&'static str`, a reference count
        // and, if enabled, a copy of the user agent (copying ~100 bytes is
        // cheaper than cloning the header, which can allocate); the event is
        // written into the ring on completion.
        let request = RequestFields {
            method: method_name(req.method()),
            route: req.extensions().get::<MatchedPath>().cloned(),
            user_agent: if self.layer.user_agent {
                req.headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(user_agent_copy)
            } else {
                None
            },
        };
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(Pending {
                request,
                start: Instant::now(),
                telemetry: self.layer.telemetry.clone(),
            }),
        }
    }
}

/// A request whose event is written when its response is ready.
#[derive(Debug)]
struct Pending {
    request: RequestFields,
    start: Instant,
    telemetry: Telemetry,
}

/// The parts of a request the event is made of.
#[derive(Debug)]
struct RequestFields {
    method: &'static str,
    route: Option<MatchedPath>,
    user_agent: Option<UserAgent>,
}

/// A user agent, copied inline: at most the event's whole text room.
type UserAgent = ArrayString<{ sonde::MAX_EVENT_TEXT }>;

/// `ua` cut to [`UserAgent`]'s room at a character boundary. A longer one
/// still fills the event's text, so recording counts the event as truncated.
fn user_agent_copy(ua: &str) -> UserAgent {
    let mut len = ua.len().min(sonde::MAX_EVENT_TEXT);
    while !ua.is_char_boundary(len) {
        len -= 1;
    }
    UserAgent::from(&ua[..len]).unwrap_or_default()
}

pin_project_lite::pin_project! {
    /// Completes the inner response and records the event.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` when telemetry is off, and once the event is recorded.
        pending: Option<Pending>,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(Pending { request, start, telemetry }) = this.pending.take() {
            let micros = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
            // An error from the inner service is a 500 as far as telemetry goes.
            let status = result.as_ref().map_or(500, |r| i64::from(r.status().as_u16()));
            let route = request.route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            let mut event = HTTP_REQUEST.event();
            event
                .str("method", request.method)
                .str("route", route)
                .int("status", status)
                .int("duration_us", micros);
            if let Some(ua) = &request.user_agent {
                event.str("user_agent", ua);
            }
            telemetry.record(&event);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_copy_is_cut_at_a_character_boundary() {
        assert_eq!(user_agent_copy("curl/8.5.0").as_str(), "curl/8.5.0");
        let long = format!("{}é", "a".repeat(sonde::MAX_EVENT_TEXT - 1));
        let cut = user_agent_copy(&long);
        assert_eq!(cut.len(), sonde::MAX_EVENT_TEXT - 1);
        assert!(cut.chars().all(|c| c == 'a'));
    }
}
