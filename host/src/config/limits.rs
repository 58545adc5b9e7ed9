//! What one phone and one tenant may hold: the outbox's bounds (messages
//! and stored bytes, per phone and per tenant) and the sessions a tenant
//! may own. `[limits]` in the file; each has a variable too.
//!
//! | variable | file key (`[limits]`) | default |
//! | --- | --- | --- |
//! | `LILA_OUTBOX_MAX_MESSAGES_PER_PHONE` | `outbox_max_messages_per_phone` | 10,000 |
//! | `LILA_OUTBOX_MAX_BYTES_PER_PHONE` | `outbox_max_bytes_per_phone` | 64 MiB |
//! | `LILA_OUTBOX_MAX_MESSAGES_PER_TENANT` | `outbox_max_messages_per_tenant` | 100,000 |
//! | `LILA_OUTBOX_MAX_BYTES_PER_TENANT` | `outbox_max_bytes_per_tenant` | 1 GiB |
//! | `LILA_MAX_SESSIONS_PER_TENANT` | `max_sessions_per_tenant` | 5,000 (operators are exempt) |

use serde::Deserialize;

use super::ConfigError;
use crate::core::outbox::QueueLimits;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// One phone's outbox.
    pub outbox_per_phone: QueueLimits,
    /// All the outboxes of one tenant's phones together.
    pub outbox_per_tenant: QueueLimits,
    /// Sessions (listed phones) one tenant may own; an operator's create
    /// is not counted against it.
    pub max_sessions_per_tenant: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            outbox_per_phone: QueueLimits::default(),
            outbox_per_tenant: QueueLimits {
                max_messages: 100_000,
                max_bytes: 1024 * 1024 * 1024,
            },
            max_sessions_per_tenant: 5_000,
        }
    }
}

/// `[limits]` of the config file.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub outbox_max_messages_per_phone: Option<u64>,
    pub outbox_max_bytes_per_phone: Option<u64>,
    pub outbox_max_messages_per_tenant: Option<u64>,
    pub outbox_max_bytes_per_tenant: Option<u64>,
    pub max_sessions_per_tenant: Option<u64>,
}

impl LimitsConfig {
    pub fn from_parts(
        file: &LimitsFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LimitsConfig, ConfigError> {
        // Each setting: the variable, else the file, else the default; a
        // limit of zero would refuse everything, so it is an error.
        let setting = |name: &'static str, from_file: Option<u64>, default: u64| {
            let value = match env(name).filter(|v| !v.is_empty()) {
                Some(raw) => raw.trim().parse::<u64>().map_err(|_| ConfigError::Value {
                    name,
                    reason: format!("{raw:?} is not a whole number"),
                })?,
                None => from_file.unwrap_or(default),
            };
            if value == 0 {
                return Err(ConfigError::Value {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(value)
        };
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let d = LimitsConfig::default();
        Ok(LimitsConfig {
            outbox_per_phone: QueueLimits {
                max_messages: count(setting(
                    "LILA_OUTBOX_MAX_MESSAGES_PER_PHONE",
                    file.outbox_max_messages_per_phone,
                    d.outbox_per_phone.max_messages as u64,
                )?),
                max_bytes: setting(
                    "LILA_OUTBOX_MAX_BYTES_PER_PHONE",
                    file.outbox_max_bytes_per_phone,
                    d.outbox_per_phone.max_bytes,
                )?,
            },
            outbox_per_tenant: QueueLimits {
                max_messages: count(setting(
                    "LILA_OUTBOX_MAX_MESSAGES_PER_TENANT",
                    file.outbox_max_messages_per_tenant,
                    d.outbox_per_tenant.max_messages as u64,
                )?),
                max_bytes: setting(
                    "LILA_OUTBOX_MAX_BYTES_PER_TENANT",
                    file.outbox_max_bytes_per_tenant,
                    d.outbox_per_tenant.max_bytes,
                )?,
            },
            max_sessions_per_tenant: count(setting(
                "LILA_MAX_SESSIONS_PER_TENANT",
                file.max_sessions_per_tenant,
                d.max_sessions_per_tenant as u64,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file_and_zero_or_garbage_is_refused() {
        let file = LimitsFile {
            outbox_max_messages_per_phone: Some(50),
            max_sessions_per_tenant: Some(7),
            ..LimitsFile::default()
        };
        let env = |name: &str| (name == "LILA_MAX_SESSIONS_PER_TENANT").then(|| "9".to_owned());
        let limits = LimitsConfig::from_parts(&file, &env).unwrap();
        assert_eq!(limits.outbox_per_phone.max_messages, 50);
        assert_eq!(limits.max_sessions_per_tenant, 9);
        assert_eq!(
            limits.outbox_per_tenant,
            LimitsConfig::default().outbox_per_tenant
        );
        let zero = |name: &str| (name == "LILA_OUTBOX_MAX_BYTES_PER_PHONE").then(|| "0".to_owned());
        let err = LimitsConfig::from_parts(&LimitsFile::default(), &zero).unwrap_err();
        assert!(
            err.to_string().contains("LILA_OUTBOX_MAX_BYTES_PER_PHONE"),
            "{err}"
        );
        let garbage =
            |name: &str| (name == "LILA_OUTBOX_MAX_BYTES_PER_PHONE").then(|| "64MB".to_owned());
        assert!(LimitsConfig::from_parts(&LimitsFile::default(), &garbage).is_err());
    }
}
