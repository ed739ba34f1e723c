//! The admin side: who may use it, and what a directive posted to it must
//! look like.
//!
//! Admin routes are `POST`/`GET /v1/directives`, `DELETE
//! /v1/directives/{id}` and the read API (`/v1/instances...`, which shows
//! every host's reports). Access, security first:
//!
//! - with `--admin-token TOKEN`: every admin request must carry
//!   `Authorization: Bearer TOKEN` (compared in constant time);
//! - without a token, when listening on a loopback address: admin requests
//!   are allowed from loopback peers only. Behind a reverse proxy on the same
//!   machine every peer looks local: set a token there.
//! - without a token, listening on any other address: the admin API is closed.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use sonde_core::limits::MAX_PLUGIN_NAME_LEN;
use sonde_core::{
    Directive, MAX_DIRECTIVE_METRICS, MAX_DIRECTIVE_TEXT, MAX_DISABLE_SECS, MIN_DISABLE_SECS,
};
use uuid::Uuid;

/// Shortest admin token accepted: 16 characters, so it cannot be guessed
/// over the network before someone notices.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Longest admin token accepted; it travels in a header.
pub const MAX_ADMIN_TOKEN_LEN: usize = 256;

/// Who may use the admin API.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminAccess {
    /// Requests must carry `Authorization: Bearer <token>`.
    Token(String),
    /// No token; only loopback peers (the collector listens on loopback).
    Loopback,
    /// No token and not on loopback: nobody.
    Closed,
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAccess::Token(_) => f.write_str("Token(<redacted>)"),
            AdminAccess::Loopback => f.write_str("Loopback"),
            AdminAccess::Closed => f.write_str("Closed"),
        }
    }
}

/// An admin token that is too short, too long, or not plain ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the admin token must be {MIN_ADMIN_TOKEN_LEN} to {MAX_ADMIN_TOKEN_LEN} visible ASCII characters"
)]
pub struct BadToken;

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminDenied {
    /// A token is required and the request has none, or the wrong one.
    #[error("admin requests need `Authorization: Bearer <token>`")]
    Unauthorized,
    /// No token is set and the peer is not on loopback.
    #[error("the admin API is only open to loopback peers unless --admin-token is set")]
    NotLoopback,
    /// No token is set and the collector does not listen on loopback.
    #[error("the admin API is closed: set --admin-token or listen on a loopback address")]
    Closed,
}

impl AdminAccess {
    /// The access for a collector listening on `listen`, with `token` if
    /// one was given.
    pub fn new(token: Option<String>, listen: SocketAddr) -> Result<AdminAccess, BadToken> {
        match token {
            Some(t) => {
                let ok = (MIN_ADMIN_TOKEN_LEN..=MAX_ADMIN_TOKEN_LEN).contains(&t.len())
                    && t.bytes().all(|b| b.is_ascii_graphic());
                if ok { Ok(AdminAccess::Token(t)) } else { Err(BadToken) }
            }
            None if listen.ip().is_loopback() => Ok(AdminAccess::Loopback),
            None => Ok(AdminAccess::Closed),
        }
    }

    /// Decides on a request with this `Authorization` header from `peer`
    /// (`None` when the server was not told peers' addresses).
    pub fn check(
        &self,
        authorization: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<(), AdminDenied> {
        match self {
            AdminAccess::Token(token) => {
                let given = authorization
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim)
                    .unwrap_or("");
                if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    Err(AdminDenied::Unauthorized)
                }
            }
            AdminAccess::Loopback => match peer {
                Some(p) if p.ip().is_loopback() => Ok(()),
                _ => Err(AdminDenied::NotLoopback),
            },
            AdminAccess::Closed => Err(AdminDenied::Closed),
        }
    }
}

/// What the dashboard's session cookie is derived from, with the token.
const SESSION_CONTEXT: &[u8] = b"sonde-collector /ui session v1";

impl AdminAccess {
    /// The value of a logged-in browser's session cookie: HMAC-SHA256 of a
    /// fixed context keyed by the admin token, hex-encoded. The cookie is
    /// therefore not the token (a stolen one does not open the API, and
    /// tells nothing of the token), and changing the token ends every
    /// session. `None` without a token.
    pub(crate) fn session(&self) -> Option<String> {
        use hmac::Mac as _;
        let AdminAccess::Token(token) = self else { return None };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).ok()?;
        mac.update(SESSION_CONTEXT);
        Some(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether `cookie` is the session value of [`session`](Self::session).
    pub(crate) fn check_session(&self, cookie: &str) -> bool {
        self.session().is_some_and(|s| constant_time_eq(s.as_bytes(), cookie.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so response times do
/// not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body of `POST /v1/directives`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDirective {
    /// The instance it is for, or `null` for every instance. Required, so
    /// that a forgotten key does not address every host.
    #[serde(deserialize_with = "Option::deserialize")]
    pub instance_id: Option<Uuid>,
    /// What to send.
    pub directive: Directive,
}

impl NewDirective {
    /// Checks the directive against what the host accepts, so an operator
    /// learns now (400) rather than from a host that clamps or drops it.
    pub fn check(&self) -> Result<(), String> {
        let name = |plugin: &str| {
            if plugin.is_empty() || plugin.len() > MAX_PLUGIN_NAME_LEN {
                Err(format!("`plugin` must be 1 to {MAX_PLUGIN_NAME_LEN} bytes"))
            } else {
                Ok(())
            }
        };
        let reason = |reason: &str| {
            if reason.len() > MAX_DIRECTIVE_TEXT {
                Err(format!("`reason` must be at most {MAX_DIRECTIVE_TEXT} bytes"))
            } else {
                Ok(())
            }
        };
        let duration = |secs: u64| {
            if (MIN_DISABLE_SECS..=MAX_DISABLE_SECS).contains(&secs) {
                Ok(())
            } else {
                Err(format!("`for_secs` must be {MIN_DISABLE_SECS}..={MAX_DISABLE_SECS}"))
            }
        };
        let metrics = |metrics: &[String]| {
            let ok = (1..=MAX_DIRECTIVE_METRICS).contains(&metrics.len())
                && metrics.iter().all(|m| !m.is_empty() && m.len() <= MAX_DIRECTIVE_TEXT);
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "`metrics` must list 1 to {MAX_DIRECTIVE_METRICS} names of 1 to {MAX_DIRECTIVE_TEXT} bytes"
                ))
            }
        };
        match &self.directive {
            Directive::DisablePlugin { plugin, for_secs, reason: why } => {
                name(plugin)?;
                duration(*for_secs)?;
                reason(why)
            }
            Directive::EnablePlugin { plugin } => name(plugin),
            Directive::DisableMetrics { plugin, metrics: m, for_secs, reason: why } => {
                name(plugin)?;
                metrics(m)?;
                duration(*for_secs)?;
                reason(why)
            }
            Directive::EnableMetrics { plugin, metrics: m } => {
                name(plugin)?;
                metrics(m)
            }
            Directive::Stop { reason: why } => reason(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn without_a_token_the_admin_api_is_loopback_only_or_closed() {
        let local = AdminAccess::new(None, addr("127.0.0.1:80")).expect("access");
        assert_eq!(local.check(None, Some(addr("127.0.0.1:5000"))), Ok(()));
        assert_eq!(local.check(None, Some(addr("10.0.0.1:5000"))), Err(AdminDenied::NotLoopback));
        assert_eq!(local.check(None, None), Err(AdminDenied::NotLoopback));
        let public = AdminAccess::new(None, addr("0.0.0.0:80")).expect("access");
        assert_eq!(public.check(None, Some(addr("127.0.0.1:1"))), Err(AdminDenied::Closed));
    }

    #[test]
    fn with_a_token_only_the_right_bearer_passes() {
        let token = "0123456789abcdef".to_string();
        let access = AdminAccess::new(Some(token.clone()), addr("0.0.0.0:80")).expect("access");
        let peer = Some(addr("10.0.0.1:1"));
        assert_eq!(access.check(Some(&format!("Bearer {token}")), peer), Ok(()));
        assert_eq!(
            access.check(Some("Bearer 0123456789abcdeX"), peer),
            Err(AdminDenied::Unauthorized)
        );
        assert_eq!(access.check(Some(&token), peer), Err(AdminDenied::Unauthorized));
        assert_eq!(access.check(None, peer), Err(AdminDenied::Unauthorized));
        assert!(!format!("{access:?}").contains(&token));
        assert_eq!(AdminAccess::new(Some("short".into()), addr("0.0.0.0:80")), Err(BadToken));
    }

    #[test]
    fn a_posted_directive_needs_an_explicit_instance_and_sane_values() {
        let missing = serde_json::from_str::<NewDirective>(
            r#"{"directive": {"action": "stop", "reason": "x"}}"#,
        );
        assert!(missing.is_err());
        let all: NewDirective = serde_json::from_str(
            r#"{"instance_id": null, "directive": {"action": "stop", "reason": "x"}}"#,
        )
        .expect("valid");
        assert_eq!(all.instance_id, None);
        assert!(all.check().is_ok());
        let short: NewDirective = serde_json::from_str(
            r#"{"instance_id": null, "directive": {"action": "disable_plugin", "plugin": "a", "for_secs": 1}}"#,
        )
        .expect("valid");
        assert!(short.check().expect_err("too short").contains("for_secs"));
    }
}
