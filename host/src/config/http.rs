//! The `[http]` section: how long a client may take and how many
//! connections and requests the HTTP edge holds at once (`http/edge.rs`
//! and `http/caller_limits.rs` enforce them).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from the connection's opening or from its first
    /// byte after an idle keep-alive connection (`LILA_HTTP_HEADER_TIMEOUT_SECS`).
    pub header_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request on it
    /// (`LILA_HTTP_IDLE_TIMEOUT_SECS`).
    pub idle_timeout: Duration,
    /// How many connections are served at once (`LILA_HTTP_MAX_CONNECTIONS`).
    /// At the limit a new connection closes the oldest one that has no
    /// request in flight, or waits for one to end.
    pub max_connections: usize,
    /// How many requests one tenant may have in flight at once
    /// (`LILA_HTTP_MAX_REQUESTS_PER_TENANT`); more are answered 429.
    /// Operators are not counted.
    pub max_requests_per_tenant: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1_024,
            max_requests_per_tenant: 64,
        }
    }
}

/// `[http]` in the config file.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub header_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_requests_per_tenant: Option<usize>,
}

impl HttpConfig {
    /// The defaults, then `file`, then the environment; every value must be
    /// at least 1 (a zero would refuse every client).
    pub fn from_parts(
        file: &HttpFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpConfig, ConfigError> {
        let defaults = HttpConfig::default();
        let secs = |name, file: Option<u64>, default: Duration| {
            positive(name, env, file.map(|n| n as usize))
                .map(|n| n.map_or(default, |n| Duration::from_secs(n as u64)))
        };
        Ok(HttpConfig {
            header_timeout: secs(
                "LILA_HTTP_HEADER_TIMEOUT_SECS",
                file.header_timeout_secs,
                defaults.header_timeout,
            )?,
            idle_timeout: secs(
                "LILA_HTTP_IDLE_TIMEOUT_SECS",
                file.idle_timeout_secs,
                defaults.idle_timeout,
            )?,
            max_connections: positive("LILA_HTTP_MAX_CONNECTIONS", env, file.max_connections)?
                .unwrap_or(defaults.max_connections),
            max_requests_per_tenant: positive(
                "LILA_HTTP_MAX_REQUESTS_PER_TENANT",
                env,
                file.max_requests_per_tenant,
            )?
            .unwrap_or(defaults.max_requests_per_tenant),
        })
    }
}

/// The variable `name` if set (it wins), else the file's value; either
/// must be a whole number of at least 1.
pub(super) fn positive(
    name: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<usize>,
) -> Result<Option<usize>, ConfigError> {
    let value = match env(name).filter(|raw| !raw.is_empty()) {
        Some(raw) => Some(
            raw.trim()
                .parse::<usize>()
                .map_err(|_| ConfigError::Value {
                    name,
                    reason: format!("{raw:?} is not a whole number"),
                })?,
        ),
        None => file,
    };
    match value {
        Some(0) => Err(ConfigError::Value {
            name,
            reason: "must be at least 1".into(),
        }),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: HttpFile, env: &[(&str, &str)]) -> Result<HttpConfig, String> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        HttpConfig::from_parts(&file, &lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn the_environment_wins_over_the_file_and_zero_is_refused() {
        let file = HttpFile {
            header_timeout_secs: Some(5),
            max_connections: Some(10),
            ..HttpFile::default()
        };
        let config = check(file, &[("LILA_HTTP_MAX_CONNECTIONS", "20")]).expect("valid");
        assert_eq!(config.header_timeout, Duration::from_secs(5));
        assert_eq!(config.max_connections, 20);
        assert_eq!(config.idle_timeout, HttpConfig::default().idle_timeout);
        assert_eq!(
            check(
                HttpFile::default(),
                &[("LILA_HTTP_MAX_REQUESTS_PER_TENANT", "0")]
            ),
            Err("invalid value for LILA_HTTP_MAX_REQUESTS_PER_TENANT: must be at least 1".into())
        );
        assert_eq!(
            check(
                HttpFile::default(),
                &[("LILA_HTTP_IDLE_TIMEOUT_SECS", "soon")]
            ),
            Err(
                "invalid value for LILA_HTTP_IDLE_TIMEOUT_SECS: \"soon\" is not a whole number"
                    .into()
            )
        );
    }
}
