//! The set of loaded plugins, and how a reload builds the next set from the
//! config and the plugin folders without ever losing a working plugin.
//!
//! A registry is immutable once built; a reload builds a new one and swaps
//! an `Arc`. A call holds the `Arc<LoadedPlugin>` it started with, so a
//! reload never changes the code under a running call.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::engine::CompiledPlugin;
use super::view::CallCounts;
use crate::clock::now_ms;
use crate::config::plugins::{PluginSpec, PluginsConfig, TenantPluginFile};
use crate::core::tenant::TenantId;
use crate::metrics::HookMetrics;

/// Call counts of one plugin key; they survive reloads.
#[derive(Debug, Default)]
pub struct CallCounters {
    pub ok: AtomicU64,
    pub vetoed: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    /// Events this plugin's `on-event` never got: its queue was full.
    pub events_dropped: AtomicU64,
}

impl CallCounters {
    pub fn snapshot(&self) -> CallCounts {
        CallCounts {
            ok: self.ok.load(Ordering::Relaxed),
            vetoed: self.vetoed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// A plugin that can be called: its spec and its compiled code.
pub struct LoadedPlugin {
    pub spec: PluginSpec,
    pub code: Arc<CompiledPlugin>,
    pub loaded_at_ms: u64,
    pub counters: Arc<CallCounters>,
}

/// One plugin entry as `GET /api/plugins` shows it.
#[derive(Clone)]
pub struct PluginEntry {
    pub spec: PluginSpec,
    /// `None` while it is compiling, or when it never loaded (then `last_error` says why).
    pub loaded: Option<Arc<LoadedPlugin>>,
    pub last_error: Option<String>,
    /// No version of it is loaded yet and its code is being compiled (at
    /// start, or when it was just added): a reset that needs it waits.
    pub compiling: bool,
    /// The SHA-256 of the file whose compile this entry waits for (its
    /// previous version, if any, serving meanwhile).
    pub awaiting: Option<String>,
}

/// A plugin a reset should call, in order.
pub enum ResetPlugin {
    Ready(Arc<LoadedPlugin>),
    /// Still compiling: not callable yet.
    Compiling(PluginSpec),
}

#[derive(Default, Clone)]
pub struct Registry {
    pub config: Option<PluginsConfig>,
    pub config_error: Option<String>,
    /// Operator plugins in config order, then tenant plugins by key.
    pub entries: Vec<PluginEntry>,
}

impl Registry {
    /// The plugins a reset of a session owned by `tenant` calls for `hook`,
    /// in order, those still compiling included.
    pub fn for_reset(
        &self,
        tenant: Option<&TenantId>,
        hook: impl Fn(&PluginSpec) -> bool,
    ) -> Vec<ResetPlugin> {
        self.entries
            .iter()
            .filter_map(|e| match &e.loaded {
                // An event-only component (0.2.0) has no reset hooks to call.
                Some(loaded) if loaded.code.reset.is_none() => None,
                Some(loaded) => Some(ResetPlugin::Ready(loaded.clone())),
                None if e.compiling => Some(ResetPlugin::Compiling(e.spec.clone())),
                None => None,
            })
            .filter(|p| {
                let spec = match p {
                    ResetPlugin::Ready(loaded) => &loaded.spec,
                    ResetPlugin::Compiling(spec) => spec,
                };
                spec.enabled && hook(spec) && spec.runs_for(tenant)
            })
            .collect()
    }

    /// The loaded plugins whose `on-event` hears an event of `tenant`'s session.
    pub fn for_events(&self, tenant: Option<&TenantId>) -> Vec<Arc<LoadedPlugin>> {
        self.entries
            .iter()
            .filter_map(|e| e.loaded.clone())
            .filter(|l| {
                l.code.events.is_some()
                    && l.spec.enabled
                    && l.spec.hooks.on_event
                    && l.spec.runs_for(tenant)
            })
            .collect()
    }

    /// Whether a reset of `tenant` for `hook` would find a plugin still compiling.
    pub fn waits_for_compiling(
        &self,
        tenant: Option<&TenantId>,
        hook: impl Fn(&PluginSpec) -> bool,
    ) -> bool {
        self.for_reset(tenant, hook)
            .iter()
            .any(|p| matches!(p, ResetPlugin::Compiling(_)))
    }

    /// Whether no entry waits for a compile any more.
    pub fn settled(&self) -> bool {
        self.entries.iter().all(|e| e.awaiting.is_none())
    }

    /// The components the registry uses, by SHA-256 (what the cache keeps).
    pub fn component_sha256s(&self) -> HashSet<String> {
        self.entries
            .iter()
            .filter_map(|e| e.loaded.as_ref())
            .map(|l| l.code.sha256.clone())
            .collect()
    }
}

/// The tenant plugins found under `tenant_dir`: `{companyId}/NAME.wasm` with an optional `NAME.toml`.
pub fn scan_tenant_plugins(config: &PluginsConfig) -> (Vec<PluginSpec>, Vec<(String, String)>) {
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    let (Some(dir), Some(limits)) = (&config.tenant_dir, &config.tenant_plugins) else {
        return (specs, errors);
    };
    let Ok(tenants) = std::fs::read_dir(dir) else {
        return (specs, errors);
    };
    let mut tenant_dirs: Vec<PathBuf> = tenants
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    tenant_dirs.sort();
    for tenant_dir in tenant_dirs {
        let Some(tenant) = tenant_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| TenantId::parse(n).ok())
        else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(&tenant_dir) else {
            continue;
        };
        let mut wasm: Vec<PathBuf> = files
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        wasm.sort();
        for path in wasm {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            // Temporary files of a copy-then-rename start with a dot.
            if name.starts_with('.') {
                continue;
            }
            let key = format!("{tenant}/{name}");
            let settings_path = path.with_extension("toml");
            let settings = match std::fs::read_to_string(&settings_path) {
                Ok(text) => match toml::from_str::<TenantPluginFile>(&text) {
                    Ok(file) => file,
                    Err(e) => {
                        errors.push((key, format!("{}: {e}", settings_path.display())));
                        continue;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => TenantPluginFile::default(),
                Err(e) => {
                    errors.push((key, format!("{}: {e}", settings_path.display())));
                    continue;
                }
            };
            match limits.spec(&tenant, &name, path.clone(), &settings) {
                Ok(spec) => specs.push(spec),
                Err(e) => errors.push((key, e.to_string())),
            }
        }
    }
    (specs, errors)
}

/// A registry being built: published at once, so `GET /api/plugins` and
/// resets see the new config and which plugins are still compiling, then
/// completed plugin by plugin by `finish`.
pub struct PendingBuild {
    pub registry: Registry,
    /// What each of the first `specs.len()` entries of `registry` will become.
    specs: Vec<PluginSpec>,
}

/// Starts the next registry from `config` and the tenant folders (fast: no
/// compiling). Until `finish` reaches it, a plugin the previous registry
/// had keeps its previous entry (and code); a new one shows as compiling.
pub fn begin(
    previous: &Registry,
    config: PluginsConfig,
    config_error: Option<String>,
) -> PendingBuild {
    let (tenant_specs, tenant_errors) = scan_tenant_plugins(&config);
    let specs: Vec<PluginSpec> = config.plugins.iter().cloned().chain(tenant_specs).collect();
    let mut entries: Vec<PluginEntry> = specs
        .iter()
        .map(
            |spec| match previous.entries.iter().find(|e| e.spec.key == spec.key) {
                Some(prev) => prev.clone(),
                None => PluginEntry {
                    spec: spec.clone(),
                    loaded: None,
                    last_error: None,
                    compiling: true,
                    awaiting: None,
                },
            },
        )
        .collect();
    for (key, error) in tenant_errors {
        // A tenant plugin whose settings do not parse keeps its previous version.
        let prev = previous.entries.iter().find(|e| e.spec.key == key);
        if let Some(prev) = prev {
            tracing::warn!(plugin = %key, error = %error, "tenant plugin settings are invalid; the previous version keeps serving");
            entries.push(PluginEntry {
                last_error: Some(error),
                compiling: false,
                awaiting: None,
                ..prev.clone()
            });
        } else {
            tracing::warn!(plugin = %key, error = %error, "tenant plugin settings are invalid");
        }
    }
    PendingBuild {
        registry: Registry {
            config: Some(config),
            config_error,
            entries,
        },
        specs,
    }
}

/// A compile `finish` needs: a component's bytes, by their SHA-256.
pub struct CompileJob {
    pub sha256: String,
    pub bytes: Vec<u8>,
}

/// Reads every plugin file of `pending` and finishes each entry whose code
/// is known already (unchanged files, or one file under several names);
/// every other entry waits for the compile of its file (`awaiting`), its
/// previous version serving meanwhile, and that compile is in the returned
/// jobs (once per file content). Nothing is compiled here: `compiled`
/// finishes the waiting entries as each compile ends, so one slow plugin
/// never holds the others back. A file that cannot be read, or is over
/// `max_file_bytes`, leaves the previous version of that plugin serving
/// (a removed file removes the plugin), with the error recorded.
pub fn finish(
    previous: &Registry,
    pending: PendingBuild,
    counters: &mut HashMap<String, Arc<CallCounters>>,
    max_file_bytes: u64,
    metrics: &HookMetrics,
) -> (Registry, Vec<CompileJob>) {
    let PendingBuild {
        mut registry,
        specs,
    } = pending;
    let compiled: HashMap<String, Arc<CompiledPlugin>> = previous
        .entries
        .iter()
        .filter_map(|e| e.loaded.as_ref())
        .map(|l| (l.code.sha256.clone(), l.code.clone()))
        .collect();
    let mut jobs: Vec<CompileJob> = Vec::new();
    for (index, spec) in specs.into_iter().enumerate() {
        let prev = previous
            .entries
            .iter()
            .find(|e| e.spec.key == spec.key)
            .and_then(|e| e.loaded.clone());
        let counter = counters.entry(spec.key.clone()).or_default().clone();
        registry.entries[index] = load_one(
            spec,
            prev,
            counter,
            &compiled,
            &mut jobs,
            max_file_bytes,
            metrics,
        );
    }
    (registry, jobs)
}

/// `prev`'s code under the new `spec` (its config may have changed).
fn previous_code(
    spec: &PluginSpec,
    prev: &LoadedPlugin,
    counters: Arc<CallCounters>,
) -> Arc<LoadedPlugin> {
    Arc::new(LoadedPlugin {
        spec: spec.clone(),
        code: prev.code.clone(),
        loaded_at_ms: prev.loaded_at_ms,
        counters,
    })
}

fn load_one(
    spec: PluginSpec,
    prev: Option<Arc<LoadedPlugin>>,
    counters: Arc<CallCounters>,
    compiled: &HashMap<String, Arc<CompiledPlugin>>,
    jobs: &mut Vec<CompileJob>,
    max_file_bytes: u64,
    metrics: &HookMetrics,
) -> PluginEntry {
    let bytes = match read_plugin_file(&spec.path, max_file_bytes) {
        Ok(bytes) => bytes,
        Err(PluginFileError::Missing(error)) => {
            // A removed file removes the plugin: nothing left to run.
            tracing::warn!(plugin = %spec.key, error = %error, "plugin file cannot be read; the plugin is not loaded");
            return PluginEntry {
                spec,
                loaded: None,
                last_error: Some(error),
                compiling: false,
                awaiting: None,
            };
        }
        Err(PluginFileError::Unreadable(error) | PluginFileError::TooBig(error)) => {
            if error.contains("plugins.max_file_mib") {
                metrics.limit_hit("file_size");
            }
            tracing::warn!(plugin = %spec.key, error = %error, "plugin file refused; a previous version, if any, keeps serving");
            return PluginEntry {
                loaded: prev.map(|prev| previous_code(&spec, &prev, counters)),
                spec,
                last_error: Some(error),
                compiling: false,
                awaiting: None,
            };
        }
    };
    let sha = super::sha256_hex(&bytes);
    if let Some(code) = compiled.get(&sha) {
        let loaded_at_ms = match &prev {
            Some(prev) if prev.code.sha256 == sha => prev.loaded_at_ms,
            _ => now_ms(),
        };
        return PluginEntry {
            loaded: Some(Arc::new(LoadedPlugin {
                spec: spec.clone(),
                code: code.clone(),
                loaded_at_ms,
                counters,
            })),
            spec,
            last_error: None,
            compiling: false,
            awaiting: None,
        };
    }
    if !jobs.iter().any(|job| job.sha256 == sha) {
        jobs.push(CompileJob {
            sha256: sha.clone(),
            bytes,
        });
    }
    PluginEntry {
        compiling: prev.is_none(),
        loaded: prev.map(|prev| previous_code(&spec, &prev, counters)),
        spec,
        last_error: None,
        awaiting: Some(sha),
    }
}

/// Finishes every entry of `registry` waiting for the compile of `sha256`
/// with its outcome: the new code, or the error (the previous version, if
/// any, keeps serving). Returns whether any entry was waiting for it.
pub fn compiled(
    registry: &mut Registry,
    sha256: &str,
    outcome: &Result<Arc<CompiledPlugin>, String>,
    counters: &mut HashMap<String, Arc<CallCounters>>,
) -> bool {
    let mut changed = false;
    for entry in registry
        .entries
        .iter_mut()
        .filter(|e| e.awaiting.as_deref() == Some(sha256))
    {
        changed = true;
        entry.awaiting = None;
        entry.compiling = false;
        let spec = &entry.spec;
        match outcome {
            Ok(code) => {
                tracing::info!(plugin = %spec.key, sha256 = %code.sha256, bytes = code.size, compile_ms = code.compile_ms, compiled_from = code.origin.as_str(), "plugin loaded");
                entry.loaded = Some(Arc::new(LoadedPlugin {
                    spec: spec.clone(),
                    code: code.clone(),
                    loaded_at_ms: now_ms(),
                    counters: counters.entry(spec.key.clone()).or_default().clone(),
                }));
                entry.last_error = None;
            }
            Err(error) => {
                let error = format!("{}: {error}", spec.path.display());
                if entry.loaded.is_some() {
                    tracing::warn!(plugin = %spec.key, error = %error, "plugin file is invalid; the previous version keeps serving");
                } else {
                    tracing::warn!(plugin = %spec.key, error = %error, "plugin file is invalid; the plugin is not loaded");
                }
                entry.last_error = Some(error);
            }
        }
    }
    changed
}

enum PluginFileError {
    Missing(String),
    Unreadable(String),
    TooBig(String),
}

/// The file's bytes, refused past `max_bytes` before reading them all.
fn read_plugin_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, PluginFileError> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PluginFileError::Missing(format!("{shown}: {e}")),
        _ => PluginFileError::Unreadable(format!("{shown}: {e}")),
    })?;
    let too_big = |size: u64| {
        PluginFileError::TooBig(format!(
            "{shown}: the file is {size} bytes, and a plugin may be at most {max_bytes} bytes (plugins.max_file_mib); it was not loaded"
        ))
    };
    if let Ok(meta) = file.metadata()
        && meta.len() > max_bytes
    {
        return Err(too_big(meta.len()));
    }
    // Read one byte more than allowed: a file that grew since is refused too.
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| PluginFileError::Unreadable(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}
