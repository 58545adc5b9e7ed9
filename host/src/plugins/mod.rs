//! The plugin runtime: WebAssembly components implementing `lila:hooks`
//! (`wit/`) run around each reset, sandboxed by wasmtime.
//!
//! `PluginHooks` implements the host's `ResetHooks`. It translates the
//! host's `ResetContext` / `ResetReport` by hand to the WIT types of the
//! newest version, `wit::latest`, which every version's hooks take (WIT
//! types never leave this module), calls each enabled plugin in a fresh store with its
//! memory cap and time budget, caps the total time of each hook phase, and
//! records what happened for the reset's response, the log, the metrics and
//! `GET /api/plugins`. `watch` hot-reloads the config and the plugin files.

pub(crate) mod compiled_cache;
mod engine;
mod event_hooks;
pub mod import_limits;
mod imports;
mod registry;
pub(crate) mod state;
pub mod view;
mod watch;
mod wit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use self::engine::{CallEnd, CallLimits, EngineError, PluginEngine};
use self::imports::{CallEnv, HookKind};
use self::registry::{CallCounters, LoadedPlugin, Registry, ResetPlugin};
use self::state::StateScope;
pub use self::state::StateStore;
pub use self::watch::PluginWatcher;
use self::wit::latest::lila::hooks::types as latest;
use crate::clock::now_ms;
use crate::config::plugins::{
    FailMode, PluginOwner, PluginSpec, PluginsConfig, PluginsFile, RuntimeLimits,
};
use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::PurgeTargetKind;
use crate::core::reset_report::{HookOutcome, HookRun, ResetReport};
use crate::hooks::{BeforeClear, ResetContext, ResetHooks};
use crate::metrics::HookMetrics;
use crate::phone::Phone;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Config(String),
    #[error("cannot start the plugin compiler thread: {0}")]
    CompilerThread(#[source] std::io::Error),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        /// `notify`'s error, or the failure to start the reload thread.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Longest veto reason passed on to the Portal.
const MAX_REASON_CHARS: usize = 500;

/// The runtime behind `PluginHooks`.
struct Runtime {
    engine: PluginEngine,
    /// Compiled code on disk, `data/plugins/cache/`.
    cache: compiled_cache::CompiledCache,
    data_root: PathBuf,
    config_file: PathBuf,
    current: RwLock<Arc<Registry>>,
    /// Ticks each time `current` is replaced: a reset waiting for a plugin
    /// that is still compiling wakes up on it.
    published: tokio::sync::watch::Sender<()>,
    /// One change of the registry at a time (a reload reading its files,
    /// or a compile finishing its entries); also owns the call counters,
    /// which outlive reloads.
    reload_lock: Mutex<HashMap<String, Arc<CallCounters>>>,
    /// The compiles running now, by component SHA-256.
    compiles: Mutex<HashMap<String, CompileState>>,
    /// How many compiles hold a slot of `max_concurrent_compiles` now.
    compile_slots: (Mutex<usize>, std::sync::Condvar),
    state: Arc<StateStore>,
    metrics: Arc<HookMetrics>,
    /// The limits of the published configuration, and the call slots they
    /// allow (`max_concurrent_calls`).
    slots: RwLock<CallSlots>,
}

/// A compile `Runtime::start_compile` started.
enum CompileState {
    Running,
    /// Past `compile_timeout_ms`: refused with this error, while the
    /// compile itself still runs to its end.
    GivenUp(String),
}

/// The runtime's limits and its semaphore of call slots. A reload that
/// changes `max_concurrent_calls` gets a new semaphore: calls already
/// running keep their slot of the old one, calls that start later take one
/// of the new.
struct CallSlots {
    limits: RuntimeLimits,
    semaphore: Arc<tokio::sync::Semaphore>,
}

impl CallSlots {
    fn new(limits: RuntimeLimits) -> CallSlots {
        CallSlots {
            semaphore: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_calls)),
            limits,
        }
    }
}

/// The `ResetHooks` made of WebAssembly plugins.
pub struct PluginHooks {
    runtime: Arc<Runtime>,
    watcher: Mutex<Option<PluginWatcher>>,
}

impl PluginHooks {
    /// Reads the `[plugins]` section of `config_file` and returns at once;
    /// the plugins it names are compiled (or loaded from the cache) each on
    /// a thread of its own, each becoming callable as soon as it is ready. A
    /// reset that needs a plugin still compiling waits for it within its
    /// phase budget. An invalid section is an error here, at start-up;
    /// later, on reload, it is reported and the previous configuration keeps
    /// serving.
    pub fn start(config_file: &Path, data_root: &Path) -> Result<Arc<PluginHooks>, PluginError> {
        PluginHooks::start_with_state(config_file, data_root, StateStore::default())
    }

    /// `start`, with the plugins' key-value stores in `state` (PostgreSQL
    /// in a cluster, so that a plugin finds its state on every node).
    pub fn start_with_state(
        config_file: &Path,
        data_root: &Path,
        state: StateStore,
    ) -> Result<Arc<PluginHooks>, PluginError> {
        let runtime = Runtime::new(config_file, data_root, state)?;
        let config = runtime.read_config().map_err(PluginError::Config)?;
        let pending = registry::begin(&runtime.registry(), config, None);
        runtime.publish(&pending.registry);
        let compiling = runtime.clone();
        std::thread::Builder::new()
            .name("lila-plugin-load".into())
            .spawn(move || compiling.complete(pending))
            .map_err(PluginError::CompilerThread)?;
        Ok(Arc::new(PluginHooks {
            runtime,
            watcher: Mutex::new(None),
        }))
    }

    /// Like `start`, but returns only once every plugin is loaded (or has
    /// failed to): for tests and tools that want a settled registry.
    pub fn load(config_file: &Path, data_root: &Path) -> Result<Arc<PluginHooks>, PluginError> {
        let runtime = Runtime::new(config_file, data_root, StateStore::default())?;
        let config = runtime.read_config().map_err(PluginError::Config)?;
        runtime.install(config, None);
        runtime.wait_settled();
        Ok(Arc::new(PluginHooks {
            runtime,
            watcher: Mutex::new(None),
        }))
    }

    /// Re-reads the config and the plugin files now, and returns once every
    /// plugin is loaded or has failed to (the watcher reloads without waiting).
    pub fn reload(&self) {
        self.runtime.reload();
        self.runtime.wait_settled();
    }

    /// Starts watching the config file and the plugin folders; bursts of
    /// events within `debounce` become one reload.
    pub fn watch(&self, debounce: Duration) -> Result<(), PluginError> {
        let watcher = watch::start(self.runtime.clone(), debounce)?;
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        Ok(())
    }

    /// How many reloads the watcher has carried out (for tests and the benchmark).
    pub fn reloads(&self) -> u64 {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, PluginWatcher::reloads)
    }
}

impl Runtime {
    fn new(
        config_file: &Path,
        data_root: &Path,
        state: StateStore,
    ) -> Result<Arc<Runtime>, PluginError> {
        let engine = PluginEngine::new()?;
        let cache = engine.cache(data_root.join("plugins").join("cache"));
        Ok(Arc::new(Runtime {
            engine,
            cache,
            data_root: data_root.to_owned(),
            config_file: config_file.to_owned(),
            current: RwLock::new(Arc::new(Registry::default())),
            published: tokio::sync::watch::Sender::new(()),
            reload_lock: Mutex::new(HashMap::new()),
            compiles: Mutex::new(HashMap::new()),
            compile_slots: (Mutex::new(0), std::sync::Condvar::new()),
            state: Arc::new(state),
            metrics: Arc::default(),
            slots: RwLock::new(CallSlots::new(RuntimeLimits::default())),
        }))
    }

    fn registry(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn publish(&self, registry: &Registry) {
        if let Some(config) = &registry.config {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            if slots.limits.max_concurrent_calls != config.limits.max_concurrent_calls {
                *slots = CallSlots::new(config.limits.clone());
            } else {
                slots.limits = config.limits.clone();
            }
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry.clone());
        self.published.send_replace(());
    }

    fn limits(&self) -> RuntimeLimits {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .limits
            .clone()
    }

    /// Runs one call of `plugin` with `run` once one of the runtime's call
    /// slots is free. The wait counts against the call's deadline: when no
    /// slot frees up before it, the call does not run and its outcome is
    /// `Skipped` with the reason (a fail-closed `before-clear` then refuses
    /// the reset), so a full runtime never drops a hook in silence.
    async fn call<T>(
        &self,
        spec: &PluginSpec,
        env: CallEnv,
        run: impl AsyncFnOnce(CallEnv, CallLimits) -> CallEnd<T>,
    ) -> Result<T, HookOutcome> {
        let (semaphore, limits) = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            (slots.semaphore.clone(), slots.limits.clone())
        };
        let hook = env.hook;
        let deadline = env.deadline;
        let _slot = match semaphore.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.metrics.call_waited(hook.as_str());
                let started = Instant::now();
                match tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    // Timed out (a closed semaphore cannot happen: it is never closed).
                    Ok(Err(_)) | Err(_) => {
                        self.metrics.limit_hit("concurrent_calls");
                        return Err(HookOutcome::Skipped(format!(
                            "not run: all {} plugin call slots (plugins.max_concurrent_calls) stayed busy for the {} ms this call could wait",
                            limits.max_concurrent_calls,
                            elapsed_ms(started)
                        )));
                    }
                }
            }
        };
        let call_limits = CallLimits {
            memory_bytes: spec.memory_bytes,
            max_instances: limits.max_instances,
            max_memories: limits.max_memories,
            max_tables: limits.max_tables,
        };
        match run(env, call_limits).await {
            CallEnd::Returned(value) => Ok(value),
            CallEnd::Failed(message) => Err(HookOutcome::Failed(message)),
            CallEnd::TimedOut => Err(HookOutcome::TimedOut),
            CallEnd::OverLimit(limit, message) => {
                self.metrics.limit_hit(limit.as_str());
                Err(HookOutcome::Failed(message))
            }
        }
    }

    /// The current registry once `waiting` no longer holds for it, or at
    /// `deadline`, whichever comes first.
    async fn registry_when(
        &self,
        waiting: impl Fn(&Registry) -> bool,
        deadline: Instant,
    ) -> Arc<Registry> {
        // Subscribed before the first look, so a publish in between is not missed.
        let mut changes = self.published.subscribe();
        loop {
            let registry = self.registry();
            if !waiting(&registry) {
                return registry;
            }
            match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time, or the runtime is going away: the caller decides.
                Ok(Err(_)) | Err(_) => return self.registry(),
            }
        }
    }

    fn read_config(&self) -> Result<PluginsConfig, String> {
        let section =
            crate::config::read_plugins_section(&self.config_file).map_err(|e| e.to_string())?;
        let base = self.config_file.parent().unwrap_or(Path::new("."));
        let file = section.unwrap_or_else(PluginsFile::off);
        PluginsConfig::from_file_and_env(&file, base, &|name| std::env::var(name).ok())
            .map_err(|e| e.to_string())
    }

    /// Re-reads the config and the plugin files; the compiles it needs go
    /// on threads of their own (it does not wait for them).
    fn reload(self: &Arc<Self>) {
        match self.read_config() {
            Ok(config) => self.install(config, None),
            Err(error) => {
                warn!(config = %self.config_file.display(), error = %error, "plugin config is invalid; the previous one keeps serving");
                let previous = self.registry();
                let config = previous.config.clone();
                match config {
                    Some(config) => self.install(config, Some(error)),
                    None => {
                        self.publish(&Registry {
                            config_error: Some(error),
                            ..Registry::default()
                        });
                    }
                }
            }
        }
    }

    fn install(self: &Arc<Self>, config: PluginsConfig, config_error: Option<String>) {
        let pending = registry::begin(&self.registry(), config, config_error);
        self.publish(&pending.registry);
        self.complete(pending);
    }

    /// Reads the files `pending` names and publishes what is known at once;
    /// each file that must be compiled is compiled on a thread of its own
    /// (`start_compile`), its entry finished when that compile ends.
    fn complete(self: &Arc<Self>, pending: registry::PendingBuild) {
        let limits = pending
            .registry
            .config
            .as_ref()
            .map(|c| c.limits.clone())
            .unwrap_or_default();
        let (next, jobs) = {
            let mut counters = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
            // The registry as it is now: a compile that ended while this
            // reload read its files may have loaded some plugins already.
            let previous = self.registry();
            let (next, jobs) = registry::finish(
                &previous,
                pending,
                &mut counters,
                limits.max_file_bytes,
                &self.metrics,
            );
            self.publish(&next);
            (next, jobs)
        };
        for job in jobs {
            self.start_compile(job, &limits);
        }
        self.when_settled(&next);
    }

    /// Compiles `job` on a thread of its own, unless the same bytes are
    /// compiling already (their outcome will finish every entry that waits
    /// for them) or were given up on (refused at once, while the compile
    /// that ran out of time still runs: it cannot be interrupted).
    fn start_compile(self: &Arc<Self>, job: registry::CompileJob, limits: &RuntimeLimits) {
        {
            let mut compiles = self.compiles.lock().unwrap_or_else(|p| p.into_inner());
            match compiles.get(&job.sha256) {
                Some(CompileState::Running) => return,
                Some(CompileState::GivenUp(error)) => {
                    let error = error.clone();
                    drop(compiles);
                    self.compiled(&job.sha256, Err(error));
                    return;
                }
                None => {
                    compiles.insert(job.sha256.clone(), CompileState::Running);
                }
            }
        }
        let sha256 = job.sha256.clone();
        let runtime = self.clone();
        let (timeout, slots) = (limits.compile_timeout, limits.max_concurrent_compiles);
        let spawned = std::thread::Builder::new()
            .name("lila-plugin-compile".into())
            .spawn(move || {
                runtime.take_compile_slot(slots);
                runtime.compile_within(job, timeout);
            });
        if let Err(e) = spawned {
            self.compile_ended(&sha256);
            self.compiled(&sha256, Err(format!("cannot start a compiler thread: {e}")));
        }
    }

    /// Waits until fewer than `slots` compiles run (the time limit of a
    /// compile starts once it has its slot).
    fn take_compile_slot(&self, slots: usize) {
        let (running, freed) = &self.compile_slots;
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        if *running >= slots {
            self.metrics.limit_hit("concurrent_compiles");
        }
        while *running >= slots {
            running = freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
    }

    fn give_back_compile_slot(&self) {
        let (running, freed) = &self.compile_slots;
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        freed.notify_all();
    }

    /// Runs the compile of `job` on a worker thread and waits for it up to
    /// `timeout`. Past it the plugin is refused with the reason; the worker
    /// runs on to its end (cranelift cannot be interrupted), its code is
    /// thrown away and never cached, and the same bytes are refused at once
    /// until it ends.
    fn compile_within(self: Arc<Self>, job: registry::CompileJob, timeout: Duration) {
        let registry::CompileJob { sha256, bytes } = job;
        let (done, outcome) = std::sync::mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let worker = {
            let runtime = self.clone();
            let abandoned = abandoned.clone();
            std::thread::Builder::new()
                .name("lila-plugin-compiler".into())
                .spawn(move || {
                    let result = runtime
                        .engine
                        .compile(&bytes, Some(&runtime.cache), &abandoned);
                    // The slot is the CPU the compile takes: one given up on keeps it to its end.
                    runtime.give_back_compile_slot();
                    let _ = done.send(result);
                })
        };
        let worker = match worker {
            Ok(worker) => worker,
            Err(e) => {
                self.give_back_compile_slot();
                self.compile_ended(&sha256);
                self.compiled(&sha256, Err(format!("cannot start a compiler thread: {e}")));
                return;
            }
        };
        match outcome.recv_timeout(timeout) {
            Ok(result) => {
                self.compiled(&sha256, result.map(Arc::new).map_err(|e| e.to_string()));
                self.compile_ended(&sha256);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                abandoned.store(true, Ordering::Relaxed);
                self.metrics.limit_hit("compile_time");
                let error = format!(
                    "compiling it took longer than {} ms (plugins.compile_timeout_ms), so it was not loaded",
                    timeout.as_millis()
                );
                self.compiles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sha256.clone(), CompileState::GivenUp(error.clone()));
                self.compiled(&sha256, Err(error));
                let _ = worker.join();
                self.compile_ended(&sha256);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.compiled(&sha256, Err("the compiler thread failed".into()));
                self.compile_ended(&sha256);
            }
        }
    }

    fn compile_ended(&self, sha256: &str) {
        self.compiles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
    }

    /// Finishes the entries waiting for the compile of `sha256` and publishes them.
    fn compiled(&self, sha256: &str, outcome: Result<Arc<engine::CompiledPlugin>, String>) {
        let next = {
            let mut counters = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = Registry::clone(&self.registry());
            if registry::compiled(&mut next, sha256, &outcome, &mut counters) {
                self.publish(&next);
            }
            next
        };
        self.when_settled(&next);
    }

    /// Once no plugin waits for a compile: the cache keeps only what is
    /// loaded, and the log says so.
    fn when_settled(&self, registry: &Registry) {
        if !registry.settled() {
            return;
        }
        self.cache.prune(&registry.component_sha256s());
        let loaded = registry
            .entries
            .iter()
            .filter(|e| e.loaded.is_some())
            .count();
        info!(plugins = registry.entries.len(), loaded, "plugins ready");
    }

    /// Blocks until no plugin waits for a compile (each compile is bounded
    /// by `compile_timeout_ms`): for `load` and `reload`, which promise a
    /// settled registry.
    fn wait_settled(&self) {
        while !self.registry().settled() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn env(
        &self,
        plugin: &LoadedPlugin,
        hook: HookKind,
        tenant: &str,
        phone: &Phone,
        reset_id: &str,
        deadline: Instant,
    ) -> CallEnv {
        let scope = StateScope::new(
            &self.data_root,
            &plugin.spec.owner,
            &plugin.spec.name,
            tenant,
        );
        CallEnv {
            plugin: plugin.spec.key.clone(),
            tenant: tenant.to_owned(),
            phone: phone.as_str().to_owned(),
            reset_id: reset_id.to_owned(),
            hook,
            deadline,
            capabilities: plugin.spec.capabilities.clone(),
            config_json: Arc::from(plugin.spec.config_json.as_str()),
            data_root: self.data_root.clone(),
            session_dir: crate::layout::DataLayout::new(&self.data_root).session_dir(phone),
            archive_dir: scope.archive_dir(),
            archive_quota_bytes: self.limits().archive_quota_bytes,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            state_scope: scope,
        }
    }

    fn record(&self, plugin: &LoadedPlugin, run: &HookRun, tenant: &str, phone: &Phone) {
        self.metrics.record(run.hook, &run.outcome, run.duration_ms);
        let c = &plugin.counters;
        let counter = match run.outcome {
            HookOutcome::Ok => &c.ok,
            HookOutcome::Vetoed(_) => &c.vetoed,
            HookOutcome::Failed(_) | HookOutcome::Skipped(_) => &c.failed,
            HookOutcome::TimedOut => &c.timed_out,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &run.outcome {
            HookOutcome::Ok | HookOutcome::Vetoed(_) => {
                info!(plugin = %run.plugin, tenant = %tenant, phone = %phone, hook = run.hook, outcome = run.outcome.as_str(), duration_ms = run.duration_ms, "plugin hook ran")
            }
            HookOutcome::Failed(detail) => {
                warn!(plugin = %run.plugin, tenant = %tenant, phone = %phone, hook = run.hook, outcome = "failed", detail = %detail, duration_ms = run.duration_ms, "plugin hook failed")
            }
            HookOutcome::TimedOut => {
                warn!(plugin = %run.plugin, tenant = %tenant, phone = %phone, hook = run.hook, outcome = "timed_out", duration_ms = run.duration_ms, "plugin hook ran out of time")
            }
            HookOutcome::Skipped(detail) => {
                warn!(plugin = %run.plugin, tenant = %tenant, phone = %phone, hook = run.hook, outcome = "skipped", detail = %detail, "plugin hook skipped")
            }
        }
    }

    /// The run of a plugin a reset could not call because it was still
    /// compiling when the phase's budget ran out; logged and counted.
    fn not_ready(
        &self,
        spec: &PluginSpec,
        hook: HookKind,
        phase_started: Instant,
        tenant: &str,
        phone: &Phone,
    ) -> HookRun {
        let waited_ms = elapsed_ms(phase_started);
        let detail =
            format!("not ready: still being compiled after the reset waited {waited_ms} ms for it");
        warn!(plugin = %spec.key, tenant = %tenant, phone = %phone, hook = hook.as_str(), outcome = "skipped", detail = %detail, "plugin hook skipped");
        let run = HookRun {
            plugin: spec.key.clone(),
            hook: hook.as_str(),
            outcome: HookOutcome::Skipped(detail),
            duration_ms: waited_ms,
        };
        self.metrics.record(run.hook, &run.outcome, run.duration_ms);
        run
    }
}

fn clean_reason(reason: &str) -> String {
    let reason: String = reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    if reason.is_empty() {
        "no reason given".to_owned()
    } else {
        reason
    }
}

fn rel_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn wit_outbox(messages: &[OutboxMessage]) -> Vec<latest::OutboxMessage> {
    messages
        .iter()
        .map(|m| latest::OutboxMessage {
            id: m.id.clone(),
            to: m.to.as_jid().to_owned(),
            text: m.text.clone(),
            created_at_ms: m.created_at_ms,
        })
        .collect()
}

fn wit_context(
    ctx: &ResetContext,
    reset_id: &str,
    requested_at_ms: u64,
    session: latest::SessionState,
    outbox: Vec<latest::OutboxMessage>,
) -> latest::ResetContext {
    let mut session_files = Vec::new();
    let mut backup_count = 0u32;
    for target in &ctx.targets {
        match target.kind {
            PurgeTargetKind::SessionDir => {
                session_files.extend(target.files.iter().map(|(p, size)| latest::FileInfo {
                    path: rel_path(p),
                    size: *size,
                }))
            }
            PurgeTargetKind::Backups => backup_count += target.files.len() as u32,
            PurgeTargetKind::Outbox | PurgeTargetKind::MessageStatuses => {}
        }
    }
    latest::ResetContext {
        tenant: ctx
            .tenant
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        phone: ctx.phone.as_str().to_owned(),
        reset_id: reset_id.to_owned(),
        requested_at_ms,
        session,
        plan: latest::ResetPlan {
            session_files,
            backup_count,
            outbox,
        },
    }
}

fn wit_outcome(run: &HookRun) -> latest::PluginOutcome {
    let (outcome, detail) = match &run.outcome {
        HookOutcome::Ok => (latest::Outcome::Ok, None),
        HookOutcome::Vetoed(r) => (latest::Outcome::Vetoed, Some(r.clone())),
        // lila:hooks has no "skipped" (0.1.0 and 0.2.0): a plugin that could not run failed to do its job.
        HookOutcome::Failed(m) | HookOutcome::Skipped(m) => {
            (latest::Outcome::Failed, Some(m.clone()))
        }
        HookOutcome::TimedOut => (latest::Outcome::TimedOut, None),
    };
    latest::PluginOutcome {
        plugin: run.plugin.clone(),
        outcome,
        duration_ms: run.duration_ms,
        detail,
    }
}

fn wit_report(report: &ResetReport) -> latest::ResetReport {
    let count = |kind: PurgeTargetKind| -> u32 {
        report
            .removed
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.files as u32)
            .sum()
    };
    latest::ResetReport {
        tenant: report
            .tenant
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        phone: report.phone.as_str().to_owned(),
        reset_id: report.reset_id.clone(),
        finished_at_ms: now_ms(),
        session: latest::SessionState {
            status: report.session.status.clone(),
            own_jid: report.session.me.clone(),
            paired: report.session.paired,
        },
        logged_out: report.logged_out,
        removed_paths: report
            .removed
            .iter()
            .filter(|r| r.existed)
            .map(|r| rel_path(&r.path))
            .collect(),
        session_files_removed: count(PurgeTargetKind::SessionDir),
        backups_removed: count(PurgeTargetKind::Backups),
        outbox_dropped: wit_outbox(&report.outbox_dropped),
        before_clear: report
            .hooks
            .iter()
            .filter(|r| r.hook == HookKind::BeforeClear.as_str())
            .map(wit_outcome)
            .collect(),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// Whether `spec`'s refusal may be gone past: an operator forces the
/// reset, and the plugin is a tenant's.
fn overridable(ctx: &ResetContext, spec: &PluginSpec) -> bool {
    ctx.forced && matches!(spec.owner, PluginOwner::Tenant(_))
}

#[async_trait]
impl ResetHooks for PluginHooks {
    async fn before_clear(&self, ctx: &ResetContext) -> BeforeClear {
        let rt = &self.runtime;
        let registry = rt.registry();
        let reset_id = ctx.reset_id.clone();
        let requested_at_ms = now_ms();
        let session = latest::SessionState {
            status: ctx.status.clone(),
            own_jid: ctx.me.clone(),
            paired: ctx.paired,
        };
        let outbox = wit_outbox(&ctx.outbox);
        let mut verdict = BeforeClear::default();
        let Some(config) = &registry.config else {
            return verdict;
        };
        let phase_started = Instant::now();
        let phase_deadline = phase_started + config.before_clear_total;
        let wanted = |s: &PluginSpec| s.hooks.before_clear;
        let registry = rt
            .registry_when(
                |r| r.waits_for_compiling(ctx.tenant.as_ref(), wanted),
                phase_deadline,
            )
            .await;
        let plugins = registry.for_reset(ctx.tenant.as_ref(), wanted);
        if plugins.is_empty() {
            return verdict;
        }
        let wit_ctx = wit_context(ctx, &reset_id, requested_at_ms, session, outbox);
        let tenant = wit_ctx.tenant.clone();
        for plugin in plugins {
            let plugin = match plugin {
                ResetPlugin::Ready(plugin) => plugin,
                ResetPlugin::Compiling(spec) => {
                    let run = rt.not_ready(
                        &spec,
                        HookKind::BeforeClear,
                        phase_started,
                        &tenant,
                        &ctx.phone,
                    );
                    verdict.runs.push(run);
                    if spec.fail == FailMode::Closed {
                        let reason = format!(
                            "the plugin was still being compiled (lila started or the plugin changed moments ago) and was not ready within the reset's {} ms; it is set to fail closed, so nothing was changed. Try again in a few seconds.",
                            config.before_clear_total.as_millis()
                        );
                        if verdict.refuse(&spec.key, reason, overridable(ctx, &spec)) {
                            break;
                        }
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let deadline = (started + plugin.spec.time_budget).min(phase_deadline);
            let env = rt.env(
                &plugin,
                HookKind::BeforeClear,
                &tenant,
                &ctx.phone,
                &reset_id,
                deadline,
            );
            let end = rt
                .call(&plugin.spec, env, async |env, limits| {
                    rt.engine
                        .before_clear(&plugin.code, env, limits, &wit_ctx)
                        .await
                })
                .await;
            let outcome = match end {
                Ok(latest::Decision::Allow) => HookOutcome::Ok,
                Ok(latest::Decision::Veto(reason)) => HookOutcome::Vetoed(clean_reason(&reason)),
                Err(outcome) => outcome,
            };
            let run = HookRun {
                plugin: plugin.spec.key.clone(),
                hook: HookKind::BeforeClear.as_str(),
                outcome,
                duration_ms: elapsed_ms(started),
            };
            rt.record(&plugin, &run, &tenant, &ctx.phone);
            let refusal = match (&run.outcome, plugin.spec.fail) {
                (HookOutcome::Vetoed(reason), _) => Some(reason.clone()),
                (HookOutcome::Failed(message), FailMode::Closed) => Some(format!(
                    "the plugin failed ({message}) and is set to fail closed, so nothing was changed"
                )),
                (HookOutcome::TimedOut, FailMode::Closed) => Some(format!(
                    "the plugin did not finish within its {} ms budget and is set to fail closed, so nothing was changed",
                    deadline.saturating_duration_since(started).as_millis()
                )),
                (HookOutcome::Skipped(detail), FailMode::Closed) => Some(format!(
                    "the plugin could not run ({detail}) and is set to fail closed, so nothing was changed. Try again in a few seconds."
                )),
                _ => None,
            };
            verdict.runs.push(run);
            if let Some(reason) = refusal
                && verdict.refuse(&plugin.spec.key, reason, overridable(ctx, &plugin.spec))
            {
                break;
            }
        }
        verdict
    }

    async fn after_clear(&self, report: &ResetReport) -> Vec<HookRun> {
        let rt = &self.runtime;
        let registry = rt.registry();
        let Some(config) = &registry.config else {
            return Vec::new();
        };
        let phase_started = Instant::now();
        let phase_deadline = phase_started + config.after_clear_total;
        let wanted = |s: &PluginSpec| s.hooks.after_clear;
        let registry = rt
            .registry_when(
                |r| r.waits_for_compiling(report.tenant.as_ref(), wanted),
                phase_deadline,
            )
            .await;
        let plugins = registry.for_reset(report.tenant.as_ref(), wanted);
        if plugins.is_empty() {
            return Vec::new();
        }
        let reset_id = report.reset_id.clone();
        let wit_report = wit_report(report);
        let tenant = wit_report.tenant.clone();
        let mut runs = Vec::new();
        for plugin in plugins {
            let plugin = match plugin {
                ResetPlugin::Ready(plugin) => plugin,
                ResetPlugin::Compiling(spec) => {
                    runs.push(rt.not_ready(
                        &spec,
                        HookKind::AfterClear,
                        phase_started,
                        &tenant,
                        &report.phone,
                    ));
                    continue;
                }
            };
            let started = Instant::now();
            let deadline = (started + plugin.spec.time_budget).min(phase_deadline);
            let env = rt.env(
                &plugin,
                HookKind::AfterClear,
                &tenant,
                &report.phone,
                &reset_id,
                deadline,
            );
            let end = rt
                .call(&plugin.spec, env, async |env, limits| {
                    rt.engine
                        .after_clear(&plugin.code, env, limits, &wit_report)
                        .await
                })
                .await;
            let outcome = end.err().unwrap_or(HookOutcome::Ok);
            let run = HookRun {
                plugin: plugin.spec.key.clone(),
                hook: HookKind::AfterClear.as_str(),
                outcome,
                duration_ms: elapsed_ms(started),
            };
            rt.record(&plugin, &run, &tenant, &report.phone);
            runs.push(run);
        }
        runs
    }

    fn attach_events(&self, events: &Arc<crate::events::EventBus>) {
        event_hooks::start(self.runtime.clone(), events);
    }

    fn hook_metrics(&self) -> Option<&HookMetrics> {
        Some(&self.runtime.metrics)
    }
}
