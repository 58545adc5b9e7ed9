//! `AppSyncStore` on PostgreSQL: app-state sync keys, collection versions, mutation MACs.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::Result;
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::{PgBackend, run};
use crate::error::PgStoreError;

/// An app-state master key is 32 bytes; the SQLite store treats a row with any
/// other length as absent (the key is then re-requested), and so does this one.
const APP_STATE_KEY_LEN: usize = 32;
/// The length of `HashState::hash`.
const HASH_STATE_LEN: usize = 128;

fn to_i64(value: u64, what: &str) -> std::result::Result<i64, PgStoreError> {
    i64::try_from(value).map_err(|_| PgStoreError::OutOfRange(format!("{what} {value}")))
}

#[async_trait]
impl AppSyncStore for PgBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT key_data, fingerprint, key_timestamp FROM wa_app_state_keys
                     WHERE phone = $1 AND key_id = $2",
                    &[&self.phone(), &key_id],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let key_data: Vec<u8> = row.try_get(0)?;
            if key_data.len() != APP_STATE_KEY_LEN {
                tracing::warn!(
                    length = key_data.len(),
                    "an app-state sync key has the wrong length; treating it as absent"
                );
                return Ok(None);
            }
            Ok(Some(AppStateSyncKey {
                key_data,
                fingerprint: row.try_get(1)?,
                timestamp: row.try_get(2)?,
            }))
        })
        .await
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.write_unit(
            "INSERT INTO wa_app_state_keys (phone, key_id, key_data, fingerprint, key_timestamp)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (phone, key_id) DO UPDATE SET key_data = excluded.key_data,
                     fingerprint = excluded.fingerprint, key_timestamp = excluded.key_timestamp",
            &[
                &self.phone(),
                &key_id,
                &key.key_data,
                &key.fingerprint,
                &key.timestamp,
            ],
        )
        .await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT version, hash, index_keys, index_values, mac_mismatch_fatal
                     FROM wa_app_state_versions WHERE phone = $1 AND name = $2",
                    &[&self.phone(), &name],
                )
                .await?;
            let Some(row) = row else {
                return Ok(HashState::default());
            };
            let version: i64 = row.try_get(0)?;
            let hash: Vec<u8> = row.try_get(1)?;
            let keys: Vec<String> = row.try_get(2)?;
            let values: Vec<Vec<u8>> = row.try_get(3)?;
            let (Ok(version), Ok(hash)) = (
                u64::try_from(version),
                <[u8; HASH_STATE_LEN]>::try_from(hash.as_slice()),
            ) else {
                // As the SQLite store does with an undecodable row: the
                // collection re-syncs from version 0.
                tracing::warn!(
                    collection = name,
                    "an app-state version row is invalid; resetting it"
                );
                return Ok(HashState::default());
            };
            if keys.len() != values.len() {
                tracing::warn!(
                    collection = name,
                    "an app-state version row is invalid; resetting it"
                );
                return Ok(HashState::default());
            }
            Ok(HashState {
                version,
                hash,
                index_value_map: keys.into_iter().zip(values).collect(),
                mac_mismatch_fatal: row.try_get(4)?,
            })
        })
        .await
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        run(async {
            let version = to_i64(state.version, "app-state version")?;
            let (keys, values): (Vec<&str>, Vec<&[u8]>) = state
                .index_value_map
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice()))
                .unzip();
            self.write(
                "INSERT INTO wa_app_state_versions
                     (phone, name, version, hash, index_keys, index_values, mac_mismatch_fatal)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (phone, name) DO UPDATE SET version = excluded.version,
                     hash = excluded.hash, index_keys = excluded.index_keys,
                     index_values = excluded.index_values,
                     mac_mismatch_fatal = excluded.mac_mismatch_fatal",
                &[
                    &self.phone(),
                    &name,
                    &version,
                    &&state.hash[..],
                    &keys,
                    &values,
                    &state.mac_mismatch_fatal,
                ],
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        run(async {
            let version = to_i64(version, "app-state version")?;
            let phone = self.phone();
            let rows: Vec<[&(dyn ToSql + Sync); 5]> = mutations
                .iter()
                .map(|mutation| {
                    [
                        &phone as &(dyn ToSql + Sync),
                        &name,
                        &mutation.index_mac,
                        &version,
                        &mutation.value_mac,
                    ]
                })
                .collect();
            self.write_many(
                "INSERT INTO wa_app_state_mutation_macs (phone, name, index_mac, version, value_mac)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (phone, name, index_mac) DO UPDATE
                     SET version = excluded.version, value_mac = excluded.value_mac",
                &rows,
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_value(
            "SELECT value_mac FROM wa_app_state_mutation_macs
                     WHERE phone = $1 AND name = $2 AND index_mac = $3",
            &[&self.phone(), &name, &index_mac],
        )
        .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<&[u8]> = index_macs.iter().map(|mac| mac.as_slice()).collect();
        run(async {
            let rows = self
                .read_all(
                    "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs
                     WHERE phone = $1 AND name = $2 AND index_mac = ANY($3)",
                    &[&self.phone(), &name, &wanted],
                )
                .await?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in rows {
                let index_mac: Vec<u8> = row.try_get(0)?;
                if let Ok(index_mac) = <[u8; 32]>::try_from(index_mac.as_slice()) {
                    found.insert(index_mac, row.try_get(1)?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        self.write_unit(
            "DELETE FROM wa_app_state_mutation_macs
                 WHERE phone = $1 AND name = $2 AND index_mac = ANY($3)",
            &[&self.phone(), &name, &index_macs],
        )
        .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.write_unit(
            "DELETE FROM wa_app_state_mutation_macs WHERE phone = $1 AND name = $2",
            &[&self.phone(), &name],
        )
        .await
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        // The greatest key id (bytewise, as SQLite orders blobs) among the
        // usable keys: a row get_sync_key treats as absent is skipped.
        self.read_value(
            "SELECT key_id FROM wa_app_state_keys
                     WHERE phone = $1 AND length(key_data) = 32
                     ORDER BY key_id DESC LIMIT 1",
            &[&self.phone()],
        )
        .await
    }
}
