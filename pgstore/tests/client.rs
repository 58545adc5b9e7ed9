//! The real whatsapp-rust client on `PgBackend`, against the WhatsApp simulator:
//! a phone paired on one node resumes on another from PostgreSQL, with no QR.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lila_pgstore::{Fence, PgBackend, PgStoreError, claim_lease};
use support::{TTL, expire_lease, pg_pool, unique_phone};
use tokio::sync::mpsc;
use wa_sim::{SimHandle, Simulator};
use wacore::store::traits::{DeviceStore, SignalStore};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::prelude::*;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;

/// Every wait here is bounded by this.
const WAIT: Duration = Duration::from_secs(15);

struct RunningClient {
    client: Arc<Client>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    handle: BotHandle,
}

impl RunningClient {
    async fn start(sim: &SimHandle, backend: PgBackend) -> RunningClient {
        let (tx, events) = mpsc::unbounded_channel();
        let bot = Bot::builder()
            .with_backend(backend)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(sim.ws_url()))
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
            .expect("the client builds on PgBackend");
        let client = bot.client();
        RunningClient {
            client,
            events,
            handle: bot.spawn(),
        }
    }

    /// The first of a QR (`true`) or Connected (`false`).
    async fn qr_or_connected(&mut self) -> (bool, Option<String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("a QR or Connected in time")
                .expect("the event stream is open");
            match &*event {
                Event::PairingQrCode(qr) => return (true, Some(qr.code.clone())),
                Event::Connected(_) => return (false, None),
                _ => {}
            }
        }
    }

    async fn send_text(&self, to: &str, text: &str) {
        let to: Jid = to.parse().expect("a JID");
        tokio::time::timeout(
            WAIT,
            self.client.send_message(
                to,
                wa::Message {
                    conversation: Some(text.to_string()),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("sent in time")
        .expect("sent");
    }

    async fn stop(self) {
        // Save the device state now, as lila does on Connected.
        let _ = self.client.persistence_manager().flush().await;
        tokio::time::timeout(WAIT, self.handle.shutdown())
            .await
            .expect("the client stops in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_paired_on_one_node_resumes_on_another_without_a_qr() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("the simulator starts");
    let contact = sim.add_contact("15557770002", "Bob").unwrap();
    let phone = unique_phone("client");

    // Node A: a fresh phone, paired by a QR scan.
    let pool_a = pg_pool().await;
    let fence_a = claim_lease(&pool_a, &phone, "node-a", TTL)
        .await
        .unwrap()
        .expect("free");
    let mut a = RunningClient::start(&sim, PgBackend::new(pool_a.clone(), fence_a.clone())).await;
    let (qr_shown, qr) = a.qr_or_connected().await;
    assert!(qr_shown, "a fresh phone asks for a QR");
    let jid = sim.scan_qr(&qr.expect("the QR")).expect("the phone scans");
    assert!(!a.qr_or_connected().await.0, "connected after the scan");
    a.send_text(&contact, "from node a").await;
    assert!(sim.wait_until(WAIT, |s| !s.messages().is_empty()).await);
    let uploads = sim.pre_key_uploads(&jid);
    a.stop().await;
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);

    // Node B takes the phone over, with its own pool, from PostgreSQL alone.
    expire_lease(&pool_a, &phone).await;
    let pool_b = pg_pool().await;
    let fence_b: Fence = claim_lease(&pool_b, &phone, "node-b", TTL)
        .await
        .unwrap()
        .expect("an expired lease is free");
    let backend_b = PgBackend::new(pool_b, fence_b);
    let device = backend_b
        .load()
        .await
        .unwrap()
        .expect("the device is stored");
    assert_eq!(device.pn.map(|pn| pn.to_string()), Some(jid.clone()));

    let mut b = RunningClient::start(&sim, backend_b).await;
    let (qr_shown, _) = b.qr_or_connected().await;
    assert!(!qr_shown, "a taken-over phone must not ask for a QR");
    assert_eq!(b.client.pn().map(|pn| pn.to_string()), Some(jid.clone()));
    assert_eq!(
        sim.pre_key_uploads(&jid),
        uploads,
        "its key bundle came along: no new pre-keys"
    );
    b.send_text(&contact, "from node b").await;
    assert!(
        sim.wait_until(WAIT, |s| s.messages().len() >= 2).await,
        "the Signal session stored by node A carries node B's message"
    );
    let texts: Vec<String> = sim
        .messages_by_recipient()
        .remove(&contact)
        .unwrap_or_default()
        .iter()
        .map(|m| m.text.clone().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["from node a", "from node b"]);

    // Node A, fenced out, can no longer change the phone's state.
    let stale = PgBackend::new(pool_a, fence_a)
        .put_session("x.0", b"late")
        .await
        .expect_err("node A lost the lease");
    assert!(PgStoreError::is_lease_lost(&stale));
    b.stop().await;
}
