//! The event bus: numbers session and message events, keeps the most recent
//! ones for `Last-Event-ID` resumes, and fans them out to whoever listens
//! (the SSE stream, the plugins' event hooks).
//!
//! Publishing never waits for a listener: the fan-out is a `broadcast`
//! channel, and a listener that falls behind loses the oldest events (it
//! learns how many from `Subscription::next`). A session pays one short lock
//! and one clone per event, and only when something changed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::config::EventsConfig;
use crate::core::event::{Event, EventKind};
use crate::core::tenant::TenantId;
use crate::phone::Phone;

pub struct EventBus {
    inner: Mutex<Ring>,
    /// How many events may wait for one plugin's `on-event`.
    plugin_queue: usize,
    fan_out: broadcast::Sender<Arc<Event>>,
}

struct Ring {
    /// The id the next event gets.
    next_id: u64,
    capacity: usize,
    recent: VecDeque<Arc<Event>>,
}

/// What a listener receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Arc<Event>),
    /// The listener fell behind and this many events were dropped for it.
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
    live: broadcast::Receiver<Arc<Event>>,
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
        let (fan_out, _) = broadcast::channel(config.subscriber_lag.max(1));
        EventBus {
            inner: Mutex::new(Ring {
                next_id: first,
                capacity: config.buffer.max(1),
                recent: VecDeque::new(),
            }),
            fan_out,
            plugin_queue: config.plugin_queue.max(1),
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
        // Sent under the lock, so listeners see events in id order. No
        // listener is not an error.
        let _ = self.fan_out.send(event);
    }

    /// Publishes each of `kinds` in order.
    pub fn publish_all(&self, tenant: Option<&TenantId>, phone: &Phone, kinds: Vec<EventKind>) {
        for kind in kinds {
            self.publish(tenant, phone, kind);
        }
    }

    /// A new listener. With `after`, the buffered events after that id come
    /// first, and `Missed` says which ids the buffer no longer has.
    pub fn subscribe(&self, after: Option<u64>) -> (Subscription, Option<Missed>) {
        let ring = self.ring();
        // Subscribed under the lock: every event is either in the backlog
        // below or comes through `live`, none in both and none in neither.
        let live = self.fan_out.subscribe();
        let newest = ring.next_id.saturating_sub(1);
        let (backlog, missed) = match after {
            None => (VecDeque::new(), None),
            Some(after) => {
                let backlog: VecDeque<_> = ring
                    .recent
                    .iter()
                    .filter(|e| e.id > after)
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
        (
            Subscription {
                backlog,
                live,
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
    /// The next event, or how many were dropped because this listener fell
    /// behind. `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Received> {
        if let Some(event) = self.backlog.pop_front() {
            self.last_id = event.id;
            return Some(Received::Event(event));
        }
        loop {
            match self.live.recv().await {
                Ok(event) if event.id <= self.last_id => continue,
                Ok(event) => {
                    self.last_id = event.id;
                    return Some(Received::Event(event));
                }
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    return Some(Received::Dropped(count));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
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
        assert_eq!(slow.next().await, Some(Received::Dropped(6)));
        assert_eq!(ids(&mut slow, 4).await.len(), 4);
    }
}
