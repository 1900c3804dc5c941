use clap::Parser;
use relay_client::{Agent, Args, output};
use tokio_util::sync::CancellationToken;

/// One thread: the agent mostly moves bytes between two local sockets, and on a shared
/// machine a second worker thread costs more in wake-ups than it gains (about a fifth of the
/// agent's CPU per delivery in bench/run.sh).
#[tokio::main(flavor = "current_thread")]
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
    let (events, rx) = tokio::sync::mpsc::channel(4096);
    let printer = std::thread::spawn(move || output::print_events(rx));

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
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    result.map_err(Into::into)
}
