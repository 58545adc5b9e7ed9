//! The decision: value in, value out. Which rule applies, the veto sentence the
//! Portal shows, and the per-phone daily counter kept in the host's state store.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{HourRange, TenantRules};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A sentence for the Portal's toast.
    Veto(String),
}

/// A UTC instant split into what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcMoment {
    /// `YYYY-MM-DD`, the day a daily limit counts in.
    pub day: String,
    pub minute_of_day: u16,
}

impl UtcMoment {
    /// `None` only for instants outside the years 0000..=9999, which no host clock gives.
    pub fn from_unix_ms(ms: u64) -> Option<Self> {
        let nanos = i128::from(ms).checked_mul(1_000_000)?;
        let moment = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
        Some(UtcMoment {
            day: format!(
                "{:04}-{:02}-{:02}",
                moment.year(),
                u8::from(moment.month()),
                moment.day()
            ),
            minute_of_day: u16::from(moment.hour()) * 60 + u16::from(moment.minute()),
        })
    }
}

/// Applies `rules` to a reset of `phone` at `now`, given how many resets of
/// that phone already completed today. The first rule that refuses decides, in
/// the order an operator would explain them: protected, then hours, then quota.
pub fn evaluate(rules: &TenantRules, phone: &str, now: &UtcMoment, resets_today: u32) -> Verdict {
    if rules.protected_phones.contains(phone) {
        return Verdict::Veto(format!(
            "Phone +{phone} is protected by your reset policy and cannot be reset. \
             Ask an administrator to remove it from the protected list."
        ));
    }
    let hours = &rules.allowed_hours_utc;
    if !hours.is_empty() && !hours.iter().any(|range| range.contains(now.minute_of_day)) {
        return Verdict::Veto(format!(
            "Resets are allowed only between {} UTC; it is now {:02}:{:02} UTC.",
            describe_windows(hours),
            now.minute_of_day / 60,
            now.minute_of_day % 60
        ));
    }
    match rules.max_resets_per_day {
        Some(0) => Verdict::Veto("Your reset policy does not allow resetting sessions.".to_owned()),
        Some(limit) if resets_today >= limit => Verdict::Veto(format!(
            "Phone +{phone} has already been reset {resets_today} {} today \
             (limit: {limit} per day, UTC). Try again after 00:00 UTC.",
            if resets_today == 1 { "time" } else { "times" }
        )),
        _ => Verdict::Allow,
    }
}

/// "08:00 and 12:00 or between 14:00 and 18:00"
fn describe_windows(hours: &[HourRange]) -> String {
    hours
        .iter()
        .map(HourRange::to_string)
        .collect::<Vec<_>>()
        .join(" or between ")
}

/// The state-store key of a phone's daily counter. The store is already scoped
/// to (plugin, tenant), so the phone alone is unique.
pub fn counter_key(phone: &str) -> String {
    format!("resets-today/{phone}")
}

/// One value per phone, overwritten on a new day, so the store never grows
/// past the tenant's number of phones.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct DailyCounter {
    day: String,
    count: u32,
}

/// How many resets the stored counter holds for `day`. A missing, stale or
/// unreadable value counts as zero: a damaged counter must not lock a phone
/// out for good, and the next completed reset rewrites it.
pub fn resets_on(stored: Option<&str>, day: &str) -> u32 {
    stored
        .and_then(|text| serde_json::from_str::<DailyCounter>(text).ok())
        .filter(|counter| counter.day == day)
        .map_or(0, |counter| counter.count)
}

/// The counter's value after one more completed reset on `day`.
pub fn counter_after_reset(stored: Option<&str>, day: &str) -> String {
    let counter = DailyCounter {
        day: day.to_owned(),
        count: resets_on(stored, day).saturating_add(1),
    };
    // Serializing a struct of a string and an integer cannot fail; the
    // fallback keeps that fact out of the control flow.
    serde_json::to_string(&counter).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;

    const PHONE: &str = "5511999998888";

    fn rules(json: &str) -> TenantRules {
        PolicyConfig::parse(&format!(r#"{{"default": {json}}}"#))
            .unwrap()
            .default
            .unwrap()
    }

    fn at(hh_mm: &str) -> UtcMoment {
        let (hours, minutes) = hh_mm.split_once(':').unwrap();
        UtcMoment {
            day: "2026-05-01".to_owned(),
            minute_of_day: hours.parse::<u16>().unwrap() * 60 + minutes.parse::<u16>().unwrap(),
        }
    }

    fn check(rules_json: &str, phone: &str, now: &str, resets_today: u32, expected: Option<&str>) {
        let verdict = evaluate(&rules(rules_json), phone, &at(now), resets_today);
        let expected = expected.map_or(Verdict::Allow, |reason| Verdict::Veto(reason.to_owned()));
        assert_eq!(verdict, expected, "rules {rules_json} at {now}");
    }

    #[test]
    fn no_rules_allow() {
        check("{}", PHONE, "03:00", 100, None);
    }

    #[test]
    fn protected_phone_is_vetoed_others_are_not() {
        let protected = r#"{"protected_phones": ["5511999998888"]}"#;
        check(
            protected,
            PHONE,
            "12:00",
            0,
            Some(
                "Phone +5511999998888 is protected by your reset policy and cannot be reset. \
                 Ask an administrator to remove it from the protected list.",
            ),
        );
        check(protected, "5511999997777", "12:00", 0, None);
    }

    #[test]
    fn outside_allowed_hours_is_vetoed_with_the_windows_and_the_time() {
        let office = r#"{"allowed_hours_utc": ["08:00-12:00", "14:00-18:00"]}"#;
        check(office, PHONE, "08:00", 0, None);
        check(office, PHONE, "15:30", 0, None);
        check(
            office,
            PHONE,
            "12:00",
            0,
            Some(
                "Resets are allowed only between 08:00 and 12:00 or between 14:00 and 18:00 UTC; \
                 it is now 12:00 UTC.",
            ),
        );
        let night = r#"{"allowed_hours_utc": ["22:00-06:00"]}"#;
        check(night, PHONE, "23:59", 0, None);
        check(night, PHONE, "05:59", 0, None);
        check(
            night,
            PHONE,
            "19:42",
            0,
            Some("Resets are allowed only between 22:00 and 06:00 UTC; it is now 19:42 UTC."),
        );
    }

    #[test]
    fn daily_limit_counts_completed_resets() {
        let limit = r#"{"max_resets_per_day": 2}"#;
        check(limit, PHONE, "10:00", 0, None);
        check(limit, PHONE, "10:00", 1, None);
        check(
            limit,
            PHONE,
            "10:00",
            2,
            Some(
                "Phone +5511999998888 has already been reset 2 times today \
                 (limit: 2 per day, UTC). Try again after 00:00 UTC.",
            ),
        );
        check(
            r#"{"max_resets_per_day": 1}"#,
            PHONE,
            "10:00",
            1,
            Some(
                "Phone +5511999998888 has already been reset 1 time today \
                 (limit: 1 per day, UTC). Try again after 00:00 UTC.",
            ),
        );
        check(
            r#"{"max_resets_per_day": 0}"#,
            PHONE,
            "10:00",
            0,
            Some("Your reset policy does not allow resetting sessions."),
        );
    }

    #[test]
    fn protection_is_reported_before_hours_and_quota() {
        let all = r#"{"protected_phones": ["5511999998888"], "max_resets_per_day": 1,
                      "allowed_hours_utc": ["08:00-09:00"]}"#;
        let verdict = evaluate(&rules(all), PHONE, &at("20:00"), 5);
        assert!(matches!(verdict, Verdict::Veto(reason) if reason.contains("protected")));
        let verdict = evaluate(&rules(all), "5511999997777", &at("20:00"), 5);
        assert!(matches!(verdict, Verdict::Veto(reason) if reason.contains("between")));
    }

    #[test]
    fn utc_moment_from_unix_ms() {
        // 2026-05-01T19:42:59.999Z, computed with `date -u -d @1777664579`.
        let moment = UtcMoment::from_unix_ms(1_777_664_579_999).unwrap();
        assert_eq!(moment.day, "2026-05-01");
        assert_eq!(moment.minute_of_day, 19 * 60 + 42);
        assert_eq!(UtcMoment::from_unix_ms(0).unwrap().day, "1970-01-01");
        assert_eq!(UtcMoment::from_unix_ms(u64::MAX), None);
    }

    #[test]
    fn counter_resets_on_a_new_day_and_survives_damage() {
        let first = counter_after_reset(None, "2026-05-01");
        assert_eq!(resets_on(Some(&first), "2026-05-01"), 1);
        let second = counter_after_reset(Some(&first), "2026-05-01");
        assert_eq!(resets_on(Some(&second), "2026-05-01"), 2);
        assert_eq!(resets_on(Some(&second), "2026-05-02"), 0);
        let next_day = counter_after_reset(Some(&second), "2026-05-02");
        assert_eq!(resets_on(Some(&next_day), "2026-05-02"), 1);
        assert_eq!(resets_on(Some("not json"), "2026-05-01"), 0);
        assert_eq!(resets_on(None, "2026-05-01"), 0);
    }
}
