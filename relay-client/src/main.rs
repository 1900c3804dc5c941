use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: 12% fewer instructions per webhook for the agent
/// (bench/instructions.sh). Not in relay-server: there it tripled the memory each idle agent
/// costs (25 to 70 KiB in bench/run.sh), for 8% fewer instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use relay_client::{Agent, AgentConfig, Api, Args, Disconnect, Event, Invocation, output};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // Read before logging starts: on a usage error it prints and ends the process there
    // (`process::exit`), which would skip writing out the lines queued for the log writer.
    let args = Args::from_command_line();
    let logs = runtime::init_tracing(tracing::Level::WARN);
    // ring is the only crypto provider built in; tokio-tungstenite's and hyper-rustls's
    // configurations use the installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One thread: the agent mostly moves bytes between two local sockets, and on a shared
    // machine a second worker thread costs more in wake-ups than it gains (about a fifth of
    // the agent's CPU per delivery in bench/run.sh). The runtime is dropped, and every task
    // with it, before the logs are written out below.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    // Every line logged so far reaches stderr before the error below and before the exit.
    drop(logs);
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.validate()? {
        Invocation::Agent(config) => run_agent(config).await.map(|()| ExitCode::SUCCESS),
        Invocation::Events { api, query } => {
            let api = Api::open(api).await?;
            let page = api.events(&query).await?;
            output::print_event_page(api.channel().as_str(), &query, &page);
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Replay {
            api,
            id,
            target,
            edit,
        } => {
            let api = Api::open(api).await?;
            let (delivery, replay_of) = match target {
                Some(target) => (api.replay_to(id, &target, &edit).await?, None),
                None => api.replay(id, &edit).await?,
            };
            // The line says what went wrong; the exit code lets a script see it too.
            let delivered = delivery.status.is_some();
            let stored_as = delivery.id;
            output::print(&Event::Delivered(delivery));
            if let Some(original) = replay_of {
                output::print_stored_replay(stored_as, original);
            }
            Ok(if delivered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn run_agent(config: AgentConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime::cancel_on_signal(shutdown.clone()));
    let (events, rx) = tokio::sync::mpsc::channel(4096);
    let printer = std::thread::spawn(move || output::print_events(rx));

    let mut attempt = 0;
    let mut config = config;
    let agent = loop {
        match Agent::connect(config.clone(), Some(events.clone())).await {
            Ok(agent) => break agent,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                let retry_in = relay_client::backoff(&config, attempt);
                output::print(&Event::Disconnected {
                    server: config.server.clone(),
                    why: Disconnect::of(&e),
                    retry_in,
                });
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = shutdown.cancelled() => {
                        output::print(&Event::Stopped { unfinished: 0 });
                        return Ok(());
                    }
                }
                attempt += 1;
                // With several relay nodes, the next attempt goes to the next one.
                config.rotate_servers();
            }
        }
    };
    drop(events);
    if let Some(addr) = config.inspect {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for --inspect: {e}"))?;
        let bound = listener.local_addr()?;
        let channel = protocol::ChannelId::parse(agent.channel())?;
        let api = config.api(channel)?;
        println!("Inspect deliveries at http://{bound}/c/{}", agent.channel());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_client::inspect::serve(listener, api, stop).await {
                output::error(&format!("the inspector stopped: {e}"));
            }
        });
    }
    let result = agent.run(shutdown).await;
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    result.map_err(Into::into)
}
