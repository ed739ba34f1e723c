//! The automatic cost policy: which running plugin is too expensive, and
//! when the collector may tell a host to switch it off (again).
//!
//! Cost numbers in a report are cumulative since the host started; the
//! figure judged is the interval's: `busy_us / events` over the events
//! since the instance's previous report of the same run (for the first
//! report of a run, since its start), and only when that interval holds
//! `min_events` or more. So a plugin that was expensive only while the host
//! warmed up stops tripping once its later intervals are cheap.
//!
//! For each plugin the rule that applies is the first `[[rule]]` naming it,
//! else the first `plugin = "*"` rule. What the collector remembers per
//! (instance, plugin) is an [`IssuedDisable`]; [`step`] decides, from that
//! and the plugin's state and interval cost in a newly stored report, what
//! to do:
//!
//! - nothing issued, plugin `running` and over its rule: issue
//!   `disable_plugin`;
//! - issued, plugin now `disabled`: note that the host applied it;
//! - issued and applied (or the disable period is over), plugin `running`
//!   again: it came back, so judge it afresh: issue again if it is still over
//!   the rule, else forget the old disable;
//! - anything else: nothing. In particular a plugin still shown `running`
//!   right after the directive went out (a spooled report built before the
//!   host got it) does not earn a second directive.

use std::time::Duration;

use sonde_core::{Directive, PluginCost, PluginState};

use crate::config::Policy;

/// The placeholders a rule's `reason` may use.
const PLACEHOLDERS: [&str; 2] = ["plugin", "busy_us_per_event"];

/// Which plugins a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginMatch {
    /// `plugin = "*"`: every plugin without a rule of its own.
    Any,
    /// `plugin = "name"`.
    Named(String),
}

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `plugin`.
    pub plugin: PluginMatch,
    /// `max_busy_us_per_event`: finite and positive.
    pub max_busy_us_per_event: f64,
    /// `min_events`: the rule is not applied below this many events.
    pub min_events: u64,
    /// `disable_for`, within the host's disable bounds.
    pub disable_for: Duration,
    /// `reason`, with `{plugin}` and `{busy_us_per_event}` placeholders.
    pub reason: String,
}

/// What the collector recorded when it issued a `disable_plugin` for one
/// plugin of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedDisable {
    /// When it was issued, seconds since the Unix epoch.
    pub issued_at: u64,
    /// The `for_secs` it carried.
    pub for_secs: u64,
    /// Whether a later report showed the plugin `disabled`.
    pub seen_disabled: bool,
}

/// What to do about one plugin of one newly stored report.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing changes.
    Nothing,
    /// Send this `disable_plugin` and remember it (replacing any older one).
    Issue(Directive),
    /// The host applied the disable: remember that.
    SeenDisabled,
    /// The plugin came back and is within its rule: forget the old disable.
    Clear,
}

impl Policy {
    /// The rule for `plugin`: the first naming it, else the first wildcard.
    pub fn rule_for(&self, plugin: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| matches!(&r.plugin, PluginMatch::Named(n) if n == plugin))
            .or_else(|| self.rules.iter().find(|r| r.plugin == PluginMatch::Any))
    }
}

impl Rule {
    /// The busy time per event that breaks this rule, or `None` when `cost`
    /// is within it (or has too few events to judge).
    pub fn breach(&self, cost: &PluginCost) -> Option<f64> {
        if cost.events == 0 || cost.events < self.min_events {
            return None;
        }
        let per_event = cost.busy_us as f64 / cost.events as f64;
        (per_event > self.max_busy_us_per_event).then_some(per_event)
    }

    /// The directive that switches `plugin` off for breaking this rule.
    pub fn directive(&self, plugin: &str, busy_us_per_event: f64) -> Directive {
        let reason = self
            .reason
            .replace("{plugin}", plugin)
            .replace("{busy_us_per_event}", &format!("{busy_us_per_event:.1}"));
        Directive::DisablePlugin {
            plugin: plugin.to_string(),
            for_secs: self.disable_for.as_secs(),
            reason,
        }
    }
}

/// Decides what a newly stored report means for one of its plugins,
/// `plugin` in `state` with `cost` over the report's interval, given what
/// was issued for it before (`issued`) and the time `now` (seconds since the
/// Unix epoch).
pub fn step(
    policy: &Policy,
    issued: Option<&IssuedDisable>,
    plugin: &str,
    state: PluginState,
    cost: &PluginCost,
    now: u64,
) -> Step {
    let judge = || match policy.rule_for(plugin) {
        Some(rule) => match rule.breach(cost) {
            Some(per_event) => Step::Issue(rule.directive(plugin, per_event)),
            None => Step::Nothing,
        },
        None => Step::Nothing,
    };
    match (issued, state) {
        (None, PluginState::Running) => judge(),
        (Some(i), PluginState::Disabled) if !i.seen_disabled => Step::SeenDisabled,
        (Some(i), PluginState::Running) => {
            let expired = now >= i.issued_at.saturating_add(i.for_secs);
            if !(i.seen_disabled || expired) {
                return Step::Nothing;
            }
            match judge() {
                Step::Nothing => Step::Clear,
                issue => issue,
            }
        }
        _ => Step::Nothing,
    }
}

/// Checks that `reason` only uses known `{placeholders}`.
pub(crate) fn check_reason(reason: &str) -> Result<(), String> {
    let mut rest = reason;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}`; known: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn rule(plugin: PluginMatch, max: f64) -> Rule {
        Rule {
            plugin,
            max_busy_us_per_event: max,
            min_events: 100,
            disable_for: Duration::from_secs(3600),
            reason: "{plugin} costs {busy_us_per_event} µs".into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            rules: vec![
                rule(PluginMatch::Any, 50.0),
                rule(PluginMatch::Named("user-agent".into()), 200.0),
            ],
            ..Policy::default()
        }
    }

    /// A plugin's name, state and interval cost.
    struct P(&'static str, PluginState, PluginCost);

    fn plugin(name: &'static str, state: PluginState, events: u64, busy_us: u64) -> P {
        P(name, state, PluginCost { events, busy_us, ..PluginCost::default() })
    }

    fn step(policy: &Policy, issued: Option<&IssuedDisable>, p: &P, now: u64) -> Step {
        super::step(policy, issued, p.0, p.1, &p.2, now)
    }

    #[test]
    fn an_expensive_running_plugin_is_disabled_with_the_rule_s_reason() {
        let step = step(&policy(), None, &plugin("a", PluginState::Running, 1000, 60_500), 0);
        let Step::Issue(Directive::DisablePlugin { plugin, for_secs, reason }) = step else {
            panic!("{step:?}");
        };
        assert_eq!((plugin.as_str(), for_secs), ("a", 3600));
        assert_eq!(reason, "a costs 60.5 µs");
    }

    #[test]
    fn cheap_plugins_and_plugins_with_too_few_events_are_left_alone() {
        let p = policy();
        assert_eq!(
            step(&p, None, &plugin("a", PluginState::Running, 1000, 50_000), 0),
            Step::Nothing
        );
        assert_eq!(
            step(&p, None, &plugin("a", PluginState::Running, 99, 99_000), 0),
            Step::Nothing
        );
        assert_eq!(step(&p, None, &plugin("a", PluginState::Running, 0, 5), 0), Step::Nothing);
        assert_eq!(
            step(&p, None, &plugin("a", PluginState::Failed, 1000, 99_000), 0),
            Step::Nothing
        );
    }

    #[test]
    fn a_named_rule_wins_over_the_wildcard() {
        let p = policy();
        let ua = plugin("user-agent", PluginState::Running, 1000, 100_000);
        assert_eq!(step(&p, None, &ua, 0), Step::Nothing);
        let ua = plugin("user-agent", PluginState::Running, 1000, 300_000);
        assert!(matches!(step(&p, None, &ua, 0), Step::Issue(_)));
        assert_eq!(Policy::default().rule_for("user-agent"), None);
    }

    #[test]
    fn a_disable_is_not_reissued_until_the_plugin_comes_back() {
        let p = policy();
        let expensive = plugin("a", PluginState::Running, 1000, 99_000);
        let disabled = plugin("a", PluginState::Disabled, 1000, 99_000);
        let mut issued = IssuedDisable { issued_at: 1000, for_secs: 3600, seen_disabled: false };
        // Still shown running before the host applied it: wait.
        assert_eq!(step(&p, Some(&issued), &expensive, 1010), Step::Nothing);
        assert_eq!(step(&p, Some(&issued), &disabled, 1020), Step::SeenDisabled);
        issued.seen_disabled = true;
        assert_eq!(step(&p, Some(&issued), &disabled, 1030), Step::Nothing);
        // Back and still expensive: again. Back and cheap: forget it.
        assert!(matches!(step(&p, Some(&issued), &expensive, 5000), Step::Issue(_)));
        let cheap = plugin("a", PluginState::Running, 1_000_000, 99_000);
        assert_eq!(step(&p, Some(&issued), &cheap, 5000), Step::Clear);
    }

    #[test]
    fn a_disable_the_host_never_applied_is_reissued_once_its_period_is_over() {
        let p = policy();
        let expensive = plugin("a", PluginState::Running, 1000, 99_000);
        let issued = IssuedDisable { issued_at: 1000, for_secs: 3600, seen_disabled: false };
        assert_eq!(step(&p, Some(&issued), &expensive, 4599), Step::Nothing);
        assert!(matches!(step(&p, Some(&issued), &expensive, 4600), Step::Issue(_)));
    }

    #[test]
    fn reasons_may_only_use_known_placeholders() {
        assert!(check_reason("plain").is_ok());
        assert!(check_reason("{plugin}: {busy_us_per_event} µs, {unclosed").is_ok());
        let err = check_reason("{cost}").expect_err("unknown");
        assert!(err.contains("`{cost}`"), "{err}");
    }
}
