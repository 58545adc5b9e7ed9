//! `SignalStore` on PostgreSQL: identities, sessions, pre-keys, signed pre-keys, sender keys.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_postgres::types::ToSql;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::SignalStore;

use super::{PgBackend, run, to_u32};
use crate::error::PgStoreError;

const UPSERT_IDENTITY: &str = "INSERT INTO wa_identities (phone, address, key) VALUES ($1, $2, $3)
     ON CONFLICT (phone, address) DO UPDATE SET key = excluded.key";
const UPSERT_SESSION: &str = "INSERT INTO wa_sessions (phone, address, record) VALUES ($1, $2, $3)
     ON CONFLICT (phone, address) DO UPDATE SET record = excluded.record";
const UPSERT_PREKEY: &str =
    "INSERT INTO wa_prekeys (phone, id, key, uploaded) VALUES ($1, $2, $3, $4)
     ON CONFLICT (phone, id) DO UPDATE SET key = excluded.key, uploaded = excluded.uploaded";
const UPSERT_SENDER_KEY: &str =
    "INSERT INTO wa_sender_keys (phone, address, record) VALUES ($1, $2, $3)
     ON CONFLICT (phone, address) DO UPDATE SET record = excluded.record";
impl PgBackend {
    /// Upserts `(address, value)` pairs with `sql` in one fenced transaction.
    async fn upsert_pairs<V: ToSql + Sync>(
        &self,
        sql: &str,
        pairs: &[(Arc<str>, V)],
    ) -> std::result::Result<(), PgStoreError> {
        let phone = self.phone();
        let addresses: Vec<&str> = pairs.iter().map(|(address, _)| address.as_ref()).collect();
        let rows: Vec<[&(dyn ToSql + Sync); 3]> = addresses
            .iter()
            .zip(pairs)
            .map(|(address, (_, value))| [&phone as &(dyn ToSql + Sync), address, value])
            .collect();
        self.write_many(sql, &rows).await.map(drop)
    }
}

#[async_trait]
impl SignalStore for PgBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.write_unit(UPSERT_IDENTITY, &[&self.phone(), &address, &&key[..]])
            .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let as_bytes: Vec<(Arc<str>, &[u8])> = identities
            .iter()
            .map(|(address, key)| (Arc::clone(address), &key[..]))
            .collect();
        run(self.upsert_pairs(UPSERT_IDENTITY, &as_bytes)).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        let row = run(self.read_opt(
            "SELECT key FROM wa_identities WHERE phone = $1 AND address = $2",
            &[&self.phone(), &address],
        ))
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key: Vec<u8> = row
            .try_get(0)
            .map_err(|e| StoreError::from(PgStoreError::from(e)))?;
        let length = key.len();
        key.try_into().map(Some).map_err(|_| {
            StoreError::Validation(format!(
                "identity key for '{address}' has invalid length {length} (expected 32)"
            ))
        })
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_identities WHERE phone = $1 AND address = $2",
            &[&self.phone(), &address],
        )
        .await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .read_value::<Vec<u8>>(
                "SELECT record FROM wa_sessions WHERE phone = $1 AND address = $2",
                &[&self.phone(), &address],
            )
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.write_unit(UPSERT_SESSION, &[&self.phone(), &address, &session])
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let as_bytes: Vec<(Arc<str>, &[u8])> = sessions
            .iter()
            .map(|(address, record)| (Arc::clone(address), record.as_ref()))
            .collect();
        run(self.upsert_pairs(UPSERT_SESSION, &as_bytes)).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_sessions WHERE phone = $1 AND address = $2",
            &[&self.phone(), &address],
        )
        .await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT 1 FROM wa_sessions WHERE phone = $1 AND address = $2",
                    &[&self.phone(), &address],
                )
                .await?;
            Ok(row.is_some())
        })
        .await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        // Addresses are `user@server` (device 0) or `user:device@server`.
        let at = format!("{user}@");
        let colon = format!("{user}:");
        run(async {
            let row = self
                .read_opt(
                    "SELECT EXISTS (SELECT 1 FROM wa_sessions WHERE phone = $1
                                      AND (starts_with(address, $2) OR starts_with(address, $3)))
                         OR EXISTS (SELECT 1 FROM wa_identities WHERE phone = $1
                                      AND (starts_with(address, $2) OR starts_with(address, $3)))",
                    &[&self.phone(), &at, &colon],
                )
                .await?;
            match row {
                Some(row) => Ok(row.try_get::<_, bool>(0)?),
                None => Ok(false),
            }
        })
        .await
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.write_unit(
            UPSERT_PREKEY,
            &[&self.phone(), &i64::from(id), &record, &uploaded],
        )
        .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let phone = self.phone();
        let ids: Vec<i64> = keys.iter().map(|(id, _)| i64::from(*id)).collect();
        let records: Vec<&[u8]> = keys.iter().map(|(_, record)| record.as_ref()).collect();
        let rows: Vec<[&(dyn ToSql + Sync); 4]> = ids
            .iter()
            .zip(&records)
            .map(|(id, record)| [&phone as &(dyn ToSql + Sync), id, record, &uploaded])
            .collect();
        run(async { self.write_many(UPSERT_PREKEY, &rows).await.map(drop) }).await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .read_value::<Vec<u8>>(
                "SELECT key FROM wa_prekeys WHERE phone = $1 AND id = $2",
                &[&self.phone(), &i64::from(id)],
            )
            .await?
            .map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        run(async {
            let rows = self
                .read_all(
                    "SELECT id, key FROM wa_prekeys WHERE phone = $1 AND id = ANY($2) ORDER BY id",
                    &[&self.phone(), &ids],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let id = to_u32(row.try_get(0)?, "pre-key id")?;
                    Ok((id, Bytes::from(row.try_get::<_, Vec<u8>>(1)?)))
                })
                .collect()
        })
        .await
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        // UPDATE, never upsert: a key consumed since the upload must stay gone.
        self.write_unit(
            "UPDATE wa_prekeys SET uploaded = true WHERE phone = $1 AND id = ANY($2)",
            &[&self.phone(), &ids],
        )
        .await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_prekeys WHERE phone = $1 AND id = $2",
            &[&self.phone(), &i64::from(id)],
        )
        .await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT coalesce(max(id), 0) FROM wa_prekeys WHERE phone = $1",
                    &[&self.phone()],
                )
                .await?;
            match row {
                Some(row) => to_u32(row.try_get(0)?, "pre-key id"),
                None => Ok(0),
            }
        })
        .await
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.write_unit(
            "INSERT INTO wa_signed_prekeys (phone, id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (phone, id) DO UPDATE SET record = excluded.record",
            &[&self.phone(), &i64::from(id), &record],
        )
        .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.read_value(
            "SELECT record FROM wa_signed_prekeys WHERE phone = $1 AND id = $2",
            &[&self.phone(), &i64::from(id)],
        )
        .await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        run(async {
            let rows = self
                .read_all(
                    "SELECT id, record FROM wa_signed_prekeys WHERE phone = $1 ORDER BY id",
                    &[&self.phone()],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        to_u32(row.try_get(0)?, "signed pre-key id")?,
                        row.try_get(1)?,
                    ))
                })
                .collect()
        })
        .await
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_signed_prekeys WHERE phone = $1 AND id = $2",
            &[&self.phone(), &i64::from(id)],
        )
        .await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.write_unit(UPSERT_SENDER_KEY, &[&self.phone(), &address, &record])
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let as_bytes: Vec<(Arc<str>, &[u8])> = sender_keys
            .iter()
            .map(|(address, record)| (Arc::clone(address), record.as_ref()))
            .collect();
        run(self.upsert_pairs(UPSERT_SENDER_KEY, &as_bytes)).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.read_value(
            "SELECT record FROM wa_sender_keys WHERE phone = $1 AND address = $2",
            &[&self.phone(), &address],
        )
        .await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_sender_keys WHERE phone = $1 AND address = $2",
            &[&self.phone(), &address],
        )
        .await
    }
}
