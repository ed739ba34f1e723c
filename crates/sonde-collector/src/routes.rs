//! The HTTP API: one handler per route, errors as `{"error": "..."}`.
//!
//! Handlers do no decompression on the async workers (it runs on the
//! blocking pool), and the store does its SQLite work there too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use sonde_core::EndpointResponse;
use uuid::Uuid;

use crate::admin::{AdminDenied, NewDirective};
use crate::fleet::{DEFAULT_WINDOW, MAX_WINDOW};
use crate::limit::Throttled;
use crate::state::CollectorState;
use crate::store::{DirectiveSource, StoreError};
use crate::upload::{self, Encoding, MAX_BODY_BYTES, UploadError};

/// Largest body of any other request (a posted directive is well under
/// a kilobyte; its longest form, 64 metric names, is about 17 KiB).
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;
/// Reports listed per request when `limit` is not given.
pub const DEFAULT_REPORTS_LIMIT: u32 = 10;
/// Instances or directives listed per request when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most items one list request returns: a thousand reports is a few MiB.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// The collector's routes, with `state`.
pub fn router(state: CollectorState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/reports", post(post_reports).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .route("/v1/directives", post(post_directive).get(list_directives))
        .route("/v1/directives/{id}", delete(delete_directive))
        .route("/v1/instances", get(list_instances))
        .route("/v1/instances/{id}/reports", get(list_reports))
        .route("/v1/instances/{id}/directives", get(list_deliveries))
        .route("/v1/fleet", get(fleet))
        .route("/v1/fleet/public", get(public_fleet))
        .route("/metrics", get(metrics))
        .merge(crate::ui::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
        .with_state(state)
}

/// An error response: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// One extra header (`Retry-After`, `WWW-Authenticate`).
    header: Option<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), header: None }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("request failed: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("blocking task failed: {e}"))
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        let status = match e {
            UploadError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::TooLarge | UploadError::TooManyReports(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Gzip(_)
            | UploadError::Json(_)
            | UploadError::NotUtf8
            | UploadError::Invalid(_)
            | UploadError::Empty
            | UploadError::MixedInstances
            | UploadError::Schema(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<Throttled> for ApiError {
    fn from(e: Throttled) -> ApiError {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string());
        err.header = Some((RETRY_AFTER, HeaderValue::from(e.retry_after().as_secs())));
        err
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is over the collector's size limit",
            ),
            status => ApiError::new(status, r.body_text()),
        }
    }
}

/// Proof that a request passed the admin check (see [`crate::admin`]).
pub(crate) struct Admin;

impl FromRequestParts<CollectorState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CollectorState,
    ) -> Result<Admin, ApiError> {
        let authorization = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        match state.inner().admin.check(authorization, peer) {
            Ok(()) => Ok(Admin),
            Err(denied @ AdminDenied::Unauthorized) => {
                let mut err = ApiError::new(StatusCode::UNAUTHORIZED, denied.to_string());
                err.header = Some((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
                Err(err)
            }
            Err(denied) => Err(ApiError::new(StatusCode::FORBIDDEN, denied.to_string())),
        }
    }
}

async fn post_reports(
    State(state): State<CollectorState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let stats = Arc::clone(state.stats());
    let answer = upload(state, headers, body).await;
    match &answer {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => stats.throttled(),
        Err(e) if e.status.is_server_error() => stats.failed(),
        Err(_) => stats.refused(),
    }
    answer
}

async fn upload(
    state: CollectorState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let body = body?;
    let encoding = match headers.get(CONTENT_ENCODING) {
        None => Encoding::Plain,
        Some(v) => Encoding::from_header(Some(v.to_str().unwrap_or("<not text>")))?,
    };
    let reports = {
        let _slot = state.decode_slot().await;
        tokio::task::spawn_blocking(move || upload::decode(&body, encoding)).await??
    };
    let Some(instance) = reports.first().map(|r| r.report.instance_id) else {
        return Err(UploadError::Empty.into());
    };
    if let Err(throttled) = state.inner().limiter.admit(instance).await? {
        tracing::debug!(%instance, "upload throttled");
        return Err(throttled.into());
    }
    let count = reports.len();
    let policy = Arc::clone(&state.inner().policy);
    let ingested = state.store().ingest(reports, policy, SystemTime::now()).await?;
    state.stats().ingested(&ingested);
    tracing::debug!(
        %instance,
        count,
        accepted = ingested.accepted,
        directives = ingested.directives.len(),
        "upload stored"
    );
    Ok(Json(EndpointResponse {
        accepted: Some(ingested.accepted),
        next_update_secs: state.policy().next_update.map(|d| d.as_secs()),
        directives: ingested.directives,
    }))
}

async fn post_directive(
    _: Admin,
    State(state): State<CollectorState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let new: NewDirective = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid directive: {e}")))?;
    new.check()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid directive: {e}")))?;
    let id = state
        .store()
        .add_directive(new.instance_id, new.directive, DirectiveSource::Admin, SystemTime::now())
        .await?;
    tracing::info!(id, "directive added");
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

async fn delete_directive(
    _: Admin,
    State(state): State<CollectorState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let deleted = state.store().delete_directive(id).await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "no such directive"))
    }
}

/// `?limit=N` of the list routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(
        query: Result<Query<ListQuery>, QueryRejection>,
        default: u32,
    ) -> Result<u32, ApiError> {
        let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok(q.limit.unwrap_or(default).min(MAX_LIST_LIMIT))
    }
}

async fn list_directives(
    _: Admin,
    State(state): State<CollectorState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = ListQuery::limit(query, DEFAULT_LIST_LIMIT)?;
    let list = state.store().directives(limit).await?;
    Ok(Json(list).into_response())
}

async fn list_instances(
    _: Admin,
    State(state): State<CollectorState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = ListQuery::limit(query, DEFAULT_LIST_LIMIT)?;
    let list = state.store().instances(limit).await?;
    Ok(Json(list).into_response())
}

/// The instance id of a `/v1/instances/{id}/...` path.
pub(crate) fn instance_id(id: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Uuid::parse_str(&id).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("`{id}` is not an instance id"))
    })
}

async fn list_reports(
    _: Admin,
    State(state): State<CollectorState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let instance = instance_id(id)?;
    let limit = ListQuery::limit(query, DEFAULT_REPORTS_LIMIT)?;
    let Some(reports) = state.store().reports(instance, limit).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such instance"));
    };
    // Each stored body is a Report's JSON already: join them as they are.
    let mut body = String::with_capacity(reports.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push('[');
    body.push_str(&reports.join(","));
    body.push(']');
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

async fn list_deliveries(
    _: Admin,
    State(state): State<CollectorState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let instance = instance_id(id)?;
    let limit = ListQuery::limit(query, DEFAULT_LIST_LIMIT)?;
    Ok(Json(state.store().deliveries(instance, limit).await?).into_response())
}

/// `?window=24h` of the fleet routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowQuery {
    window: Option<String>,
}

impl WindowQuery {
    /// The window asked for ([`DEFAULT_WINDOW`] when not given), refused
    /// past [`MAX_WINDOW`].
    pub(crate) fn window(
        query: Result<Query<WindowQuery>, QueryRejection>,
    ) -> Result<Duration, ApiError> {
        let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let Some(text) = q.window else { return Ok(DEFAULT_WINDOW) };
        let window = humantime::parse_duration(&text)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("window `{text}`: {e}")))?;
        if window.is_zero() || window > MAX_WINDOW {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "window `{text}`: must be between 1s and {}",
                    humantime::format_duration(MAX_WINDOW)
                ),
            ));
        }
        Ok(window)
    }
}

async fn fleet(
    _: Admin,
    State(state): State<CollectorState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let window = WindowQuery::window(query)?;
    Ok(Json(&*state.fleet(window, false).await?).into_response())
}

async fn public_fleet(
    State(state): State<CollectorState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let window = WindowQuery::window(query)?;
    Ok(Json(&*state.fleet(window, true).await?).into_response())
}

/// The collector's own counters, in the Prometheus text format.
async fn metrics(_: Admin, State(state): State<CollectorState>) -> Response {
    let text = state.stats().render(state.store().kind());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
