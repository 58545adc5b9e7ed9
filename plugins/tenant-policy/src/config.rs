//! The plugin's configuration: the JSON the host's `config()` import returns.
//!
//! ```json
//! {
//!   "default": { "max_resets_per_day": 5 },
//!   "tenants": {
//!     "acme": {
//!       "protected_phones": ["5511999998888"],
//!       "max_resets_per_day": 3,
//!       "allowed_hours_utc": ["08:00-18:00"]
//!     }
//!   }
//! }
//! ```
//!
//! A tenant's entry replaces `default` as a whole (no field-by-field merge), so
//! reading one entry tells everything that applies to that tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

/// Why the configuration was rejected, as a sentence for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tenant-policy config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub default: Option<TenantRules>,
    pub tenants: BTreeMap<String, TenantRules>,
}

/// The rules for one tenant. An empty value of each field means "no rule".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantRules {
    /// Phones (digits only) that can never be reset.
    pub protected_phones: BTreeSet<String>,
    /// Completed resets allowed per phone per UTC day; `Some(0)` forbids resets.
    pub max_resets_per_day: Option<u32>,
    /// When resets are allowed; empty means at any time.
    pub allowed_hours_utc: Vec<HourRange>,
}

/// A daily window in UTC, `[start, end)` in minutes after midnight. A window
/// whose start is after its end wraps past midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    pub start_minute: u16,
    pub end_minute: u16,
}

const MINUTES_PER_DAY: u16 = 24 * 60;

impl HourRange {
    /// Parses `HH:MM-HH:MM`; the end may be `24:00`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError(format!(
                "allowed hour range {text:?} is not of the form \"HH:MM-HH:MM\" (UTC)"
            ))
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let start_minute = parse_clock(start.trim()).ok_or_else(bad)?;
        let end_minute = parse_clock(end.trim()).ok_or_else(bad)?;
        if start_minute == MINUTES_PER_DAY {
            return Err(bad());
        }
        // An empty window would silently forbid every reset; "00:00-24:00" says "always".
        if start_minute == end_minute {
            return Err(ConfigError(format!(
                "allowed hour range {text:?} is empty; use \"00:00-24:00\" for the whole day"
            )));
        }
        Ok(HourRange {
            start_minute,
            end_minute,
        })
    }

    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_minute < self.end_minute {
            self.start_minute <= minute_of_day && minute_of_day < self.end_minute
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

impl fmt::Display for HourRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02} and {:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60
        )
    }
}

/// `HH:MM` to minutes after midnight, accepting `24:00` as the end of the day.
fn parse_clock(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    if !hours
        .bytes()
        .chain(minutes.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    match (hours, minutes) {
        (24, 0) => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}

/// Accepts `5511999998888` or `+5511999998888` and returns the digits: the
/// host hands plugins digits only, so a `+` in the config would never match.
fn normalize_phone(text: &str) -> Result<String, ConfigError> {
    let digits = text.trim().strip_prefix('+').unwrap_or(text.trim());
    let valid = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    if valid {
        Ok(digits.to_owned())
    } else {
        Err(ConfigError(format!(
            "protected phone {text:?} is not 8 to 15 digits"
        )))
    }
}

// Unknown fields are errors: a misspelt rule ("protected_phone") must not
// silently leave a phone unprotected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    default: Option<RawRules>,
    #[serde(default)]
    tenants: BTreeMap<String, RawRules>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    protected_phones: Vec<String>,
    #[serde(default)]
    max_resets_per_day: Option<u32>,
    #[serde(default)]
    allowed_hours_utc: Vec<String>,
}

impl RawRules {
    fn validate(self) -> Result<TenantRules, ConfigError> {
        let protected_phones = self
            .protected_phones
            .iter()
            .map(|phone| normalize_phone(phone))
            .collect::<Result<_, _>>()?;
        let allowed_hours_utc = self
            .allowed_hours_utc
            .iter()
            .map(|range| HourRange::parse(range))
            .collect::<Result<_, _>>()?;
        Ok(TenantRules {
            protected_phones,
            max_resets_per_day: self.max_resets_per_day,
            allowed_hours_utc,
        })
    }
}

impl PolicyConfig {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        // The host promises `{}` when the operator gave no config; an empty
        // string is treated the same so a bare entry still loads.
        let json = if json.trim().is_empty() { "{}" } else { json };
        let raw: RawConfig =
            serde_json::from_str(json).map_err(|error| ConfigError(error.to_string()))?;
        let default = raw.default.map(RawRules::validate).transpose()?;
        let tenants = raw
            .tenants
            .into_iter()
            .map(|(tenant, rules)| {
                let rules = rules
                    .validate()
                    .map_err(|ConfigError(why)| ConfigError(format!("tenant {tenant:?}: {why}")))?;
                Ok((tenant, rules))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(PolicyConfig { default, tenants })
    }

    /// The tenant's own entry, else `default`, else none (no rules apply).
    pub fn rules_for(&self, tenant: &str) -> Option<&TenantRules> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_range(text: &str, expected: Result<(u16, u16), ()>) {
        let parsed = HourRange::parse(text)
            .map(|range| (range.start_minute, range.end_minute))
            .map_err(|_| ());
        assert_eq!(parsed, expected, "{text}");
    }

    #[test]
    fn hour_ranges_parse() {
        check_range("08:00-18:00", Ok((480, 1080)));
        check_range(" 08:30 - 17:45 ", Ok((510, 1065)));
        check_range("22:00-06:00", Ok((1320, 360)));
        check_range("00:00-24:00", Ok((0, 1440)));
        check_range("08:00-08:00", Err(()));
        check_range("24:00-08:00", Err(()));
        check_range("8:00-18:00", Err(()));
        check_range("08:60-18:00", Err(()));
        check_range("25:00-18:00", Err(()));
        check_range("08:00", Err(()));
        check_range("+8:00-18:00", Err(()));
    }

    #[test]
    fn hour_range_contains_is_half_open_and_wraps_midnight() {
        let day = HourRange::parse("08:00-18:00").unwrap();
        assert!(!day.contains(479));
        assert!(day.contains(480));
        assert!(day.contains(1079));
        assert!(!day.contains(1080));
        let night = HourRange::parse("22:00-06:00").unwrap();
        assert!(night.contains(1320));
        assert!(night.contains(0));
        assert!(night.contains(359));
        assert!(!night.contains(360));
        assert!(!night.contains(1319));
    }

    #[test]
    fn tenant_entry_replaces_default() {
        let config = PolicyConfig::parse(
            r#"{
                "default": {"max_resets_per_day": 5},
                "tenants": {"acme": {"protected_phones": ["+5511999998888"]}}
            }"#,
        )
        .unwrap();
        let acme = config.rules_for("acme").unwrap();
        assert_eq!(acme.max_resets_per_day, None);
        assert!(acme.protected_phones.contains("5511999998888"));
        assert_eq!(
            config.rules_for("other").unwrap().max_resets_per_day,
            Some(5)
        );
    }

    #[test]
    fn empty_config_has_no_rules() {
        assert_eq!(PolicyConfig::parse("{}").unwrap().rules_for("acme"), None);
        assert_eq!(PolicyConfig::parse("").unwrap().rules_for("acme"), None);
    }

    #[test]
    fn misspelt_or_invalid_rules_are_rejected() {
        let error = |json: &str| PolicyConfig::parse(json).unwrap_err().to_string();
        assert!(
            error(r#"{"tenants": {"acme": {"protected_phone": []}}}"#).contains("unknown field")
        );
        assert!(
            error(r#"{"tenants": {"acme": {"protected_phones": ["12-34"]}}}"#).contains("acme")
        );
        assert!(error(r#"{"default": {"allowed_hours_utc": ["9-17"]}}"#).contains("HH:MM"));
        assert!(error(r#"{"default": {"max_resets_per_day": -1}}"#).contains("invalid"));
        assert!(error("true").contains("invalid"));
    }
}
