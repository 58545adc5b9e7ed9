//! The reset's extension points: `before_clear` may veto, `after_clear` is told.
//!
//! The session actor calls these around a reset; the plugin runtime
//! implements them. Whatever a hook does, a reset answers within its budget
//! and an `after_clear` failure never undoes or fails a reset.

use std::path::PathBuf;

use async_trait::async_trait;

pub use crate::core::reset_report::{HookOutcome, HookRun, ResetReport, SessionSnapshot};

use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::PlannedRemoval;
use crate::core::tenant::TenantId;
use crate::phone::Phone;

/// What a `before_clear` hook is told about the reset it may veto.
#[derive(Debug, Clone)]
pub struct ResetContext {
    /// The reset's id, the same in `before_clear`, `after_clear` and the
    /// purge journal, so a receiver can de-duplicate a notice repeated
    /// after a crash.
    pub reset_id: String,
    pub tenant: Option<TenantId>,
    pub phone: Phone,
    /// The session's status as `GET /status` reports it.
    pub status: String,
    pub me: Option<String>,
    pub paired: bool,
    /// What will be removed, per target: files relative to the data root, with sizes.
    pub targets: Vec<PlannedRemoval>,
    /// The messages the reset will drop from the outbox, in order.
    pub outbox: Vec<OutboxMessage>,
}

/// The verdict of every `before_clear` hook together.
#[derive(Debug, Clone, Default)]
pub struct BeforeClear {
    /// `Some((plugin, reason))` when a hook vetoed, or when a fail-closed hook failed.
    pub refusal: Option<(String, String)>,
    pub runs: Vec<HookRun>,
}

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

#[async_trait]
pub trait ResetHooks: Send + Sync + 'static {
    async fn before_clear(&self, ctx: &ResetContext) -> BeforeClear;
    async fn after_clear(&self, report: &ResetReport) -> Vec<HookRun>;

    /// What is loaded, for `GET /api/plugins`; `None` when there is no plugin runtime.
    fn plugins(&self) -> Option<PluginsView> {
        None
    }

    /// Starts delivering the bus's events to the plugins' `on-event` hooks
    /// (the gateway calls it once); nothing when there is no plugin runtime.
    fn attach_events(&self, _events: &std::sync::Arc<crate::events::EventBus>) {}

    /// Hook call counters for `GET /metrics`; `None` when there is no plugin runtime.
    fn hook_metrics(&self) -> Option<&crate::metrics::HookMetrics> {
        None
    }
}

/// No hooks at all: every reset is allowed.
pub struct NoHooks;

#[async_trait]
impl ResetHooks for NoHooks {
    async fn before_clear(&self, _ctx: &ResetContext) -> BeforeClear {
        BeforeClear::default()
    }

    async fn after_clear(&self, _report: &ResetReport) -> Vec<HookRun> {
        Vec::new()
    }
}
