//! The HTTP edge: the accept loop and each connection, served with hyper's
//! HTTP/1 (what `axum::serve` runs, driven here by hand for what it does
//! not offer).
//!
//! - A request head must arrive within `http.header_timeout` of the
//!   connection's opening (or of its first byte after an idle spell), so a
//!   client trickling its headers (slowloris) is cut off.
//! - A keep-alive connection with no request for `http.idle_timeout` is
//!   closed.
//! - At most `http.max_connections` are served at once. At the limit, a
//!   new connection closes the oldest one that has no request in flight
//!   (an idle or a still-trickling one, which costs nothing to close), so a
//!   flood of idle connections never keeps `/health` out; when every one
//!   has a request in flight, the new one waits for a slot.
//! - A request counts as in flight until its response body is sent or
//!   dropped: an event stream is never cut for being quiet.
//!
//! Shutdown: once `stop` says so, no connection is accepted, each is asked
//! to finish its request in flight and close (hyper's graceful shutdown),
//! and `serve` returns when all are gone (`cli.rs` caps the wait).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tower::ServiceExt;

use super::{AppState, router};
use crate::config::http::HttpConfig;
use crate::gateway::Gateway;
use crate::metrics::Metrics;

/// Serves `state`'s router on `listener` until `stop` turns true and every
/// connection has ended.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let edge = Arc::new(Edge {
        config: state.gateway.config().http.clone(),
        gateway: state.gateway.clone(),
        open: Mutex::new(Open::default()),
    });
    let app = router(state);
    let slots = Arc::new(Semaphore::new(edge.config.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was
                // accepted: the listener is fine, try again shortly.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !edge.evict_oldest_idle() {
                    Metrics::inc(&edge.metrics().http_edge.connections_waited);
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        };
        let connection = edge.register();
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            connection,
            permit,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What every connection task shares.
struct Edge {
    config: HttpConfig,
    gateway: Arc<Gateway>,
    open: Mutex<Open>,
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Open {
    next_id: u64,
    connections: BTreeMap<u64, Arc<watch::Sender<Activity>>>,
}

impl Edge {
    fn metrics(&self) -> &Metrics {
        self.gateway.metrics()
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // Plain inserts and removes: a panic cannot leave the map half-changed.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>) -> Registered {
        let now = Instant::now();
        let activity = Arc::new(watch::Sender::new(Activity {
            in_flight: 0,
            // A new connection owes its first head from the start.
            head_since: Some(now),
            idle_since: now,
            evicted: false,
        }));
        let mut open = self.open();
        let id = open.next_id;
        open.next_id += 1;
        open.connections.insert(id, activity.clone());
        self.metrics()
            .http_edge
            .connections_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Registered {
            edge: self.clone(),
            id,
            activity,
        }
    }

    /// Marks the oldest connection with no request in flight to be closed;
    /// false when every connection has one.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open();
        let victim = open.connections.values().find(|activity| {
            let now = activity.borrow();
            now.in_flight == 0 && !now.evicted
        });
        match victim {
            Some(activity) => {
                activity.send_modify(|a| a.evicted = true);
                true
            }
            None => false,
        }
    }
}

/// One connection's place in `Open`, left when the connection ends.
struct Registered {
    edge: Arc<Edge>,
    id: u64,
    activity: Arc<watch::Sender<Activity>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.edge.open().connections.remove(&self.id);
        self.edge
            .metrics()
            .http_edge
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a connection is doing, for its timeouts and for eviction.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests whose response is not yet sent.
    in_flight: usize,
    /// Since when a request head is owed: the opening, or the first byte
    /// after an idle spell; `None` while idle or with a request in flight.
    head_since: Option<Instant>,
    /// When the last response was done (or the connection opened).
    idle_since: Instant,
    /// Chosen to make room for a new connection.
    evicted: bool,
}

/// Why the edge closed a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    HeaderTimeout,
    Idle,
    Evicted,
}

impl Cut {
    fn as_str(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::Idle => "idle_timeout",
            Cut::Evicted => "evicted",
        }
    }
}

/// Resolves when the connection is to be closed: its head is late, it was
/// idle too long, or it was evicted. Never while a request is in flight.
async fn cut_when(mut activity: watch::Receiver<Activity>, config: HttpConfig) -> Cut {
    loop {
        let now = *activity.borrow_and_update();
        if now.evicted {
            return Cut::Evicted;
        }
        let deadline = match (now.in_flight, now.head_since) {
            (0, Some(since)) => Some((since + config.header_timeout, Cut::HeaderTimeout)),
            (0, None) => Some((now.idle_since + config.idle_timeout, Cut::Idle)),
            _ => None,
        };
        let changed = async {
            if activity.changed().await.is_err() {
                // The connection's own task holds the sender: unreachable,
                // but waiting forever is the safe answer.
                std::future::pending::<()>().await;
            }
        };
        match deadline {
            None => changed.await,
            Some((at, cut)) => tokio::select! {
                biased;
                () = changed => {}
                () = tokio::time::sleep_until(at) => return cut,
            },
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    registered: Registered,
    _permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let activity = registered.activity.clone();
    let io = TokioIo::new(WatchedIo {
        io: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(activity.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            response.map(|response| {
                response.map(|body| UntilSent {
                    body,
                    _in_flight: in_flight,
                })
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The edge's own timers (`cut_when`) replace hyper's header timeout,
    // which would also cut idle keep-alive connections at the same moment.
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let config = registered.edge.config.clone();
    let cut = cut_when(registered.activity.subscribe(), config);
    tokio::pin!(cut);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            cut = &mut cut => {
                let counters = &registered.edge.metrics().http_edge;
                Metrics::inc(match cut {
                    Cut::HeaderTimeout => &counters.header_timeouts,
                    Cut::Idle => &counters.idle_closed,
                    Cut::Evicted => &counters.connections_evicted,
                });
                tracing::debug!(reason = cut.as_str(), "closing a connection");
                // Dropping the connection closes the socket.
                break;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A request in flight on its connection, until its response is sent.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: Arc<watch::Sender<Activity>>) -> InFlight {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.head_since = None;
        });
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
                a.head_since = None;
            }
        });
    }
}

/// A response body that holds its request's `InFlight` until it is sent
/// (or dropped, when the client goes away).
struct UntilSent {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for UntilSent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting the first byte of a request head after an idle
/// spell (from then on the header timeout runs, not the idle one).
struct WatchedIo {
    io: TcpStream,
    activity: Arc<watch::Sender<Activity>>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.send_if_modified(|a| {
                let head_begins = a.in_flight == 0 && a.head_since.is_none();
                if head_begins {
                    a.head_since = Some(Instant::now());
                }
                head_begins
            });
        }
        read
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
