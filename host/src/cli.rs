//! The `lila` command line: `serve` (the default), `token`, `openapi`,
//! `migrate` and `import`. Glue only:
//! it reads the configuration, wires the pieces and reports errors.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::{JwtAuth, SecretSource, load_or_create_secret};
use crate::cluster::{Cluster, LEASE_TTL, new_node_id};
use crate::config::Config;
use crate::core::tenant::TenantId;
use crate::gateway::Gateway;
use crate::hooks::{NoHooks, ResetHooks};
use crate::http::{AppState, openapi};
use crate::layout::DataLayout;
use crate::plugins::{PluginHooks, StateStore};
use crate::seat::Seat;
use crate::storage::phone_store::PhoneStore;
use crate::storage::postgres_store::PgPhoneStore;
use crate::whatsapp::certificate::certificate_check;
use crate::whatsapp::real::RealWhatsApp;

#[derive(Debug, Parser)]
#[command(
    name = "lila",
    version,
    about = "Multi-tenant WhatsApp session gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the HTTP API and the sessions (the default).
    Serve,
    /// Print a token signed with the server's secret.
    Token {
        /// The tenant (the Portal's companyId) the token acts for.
        #[arg(long, required_unless_present = "operator")]
        company: Option<String>,
        /// An operator token, which may act on every tenant's sessions.
        #[arg(long)]
        operator: bool,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (what `GET
    /// /api/openapi.json` serves; `lila openapi > docs/openapi.json` updates the committed copy).
    Openapi,
    /// Brings the PostgreSQL schema of cluster mode (LILA_DATABASE_URL or
    /// `database_url`) to this lila's version; nodes also do it at start.
    Migrate,
    /// Copies this node's data root (phone records, outboxes, statuses,
    /// contacts and each phone's WhatsApp store) into the PostgreSQL
    /// database, for cluster mode. Run it with every lila node stopped;
    /// running it again rewrites the same rows.
    Import,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = || Config::load(&env).context("loading the configuration");
    match cli.command.unwrap_or(CliCommand::Serve) {
        CliCommand::Serve => serve(config()?).await,
        // Needs no configuration: the document depends on the code only.
        CliCommand::Openapi => {
            print!(
                "{}",
                openapi::document_json().context("rendering the document")?
            );
            Ok(())
        }
        CliCommand::Migrate => {
            let pool = database_pool(&config()?, "migrate", 2)?;
            let report = lila_pgstore::migrate(&pool)
                .await
                .context("migrating the database")?;
            if report.from == report.to {
                println!("database schema at version {}: up to date", report.to);
            } else {
                println!(
                    "database schema migrated from version {} to {}",
                    report.from, report.to
                );
            }
            Ok(())
        }
        CliCommand::Import => {
            let config = config()?;
            let pool = database_pool(&config, "import into", 2)?;
            let layout = DataLayout::new(config.data_dir.clone());
            let node = format!("lila-import-{}", std::process::id());
            let summary = crate::import::import_data_root(&layout, &pool, &node)
                .await
                .context("importing the data root")?;
            println!(
                "imported {} phones from {}: {} WhatsApp stores ({} rows), {} messages still to send",
                summary.phones,
                config.data_dir.display(),
                summary.stores,
                summary.store_rows,
                summary.pending_messages
            );
            Ok(())
        }
        CliCommand::Token {
            company,
            operator,
            hours,
        } => {
            let config = config()?;
            let layout = DataLayout::new(config.data_dir.clone());
            let (secret, _) =
                load_or_create_secret(config.jwt_secret.as_deref(), &layout.jwt_secret_file())
                    .context("reading the JWT secret")?;
            let tenant = company
                .map(|c| TenantId::parse(&c))
                .transpose()
                .context("--company")?;
            let token = JwtAuth::configured(&secret, &config.jwt)?.mint(
                tenant.as_ref(),
                operator,
                Duration::from_secs(hours * 3600),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Connections a cluster node keeps to the database at most, for its
/// sessions' stores and records.
const DATABASE_POOL_SIZE: usize = 16;
/// Connections of the lease loop and routing, apart from the sessions':
/// a node busy with thousands of sessions' store traffic still renews its
/// leases in time (sharing one pool, 10,000 reconnecting sessions starved
/// the renewals and the node lost its own leases).
const LEASE_POOL_SIZE: usize = 4;

/// A pool on the configured database, or the sentence saying what to set.
fn database_pool(config: &Config, doing: &str, size: usize) -> anyhow::Result<lila_pgstore::Pool> {
    let Some(url) = &config.database_url else {
        anyhow::bail!(
            "no database to {doing}: set LILA_DATABASE_URL (or database_url in lila.toml) to a postgres:// URL"
        );
    };
    lila_pgstore::connect_pool(&url.0, size).context("the database URL")
}

/// Takes this data directory's seat for `node_id`, and the node that held
/// it before (gone: its lock was free). Fails when another process holds
/// it; a file system that cannot lock only costs the seat's benefits.
fn take_seat(layout: &DataLayout, node_id: &str) -> anyhow::Result<(Option<Seat>, Option<String>)> {
    let dir = layout.host_dir();
    match Seat::take(&dir) {
        Ok(Some(mut seat)) => {
            let predecessor = seat.hand_to(node_id).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not record this node on its data directory");
                None
            });
            Ok((Some(seat), predecessor))
        }
        Ok(None) => anyhow::bail!(
            "another lila process runs on the data directory {} ({} holds {}); stop it first, or give this one its own LILA_DATA_DIR",
            layout.root().display(),
            Seat::holder(&dir),
            dir.join("node").display()
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not lock the data directory; a second process on it would not be refused");
            Ok((None, None))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Before anything is touched: a client that does not verify WhatsApp's
    // certificate chain talks to this machine only.
    let certificate = certificate_check();
    if certificate.is_on() {
        tracing::info!(
            certificate_verification = certificate.as_str(),
            "WhatsApp's certificate chain is verified"
        );
    } else {
        tracing::warn!(
            certificate_verification = certificate.as_str(),
            "this build does not verify WhatsApp's certificate chain (a build for the simulator); it connects to loopback addresses only"
        );
    }
    config
        .whatsapp
        .check_trust(certificate.is_on())
        .context("refusing to start")?;
    let layout = DataLayout::new(config.data_dir.clone());
    crate::storage::private::narrow_data_root(&layout)
        .context("making the data directory private (0700)")?;
    // Held until the process ends: one process per data directory, and the
    // lock that tells the next node here that this one is gone (`seat`).
    let node_id = new_node_id();
    let (_seat, predecessor) = take_seat(&layout, &node_id)?;
    let jwt = config.jwt.clone();
    let (secret, source) =
        load_or_create_secret(config.jwt_secret.as_deref(), &layout.jwt_secret_file())
            .context("preparing the JWT secret")?;
    if source != SecretSource::Configured {
        tracing::warn!(
            secret_file = %layout.jwt_secret_file().display(),
            "LILA_JWT_SECRET is not set; using a generated secret. Mint a token with: lila token --company <companyId> (or --operator)"
        );
    }
    if let Some(url) = &config.whatsapp.url {
        tracing::warn!(url = %url, "WhatsApp URL overridden (simulator mode)");
    }
    let whatsapp = RealWhatsApp::new(config.whatsapp.url.clone(), config.whatsapp.version);
    let bind = config.bind;
    let open_files_limit = crate::limits::raise_open_files_limit();
    // Cluster mode: the pool, and the URL the listeners connect to.
    let database = match &config.database_url {
        Some(url) => {
            let pool = database_pool(&config, "run a cluster node on", DATABASE_POOL_SIZE)?;
            let report = lila_pgstore::migrate(&pool)
                .await
                .context("migrating the database")?;
            tracing::info!(from = report.from, to = report.to, "database schema ready");
            Some((pool, url.0.clone()))
        }
        None => None,
    };
    // In a cluster the plugins keep their state in the database too.
    let hooks = start_plugins(&config, database.as_ref().map(|(pool, _)| pool.clone())).await?;
    let node_url = config
        .node_url
        .clone()
        .unwrap_or_else(|| format!("http://{bind}"));
    let gateway = match &database {
        Some((pool, _)) => Gateway::with_store(
            config,
            PhoneStore::Postgres(PgPhoneStore::new(pool.clone())),
            Arc::new(whatsapp),
            hooks,
        ),
        None => Gateway::new(config, Arc::new(whatsapp), hooks),
    };
    gateway.metrics().open_files_limit.store(
        open_files_limit.unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    let open_before_boot = crate::limits::open_files().unwrap_or(0);
    let boot = gateway.boot().await;
    let needed = crate::limits::open_files_needed(
        open_before_boot,
        boot.resumed.len(),
        gateway.store().fds_per_session(),
    );
    match open_files_limit {
        Some(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            sessions = boot.resumed.len(),
            "the open-files limit is too low for the sessions to resume; raise it (ulimit -n, or LimitNOFILE= in a systemd unit) or sessions will fail with 'Too many open files'"
        ),
        limit => tracing::info!(limit = ?limit, needed, "open-files limit"),
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    tracing::info!(addr = %listener.local_addr()?, "lila is listening");
    // Cluster mode: this node joins, its lease loop decides which phones
    // the gateway runs, and the router forwards requests to their holders.
    let cluster = match (&database, &gateway.store()) {
        (Some((pool, url)), PhoneStore::Postgres(store)) => {
            let lease_pool =
                database_pool(gateway.config(), "run a cluster node on", LEASE_POOL_SIZE)?;
            let Some(secret) = &gateway.config().cluster_secret else {
                anyhow::bail!(
                    "set LILA_CLUSTER_SECRET (32 bytes or more, the same on every node) to run a cluster node: the nodes prove their requests and notifications to each other with it"
                );
            };
            let proofs = Arc::new(crate::cluster::proof::Proofs::new(secret.0.as_bytes()));
            let cluster = Cluster::join(
                lease_pool,
                store.clone(),
                node_id,
                node_url,
                LEASE_TTL,
                proofs,
            )
            .await
            .context("joining the cluster")?;
            if let Some(predecessor) = predecessor {
                cluster.retire(&predecessor).await;
            }
            let lease_loop = cluster.spawn_lease_loop(gateway.clone());
            cluster.spawn_wake_listener(url.clone());
            // Every node's event stream carries every session's events.
            crate::cluster::events::spawn_relay(
                cluster.node_id().to_owned(),
                pool.clone(),
                url.clone(),
                gateway.clone(),
                cluster.proofs().clone(),
                crate::http::events::owner_payload,
            );
            // Resets other nodes ask of this one through the database,
            // answered as the API answers a reset.
            cluster.spawn_reset_listener(
                gateway.clone(),
                url.clone(),
                crate::http::forward::asked_reset_answer,
            );
            Some((cluster, lease_loop))
        }
        _ => None,
    };
    let state = AppState {
        gateway: gateway.clone(),
        auth: Arc::new(JwtAuth::configured(&secret, &jwt)?),
        cluster: cluster.as_ref().map(|(cluster, _)| cluster.clone()),
    };
    // The first SIGTERM/SIGINT starts a graceful shutdown; a second one
    // exits at once (an operator who does not want to wait).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        tracing::info!("shutting down; a second SIGTERM or SIGINT exits at once");
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now without stopping the sessions");
        std::process::exit(130);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = crate::http::edge::serve(listener, state, stop_rx.clone());
    // In-flight requests get a moment to finish; the sessions' deadline
    // starts after it, so the whole shutdown stays bounded.
    tokio::select! {
        served = server => served.context("serving HTTP")?,
        () = async {
            stopped(stop_rx.clone()).await;
            tokio::time::sleep(HTTP_DRAIN).await;
        } => tracing::warn!(drain_ms = HTTP_DRAIN.as_millis() as u64, "requests still in flight; stopping anyway"),
    }
    // Cluster mode: no more claims or renewals while the sessions stop.
    if let Some((_, lease_loop)) = &cluster {
        lease_loop.abort();
    }
    let started = std::time::Instant::now();
    tracing::info!("stopping sessions (they resume at the next start)");
    let summary = gateway.shutdown().await;
    tracing::info!(
        stopped = summary.stopped,
        abandoned = summary.abandoned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sessions stopped"
    );
    // Cluster mode: the leases go back at once, so the other nodes take
    // the phones over at their next round instead of after the ttl.
    if let Some((cluster, _)) = cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// How long in-flight requests may run on after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// How long a burst of file events may last before it becomes one reload.
const PLUGIN_RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The plugin runtime, watched for changes, when the config file has a
/// `[plugins]` section; no hooks otherwise (`serve` needs no plugins).
async fn start_plugins(
    config: &Config,
    database: Option<lila_pgstore::Pool>,
) -> anyhow::Result<Arc<dyn ResetHooks>> {
    let Some(config_file) = config.config_file.clone() else {
        tracing::info!("no config file: plugins are off");
        return Ok(Arc::new(NoHooks));
    };
    if !config.plugins_configured {
        tracing::info!(config = %config_file.display(), "no [plugins] section: plugins are off");
        return Ok(Arc::new(NoHooks));
    }
    // Reading the section is quick and a bad one stops `serve` here;
    // compiling the components (seconds for a Python or JavaScript one, on a
    // cold cache) goes on in the background while the API already answers.
    let state = match database {
        Some(pool) => StateStore::postgres(pool),
        None => StateStore::default(),
    };
    let hooks = PluginHooks::start_with_state(&config_file, &config.data_dir, state)
        .context("loading plugins")?;
    hooks
        .watch(PLUGIN_RELOAD_DEBOUNCE)
        .context("watching plugins")?;
    Ok(hooks)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
