//! The store semantics whatsapp-rust relies on, as its SQLite store implements them.
//!
//! Each check takes any `Backend` and asserts what the SQLite store does
//! (read in whatsapp-rust-sqlite-storage 0.7): what an upsert keeps, what a
//! delete removes, what `None` means. The same checks run on both backends.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::Device;
use wacore::store::device::{CachedNoiseCert, CachedServerCertChain, account_serde};
use wacore::store::traits::{
    AppStateSyncKey, Backend, DeviceInfo, DeviceListRecord, LidPnMappingEntry, MsgSecretEntry,
    PendingInboundKey, PendingInboundRow, TcTokenEntry,
};

fn now() -> i64 {
    wacore::time::now_secs()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// What of a device the stores persist, comparable.
fn persisted(device: &Device) -> String {
    format!(
        "pn={:?} lid={:?} reg={} noise={:?}/{:?} identity={:?}/{:?} spk={:?}/{:?} spk_id={} sig={:?} \
         adv={:?} account={:?} push={} app={}.{}.{}@{} edge={:?} props={:?} next_pk={} first_unup={} \
         server_has={} salt={:?} cert={:?} login={} lid_migrated={} rotation={} rr_off={}",
        device.pn.as_ref().map(ToString::to_string),
        device.lid.as_ref().map(ToString::to_string),
        device.registration_id,
        device.noise_key.private_key.serialize(),
        device.noise_key.public_key.public_key_bytes(),
        device.identity_key.private_key.serialize(),
        device.identity_key.public_key.public_key_bytes(),
        device.signed_pre_key.private_key.serialize(),
        device.signed_pre_key.public_key.public_key_bytes(),
        device.signed_pre_key_id,
        device.signed_pre_key_signature,
        device.adv_secret_key,
        device.account.as_deref().map(account_serde::to_bytes),
        device.push_name,
        device.app_version_primary,
        device.app_version_secondary,
        device.app_version_tertiary,
        device.app_version_last_fetched_ms,
        device.edge_routing_info,
        device.props_hash,
        device.next_pre_key_id,
        device.first_unupload_pre_key_id,
        device.server_has_prekeys,
        device.nct_salt,
        device.server_cert_chain,
        device.login_counter,
        device.lid_migrated,
        device.last_signed_pre_key_rotation_ms,
        device.read_receipts_disabled,
    )
}

pub async fn device_is_absent_until_created(store: Arc<dyn Backend>) {
    assert!(!store.exists().await.unwrap());
    assert!(store.load().await.unwrap().is_none());

    assert_eq!(store.create().await.unwrap(), 1, "the phone's one device");
    assert!(store.exists().await.unwrap());
    let first = store.load().await.unwrap().expect("created, so loadable");
    let again = store.load().await.unwrap().expect("still there");
    assert_eq!(
        persisted(&first),
        persisted(&again),
        "create persisted its fresh keys"
    );
    assert!(first.pn.is_none() && first.lid.is_none() && first.account.is_none());

    assert!(
        store.create().await.is_err(),
        "a second create must not replace the keys"
    );
    let after = store.load().await.unwrap().expect("still there");
    assert_eq!(persisted(&first), persisted(&after));
}

pub async fn device_round_trips_every_persisted_field(store: Arc<dyn Backend>) {
    let mut device = Device::new();
    device.pn = "5511999990001:3@s.whatsapp.net".parse().ok();
    device.lid = "100000012345678:3@lid".parse().ok();
    assert!(device.pn.is_some() && device.lid.is_some());
    device.registration_id = 4_000_000_001;
    device.signed_pre_key_id = 77;
    device.signed_pre_key_signature = [5; 64];
    device.adv_secret_key = [6; 32];
    let account_bytes = [0x0a, 3, 1, 2, 3, 0x12, 2, 4, 5, 0x1a, 1, 6, 0x22, 2, 7, 8];
    device.account = Some(Arc::new(account_serde::from_bytes(&account_bytes).unwrap()));
    device.push_name = "Lila Tester".into();
    device.app_version_primary = 2;
    device.app_version_secondary = 3000;
    device.app_version_tertiary = 1_029_384_756;
    device.app_version_last_fetched_ms = 1_700_000_000_123;
    device.edge_routing_info = Some(vec![9, 8, 7]);
    device.props_hash = Some("props-hash".into());
    device.next_pre_key_id = 812;
    device.first_unupload_pre_key_id = 790;
    device.server_has_prekeys = true;
    device.nct_salt = Some(vec![1; 16]);
    device.server_cert_chain = Some(CachedServerCertChain {
        intermediate: CachedNoiseCert {
            key: [0xAB; 32],
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        },
        leaf: CachedNoiseCert {
            key: [0xCD; 32],
            not_before: 1_700_000_500,
            not_after: 1_899_999_500,
        },
    });
    device.login_counter = 42;
    device.lid_migrated = true;
    device.last_signed_pre_key_rotation_ms = 1_700_000_999_000;
    device.read_receipts_disabled = true;

    // save without create: an upsert.
    store.save(&device).await.unwrap();
    assert!(store.exists().await.unwrap());
    let loaded = store.load().await.unwrap().expect("saved");
    assert_eq!(persisted(&loaded), persisted(&device));

    // A later save overwrites every field, the optional ones to none too.
    device.pn = None;
    device.account = None;
    device.server_cert_chain = None;
    device.edge_routing_info = None;
    device.props_hash = None;
    device.nct_salt = None;
    device.push_name = String::new();
    device.login_counter = 43;
    store.save(&device).await.unwrap();
    let loaded = store.load().await.unwrap().expect("saved");
    assert_eq!(persisted(&loaded), persisted(&device));
}

pub async fn identity_keys(store: Arc<dyn Backend>) {
    let alice = "5511000000001@s.whatsapp.net";
    assert_eq!(store.load_identity(alice).await.unwrap(), None);
    store.put_identity(alice, [1; 32]).await.unwrap();
    assert_eq!(store.load_identity(alice).await.unwrap(), Some([1; 32]));
    store.put_identity(alice, [2; 32]).await.unwrap();
    assert_eq!(
        store.load_identity(alice).await.unwrap(),
        Some([2; 32]),
        "upsert"
    );

    let bob: Arc<str> = Arc::from("5511000000002:4@s.whatsapp.net");
    let carol: Arc<str> = Arc::from("100000000000003@lid");
    store
        .put_identities_batch(&[
            (Arc::clone(&bob), [3; 32]),
            (Arc::clone(&carol), [4; 32]),
            (Arc::from(alice), [5; 32]),
        ])
        .await
        .unwrap();
    assert_eq!(store.load_identity(&bob).await.unwrap(), Some([3; 32]));
    assert_eq!(store.load_identity(&carol).await.unwrap(), Some([4; 32]));
    assert_eq!(store.load_identity(alice).await.unwrap(), Some([5; 32]));

    // A key repeated in one batch ends with its last value.
    store
        .put_identities_batch(&[(Arc::from(alice), [6; 32]), (Arc::from(alice), [7; 32])])
        .await
        .unwrap();
    assert_eq!(store.load_identity(alice).await.unwrap(), Some([7; 32]));

    store.delete_identity(alice).await.unwrap();
    assert_eq!(store.load_identity(alice).await.unwrap(), None);
    assert_eq!(
        store.load_identity(&bob).await.unwrap(),
        Some([3; 32]),
        "only alice"
    );
    store
        .delete_identity("never-stored@s.whatsapp.net")
        .await
        .unwrap();
}

pub async fn sessions(store: Arc<dyn Backend>) {
    let address = "5511000000001.0";
    assert!(store.get_session(address).await.unwrap().is_none());
    assert!(!store.has_session(address).await.unwrap());

    store.put_session(address, b"record-1").await.unwrap();
    assert_eq!(
        store.get_session(address).await.unwrap().as_deref(),
        Some(&b"record-1"[..])
    );
    assert!(store.has_session(address).await.unwrap());
    store.put_session(address, b"record-2").await.unwrap();
    assert_eq!(
        store.get_session(address).await.unwrap().as_deref(),
        Some(&b"record-2"[..])
    );

    store
        .put_sessions_batch(&[
            (Arc::from("a.1"), Bytes::from_static(b"A")),
            (Arc::from(address), Bytes::from_static(b"record-3")),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_session("a.1").await.unwrap().as_deref(),
        Some(&b"A"[..])
    );
    assert_eq!(
        store.get_session(address).await.unwrap().as_deref(),
        Some(&b"record-3"[..])
    );

    store.delete_session(address).await.unwrap();
    assert!(store.get_session(address).await.unwrap().is_none());
    assert!(!store.has_session(address).await.unwrap());
    assert!(store.has_session("a.1").await.unwrap());
}

pub async fn signal_state_for_user(store: Arc<dyn Backend>) {
    assert!(!store.has_signal_state_for_user("5511").await.unwrap());
    store
        .put_session("5511:7@s.whatsapp.net", b"session")
        .await
        .unwrap();
    assert!(
        store.has_signal_state_for_user("5511").await.unwrap(),
        "user:dev@server"
    );
    assert!(
        !store.has_signal_state_for_user("551").await.unwrap(),
        "a prefix of the user is another user"
    );
    store.put_identity("7788@lid", [1; 32]).await.unwrap();
    assert!(
        store.has_signal_state_for_user("7788").await.unwrap(),
        "user@server"
    );
    assert!(!store.has_signal_state_for_user("778").await.unwrap());
    store.delete_session("5511:7@s.whatsapp.net").await.unwrap();
    assert!(!store.has_signal_state_for_user("5511").await.unwrap());
}

pub async fn prekeys(store: Arc<dyn Backend>) {
    assert_eq!(store.get_max_prekey_id().await.unwrap(), 0, "0 when none");
    assert!(store.load_prekey(1).await.unwrap().is_none());

    store.store_prekey(1, b"one", false).await.unwrap();
    store
        .store_prekeys_batch(
            &[
                (2, Bytes::from_static(b"two")),
                (300, Bytes::from_static(b"three hundred")),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_prekey(1).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.get_max_prekey_id().await.unwrap(), 300);
    store.store_prekey(1, b"one again", true).await.unwrap();
    assert_eq!(
        store.load_prekey(1).await.unwrap().as_deref(),
        Some(&b"one again"[..])
    );

    store
        .store_prekeys_batch(
            &[
                (2, Bytes::from_static(b"two, first")),
                (2, Bytes::from_static(b"two")),
            ],
            false,
        )
        .await
        .unwrap();
    let batch = store.load_prekeys_batch(&[300, 2, 999]).await.unwrap();
    let batch: Vec<(u32, Vec<u8>)> =
        sorted(batch.into_iter().map(|(id, k)| (id, k.to_vec())).collect());
    assert_eq!(
        batch,
        vec![(2, b"two".to_vec()), (300, b"three hundred".to_vec())],
        "only the keys that exist"
    );
    assert!(store.load_prekeys_batch(&[]).await.unwrap().is_empty());

    // A key consumed between the upload snapshot and its marking stays gone.
    store.remove_prekey(300).await.unwrap();
    store.mark_prekeys_uploaded(&[1, 2, 300]).await.unwrap();
    assert!(
        store.load_prekey(300).await.unwrap().is_none(),
        "not resurrected"
    );
    assert_eq!(store.get_max_prekey_id().await.unwrap(), 2);
    store.mark_prekeys_uploaded(&[]).await.unwrap();

    store.remove_prekey(1).await.unwrap();
    store.remove_prekey(2).await.unwrap();
    assert_eq!(store.get_max_prekey_id().await.unwrap(), 0);
}

pub async fn signed_prekeys(store: Arc<dyn Backend>) {
    assert!(store.load_signed_prekey(1).await.unwrap().is_none());
    assert!(store.load_all_signed_prekeys().await.unwrap().is_empty());
    store.store_signed_prekey(2, b"two").await.unwrap();
    store.store_signed_prekey(1, b"one").await.unwrap();
    store.store_signed_prekey(2, b"two'").await.unwrap();
    assert_eq!(
        store.load_signed_prekey(2).await.unwrap(),
        Some(b"two'".to_vec())
    );
    assert_eq!(
        sorted(store.load_all_signed_prekeys().await.unwrap()),
        vec![(1, b"one".to_vec()), (2, b"two'".to_vec())]
    );
    store.remove_signed_prekey(1).await.unwrap();
    assert_eq!(
        store.load_all_signed_prekeys().await.unwrap(),
        vec![(2, b"two'".to_vec())]
    );
}

pub async fn sender_keys(store: Arc<dyn Backend>) {
    let address = "120363000000000001@g.us::5511000000001::0";
    assert!(store.get_sender_key(address).await.unwrap().is_none());
    store.put_sender_key(address, b"k1").await.unwrap();
    store.put_sender_key(address, b"k2").await.unwrap();
    assert_eq!(
        store.get_sender_key(address).await.unwrap(),
        Some(b"k2".to_vec())
    );
    store
        .put_sender_keys_batch(&[
            (Arc::from(address), Bytes::from_static(b"k3")),
            (Arc::from("other"), Bytes::from_static(b"o")),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_sender_key(address).await.unwrap(),
        Some(b"k3".to_vec())
    );
    assert_eq!(
        store.get_sender_key("other").await.unwrap(),
        Some(b"o".to_vec())
    );
    store.delete_sender_key(address).await.unwrap();
    assert!(store.get_sender_key(address).await.unwrap().is_none());
    assert!(store.get_sender_key("other").await.unwrap().is_some());
}

fn sync_key(byte: u8, timestamp: i64) -> AppStateSyncKey {
    AppStateSyncKey {
        key_data: vec![byte; 32],
        fingerprint: vec![byte, 1, 2],
        timestamp,
    }
}

pub async fn app_state_sync_keys(store: Arc<dyn Backend>) {
    assert!(store.get_sync_key(b"k1").await.unwrap().is_none());
    assert!(store.get_latest_sync_key_id().await.unwrap().is_none());

    store.set_sync_key(&[0, 1], sync_key(1, 100)).await.unwrap();
    store.set_sync_key(&[0, 3], sync_key(3, 50)).await.unwrap();
    store.set_sync_key(&[0, 2], sync_key(2, 300)).await.unwrap();
    let key = store.get_sync_key(&[0, 1]).await.unwrap().expect("stored");
    assert_eq!(
        (key.key_data, key.fingerprint, key.timestamp),
        (vec![1; 32], vec![1, 1, 2], 100)
    );
    // "Latest" is the greatest key id bytewise, not the newest timestamp.
    assert_eq!(
        store.get_latest_sync_key_id().await.unwrap(),
        Some(vec![0, 3])
    );

    store.set_sync_key(&[0, 1], sync_key(9, 101)).await.unwrap();
    let key = store.get_sync_key(&[0, 1]).await.unwrap().expect("stored");
    assert_eq!((key.key_data, key.timestamp), (vec![9; 32], 101), "upsert");

    // A key that is not 32 bytes is treated as absent, and skipped as latest.
    let short = AppStateSyncKey {
        key_data: vec![7; 16],
        fingerprint: vec![],
        timestamp: 1,
    };
    store.set_sync_key(&[0, 9], short).await.unwrap();
    assert!(store.get_sync_key(&[0, 9]).await.unwrap().is_none());
    assert_eq!(
        store.get_latest_sync_key_id().await.unwrap(),
        Some(vec![0, 3])
    );
}

pub async fn app_state_versions(store: Arc<dyn Backend>) {
    let absent = store.get_version("regular").await.unwrap();
    assert_eq!(absent.version, 0);
    assert_eq!(absent.hash, [0; 128]);
    assert!(absent.index_value_map.is_empty() && !absent.mac_mismatch_fatal);

    let mut hash = [0u8; 128];
    hash[0] = 0xFF;
    hash[127] = 0x11;
    let state = HashState {
        version: 42,
        hash,
        index_value_map: HashMap::from([
            ("idx-a".to_string(), vec![1, 2, 3]),
            ("idx-b".to_string(), vec![]),
        ]),
        mac_mismatch_fatal: true,
    };
    store.set_version("regular", state.clone()).await.unwrap();
    let loaded = store.get_version("regular").await.unwrap();
    assert_eq!(loaded.version, 42);
    assert_eq!(loaded.hash, hash);
    assert_eq!(loaded.index_value_map, state.index_value_map);
    assert!(loaded.mac_mismatch_fatal);
    assert_eq!(
        store.get_version("critical_block").await.unwrap().version,
        0
    );

    let next = HashState {
        version: 43,
        index_value_map: HashMap::new(),
        mac_mismatch_fatal: false,
        ..state
    };
    store.set_version("regular", next).await.unwrap();
    let loaded = store.get_version("regular").await.unwrap();
    assert_eq!(loaded.version, 43);
    assert!(
        loaded.index_value_map.is_empty() && !loaded.mac_mismatch_fatal,
        "replaced"
    );
}

fn mac(index: u8, value: u8) -> AppStateMutationMAC {
    AppStateMutationMAC {
        index_mac: vec![index; 32],
        value_mac: vec![value; 32],
    }
}

pub async fn mutation_macs(store: Arc<dyn Backend>) {
    store.put_mutation_macs("regular", 1, &[]).await.unwrap();
    assert!(
        store
            .get_mutation_mac("regular", &[1; 32])
            .await
            .unwrap()
            .is_none()
    );

    store
        .put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20)])
        .await
        .unwrap();
    store
        .put_mutation_macs("regular_low", 1, &[mac(1, 99)])
        .await
        .unwrap();
    assert_eq!(
        store.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        Some(vec![10; 32])
    );
    assert_eq!(
        store
            .get_mutation_mac("regular_low", &[1; 32])
            .await
            .unwrap(),
        Some(vec![99; 32]),
        "collections are separate"
    );
    store
        .put_mutation_macs("regular", 2, &[mac(1, 11)])
        .await
        .unwrap();
    assert_eq!(
        store.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        Some(vec![11; 32]),
        "upsert"
    );

    let found = store
        .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
        .await
        .unwrap();
    assert_eq!(
        found,
        HashMap::from([([1; 32], vec![11; 32]), ([2; 32], vec![20; 32])])
    );
    assert!(
        store
            .get_mutation_macs("regular", &[])
            .await
            .unwrap()
            .is_empty()
    );

    store
        .delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    store.delete_mutation_macs("regular", &[]).await.unwrap();
    assert!(
        store
            .get_mutation_mac("regular", &[1; 32])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_mutation_mac("regular", &[2; 32])
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_mutation_mac("regular_low", &[1; 32])
            .await
            .unwrap()
            .is_some()
    );

    store.clear_mutation_macs("regular").await.unwrap();
    assert!(
        store
            .get_mutation_mac("regular", &[2; 32])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_mutation_mac("regular_low", &[1; 32])
            .await
            .unwrap()
            .is_some(),
        "clear wipes only the named collection"
    );
}

pub async fn sender_key_devices(store: Arc<dyn Backend>) {
    let group = "120363000000000001@g.us";
    let other = "120363000000000002@g.us";
    assert!(
        store
            .get_sender_key_devices(group)
            .await
            .unwrap()
            .is_empty()
    );
    store.set_sender_key_status(group, &[]).await.unwrap();
    store
        .set_sender_key_status(group, &[("a:1@s.whatsapp.net", true), ("b:2@lid", false)])
        .await
        .unwrap();
    store
        .set_sender_key_status(other, &[("a:1@s.whatsapp.net", true)])
        .await
        .unwrap();
    store
        .set_sender_key_status(group, &[("b:2@lid", true)])
        .await
        .unwrap();
    assert_eq!(
        sorted(store.get_sender_key_devices(group).await.unwrap()),
        vec![
            ("a:1@s.whatsapp.net".to_string(), true),
            ("b:2@lid".to_string(), true)
        ]
    );

    store
        .delete_sender_key_device_rows(&["a:1@s.whatsapp.net"])
        .await
        .unwrap();
    store.delete_sender_key_device_rows(&[]).await.unwrap();
    assert_eq!(
        store.get_sender_key_devices(group).await.unwrap(),
        vec![("b:2@lid".to_string(), true)]
    );
    assert!(
        store
            .get_sender_key_devices(other)
            .await
            .unwrap()
            .is_empty(),
        "the device's rows go in every group"
    );

    store
        .set_sender_key_status(other, &[("c:3@lid", false)])
        .await
        .unwrap();
    store.clear_sender_key_devices(group).await.unwrap();
    assert!(
        store
            .get_sender_key_devices(group)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_sender_key_devices(other).await.unwrap().len(), 1);
    store.clear_all_sender_key_devices().await.unwrap();
    assert!(
        store
            .get_sender_key_devices(other)
            .await
            .unwrap()
            .is_empty()
    );
}

fn mapping(lid: &str, pn: &str, created: i64, updated: i64, source: &str) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: created,
        updated_at: updated,
        learning_source: source.into(),
    }
}

fn mapping_key(entry: &LidPnMappingEntry) -> (String, String, i64, i64, String) {
    (
        entry.lid.clone(),
        entry.phone_number.clone(),
        entry.created_at,
        entry.updated_at,
        entry.learning_source.clone(),
    )
}

pub async fn lid_pn_mappings(store: Arc<dyn Backend>) {
    // The SQLite store ties mappings to the device row by a foreign key; the
    // client always creates that row first.
    store.create().await.unwrap();
    assert!(store.get_lid_mapping("100").await.unwrap().is_none());
    assert!(store.get_pn_mapping("5511").await.unwrap().is_none());
    store
        .put_lid_mapping(&mapping("100", "5511", 10, 10, "usync"))
        .await
        .unwrap();
    store
        .put_lid_mappings(&[
            mapping("200", "5511", 20, 30, "peer_pn_message"),
            mapping("300", "5522", 5, 5, "usync"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_lid_mapping("100")
            .await
            .unwrap()
            .as_ref()
            .map(mapping_key),
        Some(mapping_key(&mapping("100", "5511", 10, 10, "usync")))
    );
    // By phone number: the most recently updated LID.
    assert_eq!(
        store.get_pn_mapping("5511").await.unwrap().map(|m| m.lid),
        Some("200".into())
    );

    // An update keeps when the mapping was first learned.
    store
        .put_lid_mapping(&mapping("100", "5533", 99, 40, "history"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_lid_mapping("100")
            .await
            .unwrap()
            .as_ref()
            .map(mapping_key),
        Some(mapping_key(&mapping("100", "5533", 10, 40, "history")))
    );
    assert_eq!(
        store.get_pn_mapping("5511").await.unwrap().map(|m| m.lid),
        Some("200".into())
    );
    assert_eq!(
        store.get_pn_mapping("5533").await.unwrap().map(|m| m.lid),
        Some("100".into())
    );

    let all = sorted(
        store
            .get_all_lid_mappings()
            .await
            .unwrap()
            .iter()
            .map(mapping_key)
            .collect(),
    );
    assert_eq!(
        all,
        vec![
            mapping_key(&mapping("100", "5533", 10, 40, "history")),
            mapping_key(&mapping("200", "5511", 20, 30, "peer_pn_message")),
            mapping_key(&mapping("300", "5522", 5, 5, "usync")),
        ]
    );
    store.put_lid_mappings(&[]).await.unwrap();
}

pub async fn base_keys(store: Arc<dyn Backend>) {
    let address = "5511.0";
    assert!(
        !store
            .has_same_base_key(address, "m1", b"key")
            .await
            .unwrap(),
        "none saved"
    );
    store.save_base_key(address, "m1", b"key").await.unwrap();
    assert!(
        store
            .has_same_base_key(address, "m1", b"key")
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_same_base_key(address, "m1", b"other")
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_same_base_key(address, "m2", b"key")
            .await
            .unwrap()
    );
    store.save_base_key(address, "m1", b"other").await.unwrap();
    assert!(
        store
            .has_same_base_key(address, "m1", b"other")
            .await
            .unwrap(),
        "upsert"
    );
    store.delete_base_key(address, "m1").await.unwrap();
    assert!(
        !store
            .has_same_base_key(address, "m1", b"other")
            .await
            .unwrap()
    );
}

fn device_key(record: &DeviceListRecord) -> String {
    format!(
        "{} {:?} {} {:?} {:?}",
        record.user,
        record
            .devices
            .iter()
            .map(|d| (d.device_id, d.key_index, d.is_hosted))
            .collect::<Vec<_>>(),
        record.timestamp,
        record.phash,
        record.raw_id
    )
}

pub async fn device_registry(store: Arc<dyn Backend>) {
    assert!(store.get_devices("5511").await.unwrap().is_none());
    let first = DeviceListRecord {
        user: "5511".into(),
        devices: vec![
            DeviceInfo::new(0, None),
            DeviceInfo::new(3, Some(7)).with_hosting(true),
        ],
        timestamp: 1_700_000_000,
        phash: Some("2:abc".into()),
        raw_id: Some(12),
    };
    store.update_device_list(first.clone()).await.unwrap();
    assert_eq!(
        store
            .get_devices("5511")
            .await
            .unwrap()
            .as_ref()
            .map(device_key),
        Some(device_key(&first))
    );

    let second = DeviceListRecord {
        devices: vec![DeviceInfo::new(0, None)],
        timestamp: 1_700_000_100,
        phash: None,
        raw_id: None,
        ..first.clone()
    };
    let other = DeviceListRecord {
        user: "100@lid".into(),
        ..first.clone()
    };
    store
        .update_device_lists(vec![second.clone(), other.clone()])
        .await
        .unwrap();
    store.update_device_lists(vec![]).await.unwrap();
    assert_eq!(
        store
            .get_devices("5511")
            .await
            .unwrap()
            .as_ref()
            .map(device_key),
        Some(device_key(&second)),
        "replaced whole, phash and raw id to none"
    );
    assert!(store.get_devices("100@lid").await.unwrap().is_some());

    store.delete_devices("5511").await.unwrap();
    assert!(store.get_devices("5511").await.unwrap().is_none());
    assert!(store.get_devices("100@lid").await.unwrap().is_some());
}

pub async fn group_metadata(store: Arc<dyn Backend>) {
    let group = "120363000000000001@g.us";
    assert!(store.get_group_metadata(group).await.unwrap().is_none());
    store.put_group_metadata(group, b"info-1").await.unwrap();
    store.put_group_metadata(group, b"info-2").await.unwrap();
    assert_eq!(
        store.get_group_metadata(group).await.unwrap(),
        Some(b"info-2".to_vec())
    );
    store.delete_group_metadata(group).await.unwrap();
    assert!(store.get_group_metadata(group).await.unwrap().is_none());
}

fn tc(token: &[u8], token_timestamp: i64, sender_timestamp: Option<i64>) -> TcTokenEntry {
    TcTokenEntry {
        token: token.to_vec(),
        token_timestamp,
        sender_timestamp,
    }
}

fn tc_key(entry: &TcTokenEntry) -> (Vec<u8>, i64, Option<i64>) {
    (
        entry.token.clone(),
        entry.token_timestamp,
        entry.sender_timestamp,
    )
}

/// The stored token of `jid`, comparable.
async fn tc_of(store: &Arc<dyn Backend>, jid: &str) -> Option<(Vec<u8>, i64, Option<i64>)> {
    store.get_tc_token(jid).await.unwrap().as_ref().map(tc_key)
}

pub async fn tc_tokens(store: Arc<dyn Backend>) {
    let jid = "100@lid";
    assert!(store.get_tc_token(jid).await.unwrap().is_none());
    store
        .put_tc_token(jid, &tc(b"t1", 100, Some(90)))
        .await
        .unwrap();
    assert_eq!(
        tc_of(&store, jid).await,
        Some(tc_key(&tc(b"t1", 100, Some(90))))
    );
    store.put_tc_token(jid, &tc(b"t0", 50, None)).await.unwrap();
    assert_eq!(
        tc_of(&store, jid).await,
        Some(tc_key(&tc(b"t0", 50, None))),
        "put overwrites everything, older or not"
    );
    store
        .put_tc_token("200@lid", &tc(b"t2", 1, None))
        .await
        .unwrap();
    assert_eq!(
        sorted(store.get_all_tc_token_jids().await.unwrap()),
        vec!["100@lid".to_string(), "200@lid".to_string()]
    );
    store.delete_tc_token(jid).await.unwrap();
    assert!(store.get_tc_token(jid).await.unwrap().is_none());
    assert_eq!(
        store.get_all_tc_token_jids().await.unwrap(),
        vec!["200@lid".to_string()]
    );
}

pub async fn tc_token_writers_keep_each_others_field(store: Arc<dyn Backend>) {
    // The sender bucket on a contact with no token: a byte-less placeholder.
    store
        .touch_tc_token_sender_timestamp("a@lid", 100)
        .await
        .unwrap();
    assert_eq!(tc_of(&store, "a@lid").await, Some((vec![], 100, Some(100))));
    // A placeholder never blocks the first real token, even an older one;
    // the sender bucket stays.
    store
        .store_received_tc_token("a@lid", b"real", 50)
        .await
        .unwrap();
    assert_eq!(
        tc_of(&store, "a@lid").await,
        Some((b"real".to_vec(), 50, Some(100)))
    );
    // Newer wins; an older received token is dropped; equal time replaces.
    store
        .store_received_tc_token("a@lid", b"stale", 40)
        .await
        .unwrap();
    assert_eq!(
        store.get_tc_token("a@lid").await.unwrap().map(|e| e.token),
        Some(b"real".to_vec())
    );
    store
        .store_received_tc_token("a@lid", b"same-time", 50)
        .await
        .unwrap();
    assert_eq!(
        store.get_tc_token("a@lid").await.unwrap().map(|e| e.token),
        Some(b"same-time".to_vec())
    );
    // The sender bucket only moves forward and leaves the token alone.
    store
        .touch_tc_token_sender_timestamp("a@lid", 90)
        .await
        .unwrap();
    store
        .touch_tc_token_sender_timestamp("a@lid", 150)
        .await
        .unwrap();
    assert_eq!(
        tc_of(&store, "a@lid").await,
        Some((b"same-time".to_vec(), 50, Some(150)))
    );
    // A received token on a new contact has no sender bucket.
    store
        .store_received_tc_token("b@lid", b"fresh", 10)
        .await
        .unwrap();
    assert_eq!(
        tc_of(&store, "b@lid").await,
        Some((b"fresh".to_vec(), 10, None))
    );
}

pub async fn tc_token_expiry(store: Arc<dyn Backend>) {
    // Removed only when the token is expired or absent AND the sender
    // bucket is expired or absent.
    store
        .put_tc_token("old-token-no-sender", &tc(b"t", 10, None))
        .await
        .unwrap();
    store
        .put_tc_token("old-token-old-sender", &tc(b"t", 10, Some(10)))
        .await
        .unwrap();
    store
        .put_tc_token("old-token-new-sender", &tc(b"t", 10, Some(500)))
        .await
        .unwrap();
    store
        .put_tc_token("new-token-no-sender", &tc(b"t", 500, None))
        .await
        .unwrap();
    store
        .put_tc_token("placeholder-old-sender", &tc(b"", 500, Some(10)))
        .await
        .unwrap();
    store
        .put_tc_token("placeholder-new-sender", &tc(b"", 500, Some(500)))
        .await
        .unwrap();
    let removed = store.delete_expired_tc_tokens(100, 100).await.unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        sorted(store.get_all_tc_token_jids().await.unwrap()),
        vec![
            "new-token-no-sender".to_string(),
            "old-token-new-sender".to_string(),
            "placeholder-new-sender".to_string(),
        ]
    );
}

pub async fn sent_messages(store: Arc<dyn Backend>) {
    let chat = "5511@s.whatsapp.net";
    assert!(store.take_sent_message(chat, "m1").await.unwrap().is_none());
    store
        .store_sent_message(chat, "m1", b"payload-1")
        .await
        .unwrap();
    store
        .store_sent_message(chat, "m1", b"payload-1b")
        .await
        .unwrap();
    store
        .store_sent_message(chat, "m2", b"payload-2")
        .await
        .unwrap();
    assert_eq!(
        store.take_sent_message(chat, "m1").await.unwrap(),
        Some(b"payload-1b".to_vec())
    );
    assert!(
        store.take_sent_message(chat, "m1").await.unwrap().is_none(),
        "a take consumes it"
    );
    assert!(
        store
            .take_sent_message("other@s.whatsapp.net", "m2")
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        store
            .delete_expired_sent_messages(now() - 3600)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_expired_sent_messages(now() + 3600)
            .await
            .unwrap(),
        1
    );
    assert!(store.take_sent_message(chat, "m2").await.unwrap().is_none());
}

pub async fn pending_inbound(store: Arc<dyn Backend>) {
    let (chat, sender) = ("g@g.us", "5511@s.whatsapp.net");
    assert!(
        store
            .get_pending_inbound(chat, sender, "1")
            .await
            .unwrap()
            .is_none()
    );
    store
        .store_pending_inbound(chat, sender, "1", b"m1")
        .await
        .unwrap();
    store
        .store_pending_inbound(chat, sender, "1", b"m1b")
        .await
        .unwrap();
    assert_eq!(
        store.get_pending_inbound(chat, sender, "1").await.unwrap(),
        Some(b"m1b".to_vec()),
        "a read leaves it, a re-store replaces it"
    );
    assert!(
        store
            .get_pending_inbound(chat, "other", "1")
            .await
            .unwrap()
            .is_none(),
        "scoped by chat, sender and id"
    );
    store
        .store_pending_inbound_batch(&[
            PendingInboundRow {
                chat,
                sender,
                id: "2",
                message: b"m2",
            },
            PendingInboundRow {
                chat,
                sender,
                id: "3",
                message: b"m3",
            },
        ])
        .await
        .unwrap();
    store.store_pending_inbound_batch(&[]).await.unwrap();
    assert_eq!(
        store.get_pending_inbound(chat, sender, "3").await.unwrap(),
        Some(b"m3".to_vec())
    );

    store
        .delete_pending_inbound(chat, sender, "1")
        .await
        .unwrap();
    assert!(
        store
            .get_pending_inbound(chat, sender, "1")
            .await
            .unwrap()
            .is_none()
    );
    store
        .delete_pending_inbound_batch(&[PendingInboundKey {
            chat,
            sender,
            id: "2",
        }])
        .await
        .unwrap();
    store.delete_pending_inbound_batch(&[]).await.unwrap();
    assert!(
        store
            .get_pending_inbound(chat, sender, "2")
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        store
            .delete_expired_pending_inbound(now() - 3600)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_expired_pending_inbound(now() + 3600)
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .get_pending_inbound(chat, sender, "3")
            .await
            .unwrap()
            .is_none()
    );
}

fn secret_entry(msg_id: &str, byte: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from("5511@s.whatsapp.net"),
        sender: Arc::from("5522@s.whatsapp.net"),
        msg_id: Arc::from(msg_id),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

pub async fn msg_secrets(store: Arc<dyn Backend>) {
    let (chat, sender) = ("5511@s.whatsapp.net", "5522@s.whatsapp.net");
    assert!(
        store
            .get_msg_secret(chat, sender, "m1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.put_msg_secrets(vec![]).await.unwrap(), 0);

    store
        .put_msg_secret(chat, sender, "m1", &[1; 32])
        .await
        .unwrap();
    assert_eq!(
        store.get_msg_secret(chat, sender, "m1").await.unwrap(),
        Some(vec![1; 32])
    );
    assert_eq!(
        store
            .get_msg_secret_with_ts(chat, sender, "m1")
            .await
            .unwrap(),
        Some((vec![1; 32], 0))
    );
    assert!(
        store
            .get_msg_secret(chat, "someone-else", "m1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_msg_secret("other-chat", sender, "m1")
            .await
            .unwrap()
            .is_none()
    );

    let stored = store
        .put_msg_secrets(vec![
            secret_entry("m2", 2, 1000, 500),
            secret_entry("m3", 3, 2000, 0),
            secret_entry("m4", 4, 3000, 0),
        ])
        .await
        .unwrap();
    assert_eq!(stored, 3);

    // On conflict: the later deadline wins and 0 (never) beats any; the later
    // parent time wins and 0 (unknown) never clobbers a known one; the secret
    // is replaced.
    store
        .put_msg_secrets(vec![
            secret_entry("m2", 22, 900, 0),
            secret_entry("m3", 33, 0, 700),
            secret_entry("m1", 11, 100, 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_msg_secret_with_ts(chat, sender, "m2")
            .await
            .unwrap(),
        Some((vec![22; 32], 500))
    );
    assert_eq!(
        store
            .get_msg_secret_with_ts(chat, sender, "m3")
            .await
            .unwrap(),
        Some((vec![33; 32], 700))
    );

    // A key repeated in one batch merges row after row.
    let stored = store
        .put_msg_secrets(vec![
            secret_entry("m5", 5, 5000, 10),
            secret_entry("m5", 55, 4000, 0),
        ])
        .await
        .unwrap();
    assert_eq!(stored, 2, "rows written, a repeat counted again");
    assert_eq!(
        store
            .get_msg_secret_with_ts(chat, sender, "m5")
            .await
            .unwrap(),
        Some((vec![55; 32], 10))
    );

    // Deadlines: m1 never (0 kept), m2 at 1000, m3 never now, m4 at 3000,
    // m5 at 5000.
    assert_eq!(store.delete_expired_msg_secrets(999).await.unwrap(), 0);
    assert_eq!(
        store.delete_expired_msg_secrets(1000).await.unwrap(),
        1,
        "at the deadline"
    );
    assert!(
        store
            .get_msg_secret(chat, sender, "m2")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.delete_expired_msg_secrets(4999).await.unwrap(),
        1,
        "m4, not m5"
    );
    assert_eq!(store.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 1);
    assert!(
        store
            .get_msg_secret(chat, sender, "m4")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_msg_secret(chat, sender, "m1").await.unwrap(),
        Some(vec![11; 32])
    );
    assert_eq!(
        store.get_msg_secret(chat, sender, "m3").await.unwrap(),
        Some(vec![33; 32])
    );
}
