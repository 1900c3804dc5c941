//! Retention: [`Store::prune`](crate::store::Store::prune) a slice at a time.

use std::collections::HashSet;

use super::PostgresStore;
use super::rows::{bigint, db_error};
use crate::store::{Millis, StoreError};

/// Events one prune transaction deletes at most, so inserts (which wait for prune's channel
/// locks) commit between slices.
pub(super) const PRUNE_SLICE: i64 = 2_000;

/// Of the `$2` oldest events (by arrival: `seq`), those that arrived before `$1`: a window,
/// so that finding none old reads `$2` rows, not the table.
const OLDEST: &str = "SELECT seq, channel FROM (
        SELECT seq, channel, received_at FROM events ORDER BY seq LIMIT $2) oldest
    WHERE received_at < $1";

/// Up to `$2` finished events, per channel the oldest first, that are older than the
/// channel's newest `$1`: each channel's index is read backwards `$1` entries to find where
/// its newest end, then forwards from its oldest.
const BEYOND_CAP: &str = "SELECT e.seq, u.channel FROM channel_usage u
    CROSS JOIN LATERAL (
        SELECT seq AS last FROM events WHERE channel = u.channel
        ORDER BY seq DESC OFFSET $1 LIMIT 1) b
    CROSS JOIN LATERAL (
        SELECT seq FROM events WHERE channel = u.channel AND seq <= b.last
        AND status IN ('delivered', 'failed', 'rejected', 'unrouted')
        ORDER BY seq LIMIT $2) e
    LIMIT $2";

/// Deletes the events `$1` (found by age) and those of `$2` (found beyond the cap) that are
/// still finished.
const DELETE: &str = "DELETE FROM events WHERE seq = ANY($1::BIGINT[])
    OR (seq = ANY($2::BIGINT[]) AND status IN ('delivered', 'failed', 'rejected', 'unrouted'))";

impl PostgresStore {
    /// One transaction of [`crate::store::Store::prune`]: at most [`PRUNE_SLICE`] events, by
    /// age first, then per channel the finished events older than the newest `cap`. Answers
    /// how many it deleted, and whether there may be more (it found a whole slice).
    ///
    /// What goes is found first, with no lock taken; then the usage rows of its channels are
    /// locked, in name order (bytewise, as inserts and records sort theirs), and then the
    /// events deleted: deleting takes those locks (the counting triggers), and taking them
    /// after the events' rows could deadlock with an insert making room in the same channel.
    /// Only those channels wait, and only for the delete.
    pub(super) async fn prune_slice(
        &self,
        cutoff: Millis,
        cap: u64,
    ) -> Result<(u64, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let aged = (tx.query(OLDEST, &[&cutoff, &PRUNE_SLICE]).await).map_err(db_error)?;
        let left = PRUNE_SLICE - bigint(aged.len());
        let mut capped = Vec::new();
        if left > 0 {
            let beyond = (tx.query(BEYOND_CAP, &[&bigint(cap), &left]).await).map_err(db_error)?;
            let old: HashSet<i64> = aged.iter().map(|row| row.get(0)).collect();
            capped.extend(beyond.into_iter().filter(|row| !old.contains(&row.get(0))));
        }
        let more = bigint(aged.len() + capped.len()) >= PRUNE_SLICE;
        if aged.is_empty() && capped.is_empty() {
            return Ok((0, false));
        }
        let seqs = |rows: &[tokio_postgres::Row]| rows.iter().map(|row| row.get(0)).collect();
        let (aged_seqs, capped_seqs): (Vec<i64>, Vec<i64>) = (seqs(&aged), seqs(&capped));
        let mut channels: Vec<&str> = aged.iter().chain(&capped).map(|row| row.get(1)).collect();
        channels.sort_unstable();
        channels.dedup();
        tx.execute(
            "SELECT channel FROM channel_usage WHERE channel = ANY($1)
             ORDER BY channel COLLATE \"C\" FOR UPDATE",
            &[&channels],
        )
        .await
        .map_err(db_error)?;
        // Found without a lock: what the cap found goes only if it is still finished now.
        let deleted = (tx.execute(DELETE, &[&aged_seqs, &capped_seqs]).await).map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((deleted, more))
    }
}
