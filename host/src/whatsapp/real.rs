//! The real `whatsapp-rust` client behind the [`WhatsApp`] seam.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use whatsapp_rust::Client;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::store::{Backend, SqliteStore};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::net::WHATSAPP_WEB_WS_URL;

use super::handshake::WatchedTransport;
use super::tasks::OwnedTasks;
use super::version::{Version, WebVersion};
use super::{
    ClientNotice, ClientStore, EventSink, GroupInfo, WhatsApp, WhatsAppClient, WhatsAppError,
};
use crate::core::message_status::ReceiptKind;
use crate::core::status::{ConnectFailureCause, SessionEvent};
use crate::phone::Phone;

/// How long a graceful stop may take before the client's task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct RealWhatsApp {
    /// WebSocket URL; `None` means WhatsApp's own.
    url: Option<String>,
    /// The version the operator pinned, if any.
    pinned: Option<Version>,
    /// WhatsApp Web's current version, fetched once for every session.
    versions: Arc<WebVersion>,
    /// One HTTP client for every session (its clones share one agent and
    /// connection pool).
    http: UreqHttpClient,
}

impl RealWhatsApp {
    /// Sessions against `url` (`None`: WhatsApp's own), announcing `pinned`
    /// or else WhatsApp Web's current version, fetched once and shared.
    pub fn new(url: Option<String>, pinned: Option<Version>) -> RealWhatsApp {
        let http = UreqHttpClient::new();
        RealWhatsApp {
            url,
            pinned,
            versions: Arc::new(WebVersion::new(Arc::new(http.clone()))),
            http,
        }
    }

    /// The version this start announces, or why there is none: a failure
    /// to fetch it is a failure to reach WhatsApp, classified like a dial's.
    async fn version(&self) -> Result<Version, WhatsAppError> {
        if let Some(version) = self.pinned {
            return Ok(version);
        }
        self.versions.current().await.map_err(|raw| {
            let (cause, what) = describe_connect_error(&raw);
            WhatsAppError::Unreachable {
                cause,
                detail: format!(
                    "the version check: {what} at https://web.whatsapp.com/sw.js ({raw})"
                ),
            }
        })
    }
}

struct RealClient {
    client: Arc<Client>,
    /// The task that runs the bot until its run loop ends; it reports an
    /// unexpected end as `ClientExited`.
    runner: Mutex<Option<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
    /// Every task the client spawned, ended when it stops.
    tasks: OwnedTasks,
}

#[async_trait]
impl WhatsApp for RealWhatsApp {
    async fn start(
        &self,
        _phone: &Phone,
        store: &ClientStore,
        events: EventSink,
    ) -> Result<Arc<dyn WhatsAppClient>, WhatsAppError> {
        // Before the store is opened: during an outage a start that cannot
        // know the version costs nothing but this answer.
        let version = self.version().await?;
        let backend: Arc<dyn Backend> = match store {
            ClientStore::Sqlite(path) => Arc::new(open_sqlite(path).await?),
            ClientStore::Postgres(backend) => Arc::new(backend.clone()),
        };
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.url {
            transport = transport.with_url(url.clone());
        }
        let url = self
            .url
            .as_deref()
            .unwrap_or(WHATSAPP_WEB_WS_URL)
            .to_owned();
        let stopping = Arc::new(AtomicBool::new(false));
        let sink = events.clone();
        let versions = self.versions.clone();
        let tasks = OwnedTasks::default();
        let builder = Bot::builder()
            .with_runtime(tasks.clone())
            .with_backend_arc(backend)
            .with_transport_factory(ObservedTransportFactory {
                inner: transport,
                url,
                events: events.clone(),
            })
            .with_http_client(self.http.clone())
            .with_version(version)
            .on_event(move |event, client| {
                if let Some(notice) = translate(&event, &client) {
                    sink.emit(notice);
                }
                let outdated = matches!(*event, Event::ClientOutdated(_)).then(|| versions.clone());
                // The client persists its device state (the push name from the
                // first sync among it) up to 30 s late, but the sync's version
                // at once. A crash in between leaves a store that takes a slow
                // first-sync path (10 s) at every later start. Saving it when
                // the session is connected closes that window.
                let flush =
                    matches!(*event, Event::Connected(_)).then(|| client.persistence_manager());
                async move {
                    if let Some(versions) = outdated {
                        versions.outdated().await;
                    }
                    if let Some(persistence) = flush
                        && let Err(e) = persistence.flush().await
                    {
                        tracing::warn!(error = %e, "could not save the client's device state");
                    }
                }
            });
        let bot = builder
            .build()
            .await
            .map_err(|e| WhatsAppError::Start(e.to_string()))?;
        let client = bot.client();
        let handle = bot.spawn();
        let stopping_flag = stopping.clone();
        let runner = tokio::spawn(async move {
            handle.await;
            if !stopping_flag.load(Ordering::SeqCst) {
                events.emit(ClientNotice::Session(SessionEvent::ClientExited {
                    error: Some("the WhatsApp client stopped by itself".into()),
                }));
            }
        });
        Ok(Arc::new(RealClient {
            client,
            runner: Mutex::new(Some(runner)),
            stopping,
            tasks,
        }))
    }
}

/// whatsapp-rust's SQLite store in the file at `path`.
async fn open_sqlite(path: &Path) -> Result<SqliteStore, WhatsAppError> {
    let url = path
        .to_str()
        .ok_or_else(|| WhatsAppError::Store("the store path is not UTF-8".into()))?;
    // SqliteStore waits 30 s and fails when the directory is missing; the
    // caller creates it, and this check turns a slip into a clear error.
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(WhatsAppError::Store(
            "the session directory does not exist".into(),
        ));
    }
    SqliteStore::new(url)
        .await
        .map_err(|e| WhatsAppError::Store(e.to_string()))
}

/// Reduces a client event to what the host cares about. Message text is never looked at.
fn translate(event: &Event, client: &Arc<Client>) -> Option<ClientNotice> {
    let session = |e| Some(ClientNotice::Session(e));
    match event {
        Event::PairingQrCode(qr) => session(SessionEvent::Qr {
            code: qr.code.clone(),
        }),
        Event::Connected(_) => session(SessionEvent::Connected {
            me: client.pn().map(|j| j.to_string()),
        }),
        Event::Disconnected(_) => session(SessionEvent::Disconnected),
        Event::LoggedOut(out) => session(SessionEvent::LoggedOut {
            reason: format!("{:?}", out.reason),
        }),
        Event::StreamReplaced(_) => session(SessionEvent::StreamReplaced),
        Event::PairingQrCodesExhausted(_) => session(SessionEvent::PairingExpired),
        Event::ContactUpdate(update) => {
            let name = update
                .action
                .full_name
                .clone()
                .or_else(|| update.action.first_name.clone())?;
            Some(ClientNotice::Contact {
                jid: update.jid.to_string(),
                name,
                from_address_book: true,
            })
        }
        Event::Receipt(receipt) => translate_receipt(receipt),
        Event::PushNameUpdate(update) => Some(ClientNotice::Contact {
            jid: update.jid.to_string(),
            name: update.new_push_name.clone(),
            from_address_book: false,
        }),
        _ => None,
    }
}

/// Delivery and read receipts for messages of ours; the rest (our own other
/// devices reading, retries, played, server errors) do not change a status.
fn translate_receipt(receipt: &whatsapp_rust::types::events::Receipt) -> Option<ClientNotice> {
    use whatsapp_rust::types::presence::ReceiptType;
    let kind = match receipt.r#type {
        ReceiptType::Delivered => ReceiptKind::Delivered,
        ReceiptType::Read => ReceiptKind::Read,
        _ => return None,
    };
    Some(ClientNotice::Receipt {
        message_ids: receipt
            .message_ids
            .iter()
            .map(|id| id.to_string())
            .collect(),
        kind,
    })
}

/// Parses a recipient JID; one that does not parse can never be delivered.
fn recipient_jid(to_jid: &str) -> Result<whatsapp_rust::Jid, WhatsAppError> {
    to_jid
        .parse()
        .map_err(|_| WhatsAppError::Undeliverable(format!("{to_jid} is not a valid WhatsApp JID")))
}

impl RealClient {
    /// whatsapp-rust skips a device it cannot encrypt for and still reports
    /// the send as done, so a user with no device known to WhatsApp would get
    /// a message "sent" to nobody. Asking for the device list first turns
    /// that into an error with a reason.
    async fn ensure_recipient_devices(&self, to: &whatsapp_rust::Jid) -> Result<(), WhatsAppError> {
        if whatsapp_rust::wacore_binary::JidExt::is_group(to) {
            return Ok(());
        }
        let devices = self
            .client
            .signal()
            .get_user_devices(std::slice::from_ref(to))
            .await
            .map_err(|e| WhatsAppError::Request(e.to_string()))?;
        if devices.is_empty() {
            return Err(WhatsAppError::Undeliverable(format!(
                "WhatsApp knows no device of {to} to deliver to"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl WhatsAppClient for RealClient {
    async fn is_on_whatsapp(&self, user_jid: &str) -> Result<bool, WhatsAppError> {
        if !self.client.is_logged_in() {
            return Err(WhatsAppError::NotConnected);
        }
        let jid = recipient_jid(user_jid)?;
        let answers = self
            .client
            .contacts()
            .is_on_whatsapp(std::slice::from_ref(&jid))
            .await
            .map_err(|e| WhatsAppError::Request(e.to_string()))?;
        Ok(answers
            .iter()
            .any(|a| a.is_registered && a.jid.user == jid.user))
    }

    async fn send_text(
        &self,
        to_jid: &str,
        text: &str,
        message_id: &str,
    ) -> Result<(), WhatsAppError> {
        use whatsapp_rust::send::SendOptions;
        use whatsapp_rust::wacore::proto_helpers::MessageBuilderExt;
        if !self.client.is_logged_in() {
            return Err(WhatsAppError::NotConnected);
        }
        let to = recipient_jid(to_jid)?;
        self.ensure_recipient_devices(&to).await?;
        let message = whatsapp_rust::waproto::whatsapp::Message::text(text);
        self.client
            .send_message_with_options(
                to,
                message,
                SendOptions::default().with_message_id(message_id),
            )
            .await
            .map(|_| ())
            .map_err(|e| WhatsAppError::Request(e.to_string()))
    }

    async fn pairing_code(&self, phone: &Phone) -> Result<String, WhatsAppError> {
        if self.client.is_logged_in() {
            return Err(WhatsAppError::AlreadyPaired);
        }
        let options = PairCodeOptions {
            phone_number: phone.as_str().to_owned(),
            ..Default::default()
        };
        self.client
            .pair_with_code(options)
            .await
            .map_err(|e| WhatsAppError::Request(e.to_string()))
    }

    async fn groups(&self) -> Result<Vec<GroupInfo>, WhatsAppError> {
        if !self.client.is_logged_in() {
            return Err(WhatsAppError::NotConnected);
        }
        let groups = self
            .client
            .groups()
            .get_participating()
            .await
            .map_err(|e| WhatsAppError::Request(e.to_string()))?;
        let mut list: Vec<GroupInfo> = groups
            .values()
            .map(|g| GroupInfo {
                id: g.id.to_string(),
                subject: g.subject.clone(),
                participants: g.participants.len(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn logout(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if tokio::time::timeout(STOP_GRACE, self.client.logout())
            .await
            .is_err()
        {
            tracing::warn!("logout did not finish in time; stopping the client anyway");
        }
        self.stop().await;
    }

    async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The client saves its device state (push name, keys) in the
        // background; make sure the latest is on disk before the process may
        // end, or the next start takes the slow first-sync path again.
        let persistence = self.client.persistence_manager();
        if let Ok(Err(e)) = tokio::time::timeout(STOP_GRACE, persistence.flush()).await {
            tracing::warn!(error = %e, "could not save the client's device state before stopping");
        }
        let _ = tokio::time::timeout(STOP_GRACE, self.client.disconnect()).await;
        let runner = self.runner.lock().await.take();
        if let Some(mut runner) = runner
            && tokio::time::timeout(STOP_GRACE, &mut runner).await.is_err()
        {
            // Dropping the bot handle inside the aborted task aborts the bot.
            runner.abort();
            let _ = runner.await;
        }
        // What the client left running (a pairing's QR rotation runs for
        // minutes after a disconnect) holds the client and its store: end it.
        self.tasks.abort_all();
    }
}

// --- Connection failures --------------------------------------------------
//
// whatsapp-rust retries a failed connect inside `Client::run` on its own and
// dispatches no event for it: a session would show `starting` forever. Its
// two network steps, the version fetch and the WebSocket dial, go through
// the HTTP client and the transport factory we hand it, so those are wrapped:
// a failure is reported as `ConnectFailed`, and the actor stops the client
// and owns the retry, with its own back-off. The handshake that follows
// the dial is watched the same way (`handshake.rs`).

/// The longest a WebSocket dial or a version fetch may take. Shorter than
/// whatsapp-rust's own 20 s, which would otherwise cancel ours unreported.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `step`, failing with "no answer within 15 s" when it takes longer.
async fn within_connect_timeout<T>(
    step: impl std::future::Future<Output = Result<T, whatsapp_rust::anyhow::Error>>,
) -> Result<T, whatsapp_rust::anyhow::Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(whatsapp_rust::anyhow::anyhow!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })
}

type TransportPair = (
    Arc<dyn whatsapp_rust::transport::Transport>,
    whatsapp_rust::async_channel::Receiver<whatsapp_rust::transport::TransportEvent>,
);

struct ObservedTransportFactory {
    inner: TokioWebSocketTransportFactory,
    url: String,
    events: EventSink,
}

#[async_trait]
impl whatsapp_rust::transport::TransportFactory for ObservedTransportFactory {
    async fn create_transport(&self) -> Result<TransportPair, whatsapp_rust::anyhow::Error> {
        match within_connect_timeout(self.inner.create_transport()).await {
            Ok((transport, events)) => Ok(WatchedTransport::watch(
                transport,
                events,
                self.events.clone(),
                self.url.clone(),
            )),
            Err(e) => {
                let raw = format!("{e:#}");
                report_connect_failure(&self.events, &raw, |what| {
                    format!("{what} at {} ({raw})", self.url)
                });
                Err(e)
            }
        }
    }
}

/// Classifies `raw` (an error chain's text) and emits `ConnectFailed` with
/// the sentence `sentence` builds from the cause's words.
fn report_connect_failure(events: &EventSink, raw: &str, sentence: impl Fn(&str) -> String) {
    let (cause, what) = describe_connect_error(raw);
    events.emit(ClientNotice::Session(SessionEvent::ConnectFailed {
        cause,
        detail: sentence(what),
    }));
}

/// The cause of a failed connect and its words for a sentence.
fn describe_connect_error(raw: &str) -> (ConnectFailureCause, &'static str) {
    let cause = classify_connect_error(raw);
    let what = match cause {
        ConnectFailureCause::Unreachable => "the address cannot be reached (DNS or network)",
        ConnectFailureCause::Refused => "the connection was refused",
        ConnectFailureCause::Timeout => "no answer in time",
        ConnectFailureCause::Tls => "the secure connection failed",
        ConnectFailureCause::Rejected => "the server turned the connection down",
        ConnectFailureCause::Other => "the connection failed",
    };
    (cause, what)
}

/// The cause of a failed connect, from the text of its error chain: the
/// transport and HTTP crates flatten their errors into strings, so the text
/// is all there is to go on.
fn classify_connect_error(raw: &str) -> ConnectFailureCause {
    let text = raw.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if any(&["refused"]) {
        ConnectFailureCause::Refused
    } else if any(&["timed out", "timeout", "no answer within"]) {
        ConnectFailureCause::Timeout
    } else if any(&[
        "dns",
        "lookup",
        "resolve",
        "host not found",
        "name or service not known",
        "no address",
        "unreachable",
        "no route to host",
        "network is down",
        "connection failed",
    ]) {
        ConnectFailureCause::Unreachable
    } else if any(&["certificate", "tls", "rustls", "ssl"]) {
        ConnectFailureCause::Tls
    } else if any(&["http status", "status code", "upgrade", "forbidden"]) {
        ConnectFailureCause::Rejected
    } else {
        ConnectFailureCause::Other
    }
}

#[cfg(test)]
mod connect_failure_tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn connect_errors_are_classified_by_what_an_operator_can_fix() {
        let cases = [
            (
                "WebSocket connect failed: Connection refused (os error 111)",
                ConnectFailureCause::Refused,
            ),
            (
                "WebSocket connect failed: client DNS lookup failed",
                ConnectFailureCause::Unreachable,
            ),
            (
                "WebSocket connect failed: failed to lookup address information: Temporary failure in name resolution",
                ConnectFailureCause::Unreachable,
            ),
            (
                "HTTP request to https://web.whatsapp.com/sw.js failed: host not found",
                ConnectFailureCause::Unreachable,
            ),
            (
                "WebSocket connect failed: Network is unreachable (os error 101)",
                ConnectFailureCause::Unreachable,
            ),
            ("no answer within 15 s", ConnectFailureCause::Timeout),
            (
                "WebSocket connect failed: invalid peer certificate: UnknownIssuer",
                ConnectFailureCause::Tls,
            ),
            ("http status: 403", ConnectFailureCause::Rejected),
            ("something new", ConnectFailureCause::Other),
        ];
        for (raw, cause) in cases {
            assert_eq!(classify_connect_error(raw), cause, "{raw}");
        }
    }

    fn recording_sink() -> (EventSink, Arc<Mutex<Vec<ClientNotice>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let sink = EventSink::new(move |n| {
            if let Ok(mut v) = into.lock() {
                v.push(n);
            }
        });
        (sink, seen)
    }

    #[tokio::test]
    async fn a_refused_dial_is_reported_with_the_url() {
        use whatsapp_rust::transport::TransportFactory;
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let url = format!("ws://127.0.0.1:{port}/ws/chat");
        let (events, seen) = recording_sink();
        let factory = ObservedTransportFactory {
            inner: TokioWebSocketTransportFactory::new().with_url(url.clone()),
            url: url.clone(),
            events,
        };
        assert!(factory.create_transport().await.is_err());
        let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
        match seen.as_slice() {
            [
                ClientNotice::Session(SessionEvent::ConnectFailed {
                    cause: ConnectFailureCause::Refused,
                    detail,
                }),
            ] => assert!(
                detail.starts_with("the connection was refused at ws://127.0.0.1:"),
                "{detail}"
            ),
            other => panic!("expected one refused ConnectFailed, got {other:?}"),
        }
    }

    /// An HTTP client for a machine without a network: every request fails
    /// the way ureq fails when DNS has no answer.
    struct Offline;

    #[async_trait]
    impl whatsapp_rust::http::HttpClient for Offline {
        async fn execute(
            &self,
            _request: whatsapp_rust::http::HttpRequest,
        ) -> Result<whatsapp_rust::http::HttpResponse, whatsapp_rust::anyhow::Error> {
            Err(whatsapp_rust::anyhow::anyhow!("host not found"))
        }
    }

    #[tokio::test]
    async fn a_failed_version_check_is_a_start_that_cannot_reach_whatsapp() {
        let whatsapp = RealWhatsApp {
            url: None,
            pinned: None,
            versions: Arc::new(WebVersion::new(Arc::new(Offline))),
            http: UreqHttpClient::new(),
        };
        match whatsapp.version().await {
            Err(WhatsAppError::Unreachable {
                cause: ConnectFailureCause::Unreachable,
                detail,
            }) => assert!(
                detail.starts_with("the version check: the address cannot be reached")
                    && detail.contains("https://web.whatsapp.com/sw.js"),
                "{detail}"
            ),
            other => panic!("expected an unreachable start, got {other:?}"),
        }
        // A pinned version asks nobody.
        let pinned = RealWhatsApp {
            pinned: Some((2, 3000, 1)),
            ..whatsapp
        };
        assert_eq!(pinned.version().await.ok(), Some((2, 3000, 1)));
    }
}
