//! The plugin's configuration: the JSON the host's `config()` import returns.
//!
//! ```json
//! {
//!   "endpoints": [{ "url": "https://hooks.example.com/lila", "secret": "whsec_..." }],
//!   "max_attempts": 3,
//!   "backoff_ms": 200,
//!   "timeout_ms": 2000
//! }
//! ```
//!
//! Every URL must also be on the operator's allow-list for this plugin, or the
//! host refuses it.

use std::fmt;

use serde::Deserialize;

/// Why the configuration was rejected, as a sentence for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid webhook-notify config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

// Bounds that keep one misconfigured number from eating the whole call budget
// or hammering a receiver.
const MAX_ATTEMPTS: u32 = 10;
const MAX_BACKOFF_MS: u32 = 60_000;
const MAX_TIMEOUT_MS: u32 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Tries per endpoint, including the first.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait before the second round of attempts; it doubles every round.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u32,
    /// Per attempt; the host also cuts it to what is left of the call's budget.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Event types the `on-event` hook forwards (`session.status`,
    /// `session.qr`, `session.cleared`, `session.logged_out`,
    /// `message.status`); none unless listed.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The event types lila's `on-event` hook delivers.
pub const EVENT_TYPES: [&str; 5] = [
    "session.status",
    "session.qr",
    "session.cleared",
    "session.logged_out",
    "message.status",
];

// A secret must never end up in a log line, so Debug is written by hand.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub url: String,
    pub secret: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_backoff_ms() -> u32 {
    200
}

fn default_timeout_ms() -> u32 {
    2_000
}

impl WebhookConfig {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        // The host promises `{}` when the operator gave no config; an empty
        // string is treated the same.
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: WebhookConfig =
            serde_json::from_str(json).map_err(|error| ConfigError(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for endpoint in &self.endpoints {
            let scheme_ok = ["http://", "https://"].iter().any(|scheme| {
                // `get` rather than slicing: a URL may start with a multi-byte character.
                endpoint.url.len() > scheme.len()
                    && endpoint
                        .url
                        .get(..scheme.len())
                        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
            });
            if !scheme_ok {
                return Err(ConfigError(format!(
                    "endpoint URL {:?} is not an http:// or https:// URL",
                    endpoint.url
                )));
            }
            // Unsigned events could be forged by anyone who learns the URL.
            if endpoint.secret.is_empty() {
                return Err(ConfigError(format!(
                    "endpoint {:?} has an empty secret",
                    endpoint.url
                )));
            }
        }
        let in_range = |name: &str, value: u32, low: u32, high: u32| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "{name} is {value}, expected {low} to {high}"
                )))
            }
        };
        if let Some(unknown) = self
            .events
            .iter()
            .find(|e| !EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(ConfigError(format!(
                "unknown event type {unknown:?} (expected one of {})",
                EVENT_TYPES.join(", ")
            )));
        }
        in_range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)?;
        in_range("backoff_ms", self.backoff_ms, 0, MAX_BACKOFF_MS)?;
        in_range("timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let config = WebhookConfig::parse(
            r#"{"endpoints": [{"url": "https://a.example/hook", "secret": "s1"},
                              {"url": "http://127.0.0.1:9000/", "secret": "s2"}],
                "max_attempts": 5, "backoff_ms": 50, "timeout_ms": 700}"#,
        )
        .unwrap();
        assert_eq!(config.endpoints.len(), 2);
        assert_eq!(config.endpoints[1].url, "http://127.0.0.1:9000/");
        assert_eq!(
            (config.max_attempts, config.backoff_ms, config.timeout_ms),
            (5, 50, 700)
        );
    }

    #[test]
    fn defaults_apply() {
        let config = WebhookConfig::parse("{}").unwrap();
        assert!(config.endpoints.is_empty());
        assert_eq!(
            (config.max_attempts, config.backoff_ms, config.timeout_ms),
            (3, 200, 2_000)
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_the_reason() {
        let error = |json: &str| WebhookConfig::parse(json).unwrap_err().to_string();
        assert!(error(r#"{"endpoints": [{"url": "ftp://x", "secret": "s"}]}"#).contains("http"));
        assert!(error(r#"{"endpoints": [{"url": "https://", "secret": "s"}]}"#).contains("http"));
        assert!(error(r#"{"endpoints": [{"url": "ħttps://x", "secret": "s"}]}"#).contains("http"));
        assert!(error(r#"{"endpoints": [{"url": "https://x", "secret": ""}]}"#).contains("secret"));
        assert!(error(r#"{"endpoints": [{"url": "https://x"}]}"#).contains("secret"));
        assert!(error(r#"{"max_attempts": 0}"#).contains("max_attempts"));
        assert!(error(r#"{"max_attempts": 11}"#).contains("max_attempts"));
        assert!(error(r#"{"timeout_ms": 0}"#).contains("timeout_ms"));
        assert!(error(r#"{"backoff": 10}"#).contains("unknown field"));
        assert!(error(r#"{"events": ["session.connected"]}"#).contains("unknown event type"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = WebhookConfig::parse(
            r#"{"endpoints": [{"url": "https://x.example", "secret": "hunter2"}]}"#,
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("https://x.example"));
    }
}
