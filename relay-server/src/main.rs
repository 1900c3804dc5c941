use std::process::ExitCode;

use relay_server::config::args::Command;
use relay_server::config::file::{self as config_file, LoadError};
use tokio_util::sync::CancellationToken;

/// Exit code of a usage error (a bad flag or setting), as clap uses for its own.
const USAGE: u8 = 2;

/// A user's mistake, as opposed to a failure while running: exits with [`USAGE`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Usage(#[from] relay_server::config::args::ConfigError);

fn main() -> ExitCode {
    let mut loaded = match config_file::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(e)) => return clap_exit(&e),
        Err(LoadError::File(errors)) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let command = loaded.args.command.take();
    // A command prints its own result; only problems are logged.
    let level = if command.is_some() {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let logs = runtime::init_logs(level, loaded.args.log_format.into());
    // ring is the only crypto provider built in; installing it up front keeps rustls from
    // having to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The runtime #[tokio::main] builds, but dropped before the logs are written out below, so
    // that what its tasks log as they end is written too.
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(command, loaded)));
    // Every line logged so far reaches stderr before the error below and before the exit.
    drop(logs);
    // One sentence and an exit code, whatever RUST_BACKTRACE says: a user error is no crash.
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay-server: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Option<Command>, loaded: config_file::Loaded) -> anyhow::Result<ExitCode> {
    match command {
        Some(Command::CheckConfig { file }) => return Ok(check_config(file, loaded)),
        Some(Command::Channels(command)) => {
            let config = loaded.args.validate().map_err(Usage)?;
            relay_server::channels_command(command, &config, &mut std::io::stdout().lock()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let mut config = loaded.args.validate().map_err(Usage)?;
    config.declared_channels = loaded.channels;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime::cancel_on_signal(shutdown.clone()));
    relay_server::serve(listener, config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints clap's help, version or usage error and answers its exit code, as
/// `clap::Error::exit` does but by returning, so that main still writes out the logs:
/// `process::exit` would skip that.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(USAGE))
}

/// `relay-server check-config [FILE]`: every setting in force and where it comes from, or
/// every problem with the file.
fn check_config(file: Option<std::path::PathBuf>, loaded: config_file::Loaded) -> ExitCode {
    let loaded = match file {
        Some(path) if Some(&path) != loaded.path.as_ref() => {
            let argv = vec![
                "relay-server".into(),
                "--config".into(),
                path.into_os_string(),
            ];
            match config_file::load(argv) {
                Ok(loaded) => loaded,
                Err(LoadError::Clap(e)) => return clap_exit(&e),
                Err(LoadError::File(errors)) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => loaded,
    };
    let Some(path) = loaded.path.clone() else {
        eprintln!(
            "no configuration file: pass one (`relay-server check-config FILE`), or --config, \
             or create {}",
            config_file::DEFAULT_PATH
        );
        return ExitCode::FAILURE;
    };
    let settings = loaded.settings;
    let channels = loaded.channels;
    if let Err(e) = loaded.args.validate() {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let warnings = loaded.warnings;
    if warnings.is_empty() {
        println!("{}: ok", path.display());
    } else {
        println!(
            "{}: ok, with {} warning{} (it will serve, but should not as it is)",
            path.display(),
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        );
        for warning in &warnings {
            println!("  warning: {warning}");
        }
    }
    for (key, value, source) in &settings {
        println!("  {key} = {value}  ({})", source.as_str());
    }
    for channel in &channels {
        let verify = channel
            .settings
            .verify
            .as_ref()
            .map_or(String::new(), |v| format!(", verify {}", v.kind()));
        println!(
            "  channel {} (mode {}{verify})",
            channel.name,
            channel.settings.mode.as_str()
        );
    }
    ExitCode::SUCCESS
}
