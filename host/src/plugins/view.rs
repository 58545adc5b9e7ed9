//! What `GET /api/plugins` shows of the plugin runtime: each plugin's
//! spec, load state and call counts, and the config's last error. `http`
//! renders these; they are built here, from the published registry.

use std::path::PathBuf;

use super::PluginHooks;
use crate::config::plugins::{PluginOwner, TenantScope};
use crate::core::tenant::TenantId;

/// How often one plugin's calls ended each way, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub ok: u64,
    pub vetoed: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Events the plugin's `on-event` never got (its queue was full).
    pub events_dropped: u64,
}

/// One plugin as `GET /api/plugins` shows it.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// The operator's name, or `{tenant}/{name}` for a tenant's own plugin.
    pub name: String,
    /// The tenant that shipped it; `None` for an operator plugin.
    pub owner: Option<TenantId>,
    pub file: PathBuf,
    /// Whether some version of it is loaded and can run.
    pub loaded: bool,
    /// `compiling` (no version loaded yet), `loaded` or `failed`.
    pub state: &'static str,
    /// Where the loaded code came from: `source` (compiled by this process)
    /// or `cache` (`data/plugins/cache/`).
    pub compiled_from: Option<&'static str>,
    /// How long compiling (or loading from the cache) took.
    pub compile_ms: Option<u64>,
    /// SHA-256 of the loaded component: its version.
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub loaded_at_ms: Option<u64>,
    pub enabled: bool,
    pub hooks: Vec<&'static str>,
    /// Tenant ids it runs for; `["*"]` for all.
    pub tenants: Vec<String>,
    pub fail_mode: &'static str,
    pub time_budget_ms: u64,
    pub memory_mib: u64,
    pub capabilities: Vec<String>,
    /// Why the last load of its file or settings failed (the previous version, if any, keeps serving).
    pub last_error: Option<String>,
    pub calls: CallCounts,
}

/// The plugin runtime as a whole, for `GET /api/plugins`.
#[derive(Debug, Clone, Default)]
pub struct PluginsView {
    pub config_file: Option<PathBuf>,
    /// Why the last reload of the config failed (the previous config keeps serving).
    pub config_error: Option<String>,
    pub plugins: Vec<PluginStatus>,
}

impl PluginHooks {
    /// What is loaded, for `GET /api/plugins`.
    pub fn view(&self) -> PluginsView {
        let registry = self.runtime.registry();
        let plugins = registry
            .entries
            .iter()
            .map(|entry| {
                let spec = &entry.spec;
                let (owner, tenants) = match &spec.owner {
                    PluginOwner::Operator(TenantScope::All) => (None, vec!["*".to_owned()]),
                    PluginOwner::Operator(TenantScope::Only(list)) => {
                        (None, list.iter().map(|t| t.as_str().to_owned()).collect())
                    }
                    PluginOwner::Tenant(t) => (Some(t.clone()), vec![t.as_str().to_owned()]),
                };
                let loaded = entry.loaded.as_ref();
                PluginStatus {
                    name: spec.key.clone(),
                    owner,
                    file: spec.path.clone(),
                    loaded: loaded.is_some(),
                    state: match (loaded, entry.compiling) {
                        (Some(_), _) => "loaded",
                        (None, true) => "compiling",
                        (None, false) => "failed",
                    },
                    compiled_from: loaded.map(|l| l.code.origin.as_str()),
                    compile_ms: loaded.map(|l| l.code.compile_ms),
                    sha256: loaded.map(|l| l.code.sha256.clone()),
                    size_bytes: loaded.map(|l| l.code.size),
                    loaded_at_ms: loaded.map(|l| l.loaded_at_ms),
                    enabled: spec.enabled,
                    hooks: spec.hooks.names(),
                    tenants,
                    fail_mode: spec.fail.as_str(),
                    time_budget_ms: spec.time_budget.as_millis() as u64,
                    memory_mib: (spec.memory_bytes >> 20) as u64,
                    capabilities: spec.capabilities.names(),
                    last_error: entry.last_error.clone(),
                    calls: loaded.map(|l| l.counters.snapshot()).unwrap_or_default(),
                }
            })
            .collect();
        PluginsView {
            config_file: Some(self.runtime.config_file.clone()),
            config_error: registry.config_error.clone(),
            plugins,
        }
    }
}
