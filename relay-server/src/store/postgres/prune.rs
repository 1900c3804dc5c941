//! Retention: [`Store::prune`](crate::store::Store::prune) a slice at a time.

use super::PostgresStore;
use super::rows::{bigint, db_error};
use crate::store::{Millis, StoreError};

/// Events one prune transaction deletes at most, so inserts (which wait for prune's channel
/// locks) commit between slices.
pub(super) const PRUNE_SLICE: i64 = 2_000;

impl PostgresStore {
    /// One transaction of [`crate::store::Store::prune`]: at most [`PRUNE_SLICE`] events, by
    /// age first, then per channel the finished events older than the newest `cap`. It locks
    /// every channel's usage row first, in name order (bytewise, as inserts and records sort
    /// theirs): deleting takes those locks (the counting triggers), and taking them after the
    /// events' rows could deadlock with an insert making room in the same channel.
    pub(super) async fn prune_slice(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            "SELECT channel FROM channel_usage ORDER BY channel COLLATE \"C\" FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_error)?;
        let by_age = tx
            .execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events WHERE received_at < $1 ORDER BY seq LIMIT $2)",
                &[&cutoff, &PRUNE_SLICE],
            )
            .await
            .map_err(db_error)?;
        let left = PRUNE_SLICE - bigint(by_age);
        let by_cap = if left > 0 {
            tx.execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM (
                         SELECT seq, status,
                                row_number() OVER (PARTITION BY channel ORDER BY seq DESC) AS rank
                         FROM events) ranked
                     WHERE rank > $1
                     AND status IN ('delivered', 'failed', 'rejected', 'unrouted')
                     ORDER BY seq LIMIT $2)",
                &[&bigint(cap), &left],
            )
            .await
            .map_err(db_error)?
        } else {
            0
        };
        tx.commit().await.map_err(db_error)?;
        Ok(by_age + by_cap)
    }
}
