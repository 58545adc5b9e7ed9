//! tenant-policy: a lila reset plugin that vetoes a reset when the tenant's
//! rules forbid it (protected phones, a daily limit per phone, allowed UTC hours).
//!
//! `before-clear` decides; `after-clear` counts the completed reset in the
//! host's per-(plugin, tenant) state store, so the daily limit counts resets
//! that happened rather than resets that were merely asked for. Both hooks must
//! be enabled for the limit to work. The logic below is plain Rust behind the
//! [`PolicyHost`] trait; `component.rs` binds it to the WIT imports.

pub mod config;
pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component;

use config::{ConfigError, PolicyConfig};
use policy::{UtcMoment, Verdict};

/// What the plugin needs from the host: its state store and the log.
pub trait PolicyHost {
    fn state_get(&mut self, key: &str) -> Option<String>;
    fn state_set(&mut self, key: &str, value: &str) -> Result<(), String>;
    fn warn(&mut self, message: &str);
}

/// One reset as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetFacts<'a> {
    pub tenant: &'a str,
    pub phone: &'a str,
    /// Unix ms, UTC: when the reset was requested (`before-clear`) or finished (`after-clear`).
    pub at_ms: u64,
}

/// The `before-clear` decision. A bad config is an `Err`: the component traps
/// on it, so the operator's fail-open/fail-closed choice decides the reset.
pub fn before_clear(
    config_json: &str,
    reset: &ResetFacts<'_>,
    host: &mut impl PolicyHost,
) -> Result<Verdict, ConfigError> {
    let config = PolicyConfig::parse(config_json)?;
    let Some(rules) = config.rules_for(reset.tenant) else {
        return Ok(Verdict::Allow);
    };
    let Some(now) = UtcMoment::from_unix_ms(reset.at_ms) else {
        host.warn("the host clock is out of range; tenant-policy allows the reset");
        return Ok(Verdict::Allow);
    };
    // The store is read only when a limit applies, keeping other resets free of I/O.
    let resets_today = match rules.max_resets_per_day {
        Some(_) => {
            let stored = host.state_get(&policy::counter_key(reset.phone));
            policy::resets_on(stored.as_deref(), &now.day)
        }
        None => 0,
    };
    Ok(policy::evaluate(rules, reset.phone, &now, resets_today))
}

/// The `after-clear` bookkeeping: one more completed reset today, when a
/// daily limit applies to the tenant.
pub fn after_clear(
    config_json: &str,
    reset: &ResetFacts<'_>,
    host: &mut impl PolicyHost,
) -> Result<(), ConfigError> {
    let config = PolicyConfig::parse(config_json)?;
    let limited = config
        .rules_for(reset.tenant)
        .is_some_and(|rules| rules.max_resets_per_day.is_some());
    if !limited {
        return Ok(());
    }
    let Some(now) = UtcMoment::from_unix_ms(reset.at_ms) else {
        host.warn("the host clock is out of range; this reset is not counted");
        return Ok(());
    };
    let key = policy::counter_key(reset.phone);
    let stored = host.state_get(&key);
    let updated = policy::counter_after_reset(stored.as_deref(), &now.day);
    if let Err(why) = host.state_set(&key, &updated) {
        // The reset already happened; failing here would only hide the cause.
        host.warn(&format!(
            "could not count the reset of +{}: {why}",
            reset.phone
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The host's state store and log, in memory.
    #[derive(Default)]
    struct FakeHost {
        state: BTreeMap<String, String>,
        reads: usize,
        full: bool,
        warnings: Vec<String>,
    }

    impl PolicyHost for FakeHost {
        fn state_get(&mut self, key: &str) -> Option<String> {
            self.reads += 1;
            self.state.get(key).cloned()
        }
        fn state_set(&mut self, key: &str, value: &str) -> Result<(), String> {
            if self.full {
                return Err("the state store is full".to_owned());
            }
            self.state.insert(key.to_owned(), value.to_owned());
            Ok(())
        }
        fn warn(&mut self, message: &str) {
            self.warnings.push(message.to_owned());
        }
    }

    const CONFIG: &str = r#"{"tenants": {"acme": {"max_resets_per_day": 2}}}"#;
    // 2026-05-01T10:00:00Z and the next day, same time.
    const MAY_1: u64 = 1_777_629_600_000;
    const MAY_2: u64 = MAY_1 + 86_400_000;

    fn reset(tenant: &'static str, at_ms: u64) -> ResetFacts<'static> {
        ResetFacts {
            tenant,
            phone: "5511999998888",
            at_ms,
        }
    }

    fn is_veto(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Veto(_))
    }

    #[test]
    fn third_reset_of_the_day_is_vetoed_and_the_next_day_is_allowed() {
        let mut host = FakeHost::default();
        for _ in 0..2 {
            let verdict = before_clear(CONFIG, &reset("acme", MAY_1), &mut host).unwrap();
            assert_eq!(verdict, Verdict::Allow);
            after_clear(CONFIG, &reset("acme", MAY_1), &mut host).unwrap();
        }
        let verdict = before_clear(CONFIG, &reset("acme", MAY_1), &mut host).unwrap();
        assert!(is_veto(&verdict), "{verdict:?}");
        let verdict = before_clear(CONFIG, &reset("acme", MAY_2), &mut host).unwrap();
        assert_eq!(verdict, Verdict::Allow);
    }

    #[test]
    fn a_vetoed_or_failed_reset_is_not_counted() {
        // before-clear alone (the reset then stopped elsewhere) leaves the counter untouched.
        let mut host = FakeHost::default();
        for _ in 0..5 {
            before_clear(CONFIG, &reset("acme", MAY_1), &mut host).unwrap();
        }
        assert!(host.state.is_empty());
    }

    #[test]
    fn tenants_without_rules_cost_no_state_access() {
        let mut host = FakeHost::default();
        let verdict = before_clear(CONFIG, &reset("globex", MAY_1), &mut host).unwrap();
        assert_eq!(verdict, Verdict::Allow);
        after_clear(CONFIG, &reset("globex", MAY_1), &mut host).unwrap();
        assert_eq!(host.reads, 0);
        assert!(host.state.is_empty());
    }

    #[test]
    fn a_full_state_store_is_logged_not_fatal() {
        let mut host = FakeHost {
            full: true,
            ..FakeHost::default()
        };
        after_clear(CONFIG, &reset("acme", MAY_1), &mut host).unwrap();
        assert_eq!(host.warnings.len(), 1);
        assert!(host.warnings[0].contains("full"));
    }

    #[test]
    fn a_bad_config_is_an_error_for_both_hooks() {
        let mut host = FakeHost::default();
        let bad = r#"{"tenant": {}}"#;
        assert!(before_clear(bad, &reset("acme", MAY_1), &mut host).is_err());
        assert!(after_clear(bad, &reset("acme", MAY_1), &mut host).is_err());
    }
}
