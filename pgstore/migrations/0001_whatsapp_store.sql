-- Version 1: the phone leases and whatsapp-rust's store (one row set per phone).
--
-- Mirrors whatsapp-rust-sqlite-storage 0.7's tables, with its `device_id`
-- column replaced by `phone` (the per-phone SQLite file became a column).
-- Every table holding a phone's state has a `phone` column that leads its
-- primary key: `delete_phone` finds the tables by that column.

CREATE TABLE leases (
    phone text PRIMARY KEY,
    node_id text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
-- Epochs come from one sequence, so a phone's epochs only grow, even after
-- its lease row was deleted and claimed again.
CREATE SEQUENCE lease_epochs;

CREATE TABLE wa_device (
    phone text PRIMARY KEY,
    lid text NOT NULL,
    pn text NOT NULL,
    registration_id bigint NOT NULL,
    noise_key bytea NOT NULL,
    identity_key bytea NOT NULL,
    signed_pre_key bytea NOT NULL,
    signed_pre_key_id bigint NOT NULL,
    signed_pre_key_signature bytea NOT NULL,
    adv_secret_key bytea NOT NULL,
    account bytea,
    push_name text NOT NULL,
    app_version_primary bigint NOT NULL,
    app_version_secondary bigint NOT NULL,
    app_version_tertiary bigint NOT NULL,
    app_version_last_fetched_ms bigint NOT NULL,
    edge_routing_info bytea,
    props_hash text,
    next_pre_key_id bigint NOT NULL,
    first_unupload_pre_key_id bigint NOT NULL,
    server_has_prekeys boolean NOT NULL,
    nct_salt bytea,
    -- JSON of wacore's CachedServerCertChain (a cache: undecodable = absent).
    server_cert_chain text,
    login_counter integer NOT NULL,
    lid_migrated boolean NOT NULL,
    last_signed_pre_key_rotation_ms bigint NOT NULL,
    read_receipts_disabled boolean NOT NULL
);

CREATE TABLE wa_identities (
    phone text NOT NULL,
    address text NOT NULL,
    key bytea NOT NULL,
    PRIMARY KEY (phone, address)
);

CREATE TABLE wa_sessions (
    phone text NOT NULL,
    address text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (phone, address)
);

CREATE TABLE wa_prekeys (
    phone text NOT NULL,
    id bigint NOT NULL,
    key bytea NOT NULL,
    uploaded boolean NOT NULL,
    PRIMARY KEY (phone, id)
);

CREATE TABLE wa_signed_prekeys (
    phone text NOT NULL,
    id bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (phone, id)
);

CREATE TABLE wa_sender_keys (
    phone text NOT NULL,
    address text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (phone, address)
);

CREATE TABLE wa_app_state_keys (
    phone text NOT NULL,
    key_id bytea NOT NULL,
    key_data bytea NOT NULL,
    fingerprint bytea NOT NULL,
    key_timestamp bigint NOT NULL,
    PRIMARY KEY (phone, key_id)
);

CREATE TABLE wa_app_state_versions (
    phone text NOT NULL,
    name text NOT NULL,
    version bigint NOT NULL,
    hash bytea NOT NULL,
    -- HashState.index_value_map as two parallel arrays (key i ↔ value i).
    index_keys text[] NOT NULL,
    index_values bytea[] NOT NULL,
    mac_mismatch_fatal boolean NOT NULL,
    PRIMARY KEY (phone, name)
);

CREATE TABLE wa_app_state_mutation_macs (
    phone text NOT NULL,
    name text NOT NULL,
    index_mac bytea NOT NULL,
    version bigint NOT NULL,
    value_mac bytea NOT NULL,
    PRIMARY KEY (phone, name, index_mac)
);

CREATE TABLE wa_sender_key_devices (
    phone text NOT NULL,
    group_jid text NOT NULL,
    device_jid text NOT NULL,
    has_key boolean NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (phone, group_jid, device_jid)
);
CREATE INDEX wa_sender_key_devices_device ON wa_sender_key_devices (phone, device_jid);

CREATE TABLE wa_lid_pn_mapping (
    phone text NOT NULL,
    lid text NOT NULL,
    phone_number text NOT NULL,
    created_at bigint NOT NULL,
    learning_source text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (phone, lid)
);
CREATE INDEX wa_lid_pn_mapping_pn ON wa_lid_pn_mapping (phone, phone_number);

CREATE TABLE wa_base_keys (
    phone text NOT NULL,
    address text NOT NULL,
    message_id text NOT NULL,
    base_key bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (phone, address, message_id)
);

CREATE TABLE wa_device_registry (
    phone text NOT NULL,
    user_id text NOT NULL,
    -- JSON of Vec<DeviceInfo>, as the SQLite store keeps it.
    devices_json text NOT NULL,
    record_timestamp bigint NOT NULL,
    phash text,
    raw_id bigint,
    updated_at bigint NOT NULL,
    PRIMARY KEY (phone, user_id)
);

CREATE TABLE wa_group_metadata (
    phone text NOT NULL,
    group_jid text NOT NULL,
    info bytea NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (phone, group_jid)
);

CREATE TABLE wa_tc_tokens (
    phone text NOT NULL,
    jid text NOT NULL,
    token bytea NOT NULL,
    token_timestamp bigint NOT NULL,
    sender_timestamp bigint,
    updated_at bigint NOT NULL,
    PRIMARY KEY (phone, jid)
);

CREATE TABLE wa_sent_messages (
    phone text NOT NULL,
    chat_jid text NOT NULL,
    message_id text NOT NULL,
    payload bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (phone, chat_jid, message_id)
);
CREATE INDEX wa_sent_messages_created ON wa_sent_messages (phone, created_at);

CREATE TABLE wa_pending_inbound (
    phone text NOT NULL,
    chat text NOT NULL,
    sender text NOT NULL,
    id text NOT NULL,
    message bytea NOT NULL,
    inserted_at bigint NOT NULL,
    PRIMARY KEY (phone, chat, sender, id)
);
CREATE INDEX wa_pending_inbound_inserted ON wa_pending_inbound (phone, inserted_at);

CREATE TABLE wa_msg_secrets (
    phone text NOT NULL,
    chat text NOT NULL,
    sender text NOT NULL,
    msg_id text NOT NULL,
    secret bytea NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    message_ts bigint NOT NULL,
    PRIMARY KEY (phone, chat, sender, msg_id)
);
CREATE INDEX wa_msg_secrets_expires ON wa_msg_secrets (phone, expires_at);
