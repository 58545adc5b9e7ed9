//! The reset's extension points: `before_clear` may veto, `after_clear` is told.
//!
//! The session actor calls these around a reset; the plugin runtime
//! implements them. Whatever a hook does, a reset answers within its budget
//! and an `after_clear` failure never undoes or fails a reset.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::PurgeTargetKind;
use crate::core::tenant::TenantId;
use crate::phone::Phone;

/// What a `before_clear` hook is told about the reset it may veto.
#[derive(Debug, Clone)]
pub struct ResetContext {
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

#[derive(Debug, Clone)]
pub struct PlannedRemoval {
    pub kind: PurgeTargetKind,
    /// The target, relative to the data root.
    pub path: PathBuf,
    /// Files under the target, relative to the data root, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
}

/// How one hook call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Ok,
    Vetoed(String),
    Failed(String),
    TimedOut,
}

impl HookOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Vetoed(_) => "vetoed",
            HookOutcome::Failed(_) => "failed",
            HookOutcome::TimedOut => "timed_out",
        }
    }
}

/// One hook call, for the reset's response, its log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub plugin: String,
    pub hook: &'static str,
    pub outcome: HookOutcome,
    pub duration_ms: u64,
}

/// The verdict of every `before_clear` hook together.
#[derive(Debug, Clone, Default)]
pub struct BeforeClear {
    /// `Some((plugin, reason))` when a hook vetoed, or when a fail-closed hook failed.
    pub refusal: Option<(String, String)>,
    pub runs: Vec<HookRun>,
}

/// What a reset removed, given to `after_clear` hooks and returned to the caller.
#[derive(Debug, Clone)]
pub struct ResetReport {
    pub tenant: Option<TenantId>,
    pub phone: Phone,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// Whether a client was running and was logged out of WhatsApp.
    pub logged_out: bool,
    pub removed: Vec<RemovedTarget>,
    pub outbox_messages_dropped: usize,
    pub hooks: Vec<HookRun>,
}

#[derive(Debug, Clone)]
pub struct RemovedTarget {
    pub kind: PurgeTargetKind,
    /// The target, relative to the data root.
    pub path: PathBuf,
    pub existed: bool,
    pub files: usize,
    pub bytes: u64,
}

#[async_trait]
pub trait ResetHooks: Send + Sync + 'static {
    async fn before_clear(&self, ctx: &ResetContext) -> BeforeClear;
    async fn after_clear(&self, report: &ResetReport) -> Vec<HookRun>;
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
