//! App-state (syncd) patches the simulated phone has "written": its push name in
//! `critical_block` and its address book in `critical_unblock_low`, encrypted and
//! MAC'd with the app-state key it shared with the companion, exactly as the
//! client verifies them.

use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::appstate::encode_record;
use whatsapp_rust::wacore::appstate::expand_app_state_keys;
use whatsapp_rust::wacore::appstate::hash::{HashState, generate_patch_mac};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::error::SimError;

/// One mutation to encode: its index (a JSON array) and value.
pub struct Mutation {
    pub index: Vec<String>,
    pub value: wa::SyncActionValue,
    pub version: i32,
}

pub fn push_name(name: &str) -> Mutation {
    Mutation {
        index: vec!["setting_pushName".to_string()],
        value: wa::SyncActionValue {
            timestamp: Some(whatsapp_rust::wacore::time::now_millis()),
            push_name_setting: MessageField::some(wa::sync_action_value::PushNameSetting {
                name: Some(name.to_string()),
            }),
            ..Default::default()
        },
        version: 1,
    }
}

pub fn contact(jid: &str, name: &str) -> Mutation {
    Mutation {
        index: vec!["contact".to_string(), jid.to_string()],
        value: wa::SyncActionValue {
            timestamp: Some(whatsapp_rust::wacore::time::now_millis()),
            contact_action: MessageField::some(wa::sync_action_value::ContactAction {
                full_name: Some(name.to_string()),
                first_name: name.split_whitespace().next().map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        version: 2,
    }
}

/// The encoded `SyncdPatch` taking `collection` from version 0 to 1.
pub fn first_patch(
    collection: &str,
    key_id: &[u8],
    key_data: &[u8],
    mutations: &[Mutation],
) -> Result<Vec<u8>, SimError> {
    use whatsapp_rust::buffa::Message as _;
    let keys = expand_app_state_keys(key_data);
    let mut encoded = Vec::with_capacity(mutations.len());
    for m in mutations {
        let index = serde_json::to_vec(&m.index)
            .map_err(|e| SimError::Protocol(format!("app-state index: {e}")))?;
        let iv: [u8; 16] = rand::random();
        let (mutation, _value_mac) = encode_record(
            wa::syncd_mutation::SyncdOperation::SET,
            &index,
            &m.value,
            &keys,
            key_id,
            &iv,
            m.version,
        );
        encoded.push(mutation);
    }
    let mut state = HashState::default();
    let (_, hashed) = state.update_hash(&encoded, |_, _| Ok(None));
    hashed.map_err(|e| SimError::Protocol(format!("app-state hash: {e}")))?;
    state.version = 1;
    let mut patch = wa::SyncdPatch {
        version: MessageField::some(wa::SyncdVersion { version: Some(1) }),
        snapshot_mac: Some(state.generate_snapshot_mac(collection, &keys.snapshot_mac)),
        key_id: MessageField::some(wa::KeyId {
            id: Some(key_id.to_vec()),
        }),
        mutations: encoded,
        ..Default::default()
    };
    // The patch MAC covers the snapshot MAC, so it is computed last.
    patch.patch_mac = Some(generate_patch_mac(&patch, collection, &keys.patch_mac, 1));
    Ok(patch.encode_to_vec())
}
