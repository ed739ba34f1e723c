//! What the read and admin API list: instances, their reports, directives.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

use super::{DirectiveSource, Store, StoreError, directive, rfc3339, uuid};

/// One host instance the collector has heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSummary {
    /// Its `instance_id`.
    pub instance_id: Uuid,
    /// When its first report was stored, RFC 3339.
    pub first_seen: String,
    /// When its latest report was stored, RFC 3339.
    pub last_seen: String,
    /// Reports stored (duplicates excluded).
    pub reports: u64,
}

/// A directive as stored, for `GET /v1/directives`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDirective {
    /// Its id.
    pub id: i64,
    /// The instance it is for; `None` for every instance.
    pub instance_id: Option<Uuid>,
    /// The directive, as sent.
    pub directive: Directive,
    /// Who made it.
    pub source: DirectiveSource,
    /// When, RFC 3339.
    pub created_at: String,
    /// Instances it has been delivered to.
    pub delivered: u64,
}

impl Store {
    /// Up to `limit` instances, most recently seen first.
    pub fn instances(&self, limit: u32) -> Result<Vec<InstanceSummary>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT instance_id, first_seen, last_seen, reports FROM instances
             ORDER BY last_report DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (id, first, last, reports) = row?;
            Ok(InstanceSummary {
                instance_id: uuid(&id)?,
                first_seen: rfc3339(first),
                last_seen: rfc3339(last),
                reports: reports.max(0) as u64,
            })
        })
        .collect()
    }

    /// Up to `limit` stored reports of `instance` as their JSON, newest
    /// (last received) first; `None` if the instance never reported.
    pub fn reports(&self, instance: Uuid, limit: u32) -> Result<Option<Vec<String>>, StoreError> {
        let conn = self.conn.lock();
        let id = instance.to_string();
        let known = conn
            .query_row("SELECT 1 FROM instances WHERE instance_id = ?1", [&id], |_| Ok(()))
            .optional()?;
        if known.is_none() {
            return Ok(None);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM reports WHERE instance_id = ?1
             ORDER BY received_at DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![id, limit], |row| row.get::<_, String>(0))?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }

    /// Up to `limit` directives, newest first, with their delivery counts.
    pub fn directives(&self, limit: u32) -> Result<Vec<StoredDirective>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.instance_id, d.body, d.source, d.created_at,
                    (SELECT COUNT(*) FROM deliveries v WHERE v.directive_id = d.id)
             FROM directives d ORDER BY d.id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, instance, body, source, created, delivered) = row?;
            Ok(StoredDirective {
                id,
                instance_id: instance.as_deref().map(uuid).transpose()?,
                directive: directive(&body)?,
                source: match source.as_str() {
                    "rule" => DirectiveSource::Rule,
                    _ => DirectiveSource::Admin,
                },
                created_at: rfc3339(created),
                delivered: delivered.max(0) as u64,
            })
        })
        .collect()
    }
}
