//! The `lila` binary: parse arguments, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,whatsapp_rust=warn,wacore=warn")
            }),
        )
        .init();
    lila::cli::run(lila::cli::Cli::parse()).await
}
