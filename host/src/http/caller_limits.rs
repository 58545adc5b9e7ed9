//! How much one caller may hold at once: requests in flight per tenant
//! (`http.max_requests_per_tenant`) and event streams per caller
//! (`events.max_streams_per_caller`). Over either, the caller gets 429 with
//! a sentence and `Retry-After`; other callers and `/health` are not
//! affected, because each caller has a count of its own.
//!
//! A slot is a guard: it is given back when it is dropped, so a request
//! whose client vanished, or a stream nobody reads any more, frees its
//! slot as soon as hyper drops the request or the response body.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::json::{ErrorBody, json_response};
use crate::core::tenant::{Caller, TenantId};
use crate::metrics::Metrics;

/// What a 429 asks the client to wait before trying again, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The counts of every caller, shared by the router's middleware and the
/// event stream (an `Extension` the router adds).
#[derive(Clone)]
pub struct CallerLimits {
    requests: SlotCounter<TenantId>,
    /// Keyed by tenant; `None` is the operators, who share one count.
    streams: SlotCounter<Option<TenantId>>,
}

impl CallerLimits {
    pub fn new(max_requests_per_tenant: usize, max_streams_per_caller: usize) -> CallerLimits {
        CallerLimits {
            requests: SlotCounter::new(max_requests_per_tenant),
            streams: SlotCounter::new(max_streams_per_caller),
        }
    }

    /// A stream's slot for `caller`; `None` when it holds the most it may.
    pub fn stream_slot(&self, caller: &Caller) -> Option<Slot> {
        self.streams.take(caller.tenant().cloned())
    }

    /// The 429 that refuses a stream over the limit (counted).
    pub fn streams_refused(&self, metrics: &Metrics) -> Response {
        Metrics::inc(&metrics.http_edge.event_streams_refused);
        too_many(format!(
            "this caller already holds {} event streams, the most it may; close one before opening another",
            self.streams.max
        ))
    }
}

/// The router's middleware: a request carrying a valid tenant token takes
/// one of its tenant's slots for as long as its handler runs (an event
/// stream counts against the streams' limit instead, once answered).
/// Operators are not counted: they are few, and must be able to act while
/// a tenant is at its limit. A request without a valid token passes on to
/// its handler, which answers 401.
pub async fn limit_tenant_requests(
    State((state, limits)): State<(AppState, CallerLimits)>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(tenant) = header
        .and_then(|h| state.auth.authenticate(Some(h)).ok())
        .and_then(|caller| caller.tenant().cloned())
    else {
        return next.run(request).await;
    };
    match limits.requests.take(tenant) {
        Some(_slot) => next.run(request).await,
        None => {
            Metrics::inc(&state.gateway.metrics().http_edge.tenant_requests_refused);
            too_many(format!(
                "this tenant already has {} requests in flight, the most it may; retry when one has been answered",
                limits.requests.max
            ))
        }
    }
}

fn too_many(error: String) -> Response {
    let mut response = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &ErrorBody {
            error,
            success: false,
        },
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// Up to `max` slots per key; a key with no slot taken has no entry, so
/// the map holds only the callers that have something in flight.
#[derive(Clone)]
struct SlotCounter<K> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> SlotCounter<K> {
    fn new(max: usize) -> SlotCounter<K> {
        SlotCounter {
            counts: Arc::new(Mutex::new(HashMap::new())),
            max: max.max(1),
        }
    }

    fn take(&self, key: K) -> Option<Slot> {
        let mut counts = lock(&self.counts);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        let counts = self.counts.clone();
        Some(Slot {
            give_back: Some(Box::new(move || {
                let mut counts = lock(&counts);
                if let Some(count) = counts.get_mut(&key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(&key);
                    }
                }
            })),
        })
    }
}

fn lock<K>(counts: &Mutex<HashMap<K, usize>>) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
    // A map of counts is consistent after every statement: a panic
    // elsewhere cannot have left it half-written.
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

/// One taken slot, given back when dropped.
pub struct Slot {
    give_back: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_at_most_max_slots_and_a_dropped_slot_is_given_back() {
        let counter = SlotCounter::new(2);
        let first = counter.take("acme");
        let second = counter.take("acme");
        assert!(first.is_some() && second.is_some());
        assert!(counter.take("acme").is_none());
        assert!(
            counter.take("globex").is_some(),
            "another key has its own count"
        );
        drop(first);
        assert!(counter.take("acme").is_some());
        drop(second);
        assert!(
            lock(&counter.counts).is_empty(),
            "no slot taken, no entry kept"
        );
    }
}
