//! The disk guard: when the data dir's file system runs low, new webhooks get 503 with
//! `Retry-After` and `/readyz` says why, rather than SQLite failing halfway through a write.
//!
//! The free space is read with `statvfs` every [`crate::Config::disk_check_interval`] by a
//! background task, so the webhook path only loads an atomic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

use crate::AppState;

/// "Not low": what [`DiskGuard::free`] holds while there is room.
const ROOM: u64 = u64::MAX;

/// Watches the free space under one directory.
#[derive(Debug)]
pub struct DiskGuard {
    /// `None` when nothing is kept on disk (`--store memory`).
    dir: Option<PathBuf>,
    min_free: u64,
    /// Free bytes when under `min_free`, else [`ROOM`].
    free: AtomicU64,
}

impl DiskGuard {
    pub fn new(dir: Option<PathBuf>, min_free: u64) -> Self {
        let guard = Self {
            dir,
            min_free,
            free: AtomicU64::new(ROOM),
        };
        guard.check();
        guard
    }

    /// The free bytes when they are under the threshold: new webhooks must be refused.
    pub fn low(&self) -> Option<u64> {
        match self.free.load(Ordering::Relaxed) {
            ROOM => None,
            free => Some(free),
        }
    }

    /// The threshold, for messages.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Reads the free space now; logs when it crosses the threshold either way.
    pub fn check(&self) {
        let Some(dir) = &self.dir else { return };
        let free = match available(dir) {
            Ok(free) => free,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot read the data dir's free space");
                return;
            }
        };
        let now = if free < self.min_free { free } else { ROOM };
        let before = self.free.swap(now, Ordering::Relaxed);
        match (before == ROOM, now == ROOM) {
            (true, false) => warn!(
                dir = %dir.display(),
                free,
                min_free = self.min_free,
                "data dir low on space (under --min-free-space): refusing new webhooks with 503"
            ),
            (false, true) => {
                info!(dir = %dir.display(), free, "data dir has room again: accepting webhooks")
            }
            _ => {}
        }
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
#[cfg(unix)]
fn available(dir: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn available(_dir: &std::path::Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// Reads the free space every `disk_check_interval` until shutdown.
pub async fn watch(state: AppState) {
    let mut every = tokio::time::interval(state.config.disk_check_interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.agents_shutdown.cancelled() => return,
        }
        state.disk.check();
    }
}
