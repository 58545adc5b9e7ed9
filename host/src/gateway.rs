//! `Gateway`: the set of session actors, boot-time recovery and shutdown.
//!
//! The map from phone to actor handle is the only shared structure; it holds
//! handles, not state, and its lock is never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::core::recovery::{BootAction, boot_action};
use crate::core::tenant::Caller;
use crate::hooks::ResetHooks;
use crate::layout::DataLayout;
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::session::{SessionContext, SessionHandle, SessionView, spawn_session};
use crate::storage::phone_records;
use crate::whatsapp::WhatsApp;

pub struct Gateway {
    ctx: Arc<SessionContext>,
    sessions: Mutex<HashMap<Phone, (SessionHandle, JoinHandle<()>)>>,
}

/// What boot-time recovery did, for the log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootSummary {
    pub resumed: Vec<Phone>,
    pub purges_finished: Vec<Phone>,
    pub orphans: Vec<Phone>,
    pub failures: Vec<(Phone, String)>,
}

impl Gateway {
    pub fn new(
        config: Config,
        whatsapp: Arc<dyn WhatsApp>,
        hooks: Arc<dyn ResetHooks>,
    ) -> Arc<Gateway> {
        let ctx = SessionContext {
            layout: DataLayout::new(config.data_dir.clone()),
            start_permits: Semaphore::new(config.sessions.max_concurrent_starts),
            config,
            whatsapp,
            hooks,
            metrics: Arc::new(Metrics::default()),
        };
        Arc::new(Gateway {
            ctx: Arc::new(ctx),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// The reset hooks, for `GET /api/plugins` and the hook metrics.
    pub fn hooks(&self) -> &Arc<dyn ResetHooks> {
        &self.ctx.hooks
    }

    pub fn layout(&self) -> &DataLayout {
        &self.ctx.layout
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Phone, (SessionHandle, JoinHandle<()>)>> {
        // The map only holds handles; a panic elsewhere while it was locked
        // cannot have left it half-updated in a way that matters.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The actor of `phone`, started if needed. An actor that died (a panic)
    /// is logged and replaced by a fresh one that reloads its state from disk.
    pub fn session(&self, phone: &Phone) -> SessionHandle {
        let mut map = self.map();
        if let Some((handle, task)) = map.get(phone) {
            if !handle.is_closed() && !task.is_finished() {
                return handle.clone();
            }
            Metrics::inc(&self.ctx.metrics.actor_panics);
            error!(phone = %phone, "the session's actor had stopped; starting a new one");
        }
        let (handle, task) = spawn_session(self.ctx.clone(), phone.clone());
        map.insert(phone.clone(), (handle.clone(), task));
        handle
    }

    /// Boot-time recovery: finish interrupted resets, resume what was
    /// running, and leave everything else down.
    pub async fn boot(&self) -> BootSummary {
        let mut summary = BootSummary::default();
        let layout = self.ctx.layout.clone();
        let phones = tokio::task::spawn_blocking(move || phone_records::known_phones(&layout))
            .await
            .unwrap_or_default();
        for phone in phones {
            let record = match phone_records::load(&self.ctx.layout, &phone) {
                Ok(record) => record,
                Err(e) => {
                    error!(phone = %phone, error = %e, "damaged phone record; not resumed");
                    summary.failures.push((phone, e.to_string()));
                    continue;
                }
            };
            let has_files = self.ctx.layout.session_dir(&phone).exists()
                || self.ctx.layout.backup_dir(&phone).exists();
            match boot_action(record.as_ref(), has_files) {
                BootAction::Resume => {
                    self.session(&phone).resume().await;
                    summary.resumed.push(phone);
                }
                BootAction::FinishPurge => match self.session(&phone).finish_purge().await {
                    Ok(()) => summary.purges_finished.push(phone),
                    Err(e) => {
                        error!(phone = %phone, error = %e, "could not finish an interrupted reset");
                        summary.failures.push((phone, e.to_string()));
                    }
                },
                BootAction::ReportOrphan => {
                    warn!(phone = %phone, "session files without an owner record; not resumed (an operator can clear them)");
                    summary.orphans.push(phone);
                }
                BootAction::StayDown => {}
            }
        }
        info!(
            resumed = summary.resumed.len(),
            purges_finished = summary.purges_finished.len(),
            orphans = summary.orphans.len(),
            failures = summary.failures.len(),
            "boot recovery done"
        );
        summary
    }

    /// The sessions `caller` may see, cleared ones excluded.
    pub async fn list(&self, caller: &Caller) -> Vec<SessionView> {
        let layout = self.ctx.layout.clone();
        let phones = tokio::task::spawn_blocking(move || phone_records::known_phones(&layout))
            .await
            .unwrap_or_default();
        let mut views = Vec::new();
        for phone in phones {
            if let Ok(view) = self.session(&phone).view(caller.clone()).await {
                views.push(view);
            }
        }
        views
    }

    /// Stops every client (without logging out: they resume at next start).
    pub async fn shutdown(&self) {
        let actors: Vec<_> = self.map().drain().collect();
        for (_, (handle, task)) in actors {
            handle.shutdown().await;
            let _ = task.await;
        }
    }
}
