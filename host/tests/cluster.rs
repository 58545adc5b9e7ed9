//! Cluster mode, as far as it goes today: `lila migrate` brings a real
//! PostgreSQL (a throwaway server) to the schema this lila knows, and
//! `lila serve` refuses a database URL rather than pretend to be a cluster.

use std::process::{Command, Output};

use lila_pgstore::testing::TempPostgres;

/// Runs the `lila` binary with `args` in an empty directory (no lila.toml).
fn lila(args: &[&str], database_url: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lila"));
    command
        .args(args)
        .current_dir(dir.path())
        .env("LILA_DATA_DIR", dir.path().join("data"))
        .env("LILA_JWT_SECRET", "cluster-test-secret-cluster")
        .env("LILA_BIND", "127.0.0.1:0")
        .env_remove("LILA_CONFIG")
        .env_remove("LILA_DATABASE_URL");
    if let Some(url) = database_url {
        command.env("LILA_DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command's answer: its last line (log lines come before it).
fn answer(output: &Output) -> String {
    text(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn lila_migrate_brings_the_database_to_the_latest_schema_once() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let latest = lila_pgstore::latest_version();

    let first = lila(&["migrate"], Some(&url));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(
        answer(&first),
        format!("database schema migrated from version 0 to {latest}")
    );
    let again = lila(&["migrate"], Some(&url));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        answer(&again),
        format!("database schema at version {latest}: up to date")
    );
    // The password of a URL never reaches the output.
    assert!(!text(&first.stdout).contains(&url) && !text(&first.stderr).contains(&url));
}

#[test]
fn without_a_database_url_migrate_says_what_to_set_and_serve_refuses_one() {
    let none = lila(&["migrate"], None);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("set LILA_DATABASE_URL"),
        "{}",
        text(&none.stderr)
    );
    let bad = lila(&["migrate"], Some("mysql://db/lila"));
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("must be a PostgreSQL URL"),
        "{}",
        text(&bad.stderr)
    );
    // Not yet a cluster: serve says so and exits, instead of running alone.
    let serve = lila(&["serve"], Some("postgres://lila@127.0.0.1:1/lila"));
    assert!(!serve.status.success());
    assert!(
        text(&serve.stderr).contains("cluster mode (LILA_DATABASE_URL) cannot serve yet"),
        "{}",
        text(&serve.stderr)
    );
}
