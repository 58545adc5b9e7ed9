//! The same store checks on whatsapp-rust's SQLite store and on `PgBackend`.
//!
//! `conformance!` turns each check of `checks.rs` into one test per backend:
//! `sqlite::<check>` on a fresh SQLite file, `postgres::<check>` on a fresh
//! phone of a throwaway PostgreSQL server. A check that passes on SQLite and
//! fails on PostgreSQL is a place where the two stores differ.

mod checks;
#[path = "../support/mod.rs"]
mod support;

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let (_dir, store) = crate::support::sqlite_store().await;
                    crate::checks::$check(store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let phone = crate::support::pg_phone(stringify!($check)).await;
                    crate::checks::$check(phone.backend).await;
                }
            )*
        }
    };
}

conformance!(
    device_is_absent_until_created,
    device_round_trips_every_persisted_field,
    identity_keys,
    sessions,
    signal_state_for_user,
    prekeys,
    signed_prekeys,
    sender_keys,
    app_state_sync_keys,
    app_state_versions,
    mutation_macs,
    sender_key_devices,
    lid_pn_mappings,
    base_keys,
    device_registry,
    group_metadata,
    tc_tokens,
    tc_token_writers_keep_each_others_field,
    tc_token_expiry,
    sent_messages,
    pending_inbound,
    msg_secrets,
);
