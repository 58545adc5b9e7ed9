//! TLS to PostgreSQL, against a real PostgreSQL 15 started with `ssl=on` and
//! a certificate for `localhost` signed by a throwaway CA: libpq's `sslmode`
//! values and `sslrootcert` in the database URL, for the pool and for
//! LISTEN/NOTIFY, and the URL's errors.

use std::sync::OnceLock;
use std::time::Duration;

use lila_pgstore::testing::{ServerOptions, TempPostgres, error_chain as chain, throwaway_ca};
use lila_pgstore::{DatabaseUrlError, PgStoreError, SslMode, connect_pool, migrate, notify};

/// The role that logs in with a password (SCRAM) in [`SERVER_HBA`].
const PASSWORD_ROLE: &str = "lila_password";
const PASSWORD: &str = "hunter2-over-tls";

/// TCP connections only with TLS (`hostnossl` is refused), the password
/// role by SCRAM; the unix socket (the server's own tools) trusted.
const SERVER_HBA: &str = "\
local all all trust
hostssl all lila_password 127.0.0.1/32 scram-sha-256
hostssl all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject
";

/// One TLS server for the tests of this binary (its watcher removes it).
fn tls_server() -> &'static TempPostgres {
    static SERVER: OnceLock<TempPostgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        TempPostgres::start_with(&ServerOptions {
            tls: true,
            hba: Some(SERVER_HBA.into()),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn ca_file() -> String {
    let ca = tls_server().ca_file().expect("a TLS server has a CA");
    ca.display().to_string()
}

/// `postgres://{user}@{host}:{port}/postgres?{params}` on the TLS server.
fn url(user: &str, host: &str, params: &str) -> String {
    format!(
        "postgres://{user}@{host}:{}/postgres?{params}",
        tls_server().port()
    )
}

/// `url` as `postgres` with `sslmode={mode}` and `sslrootcert={ca}`.
fn with_ca(host: &str, mode: &str, ca: &str) -> String {
    url(
        "postgres",
        host,
        &format!("sslmode={mode}&sslrootcert={ca}"),
    )
}

/// A connection from a pool on `url`, or the whole error.
async fn connect(url: &str) -> Result<deadpool_postgres::Object, String> {
    let pool = connect_pool(url, 1).map_err(|e| chain(&e))?;
    pool.get().await.map_err(|e| chain(&e))
}

/// Whether the server sees this connection as TLS.
async fn server_sees_ssl(client: &deadpool_postgres::Object) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_encrypted_and_the_store_runs_over_it() {
    let ca = ca_file();
    let client = connect(&with_ca("localhost", "verify-full", &ca))
        .await
        .unwrap();
    assert!(server_sees_ssl(&client).await);
    // The whole schema over TLS, on a database of its own.
    let database = tls_server().create_database().unwrap();
    let database = database.replace("127.0.0.1", "localhost")
        + &format!("?sslmode=verify-full&sslrootcert={ca}");
    let pool = connect_pool(&database, 2).unwrap();
    let report = migrate(&pool).await.unwrap();
    assert_eq!(report.to, lila_pgstore::latest_version());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_by_every_mode_given_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let other = throwaway_ca(dir.path(), "other").unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        let error = refused(&with_ca("localhost", mode, &other.display().to_string())).await;
        assert!(
            error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
            "{mode}: {error}"
        );
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let ca = ca_file();
    // The certificate names `localhost`, not the address 127.0.0.1.
    let error = refused(&with_ca("127.0.0.1", "verify-full", &ca)).await;
    assert!(
        error.contains("invalid peer certificate") && error.contains("127.0.0.1"),
        "{error}"
    );
    let client = connect(&with_ca("127.0.0.1", "verify-ca", &ca))
        .await
        .unwrap();
    assert!(server_sees_ssl(&client).await);
}

#[tokio::test]
async fn require_without_a_ca_encrypts_whatever_the_certificate() {
    // No CA, and an address the certificate does not name: still TLS.
    let client = connect(&url("postgres", "127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    assert!(server_sees_ssl(&client).await);
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plain() {
    let plain = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let error = refused(&format!("{}?sslmode=require", plain.database_url())).await;
    assert!(error.contains("server does not support TLS"), "{error}");
    // No sslmode is libpq's default, prefer: plain to a server without TLS,
    // TLS to one that has it.
    let client = connect(&plain.database_url()).await.unwrap();
    assert!(!server_sees_ssl(&client).await);
    let client = connect(&url("postgres", "127.0.0.1", "application_name=prefer"))
        .await
        .unwrap();
    assert!(server_sees_ssl(&client).await);
}

#[tokio::test]
async fn sslmode_disable_is_plain_so_a_hostssl_only_server_refuses_it() {
    let error = refused(&url("postgres", "127.0.0.1", "sslmode=disable")).await;
    assert!(
        error.contains("pg_hba.conf rejects connection") && error.contains("no encryption"),
        "{error}"
    );
}

#[tokio::test]
async fn a_password_login_binds_the_scram_exchange_to_the_tls_channel() {
    let ca = ca_file();
    let admin = connect(&with_ca("localhost", "verify-full", &ca))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'"
        ))
        .await
        .unwrap();
    // channel_binding=require: SCRAM-SHA-256-PLUS over this TLS session, or
    // no connection.
    let params = format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require");
    let client = connect(&url(
        &format!("{PASSWORD_ROLE}:{PASSWORD}"),
        "localhost",
        &params,
    ))
    .await
    .unwrap();
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, PASSWORD_ROLE);
    assert!(server_sees_ssl(&client).await);
    let error = refused(&url(
        &format!("{PASSWORD_ROLE}:not-{PASSWORD}"),
        "localhost",
        &params,
    ))
    .await;
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
}

#[tokio::test]
async fn listen_and_notify_run_over_tls() {
    let ca = ca_file();
    let url = with_ca("localhost", "verify-full", &ca);
    let mut listener = notify::listen(&url, "tls_channel").await.unwrap();
    let pool = connect_pool(&url, 1).unwrap();
    notify::notify(&pool, "tls_channel", "over tls")
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap();
    assert_eq!(heard.as_deref(), Some("over tls"));
    // The listening session is encrypted (as every TCP session must be here).
    let client = pool.get().await.unwrap();
    let listening_encrypted: bool = client
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.query = 'LISTEN \"tls_channel\"'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(listening_encrypted);
    // And a listener with a CA that did not sign the server's certificate hears nothing.
    let dir = tempfile::tempdir().unwrap();
    let other = throwaway_ca(dir.path(), "other").unwrap();
    let wrong = with_ca("localhost", "verify-full", &other.display().to_string());
    let error = notify::listen(&wrong, "tls_channel").await.err().unwrap();
    assert!(
        chain(&error).contains("invalid peer certificate"),
        "{}",
        chain(&error)
    );
}

#[tokio::test]
async fn system_roots_do_not_trust_a_private_ca() {
    let error = refused(&url(
        "postgres",
        "localhost",
        "sslmode=verify-full&sslrootcert=system",
    ))
    .await;
    assert!(error.contains("UnknownIssuer"), "{error}");
}

/// What a bad URL's error must be.
type Expected = fn(&DatabaseUrlError) -> bool;

#[tokio::test]
async fn a_bad_url_is_a_typed_error_that_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hunter2 is not a certificate\n").unwrap();
    let not_certificate = dir.path().join("not-certificate.pem");
    std::fs::write(
        &not_certificate,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let base = "postgres://lila:hunter2@db.example:5432/lila";
    let cases: Vec<(String, Expected)> = vec![
        (
            format!("{base}?sslmode=verify-everything"),
            |e| matches!(e, DatabaseUrlError::UnknownSslMode(mode) if mode == "verify-everything"),
        ),
        (format!("{base}?sslmode=allow"), |e| {
            matches!(e, DatabaseUrlError::UnknownSslMode(_))
        }),
        (format!("{base}?sslmode=verify-full"), |e| {
            matches!(e, DatabaseUrlError::NoRootCertificate(SslMode::VerifyFull))
        }),
        (format!("{base}?sslmode=verify-ca"), |e| {
            matches!(e, DatabaseUrlError::NoRootCertificate(SslMode::VerifyCa))
        }),
        (
            format!("{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            |e| matches!(e, DatabaseUrlError::UnreadableRootCertificate { .. }),
        ),
        (
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                not_pem.display()
            ),
            |e| matches!(e, DatabaseUrlError::NotPem(_)),
        ),
        (
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                not_certificate.display()
            ),
            |e| matches!(e, DatabaseUrlError::BadRootCertificate { .. }),
        ),
        (format!("{base}?sslmode=require&sslrootcert=system"), |e| {
            matches!(
                e,
                DatabaseUrlError::SystemRootsNeedVerifyFull(SslMode::Require)
            )
        }),
        (
            format!("{base}?sslmode=require&sslcert=/client.pem"),
            |e| matches!(e, DatabaseUrlError::ClientCertificate(name) if name == "sslcert"),
        ),
        (format!("{base}?sslrootcert=%FF"), |e| {
            matches!(e, DatabaseUrlError::NotUtf8("sslrootcert"))
        }),
        (format!("{base}?sslmode=require&port=hunter2"), |e| {
            matches!(e, DatabaseUrlError::Invalid(_))
        }),
    ];
    for (url, expected) in cases {
        let Err(error) = connect_pool(&url, 1) else {
            panic!("{url} made a pool");
        };
        let PgStoreError::Url(url_error) = &error else {
            panic!("{url}: not a URL error: {error:?}");
        };
        assert!(expected(url_error), "{url}: {url_error:?}");
        let (text, debug) = (chain(&error), format!("{error:?}"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!debug.contains("hunter2"), "{debug}");
        // One sentence, the same from the listeners.
        assert!(!text.is_empty() && !text.contains('\n'), "{text}");
        let listen = notify::listen(&url, "never").await.err().unwrap();
        assert!(matches!(listen, PgStoreError::Url(_)), "{url}: {listen:?}");
    }
}
