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
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;

use super::{ClientNotice, EventSink, GroupInfo, WhatsApp, WhatsAppClient, WhatsAppError};
use crate::core::status::SessionEvent;
use crate::phone::Phone;

/// How long a graceful stop may take before the client's task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct RealWhatsApp {
    /// WebSocket URL; `None` means WhatsApp's own.
    pub url: Option<String>,
    /// Client version to announce. When `None` the client fetches the current
    /// one from WhatsApp's web site at start.
    pub version: Option<(u32, u32, u32)>,
}

struct RealClient {
    client: Arc<Client>,
    /// The task that runs the bot until its run loop ends; it reports an
    /// unexpected end as `ClientExited`.
    runner: Mutex<Option<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
}

#[async_trait]
impl WhatsApp for RealWhatsApp {
    async fn start(
        &self,
        _phone: &Phone,
        store_path: &Path,
        events: EventSink,
    ) -> Result<Arc<dyn WhatsAppClient>, WhatsAppError> {
        let store_url = store_path
            .to_str()
            .ok_or_else(|| WhatsAppError::Store("the store path is not UTF-8".into()))?;
        // SqliteStore waits 30 s and fails when the directory is missing; the
        // caller creates it, and this check turns a slip into a clear error.
        if !store_path.parent().is_some_and(Path::is_dir) {
            return Err(WhatsAppError::Store(
                "the session directory does not exist".into(),
            ));
        }
        let store = SqliteStore::new(store_url)
            .await
            .map_err(|e| WhatsAppError::Store(e.to_string()))?;
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.url {
            transport = transport.with_url(url.clone());
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let sink = events.clone();
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(transport)
            .on_event(move |event, client| {
                if let Some(notice) = translate(&event, &client) {
                    sink.emit(notice);
                }
                async {}
            });
        if let Some(version) = self.version {
            builder = builder.with_version(version);
        }
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
        }))
    }
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
        Event::PushNameUpdate(update) => Some(ClientNotice::Contact {
            jid: update.jid.to_string(),
            name: update.new_push_name.clone(),
            from_address_book: false,
        }),
        _ => None,
    }
}

#[async_trait]
impl WhatsAppClient for RealClient {
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
        let to: whatsapp_rust::Jid = to_jid
            .parse()
            .map_err(|_| WhatsAppError::Request(format!("bad recipient {to_jid}")))?;
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
        let _ = tokio::time::timeout(STOP_GRACE, self.client.disconnect()).await;
        let Some(mut runner) = self.runner.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(STOP_GRACE, &mut runner).await.is_err() {
            // Dropping the bot handle inside the aborted task aborts the bot.
            runner.abort();
            let _ = runner.await;
        }
    }
}
