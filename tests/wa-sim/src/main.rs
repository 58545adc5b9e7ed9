//! `wa-sim --listen ADDR`: runs the WhatsApp Web simulator as a standalone server.

use clap::Parser;

#[derive(Parser)]
#[command(about = "WhatsApp Web server simulator: WebSocket at /ws/chat, admin API at /admin")]
struct Args {
    /// Address to listen on (loopback only is recommended).
    #[arg(long, default_value = "127.0.0.1:3002", env = "WA_SIM_LISTEN")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sim = wa_sim::Simulator::start(args.listen).await?;
    tracing::info!(
        "wa-sim listening: WebSocket {} , admin {}",
        sim.ws_url(),
        sim.admin_url()
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
