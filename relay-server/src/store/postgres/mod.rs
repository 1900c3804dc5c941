//! The PostgreSQL [`Store`] backend (`--store postgres://...`): events, attempts and channels
//! in a database a team already runs, so that the data outlives the relay's machine.
//!
//! Each open store is an instance with a lease of its own (`instances`), renewed with its
//! node's agent leases; a `delivering` event names the instance delivering it, and any node
//! requeues the events of an instance whose lease ran out (see [`schema::sweep`]).
//!
//! Connections come from a pool (deadpool), each driven by its own task; a connection the
//! database dropped (a restart) fails the one write that finds it and is replaced on the next,
//! so the store recovers by itself once the database is back. Each write is one transaction,
//! and the inserts and the records of concurrent callers share one ([`batch`]). The quota is
//! counted in the database (`channel_usage`, kept by triggers) and checked under that
//! channel's row lock, so it holds however many processes write; every transaction takes the
//! channel locks it needs first, in one statement, in name order, so none waits in a circle.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use protocol::{ChannelId, DeliveryId, Subscription};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};
use tracing::info;

use crate::channel::ChannelRecord;

use super::{
    AgentLease, Attempt, Event, EventStatus, EventSummary, Handover, ListQuery, Millis, NewEvent,
    Note, Quota, Recorded, Store, StoreError, Transition,
};
use batch::Batcher;
use filter::{DUE, LIST, NEXT_DUE, sql_limit, subscription_patterns, takes_params};
use insert::{InsertOp, Inserts};
use record::{RecordOp, Records};
use rows::{
    attempt_from_row, channel_from_row, channel_name, db_error, describe, event_columns,
    event_from_row, summary_columns, summary_from_row,
};
use schema::{MIGRATIONS, MigrateError, migrate, recover};
pub use url::{PostgresUrl, UrlError};
use url::{Tls, client_config};

mod batch;
mod filter;
mod handover;
mod insert;
mod prune;
mod record;
mod rows;
mod schema;
mod url;

#[cfg(test)]
#[path = "../../../../e2e/src/postgres.rs"]
pub(crate) mod cluster;

/// Connections the pool opens at most. Every write holds one for a few round trips; more
/// than this many at once wait (up to [`POOL_WAIT`]).
const POOL_SIZE: usize = 16;
/// How long a caller waits for a free connection, or for a new one to open, before its write
/// fails (a 503 for a webhook) rather than hanging while the database is unreachable.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL [`Store`]. Dropping it closes the batch tasks' queues: they run what is
/// queued and end.
pub struct PostgresStore {
    pool: Pool,
    url: PostgresUrl,
    /// This open store, as `delivering` events and the `instances` table name it.
    instance: uuid::Uuid,
    inserts: Batcher<Inserts>,
    records: Batcher<Records>,
    /// The other nodes' notes (and this one's), as [`handover::listen`] hears them.
    notes: tokio::sync::broadcast::Sender<Note>,
    /// Stops the listening task when the store is dropped.
    _listening: tokio_util::sync::DropGuard,
}

impl PostgresStore {
    /// Connects to the database `url` names, brings its schema up to date and requeues events
    /// a previous run left `delivering`, holding each channel to `quota`.
    ///
    /// A database that cannot be reached, refuses the login or has a newer schema fails here,
    /// as [`StoreError::Database`], so the server refuses to start.
    pub async fn open(url: &PostgresUrl, quota: Quota) -> Result<PostgresStore, StoreError> {
        Self::open_with(url, quota, true).await
    }

    /// Opens the store beside a server that may be running on it (for `relay-server
    /// channels`): the same as [`PostgresStore::open`] but without requeueing `delivering`
    /// events, which that server is delivering.
    pub async fn open_beside_server(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        Self::open_with(url, Quota::UNLIMITED, false).await
    }

    async fn open_with(
        url: &PostgresUrl,
        quota: Quota,
        requeue: bool,
    ) -> Result<PostgresStore, StoreError> {
        let failed = |reason: String| StoreError::Database {
            target: url.to_string(),
            reason,
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match url.tls() {
            Tls::Off => Manager::from_config(url.config(), NoTls, manager_config),
            tls => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                    client_config(tls).map_err(|e| failed(format!("set up TLS: {e}")))?,
                );
                Manager::from_config(url.config(), tls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| failed(format!("set up the connection pool: {e}")))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| failed(format!("connect: {}", pool_reason(&e))))?;
        let migrated = migrate(&mut client, MIGRATIONS.len()).await;
        let recovered = match migrated {
            Ok(()) if requeue => recover(&client).await,
            other => other,
        };
        recovered.map_err(|e| match e {
            MigrateError::Database { what, source } => {
                failed(format!("{what}: {}", describe(&source)))
            }
            e @ MigrateError::TooNew { .. } => failed(e.to_string()),
        })?;
        drop(client);
        info!(store = %url, "event store open");
        let instance = uuid::Uuid::new_v4();
        let notes = handover::notes();
        let listening = tokio_util::sync::CancellationToken::new();
        if requeue {
            // A server's store: it hears the other nodes. `channels` commands do not.
            let listen = handover::listen(url.clone(), notes.clone(), listening.clone());
            tokio::spawn(listen);
        }
        Ok(PostgresStore {
            instance,
            notes,
            _listening: listening.drop_guard(),
            inserts: Batcher::start(pool.clone(), Inserts { quota, instance }),
            records: Batcher::start(pool.clone(), Records),
            pool,
            url: url.clone(),
        })
    }

    /// How well group commit is doing: `commits` counts the batches of inserts and records,
    /// `writes` the writes they carried.
    pub fn write_stats(&self) -> super::WriteStats {
        let (inserts, records) = (self.inserts.stats(), self.records.stats());
        super::WriteStats {
            commits: inserts.commits + records.commits,
            writes: inserts.writes + records.writes,
        }
    }

    /// A connection from the pool; [`StoreError::Backend`] when none can be had in time.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(format!("cannot reach the database: {}", pool_reason(&e)))
        })
    }
}

/// Why the pool could not hand out a connection, with the database's own reason.
fn pool_reason(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            format!("no connection within {} s", POOL_WAIT.as_secs())
        }
        e => e.to_string(),
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .field("pool", &self.pool.status())
            .field("writes", &self.write_stats())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn insert(&self, event: NewEvent) -> Result<(), StoreError> {
        let op = InsertOp {
            event,
            offered: false,
        };
        self.inserts.submit(op).await
    }

    async fn begin(&self, id: DeliveryId) -> Result<bool, StoreError> {
        // Queued to delivering changes no count, so it needs no channel lock (see the
        // `events_moved` trigger). The row's lock makes it a claim: of two nodes updating the
        // same queued event, the second finds it delivering and changes nothing.
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET status = 'delivering', instance = $2
                 WHERE id = $1 AND status = 'queued' AND instance IS NULL",
                &[id.as_uuid(), &self.instance],
            )
            .await
            .map_err(db_error)
            .map(|changed| changed > 0)
    }

    async fn record(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        self.records
            .submit(RecordOp::new(id, attempt, then, false))
            .await
    }

    async fn record_lazily(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        self.records
            .submit(RecordOp::new(id, attempt, then, true))
            .await
    }

    async fn due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (all, exact, prefixes) = takes_params(subscription_patterns(takes));
        let client = self.client().await?;
        let stmt = client.prepare_cached(DUE).await.map_err(db_error)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &channel.as_str(),
                    &now,
                    &all,
                    &exact,
                    &prefixes,
                    &sql_limit(limit),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| event_from_row(row, channel).map(|(event, _)| event))
            .collect()
    }

    async fn next_due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
    ) -> Result<Option<Millis>, StoreError> {
        let (all, exact, prefixes) = takes_params(subscription_patterns(takes));
        let client = self.client().await?;
        let stmt = client.prepare_cached(NEXT_DUE).await.map_err(db_error)?;
        let row = client
            .query_one(&stmt, &[&channel.as_str(), &all, &exact, &prefixes])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn list(
        &self,
        channel: &ChannelId,
        query: &ListQuery,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let client = self.client().await?;
        let before = match query.before {
            None => i64::MAX,
            Some(id) => client
                .query_opt(
                    "SELECT seq FROM events WHERE id = $1 AND channel = $2",
                    &[id.as_uuid(), &channel.as_str()],
                )
                .await
                .map_err(db_error)?
                .ok_or(StoreError::UnknownEvent(id))?
                .get(0),
        };
        let (all, exact, prefixes) =
            takes_params(query.event_type.as_ref().map(std::slice::from_ref));
        let stmt = client.prepare_cached(LIST).await.map_err(db_error)?;
        let params: [&(dyn ToSql + Sync); 7] = [
            &channel.as_str(),
            &before,
            &query.status.map(EventStatus::as_str),
            &all,
            &exact,
            &prefixes,
            &sql_limit(query.limit),
        ];
        let rows = client.query(&stmt, &params).await.map_err(db_error)?;
        rows.iter()
            .map(|row| summary_from_row(row, channel))
            .collect()
    }

    async fn get(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot, so the attempts belong to the same moment as the event.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_error)?;
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE channel = $1 AND id = $2"
        );
        let Some(row) = tx
            .query_opt(sql, &[&channel.as_str(), id.as_uuid()])
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let (mut event, seq) = event_from_row(&row, channel)?;
        let sql = "SELECT n, kind, started_at, duration_ms, agent, status, headers, body, error
                   FROM attempts WHERE event_seq = $1 ORDER BY n";
        let rows = tx.query(sql, &[&seq]).await.map_err(db_error)?;
        event.attempts = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(event))
    }

    async fn count(
        &self,
        channel: &ChannelId,
        status: Option<EventStatus>,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM events
                 WHERE channel = $1 AND ($2::TEXT IS NULL OR status = $2)",
                &[&channel.as_str(), &status.map(EventStatus::as_str)],
            )
            .await
            .map_err(db_error)?;
        let n: i64 = row.get(0);
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    async fn prune(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let (slice, more) = self.prune_slice(cutoff, cap).await?;
            deleted += slice;
            if !more || slice == 0 {
                return Ok(deleted);
            }
        }
    }

    async fn create_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        let settings = settings_json(&record)?;
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO channels (name, token_hash, created_at, settings)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[
                    &record.name.as_str(),
                    &record.token_hash.0.as_slice(),
                    &record.created_at,
                    &settings,
                ],
            )
            .await
            .map_err(db_error)?;
        if inserted == 0 {
            return Err(StoreError::ChannelExists(record.name));
        }
        Ok(())
    }

    async fn update_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        let settings = settings_json(&record)?;
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE channels SET token_hash = $2, settings = $3 WHERE name = $1",
                &[
                    &record.name.as_str(),
                    &record.token_hash.0.as_slice(),
                    &settings,
                ],
            )
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Err(StoreError::UnknownChannel(record.name));
        }
        Ok(())
    }

    async fn delete_channel(&self, name: &ChannelId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM channels WHERE name = $1", &[&name.as_str()])
            .await
            .map_err(db_error)?;
        Ok(deleted > 0)
    }

    async fn channels(&self) -> Result<(u64, Vec<ChannelRecord>), StoreError> {
        let client = self.client().await?;
        // One statement, so the version belongs to the same snapshot as the rows.
        let rows = client
            .query(
                "SELECT v.version, c.name, c.token_hash, c.created_at, c.settings
                 FROM channels_version v LEFT JOIN channels c ON true
                 ORDER BY c.name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db_error)?;
        let version = rows.first().map_or(0, |row| row.get::<_, i64>(0));
        let records = rows
            .iter()
            .filter(|row| row.get::<_, Option<&str>>(1).is_some())
            .map(|row| channel_from_row(row, 1))
            .collect::<Result<_, _>>()?;
        Ok((u64::try_from(version).unwrap_or(0), records))
    }

    async fn channels_version(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        // Asked every `--channel-reload`: prepared once per connection.
        let stmt = (client
            .prepare_cached("SELECT version FROM channels_version")
            .await)
            .map_err(db_error)?;
        let row = client.query_one(&stmt, &[]).await.map_err(db_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        // Assigning a transaction id is what a write needs first; a read-only replica (or a
        // database in recovery) refuses it.
        let client = self.client().await?;
        client
            .execute("SELECT txid_current()", &[])
            .await
            .map_err(db_error)
            .map(drop)
    }

    async fn queue_depths(&self) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT channel, count(*) FROM events WHERE status = 'queued'
                 GROUP BY channel ORDER BY channel COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.get(1);
                Ok((channel_name(row.get(0))?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    fn handover(&self) -> Option<&dyn Handover> {
        Some(self)
    }

    async fn drain_turn(&self, channel: &ChannelId, until: Millis) -> Result<bool, StoreError> {
        // Taken when nobody holds it, or its holder let it run out; kept by asking again.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO drains AS d (channel, instance, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (channel) DO UPDATE SET instance = $2, expires_at = $3
                 WHERE d.instance = $2 OR d.expires_at < $4
                 RETURNING 1",
            )
            .await
            .map_err(db_error)?;
        let now = super::now_ms();
        let row = (client.query_opt(&stmt, &[&channel.as_str(), &self.instance, &until, &now]))
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    async fn drain_done(&self, channel: &ChannelId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM drains WHERE channel = $1 AND instance = $2",
                &[&channel.as_str(), &self.instance],
            )
            .await
            .map_err(db_error)
            .map(drop)
    }

    fn shares_agents(&self) -> bool {
        true
    }

    async fn renew_leases(
        &self,
        node: &str,
        agents: Vec<AgentLease>,
        until: Millis,
    ) -> Result<Vec<ChannelId>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let held: Vec<uuid::Uuid> = agents.iter().map(|a| a.agent_id).collect();
        tx.execute(
            "DELETE FROM agent_leases WHERE node = $1 AND NOT (agent_id = ANY($2))",
            &[&node, &held],
        )
        .await
        .map_err(db_error)?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO agent_leases (agent_id, node, channel, client, peer, connected_at,
                                           events, in_flight, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (agent_id) DO UPDATE
                 SET node = EXCLUDED.node, in_flight = EXCLUDED.in_flight,
                     expires_at = EXCLUDED.expires_at",
            )
            .await
            .map_err(db_error)?;
        tx.execute(
            "INSERT INTO instances (instance, node, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (instance) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[&self.instance, &node, &until],
        )
        .await
        .map_err(db_error)?;
        // Pipelined, as records are (`record.rs`): one round trip for all of a node's agents,
        // not one each every renewal.
        let in_flight: Vec<i64> = (agents.iter())
            .map(|agent| i64::try_from(agent.in_flight).unwrap_or(i64::MAX))
            .collect();
        let channels: Vec<&str> = agents.iter().map(|a| a.channel.as_str()).collect();
        let upserts =
            (agents.iter().zip(&in_flight).zip(&channels)).map(|((agent, in_flight), channel)| {
                let values: [&(dyn ToSql + Sync); 9] = [
                    &agent.agent_id,
                    &node,
                    channel,
                    &agent.client,
                    &agent.peer,
                    &agent.connected_at,
                    &agent.events,
                    in_flight,
                    &until,
                ];
                let (tx, upsert) = (&tx, &upsert);
                async move { tx.execute(upsert, &values).await }
            });
        for done in futures_util::future::join_all(upserts).await {
            done.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        // What a dead instance was delivering is queued again, and what is due on the
        // channels of this node's agents is for its dispatcher to deliver (queued by any node).
        let now = super::now_ms();
        schema::sweep(&client, now).await.map_err(db_error)?;
        forget_expired(&client, now).await?;
        let rows = client
            .query(
                "SELECT DISTINCT channel FROM events
                 WHERE status = 'queued' AND instance IS NULL AND next_attempt_at <= $2
                 AND channel = ANY($1)",
                &[&channels, &now],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(|row| channel_name(row.get(0))).collect()
    }

    async fn leased_agents(
        &self,
        channel: &ChannelId,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        let client = self.client().await?;
        // Asked for every webhook to a node that neither holds the channel's agent nor knows
        // of one elsewhere: prepared once.
        let stmt = client
            .prepare_cached(
                "SELECT agent_id, node, client, peer, connected_at, events, in_flight, channel
                 FROM agent_leases WHERE channel = $1 AND expires_at > $2
                 ORDER BY connected_at, agent_id",
            )
            .await
            .map_err(db_error)?;
        let rows = (client.query(&stmt, &[&channel.as_str(), &now]).await).map_err(db_error)?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn agents_elsewhere(
        &self,
        node: &str,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT agent_id, node, client, peer, connected_at, events, in_flight, channel
                 FROM agent_leases WHERE node <> $1 AND expires_at > $2
                 ORDER BY channel, connected_at, agent_id",
                &[&node, &now],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(lease_from_row).collect()
    }
}

/// An [`AgentLease`] from the columns `agent_id, node, client, peer, connected_at, events,
/// in_flight, channel` of `agent_leases`.
fn lease_from_row(row: &tokio_postgres::Row) -> Result<AgentLease, StoreError> {
    Ok(AgentLease {
        agent_id: row.get(0),
        node: row.get(1),
        channel: channel_name(row.get(7))?,
        client: row.get(2),
        peer: row.get(3),
        connected_at: row.get(4),
        events: row.get(5),
        in_flight: u64::try_from(row.get::<_, i64>(6)).unwrap_or(0),
    })
}

/// Forgets the instances, agent leases and drain turns that ran out a minute ago or more (a
/// dead node's: its events were requeued by then, and no node lists its agents), so these
/// tables stay as small as what runs.
async fn forget_expired(client: &tokio_postgres::Client, now: i64) -> Result<(), StoreError> {
    let before = now.saturating_sub(60_000);
    for table in [
        "DELETE FROM instances WHERE expires_at < $1",
        "DELETE FROM agent_leases WHERE expires_at < $1",
        "DELETE FROM drains WHERE expires_at < $1",
    ] {
        client.execute(table, &[&before]).await.map_err(db_error)?;
    }
    Ok(())
}

fn settings_json(record: &ChannelRecord) -> Result<String, StoreError> {
    serde_json::to_string(&record.settings)
        .map_err(|e| StoreError::Backend(format!("cannot encode channel settings: {e}")))
}

#[cfg(test)]
mod tests;
