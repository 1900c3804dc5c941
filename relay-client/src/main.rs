use clap::Parser;
use relay_client::{Agent, Args, output};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    runtime::init_tracing(tracing::Level::WARN);
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::error(&format!("{e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Args::parse().validate()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime::cancel_on_signal(shutdown.clone()));
    let (events, mut rx) = tokio::sync::mpsc::channel(1024);
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            output::print(&event);
        }
    });

    let mut attempt = 0;
    let agent = loop {
        match Agent::connect(config.clone(), Some(events.clone())).await {
            Ok(agent) => break agent,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                let retry_in = relay_client::backoff(&config, attempt);
                output::print(&relay_client::Event::Disconnected {
                    reason: e.to_string(),
                    retry_in,
                });
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                attempt += 1;
            }
        }
    };
    drop(events);
    let result = agent.run(shutdown).await;
    let _ = printer.await;
    result.map_err(Into::into)
}
