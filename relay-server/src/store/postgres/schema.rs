//! The database's tables, how they are brought up to date, and the recovery at open.

use tracing::{info, warn};

use crate::store::now_ms;

/// Key of the advisory lock the migrations run under (any 64-bit number no other user of the
/// database takes; this one spells "hookrelay" in part).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7265_6c61;

/// Schema migrations, in order: entry `i` takes the database from version `i` to `i + 1`
/// (kept in `schema_version`). Append only: a released migration is never edited, since
/// databases already past it would not run it again.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events, their attempts, registered channels, and what each channel holds.
    //
    // Headers and body stay in the event's row: PostgreSQL keeps large values out of line
    // (TOAST) and an update that does not touch them (recording an attempt) does not copy
    // them, which is why the SQLite schema moved them to a table of their own.
    //
    // `channel_usage` is what the quota counts, kept by triggers so that every writer (any
    // node, prune, an operator's psql) keeps it right. Its row is also each channel's lock:
    // every write that changes a channel's usage locks the row first (see `lock_channel`),
    // so writes to one channel are serialised in one order and cannot deadlock.
    "CREATE TABLE events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id UUID NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        source TEXT,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT,
        headers BYTEA NOT NULL,
        body BYTEA NOT NULL,
        size BIGINT NOT NULL,
        body_len BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        failures BIGINT NOT NULL DEFAULT 0,
        response_status BIGINT,
        next_attempt_at BIGINT,
        event_type TEXT,
        replay_of UUID
    );
    CREATE INDEX events_channel_seq ON events (channel, seq);
    CREATE INDEX events_queued_due ON events (channel, next_attempt_at) WHERE status = 'queued';
    CREATE INDEX events_rejected ON events (channel, seq) WHERE status = 'rejected';
    CREATE TABLE attempts (
        event_seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
        n BIGINT NOT NULL,
        kind TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        agent TEXT,
        status BIGINT,
        headers BYTEA NOT NULL,
        body BYTEA NOT NULL,
        error TEXT,
        PRIMARY KEY (event_seq, n)
    );
    CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        token_hash BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE TABLE channels_version (version BIGINT NOT NULL);
    INSERT INTO channels_version VALUES (0);
    CREATE FUNCTION hookrelay_channels_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE channels_version SET version = version + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE ON channels
        FOR EACH ROW EXECUTE FUNCTION hookrelay_channels_changed();

    CREATE TABLE channel_usage (
        channel TEXT PRIMARY KEY,
        undelivered BIGINT NOT NULL DEFAULT 0,
        open_bytes BIGINT NOT NULL DEFAULT 0,
        bytes BIGINT NOT NULL DEFAULT 0,
        rejected BIGINT NOT NULL DEFAULT 0
    );
    CREATE FUNCTION hookrelay_count(ch TEXT, st TEXT, n BIGINT, sz BIGINT) RETURNS void
    LANGUAGE sql AS $$
        INSERT INTO channel_usage AS u (channel, undelivered, open_bytes, bytes, rejected)
        VALUES (ch,
                CASE WHEN st IN ('queued', 'delivering') THEN n ELSE 0 END,
                CASE WHEN st IN ('queued', 'delivering') THEN sz ELSE 0 END,
                sz,
                CASE WHEN st = 'rejected' THEN n ELSE 0 END)
        ON CONFLICT (channel) DO UPDATE SET
            undelivered = u.undelivered + excluded.undelivered,
            open_bytes = u.open_bytes + excluded.open_bytes,
            bytes = u.bytes + excluded.bytes,
            rejected = u.rejected + excluded.rejected
    $$;
    CREATE FUNCTION hookrelay_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM hookrelay_count(channel, status, count(*), sum(size)::BIGINT)
        FROM new_rows GROUP BY channel, status;
        RETURN NULL;
    END $$;
    CREATE FUNCTION hookrelay_events_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM hookrelay_count(channel, status, -count(*), -sum(size)::BIGINT)
        FROM old_rows GROUP BY channel, status;
        RETURN NULL;
    END $$;
    CREATE FUNCTION hookrelay_event_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM hookrelay_count(OLD.channel, OLD.status, -1, -OLD.size);
        PERFORM hookrelay_count(NEW.channel, NEW.status, 1, NEW.size);
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_inserted AFTER INSERT ON events
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION hookrelay_events_inserted();
    CREATE TRIGGER events_deleted AFTER DELETE ON events
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION hookrelay_events_deleted();
    -- Only a change the quota counts: queued to delivering and back changes nothing.
    CREATE TRIGGER events_moved AFTER UPDATE OF status ON events FOR EACH ROW
        WHEN ((OLD.status IN ('queued', 'delivering')) <> (NEW.status IN ('queued', 'delivering'))
              OR (OLD.status = 'rejected') <> (NEW.status = 'rejected'))
        EXECUTE FUNCTION hookrelay_event_moved();",
    // 2: which node holds which agent, until when: each node renews its rows every few
    // seconds, so a node that dies loses them within seconds (see `Store::renew_leases`).
    "CREATE TABLE agent_leases (
        agent_id UUID PRIMARY KEY,
        node TEXT NOT NULL,
        channel TEXT NOT NULL,
        client TEXT NOT NULL,
        peer TEXT NOT NULL,
        connected_at BIGINT NOT NULL,
        events TEXT[],
        in_flight BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX agent_leases_channel ON agent_leases (channel, connected_at);
    CREATE INDEX agent_leases_node ON agent_leases (node);",
    // 3: which running store (one per server process) is delivering each `delivering` event,
    // and until when each is alive: a store whose lease ran out died, and the others requeue
    // what it was delivering (`sweep`). The partial index is as small as what is in flight.
    "ALTER TABLE events ADD COLUMN instance UUID;
    CREATE INDEX events_delivering ON events (instance) WHERE status = 'delivering';
    CREATE TABLE instances (
        instance UUID PRIMARY KEY,
        node TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );",
    // 4: which running store drains each channel's queue, until when: one at a time, so a
    // channel's queue is delivered in order whichever nodes hold its agents.
    "CREATE TABLE drains (
        channel TEXT PRIMARY KEY,
        instance UUID NOT NULL,
        expires_at BIGINT NOT NULL
    );",
    // 5: the counting functions in PL/pgSQL, whose statements are planned once per
    // connection (a SQL function called from PL/pgSQL is parsed again at every call: the
    // first profile's top symbol), and a status change within one channel counted by one
    // update of its row instead of two (each update of that hot row leaves a dead version
    // that every later lookup steps over until vacuum).
    "CREATE OR REPLACE FUNCTION hookrelay_count(ch TEXT, st TEXT, n BIGINT, sz BIGINT)
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO channel_usage AS u (channel, undelivered, open_bytes, bytes, rejected)
        VALUES (ch,
                CASE WHEN st IN ('queued', 'delivering') THEN n ELSE 0 END,
                CASE WHEN st IN ('queued', 'delivering') THEN sz ELSE 0 END,
                sz,
                CASE WHEN st = 'rejected' THEN n ELSE 0 END)
        ON CONFLICT (channel) DO UPDATE SET
            undelivered = u.undelivered + excluded.undelivered,
            open_bytes = u.open_bytes + excluded.open_bytes,
            bytes = u.bytes + excluded.bytes,
            rejected = u.rejected + excluded.rejected;
    END $$;
    CREATE OR REPLACE FUNCTION hookrelay_event_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        was_open BOOLEAN := OLD.status IN ('queued', 'delivering');
        is_open BOOLEAN := NEW.status IN ('queued', 'delivering');
    BEGIN
        IF OLD.channel = NEW.channel THEN
            UPDATE channel_usage SET
                undelivered = undelivered + is_open::INT - was_open::INT,
                open_bytes = open_bytes + CASE WHEN is_open THEN NEW.size ELSE 0 END
                                        - CASE WHEN was_open THEN OLD.size ELSE 0 END,
                bytes = bytes + NEW.size - OLD.size,
                rejected = rejected + (NEW.status = 'rejected')::INT
                                    - (OLD.status = 'rejected')::INT
            WHERE channel = NEW.channel;
            IF FOUND THEN
                RETURN NULL;
            END IF;
        END IF;
        PERFORM hookrelay_count(OLD.channel, OLD.status, -1, -OLD.size);
        PERFORM hookrelay_count(NEW.channel, NEW.status, 1, NEW.size);
        RETURN NULL;
    END $$;",
    // 6: a status change counted once per statement, not once per row: a batch of records is
    // one statement (see `record.rs`), and a row trigger updated the channel's hot row once
    // per event, each update one more dead version for the next to step over. What an
    // update statement changed is what its new rows count minus what its old rows did, per
    // channel; a statement that changes nothing counted (a claim, queued to delivering)
    // writes nothing.
    "DROP TRIGGER events_moved ON events;
    DROP FUNCTION hookrelay_event_moved();
    CREATE FUNCTION hookrelay_events_updated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO channel_usage AS u (channel, undelivered, open_bytes, bytes, rejected)
        SELECT channel, sum(open), sum(open_bytes), sum(bytes), sum(rejected)
        FROM (
            SELECT channel, -(status IN ('queued', 'delivering'))::INT AS open,
                   -CASE WHEN status IN ('queued', 'delivering') THEN size ELSE 0 END
                       AS open_bytes,
                   -size AS bytes, -(status = 'rejected')::INT AS rejected
            FROM old_rows
            UNION ALL
            SELECT channel, (status IN ('queued', 'delivering'))::INT,
                   CASE WHEN status IN ('queued', 'delivering') THEN size ELSE 0 END,
                   size, (status = 'rejected')::INT
            FROM new_rows
        ) change
        GROUP BY channel
        HAVING sum(open) <> 0 OR sum(open_bytes) <> 0 OR sum(bytes) <> 0
            OR sum(rejected) <> 0
        ON CONFLICT (channel) DO UPDATE SET
            undelivered = u.undelivered + excluded.undelivered,
            open_bytes = u.open_bytes + excluded.open_bytes,
            bytes = u.bytes + excluded.bytes,
            rejected = u.rejected + excluded.rejected;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_updated AFTER UPDATE ON events
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION hookrelay_events_updated();",
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(super) enum MigrateError {
    #[error(
        "its schema is version {found}, newer than this build knows ({known}); upgrade relay-server"
    )]
    TooNew { found: i64, known: i64 },
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What failed, for [`MigrateError::Database`].
fn step(what: &str) -> impl FnOnce(tokio_postgres::Error) -> MigrateError + '_ {
    move |source| MigrateError::Database {
        what: what.to_owned(),
        source,
    }
}

/// Applies the migrations the database lacks, up to `target`, in one transaction that holds
/// an advisory lock ([`MIGRATION_LOCK`]): nodes starting together on an empty database take
/// turns, and the ones after the first find the schema current. The lock is the transaction's
/// (`pg_advisory_xact_lock`), so it is released however the transaction ends, and a failed
/// migration leaves the database as it was.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    target: usize,
) -> Result<(), MigrateError> {
    let tx = client
        .transaction()
        .await
        .map_err(step("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(step("take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )
    .await
    .map_err(step("create schema_version"))?;
    let found: i64 = tx
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .map_err(step("read schema version"))?
        .get(0);
    let known = schema_version(MIGRATIONS.len());
    if found > known {
        return Err(MigrateError::TooNew { found, known });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().take(target).skip(start) {
        let version = schema_version(index + 1);
        let what = format!("migrate schema to version {version}");
        tx.batch_execute(sql).await.map_err(step(&what))?;
        tx.execute("UPDATE schema_version SET version = $1", &[&version])
            .await
            .map_err(step(&what))?;
        info!(version, "event store schema migrated");
    }
    tx.commit().await.map_err(step("commit migration"))
}

/// Requeues, due now, the events left `delivering` by a store instance that is gone: one
/// whose lease in `instances` has run out (it stopped renewing: its process died), or none at
/// all (rows from before instances, and instances that never renewed). A live instance's
/// deliveries are left alone, so every node may sweep at any time; it runs at open and with
/// every renewal of a node's leases. Answers how many it requeued.
pub(super) async fn sweep(
    client: &tokio_postgres::Client,
    now: i64,
) -> Result<u64, tokio_postgres::Error> {
    let requeued = client
        .execute(
            "UPDATE events SET status = 'queued', next_attempt_at = $1, instance = NULL
             WHERE status = 'delivering' AND NOT EXISTS (
                 SELECT 1 FROM instances i
                 WHERE i.instance = events.instance AND i.expires_at > $1)",
            &[&now],
        )
        .await?;
    // What a gone instance offered to the other nodes and nobody took: the queue's now (see
    // `handover`). Its sender has gone with it.
    client
        .execute(
            "UPDATE events SET instance = NULL
             WHERE status = 'queued' AND instance IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM instances i
                 WHERE i.instance = events.instance AND i.expires_at > $1)",
            &[&now],
        )
        .await?;
    if requeued > 0 {
        warn!(
            requeued,
            "requeued events whose server stopped while delivering them"
        );
    }
    Ok(requeued)
}

/// [`sweep`] at open, as a step of opening.
pub(super) async fn recover(client: &tokio_postgres::Client) -> Result<(), MigrateError> {
    sweep(client, now_ms())
        .await
        .map(drop)
        .map_err(step("requeue events left delivering"))
}

/// The schema version after `migrations` migrations.
fn schema_version(migrations: usize) -> i64 {
    i64::try_from(migrations).expect("a handful of migrations fits in i64")
}
