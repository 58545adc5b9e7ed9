//! The `lila` binary: parse arguments, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    lila::cli::run(lila::cli::Cli::parse()).await
}
