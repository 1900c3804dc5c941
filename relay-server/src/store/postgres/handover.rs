//! Webhooks that cross nodes ([`Handover`]), in PostgreSQL: the notes travel by
//! `NOTIFY`/`LISTEN` (ids only), the event and its answer in the tables.
//!
//! An offered event is `queued` and names the offering instance (`instance`, otherwise only
//! set while `delivering`); the queue leaves such events alone (see [`super::filter::DUE`]),
//! so the only way out is [`Handover::take`] by a node whose agent takes it, or the offering
//! node withdrawing it, or the sweep once that node is gone ([`super::schema::sweep`]). The
//! row lock of the `UPDATE` decides between a take and a withdraw: one of them changes it.

use std::time::Duration;

use protocol::{ChannelId, DeliveryId};
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::insert::InsertOp;
use super::record::RecordOp;
use super::rows::{
    attempt_from_row, db_error, describe, event_columns, event_from_row, summary_columns,
};
use super::url::{PostgresUrl, Tls, client_config};
use super::{PostgresStore, StoreError};
use crate::store::{Attempt, Event, Handover, NewEvent, Note, Recorded, Transition};

/// Notes a slow receiver may fall behind by before it misses some (it then waits out its
/// deadlines, as for a lost note).
const NOTES_BACKLOG: usize = 1024;

/// Pause before the listening connection is opened again after it failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// The notes as `NOTIFY` payloads on one channel (`hookrelay`): `o <id> <channel>[ <type>]`
/// and `a <id> <failure>`. An event type has no control characters but may have spaces, so
/// it comes last.
pub(super) mod note {
    use protocol::{ChannelId, DeliveryId};

    use crate::store::{NewEvent, Note};

    /// The `LISTEN`/`NOTIFY` channel.
    pub(in super::super) const CHANNEL: &str = "hookrelay";

    /// Sends each payload of the array `$1` (when the transaction commits).
    pub(in super::super) const SEND_EACH: &str =
        "SELECT pg_notify('hookrelay', p) FROM unnest($1::TEXT[]) AS p";

    /// The payload that offers `event`.
    pub(in super::super) fn offered(event: &NewEvent) -> String {
        let mut text = format!("o {} {}", event.id, event.channel);
        if let Some(event_type) = &event.event_type {
            text.push(' ');
            text.push_str(event_type);
        }
        text
    }

    /// The payload that says `id`'s answer is recorded.
    pub(in super::super) fn answered(id: DeliveryId, failure: u16) -> String {
        format!("a {id} {failure}")
    }

    /// The note a payload carries; `None` for one this build does not know.
    pub(in super::super) fn parse(payload: &str) -> Option<Note> {
        let (kind, rest) = payload.split_once(' ')?;
        let (id, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let id = DeliveryId::from_uuid(id.parse().ok()?);
        match kind {
            "o" => {
                let (channel, event_type) = match rest.split_once(' ') {
                    Some((channel, event_type)) => (channel, Some(event_type.to_owned())),
                    None => (rest, None),
                };
                Some(Note::Offered {
                    id,
                    channel: ChannelId::parse(channel).ok()?,
                    event_type,
                })
            }
            "a" => Some(Note::Answered {
                id,
                failure: rest.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Listens for the notes on a connection of its own (a pooled one would be recycled), opened
/// again whenever it fails, until `stop`; each note goes to `notes`.
pub(super) async fn listen(
    url: PostgresUrl,
    notes: broadcast::Sender<Note>,
    stop: CancellationToken,
) {
    loop {
        let ended = match url.tls() {
            Tls::Off => listen_once(&url, tokio_postgres::NoTls, &notes, &stop).await,
            tls => match client_config(tls) {
                Ok(config) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
                    listen_once(&url, tls, &notes, &stop).await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(reason) = ended {
            warn!(%reason, "cannot hear the other nodes; listening again shortly");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// One listening connection, until it fails (the reason) or `stop`.
async fn listen_once<T>(
    url: &PostgresUrl,
    tls: T,
    notes: &broadcast::Sender<Note>,
    stop: &CancellationToken,
) -> Result<(), String>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = (url.config().connect(tls).await).map_err(|e| describe(&e))?;
    // The connection must be polled for `LISTEN` to complete, and it is polled by hand
    // (not spawned) because its notifications come only out of `poll_message`.
    let listen = client.batch_execute("LISTEN hookrelay");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            done = &mut listen, if !listening => {
                done.map_err(|e| describe(&e))?;
                listening = true;
                info!("listening for the other nodes' notes");
                continue;
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => message,
        };
        match message {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == note::CHANNEL => {
                match note::parse(n.payload()) {
                    // No receiver is no error: nobody waits on a note now.
                    Some(note) => drop(notes.send(note)),
                    None => debug!(payload = n.payload(), "unknown note ignored"),
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(describe(&e)),
            None => return Err("the database closed the connection".to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl Handover for PostgresStore {
    async fn offer(&self, event: NewEvent) -> Result<(), StoreError> {
        let op = InsertOp {
            event,
            offered: true,
        };
        self.inserts.submit(op).await
    }

    async fn take(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        let client = self.client().await?;
        let sql = concat!(
            "UPDATE events SET status = 'delivering', instance = $2
             WHERE id = $1 AND status = 'queued' AND instance IS NOT NULL RETURNING ",
            event_columns!()
        );
        let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
        let row = (client
            .query_opt(&stmt, &[id.as_uuid(), &self.instance])
            .await)
            .map_err(db_error)?;
        row.map(|row| event_from_row(&row, channel).map(|(event, _)| event))
            .transpose()
    }

    async fn withdraw(&self, id: DeliveryId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // What the sweep does for a gone instance, for this one event, now.
        let changed = client
            .execute(
                "UPDATE events SET instance = NULL, status = 'queued', next_attempt_at =
                     CASE WHEN status = 'queued' THEN next_attempt_at ELSE $2 END
                 WHERE id = $1 AND (status = 'queued' OR status = 'delivering' AND NOT EXISTS (
                     SELECT 1 FROM instances i
                     WHERE i.instance = events.instance AND i.expires_at > $2))",
                &[id.as_uuid(), &crate::store::now_ms()],
            )
            .await
            .map_err(db_error)?;
        Ok(changed > 0)
    }

    async fn record_answer(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
        failure: u16,
    ) -> Result<Recorded, StoreError> {
        let mut op = RecordOp::new(id, attempt, then, true);
        op.note = Some(note::answered(id, failure));
        self.records.submit(op).await
    }

    async fn answer(
        &self,
        channel: &ChannelId,
        id: DeliveryId,
    ) -> Result<Option<Attempt>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT a.n, a.kind, a.started_at, a.duration_ms, a.agent, a.status, a.headers,
                          a.body, a.error
                   FROM attempts a JOIN events e ON a.event_seq = e.seq
                   WHERE e.channel = $1 AND e.id = $2 ORDER BY a.n DESC LIMIT 1";
        let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
        let row = (client
            .query_opt(&stmt, &[&channel.as_str(), id.as_uuid()])
            .await)
            .map_err(db_error)?;
        row.as_ref().map(attempt_from_row).transpose()
    }

    fn notes(&self) -> broadcast::Receiver<Note> {
        self.notes.subscribe()
    }
}

/// A fresh sender of notes, for a store that listens.
pub(super) fn notes() -> broadcast::Sender<Note> {
    broadcast::channel(NOTES_BACKLOG).0
}

#[cfg(test)]
mod tests {
    use super::note;
    use crate::store::Note;
    use protocol::{ChannelId, DeliveryId};

    #[test]
    fn notes_round_trip_through_their_payloads() {
        let id = DeliveryId::random();
        let channel = ChannelId::parse("gh").expect("valid name");
        let answered = note::parse(&note::answered(id, 504));
        assert_eq!(answered, Some(Note::Answered { id, failure: 504 }));
        for event_type in [None, Some("push"), Some("invoice paid")] {
            let payload = format!(
                "o {id} gh{}",
                event_type.map(|t| format!(" {t}")).unwrap_or_default()
            );
            let offered = Note::Offered {
                id,
                channel: channel.clone(),
                event_type: event_type.map(str::to_owned),
            };
            assert_eq!(note::parse(&payload), Some(offered));
        }
        assert_eq!(note::parse("x whatever"), None);
        assert_eq!(note::parse("o not-a-uuid gh"), None);
    }
}
