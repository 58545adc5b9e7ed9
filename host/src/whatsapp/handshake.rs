//! Whether a connection's handshake with WhatsApp failed.
//!
//! whatsapp-rust retries a failed Noise handshake inside `Client::run` and
//! only logs it: a release build (which verifies WhatsApp's certificate
//! chain) pointed at a server whose chain is not WhatsApp's would show
//! `starting` with no `lastError`, forever. The handshake itself is out of
//! reach, but it runs over the transport lila hands the client, so the
//! transport is watched: how many frames the client sent, how many chunks
//! the server sent, and when the client itself hung up.
//!
//! The handshake is one frame from the client (its hello), the server's
//! answer, and the client's finish (or, for a resumed session, the first
//! stanza). A client that hangs up after one frame of its own and at most
//! the server's answer did not get through the handshake: the answer was
//! refused (its certificate chain did not verify, or it could not be
//! decrypted), or the server closed, or it never answered. [`verdict`] is
//! that rule; [`WatchedTransport`] applies it once per connection and
//! reports a `ConnectFailed`, so the session shows why and the actor owns
//! the retry, as for a failed dial.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{Transport, TransportEvent};

use super::{ClientNotice, EventSink};
use crate::core::status::{ConnectFailureCause, SessionEvent};

/// Past this wait for the server's answer, a hang-up is the client giving
/// up on a silent server (whatsapp-rust waits 20 s) rather than a refusal.
const UNANSWERED_AFTER: Duration = Duration::from_secs(15);

/// What the frames seen when the client hung up say about the handshake:
/// `None` when it got through (or the rule cannot tell), else the cause and
/// the sentence for `lastError`.
pub(super) fn verdict(
    sent: u32,
    received: u32,
    since_hello: Duration,
) -> Option<(ConnectFailureCause, &'static str)> {
    match (sent, received) {
        (1, 1) => Some((
            ConnectFailureCause::Tls,
            "the handshake failed on WhatsApp's answer (its certificate chain was refused, or the answer could not be read)",
        )),
        (1, 0) if since_hello >= UNANSWERED_AFTER => Some((
            ConnectFailureCause::Timeout,
            "the server did not answer the handshake",
        )),
        (1, 0) => Some((
            ConnectFailureCause::Rejected,
            "the server closed the connection during the handshake",
        )),
        _ => None,
    }
}

/// What one connection saw, shared by the transport and the task that
/// forwards its events.
#[derive(Default)]
struct Frames {
    sent: AtomicU32,
    received: AtomicU32,
    hello_at: OnceLock<Instant>,
    reported: AtomicBool,
}

/// Counts one more, up to 2: only none, one and "more" matter to [`verdict`].
fn count(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < 2).then_some(n + 1)
    });
}

/// A transport that counts the frames of the handshake and reports a
/// failed one when the client hangs up.
pub(super) struct WatchedTransport {
    inner: Arc<dyn Transport>,
    frames: Arc<Frames>,
    events: EventSink,
    url: String,
}

impl WatchedTransport {
    /// Wraps `inner` and its event stream: the events are forwarded, counted,
    /// by a task that ends with the stream (or when the client drops it).
    pub(super) fn watch(
        inner: Arc<dyn Transport>,
        inner_events: async_channel::Receiver<TransportEvent>,
        events: EventSink,
        url: String,
    ) -> (Arc<dyn Transport>, async_channel::Receiver<TransportEvent>) {
        let frames = Arc::new(Frames::default());
        let (forward, watched_events) = async_channel::unbounded();
        let counted = frames.clone();
        tokio::spawn(async move {
            while let Ok(event) = inner_events.recv().await {
                if matches!(event, TransportEvent::DataReceived(_)) {
                    count(&counted.received);
                }
                if forward.send(event).await.is_err() {
                    break;
                }
            }
        });
        let transport = WatchedTransport {
            inner,
            frames,
            events,
            url,
        };
        (Arc::new(transport), watched_events)
    }
}

#[async_trait]
impl Transport for WatchedTransport {
    async fn send(&self, data: Bytes) -> Result<(), whatsapp_rust::anyhow::Error> {
        count(&self.frames.sent);
        let _ = self.frames.hello_at.get_or_init(Instant::now);
        self.inner.send(data).await
    }

    async fn disconnect(&self) {
        let frames = &self.frames;
        let since_hello = frames
            .hello_at
            .get()
            .map_or(Duration::ZERO, Instant::elapsed);
        let seen = verdict(
            frames.sent.load(Ordering::Relaxed),
            frames.received.load(Ordering::Relaxed),
            since_hello,
        );
        if let Some((cause, what)) = seen
            && !frames.reported.swap(true, Ordering::Relaxed)
        {
            self.events
                .emit(ClientNotice::Session(SessionEvent::ConnectFailed {
                    cause,
                    detail: format!("{what} at {}", self.url),
                }));
        }
        self.inner.disconnect().await
    }

    fn resource_report(&self) -> Option<whatsapp_rust::wacore::stats::TransportResourceReport> {
        self.inner.resource_report()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn only_a_hang_up_inside_the_handshake_is_a_failed_handshake() {
        let quick = Duration::from_millis(30);
        assert_eq!(
            verdict(1, 1, quick).map(|(cause, _)| cause),
            Some(ConnectFailureCause::Tls)
        );
        assert_eq!(
            verdict(1, 0, quick).map(|(cause, _)| cause),
            Some(ConnectFailureCause::Rejected)
        );
        assert_eq!(
            verdict(1, 0, Duration::from_secs(20)).map(|(cause, _)| cause),
            Some(ConnectFailureCause::Timeout)
        );
        // The client finished the handshake (a second frame of its own), or
        // the server went on past its answer (a stanza after it), or the
        // client never said hello: not a handshake failure.
        for (sent, received) in [(2, 1), (2, 2), (1, 2), (0, 0), (0, 1)] {
            assert_eq!(verdict(sent, received, quick), None, "{sent} {received}");
        }
    }

    /// A transport that records nothing and answers every send.
    struct Quiet;

    #[async_trait]
    impl Transport for Quiet {
        async fn send(&self, _data: Bytes) -> Result<(), whatsapp_rust::anyhow::Error> {
            Ok(())
        }
        async fn disconnect(&self) {}
    }

    /// A watched transport, the server's side of its events, and what it reported.
    struct Watched {
        transport: Arc<dyn Transport>,
        events: async_channel::Receiver<TransportEvent>,
        server: async_channel::Sender<TransportEvent>,
        seen: Arc<Mutex<Vec<ClientNotice>>>,
    }

    impl Watched {
        fn new() -> Watched {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let into = seen.clone();
            let sink = EventSink::new(move |n| {
                if let Ok(mut v) = into.lock() {
                    v.push(n);
                }
            });
            let (server, inner_events) = async_channel::unbounded();
            let (transport, events) =
                WatchedTransport::watch(Arc::new(Quiet), inner_events, sink, "ws://sim/ws".into());
            Watched {
                transport,
                events,
                server,
                seen,
            }
        }

        /// The client's hello, the server's answer, and the client reading
        /// it through the watch.
        async fn hello_and_answer(&self) {
            self.transport.send(Bytes::from_static(b"hello")).await.ok();
            self.server
                .send(TransportEvent::DataReceived(Bytes::from_static(b"answer")))
                .await
                .ok();
            assert!(matches!(
                self.events.recv().await,
                Ok(TransportEvent::DataReceived(_))
            ));
        }

        fn seen(&self) -> Vec<ClientNotice> {
            self.seen.lock().map(|v| v.clone()).unwrap_or_default()
        }
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_on_the_server_s_answer_reports_it_once() {
        let watched = Watched::new();
        watched.hello_and_answer().await;
        watched.transport.disconnect().await;
        watched.transport.disconnect().await;
        match watched.seen().as_slice() {
            [
                ClientNotice::Session(SessionEvent::ConnectFailed {
                    cause: ConnectFailureCause::Tls,
                    detail,
                }),
            ] => assert!(
                detail.contains("certificate chain was refused") && detail.ends_with("ws://sim/ws"),
                "{detail}"
            ),
            other => panic!("expected one failed handshake, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_connection_past_the_handshake_reports_nothing_when_it_ends() {
        let watched = Watched::new();
        watched.hello_and_answer().await;
        watched
            .transport
            .send(Bytes::from_static(b"finish"))
            .await
            .ok();
        watched.transport.disconnect().await;
        assert!(watched.seen().is_empty());
    }
}
