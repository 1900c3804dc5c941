use clap::Parser;
use relay_server::Args;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing(tracing::Level::INFO);
    let config = Args::parse().validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime::cancel_on_signal(shutdown.clone()));
    relay_server::serve(listener, config, shutdown).await?;
    Ok(())
}
