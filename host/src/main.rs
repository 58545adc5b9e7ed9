//! The `lila` binary: parse arguments, set up logging, run.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// How long the end of `main` waits for work still on tokio's blocking
/// pool (a DNS lookup, an HTTP call of a session being stopped) before the
/// process exits anyway. `serve` has stopped the sessions by then; what is
/// left is abandoned work, and an outage must not hold a deploy for it.
const BLOCKING_WORK_GRACE: Duration = Duration::from_millis(200);

fn main() -> anyhow::Result<()> {
    // The data root holds credentials: whatever lila, SQLite or a library
    // creates is private to this user (files 0600, folders 0700), whatever
    // umask the process was started with (storage/private.rs).
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,whatsapp_rust=warn,wacore=warn")
            }),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(lila::cli::run(lila::cli::Cli::parse()));
    // Dropping a runtime waits for every blocking task, however long it
    // runs (a lookup against a dead resolver): bounded here instead.
    runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    result
}
