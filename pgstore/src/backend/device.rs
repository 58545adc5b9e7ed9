//! `DeviceStore` on PostgreSQL: the phone's own device (keys, account, push name, counters).

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::Row;
use wacore::libsignal::protocol::{KeyPair, PrivateKey, PublicKey};
use wacore::stats::StorageResourceReport;
use wacore::store::Device as CoreDevice;
use wacore::store::device::CachedServerCertChain;
use wacore::store::error::Result;
use wacore::store::traits::DeviceStore;

use super::{PgBackend, run, to_u32};
use crate::error::PgStoreError;

/// The device id `create` reports: one device per phone, as the SQLite store
/// opened with `SqliteStore::new` reports its default device 1.
const DEVICE_ROW_ID: i32 = 1;

/// Columns of `wa_device` after `phone`, in the order of [`device_values`].
const DEVICE_COLUMNS: [&str; 26] = [
    "lid",
    "pn",
    "registration_id",
    "noise_key",
    "identity_key",
    "signed_pre_key",
    "signed_pre_key_id",
    "signed_pre_key_signature",
    "adv_secret_key",
    "account",
    "push_name",
    "app_version_primary",
    "app_version_secondary",
    "app_version_tertiary",
    "app_version_last_fetched_ms",
    "edge_routing_info",
    "props_hash",
    "next_pre_key_id",
    "first_unupload_pre_key_id",
    "server_has_prekeys",
    "nct_salt",
    "server_cert_chain",
    "login_counter",
    "lid_migrated",
    "last_signed_pre_key_rotation_ms",
    "read_receipts_disabled",
];

/// A key pair as the SQLite store keeps it: private key then public key.
fn key_pair_bytes(key_pair: &KeyPair) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(key_pair.private_key.serialize());
    bytes.extend_from_slice(key_pair.public_key.public_key_bytes());
    bytes
}

fn key_pair_from(bytes: &[u8], what: &str) -> std::result::Result<KeyPair, PgStoreError> {
    let (64, Some(private), Some(public)) = (bytes.len(), bytes.get(0..32), bytes.get(32..64))
    else {
        return Err(PgStoreError::Invalid(format!(
            "{what} is {} bytes, not 64",
            bytes.len()
        )));
    };
    let private_key = PrivateKey::deserialize(private)
        .map_err(|e| PgStoreError::Invalid(format!("{what}: {e}")))?;
    let public_key = PublicKey::from_djb_public_key_bytes(public)
        .map_err(|e| PgStoreError::Invalid(format!("{what}: {e}")))?;
    Ok(KeyPair::new(public_key, private_key))
}

/// The values of one device row, owned, in [`DEVICE_COLUMNS`] order.
struct DeviceValues {
    lid: String,
    pn: String,
    registration_id: i64,
    noise_key: Vec<u8>,
    identity_key: Vec<u8>,
    signed_pre_key: Vec<u8>,
    signed_pre_key_id: i64,
    signed_pre_key_signature: Vec<u8>,
    adv_secret_key: Vec<u8>,
    account: Option<Vec<u8>>,
    push_name: String,
    app_version_primary: i64,
    app_version_secondary: i64,
    app_version_tertiary: i64,
    app_version_last_fetched_ms: i64,
    edge_routing_info: Option<Vec<u8>>,
    props_hash: Option<String>,
    next_pre_key_id: i64,
    first_unupload_pre_key_id: i64,
    server_has_prekeys: bool,
    nct_salt: Option<Vec<u8>>,
    server_cert_chain: Option<String>,
    login_counter: i32,
    lid_migrated: bool,
    last_signed_pre_key_rotation_ms: i64,
    read_receipts_disabled: bool,
}

fn device_values(device: &CoreDevice) -> std::result::Result<DeviceValues, PgStoreError> {
    let server_cert_chain = device
        .server_cert_chain
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| PgStoreError::Invalid(format!("server cert chain: {e}")))?;
    Ok(DeviceValues {
        lid: device
            .lid
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        pn: device
            .pn
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        registration_id: i64::from(device.registration_id),
        noise_key: key_pair_bytes(&device.noise_key),
        identity_key: key_pair_bytes(&device.identity_key),
        signed_pre_key: key_pair_bytes(&device.signed_pre_key),
        signed_pre_key_id: i64::from(device.signed_pre_key_id),
        signed_pre_key_signature: device.signed_pre_key_signature.to_vec(),
        adv_secret_key: device.adv_secret_key.to_vec(),
        account: device
            .account
            .as_deref()
            .map(wacore::store::device::account_serde::to_bytes),
        push_name: device.push_name.clone(),
        app_version_primary: i64::from(device.app_version_primary),
        app_version_secondary: i64::from(device.app_version_secondary),
        app_version_tertiary: i64::from(device.app_version_tertiary),
        app_version_last_fetched_ms: device.app_version_last_fetched_ms,
        edge_routing_info: device.edge_routing_info.clone(),
        props_hash: device.props_hash.clone(),
        next_pre_key_id: i64::from(device.next_pre_key_id),
        first_unupload_pre_key_id: i64::from(device.first_unupload_pre_key_id),
        server_has_prekeys: device.server_has_prekeys,
        nct_salt: device.nct_salt.clone(),
        server_cert_chain,
        login_counter: device.login_counter,
        lid_migrated: device.lid_migrated,
        last_signed_pre_key_rotation_ms: device.last_signed_pre_key_rotation_ms,
        read_receipts_disabled: device.read_receipts_disabled,
    })
}

/// `INSERT` of a device row; with `upsert`, an existing row is overwritten.
fn insert_device_sql(upsert: bool) -> String {
    let columns = DEVICE_COLUMNS.join(", ");
    let placeholders: Vec<String> = (2..=DEVICE_COLUMNS.len() + 1)
        .map(|n| format!("${n}"))
        .collect();
    let mut sql = format!(
        "INSERT INTO wa_device (phone, {columns}) VALUES ($1, {})",
        placeholders.join(", ")
    );
    if upsert {
        let updates: Vec<String> = DEVICE_COLUMNS
            .iter()
            .map(|column| format!("{column} = excluded.{column}"))
            .collect();
        sql.push_str(" ON CONFLICT (phone) DO UPDATE SET ");
        sql.push_str(&updates.join(", "));
    }
    sql
}

impl PgBackend {
    async fn insert_device(
        &self,
        device: &CoreDevice,
        upsert: bool,
    ) -> std::result::Result<(), PgStoreError> {
        let v = device_values(device)?;
        self.write(
            &insert_device_sql(upsert),
            &[
                &self.phone(),
                &v.lid,
                &v.pn,
                &v.registration_id,
                &v.noise_key,
                &v.identity_key,
                &v.signed_pre_key,
                &v.signed_pre_key_id,
                &v.signed_pre_key_signature,
                &v.adv_secret_key,
                &v.account,
                &v.push_name,
                &v.app_version_primary,
                &v.app_version_secondary,
                &v.app_version_tertiary,
                &v.app_version_last_fetched_ms,
                &v.edge_routing_info,
                &v.props_hash,
                &v.next_pre_key_id,
                &v.first_unupload_pre_key_id,
                &v.server_has_prekeys,
                &v.nct_salt,
                &v.server_cert_chain,
                &v.login_counter,
                &v.lid_migrated,
                &v.last_signed_pre_key_rotation_ms,
                &v.read_receipts_disabled,
            ],
        )
        .await
        .map(drop)
    }
}

fn device_from(row: &Row) -> std::result::Result<CoreDevice, PgStoreError> {
    let lid: String = row.try_get("lid")?;
    let pn: String = row.try_get("pn")?;
    let signature: Vec<u8> = row.try_get("signed_pre_key_signature")?;
    let adv_secret_key: Vec<u8> = row.try_get("adv_secret_key")?;
    let account: Option<Vec<u8>> = row.try_get("account")?;
    let server_cert_chain: Option<String> = row.try_get("server_cert_chain")?;
    let u32_column = |column: &str| -> std::result::Result<u32, PgStoreError> {
        to_u32(row.try_get(column)?, column)
    };
    Ok(CoreDevice {
        // An unparsable JID reads as none, as in the SQLite store.
        pn: if pn.is_empty() { None } else { pn.parse().ok() },
        lid: if lid.is_empty() { None } else { lid.parse().ok() },
        registration_id: u32_column("registration_id")?,
        noise_key: key_pair_from(&row.try_get::<_, Vec<u8>>("noise_key")?, "noise key")?,
        identity_key: key_pair_from(&row.try_get::<_, Vec<u8>>("identity_key")?, "identity key")?,
        signed_pre_key: key_pair_from(
            &row.try_get::<_, Vec<u8>>("signed_pre_key")?,
            "signed pre-key",
        )?,
        signed_pre_key_id: u32_column("signed_pre_key_id")?,
        signed_pre_key_signature: signature.try_into().map_err(|_| {
            PgStoreError::Invalid("the signed pre-key signature is not 64 bytes".into())
        })?,
        adv_secret_key: adv_secret_key
            .try_into()
            .map_err(|_| PgStoreError::Invalid("the ADV secret key is not 32 bytes".into()))?,
        account: account
            .map(|bytes| {
                wacore::store::device::account_serde::from_bytes(&bytes)
                    .map(Arc::new)
                    .map_err(|e| PgStoreError::Invalid(format!("account: {e}")))
            })
            .transpose()?,
        push_name: row.try_get("push_name")?,
        app_version_primary: u32_column("app_version_primary")?,
        app_version_secondary: u32_column("app_version_secondary")?,
        app_version_tertiary: u32_column("app_version_tertiary")?,
        app_version_last_fetched_ms: row.try_get("app_version_last_fetched_ms")?,
        // Not persisted: set by the client at every start.
        device_props: Arc::new(wacore::store::device::DEVICE_PROPS.clone()),
        client_profile: wacore::client_profile::ClientProfile::web(),
        edge_routing_info: row.try_get("edge_routing_info")?,
        props_hash: row.try_get("props_hash")?,
        next_pre_key_id: u32_column("next_pre_key_id")?,
        first_unupload_pre_key_id: u32_column("first_unupload_pre_key_id")?,
        server_has_prekeys: row.try_get("server_has_prekeys")?,
        nct_salt: row.try_get("nct_salt")?,
        nct_salt_sync_seen: false,
        // A cache: an unreadable one costs one full handshake, not the session.
        server_cert_chain: server_cert_chain.and_then(|json| {
            serde_json::from_str::<CachedServerCertChain>(&json)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "the cached server cert chain is unreadable; dropping it");
                })
                .ok()
        }),
        login_counter: row.try_get("login_counter")?,
        lid_migrated: row.try_get("lid_migrated")?,
        last_signed_pre_key_rotation_ms: row.try_get("last_signed_pre_key_rotation_ms")?,
        read_receipts_disabled: row.try_get("read_receipts_disabled")?,
    })
}

#[async_trait]
impl DeviceStore for PgBackend {
    async fn save(&self, device: &CoreDevice) -> Result<()> {
        run(self.insert_device(device, true)).await
    }

    async fn load(&self) -> Result<Option<CoreDevice>> {
        run(async {
            let sql = format!(
                "SELECT {} FROM wa_device WHERE phone = $1",
                DEVICE_COLUMNS.join(", ")
            );
            let row = self.read_opt(&sql, &[&self.phone()]).await?;
            row.as_ref().map(device_from).transpose()
        })
        .await
    }

    async fn exists(&self) -> Result<bool> {
        run(async {
            let row = self
                .read_opt("SELECT 1 FROM wa_device WHERE phone = $1", &[&self.phone()])
                .await?;
            Ok(row.is_some())
        })
        .await
    }

    /// A fresh device (new keys) for the phone; fails when one exists, as the
    /// SQLite store does.
    async fn create(&self) -> Result<i32> {
        let device = CoreDevice::new();
        run(self.insert_device(&device, false)).await?;
        Ok(DEVICE_ROW_ID)
    }

    async fn resource_report(&self) -> StorageResourceReport {
        // The data lives in the database, not in this process.
        StorageResourceReport {
            memory_bytes: Some(0),
            ..StorageResourceReport::default()
        }
    }

    // `snapshot_db` keeps the trait's default (nothing): it copies a SQLite
    // file for debugging and has no meaning here.
}
