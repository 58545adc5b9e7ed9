//! A scripted fake of the [`WhatsApp`] seam, for tests of the host's logic.
//!
//! Each start creates a real (tiny) SQLite database at the store path, the
//! way whatsapp-rust's store does, so backups, restores and purges act on real
//! files. A store that holds a pairing resumes without a QR code, like the
//! real client. Tests drive everything else by hand: scan the QR, drop the
//! socket, log out from the server side, make sends fail or logouts hang.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use diesel::{Connection, RunQueryDsl, SqliteConnection};

use super::{
    ClientNotice, ClientStore, EventSink, GroupInfo, WhatsApp, WhatsAppClient, WhatsAppError,
};
use crate::core::message_status::ReceiptKind;
use crate::core::status::{ConnectFailureCause, SessionEvent};
use crate::phone::Phone;

#[derive(Default)]
struct Shared {
    clients: HashMap<Phone, Vec<Arc<ScriptedClient>>>,
    sent: Vec<SentMessage>,
    groups: Vec<GroupInfo>,
    /// User JIDs that usync reports as having no WhatsApp account.
    not_on_whatsapp: HashSet<String>,
    /// Every usync "is on WhatsApp" question asked, in order.
    recipient_checks: Vec<String>,
}

/// A message the fake "delivered".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub from: Phone,
    pub to: String,
    pub text: String,
    pub id: String,
}

/// Knobs a test sets before or during a run.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Sends fail while set.
    pub fail_sends: AtomicBool,
    /// Logouts never return while set (to test the host's timeout).
    pub hang_logout: AtomicBool,
    /// Starts fail while set.
    pub fail_starts: AtomicBool,
    /// Each start takes this many milliseconds.
    pub start_delay_ms: AtomicU64,
    /// Each stop takes this many milliseconds (a socket slow to close).
    pub stop_delay_ms: AtomicU64,
    /// While set, every client started reports that WhatsApp refused the
    /// connection, instead of showing a QR or connecting.
    pub unreachable: AtomicBool,
}

#[derive(Clone, Default)]
pub struct ScriptedWhatsApp {
    shared: Arc<Mutex<Shared>>,
    pub behaviour: Arc<Behaviour>,
}

pub struct ScriptedClient {
    phone: Phone,
    store_path: PathBuf,
    events: EventSink,
    shared: Arc<Mutex<Shared>>,
    behaviour: Arc<Behaviour>,
    serial: u64,
    stopped: AtomicBool,
    logged_out: AtomicBool,
    connected: AtomicBool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A test that panicked while holding the lock already failed; keep going
    // so the others report their own results.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ScriptedWhatsApp {
    pub fn new() -> ScriptedWhatsApp {
        ScriptedWhatsApp::default()
    }

    /// Every client ever started for `phone`, oldest first.
    pub fn clients(&self, phone: &Phone) -> Vec<Arc<ScriptedClient>> {
        lock(&self.shared)
            .clients
            .get(phone)
            .cloned()
            .unwrap_or_default()
    }

    /// The newest client of `phone`.
    pub fn latest(&self, phone: &Phone) -> Option<Arc<ScriptedClient>> {
        self.clients(phone).last().cloned()
    }

    pub fn starts(&self, phone: &Phone) -> usize {
        self.clients(phone).len()
    }

    /// Clients of `phone` that were started and not yet stopped.
    pub fn live(&self, phone: &Phone) -> usize {
        self.clients(phone)
            .iter()
            .filter(|c| !c.is_stopped())
            .count()
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.shared).sent.clone()
    }

    /// From now on usync says `user_jid` has no WhatsApp account.
    pub fn set_not_on_whatsapp(&self, user_jid: &str) {
        lock(&self.shared)
            .not_on_whatsapp
            .insert(user_jid.to_owned());
    }

    /// The recipients the host asked about, in order.
    pub fn recipient_checks(&self) -> Vec<String> {
        lock(&self.shared).recipient_checks.clone()
    }

    pub fn set_groups(&self, groups: Vec<GroupInfo>) {
        lock(&self.shared).groups = groups;
    }
}

impl ScriptedClient {
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn logged_out(&self) -> bool {
        self.logged_out.load(Ordering::SeqCst)
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    fn emit(&self, event: SessionEvent) {
        // A stopped client emits nothing, like the real one after disconnect().
        if !self.is_stopped() {
            self.events.emit(ClientNotice::Session(event));
        }
    }

    /// The recipient's phone reports messages of ours delivered or read.
    pub fn receipt(&self, message_ids: &[&str], kind: ReceiptKind) {
        if !self.is_stopped() {
            self.events.emit(ClientNotice::Receipt {
                message_ids: message_ids.iter().map(|id| (*id).to_owned()).collect(),
                kind,
            });
        }
    }

    /// The phone scans the QR code: the store now holds credentials and the
    /// client connects as `me`.
    pub fn scan(&self) {
        if self.is_stopped() {
            return;
        }
        let _ = write_pairing(&self.store_path, &self.me());
        self.connected.store(true, Ordering::SeqCst);
        self.emit(SessionEvent::Connected {
            me: Some(self.me()),
        });
    }

    pub fn me(&self) -> String {
        format!("{}:7@s.whatsapp.net", self.phone)
    }

    /// The socket drops, then (like whatsapp-rust's own loop) comes back.
    pub fn drop_and_reconnect(&self) {
        self.emit(SessionEvent::Disconnected);
        if read_pairing(&self.store_path).is_some() {
            self.emit(SessionEvent::Connected {
                me: Some(self.me()),
            });
        }
    }

    /// Only drops the socket; the reconnect is left pending.
    pub fn drop_connection(&self) {
        self.connected.store(false, Ordering::SeqCst);
        self.emit(SessionEvent::Disconnected);
    }

    /// The phone unlinks this device: the server sends a 401.
    pub fn server_logout(&self) {
        self.connected.store(false, Ordering::SeqCst);
        self.emit(SessionEvent::LoggedOut {
            reason: "401".into(),
        });
    }

    pub fn qr_codes_exhausted(&self) {
        self.emit(SessionEvent::PairingExpired);
    }

    pub fn contact(&self, jid: &str, name: &str) {
        if !self.is_stopped() {
            self.events.emit(ClientNotice::Contact {
                jid: jid.into(),
                name: name.into(),
                from_address_book: true,
            });
        }
    }

    /// Emits an arbitrary event, even after a stop (a "late event from the old socket").
    pub fn emit_late(&self, event: SessionEvent) {
        self.events.emit(ClientNotice::Session(event));
    }
}

fn store_err(e: impl std::fmt::Display) -> WhatsAppError {
    WhatsAppError::Store(e.to_string())
}

fn open(store: &Path) -> Result<SqliteConnection, WhatsAppError> {
    let mut conn = SqliteConnection::establish(&store.to_string_lossy()).map_err(store_err)?;
    diesel::sql_query("CREATE TABLE IF NOT EXISTS device (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut conn)
        .map_err(store_err)?;
    Ok(conn)
}

fn write_pairing(store: &Path, me: &str) -> Result<(), WhatsAppError> {
    let mut conn = open(store)?;
    diesel::sql_query(format!(
        "INSERT OR REPLACE INTO device VALUES ('me', '{}')",
        me.replace('\'', "''")
    ))
    .execute(&mut conn)
    .map_err(store_err)?;
    Ok(())
}

fn read_pairing(store: &Path) -> Option<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    if !store.is_file() {
        return None;
    }
    let mut conn = open(store).ok()?;
    diesel::sql_query("SELECT v FROM device WHERE k = 'me'")
        .load::<Row>(&mut conn)
        .ok()?
        .pop()
        .map(|r| r.v)
}

#[async_trait]
impl WhatsApp for ScriptedWhatsApp {
    async fn start(
        &self,
        phone: &Phone,
        store: &ClientStore,
        events: EventSink,
    ) -> Result<Arc<dyn WhatsAppClient>, WhatsAppError> {
        // The fake keeps its pairing in a SQLite file; cluster tests use the real client.
        let ClientStore::Sqlite(store_path) = store else {
            return Err(WhatsAppError::Store(
                "the scripted client keeps its store in a file".into(),
            ));
        };
        let delay = self.behaviour.start_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.behaviour.fail_starts.load(Ordering::SeqCst) {
            return Err(WhatsAppError::Start("scripted start failure".into()));
        }
        let path = store_path.to_owned();
        let paired =
            tokio::task::spawn_blocking(move || -> Result<Option<String>, WhatsAppError> {
                open(&path)?;
                Ok(read_pairing(&path))
            })
            .await
            .map_err(store_err)??;
        let client = {
            let mut shared = lock(&self.shared);
            let list = shared.clients.entry(phone.clone()).or_default();
            let client = Arc::new(ScriptedClient {
                phone: phone.clone(),
                store_path: store_path.to_owned(),
                events,
                shared: self.shared.clone(),
                behaviour: self.behaviour.clone(),
                serial: list.len() as u64,
                stopped: AtomicBool::new(false),
                logged_out: AtomicBool::new(false),
                connected: AtomicBool::new(paired.is_some()),
            });
            list.push(client.clone());
            client
        };
        if self.behaviour.unreachable.load(Ordering::SeqCst) {
            client.emit(SessionEvent::ConnectFailed {
                cause: ConnectFailureCause::Refused,
                detail: "the connection was refused at ws://scripted.invalid/ws/chat".into(),
            });
            return Ok(client);
        }
        match paired {
            Some(me) => client.emit(SessionEvent::Connected { me: Some(me) }),
            None => client.emit(SessionEvent::Qr {
                code: format!("2@scripted-{phone}-{},key,key,key", client.serial),
            }),
        }
        Ok(client)
    }
}

#[async_trait]
impl WhatsAppClient for ScriptedClient {
    async fn is_on_whatsapp(&self, user_jid: &str) -> Result<bool, WhatsAppError> {
        if self.is_stopped() || !self.connected.load(Ordering::SeqCst) {
            return Err(WhatsAppError::NotConnected);
        }
        let mut shared = lock(&self.shared);
        shared.recipient_checks.push(user_jid.to_owned());
        Ok(!shared.not_on_whatsapp.contains(user_jid))
    }

    async fn send_text(
        &self,
        to_jid: &str,
        text: &str,
        message_id: &str,
    ) -> Result<(), WhatsAppError> {
        if self.is_stopped() || !self.connected.load(Ordering::SeqCst) {
            return Err(WhatsAppError::NotConnected);
        }
        if self.behaviour.fail_sends.load(Ordering::SeqCst) {
            return Err(WhatsAppError::Request("scripted send failure".into()));
        }
        lock(&self.shared).sent.push(SentMessage {
            from: self.phone.clone(),
            to: to_jid.into(),
            text: text.into(),
            id: message_id.into(),
        });
        Ok(())
    }

    async fn pairing_code(&self, _phone: &Phone) -> Result<String, WhatsAppError> {
        if self.connected.load(Ordering::SeqCst) {
            return Err(WhatsAppError::AlreadyPaired);
        }
        Ok(format!("SCR{:05}", self.serial))
    }

    async fn groups(&self) -> Result<Vec<GroupInfo>, WhatsAppError> {
        if !self.connected.load(Ordering::SeqCst) {
            return Err(WhatsAppError::NotConnected);
        }
        Ok(lock(&self.shared).groups.clone())
    }

    async fn logout(&self) {
        while self.behaviour.hang_logout.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.logged_out.store(true, Ordering::SeqCst);
        self.stop().await;
    }

    async fn stop(&self) {
        let delay = self.behaviour.stop_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.connected.store(false, Ordering::SeqCst);
        self.stopped.store(true, Ordering::SeqCst);
    }
}
