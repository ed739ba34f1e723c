//! One upload, in one transaction, the same on every backend: lock the
//! instance, store the new reports and their rows, run the cost rules on
//! them, and pick the directives that go back.
//!
//! The algorithm is written once, over [`IngestTx`]: the few statements a
//! backend runs inside its transaction. The transaction starts by locking
//! the instance's row, so uploads of one instance are handled one after
//! the other whichever replica takes them; that is what makes a cost rule
//! fire once and a directive go out once.
//!
//! Delivery is at most once per (directive, instance), with one exception
//! that keeps it from being "at most zero": a retried upload (same first
//! `report_id`) gets back the directives its lost response carried, since a
//! host only retries when it did not get the answer.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sonde_core::limits::{MAX_PLUGIN_NAME_LEN, MAX_PLUGINS};
use sonde_core::{Directive, MAX_DIRECTIVES, MAX_RESPONSE_BYTES};
use uuid::Uuid;

use super::rows::{MetricRow, PluginRow, Previous, ReportRow, Snapshot, rows};
use super::{DirectiveSource, StoreError, directive};
use crate::config::Policy;
use crate::policy::{IssuedDisable, Step, step};
use crate::upload::Received;

/// Room kept in a response for everything but the directives
/// (`{"accepted":..,"next_update_secs":..,"directives":[]}`), so the whole
/// body stays within the host's [`MAX_RESPONSE_BYTES`].
const RESPONSE_ENVELOPE_BYTES: usize = 128;

/// What an upload left in the store, and the answer to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// Reports newly stored (duplicates excluded).
    pub accepted: u32,
    /// Reports that were stored already (`report_id` seen before).
    pub duplicates: u32,
    /// Directives for the uploading instance, oldest first: at most
    /// [`MAX_DIRECTIVES`] and [`MAX_RESPONSE_BYTES`] of them; the rest wait
    /// for the next upload.
    pub directives: Vec<Directive>,
    /// Of those, directives this upload is the first to receive (not
    /// resent to a retry).
    pub delivered: u32,
    /// `disable_plugin` directives the cost rules issued.
    pub issued: u32,
}

/// A change to what the cost rules remember of one (instance, plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleUpdate {
    /// A `disable_plugin` (directive `id`) went out.
    Issued { directive: i64, issued: IssuedDisable },
    /// The host applied it.
    SeenDisabled,
    /// Forget it.
    Clear,
}

/// The statements of an ingest transaction. Each backend runs them in one
/// transaction of its own; [`run`] is the algorithm.
pub(crate) trait IngestTx {
    /// Creates the instance's row if it has none and locks it until the
    /// transaction ends; returns the row id of its latest stored report.
    async fn lock_instance(
        &mut self,
        instance: Uuid,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError>;
    /// The cumulative values of stored report `id`; `None` if it is gone.
    async fn snapshot(&mut self, id: i64) -> Result<Option<Snapshot>, StoreError>;
    /// Inserts a report unless its `report_id` is stored; its row id if new.
    async fn insert_report(
        &mut self,
        row: &ReportRow<'_>,
        now: SystemTime,
    ) -> Result<Option<i64>, StoreError>;
    /// Inserts the rows of the new reports.
    async fn insert_rows(
        &mut self,
        instance: Uuid,
        now: SystemTime,
        plugins: &[PluginRow],
        metrics: &[MetricRow],
    ) -> Result<(), StoreError>;
    /// Notes `accepted` new reports, the latest being row `last`.
    async fn update_instance(
        &mut self,
        instance: Uuid,
        last: i64,
        accepted: u32,
        now: SystemTime,
    ) -> Result<(), StoreError>;
    /// What the cost rules remember of the instance's plugins.
    async fn rule_issues(
        &mut self,
        instance: Uuid,
    ) -> Result<HashMap<String, IssuedDisable>, StoreError>;
    /// Changes it for one plugin.
    async fn update_rule(
        &mut self,
        instance: Uuid,
        plugin: &str,
        update: RuleUpdate,
    ) -> Result<(), StoreError>;
    /// Stores a directive; its id.
    async fn insert_directive(
        &mut self,
        instance: Option<Uuid>,
        directive: &Directive,
        source: DirectiveSource,
        now: SystemTime,
    ) -> Result<i64, StoreError>;
    /// (id, JSON) of the directives delivered in answer to the upload whose
    /// first report is `report_id`, oldest first, at most `limit`.
    async fn delivered_to(
        &mut self,
        instance: Uuid,
        report_id: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// (id, JSON) of the directives for `instance` not delivered to it yet,
    /// oldest first, at most `limit`.
    async fn pending(
        &mut self,
        instance: Uuid,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// Records directive `id` as delivered to `instance` in answer to
    /// `report_id`; false if it already was (then it is not sent).
    async fn mark_delivered(
        &mut self,
        id: i64,
        instance: Uuid,
        report_id: Uuid,
        now: SystemTime,
    ) -> Result<bool, StoreError>;
}

/// Stores `reports` (all of one instance, at least one) in `tx`, applies
/// `policy`'s rules to the new ones, and returns the directives that
/// answer them, recorded as delivered. The caller commits.
pub(crate) async fn run<T: IngestTx>(
    tx: &mut T,
    reports: &[Received],
    policy: &Policy,
    now: SystemTime,
) -> Result<Ingested, StoreError> {
    let mut out =
        Ingested { accepted: 0, duplicates: 0, directives: vec![], delivered: 0, issued: 0 };
    let Some(first) = reports.first() else {
        return Ok(out);
    };
    let instance = first.report.instance_id;
    let mut last = tx.lock_instance(instance, now).await?;
    let mut prev = match last {
        None => Previous::None,
        Some(id) => tx.snapshot(id).await?.map_or(Previous::Gone, Previous::Report),
    };
    let mut plugins = Vec::new();
    let mut metrics = Vec::new();
    let mut judged = Vec::new();
    for r in reports {
        let row = ReportRow { report: &r.report, body: &r.json };
        let Some(id) = tx.insert_report(&row, now).await? else {
            out.duplicates += 1;
            continue;
        };
        out.accepted += 1;
        last = Some(id);
        let (p, m, next) = rows(id, &row, &prev);
        // A host lists at most MAX_PLUGINS plugins with valid names;
        // anything past that is not from a host and is not judged.
        for (plugin, row) in r.report.plugins.iter().zip(&p).take(MAX_PLUGINS) {
            if plugin.name.len() <= MAX_PLUGIN_NAME_LEN
                && !plugin.name.contains('\0')
                && let Some(interval) = row.interval
            {
                judged.push((plugin.name.clone(), plugin.state, interval.as_plugin_cost()));
            }
        }
        plugins.extend(p);
        metrics.extend(m);
        prev = Previous::Report(next);
    }
    if let (Some(last), true) = (last, out.accepted > 0) {
        tx.insert_rows(instance, now, &plugins, &metrics).await?;
        tx.update_instance(instance, last, out.accepted, now).await?;
    }
    if !judged.is_empty() && !policy.rules.is_empty() {
        out.issued = apply_rules(tx, policy, instance, &judged, now).await?;
    }
    let (directives, delivered) = deliver(tx, instance, first.report.report_id, now).await?;
    out.directives = directives;
    out.delivered = delivered;
    Ok(out)
}

/// Runs the cost rules over each judged (plugin, state, interval cost), in
/// report order; returns how many directives they issued.
async fn apply_rules<T: IngestTx>(
    tx: &mut T,
    policy: &Policy,
    instance: Uuid,
    judged: &[(String, sonde_core::PluginState, sonde_core::PluginCost)],
    now: SystemTime,
) -> Result<u32, StoreError> {
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut issues = tx.rule_issues(instance).await?;
    let mut issued = 0;
    for (plugin, state, cost) in judged {
        let update = match step(policy, issues.get(plugin), plugin, *state, cost, now_secs) {
            Step::Nothing => continue,
            Step::Issue(directive) => {
                let for_secs = match &directive {
                    Directive::DisablePlugin { for_secs, .. } => *for_secs,
                    _ => 0,
                };
                let id = tx
                    .insert_directive(Some(instance), &directive, DirectiveSource::Rule, now)
                    .await?;
                tracing::info!(%instance, plugin, "cost rule issued disable_plugin");
                issued += 1;
                let record = IssuedDisable { issued_at: now_secs, for_secs, seen_disabled: false };
                issues.insert(plugin.clone(), record);
                RuleUpdate::Issued { directive: id, issued: record }
            }
            Step::SeenDisabled => {
                if let Some(i) = issues.get_mut(plugin) {
                    i.seen_disabled = true;
                }
                RuleUpdate::SeenDisabled
            }
            Step::Clear => {
                issues.remove(plugin);
                RuleUpdate::Clear
            }
        };
        tx.update_rule(instance, plugin, update).await?;
    }
    Ok(issued)
}

/// The directives for `instance` in answer to the upload whose first report
/// is `report_id`: those already sent in answer to it (a retry), then those
/// not yet sent, within the response's bounds; and how many are new. The new
/// ones are recorded as delivered.
async fn deliver<T: IngestTx>(
    tx: &mut T,
    instance: Uuid,
    report_id: Uuid,
    now: SystemTime,
) -> Result<(Vec<Directive>, u32), StoreError> {
    let resent = tx.delivered_to(instance, report_id, MAX_DIRECTIVES).await?;
    let pending = tx.pending(instance, MAX_DIRECTIVES).await?;
    let mut budget = MAX_RESPONSE_BYTES - RESPONSE_ENVELOPE_BYTES;
    let mut out = Vec::new();
    let mut delivered = 0;
    for (is_new, (id, body)) in
        resent.into_iter().map(|d| (false, d)).chain(pending.into_iter().map(|d| (true, d)))
    {
        // The body is the directive's compact JSON, as it will be sent.
        let cost = body.len() + 1;
        if out.len() == MAX_DIRECTIVES || cost > budget {
            break;
        }
        if is_new && !tx.mark_delivered(id, instance, report_id, now).await? {
            continue;
        }
        budget -= cost;
        delivered += u32::from(is_new);
        out.push(directive(&body)?);
    }
    Ok((out, delivered))
}
