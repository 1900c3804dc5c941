use clap::Parser;
use relay_server::Args;
use relay_server::config::Command;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let command = args.command.take();
    // A command prints its own result; only problems are logged.
    let level = if command.is_some() {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    runtime::init_logs(level, args.log_format.into());
    // ring is the only crypto provider built in; installing it up front keeps rustls from
    // having to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = args.validate()?;
    if let Some(Command::Channels(command)) = command {
        return relay_server::cli::channels(command, &config, &mut std::io::stdout().lock()).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime::cancel_on_signal(shutdown.clone()));
    relay_server::serve(listener, config, shutdown).await?;
    Ok(())
}
