//! A phone's whatsapp-rust SQLite store (a single node's `session.db`) moved into PostgreSQL.

mod support;

use lila_pgstore::import::{ImportError, import_sqlite_store};
use support::{fill_every_table, pg_phone, read_back_filled, rows_of, sqlite_store};

#[tokio::test]
async fn a_sqlite_store_moves_into_postgres_row_for_row() {
    let (dir, sqlite) = sqlite_store().await;
    fill_every_table(&*sqlite).await;
    let phone = pg_phone("import").await;

    let report = import_sqlite_store(&dir.path().join("whatsapp.db"), &phone.backend)
        .await
        .expect("the import runs");
    assert_eq!(
        report.rows.len(),
        18,
        "every table of the SQLite store: {report:?}"
    );
    assert!(
        report.rows.values().all(|rows| *rows == 1),
        "one row each, as filled: {report:?}"
    );
    // The WhatsApp store's tables (the host's own state, `phone_records` and
    // `phone_state`, comes from its files, not from this store).
    let counts: Vec<(String, i64)> = rows_of(&phone.pool, &phone.fence.phone)
        .await
        .into_iter()
        .filter(|(table, _)| table.starts_with("wa_") || table == "leases")
        .collect();
    assert_eq!(counts.len(), 19, "{counts:?}");
    assert!(
        counts.iter().all(|(_, rows)| *rows == 1),
        "one row in every table, the lease's too: {counts:?}"
    );
    // Upserts only: running it again changes nothing.
    let again = import_sqlite_store(&dir.path().join("whatsapp.db"), &phone.backend)
        .await
        .expect("the import runs again");
    assert_eq!(again, report);
    let counts_again: Vec<(String, i64)> = rows_of(&phone.pool, &phone.fence.phone)
        .await
        .into_iter()
        .filter(|(table, _)| table.starts_with("wa_") || table == "leases")
        .collect();
    assert_eq!(counts_again, counts);

    assert_eq!(
        read_back_filled(&*phone.backend).await,
        read_back_filled(&*sqlite).await,
        "PostgreSQL answers as SQLite did"
    );
}

#[tokio::test]
async fn a_missing_store_is_an_error_not_an_empty_phone() {
    let dir = tempfile::tempdir().unwrap();
    let phone = pg_phone("import-missing").await;
    let missing = dir.path().join("session.db");
    let error = import_sqlite_store(&missing, &phone.backend)
        .await
        .expect_err("nothing to import");
    assert!(matches!(error, ImportError::Missing(_)), "{error:?}");
    assert!(!missing.exists(), "the import must not create a store");
}
