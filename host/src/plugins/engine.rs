//! The wasmtime side: one shared `Engine`, the epoch ticker, compiling a
//! component once into an `InstancePre`, and running one hook call in a fresh
//! `Store` with a time budget and limits that hold for the whole store: one
//! memory cap shared by every memory and table the call creates, and a bound
//! on how many core instances, memories and tables it may create.
//!
//! Which version of `lila:hooks` a component was built for is `wit`'s
//! business: the calls here take `wit::latest`'s types, and WIT types never
//! leave the `plugins` module.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};

use super::compiled_cache::{CacheMiss, CompiledCache};
use super::imports::{CallEnv, HostState};
use super::wit::latest::exports::lila::hooks::events::Event;
use super::wit::latest::lila::hooks::types::{Decision, ResetContext, ResetReport};
use super::wit::{self, EventsExport, ResetExport};

/// How often the epoch advances: the granularity of time budgets.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Extra time the async timeout allows over the budget, so that the
/// engine's own interruption (the precise one) normally fires first.
const TIMEOUT_GRACE: Duration = Duration::from_millis(250);
/// The deepest a plugin's wasm stack may grow.
const MAX_WASM_STACK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the wasm engine could not be set up: {0}")]
    Setup(String),
    #[error("the wasm engine could not be set up: epoch ticker: {0}")]
    Ticker(#[source] std::io::Error),
    #[error("not a loadable lila:hooks component: {0}")]
    Compile(String),
    #[error("not a loadable lila:hooks component: {0}")]
    NoHooks(#[from] wit::NoHooks),
}

/// A compiled component, ready to be instantiated cheaply for each call.
pub struct CompiledPlugin {
    pub pre: InstancePre<HostState>,
    /// `before-clear`/`after-clear`, when the component exports them (in any version).
    pub reset: Option<Box<dyn ResetExport>>,
    /// `on-event` (0.2.0 on), when the component exports it.
    pub events: Option<Box<dyn EventsExport>>,
    pub sha256: String,
    pub size: u64,
    pub origin: CodeOrigin,
    /// How long compiling (or loading from the cache) and linking took.
    pub compile_ms: u64,
}

/// Where a plugin's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOrigin {
    /// Compiled from the component's bytes by this process.
    Source,
    /// Loaded from `data/plugins/cache/`, compiled by an earlier start.
    Cache,
}

impl CodeOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeOrigin::Source => "source",
            CodeOrigin::Cache => "cache",
        }
    }
}

/// What a call did, before the host maps it to a `HookOutcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd<T> {
    Returned(T),
    Failed(String),
    TimedOut,
    /// It went past one of the store's limits (and failed for that).
    OverLimit(SandboxLimit, String),
}

/// The limits of one call's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// All the call's memories and tables together (tables count
    /// `TABLE_ELEMENT_BYTES` per element).
    pub memory_bytes: usize,
    pub max_instances: usize,
    pub max_memories: usize,
    pub max_tables: usize,
}

/// Which of a store's limits a call went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxLimit {
    Memory,
    Instances,
    Memories,
    Tables,
}

impl SandboxLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxLimit::Memory => "memory",
            SandboxLimit::Instances => "instances",
            SandboxLimit::Memories => "memories",
            SandboxLimit::Tables => "tables",
        }
    }

    /// wasmtime refuses an instantiation past `ResourceLimiter::instances`
    /// (and `memories`, `tables`) with "resource limit exceeded: {what}
    /// count too high at {n}"; `a_component_with_sixteen_memories_…` in
    /// host/tests/plugins.rs pins that sentence.
    fn of_count_error(message: &str) -> Option<SandboxLimit> {
        [
            ("instance count too high", SandboxLimit::Instances),
            ("memory count too high", SandboxLimit::Memories),
            ("table count too high", SandboxLimit::Tables),
        ]
        .into_iter()
        .find_map(|(needle, limit)| message.contains(needle).then_some(limit))
    }
}

/// The engine shared by every plugin, and the linker with the host's imports.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn wasm_error(e: wasmtime::Error) -> String {
    // wasmtime's error type is not a std error in 48: render it here, once.
    format!("{e:#}")
}

impl PluginEngine {
    pub fn new() -> Result<PluginEngine, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config).map_err(|e| EngineError::Setup(wasm_error(e)))?;
        let mut linker = Linker::new(&engine);
        // Toolchains for Python and JS import WASI; link it, locked down (see `imports::locked_down_wasi`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Setup(wasm_error(e)))?;
        wit::add_to_linker(&mut linker).map_err(|e| EngineError::Setup(wasm_error(e)))?;
        // The ticker is a plain thread: on the async executor it could be
        // starved by the very plugin it has to interrupt.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("lila-plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(PluginEngine {
            engine,
            linker,
            ticker_stop,
        })
    }

    /// The on-disk cache of compiled code for this engine, in `dir`.
    pub fn cache(&self, dir: PathBuf) -> CompiledCache {
        CompiledCache::new(dir, &self.engine)
    }

    /// Compiles and links a component, or loads its compiled code from
    /// `cache` when a valid entry exists (and stores it there after a
    /// compile, unless `abandoned` was set meanwhile: a compile past its
    /// time limit must not come back through the cache). CPU-heavy: call it
    /// off the request path.
    pub fn compile(
        &self,
        bytes: &[u8],
        cache: Option<&CompiledCache>,
        abandoned: &AtomicBool,
    ) -> Result<CompiledPlugin, EngineError> {
        let started = Instant::now();
        let sha256 = hex::encode(Sha256::digest(bytes));
        let cached = cache.map(|cache| cache.load(&self.engine, &sha256));
        let (component, origin) = match cached {
            Some(Ok(component)) => (component, CodeOrigin::Cache),
            Some(Err(miss)) => {
                if !matches!(miss, CacheMiss::Absent) {
                    tracing::warn!(sha256 = %sha256, reason = %miss, "compiled plugin cache entry ignored; compiling again");
                }
                (self.compile_source(bytes)?, CodeOrigin::Source)
            }
            None => (self.compile_source(bytes)?, CodeOrigin::Source),
        };
        if origin == CodeOrigin::Source
            && !abandoned.load(Ordering::Relaxed)
            && let Some(cache) = cache
            && let Err(error) = cache.store(&sha256, &component)
        {
            // A cache that cannot be written costs the next start a compile, nothing more.
            tracing::warn!(sha256 = %sha256, error = %error, "compiled plugin could not be cached");
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| EngineError::Compile(wasm_error(e)))?;
        // A component exports the reset hooks, the event hook, or both (in
        // whichever versions); anything else is not a plugin.
        let wit::Exports { reset, events } = wit::Exports::of(&instance_pre)?;
        Ok(CompiledPlugin {
            pre: instance_pre,
            reset,
            events,
            sha256,
            size: bytes.len() as u64,
            origin,
            compile_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn compile_source(&self, bytes: &[u8]) -> Result<Component, EngineError> {
        Component::new(&self.engine, bytes).map_err(|e| EngineError::Compile(wasm_error(e)))
    }

    /// Runs `before-clear` in a fresh store.
    pub async fn before_clear(
        &self,
        plugin: &CompiledPlugin,
        env: CallEnv,
        limits: CallLimits,
        ctx: &ResetContext,
    ) -> CallEnd<Decision> {
        self.run(plugin, env, limits, async |instance, store| {
            match &plugin.reset {
                Some(reset) => reset.before_clear(store, instance, ctx).await,
                None => Ok(Decision::Allow),
            }
        })
        .await
    }

    /// Runs `after-clear` in a fresh store.
    pub async fn after_clear(
        &self,
        plugin: &CompiledPlugin,
        env: CallEnv,
        limits: CallLimits,
        report: &ResetReport,
    ) -> CallEnd<()> {
        self.run(plugin, env, limits, async |instance, store| {
            match &plugin.reset {
                Some(reset) => reset.after_clear(store, instance, report).await,
                None => Ok(()),
            }
        })
        .await
    }

    /// Runs `on-event` in a fresh store (nothing when the component has no event hook).
    pub async fn on_event(
        &self,
        plugin: &CompiledPlugin,
        env: CallEnv,
        limits: CallLimits,
        event: &Event,
    ) -> CallEnd<()> {
        self.run(plugin, env, limits, async |instance, store| {
            match &plugin.events {
                Some(events) => events.on_event(store, instance, event).await,
                None => Ok(()),
            }
        })
        .await
    }

    async fn run<T>(
        &self,
        plugin: &CompiledPlugin,
        env: CallEnv,
        limits: CallLimits,
        call: impl AsyncFnOnce(&Instance, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> CallEnd<T> {
        let deadline = env.deadline;
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return CallEnd::TimedOut;
        }
        // A fresh store per call: a store that trapped or timed out is dropped
        // with this function and never entered again.
        let mut store = Store::new(&self.engine, HostState::new(env, StoreCap::new(limits)));
        store.limiter(|state| &mut state.memory);
        // Check the clock at every tick: past the deadline the plugin is
        // interrupted (a trap); before it, it yields to the executor so a
        // spinning plugin does not hold a worker thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let work = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            call(&instance, &mut store).await
        };
        // Host imports are bounded by the deadline too; this outer timeout
        // is the backstop for any await the engine cannot interrupt.
        let result = tokio::time::timeout(budget + TIMEOUT_GRACE, work).await;
        match result {
            Err(_) => CallEnd::TimedOut,
            Ok(Ok(value)) => CallEnd::Returned(value),
            Ok(Err(e)) => {
                if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    CallEnd::TimedOut
                } else if store.data().memory.hit_cap {
                    CallEnd::OverLimit(
                        SandboxLimit::Memory,
                        format!(
                            "it ran out of its {} MiB memory cap (all its memories and tables together)",
                            limits.memory_bytes >> 20
                        ),
                    )
                } else {
                    let mut message = wasm_error(e);
                    if let Some(limit) = SandboxLimit::of_count_error(&message) {
                        let (what, allowed, key) = match limit {
                            SandboxLimit::Instances => {
                                ("core instances", limits.max_instances, "max_instances")
                            }
                            SandboxLimit::Memories => {
                                ("memories", limits.max_memories, "max_memories")
                            }
                            _ => ("tables", limits.max_tables, "max_tables"),
                        };
                        return CallEnd::OverLimit(
                            limit,
                            format!(
                                "it creates more {what} than the {allowed} a plugin call may have (plugins.{key})"
                            ),
                        );
                    }
                    message.truncate(message.floor_char_boundary(500));
                    CallEnd::Failed(message)
                }
            }
        }
    }
}

/// The store's limits as wasmtime asks them: growing a memory or a table
/// fails once the store's memories and tables together would pass the cap
/// (a plugin's allocator turns that into a trap), and instantiation fails
/// past the counts. Summing matters: a per-memory cap would give a
/// component with sixteen memories sixteen caps.
pub struct StoreCap {
    pub limits: CallLimits,
    /// What the store's memories and tables hold now, in bytes.
    pub used_bytes: usize,
    pub hit_cap: bool,
}

/// What one table element costs the host: a pointer (a `funcref` slot).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl StoreCap {
    pub fn new(limits: CallLimits) -> StoreCap {
        StoreCap {
            limits,
            used_bytes: 0,
            hit_cap: false,
        }
    }

    /// Accounts for a growth of `more` bytes, or refuses it.
    fn grow(&mut self, more: usize) -> bool {
        match self.used_bytes.checked_add(more) {
            Some(total) if total <= self.limits.memory_bytes => {
                self.used_bytes = total;
                true
            }
            _ => {
                self.hit_cap = true;
                false
            }
        }
    }
}

impl ResourceLimiter for StoreCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called with `current` 0 when a memory is created, so every
        // memory's initial size counts too.
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        Ok(self.grow(more.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        self.limits.max_instances
    }

    fn memories(&self) -> usize {
        self.limits.max_memories
    }

    fn tables(&self) -> usize {
        self.limits.max_tables
    }
}
