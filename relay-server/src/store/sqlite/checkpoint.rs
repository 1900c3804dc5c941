//! WAL checkpoints on a thread of their own, so that the writer thread (and the senders
//! waiting on its commits) never pays for copying the WAL back into the database.
//!
//! The writer's connection has SQLite's automatic checkpoint replaced ([`hand_over`]): a commit
//! that leaves the WAL at [`CHECKPOINT_FRAMES`] or more (SQLite's own threshold) wakes this
//! thread, which runs a passive checkpoint on its own connection: it copies what it can
//! without waiting for anyone, at most once per [`INTERVAL`]. A passive checkpoint beside a
//! busy writer rarely catches up with it, and the WAL starts over only after one has, so a
//! restarting checkpoint follows: it copies the few frames committed meanwhile, holding the
//! writer's next commit back only that long, and lets the WAL start over, so it stays about
//! [`CHECKPOINT_FRAMES`] long under any load.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::{debug, warn};

use super::schema::{connect, open_error};
use crate::store::StoreError;

/// Least time between two checkpoints: each ends with an fsync of the database file.
const INTERVAL: Duration = Duration::from_millis(100);

/// WAL frames (pages of 4 KiB) from which a commit asks for a checkpoint, as SQLite's
/// automatic checkpoint does: 4 MiB.
const CHECKPOINT_FRAMES: i32 = 1_000;

/// Starts the checkpoint thread, on a connection of its own to the database in `dir`, and
/// hands the checkpoints of the writer's connection `writer` over to it. The thread ends once
/// `writer` is closed.
pub(super) fn hand_over(
    dir: &Path,
    fsync: bool,
    writer: &mut Connection,
) -> Result<JoinHandle<()>, StoreError> {
    let conn = connect(dir, fsync)?;
    let (kick, woken) = mpsc::sync_channel::<()>(1);
    // Replaces SQLite's automatic checkpoint, which is a WAL hook too. Never blocks the
    // writer: a wake-up already pending covers this commit.
    writer
        .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
            if frames >= CHECKPOINT_FRAMES {
                let _ = kick.try_send(());
            }
            Ok(())
        }))
        .map_err(open_error(dir, "configure checkpoints"))?;
    std::thread::Builder::new()
        .name("hookrelay-checkpoint".to_owned())
        .spawn(move || run(&conn, &woken))
        .map_err(open_error(dir, "start checkpoint thread"))
}

fn run(conn: &Connection, woken: &mpsc::Receiver<()>) {
    let mut last = Instant::now();
    loop {
        // Wait for a commit to ask, then for the rest of the interval, taking the commits that
        // ask meanwhile along; a closed writer ends the thread after a last checkpoint.
        let mut open = woken.recv().is_ok();
        while open {
            let Some(left) = INTERVAL.checked_sub(last.elapsed()) else {
                break;
            };
            match woken.recv_timeout(left) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        checkpoint(conn);
        last = Instant::now();
        if !open {
            break;
        }
    }
    debug!("event store checkpoints stopped");
}

/// A passive checkpoint, then a restarting one for what the writer committed meanwhile.
fn checkpoint(conn: &Connection) {
    let pragma = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    match pragma("PASSIVE") {
        Ok((frames, _)) => {
            if let Err(e) = pragma("RESTART") {
                warn!(error = %e, frames, "event store checkpoint could not restart the WAL");
            }
        }
        Err(e) => warn!(error = %e, "event store checkpoint failed"),
    }
}
