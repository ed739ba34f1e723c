//! The dashboard's pages and forms.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use sonde_core::{Directive, Report};

use super::charts::{self, fmt};
use super::{COOKIE_NAME, Viewer};
use crate::admin::{AdminAccess, NewDirective};
use crate::fleet::{Fleet, Group, MetricTotal, Percentiles, PluginFigures};
use crate::routes::{ApiError, WindowQuery, instance_id};
use crate::state::CollectorState;
use crate::store::{DirectiveSource, StoreError};

/// Reports shown on an instance's page.
const INSTANCE_REPORTS: u32 = 10;
/// Directives listed on the directives page and an instance's page.
const DIRECTIVES_SHOWN: u32 = 200;
/// Instances listed on the overview (admins only), last seen first.
const INSTANCES_SHOWN: u32 = 200;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header a.active{text-decoration:underline}
header form{margin:0 0 0 auto}main{padding:12px 16px;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#555;font-size:12px}.cards{display:flex;gap:16px}
.card{background:#fff;border:1px solid #ccc;padding:8px 16px}.card b{font-size:22px;display:block}
.cols{display:flex;gap:24px;flex-wrap:wrap}.err{color:#a00}code{background:#eee;padding:0 3px}
";

/// An error page.
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    message: String,
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> UiError {
        UiError::from(ApiError::from(e))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError { status: e.status, message: e.message }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = page(
            "Error",
            Viewer::Public,
            "",
            html! {
                h1 { "Error " (self.status.as_u16()) }
                p.err { (self.message) }
                @if self.status == StatusCode::UNAUTHORIZED {
                    p { a href="/ui/login" { "Log in with the admin token" } }
                }
            },
        );
        (self.status, body).into_response()
    }
}

fn admin_only(viewer: Viewer) -> Result<(), UiError> {
    match viewer {
        Viewer::Admin => Ok(()),
        Viewer::Public => Err(UiError {
            status: StatusCode::UNAUTHORIZED,
            message: "this page shows single instances' data: it needs the admin token".into(),
        }),
    }
}

/// The layout around every page.
fn page(title: &str, viewer: Viewer, active: &str, body: Markup) -> Markup {
    let link = |href: &'static str, name: &'static str| {
        html! { a href=(href) class=[(name == active).then_some("active")] { (name) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sonde collector" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "sonde collector" }
                    (link("/ui", "Fleet"))
                    (link("/ui/plugins", "Plugins"))
                    (link("/ui/metrics", "Metrics"))
                    @if viewer == Viewer::Admin {
                        (link("/ui/directives", "Directives"))
                        form method="post" action="/ui/logout" {
                            button type="submit" { "Log out" }
                        }
                    } @else {
                        span style="margin-left:auto" {
                            a href="/ui/login" { "Admin log in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Links to the same page over other windows.
fn windows(path: &str, fleet: &Fleet) -> Markup {
    html! {
        p.note {
            "From " (fleet.since) " to " (fleet.until) ". Window: "
            @for w in ["1h", "24h", "7d", "31d"] {
                a href={ (path) "?window=" (w) } { (w) } " "
            }
            @if let Some(k) = fleet.k {
                br;
                "Public view: every figure covers at least " (k) " instances; smaller groups are \
                 folded into “other” and counts under " (k) " show as “<" (k) "”. "
                a href="/ui/login" { "Log in" } " for the full view."
            }
            @if fleet.truncated {
                br;
                span.err { "Row limit reached: the oldest rows of the window are not counted." }
            }
        }
    }
}

/// A count, or "<k" when k-anonymity hides it.
fn count(n: Option<u64>, k: Option<u32>) -> Markup {
    html! {
        @match n {
            Some(n) => { (n) },
            None => { "<" (k.unwrap_or(0)) },
        }
    }
}

fn key(key: &str, other: bool) -> Markup {
    html! {
        @if other { em { "other" } } @else if key.is_empty() { em { "(none)" } } @else { (key) }
    }
}

async fn fleet_for(
    state: &CollectorState,
    viewer: Viewer,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Arc<Fleet>, UiError> {
    let window = WindowQuery::window(query)?;
    Ok(state.fleet(window, viewer == Viewer::Public).await?)
}

fn groups(title: &str, id: &str, groups: &[Group]) -> Markup {
    html! {
        div {
            h3 { (title) }
            table id=(id) {
                tr { th { (title) } th { "instances" } }
                @for g in groups {
                    tr { td.key { (key(&g.key, g.other)) } td.n { (g.instances) } }
                }
            }
        }
    }
}

/// `GET /ui`: the fleet.
pub(super) async fn overview(
    viewer: Viewer,
    State(state): State<CollectorState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, UiError> {
    let fleet = fleet_for(&state, viewer, query).await?;
    let instances = match viewer {
        Viewer::Admin => Some(state.store().instances(INSTANCES_SHOWN).await?),
        Viewer::Public => None,
    };
    Ok(page(
        "Fleet",
        viewer,
        "Fleet",
        html! {
            h1 { "Fleet" }
            (windows("/ui", &fleet))
            div.cards {
                div.card { b #instances { (count(fleet.instances, fleet.k)) } "instances active" }
                div.card { b #reports { (count(fleet.reports, fleet.k)) } "reports" }
                div.card { b #plugins-count { (fleet.plugins.len()) } "plugins" }
            }
            h2 { "Reports per hour" }
            (charts::reports_per_hour(&fleet.reports_per_hour))
            div.cols {
                (groups("sonde version", "by-version", &fleet.by_version))
                (groups("OS", "by-os", &fleet.by_os))
                (groups("arch", "by-arch", &fleet.by_arch))
            }
            @if let Some(list) = instances {
                h2 { "Instances" }
                table #instances-list {
                    tr { th { "instance" } th { "first seen" } th { "last seen" } th { "reports" } }
                    @for i in &list {
                        tr {
                            td { a.instance href={ "/ui/instances/" (i.instance_id) } { (i.instance_id) } }
                            td { (i.first_seen) } td { (i.last_seen) } td.n { (i.reports) }
                        }
                    }
                }
            }
        },
    ))
}

fn percentiles(p: Option<&Percentiles>, bytes: bool) -> Markup {
    let v = |x: f64| if bytes { mib(x) } else { fmt(x) };
    html! {
        @match p {
            Some(p) => {
                td.n { (v(p.p50)) } td.n { (v(p.p90)) }
                td.n { (p.p99.map(v).unwrap_or_else(|| "–".into())) }
            }
            None => { td.n { "–" } td.n { "–" } td.n { "–" } }
        }
    }
}

fn mib(bytes: f64) -> String {
    format!("{} MiB", fmt(bytes / (1024.0 * 1024.0)))
}

fn plugin_row(p: &PluginFigures, k: Option<u32>) -> Markup {
    let state = |s: &str| p.states.get(s).copied().unwrap_or(Some(0));
    html! {
        tr.plugin data-plugin=(p.plugin) {
            td.name { (key(&p.plugin, p.other)) }
            td.n.instances { (p.instances) }
            td.n.running { (count(state("running"), k)) }
            td.n.by-admin { (count(p.disabled_by.admin, k)) }
            td.n.by-rule { (count(p.disabled_by.rule, k)) }
            td.n.by-operator { (count(p.disabled_by.operator, k)) }
            td.n.by-host { (count(p.disabled_by.host, k)) }
            td.n.failed { (count(state("failed"), k)) }
            (percentiles(p.busy_us_per_event.as_ref(), false))
            (percentiles(p.peak_memory_bytes.as_ref(), true))
            (percentiles(p.failures.as_ref(), false))
        }
    }
}

/// `GET /ui/plugins`: each plugin and its cost.
pub(super) async fn plugins(
    viewer: Viewer,
    State(state): State<CollectorState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, UiError> {
    let fleet = fleet_for(&state, viewer, query).await?;
    Ok(page(
        "Plugins",
        viewer,
        "Plugins",
        html! {
            h1 { "Plugins and their cost" }
            (windows("/ui/plugins", &fleet))
            table #plugins {
                tr {
                    th rowspan="2" { "plugin" } th rowspan="2" { "instances" }
                    th rowspan="2" { "running" } th colspan="4" { "off, by" }
                    th rowspan="2" { "failed" }
                    th colspan="3" { "busy µs / event" } th colspan="3" { "peak memory" }
                    th colspan="3" { "failures" }
                }
                tr {
                    th { "admin" } th { "rule" } th { "operator" } th { "host" }
                    @for _ in 0..3 { th { "p50" } th { "p90" } th { "p99" } }
                }
                @for p in &fleet.plugins { (plugin_row(p, fleet.k)) }
            }
            h2 { "Cost distribution" }
            (charts::cost(&fleet.plugins))
            h2 { "Why plugins are off" }
            table #reasons {
                tr { th { "plugin" } th { "reason" } th { "instances" } }
                @for p in &fleet.plugins {
                    @for r in &p.reasons {
                        tr {
                            td { (key(&p.plugin, p.other)) }
                            td.reason { (key(&r.reason, r.other)) }
                            td.n { (r.instances) }
                        }
                    }
                }
            }
            p.note {
                "“off, by”: admin and rule are directives this collector delivered; operator is the \
                 host's manifest (denied); host is the host's own cost breaker or another endpoint. \
                 Percentiles take one sample per instance over the window."
            }
        },
    ))
}

fn labels(m: &MetricTotal) -> Markup {
    html! {
        @if m.other { em { "other label sets" } }
        @else if m.labels.is_empty() { em { "(no labels)" } }
        @else {
            @for (i, (k, v)) in m.labels.iter().enumerate() {
                @if i > 0 { ", " }
                code { (k) "=" (v) }
            }
        }
    }
}

/// `GET /ui/metrics`: fleet totals by label.
pub(super) async fn metrics(
    viewer: Viewer,
    State(state): State<CollectorState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, UiError> {
    let fleet = fleet_for(&state, viewer, query).await?;
    Ok(page(
        "Metrics",
        viewer,
        "Metrics",
        html! {
            h1 { "Metrics: fleet totals by label" }
            (windows("/ui/metrics", &fleet))
            table #metrics {
                tr {
                    th { "owner" } th { "metric" } th { "kind" } th { "labels" } th { "instances" }
                    th { "total" }
                }
                @for m in &fleet.metrics {
                    tr.metric {
                        td { (m.owner) } td { (m.name) } td { (m.kind) } td { (labels(m)) }
                        td.n { (m.instances) } td.n.total { (fmt(m.total)) " " (m.unit) }
                    }
                }
            }
            @if fleet.metrics_left_out > 0 {
                p.note { (fleet.metrics_left_out) " more label sets not listed." }
            }
            p.note {
                "Counters and histograms: what the fleet counted in the window; gauges: the sum of \
                 each instance's latest level."
            }
        },
    ))
}

fn directive_cells(d: &Directive) -> Markup {
    let (action, plugin, reason, for_secs) = match d {
        Directive::DisablePlugin { plugin, for_secs, reason } => {
            ("disable_plugin", Some(plugin.as_str()), reason.as_str(), Some(*for_secs))
        }
        Directive::EnablePlugin { plugin } => ("enable_plugin", Some(plugin.as_str()), "", None),
        Directive::DisableMetrics { plugin, for_secs, reason, .. } => {
            ("disable_metrics", Some(plugin.as_str()), reason.as_str(), Some(*for_secs))
        }
        Directive::EnableMetrics { plugin, .. } => {
            ("enable_metrics", Some(plugin.as_str()), "", None)
        }
        Directive::Stop { reason } => ("stop", None, reason.as_str(), None),
    };
    html! {
        td.action { (action) }
        td.plugin { (plugin.unwrap_or("")) }
        td { @if let Some(s) = for_secs { (humantime::format_duration(Duration::from_secs(s))) } }
        td.reason { (reason) }
    }
}

fn source(s: DirectiveSource) -> &'static str {
    match s {
        DirectiveSource::Admin => "admin",
        DirectiveSource::Rule => "rule",
    }
}

/// `GET /ui/instances/{id}`: one instance (admins only).
pub(super) async fn instance(
    viewer: Viewer,
    State(state): State<CollectorState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Markup, UiError> {
    admin_only(viewer)?;
    let id = instance_id(id)?;
    let Some(bodies) = state.store().reports(id, INSTANCE_REPORTS).await? else {
        return Err(UiError { status: StatusCode::NOT_FOUND, message: "no such instance".into() });
    };
    let reports: Vec<Report> =
        bodies.iter().filter_map(|b| Report::from_json(b.as_bytes()).ok()).collect();
    let delivered = state.store().deliveries(id, DIRECTIVES_SHOWN).await?;
    let title = id.to_string();
    Ok(page(
        &title,
        viewer,
        "",
        html! {
            h1 { "Instance " code #instance-id { (id) } }
            @if let Some(r) = reports.first() {
                p {
                    "sonde " (r.host.sonde_version) " on " (r.host.os) "/" (r.host.arch) ", "
                    (r.host.cpus) " CPUs; running since " (r.started.as_deref().unwrap_or("?"))
                }
                h2 { "Plugins (latest report)" }
                table #instance-plugins {
                    tr {
                        th { "plugin" } th { "version" } th { "state" } th { "reason" } th { "until" }
                        th { "events" } th { "busy µs" } th { "failures" } th { "peak memory" }
                    }
                    @for p in &r.plugins {
                        tr.plugin data-plugin=(p.name) {
                            td.name { (p.name) } td { (p.version) } td.state { (p.state.as_str()) }
                            td.reason { (p.reason.as_deref().unwrap_or("")) }
                            td { (p.until.as_deref().unwrap_or("")) }
                            td.n.events { (p.cost.events) } td.n { (p.cost.busy_us) }
                            td.n { (p.cost.failures) } td.n { (mib(p.cost.peak_memory_bytes as f64)) }
                        }
                    }
                }
            }
            h2 { "Latest reports" }
            table #instance-reports {
                tr {
                    th { "report" } th { "built" } th { "sonde" } th { "plugins" }
                    th { "events recorded" } th { "dropped" }
                }
                @for r in &reports {
                    tr.report {
                        td { code { (r.report_id) } } td { (r.timestamp) } td { (r.host.sonde_version) }
                        td.n { (r.plugins.len()) } td.n { (r.buffer.recorded) }
                        td.n { (r.buffer.dropped) }
                    }
                }
            }
            h2 { "Directives delivered" }
            table #instance-directives {
                tr {
                    th { "id" } th { "action" } th { "plugin" } th { "for" } th { "reason" }
                    th { "by" } th { "delivered" }
                }
                @for d in &delivered {
                    tr.directive {
                        td.n { (d.id) } (directive_cells(&d.directive)) td { (source(d.source)) }
                        td { (d.delivered_at) }
                    }
                }
            }
        },
    ))
}

/// `GET /ui/directives`: the directives in force (admins only).
pub(super) async fn directives(
    viewer: Viewer,
    State(state): State<CollectorState>,
) -> Result<Markup, UiError> {
    admin_only(viewer)?;
    let list = state.store().directives(DIRECTIVES_SHOWN).await?;
    Ok(page(
        "Directives",
        viewer,
        "Directives",
        html! {
            h1 { "Directives in force" }
            table #directives {
                tr {
                    th { "id" } th { "for" } th { "action" } th { "plugin" } th { "for" }
                    th { "reason" } th { "by" } th { "created" } th { "delivered to" } th {}
                }
                @for d in &list {
                    tr.directive data-id=(d.id) {
                        td.n { (d.id) }
                        td {
                            @match d.instance_id {
                                Some(i) => a href={ "/ui/instances/" (i) } { code { (i) } },
                                None => em { "every instance" },
                            }
                        }
                        (directive_cells(&d.directive))
                        td.source { (source(d.source)) } td { (d.created_at) }
                        td.n.delivered { (d.delivered) }
                        td {
                            form method="post" action={ "/ui/directives/" (d.id) "/delete" } {
                                button type="submit" { "Delete" }
                            }
                        }
                    }
                }
            }
            h2 { "Switch a plugin off" }
            form #add-directive method="post" action="/ui/directives" {
                p {
                    label { "Instance id (empty: every instance) " input name="instance_id" size="38"; }
                }
                p { label { "Plugin " input name="plugin" required; } }
                p { label { "For (seconds) " input name="for_secs" value="3600" required; } }
                p { label { "Reason " input name="reason" size="60"; } }
                p { button type="submit" { "Send disable_plugin" } }
            }
            p.note { "Hosts get a directive with their next upload; deleting one stops it from \
                      reaching the instances that have not had it yet." }
        },
    ))
}

/// The add-directive form.
#[derive(Debug, Deserialize)]
pub(super) struct AddForm {
    #[serde(default)]
    instance_id: String,
    plugin: String,
    for_secs: String,
    #[serde(default)]
    reason: String,
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

fn bad_request(message: String) -> UiError {
    UiError { status: StatusCode::BAD_REQUEST, message }
}

/// `POST /ui/directives`: adds a `disable_plugin` (admins only).
pub(super) async fn add_directive(
    viewer: Viewer,
    State(state): State<CollectorState>,
    Form(form): Form<AddForm>,
) -> Result<Response, UiError> {
    admin_only(viewer)?;
    let instance_id = match form.instance_id.trim() {
        "" => None,
        id => Some(
            uuid::Uuid::parse_str(id)
                .map_err(|_| bad_request(format!("`{id}` is not an instance id")))?,
        ),
    };
    let for_secs = form
        .for_secs
        .trim()
        .parse()
        .map_err(|_| bad_request(format!("`{}` is not a number of seconds", form.for_secs)))?;
    let new = NewDirective {
        instance_id,
        directive: Directive::DisablePlugin {
            plugin: form.plugin.trim().to_string(),
            for_secs,
            reason: form.reason,
        },
    };
    new.check().map_err(|e| bad_request(format!("invalid directive: {e}")))?;
    let id = state
        .store()
        .add_directive(new.instance_id, new.directive, DirectiveSource::Admin, SystemTime::now())
        .await?;
    tracing::info!(id, "directive added from the dashboard");
    Ok(see_other("/ui/directives"))
}

/// `POST /ui/directives/{id}/delete` (admins only).
pub(super) async fn delete_directive(
    viewer: Viewer,
    State(state): State<CollectorState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, UiError> {
    admin_only(viewer)?;
    let Path(id) = id.map_err(|e| bad_request(e.body_text()))?;
    if !state.store().delete_directive(id).await? {
        return Err(UiError { status: StatusCode::NOT_FOUND, message: "no such directive".into() });
    }
    tracing::info!(id, "directive deleted from the dashboard");
    Ok(see_other("/ui/directives"))
}

fn login_page(viewer: Viewer, error: Option<&str>, access: &AdminAccess) -> Markup {
    page(
        "Log in",
        viewer,
        "",
        html! {
            h1 { "Admin log in" }
            @if let Some(e) = error { p.err { (e) } }
            @match access {
                AdminAccess::Token(_) => {
                    form #login method="post" action="/ui/login" {
                        p { label { "Admin token " input type="password" name="token" required; } }
                        p { button type="submit" { "Log in" } }
                    }
                    p.note { "This browser then gets a session cookie for /ui only (HttpOnly, SameSite=Strict) that is not the token; changing the token ends every session." }
                }
                AdminAccess::Loopback => p { "No admin token is set: loopback visitors are admins." },
                AdminAccess::Closed => p { "No admin token is set: the admin view is closed." },
            }
        },
    )
}

/// `GET /ui/login`.
pub(super) async fn login_form(viewer: Viewer, State(state): State<CollectorState>) -> Markup {
    login_page(viewer, None, &state.inner().admin)
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// `POST /ui/login`: checks the token and keeps it in a cookie.
pub(super) async fn login(
    State(state): State<CollectorState>,
    Form(form): Form<LoginForm>,
) -> Response {
    let access = &state.inner().admin;
    let header = format!("Bearer {}", form.token);
    if !matches!(access, AdminAccess::Token(_)) || access.check(Some(&header), None).is_err() {
        let body = login_page(Viewer::Public, Some("Wrong token."), access);
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    // The session value, not the token (see `AdminAccess::session`).
    let session = access.session().unwrap_or_default();
    let cookie = format!("{COOKIE_NAME}={session}; Path=/ui; HttpOnly; SameSite=Strict");
    let mut response = see_other("/ui");
    if let Ok(v) = cookie.parse() {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// `POST /ui/logout`: forgets the cookie.
pub(super) async fn logout() -> Response {
    let mut response = see_other("/ui");
    let cookie = format!("{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = cookie.parse() {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use crate::AdminAccess;

    #[test]
    fn the_session_cookie_is_not_the_token_and_ends_with_it() {
        let listen = "127.0.0.1:0".parse().expect("an address");
        let token = "a;b,c\"d=e0123456789";
        let access = AdminAccess::new(Some(token.into()), listen).expect("a valid token");
        let session = access.session().expect("a token is set");
        assert_eq!(session.len(), 64);
        assert!(session.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
        assert!(!session.contains(token) && !session.contains("0123456789"));
        assert!(access.check_session(&session));
        assert!(!access.check_session(&session[..63]));
        assert!(!access.check_session(&format!("Bearer {token}")));
        // Another token (a rotated one): the old cookie no longer opens.
        let rotated = AdminAccess::new(Some("another-token-0123456789".into()), listen)
            .expect("a valid token");
        assert!(!rotated.check_session(&session));
        // Without a token there are no sessions at all.
        let loopback = AdminAccess::new(None, listen).expect("loopback");
        assert_eq!(loopback.session(), None);
        assert!(!loopback.check_session(""));
    }
}
