//! What `relay-server` and `relay-client` both run on: the batched WebSocket writer, logging
//! set-up, shutdown signals, reading PEM files ([`pem`]), layering a config file under flags
//! and environment ([`config_file`]) and the inspector page's assets ([`inspector`]). Kept
//! apart from `protocol`, which does no I/O.

pub mod config_file;
pub mod inspector;
mod log_line;
pub mod pem;

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most messages written to the socket before one flush.
pub const WRITE_BATCH: usize = 64;

/// Writes the messages queued on `rx` to `sink`, one flush per batch: whatever is queued when
/// the writer wakes up (up to [`WRITE_BATCH`]) goes out in one system call under load, and a
/// lone message still goes out at once.
///
/// Ends after writing a message for which `is_close` is true, when every sender is gone, when
/// the sink fails, or when `cancel` fires; the sink is closed on the way out.
pub async fn write_batched<S, M>(
    mut sink: S,
    mut rx: mpsc::Receiver<M>,
    cancel: CancellationToken,
    is_close: fn(&M) -> bool,
) where
    S: Sink<M> + Unpin,
{
    loop {
        let first = tokio::select! {
            msg = rx.recv() => msg,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut closing = is_close(&first);
        if sink.feed(first).await.is_err() {
            return;
        }
        let mut batched = 1;
        if rx.is_empty() {
            // Let the tasks that are ready run first: under load they queue more frames and the
            // batch leaves in one write instead of one write per frame.
            tokio::task::yield_now().await;
        }
        while !closing && batched < WRITE_BATCH {
            let Ok(msg) = rx.try_recv() else { break };
            closing = is_close(&msg);
            if sink.feed(msg).await.is_err() {
                return;
            }
            batched += 1;
        }
        if sink.flush().await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Logs to stderr at `default` level, or as `RUST_LOG` says (`info`,
/// `relay_server=debug,warn`, ...); colours only on a terminal. See [`init_logs`] for how
/// lines reach stderr and why the guard must be kept.
pub fn init_tracing(default: tracing::Level) -> LogGuard {
    init_logs(default, LogFormat::Human)
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event, coloured on a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log shippers: `timestamp`, `level`, `target`, the event's
    /// fields flattened (`message` included) and the fields of the spans it is in (`span`,
    /// `spans`), such as a delivery's `delivery_id` and `channel`.
    Json,
}

/// Log lines queued for the writer thread before a thread that logs waits for it.
///
/// A burst of this many lines is absorbed while stderr is slow; past it, the thread that logs
/// blocks until the writer catches up (backpressure), so no line is ever dropped. Each queued
/// line costs a 32-byte slot allocated up front: 128 KiB here, where the crate's default of
/// 128,000 lines would cost 4 MiB of resident memory in every process.
const LOG_QUEUE_LINES: usize = 4096;

/// Bytes of log lines the writer thread gathers into one write while more are queued.
const LOG_WRITE_BYTES: usize = 64 * 1024;

/// Name of the log writer thread, as `top -H` and `/proc/<pid>/task/*/comm` show it.
const LOG_THREAD: &str = "log-writer";

/// The log writer thread started by [`init_logs`]. Keep it until the process exits.
///
/// Dropping it writes out every line queued so far and stops the thread, waiting up to about a
/// second for stderr to take them: drop it as the last thing before the process exits (after
/// the async runtime is gone, so the lines of tasks shutting down are included, and before a
/// final error is printed, so that it comes last). A line logged after that is lost.
/// `std::process::exit` runs no destructors: a binary must drop this first, or not call it
/// once logging has started.
#[must_use = "dropping the guard stops the log writer: keep it until the process exits"]
#[derive(Debug)]
pub struct LogGuard {
    /// Held only to be dropped: its drop is what writes out and stops the thread.
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Logs to stderr in `format` at `default` level, or as `RUST_LOG` says.
///
/// The thread that logs formats the line and queues it; a writer thread of its own writes
/// whatever has queued in one write(2) (of up to 64 KiB) as soon as its queue is empty. So
/// under load many lines leave in one system call, off the async workers, and when the process
/// is idle each line still reaches stderr at once: the writer wakes for it and nothing waits
/// for a buffer to fill. A full queue (4,096 lines) makes the thread that logs wait; no line
/// is ever dropped. The bytes written are those the fmt layer would write straight to stderr,
/// and colours still depend on whether stderr is a terminal.
///
/// Returns the writer's guard: see [`LogGuard`] for when to drop it.
pub fn init_logs(default: tracing::Level, format: LogFormat) -> LogGuard {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name(LOG_THREAD)
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BYTES,
            std::io::stderr(),
        ));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Human => {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                registry.with(layer.with_ansi(true)).init();
            } else {
                // The same line, cheaper (see `log_line`): a service's logs go to a file or
                // the journal, one line per webhook.
                let layer = layer.with_ansi(false).event_format(log_line::Plain);
                registry.with(layer).init();
            }
        }
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_current_span(true))
            .init(),
    }
    LogGuard { _writer: guard }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    shutdown_signal().await;
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_everything_queued_and_stops_after_close() {
        let (tx, rx) = mpsc::channel(16);
        for n in [1, 2, 0, 3] {
            tx.send(n).await.expect("queue open");
        }
        let mut written: Vec<u32> = Vec::new();
        write_batched(&mut written, rx, CancellationToken::new(), |n| *n == 0).await;
        assert_eq!(written, [1, 2, 0], "nothing after the close message");
    }
}
