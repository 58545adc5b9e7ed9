//! The reset's extension points: `before_clear` may veto, `after_clear` is told.
//!
//! The session actor calls these around a reset; the plugin runtime
//! implements them. Whatever a hook does, a reset answers within its budget
//! and an `after_clear` failure never undoes or fails a reset.

use async_trait::async_trait;

use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::PlannedRemoval;
use crate::core::reset_report::{HookRun, ResetReport};
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
    /// An operator forces the reset: a tenant's plugin is still called, but
    /// its refusal does not stop the reset (the operator's own plugins
    /// still can).
    pub forced: bool,
}

/// The verdict of every `before_clear` hook together.
#[derive(Debug, Clone, Default)]
pub struct BeforeClear {
    /// `Some((plugin, reason))` when a hook vetoed, or when a fail-closed hook failed.
    pub refusal: Option<(String, String)>,
    /// A forced reset: the tenants' plugins' refusals it went past.
    pub overridden: Vec<(String, String)>,
    pub runs: Vec<HookRun>,
}

impl BeforeClear {
    /// Records `plugin`'s refusal. It stops the reset (true), unless it is
    /// `overridable` (a tenant's plugin in a reset an operator forces): then
    /// it is kept in `overridden`, logged, and the reset goes on.
    pub fn refuse(&mut self, plugin: &str, reason: String, overridable: bool) -> bool {
        if overridable {
            tracing::warn!(
                plugin,
                "forced reset: an operator goes past this tenant plugin's refusal"
            );
            self.overridden.push((plugin.to_owned(), reason));
            false
        } else {
            self.refusal = Some((plugin.to_owned(), reason));
            true
        }
    }
}

#[async_trait]
/// `Any` lets `GET /api/plugins` find the plugin runtime behind the
/// gateway's hooks (`http/plugins.rs`), to show what it has loaded.
pub trait ResetHooks: std::any::Any + Send + Sync {
    async fn before_clear(&self, ctx: &ResetContext) -> BeforeClear;
    async fn after_clear(&self, report: &ResetReport) -> Vec<HookRun>;

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
