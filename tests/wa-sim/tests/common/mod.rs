//! Drives the real whatsapp-rust client against an in-process simulator.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wa_sim::{SimHandle, Simulator};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::prelude::*;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::message::MessageInfo;
use whatsapp_rust::waproto::whatsapp as wa;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub async fn start_sim() -> SimHandle {
    init_tracing();
    Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// A real client with its events funnelled into a channel.
pub struct TestClient {
    pub client: Arc<Client>,
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
    handle: Option<BotHandle>,
}

impl TestClient {
    pub async fn start(sim: &SimHandle, dir: &Path) -> TestClient {
        let db = dir.join("whatsapp.db");
        let store = SqliteStore::new(db.to_str().unwrap())
            .await
            .expect("sqlite store");
        let (tx, events) = mpsc::unbounded_channel();
        let bot = Bot::builder()
            .with_backend(store)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(sim.ws_url()))
            .with_http_client(sim.media_http_client())
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1_023_456_789))
            .skip_history_sync()
            .on_event(move |event, _client| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .build()
            .await
            .expect("bot builds");
        let client = bot.client();
        let handle = bot.spawn();
        TestClient {
            client,
            events,
            handle: Some(handle),
        }
    }

    /// Waits (bounded) for the first event `pick` accepts.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(v) = pick(&event) {
                        return v;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits for the decrypted message with stanza id `id`.
    pub async fn wait_message(&mut self, id: &str) -> (wa::Message, MessageInfo) {
        self.wait_for(&format!("message {id}"), |e| match e {
            Event::Messages(batch) => batch
                .iter()
                .find(|m| m.info.id == id)
                .map(|m| ((*m.message).clone(), (*m.info).clone())),
            _ => None,
        })
        .await
    }

    /// Waits until every message in `ids` was decrypted (an offline drain
    /// delivers several in one batch); returns them in arrival order.
    pub async fn wait_messages(&mut self, ids: &[String]) -> Vec<(wa::Message, MessageInfo)> {
        let mut got: Vec<(wa::Message, MessageInfo)> = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ids.iter().all(|id| got.iter().any(|(_, i)| &i.id == id)) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Event::Messages(batch) = &*event {
                        got.extend(
                            batch
                                .iter()
                                .filter(|m| ids.contains(&m.info.id))
                                .map(|m| ((*m.message).clone(), (*m.info).clone())),
                        );
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {ids:?}"),
                Err(_) => panic!("timed out waiting for {ids:?}; got {got:?}"),
            }
        }
        got
    }

    pub async fn wait_qr(&mut self) -> String {
        self.wait_for("a QR code", |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }

    pub async fn wait_connected(&mut self) {
        self.wait_for("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(WAIT, h.shutdown())
                .await
                .expect("client shuts down in time");
        }
    }
}

/// Pairs a fresh client in `dir` through a QR scan and waits until it is
/// connected. Returns the client and its device JID.
pub async fn paired_client(sim: &SimHandle, dir: &Path) -> (TestClient, String) {
    let mut client = TestClient::start(sim, dir).await;
    let qr = client.wait_qr().await;
    let jid = sim.scan_qr(&qr).expect("scan");
    client.wait_connected().await;
    (client, jid)
}

/// One HTTP/1.1 request to the simulator's admin API over a real socket.
/// Returns the status code and the JSON body.
pub async fn http(
    sim: &SimHandle,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sim.addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
