//! The dashboard at `/ui`: server-rendered HTML (maud templates), charts
//! as inline SVG, no JavaScript at all.
//!
//! | page | who | shows |
//! |---|---|---|
//! | `/ui?window=24h` | anyone | the fleet: instances by version, OS and arch, reports per hour; for admins, the instances |
//! | `/ui/plugins?window=24h` | anyone | each plugin: instances, states, who switched it off and why, cost percentiles |
//! | `/ui/metrics?window=24h` | anyone | fleet totals of each metric by label |
//! | `/ui/instances/{id}` | admin | an instance's latest reports, its plugins' states, the directives delivered to it |
//! | `/ui/directives` | admin | the directives in force; add a `disable_plugin`, delete one |
//! | `/ui/login` | anyone | a form taking the admin token |
//!
//! **Who is admin**: whoever the admin API lets in ([`crate::admin`]): a
//! request with `Authorization: Bearer TOKEN`, or a browser that logged in
//! at `/ui/login` (it gets an `HttpOnly`, `SameSite=Strict` cookie scoped
//! to `/ui` holding an HMAC of a fixed text keyed by the token, not the
//! token: [`AdminAccess::session`](crate::AdminAccess)), or a
//! loopback peer when no token is set and the collector listens on
//! loopback. Everyone else gets the k-anonymous figures
//! ([`crate::fleet`]): no group under k instances, no instance's page, no
//! instance id.
//!
//! **Cross-site posts**: every `POST` under `/ui` must come from a page of
//! the collector itself ([`same_origin_only`]): a browser's
//! `Sec-Fetch-Site` other than `same-origin` (or `none`, typed by the
//! user), or an `Origin` whose host is not the request's `Host`, gets 403.
//! The cookie's `SameSite=Strict` already keeps other sites from acting
//! with a logged-in admin's token; this check also covers the loopback
//! admin without a token, whom any page open in a local browser could
//! otherwise post to.
//!
//! **Escaping**: every string a host or plugin wrote (plugin names, reasons,
//! label values, versions) is written through maud's `(...)` splice, which
//! escapes `&`, `<`, `>`, `"` and `'` — the one escaping helper.
//! `PreEscaped` is used only for the page's fixed style sheet.

mod charts;
mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::CollectorState;

/// The cookie that carries the admin token of a logged-in browser.
pub(crate) const COOKIE_NAME: &str = "sonde_admin";

/// The dashboard's routes.
pub(crate) fn router() -> Router<CollectorState> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/plugins", get(pages::plugins))
        .route("/ui/metrics", get(pages::metrics))
        .route("/ui/instances/{id}", get(pages::instance))
        .route("/ui/directives", get(pages::directives).post(pages::add_directive))
        .route("/ui/directives/{id}/delete", post(pages::delete_directive))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .layer(axum::middleware::from_fn(same_origin_only))
}

/// Refuses a `POST` that a browser says came from another site (see the
/// module's "Cross-site posts"). Clients that are not browsers send
/// neither header and pass; they are judged by the admin check alone.
async fn same_origin_only(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused\n").into_response();
    }
    next.run(request).await
}

/// Whether a request's `Sec-Fetch-Site` and `Origin` (when present) say it
/// came from the collector's own pages.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match text(ORIGIN.as_str()) {
        None => true,
        Some(origin) => {
            let host = origin.split_once("://").map(|(_, rest)| rest);
            host.is_some() && host == text(HOST.as_str())
        }
    }
}

/// Who is looking: an admin, or the public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// Passed the admin check.
    Admin,
    /// Anyone else: k-anonymous figures only.
    Public,
}

impl FromRequestParts<CollectorState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CollectorState,
    ) -> Result<Viewer, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let admin = &state.inner().admin;
        let session = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            .any(|value| admin.check_session(value));
        let ok = session || admin.check(header, peer).is_ok();
        Ok(if ok { Viewer::Admin } else { Viewer::Public })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("a valid header value"));
        }
        h
    }

    #[test]
    fn only_posts_from_the_collectors_own_pages_pass() {
        let host = ("host", "127.0.0.1:8080");
        // Not a browser, or a browser on the collector's own form.
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "none")])));
        // Another site, another port, an opaque origin, a lying pair.
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://evil.example")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9999")])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])));
    }
}
