//! `ProtocolStore` on PostgreSQL: sender-key devices, LID/PN mappings, base keys,
//! the device registry, group metadata, tc tokens, sent messages, the pending
//! inbound buffer.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use wacore::store::error::Result;
use wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow,
    ProtocolStore, TcTokenEntry,
};

use super::{PgBackend, run, to_u32};
use crate::error::PgStoreError;

const UPSERT_LID_MAPPING: &str =
    "INSERT INTO wa_lid_pn_mapping (phone, lid, phone_number, created_at, learning_source, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (phone, lid) DO UPDATE SET phone_number = excluded.phone_number,
         learning_source = excluded.learning_source, updated_at = excluded.updated_at";
const SELECT_LID_MAPPING: &str =
    "SELECT lid, phone_number, created_at, learning_source, updated_at FROM wa_lid_pn_mapping";
const UPSERT_DEVICE_LIST: &str = "INSERT INTO wa_device_registry
         (phone, user_id, devices_json, record_timestamp, phash, raw_id, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, extract(epoch from now())::bigint)
     ON CONFLICT (phone, user_id) DO UPDATE SET devices_json = excluded.devices_json,
         record_timestamp = excluded.record_timestamp, phash = excluded.phash,
         raw_id = excluded.raw_id, updated_at = excluded.updated_at";
/// A re-buffered message replaces the old one and restarts its age, as the
/// SQLite store's `REPLACE INTO` does.
const UPSERT_PENDING_INBOUND: &str =
    "INSERT INTO wa_pending_inbound (phone, chat, sender, id, message, inserted_at)
     VALUES ($1, $2, $3, $4, $5, extract(epoch from now())::bigint)
     ON CONFLICT (phone, chat, sender, id)
     DO UPDATE SET message = excluded.message, inserted_at = excluded.inserted_at";
const DELETE_PENDING_INBOUND: &str =
    "DELETE FROM wa_pending_inbound WHERE phone = $1 AND chat = $2 AND sender = $3 AND id = $4";

fn lid_mapping_from(
    row: &tokio_postgres::Row,
) -> std::result::Result<LidPnMappingEntry, PgStoreError> {
    Ok(LidPnMappingEntry {
        lid: row.try_get(0)?,
        phone_number: row.try_get(1)?,
        created_at: row.try_get(2)?,
        learning_source: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// A device list as its upsert takes it: the devices as JSON, as the SQLite
/// store keeps them.
fn device_list_params(
    record: &DeviceListRecord,
) -> std::result::Result<(String, Option<i64>), PgStoreError> {
    let devices_json = serde_json::to_string(&record.devices)
        .map_err(|e| PgStoreError::Invalid(format!("device list of {}: {e}", record.user)))?;
    Ok((devices_json, record.raw_id.map(i64::from)))
}

fn count(removed: u64) -> u32 {
    u32::try_from(removed).unwrap_or(u32::MAX)
}

#[async_trait]
impl ProtocolStore for PgBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        run(async {
            let rows = self
                .read_all(
                    "SELECT device_jid, has_key FROM wa_sender_key_devices
                     WHERE phone = $1 AND group_jid = $2 ORDER BY device_jid",
                    &[&self.phone(), &group_jid],
                )
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
        .await
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let phone = self.phone();
        let rows: Vec<[&(dyn ToSql + Sync); 4]> = entries
            .iter()
            .map(|(device_jid, has_key)| {
                [
                    &phone as &(dyn ToSql + Sync),
                    &group_jid,
                    device_jid,
                    has_key,
                ]
            })
            .collect();
        run(async {
            self.write_many(
                "INSERT INTO wa_sender_key_devices (phone, group_jid, device_jid, has_key, updated_at)
                 VALUES ($1, $2, $3, $4, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, group_jid, device_jid)
                 DO UPDATE SET has_key = excluded.has_key, updated_at = excluded.updated_at",
                &rows,
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_sender_key_devices WHERE phone = $1 AND group_jid = $2",
            &[&self.phone(), &group_jid],
        )
        .await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        self.write_unit(
            "DELETE FROM wa_sender_key_devices WHERE phone = $1 AND device_jid = ANY($2)",
            &[&self.phone(), &device_jids],
        )
        .await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_sender_key_devices WHERE phone = $1",
            &[&self.phone()],
        )
        .await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        run(async {
            let sql = format!("{SELECT_LID_MAPPING} WHERE phone = $1 AND lid = $2");
            let row = self.read_opt(&sql, &[&self.phone(), &lid]).await?;
            row.as_ref().map(lid_mapping_from).transpose()
        })
        .await
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        run(async {
            // The most recently updated LID of that phone number; ties go to
            // the greatest LID so the answer does not depend on row order.
            let sql = format!(
                "{SELECT_LID_MAPPING} WHERE phone = $1 AND phone_number = $2
                 ORDER BY updated_at DESC, lid DESC LIMIT 1"
            );
            let row = self.read_opt(&sql, &[&self.phone(), &phone]).await?;
            row.as_ref().map(lid_mapping_from).transpose()
        })
        .await
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // On conflict the first `created_at` stays: it is when the mapping
        // was first learned.
        let phone = self.phone();
        let rows: Vec<[&(dyn ToSql + Sync); 6]> = entries
            .iter()
            .map(|entry| {
                [
                    &phone as &(dyn ToSql + Sync),
                    &entry.lid,
                    &entry.phone_number,
                    &entry.created_at,
                    &entry.learning_source,
                    &entry.updated_at,
                ]
            })
            .collect();
        run(async { self.write_many(UPSERT_LID_MAPPING, &rows).await.map(drop) }).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        run(async {
            let sql = format!("{SELECT_LID_MAPPING} WHERE phone = $1 ORDER BY lid");
            let rows = self.read_all(&sql, &[&self.phone()]).await?;
            rows.iter().map(lid_mapping_from).collect()
        })
        .await
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.write_unit(
                "INSERT INTO wa_base_keys (phone, address, message_id, base_key, created_at)
                 VALUES ($1, $2, $3, $4, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, address, message_id) DO UPDATE SET base_key = excluded.base_key",
                &[&self.phone(), &address, &message_id, &base_key],
            ).await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT base_key FROM wa_base_keys
                     WHERE phone = $1 AND address = $2 AND message_id = $3",
                    &[&self.phone(), &address, &message_id],
                )
                .await?;
            match row {
                Some(row) => Ok(row.try_get::<_, Vec<u8>>(0)? == current_base_key),
                None => Ok(false),
            }
        })
        .await
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_base_keys WHERE phone = $1 AND address = $2 AND message_id = $3",
            &[&self.phone(), &address, &message_id],
        )
        .await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        run(async {
            let phone = self.phone();
            let prepared = records
                .iter()
                .map(device_list_params)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let rows: Vec<[&(dyn ToSql + Sync); 6]> = records
                .iter()
                .zip(&prepared)
                .map(|(record, (devices_json, raw_id))| {
                    [
                        &phone as &(dyn ToSql + Sync),
                        &record.user,
                        devices_json,
                        &record.timestamp,
                        &record.phash,
                        raw_id,
                    ]
                })
                .collect();
            self.write_many(UPSERT_DEVICE_LIST, &rows).await.map(drop)
        })
        .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT user_id, devices_json, record_timestamp, phash, raw_id
                     FROM wa_device_registry WHERE phone = $1 AND user_id = $2",
                    &[&self.phone(), &user],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let devices_json: String = row.try_get(1)?;
            let devices: Vec<DeviceInfo> = serde_json::from_str(&devices_json)
                .map_err(|e| PgStoreError::Invalid(format!("device list of {user}: {e}")))?;
            let raw_id: Option<i64> = row.try_get(4)?;
            Ok(Some(DeviceListRecord {
                user: row.try_get(0)?,
                devices,
                timestamp: row.try_get(2)?,
                phash: row.try_get(3)?,
                raw_id: raw_id.map(|id| to_u32(id, "raw id")).transpose()?,
            }))
        })
        .await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_device_registry WHERE phone = $1 AND user_id = $2",
            &[&self.phone(), &user],
        )
        .await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.read_value(
            "SELECT info FROM wa_group_metadata WHERE phone = $1 AND group_jid = $2",
            &[&self.phone(), &group_jid],
        )
        .await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.write_unit(
            "INSERT INTO wa_group_metadata (phone, group_jid, info, updated_at)
                 VALUES ($1, $2, $3, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, group_jid)
                 DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
            &[&self.phone(), &group_jid, &blob],
        )
        .await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_group_metadata WHERE phone = $1 AND group_jid = $2",
            &[&self.phone(), &group_jid],
        )
        .await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens
                     WHERE phone = $1 AND jid = $2",
                    &[&self.phone(), &jid],
                )
                .await?;
            match row {
                Some(row) => Ok(Some(TcTokenEntry {
                    token: row.try_get(0)?,
                    token_timestamp: row.try_get(1)?,
                    sender_timestamp: row.try_get(2)?,
                })),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.write_unit(
                "INSERT INTO wa_tc_tokens (phone, jid, token, token_timestamp, sender_timestamp, updated_at)
                 VALUES ($1, $2, $3, $4, $5, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, jid) DO UPDATE SET token = excluded.token,
                     token_timestamp = excluded.token_timestamp,
                     sender_timestamp = excluded.sender_timestamp,
                     updated_at = excluded.updated_at",
                &[
                    &self.phone(),
                    &jid,
                    &entry.token,
                    &entry.token_timestamp,
                    &entry.sender_timestamp,
                ],
            ).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_tc_tokens WHERE phone = $1 AND jid = $2",
            &[&self.phone(), &jid],
        )
        .await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        run(async {
            let rows = self
                .read_all(
                    "SELECT jid FROM wa_tc_tokens WHERE phone = $1 ORDER BY jid",
                    &[&self.phone()],
                )
                .await?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(PgStoreError::from))
                .collect()
        })
        .await
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        run(async {
            let removed = self
                .write(
                    "DELETE FROM wa_tc_tokens WHERE phone = $1
                       AND (length(token) = 0 OR token_timestamp < $2)
                       AND (sender_timestamp IS NULL OR sender_timestamp < $3)",
                    &[&self.phone(), &token_cutoff, &sender_cutoff],
                )
                .await?;
            Ok(count(removed))
        })
        .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        // One statement, so atomic against put/store_received: on conflict
        // only the sender bucket moves, and only forward.
        self.write_unit(
                "INSERT INTO wa_tc_tokens (phone, jid, token, token_timestamp, sender_timestamp, updated_at)
                 VALUES ($1, $2, '\\x'::bytea, $3, $3, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, jid) DO UPDATE SET
                     sender_timestamp = GREATEST(wa_tc_tokens.sender_timestamp, excluded.sender_timestamp),
                     updated_at = excluded.updated_at",
                &[&self.phone(), &jid, &sender_timestamp],
            ).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        // Newer wins, in one statement: the stored token is replaced when it
        // is a byte-less placeholder or not newer; the sender bucket stays.
        self.write_unit(
                "INSERT INTO wa_tc_tokens (phone, jid, token, token_timestamp, sender_timestamp, updated_at)
                 VALUES ($1, $2, $3, $4, NULL, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, jid) DO UPDATE SET token = excluded.token,
                     token_timestamp = excluded.token_timestamp, updated_at = excluded.updated_at
                 WHERE length(wa_tc_tokens.token) = 0
                    OR excluded.token_timestamp >= wa_tc_tokens.token_timestamp",
                &[&self.phone(), &jid, &token, &token_timestamp],
            ).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        // A re-store replaces the payload and restarts its age, as the SQLite
        // store's `REPLACE INTO` does.
        self.write_unit(
            "INSERT INTO wa_sent_messages (phone, chat_jid, message_id, payload, created_at)
                 VALUES ($1, $2, $3, $4, extract(epoch from now())::bigint)
                 ON CONFLICT (phone, chat_jid, message_id)
                 DO UPDATE SET payload = excluded.payload, created_at = excluded.created_at",
            &[&self.phone(), &chat_jid, &message_id, &payload],
        )
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        // Read and delete in one statement: two retry receipts cannot both
        // take the payload.
        run(async {
            let mut client = self.client().await?;
            let tx = self.fenced(&mut client).await?;
            let statement = tx
                .prepare_cached(
                    "DELETE FROM wa_sent_messages
                     WHERE phone = $1 AND chat_jid = $2 AND message_id = $3
                     RETURNING payload",
                )
                .await?;
            let row = tx
                .query_opt(&statement, &[&self.phone(), &chat_jid, &message_id])
                .await?;
            tx.commit().await?;
            match row {
                Some(row) => Ok(Some(row.try_get(0)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        run(async {
            let removed = self
                .write(
                    "DELETE FROM wa_sent_messages WHERE phone = $1 AND created_at < $2",
                    &[&self.phone(), &cutoff_timestamp],
                )
                .await?;
            Ok(count(removed))
        })
        .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.write_unit(
            UPSERT_PENDING_INBOUND,
            &[&self.phone(), &chat, &sender, &id, &message],
        )
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.read_value(
            "SELECT message FROM wa_pending_inbound
                     WHERE phone = $1 AND chat = $2 AND sender = $3 AND id = $4",
            &[&self.phone(), &chat, &sender, &id],
        )
        .await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.write_unit(
            DELETE_PENDING_INBOUND,
            &[&self.phone(), &chat, &sender, &id],
        )
        .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        run(async {
            let removed = self
                .write(
                    "DELETE FROM wa_pending_inbound WHERE phone = $1 AND inserted_at < $2",
                    &[&self.phone(), &cutoff_timestamp],
                )
                .await?;
            Ok(count(removed))
        })
        .await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let phone = self.phone();
        let params: Vec<[&(dyn ToSql + Sync); 5]> = rows
            .iter()
            .map(|row| {
                [
                    &phone as &(dyn ToSql + Sync),
                    &row.chat,
                    &row.sender,
                    &row.id,
                    &row.message,
                ]
            })
            .collect();
        run(async {
            self.write_many(UPSERT_PENDING_INBOUND, &params)
                .await
                .map(drop)
        })
        .await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let phone = self.phone();
        let params: Vec<[&(dyn ToSql + Sync); 4]> = keys
            .iter()
            .map(|key| {
                [
                    &phone as &(dyn ToSql + Sync),
                    &key.chat,
                    &key.sender,
                    &key.id,
                ]
            })
            .collect();
        run(async {
            self.write_many(DELETE_PENDING_INBOUND, &params)
                .await
                .map(drop)
        })
        .await
    }
}
