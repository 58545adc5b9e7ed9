//! `Gateway`: the set of session actors, boot-time recovery, listings and
//! shutdown.
//!
//! The map from phone to actor handle is the only shared structure besides
//! the owner index; it holds handles, not state, and its lock is never held
//! across an await. A phone gets an actor when something is to be done with
//! it (boot resumes it, or a request names a phone the host knows); listing
//! sessions reads the index and the actors' published views, and starts
//! nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::core::record::{DesiredState, PhoneRecord};
use crate::core::recovery::{BootAction, boot_action};
use crate::core::reset_report::ResetReport;
use crate::core::tenant::{Caller, TenantId};
use crate::events::EventBus;
use crate::hooks::ResetHooks;
use crate::layout::DataLayout;
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::session::{
    OutboxQuota, SessionContext, SessionError, SessionHandle, SessionIndex, SessionView,
    spawn_session,
};
use crate::storage::StorageError;
use crate::storage::phone_store::PhoneStore;
use crate::whatsapp::WhatsApp;

/// How often boot logs how many resumed sessions are connected again.
const BOOT_PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// How long boot keeps reporting progress at most.
const BOOT_PROGRESS_FOR: Duration = Duration::from_secs(600);

/// How often a create or a reset is sent again to a new actor after the one
/// it reached retired without seeing it (see `Gateway::with_session`).
const RETIRED_ACTOR_RETRIES: u32 = 256;

pub struct Gateway {
    ctx: Arc<SessionContext>,
    sessions: Arc<Mutex<ActorMap>>,
    /// The boot progress reporter, stopped at shutdown.
    progress: Mutex<Option<JoinHandle<()>>>,
}

/// What boot-time recovery did, for the log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootSummary {
    pub resumed: Vec<Phone>,
    pub purges_finished: Vec<Phone>,
    pub orphans: Vec<Phone>,
    pub failures: Vec<(Phone, String)>,
}

/// What `shutdown` did, for the log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownSummary {
    pub stopped: usize,
    /// Actors that had not stopped by the deadline (their process ends anyway).
    pub abandoned: usize,
}

impl Gateway {
    /// A single node, its phones in files under the data root.
    pub fn new(
        config: Config,
        whatsapp: Arc<dyn WhatsApp>,
        hooks: Arc<dyn ResetHooks>,
    ) -> Arc<Gateway> {
        let store = PhoneStore::files(DataLayout::new(config.data_dir.clone()));
        Gateway::with_store(config, store, whatsapp, hooks)
    }

    /// A gateway over `store` (files, or PostgreSQL for a cluster).
    pub fn with_store(
        config: Config,
        store: PhoneStore,
        whatsapp: Arc<dyn WhatsApp>,
        hooks: Arc<dyn ResetHooks>,
    ) -> Arc<Gateway> {
        let events = Arc::new(EventBus::new(&config.events));
        let layout = DataLayout::new(config.data_dir.clone());
        let sessions: Arc<Mutex<ActorMap>> = Arc::default();
        let forget = Arc::downgrade(&sessions);
        let ctx = SessionContext {
            on_retire: Box::new(move |phone, id| {
                if let Some(map) = forget.upgrade() {
                    forget_actor(&map, phone, id);
                }
            }),
            store,
            layout,
            start_permits: Semaphore::new(config.sessions.max_concurrent_starts),
            config,
            whatsapp,
            hooks,
            metrics: Arc::new(Metrics::default()),
            index: SessionIndex::default(),
            quota: OutboxQuota::default(),
            events: events.clone(),
        };
        // The plugins' event hooks listen on the same bus.
        ctx.hooks.attach_events(&events);
        Arc::new(Gateway {
            ctx: Arc::new(ctx),
            sessions,
            progress: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// The bus every session's events go through (`GET /api/events`).
    pub fn events(&self) -> &Arc<EventBus> {
        &self.ctx.events
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// The reset hooks, for `GET /api/plugins` and the hook metrics.
    pub fn hooks(&self) -> &Arc<dyn ResetHooks> {
        &self.ctx.hooks
    }

    /// Where phone state is kept.
    pub fn store(&self) -> &PhoneStore {
        &self.ctx.store
    }

    pub fn layout(&self) -> &DataLayout {
        &self.ctx.layout
    }

    /// How many session actors are alive (each is a task); for tests and metrics.
    pub fn live_actors(&self) -> usize {
        self.map()
            .values()
            .filter(|(handle, task)| !handle.is_closed() && !task.is_finished())
            .count()
    }

    /// How many actors the gateway holds an entry for, alive or not: what
    /// the phones it has seen cost it.
    pub fn actors_held(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> MutexGuard<'_, ActorMap> {
        lock(&self.sessions)
    }

    /// The actor of `phone`, started if needed. An actor that died (a panic)
    /// is logged and replaced by a fresh one that reloads its state from disk.
    /// For creating and resetting, which must reach phones the host has not
    /// seen yet; everything else goes through [`Gateway::lookup`].
    pub fn session(&self, phone: &Phone) -> SessionHandle {
        let mut map = self.map();
        if let Some((handle, task)) = map.get(phone) {
            if !handle.is_closed() && !task.is_finished() {
                return handle.clone();
            }
            if !handle.is_retired() {
                Metrics::inc(&self.ctx.metrics.actor_panics);
                error!(phone = %phone, "the session's actor had stopped; starting a new one");
            }
        }
        let (handle, task) = spawn_session(self.ctx.clone(), phone.clone());
        map.insert(phone.clone(), (handle.clone(), task));
        handle
    }

    /// Runs `request` with the actor of `phone`, started if needed, for the
    /// requests that may be about a phone the host does not have (create,
    /// clear). Such an actor retires as soon as it has nothing to keep; a
    /// request it dropped unseen, as it retired, goes to a new actor.
    ///
    /// An actor retires only after carrying out a command, so every retry
    /// follows another request's progress, and requests reach each new actor
    /// in the order they come: a request waits at most as many rounds as
    /// there are requests racing it for the phone (a campaign of 9 racing
    /// creates and resets ran out of the 3 retries this once allowed).
    /// [`RETIRED_ACTOR_RETRIES`] is only a guard against a loop.
    async fn with_session<T, F, Fut>(&self, phone: &Phone, request: F) -> Result<T, SessionError>
    where
        F: Fn(SessionHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, SessionError>>,
    {
        let mut attempts = 0;
        loop {
            let handle = self.session(phone);
            match request(handle.clone()).await {
                Err(SessionError::Unavailable)
                    if handle.is_retired() && attempts < RETIRED_ACTOR_RETRIES =>
                {
                    attempts += 1;
                }
                answer => return answer,
            }
        }
    }

    /// `POST /api/sessions`: creates (or starts) `phone`'s session.
    pub async fn create(
        &self,
        phone: &Phone,
        caller: &Caller,
        owner: Option<TenantId>,
    ) -> Result<SessionView, SessionError> {
        self.with_session(phone, |session| {
            let (caller, owner) = (caller.clone(), owner.clone());
            async move { session.create(caller, owner).await }
        })
        .await
    }

    /// `POST /api/sessions/{phone}/clear`: resets `phone` (`force`: an
    /// operator's reset past tenants' plugins' refusals).
    pub async fn clear(
        &self,
        phone: &Phone,
        caller: &Caller,
        force: bool,
    ) -> Result<ResetReport, SessionError> {
        self.with_session(phone, |session| {
            let caller = caller.clone();
            async move { session.clear(caller, force).await }
        })
        .await
    }

    /// The actor of a phone the host knows (a record or files of it): a
    /// request about any other phone is answered 404 without starting a
    /// task for it.
    ///
    /// Only the index decides, not the map of actors: an actor the index
    /// does not know of is one a create or a reset started for a phone with
    /// no record, which retires unless that create lands (and indexes the
    /// phone); a request that found it there could reach it as it retires.
    pub fn lookup(&self, phone: &Phone) -> Result<SessionHandle, SessionError> {
        if self.ctx.index.knows(phone) {
            Ok(self.session(phone))
        } else {
            Err(SessionError::NotFound)
        }
    }

    /// Cluster mode: this node just claimed `phone`'s lease. A fresh actor
    /// (any earlier one saw state another node may have changed since)
    /// loads the phone from the database, and resumes its session or
    /// finishes its interrupted reset, as boot does on a single node.
    pub async fn adopt(&self, phone: &Phone) {
        self.drop_actor(phone).await;
        let record = match self.index_phone(phone).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                error!(phone = %phone, error = %e, "could not read the phone's record; not resumed");
                return;
            }
        };
        match boot_action(Some(&record), false) {
            BootAction::Resume => self.session(phone).resume().await,
            BootAction::FinishPurge => {
                let handle = self.session(phone);
                let phone = phone.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle.finish_purge().await {
                        error!(phone = %phone, error = %e, "could not finish an interrupted reset");
                    }
                });
            }
            BootAction::ReportOrphan | BootAction::StayDown => {}
        }
    }

    /// Stops the phone's actor, if it has one, and forgets it: its client
    /// stops without logging out. Bounded by the shutdown deadline.
    pub async fn drop_actor(&self, phone: &Phone) {
        let Some((handle, task)) = self.map().remove(phone) else {
            return;
        };
        let deadline = self.ctx.config.sessions.shutdown_deadline;
        let stopped = tokio::time::timeout(deadline, async {
            handle.shutdown().await;
            let _ = task.await;
        })
        .await;
        if stopped.is_err() {
            warn!(phone = %phone, "the session did not stop in time");
        }
    }

    /// Whether `phone`'s session runs here and is connected.
    pub fn is_connected_here(&self, phone: &Phone) -> bool {
        self.map()
            .get(phone)
            .is_some_and(|(handle, task)| !task.is_finished() && handle.current_view().ready)
    }

    /// Whether some node should run `phone` (its session is meant to run),
    /// as far as this node knows.
    pub fn wants_a_node(&self, phone: &Phone) -> bool {
        self.ctx
            .index
            .get(phone)
            .is_some_and(|entry| entry.desired == Some(DesiredState::Running))
    }

    /// Reads `phone`'s record into the owner index (an orphan when it has
    /// none), with how many messages its outbox holds (what a listing at
    /// rest shows); the record.
    async fn index_phone(&self, phone: &Phone) -> Result<Option<PhoneRecord>, StorageError> {
        let record = self.ctx.store.load_record(phone).await?;
        match &record {
            Some(record) => self.ctx.index.record(phone, record),
            None => self.ctx.index.orphan(phone),
        }
        // No outbox stored reads as an empty one: one read either way.
        if let Ok(outbox) = self.ctx.store.load_outbox(phone).await {
            self.ctx.index.set_pending_at_boot(phone, outbox.len());
            let owner = record.as_ref().and_then(|r| r.owner.as_ref());
            self.ctx.quota.set(phone, owner, outbox.usage());
        }
        Ok(record)
    }

    /// Boot-time recovery: build the owner index, finish interrupted resets,
    /// resume what was running, and leave everything else down (with no actor).
    /// In cluster mode boot does nothing: the lease loop decides which
    /// phones this node runs, and `adopt` indexes each as it is claimed.
    pub async fn boot(&self) -> BootSummary {
        let mut summary = BootSummary::default();
        if !self.ctx.store.resumes_at_boot() {
            info!(
                "cluster mode: the lease loop decides which phones run here, and indexes each as it claims it"
            );
            return summary;
        }
        let phones = self.ctx.store.known_phones().await.unwrap_or_else(|e| {
            error!(error = %e, "could not list the phones; none resumed");
            Default::default()
        });
        for phone in phones {
            let record = match self.index_phone(&phone).await {
                Ok(record) => record,
                Err(e) => {
                    error!(phone = %phone, error = %e, "damaged phone record; not resumed");
                    self.ctx.index.orphan(&phone);
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
            known = self.ctx.index.len(),
            resumed = summary.resumed.len(),
            purges_finished = summary.purges_finished.len(),
            orphans = summary.orphans.len(),
            failures = summary.failures.len(),
            "boot recovery done; resumed sessions are connecting"
        );
        self.ctx
            .metrics
            .boot_sessions_resumed
            .store(summary.resumed.len() as i64, Ordering::Relaxed);
        self.report_boot_progress(summary.resumed.len());
        summary
    }

    /// Logs every few seconds how many of the resumed sessions are connected
    /// again, until all are (or for a bounded time).
    fn report_boot_progress(&self, resumed: usize) {
        if resumed == 0 {
            return;
        }
        let metrics = self.ctx.metrics.clone();
        let reporter = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(BOOT_PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let back = metrics.boot_sessions_reconnected.load(Ordering::Relaxed) as usize;
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if back >= resumed {
                    info!(
                        reconnected = back,
                        resumed, elapsed_ms, "every resumed session is connected again"
                    );
                    return;
                }
                info!(reconnected = back, resumed, elapsed_ms, "boot progress");
                if started.elapsed() > BOOT_PROGRESS_FOR {
                    warn!(
                        reconnected = back,
                        resumed,
                        "not every resumed session came back; see each session's lastError"
                    );
                    return;
                }
            }
        });
        if let Some(previous) = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(reporter)
        {
            previous.abort();
        }
    }

    /// The sessions `caller` may see, cleared ones excluded. Costs
    /// O(the caller's sessions): the index says which phones, and each
    /// live actor's published view says how they are. Starts no actor.
    pub fn list(&self, caller: &Caller) -> Vec<SessionView> {
        let entries = self.ctx.index.visible_to(caller);
        let map = self.map();
        entries
            .into_iter()
            .filter_map(|(phone, entry)| match map.get(&phone) {
                Some((handle, task)) if !handle.is_closed() && !task.is_finished() => {
                    let view = handle.current_view();
                    (caller.may_access(view.owner.as_ref()) && view.status != "cleared")
                        .then_some(view)
                }
                _ => Some(entry.view_at_rest(&phone)),
            })
            .collect()
    }

    /// Cluster mode: the live views of the sessions this node runs that
    /// `caller` may see (cleared ones excluded), for a cluster-wide listing.
    pub fn list_running_here(&self, caller: &Caller) -> Vec<SessionView> {
        let store = &self.ctx.store;
        self.map()
            .iter()
            .filter(|(phone, (handle, task))| {
                store.runs_here(phone) && !handle.is_closed() && !task.is_finished()
            })
            .map(|(_, (handle, _))| handle.current_view())
            .filter(|view| caller.may_access(view.owner.as_ref()) && view.status != "cleared")
            .collect()
    }

    /// Stops every client (without logging out: they resume at next start),
    /// all at once, within `deadline`. Each actor saves what it holds in
    /// memory (its outbox is already on disk) and stops its client.
    pub async fn shutdown_within(&self, deadline: Duration) -> ShutdownSummary {
        if let Some(reporter) = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            reporter.abort();
        }
        let actors: Vec<_> = self.map().drain().collect();
        let total = actors.len();
        let mut stopping = JoinSet::new();
        for (_, (handle, task)) in actors {
            stopping.spawn(async move {
                handle.shutdown().await;
                let _ = task.await;
            });
        }
        let mut summary = ShutdownSummary::default();
        let all_stopped = tokio::time::timeout(deadline, async {
            while stopping.join_next().await.is_some() {
                summary.stopped += 1;
            }
        })
        .await;
        if all_stopped.is_err() {
            summary.abandoned = total - summary.stopped;
            warn!(
                stopped = summary.stopped,
                abandoned = summary.abandoned,
                deadline_ms = deadline.as_millis() as u64,
                "some sessions did not stop in time; exiting anyway (they resume at the next start)"
            );
            stopping.abort_all();
        }
        summary
    }

    /// `shutdown_within` with the default deadline.
    pub async fn shutdown(&self) -> ShutdownSummary {
        self.shutdown_within(self.ctx.config.sessions.shutdown_deadline)
            .await
    }
}

/// Each phone's actor: its handle and its task.
type ActorMap = HashMap<Phone, (SessionHandle, JoinHandle<()>)>;

fn lock(map: &Mutex<ActorMap>) -> MutexGuard<'_, ActorMap> {
    // The map only holds handles; a panic elsewhere while it was locked
    // cannot have left it half-updated in a way that matters.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forgets the actor `id` of `phone`, which retired, unless a newer actor
/// already took its place.
fn forget_actor(map: &Mutex<ActorMap>, phone: &Phone, id: u64) {
    let mut map = lock(map);
    if map.get(phone).is_some_and(|(handle, _)| handle.id() == id) {
        map.remove(phone);
    }
}
