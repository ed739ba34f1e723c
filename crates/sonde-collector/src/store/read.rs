//! What the read and admin API list: instances and directives.

use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

use super::DirectiveSource;

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
