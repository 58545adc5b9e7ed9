//! Configuration: defaults, then the TOML file, then the environment (which wins).
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `LILA_BIND` | address of the HTTP API | `127.0.0.1:3001` |
//! | `LILA_DATA_DIR` | the data root | `./data` |
//! | `LILA_JWT_SECRET` | HS256 secret shared with the Portal (32 bytes or more) | generated into `{data}/lila/jwt.secret` |
//! | `LILA_OPERATOR_JWT_SECRET` | a separate secret for operator tokens | none: operator tokens use `LILA_JWT_SECRET` |
//! | `LILA_JWT_ISSUER`, `LILA_JWT_AUDIENCE` | the `iss` a token must have, an `aud` it must name | not checked |
//! | `LILA_JWT_MAX_LIFETIME_SECS` | the longest a token may be valid for | no limit |
//! | `LILA_METRICS_TOKEN` | the bearer token `GET /metrics` requires | none: open, tenants' names left out |
//! | `LILA_CONFIG` | path of the TOML file | `./lila.toml` if present |
//! | `LILA_WA_URL` | WhatsApp WebSocket URL (a simulator's, for local work; loopback only for a build without the certificate check) | WhatsApp's own |
//! | `LILA_DATABASE_URL` | PostgreSQL, for cluster mode (`postgres://…`) | none: one node, files |
//! | `LILA_HTTP_*`, `LILA_EVENTS_MAX_STREAMS_PER_CALLER` | the HTTP edge's timeouts and bounds (`http.rs`) | see README |
//! | `LILA_PLUGINS_*` | the plugin runtime's limits (`config::plugins::RuntimeLimits`) | see README |
//! | `LILA_CLUSTER_SECRET` | cluster mode: the secret every node shares to prove its requests and NOTIFY payloads (32 bytes or more) | none: required in cluster mode |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use self::plugins::{PluginConfigError, PluginsConfig, PluginsFile};

pub mod capabilities;
pub mod http;
pub mod limits;
pub mod plugins;

pub use self::limits::LimitsConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub jwt_secret: Option<String>,
    /// What a token must say besides its signature (`[jwt]`).
    pub jwt: JwtConfig,
    pub whatsapp: WhatsAppConfig,
    pub backups: BackupConfig,
    pub sessions: SessionConfig,
    pub events: EventsConfig,
    /// What one phone and one tenant may hold (`limits.rs`).
    pub limits: LimitsConfig,
    /// The HTTP edge's timeouts and bounds (`[http]`).
    pub http: http::HttpConfig,
    /// PostgreSQL for cluster mode; `None` is the single node on files.
    pub database_url: Option<DatabaseUrl>,
    /// Cluster mode: where the other nodes reach this one (`LILA_NODE_URL`,
    /// e.g. `http://10.0.0.5:3000`); `None` means `http://` and the bind
    /// address, which suits nodes on one host.
    pub node_url: Option<String>,
    /// Cluster mode: the secret the nodes prove their requests and NOTIFY
    /// payloads with (`LILA_CLUSTER_SECRET`, 32 bytes or more); required
    /// with a database. Never printed.
    pub cluster_secret: Option<ClusterSecret>,
    /// The bearer token `GET /metrics` asks for (`LILA_METRICS_TOKEN`);
    /// `None`: it answers anyone, with tenants' names left out.
    pub metrics_token: Option<String>,
    /// The TOML file this configuration was read from, if any: the plugin
    /// runtime re-reads its `[plugins]` section on change.
    pub config_file: Option<PathBuf>,
    /// Whether the file had a `[plugins]` section (checked when it was read).
    pub plugins_configured: bool,
    /// Test switch: abort the process at this reset step (see `ResetStep::name`).
    /// Set only by crash tests through `LILA_CRASH_AT`.
    pub crash_at: Option<String>,
}

/// The shortest HS256 secret accepted (RFC 7518: at least the hash's size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// What a token must carry, beyond a valid signature and `exp`. Every
/// part is optional; unset, lila accepts the Portal's tokens as they are.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// `iss` must be this (`LILA_JWT_ISSUER`, `[jwt] issuer`).
    pub issuer: Option<String>,
    /// `aud` must contain this (`LILA_JWT_AUDIENCE`, `[jwt] audience`).
    pub audience: Option<String>,
    /// A token may not be valid for longer than this from now (nor, when
    /// it says when it was issued, from its `iat`): a leaked token of the
    /// Portal's does not stay good for a year.
    pub max_lifetime: Option<Duration>,
    /// When set, operator tokens are signed with this secret and no other
    /// (`LILA_OPERATOR_JWT_SECRET`), so that whoever can mint the Portal's
    /// tenant tokens is not an operator by that alone.
    pub operator_secret: Option<String>,
}

/// The cluster secret; prints as nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(pub String);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// A PostgreSQL URL. It usually carries a password, so it prints as its
/// scheme only: a `{:?}` of the configuration never leaks it to a log.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(postgres://…)")
    }
}

#[derive(Debug, Clone, Default)]
pub struct WhatsAppConfig {
    pub url: Option<String>,
    pub version: Option<(u32, u32, u32)>,
}

impl WhatsAppConfig {
    /// Whether this configuration may run on a client that does not verify
    /// WhatsApp's certificate chain (`certificate_checked` false: a build for
    /// the simulator). Only a server on this machine is safe then: anywhere
    /// else, whoever sits on the path could pose as WhatsApp. A client that
    /// checks may go anywhere.
    pub fn check_trust(&self, certificate_checked: bool) -> Result<(), ConfigError> {
        if certificate_checked {
            return Ok(());
        }
        let refuse = |reason: String| {
            Err(ConfigError::Value {
                name: "LILA_WA_URL",
                reason,
            })
        };
        match self.url.as_deref() {
            Some(url) if url_is_loopback(url) => Ok(()),
            Some(url) => refuse(format!(
                "this lila was built without WhatsApp's certificate check (a build for the \
                 simulator: the `simulator` feature or a test build), so it only connects to a \
                 server on this machine, and {url:?} is not a loopback address; build it with \
                 `cargo build --release` for real use"
            )),
            None => refuse(
                "this lila was built without WhatsApp's certificate check (a build for the \
                 simulator: the `simulator` feature or a test build), so it refuses to connect \
                 to WhatsApp itself; point LILA_WA_URL at a simulator on this machine, or build \
                 it with `cargo build --release` for real use"
                    .into(),
            ),
        }
    }
}

/// Whether a `ws://`/`wss://` URL names a loopback host (`localhost`,
/// 127.0.0.0/8 or `[::1]`). Anything it cannot read is not loopback.
fn url_is_loopback(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "wss") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // A user part (`user@host`) could be read differently by other parsers.
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, port)) if port.is_empty() || port.starts_with(':') => host,
            _ => return false,
        },
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// How often a connected session's store is snapshotted. Zero disables backups.
    pub interval: Duration,
    /// How many snapshots each phone keeps.
    pub retention: usize,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long a logout may take before the reset goes on without it.
    pub logout_timeout: Duration,
    /// How long a send, a pairing-code or a groups request may take.
    pub request_timeout: Duration,
    /// Longest wait between two restarts of a failing client.
    pub max_restart_backoff: Duration,
    /// How many clients may be starting at once (boot with many sessions).
    pub max_concurrent_starts: usize,
    /// How long stopping every session may take at process shutdown (all
    /// are stopped at once); a service manager's own limit is usually 10 s.
    pub shutdown_deadline: Duration,
}

/// The event stream (`GET /api/events`) and the plugins' event hooks.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// How many recent events are kept for `Last-Event-ID` resumes.
    pub buffer: usize,
    /// How many events a stream subscriber may fall behind before it loses
    /// some (it is then told how many with `events.dropped`).
    pub subscriber_lag: usize,
    /// How often an idle stream sends a comment line, so proxies keep it open.
    pub heartbeat: Duration,
    /// How many events may wait for one plugin's `on-event` before new ones
    /// are dropped (and counted).
    pub plugin_queue: usize,
    /// How many streams one caller (a tenant, or the operators together)
    /// may hold open at once; one more is answered 429.
    pub max_streams_per_caller: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            buffer: 4_096,
            subscriber_lag: 1_024,
            heartbeat: Duration::from_secs(15),
            plugin_queue: 256,
            max_streams_per_caller: 16,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 3001)),
            data_dir: PathBuf::from("./data"),
            jwt_secret: None,
            jwt: JwtConfig::default(),
            whatsapp: WhatsAppConfig::default(),
            backups: BackupConfig {
                interval: Duration::from_secs(3600),
                retention: 5,
            },
            sessions: SessionConfig {
                logout_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
                max_restart_backoff: Duration::from_secs(60),
                max_concurrent_starts: 16,
                shutdown_deadline: Duration::from_secs(4),
            },
            events: EventsConfig::default(),
            limits: LimitsConfig::default(),
            http: http::HttpConfig::default(),
            database_url: None,
            node_url: None,
            cluster_secret: None,
            metrics_token: None,
            config_file: None,
            plugins_configured: false,
            crash_at: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid value for {name}: {reason}")]
    Value { name: &'static str, reason: String },
    #[error("invalid value for LILA_BIND: {value:?}: {source}")]
    Bind {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// The `[plugins]` section, checked by `plugins::PluginsConfig::from_file`.
    #[error("invalid value for plugins: {}", .source.0)]
    Plugins {
        #[source]
        source: PluginConfigError,
    },
}

/// The TOML file's shape. Every field is optional; unknown fields are errors
/// so that a typo is reported instead of silently ignored.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub jwt_secret: Option<String>,
    #[serde(default)]
    pub jwt: JwtFile,
    pub database_url: Option<String>,
    pub node_url: Option<String>,
    /// Prefer `LILA_CLUSTER_SECRET`.
    pub cluster_secret: Option<String>,
    /// Prefer `LILA_METRICS_TOKEN`.
    pub metrics_token: Option<String>,
    #[serde(default)]
    pub whatsapp: WhatsAppFile,
    #[serde(default)]
    pub backups: BackupsFile,
    #[serde(default)]
    pub sessions: SessionsFile,
    #[serde(default)]
    pub events: EventsFile,
    #[serde(default)]
    pub http: http::HttpFile,
    /// The plugin runtime's section (`config::plugins` checks it).
    pub plugins: Option<PluginsFile>,
    #[serde(default)]
    pub limits: limits::LimitsFile,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub max_lifetime_secs: Option<u64>,
    /// Prefer `LILA_OPERATOR_JWT_SECRET`.
    pub operator_secret: Option<String>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppFile {
    pub url: Option<String>,
    /// `"2.3000.1027868167"`
    pub version: Option<String>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsFile {
    pub interval_secs: Option<u64>,
    pub retention: Option<usize>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    pub logout_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_restart_backoff_secs: Option<u64>,
    pub max_concurrent_starts: Option<usize>,
    pub shutdown_deadline_secs: Option<u64>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFile {
    pub buffer: Option<usize>,
    pub subscriber_lag: Option<usize>,
    pub heartbeat_secs: Option<u64>,
    pub plugin_queue: Option<usize>,
    pub max_streams_per_caller: Option<usize>,
}

/// The version the client announces when it is pointed at a custom URL (a
/// simulator): there is then no WhatsApp web site to fetch the current one from.
pub const SIMULATOR_VERSION: (u32, u32, u32) = (2, 3000, 1_027_868_167);

fn parse_version(raw: &str) -> Result<(u32, u32, u32), ConfigError> {
    let bad = || ConfigError::Value {
        name: "whatsapp.version",
        reason: format!("{raw:?} is not like 2.3000.1027868167"),
    };
    let parts: Vec<u32> = raw
        .split('.')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => Err(bad()),
    }
}

impl Config {
    /// Loads the configuration the way `lila serve` does: `LILA_CONFIG` (or
    /// `./lila.toml` if it exists), then the environment.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let path = match env("LILA_CONFIG") {
            Some(path) => Some(PathBuf::from(path)),
            None if Path::new("lila.toml").is_file() => Some(PathBuf::from("lila.toml")),
            None => None,
        };
        let file = path.as_deref().map(read_file).transpose()?;
        let mut config = Config::from_parts(file.unwrap_or_default(), env)?;
        config.config_file = path;
        Ok(config)
    }

    pub fn from_parts(
        file: ConfigFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(plugins) = &file.plugins {
            // Checked now so that a bad section stops `serve` at start-up;
            // the runtime re-reads and re-checks it on every reload.
            PluginsConfig::from_file_and_env(plugins, Path::new("."), env)
                .map_err(|source| ConfigError::Plugins { source })?;
            config.plugins_configured = true;
        }
        if let Some(bind) = env("LILA_BIND").or(file.bind) {
            config.bind = bind.parse().map_err(|source| ConfigError::Bind {
                value: bind.clone(),
                source,
            })?;
        }
        if let Some(dir) = env("LILA_DATA_DIR").map(PathBuf::from).or(file.data_dir) {
            config.data_dir = dir;
        }
        config.jwt_secret = env("LILA_JWT_SECRET")
            .or(file.jwt_secret)
            .filter(|s| !s.is_empty());
        let long_enough = |name: &'static str, secret: &Option<String>| match secret {
            Some(secret) if secret.len() < MIN_JWT_SECRET_BYTES => Err(ConfigError::Value {
                name,
                reason: format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes (it has {})",
                    secret.len()
                ),
            }),
            _ => Ok(()),
        };
        long_enough("LILA_JWT_SECRET", &config.jwt_secret)?;
        let jwt = file.jwt;
        let non_empty = |raw: Option<String>| raw.filter(|s| !s.is_empty());
        config.jwt = JwtConfig {
            issuer: non_empty(env("LILA_JWT_ISSUER").or(jwt.issuer)),
            audience: non_empty(env("LILA_JWT_AUDIENCE").or(jwt.audience)),
            max_lifetime: match env("LILA_JWT_MAX_LIFETIME_SECS") {
                Some(raw) => Some(raw.parse().map_err(|_| ConfigError::Value {
                    name: "LILA_JWT_MAX_LIFETIME_SECS",
                    reason: format!("{raw:?} is not a whole number of seconds"),
                })?),
                None => jwt.max_lifetime_secs,
            }
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs),
            operator_secret: non_empty(env("LILA_OPERATOR_JWT_SECRET").or(jwt.operator_secret)),
        };
        long_enough("LILA_OPERATOR_JWT_SECRET", &config.jwt.operator_secret)?;
        config.metrics_token = non_empty(env("LILA_METRICS_TOKEN").or(file.metrics_token));
        if config.metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Value {
                name: "LILA_METRICS_TOKEN",
                reason: "must be at least 16 bytes".into(),
            });
        }
        if config.jwt.operator_secret.is_some() && config.jwt.operator_secret == config.jwt_secret {
            return Err(ConfigError::Value {
                name: "LILA_OPERATOR_JWT_SECRET",
                reason: "must differ from LILA_JWT_SECRET (or it makes every tenant token's signer an operator)".into(),
            });
        }
        config.database_url = match env("LILA_DATABASE_URL")
            .or(file.database_url)
            .filter(|s| !s.is_empty())
        {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(DatabaseUrl(url))
            }
            Some(_) => {
                return Err(ConfigError::Value {
                    name: "LILA_DATABASE_URL",
                    reason:
                        "must be a PostgreSQL URL (postgres://user:password@host:port/database)"
                            .into(),
                });
            }
            None => None,
        };
        config.node_url = match env("LILA_NODE_URL")
            .or(file.node_url)
            .filter(|s| !s.is_empty())
        {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(url),
            Some(_) => {
                return Err(ConfigError::Value {
                    name: "LILA_NODE_URL",
                    reason: "must be an http:// or https:// URL where the other nodes reach this one (http://10.0.0.5:3000)".into(),
                });
            }
            None => None,
        };
        let cluster_secret = env("LILA_CLUSTER_SECRET")
            .or(file.cluster_secret)
            .filter(|s| !s.is_empty());
        long_enough("LILA_CLUSTER_SECRET", &cluster_secret)?;
        config.cluster_secret = cluster_secret.map(ClusterSecret);
        config.whatsapp.url = env("LILA_WA_URL")
            .or(file.whatsapp.url)
            .filter(|s| !s.is_empty());
        config.whatsapp.version = match file.whatsapp.version {
            Some(v) => Some(parse_version(&v)?),
            None if config.whatsapp.url.is_some() => Some(SIMULATOR_VERSION),
            None => None,
        };
        if let Some(secs) = file.backups.interval_secs {
            config.backups.interval = Duration::from_secs(secs);
        }
        if let Some(n) = file.backups.retention {
            if n == 0 {
                return Err(ConfigError::Value {
                    name: "backups.retention",
                    reason: "must be at least 1".into(),
                });
            }
            config.backups.retention = n;
        }
        let s = &mut config.sessions;
        if let Some(secs) = file.sessions.logout_timeout_secs {
            s.logout_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = file.sessions.request_timeout_secs {
            s.request_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = file.sessions.max_restart_backoff_secs {
            s.max_restart_backoff = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = file.sessions.max_concurrent_starts {
            s.max_concurrent_starts = n.max(1);
        }
        if let Some(secs) = file.sessions.shutdown_deadline_secs {
            s.shutdown_deadline = Duration::from_secs(secs.max(1));
        }
        let e = &mut config.events;
        if let Some(n) = file.events.buffer {
            e.buffer = n.max(1);
        }
        if let Some(n) = file.events.subscriber_lag {
            e.subscriber_lag = n.max(1);
        }
        if let Some(secs) = file.events.heartbeat_secs {
            e.heartbeat = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = file.events.plugin_queue {
            e.plugin_queue = n.max(1);
        }
        config.limits = LimitsConfig::from_parts(&file.limits, env)?;
        if let Some(n) = http::positive(
            "LILA_EVENTS_MAX_STREAMS_PER_CALLER",
            env,
            file.events.max_streams_per_caller,
        )? {
            e.max_streams_per_caller = n;
        }
        config.http = http::HttpConfig::from_parts(&file.http, env)?;
        config.crash_at = env("LILA_CRASH_AT").filter(|s| !s.is_empty());
        Ok(config)
    }
}

/// The `[plugins]` section of the config file at `path`, read afresh (the
/// plugin runtime calls this on every reload).
pub fn read_plugins_section(path: &Path) -> Result<Option<PluginsFile>, ConfigError> {
    Ok(read_file(path)?.plugins)
}

fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_config_text(path, &text)
}

/// The config file at `path` whose contents are `text`.
pub fn parse_config_text(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn a_build_without_the_certificate_check_talks_to_this_machine_only() {
        let at = |url: Option<&str>| WhatsAppConfig {
            url: url.map(str::to_owned),
            version: None,
        };
        for url in [
            "ws://127.0.0.1:9/ws/chat",
            "ws://127.8.9.10/ws/chat",
            "wss://localhost:4000/ws/chat",
            "ws://LOCALHOST/ws/chat",
            "ws://[::1]:4000/ws/chat",
            "ws://[::1]",
        ] {
            assert!(at(Some(url)).check_trust(false).is_ok(), "{url}");
        }
        for url in [
            "wss://web.whatsapp.com/ws/chat",
            "ws://10.0.0.5:4000/ws/chat",
            "ws://127.0.0.1.example.com/ws/chat",
            "ws://localhost.example.com/ws/chat",
            "ws://127.0.0.1@evil.example/ws/chat",
            "ws://evil.example#@127.0.0.1/",
            "http://127.0.0.1/ws/chat",
            "ws://[::1]x/ws/chat",
            "127.0.0.1:4000",
        ] {
            let refusal = at(Some(url)).check_trust(false).unwrap_err().to_string();
            assert!(
                refusal.contains("not a loopback address"),
                "{url}: {refusal}"
            );
        }
        let refusal = at(None).check_trust(false).unwrap_err().to_string();
        assert!(
            refusal.contains("refuses to connect to WhatsApp itself"),
            "{refusal}"
        );
        // With the check on, anywhere is fine, WhatsApp's own included.
        assert!(at(None).check_trust(true).is_ok());
        assert!(at(Some("ws://10.0.0.5/ws/chat")).check_trust(true).is_ok());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file: ConfigFile = toml::from_str(
            "bind = \"0.0.0.0:9000\"\ndata_dir = \"/srv/lila\"\n[backups]\ninterval_secs = 60\nretention = 2\n",
        )
        .unwrap();
        let config = Config::from_parts(file, &env_of(&[("LILA_BIND", "127.0.0.1:4000")])).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:4000");
        assert_eq!(config.data_dir, PathBuf::from("/srv/lila"));
        assert_eq!(config.backups.interval, Duration::from_secs(60));
        assert_eq!(config.backups.retention, 2);
    }

    #[test]
    fn a_database_url_is_postgres_only_and_never_printed() {
        let file: ConfigFile =
            toml::from_str("database_url = \"postgres://lila:s3cret@db:5432/lila\"\n").unwrap();
        let config = Config::from_parts(file, &env_of(&[])).unwrap();
        let url = config.database_url.clone().unwrap();
        assert_eq!(url.0, "postgres://lila:s3cret@db:5432/lila");
        assert!(!format!("{config:?}").contains("s3cret"));
        let refused = Config::from_parts(
            ConfigFile::default(),
            &env_of(&[("LILA_DATABASE_URL", "mysql://db/lila")]),
        )
        .unwrap_err();
        assert!(refused.to_string().contains("PostgreSQL URL"), "{refused}");
        let none = Config::from_parts(ConfigFile::default(), &env_of(&[])).unwrap();
        assert_eq!(none.database_url, None);
    }

    #[test]
    fn a_simulator_url_pins_the_client_version() {
        let config = Config::from_parts(
            ConfigFile::default(),
            &env_of(&[("LILA_WA_URL", "ws://127.0.0.1:9/ws/chat")]),
        )
        .unwrap();
        assert_eq!(config.whatsapp.version, Some(SIMULATOR_VERSION));
        let config = Config::from_parts(ConfigFile::default(), &env_of(&[])).unwrap();
        assert_eq!(config.whatsapp.version, None);
    }

    #[test]
    fn a_missing_section_means_the_same_as_an_empty_one() {
        let absent: ConfigFile = toml::from_str("").unwrap();
        assert_eq!(absent, ConfigFile::default());
        let empty: ConfigFile = toml::from_str("[whatsapp]\n[backups]\n[sessions]\n").unwrap();
        assert_eq!(empty, absent);
        let env = env_of(&[]);
        let (a, b) = (
            Config::from_parts(absent, &env).unwrap(),
            Config::from_parts(empty, &env).unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(toml::from_str::<ConfigFile>("bnid = \"x\"").is_err());
        assert!(
            Config::from_parts(ConfigFile::default(), &env_of(&[("LILA_BIND", "nope")])).is_err()
        );
        assert!(
            Config::from_parts(
                ConfigFile::default(),
                &env_of(&[("LILA_JWT_SECRET", "short")])
            )
            .is_err()
        );
    }

    #[test]
    fn a_cluster_secret_is_32_bytes_at_least_and_never_printed() {
        let secret = |value: &str| {
            let value = value.to_owned();
            let env = move |k: &str| (k == "LILA_CLUSTER_SECRET").then(|| value.clone());
            Config::from_parts(ConfigFile::default(), &env).map(|c| c.cluster_secret)
        };
        assert_eq!(
            secret(&"c".repeat(31)).unwrap_err().to_string(),
            "invalid value for LILA_CLUSTER_SECRET: must be at least 32 bytes (it has 31)"
        );
        let good = "c".repeat(32);
        let config = secret(&good).unwrap();
        assert_eq!(config.as_ref().map(|s| s.0.as_str()), Some(good.as_str()));
        assert!(!format!("{config:?}").contains(&good));
    }

    #[test]
    fn jwt_secrets_are_32_bytes_at_least_and_the_operators_its_own() {
        fn try_env(vars: &[(&str, &str)]) -> Result<JwtConfig, ConfigError> {
            let env = |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            Config::from_parts(ConfigFile::default(), &env).map(|c| c.jwt)
        }
        let thirty_one = "a".repeat(31);
        let error = try_env(&[("LILA_JWT_SECRET", thirty_one.as_str())]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value for LILA_JWT_SECRET: must be at least 32 bytes (it has 31)"
        );
        let tenant = "t".repeat(32);
        let operator = "o".repeat(32);
        let jwt = try_env(&[
            ("LILA_JWT_SECRET", tenant.as_str()),
            ("LILA_OPERATOR_JWT_SECRET", operator.as_str()),
            ("LILA_JWT_ISSUER", "portal"),
            ("LILA_JWT_MAX_LIFETIME_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(jwt.operator_secret.as_deref(), Some(operator.as_str()));
        assert_eq!(jwt.issuer.as_deref(), Some("portal"));
        assert_eq!(jwt.max_lifetime, Some(Duration::from_secs(3600)));
        assert!(
            try_env(&[
                ("LILA_JWT_SECRET", tenant.as_str()),
                ("LILA_OPERATOR_JWT_SECRET", tenant.as_str()),
            ])
            .is_err()
        );
        assert!(try_env(&[("LILA_JWT_MAX_LIFETIME_SECS", "soon")]).is_err());
        let file: ConfigFile =
            toml::from_str("[jwt]\naudience = \"lila\"\nmax_lifetime_secs = 60\n").unwrap();
        let jwt = Config::from_parts(file, &env_of(&[])).unwrap().jwt;
        assert_eq!(jwt.audience.as_deref(), Some("lila"));
        assert_eq!(jwt.max_lifetime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn errors_keep_their_sentence_and_their_cause() {
        use std::error::Error;
        let parse = parse_config_text(Path::new("lila.toml"), "bind = ").unwrap_err();
        assert!(
            parse
                .to_string()
                .starts_with("invalid config file lila.toml: TOML parse error"),
            "{parse}"
        );
        assert!(parse.source().is_some());
        let bind = Config::from_parts(ConfigFile::default(), &env_of(&[("LILA_BIND", "nope")]))
            .unwrap_err();
        assert_eq!(
            bind.to_string(),
            "invalid value for LILA_BIND: \"nope\": invalid socket address syntax"
        );
        assert!(bind.source().is_some());
        let file = parse_config_text(Path::new("lila.toml"), "[plugins]\nversion = 2\n").unwrap();
        let plugins = Config::from_parts(file, &env_of(&[])).unwrap_err();
        assert_eq!(
            plugins.to_string(),
            "invalid value for plugins: version 2 is not supported (this lila reads version 1)"
        );
        assert!(plugins.source().is_some());
    }
}
