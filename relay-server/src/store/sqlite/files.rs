//! Large bodies, each in a file of its own under `bodies/` in the data dir, out of the
//! database.
//!
//! SQLite writes a body through its pages: a 25 MB body is some 6,000 pages, each written to
//! the WAL with a write of its own and copied into the database again by a checkpoint, on the
//! writer thread that every other webhook's commit waits for. A file takes a few large writes
//! and one fsync, and it is written before the insert is queued, so no other webhook waits for
//! it.
//!
//! The order keeps the database and the files consistent across a crash: a body's file is
//! written (and synced, with `--fsync`) before the event's row commits, and removed only after
//! the commit that deleted the row. A crash in between leaves a file no row names, which
//! [`BodyFiles::sweep`] removes at the next start.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use protocol::DeliveryId;
use rusqlite::Connection;
use tracing::{info, warn};

/// Bodies from this size on are stored in a file: the size where one file's own fsync costs
/// less than writing the body's pages through the WAL and the checkpoint.
pub(super) const IN_FILE: usize = 1024 * 1024;

/// The directory in the data dir that holds them.
const DIR: &str = "bodies";

/// Where the store's body files are, and whether writing one syncs it.
#[derive(Debug, Clone)]
pub(super) struct BodyFiles {
    dir: PathBuf,
    fsync: bool,
}

impl BodyFiles {
    /// The body files of the data dir `data_dir`.
    pub(super) fn new(data_dir: &Path, fsync: bool) -> BodyFiles {
        BodyFiles {
            dir: data_dir.join(DIR),
            fsync,
        }
    }

    /// Makes the directory when missing: for a serving store only, so that `relay-server
    /// channels`, run by another user beside the service, never makes it that user's.
    pub(super) fn create_dir(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    fn path(&self, id: DeliveryId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Writes `body` as event `id`'s file; with `fsync`, the file and its directory entry are on
    /// the disk when it returns. A write that fails leaves no file behind.
    pub(super) fn write(&self, id: DeliveryId, body: &[u8]) -> io::Result<()> {
        let path = self.path(id);
        let written = if self.fsync {
            write_direct(&path, body)
                .or_else(|e| {
                    // A file system without direct I/O (or with stricter alignment) refuses it
                    // with EINVAL: write through the page cache instead.
                    if e.kind() != io::ErrorKind::InvalidInput {
                        return Err(e);
                    }
                    let _ = fs::remove_file(&path);
                    write_buffered(&path, body)
                })
                .and_then(|file| file.sync_all())
                .and_then(|()| File::open(&self.dir)?.sync_all())
        } else {
            write_buffered(&path, body).map(drop)
        };
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written
    }

    /// Event `id`'s body.
    pub(super) fn read(&self, id: DeliveryId) -> io::Result<Bytes> {
        fs::read(self.path(id)).map(Bytes::from)
    }

    /// Removes event `id`'s file, once the row that named it is gone.
    pub(super) fn remove(&self, id: DeliveryId) {
        match fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(delivery_id = %id, error = %e, "cannot remove a body file"),
        }
    }

    /// At start, before any write: removes the files no event names (a crash between a file
    /// and its row, or between a delete and the file's removal), and warns about events whose
    /// file is missing (a data dir restored from a copy of `events.db` taken before `bodies/`).
    pub(super) fn sweep(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut named: HashSet<String> = conn
            .prepare("SELECT id FROM events WHERE body_file = 1")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot list the body files");
                return Ok(());
            }
        };
        let mut removed = 0u64;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if named.remove(&name) || uuid::Uuid::parse_str(&name).is_err() {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => warn!(file = %name, error = %e, "cannot remove an orphan body file"),
            }
        }
        if removed > 0 {
            info!(removed, "removed body files no event names");
        }
        if !named.is_empty() {
            warn!(
                events = named.len(),
                dir = %self.dir.display(),
                "events whose body file is missing; reading them fails"
            );
        }
        Ok(())
    }
}

fn write_buffered(path: &Path, body: &[u8]) -> io::Result<File> {
    let mut file = File::create_new(path)?;
    file.write_all(body)?;
    Ok(file)
}

/// Bytes direct I/O is aligned to: buffer address, file offset and length. 4 KiB satisfies
/// the disks and file systems in use (512-byte and 4 KiB sectors).
const ALIGN: usize = 4096;
/// Bytes written per direct write, through one aligned buffer.
const DIRECT_CHUNK: usize = 1024 * 1024;

/// Writes `body` to a new file with direct I/O (`O_DIRECT`), which bypasses the page cache:
/// a 25 MB body is not copied into 6,000 freshly allocated cache pages, which on a virtual
/// machine took 65-80 ms where this takes 15-22 ms, and the cache keeps what the database
/// reads. The last chunk is padded to [`ALIGN`] with zeros and the file cut back to the body's
/// length; the caller's fsync makes both durable.
#[cfg(target_os = "linux")]
fn write_direct(path: &Path, body: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)?;
    let mut buffer = vec![0u8; DIRECT_CHUNK + ALIGN];
    let start = buffer.as_ptr().align_offset(ALIGN);
    let aligned = &mut buffer[start..start + DIRECT_CHUNK];
    for chunk in body.chunks(DIRECT_CHUNK) {
        let padded = chunk.len().next_multiple_of(ALIGN);
        aligned[..chunk.len()].copy_from_slice(chunk);
        aligned[chunk.len()..padded].fill(0);
        file.write_all(&aligned[..padded])?;
    }
    if !body.len().is_multiple_of(ALIGN) {
        file.set_len(body.len() as u64)?;
    }
    Ok(file)
}

#[cfg(not(target_os = "linux"))]
fn write_direct(path: &Path, body: &[u8]) -> io::Result<File> {
    write_buffered(path, body)
}
