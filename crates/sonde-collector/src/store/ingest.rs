//! One upload, in one transaction: store the new reports, run the cost
//! rules on them, and pick the directives that go back.
//!
//! Delivery is at most once per (directive, instance), with one exception
//! that keeps it from being "at most zero": a retried upload (same first
//! `report_id`) gets back the directives its lost response carried, since a
//! host only retries when it did not get the answer.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, Transaction, params};
use sonde_core::limits::{MAX_PLUGIN_NAME_LEN, MAX_PLUGINS};
use sonde_core::{Directive, MAX_DIRECTIVES, MAX_RESPONSE_BYTES, PluginReport, Report};
use uuid::Uuid;

use super::{DirectiveSource, Store, StoreError, directive, insert_directive, millis};
use crate::config::Policy;
use crate::policy::{IssuedDisable, Step, step};

/// Room kept in a response for everything but the directives
/// (`{"accepted":..,"next_update_secs":..,"directives":[]}`), so the whole
/// body stays within the host's [`MAX_RESPONSE_BYTES`].
const RESPONSE_ENVELOPE_BYTES: usize = 128;

/// What an upload left in the store, and the answer to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// Reports newly stored (duplicates excluded).
    pub accepted: u32,
    /// Directives for the uploading instance, oldest first: at most
    /// [`MAX_DIRECTIVES`] and [`MAX_RESPONSE_BYTES`] of them; the rest wait
    /// for the next upload.
    pub directives: Vec<Directive>,
}

impl Store {
    /// Stores `reports` (all of one instance, at least one), applies
    /// `policy`'s rules to the new ones, and returns the directives that
    /// answer them, recorded as delivered.
    pub fn ingest(
        &self,
        reports: &[Report],
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Ingested, StoreError> {
        let Some(first) = reports.first() else {
            return Ok(Ingested { accepted: 0, directives: Vec::new() });
        };
        let instance_id = first.instance_id;
        let instance = instance_id.to_string();
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut accepted = 0u32;
        for report in reports {
            if !insert_report(&tx, &instance, report, now)? {
                continue;
            }
            accepted += 1;
            // A host lists at most MAX_PLUGINS plugins with valid names;
            // anything past that is not from a host and is not judged.
            for plugin in report.plugins.iter().take(MAX_PLUGINS) {
                if plugin.name.len() <= MAX_PLUGIN_NAME_LEN {
                    apply_rules(&tx, policy, instance_id, plugin, now)?;
                }
            }
        }
        let directives = deliver(&tx, &instance, &first.report_id.to_string(), now)?;
        tx.commit()?;
        Ok(Ingested { accepted, directives })
    }
}

/// Inserts `report` unless its id is stored already; true if it was new.
fn insert_report(
    tx: &Transaction<'_>,
    instance: &str,
    report: &Report,
    now: SystemTime,
) -> Result<bool, StoreError> {
    let body = String::from_utf8(report.to_json())
        .map_err(|e| StoreError::Corrupt(format!("report JSON: {e}")))?;
    let now = millis(now);
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO reports (report_id, instance_id, timestamp, received_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![report.report_id.to_string(), instance, report.timestamp, now, body],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let row = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO instances (instance_id, first_seen, last_seen, last_report, reports)
         VALUES (?1, ?2, ?2, ?3, 1)
         ON CONFLICT (instance_id)
         DO UPDATE SET last_seen = ?2, last_report = ?3, reports = reports + 1",
        params![instance, now, row],
    )?;
    Ok(true)
}

fn apply_rules(
    tx: &Transaction<'_>,
    policy: &Policy,
    instance_id: Uuid,
    plugin: &PluginReport,
    now: SystemTime,
) -> Result<(), StoreError> {
    let instance = instance_id.to_string();
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let issued = tx
        .query_row(
            "SELECT issued_at, for_secs, seen_disabled FROM rule_issues
             WHERE instance_id = ?1 AND plugin = ?2",
            params![instance, plugin.name],
            |row| {
                Ok(IssuedDisable {
                    issued_at: row.get::<_, i64>(0)?.max(0) as u64,
                    for_secs: row.get::<_, i64>(1)?.max(0) as u64,
                    seen_disabled: row.get(2)?,
                })
            },
        )
        .optional()?;
    match step(policy, issued.as_ref(), plugin, now_secs) {
        Step::Nothing => {}
        Step::Issue(directive) => {
            let for_secs = match &directive {
                Directive::DisablePlugin { for_secs, .. } => *for_secs,
                _ => 0,
            };
            let id =
                insert_directive(tx, Some(instance_id), &directive, DirectiveSource::Rule, now)?;
            tracing::info!(%instance_id, plugin = plugin.name, "cost rule issued disable_plugin");
            tx.execute(
                "INSERT OR REPLACE INTO rule_issues
                 (instance_id, plugin, directive_id, issued_at, for_secs, seen_disabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![
                    instance,
                    plugin.name,
                    id,
                    i64::try_from(now_secs).unwrap_or(i64::MAX),
                    i64::try_from(for_secs).unwrap_or(i64::MAX)
                ],
            )?;
        }
        Step::SeenDisabled => {
            tx.execute(
                "UPDATE rule_issues SET seen_disabled = 1 WHERE instance_id = ?1 AND plugin = ?2",
                params![instance, plugin.name],
            )?;
        }
        Step::Clear => {
            tx.execute(
                "DELETE FROM rule_issues WHERE instance_id = ?1 AND plugin = ?2",
                params![instance, plugin.name],
            )?;
        }
    }
    Ok(())
}

/// The directives for `instance` in answer to the upload whose first report
/// is `report_id`: those already sent in answer to it (a retry), then those
/// not yet sent, within the response's bounds. The new ones are recorded as
/// delivered.
fn deliver(
    tx: &Transaction<'_>,
    instance: &str,
    report_id: &str,
    now: SystemTime,
) -> Result<Vec<Directive>, StoreError> {
    let resent = select(
        tx,
        "SELECT d.id, d.body FROM deliveries v JOIN directives d ON d.id = v.directive_id
         WHERE v.instance_id = ?1 AND v.report_id = ?2 ORDER BY d.id LIMIT ?3",
        params![instance, report_id, MAX_DIRECTIVES as i64],
    )?;
    let pending = select(
        tx,
        "SELECT d.id, d.body FROM directives d
         WHERE (d.instance_id IS NULL OR d.instance_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM deliveries v
                           WHERE v.directive_id = d.id AND v.instance_id = ?1)
         ORDER BY d.id LIMIT ?2",
        params![instance, MAX_DIRECTIVES as i64],
    )?;
    let mut budget = MAX_RESPONSE_BYTES - RESPONSE_ENVELOPE_BYTES;
    let mut out = Vec::new();
    for (is_new, (id, body)) in
        resent.into_iter().map(|d| (false, d)).chain(pending.into_iter().map(|d| (true, d)))
    {
        // The body is the directive's compact JSON, as it will be sent.
        let cost = body.len() + 1;
        if out.len() == MAX_DIRECTIVES || cost > budget {
            break;
        }
        budget -= cost;
        out.push(directive(&body)?);
        if is_new {
            tx.execute(
                "INSERT INTO deliveries (directive_id, instance_id, report_id, delivered_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, instance, report_id, millis(now)],
            )?;
        }
    }
    Ok(out)
}

fn select(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use sonde_core::{BufferStats, MAX_DIRECTIVE_METRICS};

    use super::*;

    fn report(instance: Uuid) -> Report {
        Report::new(instance, BufferStats { capacity: 16, ..BufferStats::default() }, vec![])
    }

    fn ingest(store: &Store, reports: &[Report]) -> Ingested {
        store.ingest(reports, &Policy::default(), SystemTime::now()).expect("ingest")
    }

    #[test]
    fn a_report_repeated_inside_one_batch_is_stored_once() {
        let store = Store::open_in_memory().expect("store");
        let r = report(Uuid::new_v4());
        assert_eq!(ingest(&store, &[r.clone(), r.clone()]).accepted, 1);
        assert_eq!(store.reports(r.instance_id, 10).expect("read").map(|v| v.len()), Some(1));
    }

    #[test]
    fn directives_past_the_host_s_count_limit_wait_for_the_next_upload() {
        let store = Store::open_in_memory().expect("store");
        let instance = Uuid::new_v4();
        for i in 0..MAX_DIRECTIVES + 3 {
            let d = Directive::Stop { reason: format!("{i}") };
            store
                .add_directive(Some(instance), &d, DirectiveSource::Admin, SystemTime::now())
                .expect("add");
        }
        assert_eq!(ingest(&store, &[report(instance)]).directives.len(), MAX_DIRECTIVES);
        let rest = ingest(&store, &[report(instance)]).directives;
        assert_eq!(
            rest,
            (MAX_DIRECTIVES..MAX_DIRECTIVES + 3)
                .map(|i| Directive::Stop { reason: format!("{i}") })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn directives_past_the_host_s_byte_limit_wait_for_the_next_upload() {
        let store = Store::open_in_memory().expect("store");
        let instance = Uuid::new_v4();
        // Each is about 16 KiB of JSON: four fill a 64 KiB response.
        let big = Directive::DisableMetrics {
            plugin: "p".into(),
            metrics: vec!["m".repeat(250); MAX_DIRECTIVE_METRICS],
            for_secs: 3600,
            reason: String::new(),
        };
        for _ in 0..6 {
            store
                .add_directive(None, &big, DirectiveSource::Admin, SystemTime::now())
                .expect("add");
        }
        let first = ingest(&store, &[report(instance)]).directives;
        let body = serde_json::to_vec(&sonde_core::EndpointResponse {
            accepted: Some(u32::MAX),
            next_update_secs: Some(u64::MAX),
            directives: first.clone(),
        })
        .expect("encode");
        assert!(body.len() <= MAX_RESPONSE_BYTES, "{}", body.len());
        assert!((1..6).contains(&first.len()), "{}", first.len());
        let second = ingest(&store, &[report(instance)]).directives;
        assert_eq!(first.len() + second.len(), 6);
    }
}
