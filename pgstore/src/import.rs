//! Moving one phone's whatsapp-rust SQLite store (a single node's `session.db`) into PostgreSQL.
//!
//! For `lila import`: the phone keeps its pairing, keys and Signal sessions, so
//! it resumes in cluster mode without a new QR. Values whose SQLite encoding is
//! private to whatsapp-rust-sqlite-storage (the device, app-state keys and
//! versions, device lists) are read through its own store; the rest, which the
//! traits cannot list, are read from the file's tables. Everything is written
//! through `PgBackend`, so fenced by the phone's lease. Upserts only: a failed
//! import can simply be run again. Creation and insertion times restart at the
//! import (they only drive expiry sweeps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Bool, Integer, Text};
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::StoreError;
use wacore::store::traits::{
    AppSyncStore, DeviceStore, MsgSecretEntry, MsgSecretStore, PendingInboundRow, ProtocolStore,
    SignalStore,
};
use whatsapp_rust_sqlite_storage::SqliteStore;

use crate::backend::PgBackend;

/// Why an import failed. Nothing is lost: the SQLite file is only read (and
/// migrated to its store's latest schema, as opening it in lila does).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("there is no SQLite store at {0}")]
    Missing(PathBuf),
    #[error("the SQLite store path is not UTF-8")]
    NotUtf8,
    #[error("could not read the SQLite store")]
    Sqlite(#[from] diesel::result::Error),
    #[error("could not open the SQLite store")]
    Open(#[from] diesel::ConnectionError),
    #[error("a row of the SQLite store is invalid: {0}")]
    Invalid(String),
    #[error("could not read or write a store")]
    Store(#[from] StoreError),
    #[error("the SQLite reader stopped")]
    Reader(#[from] tokio::task::JoinError),
}

/// What an import wrote, per table of the SQLite store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: BTreeMap<&'static str, u64>,
}

/// Rows the traits cannot enumerate, read straight from the file.
#[derive(Default)]
struct RawRows {
    identities: Vec<(Arc<str>, [u8; 32])>,
    sessions: Vec<(Arc<str>, Bytes)>,
    prekeys: Vec<(u32, Bytes, bool)>,
    sender_keys: Vec<(Arc<str>, Bytes)>,
    app_state_key_ids: Vec<Vec<u8>>,
    app_state_names: Vec<String>,
    mutation_macs: Vec<(String, i64, Vec<u8>, Vec<u8>)>,
    sender_key_devices: Vec<(String, String, bool)>,
    base_keys: Vec<(String, String, Vec<u8>)>,
    device_list_users: Vec<String>,
    group_metadata: Vec<(String, Vec<u8>)>,
    sent_messages: Vec<(String, String, Vec<u8>)>,
    pending_inbound: Vec<(String, String, String, Vec<u8>)>,
    msg_secrets: Vec<MsgSecretEntry>,
}

#[derive(QueryableByName)]
struct KeyValue {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Binary)]
    value: Vec<u8>,
}

#[derive(QueryableByName)]
struct OneText {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct OneBlob {
    #[diesel(sql_type = Binary)]
    value: Vec<u8>,
}

#[derive(QueryableByName)]
struct PreKeyRow {
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(sql_type = Binary)]
    key: Vec<u8>,
    #[diesel(sql_type = Bool)]
    uploaded: bool,
}

#[derive(QueryableByName)]
struct MacRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Binary)]
    index_mac: Vec<u8>,
    #[diesel(sql_type = Binary)]
    value_mac: Vec<u8>,
}

#[derive(QueryableByName)]
struct ThreeColumns {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Text)]
    b: String,
    #[diesel(sql_type = Binary)]
    value: Vec<u8>,
}

#[derive(QueryableByName)]
struct SenderKeyDeviceRow {
    #[diesel(sql_type = Text)]
    group_jid: String,
    #[diesel(sql_type = Text)]
    device_jid: String,
    #[diesel(sql_type = Integer)]
    has_key: i32,
}

#[derive(QueryableByName)]
struct PendingRow {
    #[diesel(sql_type = Text)]
    chat: String,
    #[diesel(sql_type = Text)]
    sender: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Binary)]
    message: Vec<u8>,
}

#[derive(QueryableByName)]
struct SecretRow {
    #[diesel(sql_type = Text)]
    chat: String,
    #[diesel(sql_type = Text)]
    sender: String,
    #[diesel(sql_type = Text)]
    msg_id: String,
    #[diesel(sql_type = Binary)]
    secret: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    expires_at: i64,
    #[diesel(sql_type = BigInt)]
    message_ts: i64,
}

fn query<T: QueryableByName<diesel::sqlite::Sqlite> + 'static>(
    conn: &mut SqliteConnection,
    sql: &str,
    device_id: i32,
) -> Result<Vec<T>, ImportError> {
    Ok(diesel::sql_query(sql)
        .bind::<Integer, _>(device_id)
        .load::<T>(conn)?)
}

fn read_raw_rows(path: &str, device_id: i32) -> Result<RawRows, ImportError> {
    let mut conn = SqliteConnection::establish(path)?;
    let c = &mut conn;
    let mut rows = RawRows::default();
    for row in query::<KeyValue>(
        c,
        "SELECT address AS key, key AS value FROM identities WHERE device_id = ?",
        device_id,
    )? {
        let key: [u8; 32] = row.value.as_slice().try_into().map_err(|_| {
            ImportError::Invalid(format!("the identity key of {} is not 32 bytes", row.key))
        })?;
        rows.identities.push((Arc::from(row.key), key));
    }
    rows.sessions = query::<KeyValue>(
        c,
        "SELECT address AS key, record AS value FROM sessions WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (Arc::from(row.key), Bytes::from(row.value)))
    .collect();
    for row in query::<PreKeyRow>(
        c,
        "SELECT id, key, uploaded FROM prekeys WHERE device_id = ?",
        device_id,
    )? {
        // The SQLite store writes a u32 id `as i32`; read it back the same way.
        rows.prekeys
            .push((row.id as u32, Bytes::from(row.key), row.uploaded));
    }
    rows.sender_keys = query::<KeyValue>(
        c,
        "SELECT address AS key, record AS value FROM sender_keys WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (Arc::from(row.key), Bytes::from(row.value)))
    .collect();
    rows.app_state_key_ids = query::<OneBlob>(
        c,
        "SELECT key_id AS value FROM app_state_keys WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| row.value)
    .collect();
    rows.app_state_names = query::<OneText>(
        c,
        "SELECT name AS value FROM app_state_versions WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| row.value)
    .collect();
    rows.mutation_macs = query::<MacRow>(
        c,
        "SELECT name, version, index_mac, value_mac FROM app_state_mutation_macs WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.name, row.version, row.index_mac, row.value_mac))
    .collect();
    rows.sender_key_devices = query::<SenderKeyDeviceRow>(
        c,
        "SELECT group_jid, device_jid, has_key FROM sender_key_devices WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.group_jid, row.device_jid, row.has_key != 0))
    .collect();
    rows.base_keys = query::<ThreeColumns>(
        c,
        "SELECT address AS a, message_id AS b, base_key AS value FROM base_keys WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.a, row.b, row.value))
    .collect();
    rows.device_list_users = query::<OneText>(
        c,
        "SELECT user_id AS value FROM device_registry WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| row.value)
    .collect();
    rows.group_metadata = query::<KeyValue>(
        c,
        "SELECT group_jid AS key, info AS value FROM group_metadata WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.key, row.value))
    .collect();
    rows.sent_messages = query::<ThreeColumns>(
        c,
        "SELECT chat_jid AS a, message_id AS b, payload AS value FROM sent_messages WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.a, row.b, row.value))
    .collect();
    rows.pending_inbound = query::<PendingRow>(
        c,
        "SELECT chat, sender, id, message FROM pending_inbound_messages WHERE device_id = ?",
        device_id,
    )?
    .into_iter()
    .map(|row| (row.chat, row.sender, row.id, row.message))
    .collect();
    for row in query::<SecretRow>(
        c,
        "SELECT chat, sender, msg_id, secret, expires_at, message_ts FROM msg_secrets WHERE device_id = ?",
        device_id,
    )? {
        let secret = row.secret.as_slice().try_into().map_err(|_| {
            ImportError::Invalid(format!(
                "the secret of message {} has the wrong length",
                row.msg_id
            ))
        })?;
        rows.msg_secrets.push(MsgSecretEntry {
            chat: Arc::from(row.chat),
            sender: Arc::from(row.sender),
            msg_id: Arc::from(row.msg_id),
            secret,
            expires_at: row.expires_at,
            message_ts: row.message_ts,
        });
    }
    Ok(rows)
}

fn count(items: usize) -> u64 {
    u64::try_from(items).unwrap_or(u64::MAX)
}

/// Copies the whatsapp-rust store at `path` (the phone's `session.db`) into
/// `target`, the phone's `PgBackend` (whose lease must be held).
pub async fn import_sqlite_store(
    path: &Path,
    target: &PgBackend,
) -> Result<ImportReport, ImportError> {
    if !path.is_file() {
        return Err(ImportError::Missing(path.to_path_buf()));
    }
    let path_text = path.to_str().ok_or(ImportError::NotUtf8)?.to_owned();
    let source = SqliteStore::new(&path_text).await?;
    let device_id = source.device_id();
    let raw = tokio::task::spawn_blocking(move || read_raw_rows(&path_text, device_id)).await??;
    let mut report = ImportReport::default();
    let mut wrote = |table: &'static str, rows: u64| {
        report.rows.insert(table, rows);
    };

    let device = source.load().await?;
    if let Some(device) = &device {
        target.save(device).await?;
    }
    wrote("device", u64::from(device.is_some()));

    target.put_identities_batch(&raw.identities).await?;
    wrote("identities", count(raw.identities.len()));
    target.put_sessions_batch(&raw.sessions).await?;
    wrote("sessions", count(raw.sessions.len()));
    for uploaded in [false, true] {
        let keys: Vec<(u32, Bytes)> = raw
            .prekeys
            .iter()
            .filter(|(_, _, flag)| *flag == uploaded)
            .map(|(id, key, _)| (*id, key.clone()))
            .collect();
        target.store_prekeys_batch(&keys, uploaded).await?;
    }
    wrote("prekeys", count(raw.prekeys.len()));
    let signed = source.load_all_signed_prekeys().await?;
    for (id, record) in &signed {
        target.store_signed_prekey(*id, record).await?;
    }
    wrote("signed_prekeys", count(signed.len()));
    target.put_sender_keys_batch(&raw.sender_keys).await?;
    wrote("sender_keys", count(raw.sender_keys.len()));

    // An app-state key the SQLite store cannot decode reads as absent there,
    // so it is left out here too (the client re-requests it).
    let mut keys = 0;
    for key_id in &raw.app_state_key_ids {
        if let Some(key) = source.get_sync_key(key_id).await? {
            target.set_sync_key(key_id, key).await?;
            keys += 1;
        }
    }
    wrote("app_state_keys", keys);
    for name in &raw.app_state_names {
        target
            .set_version(name, source.get_version(name).await?)
            .await?;
    }
    wrote("app_state_versions", count(raw.app_state_names.len()));
    let mut macs: BTreeMap<(&str, i64), Vec<AppStateMutationMAC>> = BTreeMap::new();
    for (name, version, index_mac, value_mac) in &raw.mutation_macs {
        macs.entry((name.as_str(), *version))
            .or_default()
            .push(AppStateMutationMAC {
                index_mac: index_mac.clone(),
                value_mac: value_mac.clone(),
            });
    }
    for ((name, version), group) in &macs {
        let version = u64::try_from(*version)
            .map_err(|_| ImportError::Invalid(format!("app-state version {version}")))?;
        target.put_mutation_macs(name, version, group).await?;
    }
    wrote("app_state_mutation_macs", count(raw.mutation_macs.len()));

    let mut by_group: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for (group, device, has_key) in &raw.sender_key_devices {
        by_group
            .entry(group.as_str())
            .or_default()
            .push((device.as_str(), *has_key));
    }
    for (group, entries) in &by_group {
        target.set_sender_key_status(group, entries).await?;
    }
    wrote("sender_key_devices", count(raw.sender_key_devices.len()));
    let mappings = source.get_all_lid_mappings().await?;
    target.put_lid_mappings(&mappings).await?;
    wrote("lid_pn_mapping", count(mappings.len()));
    for (address, message_id, base_key) in &raw.base_keys {
        target.save_base_key(address, message_id, base_key).await?;
    }
    wrote("base_keys", count(raw.base_keys.len()));
    let mut lists = Vec::with_capacity(raw.device_list_users.len());
    for user in &raw.device_list_users {
        if let Some(list) = source.get_devices(user).await? {
            lists.push(list);
        }
    }
    wrote("device_registry", count(lists.len()));
    target.update_device_lists(lists).await?;
    for (group, info) in &raw.group_metadata {
        target.put_group_metadata(group, info).await?;
    }
    wrote("group_metadata", count(raw.group_metadata.len()));
    let jids = source.get_all_tc_token_jids().await?;
    for jid in &jids {
        if let Some(token) = source.get_tc_token(jid).await? {
            target.put_tc_token(jid, &token).await?;
        }
    }
    wrote("tc_tokens", count(jids.len()));
    for (chat, message_id, payload) in &raw.sent_messages {
        target.store_sent_message(chat, message_id, payload).await?;
    }
    wrote("sent_messages", count(raw.sent_messages.len()));
    let pending: Vec<PendingInboundRow<'_>> = raw
        .pending_inbound
        .iter()
        .map(|(chat, sender, id, message)| PendingInboundRow {
            chat,
            sender,
            id,
            message,
        })
        .collect();
    target.store_pending_inbound_batch(&pending).await?;
    wrote("pending_inbound_messages", count(pending.len()));
    let secrets = raw.msg_secrets.len();
    target.put_msg_secrets(raw.msg_secrets).await?;
    wrote("msg_secrets", count(secrets));
    Ok(report)
}
