//! The `[plugins]` section of lila.toml and the per-tenant `NAME.toml`:
//! their file shapes (unknown keys rejected) and the checked specs built from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::capabilities::{AllowedUrl, Capabilities};
use crate::core::tenant::TenantId;

/// The only version of the `[plugins]` section this host reads.
pub const PLUGINS_CONFIG_VERSION: u32 = 1;
const DEFAULT_TIME_MS: u64 = 1000;
const MAX_TIME_MS: u64 = 5000;
const DEFAULT_MEMORY_MIB: u64 = 32;
const MAX_MEMORY_MIB: u64 = 512;
/// Defaults for the whole reset: with the default 5 s logout they keep a
/// reset under the Portal's 15 s whatever the plugins do.
const DEFAULT_BEFORE_CLEAR_TOTAL_MS: u64 = 4000;
const DEFAULT_AFTER_CLEAR_TOTAL_MS: u64 = 4000;
const MAX_TOTAL_MS: u64 = 8000;

/// Defaults of the runtime's own limits (`RuntimeLimits`). The bundled
/// plugins use 3 core instances, 1 memory and 2 tables each; the Python
/// example (componentize-py) 14 instances, 1 memory and 2 tables, and is
/// 18 MB: the defaults leave room for such toolchains and still bound what a
/// hostile component can make the host reserve.
const DEFAULT_MAX_INSTANCES: usize = 64;
const DEFAULT_MAX_MEMORIES: usize = 8;
const DEFAULT_MAX_TABLES: usize = 16;
const DEFAULT_MAX_CONCURRENT_CALLS: usize = 16;
const DEFAULT_MAX_FILE_MIB: u64 = 64;
/// Compiles at once: each takes a core and, for an 18 MB component,
/// hundreds of MiB; two keep one slow compile from holding the others back.
const DEFAULT_MAX_CONCURRENT_COMPILES: u64 = 2;
/// The Python example compiles in 8.7 s in a release build
/// (docs/BENCHMARKS.md) and took over 60 s in the debug test build on the
/// shared 2-core machine: five minutes bound a pathological compile and
/// still fit a slow machine.
const DEFAULT_COMPILE_TIMEOUT_MS: u64 = 300_000;
const DEFAULT_ARCHIVE_QUOTA_MIB: u64 = 256;

/// `[plugins]` in lila.toml, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsFile {
    /// Must be 1.
    pub version: u32,
    /// Folder of the operator's plugin files, relative to the config file's folder.
    pub dir: Option<PathBuf>,
    /// Folder of tenant plugins (`{tenant_dir}/{companyId}/NAME.wasm`), relative to the config file's folder.
    pub tenant_dir: Option<PathBuf>,
    /// Time all `before-clear` calls of one reset may take together.
    pub before_clear_total_ms: Option<u64>,
    /// Time all `after-clear` calls of one reset may take together.
    pub after_clear_total_ms: Option<u64>,
    /// Core instances, memories and tables one call's store may create
    /// (`LILA_PLUGINS_MAX_INSTANCES`, `_MAX_MEMORIES`, `_MAX_TABLES`).
    pub max_instances: Option<usize>,
    pub max_memories: Option<usize>,
    pub max_tables: Option<usize>,
    /// Plugin calls running at once, all plugins and hooks together
    /// (`LILA_PLUGINS_MAX_CONCURRENT_CALLS`).
    pub max_concurrent_calls: Option<usize>,
    /// Largest plugin file loaded (`LILA_PLUGINS_MAX_FILE_MIB`).
    pub max_file_mib: Option<u64>,
    /// Longest one plugin's compile may take (`LILA_PLUGINS_COMPILE_TIMEOUT_MS`).
    pub compile_timeout_ms: Option<u64>,
    /// Compiles running at once (`LILA_PLUGINS_MAX_CONCURRENT_COMPILES`).
    pub max_concurrent_compiles: Option<usize>,
    /// Bytes of archives one plugin may keep per tenant (`LILA_PLUGINS_ARCHIVE_QUOTA_MIB`).
    pub archive_quota_mib: Option<u64>,
    #[serde(default)]
    pub tenant_plugins: TenantPluginsFile,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginFile>,
}

impl PluginsFile {
    /// What a config file without a `[plugins]` section means: plugins off,
    /// operator and tenant ones alike. This is what `serve` does when it
    /// starts without the section, so removing the section from a running
    /// server's config turns plugins off too instead of leaving the tenant
    /// plugins running.
    pub fn off() -> PluginsFile {
        PluginsFile {
            version: PLUGINS_CONFIG_VERSION,
            dir: None,
            tenant_dir: None,
            before_clear_total_ms: None,
            after_clear_total_ms: None,
            max_instances: None,
            max_memories: None,
            max_tables: None,
            max_concurrent_calls: None,
            max_file_mib: None,
            compile_timeout_ms: None,
            max_concurrent_compiles: None,
            archive_quota_mib: None,
            tenant_plugins: TenantPluginsFile {
                enabled: false,
                ..TenantPluginsFile::default()
            },
            plugins: Vec::new(),
        }
    }
}

/// `[[plugins.plugin]]`: one operator plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    pub name: String,
    /// Defaults to `{name}.wasm` in `dir`.
    pub file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `before-clear`, `after-clear`; defaults to both.
    pub hooks: Option<Vec<String>>,
    /// Tenant ids (`companyId`), or `["*"]` (the default) for every tenant.
    pub tenants: Option<Vec<String>>,
    /// `open` (the default) or `closed`.
    pub fail: Option<String>,
    pub time_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub capabilities: CapabilitiesFile,
    /// Handed to the plugin as JSON by `config()`.
    pub config: Option<toml::Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesFile {
    /// URL prefixes `http-post` may reach.
    #[serde(default)]
    pub http: Vec<String>,
    #[serde(default)]
    pub archive: bool,
    #[serde(default)]
    pub credentials: bool,
}

/// `[plugins.tenant_plugins]`: what tenant plugins may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPluginsFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The most a tenant plugin may ask for; also its default.
    pub time_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    /// `http` and `archive` only: credentials are never granted to tenant plugins.
    #[serde(default)]
    pub capabilities: CapabilitiesFile,
}

/// What an absent `[plugins.tenant_plugins]` means: the same as an empty one.
impl Default for TenantPluginsFile {
    fn default() -> Self {
        TenantPluginsFile {
            enabled: true,
            time_ms: None,
            memory_mib: None,
            capabilities: CapabilitiesFile::default(),
        }
    }
}

/// `{tenant_dir}/{companyId}/NAME.toml`, beside `NAME.wasm`: the tenant's own settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPluginFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub hooks: Option<Vec<String>>,
    pub fail: Option<String>,
    pub time_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub config: Option<toml::Table>,
}

/// What an absent `NAME.toml` means: the same as an empty one, so a tenant
/// plugin dropped in without settings runs with the documented defaults (a
/// derived `Default` would make `enabled` false and silently skip it).
impl Default for TenantPluginFile {
    fn default() -> Self {
        TenantPluginFile {
            enabled: true,
            hooks: None,
            fail: None,
            time_ms: None,
            memory_mib: None,
            config: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Open,
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookSet {
    pub before_clear: bool,
    pub after_clear: bool,
    /// `on-event` (lila:hooks@0.2.0); called only if the component exports it.
    pub on_event: bool,
}

impl HookSet {
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.before_clear {
            names.push("before_clear");
        }
        if self.after_clear {
            names.push("after_clear");
        }
        if self.on_event {
            names.push("on_event");
        }
        names
    }
}

/// Which tenants' resets an operator plugin runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(Vec<TenantId>),
}

/// Who installed a plugin, which decides whose resets it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOwner {
    Operator(TenantScope),
    /// A tenant's own plugin: it runs only for this tenant's sessions.
    Tenant(TenantId),
}

/// One plugin, checked: everything the runtime needs to load and call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Unique: the operator's name, or `{tenant}/{name}` for a tenant plugin.
    pub key: String,
    pub name: String,
    pub owner: PluginOwner,
    pub path: PathBuf,
    pub enabled: bool,
    pub hooks: HookSet,
    pub fail: FailMode,
    pub time_budget: Duration,
    pub memory_bytes: usize,
    pub capabilities: Capabilities,
    /// The `config` table as a JSON object.
    pub config_json: String,
}

impl PluginSpec {
    /// Whether this plugin runs for a reset of a session owned by `tenant`.
    pub fn runs_for(&self, tenant: Option<&TenantId>) -> bool {
        match (&self.owner, tenant) {
            (PluginOwner::Operator(TenantScope::All), _) => true,
            (PluginOwner::Operator(TenantScope::Only(list)), Some(t)) => list.contains(t),
            (PluginOwner::Tenant(owner), Some(t)) => owner == t,
            (_, None) => false,
        }
    }
}

/// The whole section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    pub tenant_dir: Option<PathBuf>,
    pub before_clear_total: Duration,
    pub after_clear_total: Duration,
    pub limits: RuntimeLimits,
    pub tenant_plugins: Option<TenantPluginLimits>,
    /// Operator plugins, in config order (the order they run in).
    pub plugins: Vec<PluginSpec>,
}

/// The runtime's limits, the same for every plugin: what one call's store
/// may create, how many calls run at once, how big a plugin file and how
/// long its compile may be, and how much archive a (plugin, tenant) keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLimits {
    pub max_instances: usize,
    pub max_memories: usize,
    pub max_tables: usize,
    pub max_concurrent_calls: usize,
    pub max_file_bytes: u64,
    pub compile_timeout: Duration,
    pub max_concurrent_compiles: usize,
    pub archive_quota_bytes: u64,
}

impl Default for RuntimeLimits {
    fn default() -> RuntimeLimits {
        RuntimeLimits {
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memories: DEFAULT_MAX_MEMORIES,
            max_tables: DEFAULT_MAX_TABLES,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_file_bytes: DEFAULT_MAX_FILE_MIB << 20,
            compile_timeout: Duration::from_millis(DEFAULT_COMPILE_TIMEOUT_MS),
            max_concurrent_compiles: DEFAULT_MAX_CONCURRENT_COMPILES as usize,
            archive_quota_bytes: DEFAULT_ARCHIVE_QUOTA_MIB << 20,
        }
    }
}

impl RuntimeLimits {
    /// The section's keys, each overridden by its `LILA_PLUGINS_*` variable.
    fn read(
        file: &PluginsFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RuntimeLimits, PluginConfigError> {
        let setting = |key: &str, var: &str, from_file: Option<u64>, default: u64, max: u64| {
            let value = match env(var).filter(|v| !v.is_empty()) {
                Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
                    PluginConfigError(format!("{var}: {raw:?} is not a whole number"))
                })?),
                None => from_file,
            };
            bounded(value, default, 1, max, &format!("{key} ({var})"))
        };
        let count = |n: Option<usize>| n.map(|n| n as u64);
        Ok(RuntimeLimits {
            max_instances: setting(
                "max_instances",
                "LILA_PLUGINS_MAX_INSTANCES",
                count(file.max_instances),
                DEFAULT_MAX_INSTANCES as u64,
                10_000,
            )? as usize,
            max_memories: setting(
                "max_memories",
                "LILA_PLUGINS_MAX_MEMORIES",
                count(file.max_memories),
                DEFAULT_MAX_MEMORIES as u64,
                10_000,
            )? as usize,
            max_tables: setting(
                "max_tables",
                "LILA_PLUGINS_MAX_TABLES",
                count(file.max_tables),
                DEFAULT_MAX_TABLES as u64,
                10_000,
            )? as usize,
            max_concurrent_calls: setting(
                "max_concurrent_calls",
                "LILA_PLUGINS_MAX_CONCURRENT_CALLS",
                count(file.max_concurrent_calls),
                DEFAULT_MAX_CONCURRENT_CALLS as u64,
                4096,
            )? as usize,
            max_file_bytes: setting(
                "max_file_mib",
                "LILA_PLUGINS_MAX_FILE_MIB",
                file.max_file_mib,
                DEFAULT_MAX_FILE_MIB,
                4096,
            )? << 20,
            compile_timeout: Duration::from_millis(setting(
                "compile_timeout_ms",
                "LILA_PLUGINS_COMPILE_TIMEOUT_MS",
                file.compile_timeout_ms,
                DEFAULT_COMPILE_TIMEOUT_MS,
                3_600_000,
            )?),
            max_concurrent_compiles: setting(
                "max_concurrent_compiles",
                "LILA_PLUGINS_MAX_CONCURRENT_COMPILES",
                count(file.max_concurrent_compiles),
                DEFAULT_MAX_CONCURRENT_COMPILES,
                256,
            )? as usize,
            archive_quota_bytes: setting(
                "archive_quota_mib",
                "LILA_PLUGINS_ARCHIVE_QUOTA_MIB",
                file.archive_quota_mib,
                DEFAULT_ARCHIVE_QUOTA_MIB,
                1 << 20,
            )? << 20,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPluginLimits {
    pub max_time: Duration,
    pub max_memory_mib: u64,
    pub capabilities: Capabilities,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("plugins: {0}")]
pub struct PluginConfigError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, PluginConfigError> {
    Err(PluginConfigError(message.into()))
}

/// `[a-z0-9][a-z0-9_-]{0,63}`: safe as a folder name and in a log line.
pub fn check_plugin_name(name: &str) -> Result<(), PluginConfigError> {
    let mut bytes = name.bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.next().is_some_and(ok)
        && bytes.all(|b| ok(b) || b == b'-' || b == b'_')
        && name.len() <= 64
    {
        Ok(())
    } else {
        err(format!(
            "plugin name {name:?} must match [a-z0-9][a-z0-9_-]{{0,63}}"
        ))
    }
}

fn hook_set(hooks: Option<&[String]>, who: &str) -> Result<HookSet, PluginConfigError> {
    let Some(hooks) = hooks else {
        return Ok(HookSet {
            before_clear: true,
            after_clear: true,
            on_event: true,
        });
    };
    if hooks.is_empty() {
        // An empty list would load the plugin and never call it: say so
        // rather than skip a policy in silence.
        return err(format!(
            "{who}: hooks must name at least one hook (before-clear, after-clear, on-event); to turn the plugin off, set enabled = false"
        ));
    }
    let mut set = HookSet {
        before_clear: false,
        after_clear: false,
        on_event: false,
    };
    for hook in hooks {
        match hook.as_str() {
            "before-clear" | "before_clear" => set.before_clear = true,
            "after-clear" | "after_clear" => set.after_clear = true,
            "on-event" | "on_event" => set.on_event = true,
            other => {
                return err(format!(
                    "{who}: unknown hook {other:?} (before-clear, after-clear, on-event)"
                ));
            }
        }
    }
    Ok(set)
}

fn fail_mode(raw: Option<&str>, who: &str) -> Result<FailMode, PluginConfigError> {
    match raw {
        None | Some("open") => Ok(FailMode::Open),
        Some("closed") => Ok(FailMode::Closed),
        Some(other) => err(format!(
            "{who}: fail must be \"open\" or \"closed\", not {other:?}"
        )),
    }
}

fn bounded(
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, PluginConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        err(format!("{what} must be between {min} and {max}, not {v}"))
    }
}

fn capabilities(file: &CapabilitiesFile, who: &str) -> Result<Capabilities, PluginConfigError> {
    let http_allow = file
        .http
        .iter()
        .map(|u| AllowedUrl::parse(u).map_err(|e| PluginConfigError(format!("{who}: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(Capabilities {
        http_allow,
        archive: file.archive,
        credentials: file.credentials,
    })
}

fn config_json(table: Option<&toml::Table>) -> Result<String, PluginConfigError> {
    match table {
        None => Ok("{}".to_owned()),
        Some(t) => serde_json::to_string(t).map_err(|e| PluginConfigError(format!("config: {e}"))),
    }
}

impl PluginsConfig {
    /// Checks the section; relative paths are resolved against `base` (the
    /// config file's folder). The `LILA_PLUGINS_*` variables are not read:
    /// see `from_file_and_env`.
    pub fn from_file(file: &PluginsFile, base: &Path) -> Result<PluginsConfig, PluginConfigError> {
        PluginsConfig::from_file_and_env(file, base, &|_| None)
    }

    /// `from_file`, with the runtime's limits overridden by the
    /// environment's `LILA_PLUGINS_*` variables (which win over the file).
    pub fn from_file_and_env(
        file: &PluginsFile,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PluginsConfig, PluginConfigError> {
        if file.version != PLUGINS_CONFIG_VERSION {
            return err(format!(
                "version {} is not supported (this lila reads version {PLUGINS_CONFIG_VERSION})",
                file.version
            ));
        }
        let dir = base.join(
            file.dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("plugins/dist")),
        );
        let tenant_dir = base.join(
            file.tenant_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("plugins/tenants")),
        );
        let before_clear_total = Duration::from_millis(bounded(
            file.before_clear_total_ms,
            DEFAULT_BEFORE_CLEAR_TOTAL_MS,
            0,
            MAX_TOTAL_MS,
            "before_clear_total_ms",
        )?);
        let after_clear_total = Duration::from_millis(bounded(
            file.after_clear_total_ms,
            DEFAULT_AFTER_CLEAR_TOTAL_MS,
            0,
            MAX_TOTAL_MS,
            "after_clear_total_ms",
        )?);
        let limits = RuntimeLimits::read(file, env)?;
        let tp = &file.tenant_plugins;
        let tenant_plugins = if tp.enabled {
            if tp.capabilities.credentials {
                return err(
                    "tenant_plugins: the credentials capability is never granted to tenant plugins",
                );
            }
            Some(TenantPluginLimits {
                max_time: Duration::from_millis(bounded(
                    tp.time_ms,
                    DEFAULT_TIME_MS,
                    1,
                    MAX_TIME_MS,
                    "tenant_plugins.time_ms",
                )?),
                max_memory_mib: bounded(
                    tp.memory_mib,
                    DEFAULT_MEMORY_MIB,
                    1,
                    MAX_MEMORY_MIB,
                    "tenant_plugins.memory_mib",
                )?,
                capabilities: capabilities(&tp.capabilities, "tenant_plugins")?,
            })
        } else {
            None
        };
        let mut plugins: Vec<PluginSpec> = Vec::new();
        for p in &file.plugins {
            check_plugin_name(&p.name)?;
            let who = format!("plugin {:?}", p.name);
            if plugins.iter().any(|q| q.name == p.name) {
                return err(format!("{who} is listed twice"));
            }
            let tenants = match p.tenants.as_deref() {
                None => TenantScope::All,
                Some([]) => {
                    return err(format!(
                        "{who}: tenants must name at least one tenant, or \"*\" for all; to turn the plugin off, set enabled = false"
                    ));
                }
                Some(list) if list.iter().any(|t| t == "*") => TenantScope::All,
                Some(list) => TenantScope::Only(
                    list.iter()
                        .map(|t| {
                            TenantId::parse(t)
                                .map_err(|e| PluginConfigError(format!("{who}: tenant {t:?}: {e}")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            let time_ms = bounded(
                p.time_ms,
                DEFAULT_TIME_MS,
                1,
                MAX_TIME_MS,
                &format!("{who}: time_ms"),
            )?;
            let memory_mib = bounded(
                p.memory_mib,
                DEFAULT_MEMORY_MIB,
                1,
                MAX_MEMORY_MIB,
                &format!("{who}: memory_mib"),
            )?;
            plugins.push(PluginSpec {
                key: p.name.clone(),
                name: p.name.clone(),
                owner: PluginOwner::Operator(tenants),
                path: dir.join(
                    p.file
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(format!("{}.wasm", p.name))),
                ),
                enabled: p.enabled,
                hooks: hook_set(p.hooks.as_deref(), &who)?,
                fail: fail_mode(p.fail.as_deref(), &who)?,
                time_budget: Duration::from_millis(time_ms),
                memory_bytes: (memory_mib << 20) as usize,
                capabilities: capabilities(&p.capabilities, &who)?,
                config_json: config_json(p.config.as_ref())?,
            });
        }
        Ok(PluginsConfig {
            dir,
            tenant_dir: tenant_plugins.as_ref().map(|_| tenant_dir),
            before_clear_total,
            after_clear_total,
            limits,
            tenant_plugins,
            plugins,
        })
    }
}

impl TenantPluginLimits {
    /// The spec of a tenant's `NAME.wasm`, from its optional `NAME.toml`.
    pub fn spec(
        &self,
        tenant: &TenantId,
        name: &str,
        path: PathBuf,
        file: &TenantPluginFile,
    ) -> Result<PluginSpec, PluginConfigError> {
        check_plugin_name(name)?;
        let who = format!("tenant plugin {tenant}/{name}");
        let max_ms = self.max_time.as_millis() as u64;
        let time_ms = bounded(file.time_ms, max_ms, 1, max_ms, &format!("{who}: time_ms"))?;
        let memory_mib = bounded(
            file.memory_mib,
            self.max_memory_mib,
            1,
            self.max_memory_mib,
            &format!("{who}: memory_mib"),
        )?;
        Ok(PluginSpec {
            key: format!("{tenant}/{name}"),
            name: name.to_owned(),
            owner: PluginOwner::Tenant(tenant.clone()),
            path,
            enabled: file.enabled,
            hooks: hook_set(file.hooks.as_deref(), &who)?,
            fail: fail_mode(file.fail.as_deref(), &who)?,
            time_budget: Duration::from_millis(time_ms),
            memory_bytes: (memory_mib << 20) as usize,
            capabilities: Capabilities {
                credentials: false,
                ..self.capabilities.clone()
            },
            config_json: config_json(file.config.as_ref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PluginsConfig, PluginConfigError> {
        let file: PluginsFile =
            toml::from_str(text).map_err(|e| PluginConfigError(e.to_string()))?;
        PluginsConfig::from_file(&file, Path::new("/etc/lila"))
    }

    #[test]
    fn a_full_section_is_read_in_order_with_defaults() {
        let config = parse(
            r#"
version = 1
dir = "wasm"
[[plugin]]
name = "tenant-policy"
hooks = ["before-clear"]
tenants = ["acme"]
fail = "closed"
config = { default = { max_resets_per_day = 3 } }
[[plugin]]
name = "webhook-notify"
capabilities = { http = ["https://hooks.example.com/lila"] }
"#,
        )
        .unwrap();
        assert_eq!(config.plugins.len(), 2);
        let policy = &config.plugins[0];
        assert_eq!(policy.path, Path::new("/etc/lila/wasm/tenant-policy.wasm"));
        assert_eq!(policy.fail, FailMode::Closed);
        assert!(policy.hooks.before_clear && !policy.hooks.after_clear);
        assert_eq!(
            policy.config_json,
            r#"{"default":{"max_resets_per_day":3}}"#
        );
        assert!(policy.runs_for(Some(&TenantId::parse("acme").unwrap())));
        assert!(!policy.runs_for(Some(&TenantId::parse("globex").unwrap())));
        let webhook = &config.plugins[1];
        assert_eq!(webhook.fail, FailMode::Open);
        assert_eq!(webhook.time_budget, Duration::from_millis(DEFAULT_TIME_MS));
        assert_eq!(webhook.capabilities.names(), ["http"]);
        assert_eq!(
            config.tenant_dir.as_deref(),
            Some(Path::new("/etc/lila/plugins/tenants"))
        );
    }

    #[test]
    fn typos_bad_versions_and_bad_values_are_errors() {
        for bad in [
            "version = 2",
            "version = 1\nbogus = 1",
            "version = 1\n[[plugin]]\nname = \"x\"\nfial = \"closed\"",
            "version = 1\n[[plugin]]\nname = \"Bad Name\"",
            "version = 1\n[[plugin]]\nname = \"x\"\nfail = \"sometimes\"",
            "version = 1\n[[plugin]]\nname = \"x\"\nhooks = [\"on-connect\"]",
            "version = 1\n[[plugin]]\nname = \"x\"\ntime_ms = 60000",
            "version = 1\n[[plugin]]\nname = \"x\"\n[[plugin]]\nname = \"x\"",
            "version = 1\n[[plugin]]\nname = \"x\"\ncapabilities = { http = [\"ftp://x\"] }",
            "version = 1\n[tenant_plugins]\ncapabilities = { credentials = true }",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_optional_file_or_section_means_the_same_as_an_empty_one() {
        // NAME.toml absent vs. empty: the tenant plugin is enabled either way.
        let empty: TenantPluginFile = toml::from_str("").unwrap();
        assert_eq!(TenantPluginFile::default(), empty);
        assert!(TenantPluginFile::default().enabled);
        let empty: TenantPluginsFile = toml::from_str("").unwrap();
        assert_eq!(TenantPluginsFile::default(), empty);
        let empty: CapabilitiesFile = toml::from_str("").unwrap();
        assert_eq!(CapabilitiesFile::default(), empty);
        // `[plugins.tenant_plugins]` absent vs. empty, `capabilities` absent vs. `{}`.
        assert_eq!(
            parse("version = 1").unwrap(),
            parse("version = 1\n[tenant_plugins]\ncapabilities = {}").unwrap()
        );
        assert_eq!(
            parse("version = 1\n[[plugin]]\nname = \"x\"").unwrap(),
            parse("version = 1\n[[plugin]]\nname = \"x\"\ncapabilities = {}\nconfig = {}").unwrap()
        );
        // And the spec a tenant plugin gets without settings is the documented default.
        let limits = parse("version = 1").unwrap().tenant_plugins.unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let spec = limits
            .spec(
                &acme,
                "guard",
                PathBuf::from("guard.wasm"),
                &TenantPluginFile::default(),
            )
            .unwrap();
        assert!(spec.enabled);
        assert!(spec.hooks.before_clear && spec.hooks.after_clear);
        assert_eq!(spec.fail, FailMode::Open);
        assert_eq!(spec.time_budget, Duration::from_millis(DEFAULT_TIME_MS));
        assert_eq!(spec.config_json, "{}");
    }

    #[test]
    fn runtime_limits_have_defaults_file_keys_and_variables_that_win() {
        let defaults = parse("version = 1").unwrap().limits;
        assert_eq!(defaults, RuntimeLimits::default());
        let file: PluginsFile = toml::from_str(
            "version = 1\nmax_memories = 2\nmax_concurrent_calls = 3\narchive_quota_mib = 5",
        )
        .unwrap();
        let env = |k: &str| (k == "LILA_PLUGINS_MAX_CONCURRENT_CALLS").then(|| "7".to_owned());
        let limits = PluginsConfig::from_file_and_env(&file, Path::new("/"), &env)
            .unwrap()
            .limits;
        assert_eq!(limits.max_memories, 2);
        assert_eq!(limits.max_concurrent_calls, 7);
        assert_eq!(limits.archive_quota_bytes, 5 << 20);
        let bad = |k: &str| (k == "LILA_PLUGINS_MAX_FILE_MIB").then(|| "lots".to_owned());
        let error = PluginsConfig::from_file_and_env(&file, Path::new("/"), &bad).unwrap_err();
        assert!(error.0.contains("LILA_PLUGINS_MAX_FILE_MIB"), "{error}");
        assert!(parse("version = 1\nmax_tables = 0").is_err());
    }

    #[test]
    fn a_removed_section_turns_every_plugin_off() {
        let off = PluginsConfig::from_file(&PluginsFile::off(), Path::new("/etc/lila")).unwrap();
        assert!(off.plugins.is_empty());
        assert_eq!(off.tenant_plugins, None);
        assert_eq!(off.tenant_dir, None);
    }

    #[test]
    fn empty_hook_and_tenant_lists_are_errors_not_silent_no_ops() {
        for bad in [
            "version = 1\n[[plugin]]\nname = \"x\"\nhooks = []",
            "version = 1\n[[plugin]]\nname = \"x\"\ntenants = []",
        ] {
            let error = parse(bad).unwrap_err().0;
            assert!(error.contains("enabled = false"), "{error}");
        }
        let limits = parse("version = 1").unwrap().tenant_plugins.unwrap();
        let no_hooks = TenantPluginFile {
            hooks: Some(Vec::new()),
            ..TenantPluginFile::default()
        };
        let acme = TenantId::parse("acme").unwrap();
        assert!(
            limits
                .spec(&acme, "g", PathBuf::from("g.wasm"), &no_hooks)
                .is_err()
        );
    }

    #[test]
    fn tenant_plugins_are_capped_by_the_operator_and_never_get_credentials() {
        let config = parse("version = 1\n[tenant_plugins]\ntime_ms = 300\nmemory_mib = 8\ncapabilities = { archive = true }").unwrap();
        let limits = config.tenant_plugins.unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let spec = limits
            .spec(
                &acme,
                "mine",
                PathBuf::from("mine.wasm"),
                &TenantPluginFile::default(),
            )
            .unwrap();
        assert_eq!(spec.time_budget, Duration::from_millis(300));
        assert_eq!(spec.key, "acme/mine");
        assert!(spec.capabilities.archive && !spec.capabilities.credentials);
        assert!(spec.runs_for(Some(&acme)));
        assert!(!spec.runs_for(Some(&TenantId::parse("globex").unwrap())));
        assert!(!spec.runs_for(None));
        let greedy = TenantPluginFile {
            time_ms: Some(301),
            ..TenantPluginFile::default()
        };
        assert!(
            limits
                .spec(&acme, "mine", PathBuf::from("m"), &greedy)
                .is_err()
        );
    }
}
