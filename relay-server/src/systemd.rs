//! Tells systemd how the server is doing (sd_notify(3)), for a `Type=notify` unit with
//! `WatchdogSec=`: ready, alive, stopping.
//!
//! Every function is a no-op when the process was not started by systemd (no `NOTIFY_SOCKET`),
//! so the server behaves the same from a shell, a container or a test. A notification that
//! cannot be sent is logged at debug and otherwise ignored: serving webhooks matters more than
//! telling systemd about it, and systemd itself reports a missing `READY=1` or watchdog ping.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Tells systemd that start-up is done (`READY=1`), with `status` as the line
/// `systemctl status` shows (`STATUS=`). Call it once the listener is bound and the store is
/// open: systemd holds back units ordered after this one, and `systemctl start` returns, only
/// then.
pub fn ready(status: &str) {
    // A newline would end the STATUS= assignment and start another one.
    let status = status.replace('\n', " ");
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// Waits until `shutdown` is cancelled, then tells systemd the server is stopping
/// (`STOPPING=1`), so `systemctl status` shows "deactivating" while in-flight webhooks drain.
///
/// Meant to be spawned next to the server; it holds nothing but the token.
pub async fn stopping(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    notify("STOPPING=1");
}

/// Pings systemd's watchdog (`WATCHDOG=1`) every half of `WATCHDOG_USEC` until `stop` is
/// cancelled, so a server whose runtime hangs is killed and restarted by systemd
/// (`WatchdogSec=` in the unit).
///
/// Returns at once when systemd did not ask for pings: no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`,
/// or a `WATCHDOG_PID` naming another process. The pings come from a task on the runtime, so
/// they stop when the runtime can no longer run tasks, which is what the watchdog is for.
pub async fn watchdog(stop: CancellationToken) {
    let Some(period) = watchdog_period() else {
        return;
    };
    debug!(?period, "systemd watchdog enabled");
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => notify("WATCHDOG=1"),
            () = stop.cancelled() => return,
        }
    }
}

/// Half the watchdog timeout systemd asked for, as sd_watchdog_enabled(3) recommends; `None`
/// when there is no watchdog to ping.
fn watchdog_period() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    #[cfg(unix)]
    let timeout = sd_notify::watchdog_enabled();
    #[cfg(not(unix))]
    let timeout: Option<Duration> = None;
    timeout
        .map(|timeout| timeout / 2)
        .filter(|period| !period.is_zero())
}

/// Sends `message` (newline-separated `KEY=VALUE` assignments) to systemd's notification
/// socket; nothing without `NOTIFY_SOCKET`.
fn notify(message: &str) {
    #[cfg(unix)]
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Custom(message)]) {
        debug!(%error, message, "systemd notification not sent");
    }
    #[cfg(not(unix))]
    let _ = message;
}
