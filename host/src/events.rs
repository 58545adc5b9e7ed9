//! The event bus: numbers session and message events, keeps the most recent
//! ones for `Last-Event-ID` resumes, and fans them out to whoever listens
//! (the SSE stream, the plugins' event hooks, a cluster node's relay).
//!
//! Publishing never waits for a listener: each listener has a bounded queue
//! of its own (`events.subscriber_lag`), and an event that does not fit is
//! dropped for that listener and counted: the listener is told how many
//! (`Received::Dropped`) just before the next event it gets, or once its
//! queue is empty. A listener for one caller
//! (`subscribe_for`) is handed only the events that caller may see, so a
//! tenant's stream neither falls behind because of another tenant's
//! activity nor learns of it from a drop count. A session pays one short
//! lock and one clone per listener per event, and only when something
//! changed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::config::EventsConfig;
use crate::core::event::{Event, EventKind};
use crate::core::tenant::{Caller, TenantId};
use crate::phone::Phone;

pub struct EventBus {
    inner: Mutex<Ring>,
    /// How many events may wait for one plugin's `on-event`.
    plugin_queue: usize,
    /// How many events may wait for one listener.
    subscriber_lag: usize,
}

struct Ring {
    /// The id the next event gets.
    next_id: u64,
    capacity: usize,
    recent: VecDeque<Arc<Event>>,
    listeners: Vec<Listener>,
}

/// One listener's end of the fan-out.
struct Listener {
    /// Whose events it gets; `None`: every event.
    caller: Option<Caller>,
    queue: mpsc::Sender<Delivery>,
    /// Events of its that did not fit since the last one that did. Shared
    /// with the subscription; an event is queued only under this lock.
    dropped: Arc<Mutex<u64>>,
}

/// An event, and how many of the listener's events were dropped before it.
struct Delivery {
    dropped_before: u64,
    event: Arc<Event>,
}

/// What a listener receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Arc<Event>),
    /// The listener fell behind and this many of its events were dropped.
    Dropped(u64),
}

/// Events older than a resume point that the buffer no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The first id missed.
    pub from: u64,
    /// The last id missed.
    pub to: u64,
}

/// A listener: the buffered events it asked for, then live ones.
pub struct Subscription {
    /// Buffered events after the resume point, oldest first, not yet handed out.
    backlog: VecDeque<Arc<Event>>,
    live: mpsc::Receiver<Delivery>,
    dropped: Arc<Mutex<u64>>,
    /// An event received after a drop marker, handed out next.
    held: Option<Arc<Event>>,
    /// The last id handed out: ids only grow, so an event at or below it is
    /// never handed out twice.
    last_id: u64,
}

impl EventBus {
    pub fn new(config: &EventsConfig) -> EventBus {
        // Ids start at the boot time in microseconds: a `Last-Event-ID` from
        // before a restart is then older than anything this process sends,
        // and the client is told it missed events instead of silently
        // skipping them. (Still below 2^53, so exact as a JavaScript number.)
        let first = now_ms().saturating_mul(1_000);
        EventBus {
            inner: Mutex::new(Ring {
                next_id: first,
                capacity: config.buffer.max(1),
                recent: VecDeque::new(),
                listeners: Vec::new(),
            }),
            plugin_queue: config.plugin_queue.max(1),
            subscriber_lag: config.subscriber_lag.max(1),
        }
    }

    pub fn plugin_queue(&self) -> usize {
        self.plugin_queue
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // The ring is a queue of finished values: a panic elsewhere cannot
        // have left it half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `kind` and hands it to every listener; never waits.
    pub fn publish(&self, tenant: Option<&TenantId>, phone: &Phone, kind: EventKind) {
        let mut ring = self.ring();
        let event = Arc::new(Event {
            id: ring.next_id,
            at_ms: now_ms(),
            tenant: tenant.cloned(),
            phone: phone.clone(),
            kind,
        });
        ring.next_id += 1;
        if ring.recent.len() == ring.capacity {
            ring.recent.pop_front();
        }
        ring.recent.push_back(event.clone());
        // Queued under the lock, so listeners see events in id order. A
        // listener whose receiver is gone is forgotten here.
        ring.listeners.retain_mut(|listener| {
            if !listener
                .caller
                .as_ref()
                .is_none_or(|caller| caller.may_access(event.tenant.as_ref()))
            {
                return !listener.queue.is_closed();
            }
            let mut dropped = count(&listener.dropped);
            let delivery = Delivery {
                dropped_before: *dropped,
                event: event.clone(),
            };
            match listener.queue.try_send(delivery) {
                Ok(()) => {
                    *dropped = 0;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    *dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Publishes each of `kinds` in order.
    pub fn publish_all(&self, tenant: Option<&TenantId>, phone: &Phone, kinds: Vec<EventKind>) {
        for kind in kinds {
            self.publish(tenant, phone, kind);
        }
    }

    /// A new listener of every event. With `after`, the buffered events
    /// after that id come first, and `Missed` says which ids the buffer no
    /// longer has.
    pub fn subscribe(&self, after: Option<u64>) -> (Subscription, Option<Missed>) {
        self.listen(None, after)
    }

    /// A new listener of the events `caller` may see, and of no other (the
    /// event stream): its queue and its drop counts are about those only.
    pub fn subscribe_for(
        &self,
        caller: Caller,
        after: Option<u64>,
    ) -> (Subscription, Option<Missed>) {
        self.listen(Some(caller), after)
    }

    fn listen(&self, caller: Option<Caller>, after: Option<u64>) -> (Subscription, Option<Missed>) {
        let mut ring = self.ring();
        // Subscribed under the lock: every event is either in the backlog
        // below or comes through `live`, none in both and none in neither.
        let (queue, live) = mpsc::channel(self.subscriber_lag);
        let newest = ring.next_id.saturating_sub(1);
        let visible = |event: &Arc<Event>| {
            caller
                .as_ref()
                .is_none_or(|caller| caller.may_access(event.tenant.as_ref()))
        };
        let (backlog, missed) = match after {
            None => (VecDeque::new(), None),
            Some(after) => {
                let backlog: VecDeque<_> = ring
                    .recent
                    .iter()
                    .filter(|e| e.id > after && visible(e))
                    .cloned()
                    .collect();
                let oldest_kept = ring.recent.front().map_or(ring.next_id, |e| e.id);
                let missed =
                    (after.saturating_add(1) < oldest_kept && after < newest).then(|| Missed {
                        from: after.saturating_add(1),
                        to: oldest_kept - 1,
                    });
                (backlog, missed)
            }
        };
        let dropped = Arc::new(Mutex::new(0));
        ring.listeners.push(Listener {
            caller,
            queue,
            dropped: dropped.clone(),
        });
        (
            Subscription {
                backlog,
                live,
                dropped,
                held: None,
                last_id: 0,
            },
            missed,
        )
    }

    /// A listener of live events only (the plugins' event hooks).
    pub fn subscribe_live(&self) -> Subscription {
        self.subscribe(None).0
    }
}

impl Subscription {
    /// The next event, or how many of this listener's events were dropped
    /// because it fell behind. `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Received> {
        if let Some(event) = self.backlog.pop_front() {
            self.last_id = event.id;
            return Some(Received::Event(event));
        }
        if let Some(event) = self.held.take() {
            self.last_id = event.id;
            return Some(Received::Event(event));
        }
        loop {
            let Delivery {
                dropped_before,
                event,
            } = match self.live.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Some(count) = self.newest_dropped() {
                        return Some(Received::Dropped(count));
                    }
                    self.live.recv().await?
                }
            };
            if dropped_before > 0 {
                self.held = Some(event);
                return Some(Received::Dropped(dropped_before));
            }
            if event.id <= self.last_id {
                continue;
            }
            self.last_id = event.id;
            return Some(Received::Event(event));
        }
    }
}

impl Subscription {
    /// Events dropped after the last one queued, once the queue is empty.
    /// Under the lock no event can be queued, so an empty queue means no
    /// delivery will carry them.
    fn newest_dropped(&mut self) -> Option<u64> {
        let mut dropped = count(&self.dropped);
        if *dropped == 0 || !self.live.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut *dropped))
    }
}

fn count(dropped: &Mutex<u64>) -> MutexGuard<'_, u64> {
    // A plain number: a panic elsewhere cannot have left it half-written.
    dropped.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(buffer: usize, lag: usize) -> EventBus {
        EventBus::new(&EventsConfig {
            buffer,
            subscriber_lag: lag,
            ..EventsConfig::default()
        })
    }

    fn phone() -> Phone {
        Phone::parse("5511999998888").expect("phone")
    }

    fn logged_out(n: u32) -> EventKind {
        EventKind::LoggedOut {
            reason: format!("r{n}"),
        }
    }

    async fn ids(sub: &mut Subscription, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for _ in 0..n {
            match sub.next().await {
                Some(Received::Event(e)) => out.push(e.id),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn a_resume_replays_what_came_after_then_goes_live() {
        let bus = bus(16, 16);
        let (mut first, _) = bus.subscribe(None);
        for n in 0..3 {
            bus.publish(None, &phone(), logged_out(n));
        }
        let seen = ids(&mut first, 3).await;
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
        let (mut resumed, missed) = bus.subscribe(Some(seen[0]));
        assert_eq!(missed, None);
        bus.publish(None, &phone(), logged_out(3));
        let again = ids(&mut resumed, 3).await;
        assert_eq!(again, vec![seen[1], seen[2], seen[2] + 1]);
    }

    #[tokio::test]
    async fn a_resume_older_than_the_buffer_says_what_was_missed() {
        let bus = bus(2, 16);
        let (mut first, _) = bus.subscribe(None);
        for n in 0..5 {
            bus.publish(None, &phone(), logged_out(n));
        }
        let seen = ids(&mut first, 5).await;
        let (mut resumed, missed) = bus.subscribe(Some(seen[0]));
        assert_eq!(
            missed,
            Some(Missed {
                from: seen[1],
                to: seen[2]
            })
        );
        assert_eq!(ids(&mut resumed, 2).await, vec![seen[3], seen[4]]);
        // Up to date: nothing missed, nothing replayed.
        let (_, missed) = bus.subscribe(Some(seen[4]));
        assert_eq!(missed, None);
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_told_how_many_it_lost() {
        let bus = bus(64, 4);
        let (mut slow, _) = bus.subscribe(None);
        for n in 0..10 {
            bus.publish(None, &phone(), logged_out(n));
        }
        // What fitted, then the count of what did not.
        let fitted = ids(&mut slow, 4).await;
        assert_eq!(slow.next().await, Some(Received::Dropped(6)));
        // A drop after more events fitted is told just before the next one.
        for n in 10..16 {
            bus.publish(None, &phone(), logged_out(n));
        }
        let expected: Vec<u64> = (10..14).map(|n| fitted[0] + n).collect();
        assert_eq!(ids(&mut slow, 4).await, expected);
        bus.publish(None, &phone(), logged_out(16));
        assert_eq!(slow.next().await, Some(Received::Dropped(2)));
        assert_eq!(ids(&mut slow, 1).await, vec![fitted[0] + 16]);
    }

    #[tokio::test]
    async fn a_callers_listener_neither_gets_nor_counts_another_tenants_events() {
        let bus = bus(64, 2);
        let acme = TenantId::parse("acme").expect("tenant");
        let globex = TenantId::parse("globex").expect("tenant");
        let (mut listener, _) = bus.subscribe_for(Caller::Tenant(acme.clone()), None);
        for n in 0..10 {
            bus.publish(Some(&globex), &phone(), logged_out(n));
        }
        bus.publish(Some(&acme), &phone(), logged_out(10));
        match listener.next().await {
            Some(Received::Event(event)) => assert_eq!(event.tenant, Some(acme)),
            other => panic!("expected acme's event and no drop, got {other:?}"),
        }
    }
}
