//! The plugin's configuration: the JSON the host's `config()` import returns.
//!
//! ```json
//! { "include_credentials": false, "veto_on_failure": false }
//! ```
//!
//! Both default to `false`. `include_credentials` also needs the operator to
//! grant this plugin the `credentials` capability in lila.toml; the plugin's
//! own opt-in alone reads nothing.

use std::fmt;

use serde::Deserialize;

/// Why the configuration was rejected, as a sentence for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid backup-archive config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

// Unknown fields are errors: a misspelt "include_credential" must not silently
// change what leaves the session directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Put the session's credential files (base64) into the archive.
    #[serde(default)]
    pub include_credentials: bool,
    /// Veto the reset when the archive cannot be made, instead of letting the
    /// data go unarchived.
    #[serde(default)]
    pub veto_on_failure: bool,
}

impl BackupConfig {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        // The host promises `{}` when the operator gave no config; an empty
        // string is treated the same.
        let json = if json.trim().is_empty() { "{}" } else { json };
        serde_json::from_str(json).map_err(|error| ConfigError(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_credentials_out_and_never_veto() {
        assert_eq!(BackupConfig::parse("{}"), Ok(BackupConfig::default()));
        assert_eq!(BackupConfig::parse(" "), Ok(BackupConfig::default()));
    }

    #[test]
    fn both_switches_parse() {
        let config =
            BackupConfig::parse(r#"{"include_credentials": true, "veto_on_failure": true}"#);
        assert_eq!(
            config,
            Ok(BackupConfig {
                include_credentials: true,
                veto_on_failure: true
            })
        );
    }

    #[test]
    fn misspelt_switches_are_rejected() {
        let error = BackupConfig::parse(r#"{"include_credential": true}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
        assert!(BackupConfig::parse(r#"{"include_credentials": "yes"}"#).is_err());
    }
}
