//! One WebSocket connection to the server: read frames, run each delivery on its own task,
//! ping the server, drain on shutdown. How the connection is opened, and what happens after
//! it ends, is `agent.rs`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{AbortHandle, AbortRegistration, Abortable, Aborted};
use protocol::{Abort, DeliveryId, FromAgent, RequestHead, ToAgent, close};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::AgentConfig;
use crate::error::Error;
use crate::event::{Disconnect, Event, Outcome, Started};
use crate::forward;
use crate::pool::Pool;
use crate::wire::{self, Outbox, Received, Ws};

/// Frames queued for the server before delivery tasks wait.
const OUTBOX_CAPACITY: usize = 256;
/// Request body slices buffered per delivery before the reader waits for the target.
const BODY_QUEUE: usize = 16;
/// How long the reader waits for a slow target to take a body slice before dropping that
/// delivery, so one stalled target request cannot hold up the connection's other deliveries.
const BODY_STALL: Duration = Duration::from_secs(10);

/// What every session of one agent shares.
pub(crate) struct Ctx {
    pub(crate) config: AgentConfig,
    /// The connections deliveries are replayed on, one pool per target of `config.routes`
    /// (in [`crate::route::Routes::targets`]'s order).
    pub(crate) pools: Vec<Pool>,
    /// TLS towards the server, read from `config.tls` once for every (re)connection.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) events: Option<mpsc::Sender<Event>>,
    /// Which of `config.servers()` the agent connects to now; moves on when a connection
    /// drops or fails.
    pub(crate) current: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// The relay node the agent connects to now: as given, and its WebSocket URL.
    pub(crate) fn server(&self) -> (&str, &str) {
        let n = 1 + self.config.more_servers.len();
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % n;
        self.config
            .servers()
            .nth(i)
            .expect("i is below the number of servers")
    }

    /// Moves on to the next relay node, for the next connection attempt.
    pub(crate) fn next_server(&self) {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            // Output is best effort: a full queue drops a line rather than stall deliveries.
            let _ = events.try_send(event);
        }
    }
}

/// How one connection ended.
pub(crate) enum SessionEnd {
    /// Shutdown; `unfinished` deliveries were still running at the end of the grace period.
    Shutdown {
        unfinished: usize,
    },
    Lost(Disconnect),
    Fatal(Error),
}

/// Serves one connection until it is lost, the server refuses us, or shutdown.
pub(crate) async fn serve(ctx: &Arc<Ctx>, ws: Ws, shutdown: &CancellationToken) -> SessionEnd {
    let (sink, mut stream) = ws.split();
    let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(runtime::write_batched(
        sink,
        rx,
        writer_stop.clone(),
        wire::is_close,
    ));
    let cancels: Cancels = Arc::default();
    // If this future is dropped (the agent task aborted), the writer and the deliveries stop
    // too, so the socket closes and the server fails the deliveries in flight at once.
    let _stop_on_drop = (
        writer_stop.clone().drop_guard(),
        AbortOnDrop(Arc::clone(&cancels)),
    );
    let tracker = TaskTracker::new();
    let mut bodies: BodySenders = HashMap::new();
    let mut ping = tokio::time::interval(ctx.config.ping_interval);
    ping.tick().await;
    let mut last_seen = tokio::time::Instant::now();
    let mut draining = false;
    let drain_deadline = tokio::time::sleep(ctx.config.shutdown_grace);
    tokio::pin!(drain_deadline);

    let (server, _) = ctx.server();
    let end = loop {
        let received = tokio::select! {
            received = wire::recv(&mut stream, server) => received,
            _ = ping.tick() => {
                if last_seen.elapsed() >= ctx.config.peer_timeout {
                    let why = format!("no message from it for {}s", ctx.config.peer_timeout.as_secs());
                    break SessionEnd::Lost(Disconnect::Lost(why));
                }
                let _ = outbox.try_send(wire::ping());
                continue;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                tracker.close();
                ctx.emit(Event::Draining { in_flight: tracker.len(), grace: ctx.config.shutdown_grace });
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + ctx.config.shutdown_grace);
                continue;
            }
            () = tracker.wait(), if draining => break SessionEnd::Shutdown { unfinished: 0 },
            () = &mut drain_deadline, if draining => {
                warn!("deliveries still in flight at the end of the shutdown grace period");
                break SessionEnd::Shutdown { unfinished: tracker.len() };
            }
        };
        last_seen = tokio::time::Instant::now();
        let lost = |why: &str| SessionEnd::Lost(Disconnect::Lost(why.to_owned()));
        let frame = match received {
            Received::Frame(frame) => frame,
            Received::Other => continue,
            Received::Unexpected => break unexpected(&outbox),
            Received::Undecodable(e) => {
                warn!(error = %e, "undecodable frame from server");
                let _ = outbox.try_send(wire::close(close::PROTOCOL_ERROR, &e.to_string()));
                break lost(&format!("it sent an undecodable frame: {e}"));
            }
            Received::Closed(e @ Error::Refused(_)) => break SessionEnd::Fatal(e),
            Received::Closed(e) => break SessionEnd::Lost(Disconnect::of(&e)),
            Received::Broken(e) => break lost(&e.to_string()),
            Received::Ended => break lost("the connection closed"),
        };
        match frame {
            ToAgent::Request(head) => {
                if draining {
                    let id = head.id;
                    let outbox = outbox.clone();
                    // On its own task: the reader must not wait on the outbox.
                    tracker.spawn(async move { forward::shutting_down(&outbox, id).await });
                    continue;
                }
                let body_rx = if head.fin {
                    None
                } else {
                    let (tx, rx) = mpsc::channel(BODY_QUEUE);
                    bodies.insert(head.id, tx);
                    Some(rx)
                };
                let (cancel, registration) = AbortHandle::new_pair();
                if let Ok(mut in_flight) = cancels.lock() {
                    in_flight.insert(head.id, cancel);
                }
                tracker.spawn(run_delivery(
                    Arc::clone(ctx),
                    outbox.clone(),
                    head,
                    body_rx,
                    registration,
                    Arc::clone(&cancels),
                ));
            }
            ToAgent::Body(chunk) => {
                let Some(tx) = bodies.get(&chunk.id) else {
                    debug!(delivery_id = %chunk.id, "body for an unknown delivery ignored");
                    continue;
                };
                let tx = tx.clone();
                if chunk.fin {
                    bodies.remove(&chunk.id);
                }
                // Frames of one body must stay in order, so a slow target makes us wait, but
                // not past BODY_STALL: then that delivery is dropped and the others go on.
                let sent = tokio::time::timeout(BODY_STALL, tx.send((chunk.data, chunk.fin))).await;
                if sent.is_err() {
                    warn!(delivery_id = %chunk.id, "target not reading the request body; delivery dropped");
                    stop_delivery(&mut bodies, &cancels, &chunk.id);
                    // Tell the server, so the sender gets a 502 now rather than a 504 later.
                    let abort = FromAgent::Abort(Abort {
                        id: chunk.id,
                        reason: "target stopped reading the request body".to_owned(),
                    });
                    wire::try_send(&outbox, &abort);
                }
            }
            ToAgent::Abort(abort) => {
                debug!(delivery_id = %abort.id, reason = %abort.reason, "server aborted delivery");
                stop_delivery(&mut bodies, &cancels, &abort.id);
            }
            ToAgent::Error(e) => {
                let err = wire::refusal(server, e.code, e.message);
                if err.is_fatal() {
                    break SessionEnd::Fatal(err);
                }
                warn!(error = %err, "server reported an error");
            }
            ToAgent::Welcome(_) => break unexpected(&outbox),
        }
    };

    if matches!(end, SessionEnd::Shutdown { .. }) {
        let _ = outbox.try_send(wire::close(close::NORMAL, "agent shutting down"));
    }
    // Deliveries still running have lost their way back: the server already answered 502.
    abort_all(&cancels);
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    writer_stop.cancel();
    end
}

/// Ends the session on a frame the server should not send now (a second welcome) or ever (one
/// only agents send).
fn unexpected(outbox: &Outbox) -> SessionEnd {
    let _ = outbox.try_send(wire::close(close::PROTOCOL_ERROR, "unexpected frame type"));
    SessionEnd::Lost(Disconnect::Lost("it sent an unexpected frame".to_owned()))
}

type BodySenders = HashMap<DeliveryId, mpsc::Sender<(bytes::Bytes, bool)>>;
type Cancels = Arc<Mutex<InFlight>>;

/// The deliveries in flight, each stoppable by its id. An abort handle rather than a
/// cancellation token each: a delivery polls a flag, not a waiter list under a lock.
#[derive(Default)]
struct InFlight {
    by_id: HashMap<DeliveryId, AbortHandle>,
    /// Deliveries whose id came again before they finished: no longer stoppable by id, but
    /// still stopped with the others when the connection ends.
    displaced: Vec<AbortHandle>,
}

impl InFlight {
    fn insert(&mut self, id: DeliveryId, handle: AbortHandle) {
        if let Some(old) = self.by_id.insert(id, handle) {
            self.displaced.push(old);
        }
    }
}

/// Stops a delivery in flight: no more body slices, and its task is cancelled.
fn stop_delivery(bodies: &mut BodySenders, cancels: &Cancels, id: &DeliveryId) {
    bodies.remove(id);
    let handle = cancels.lock().ok().and_then(|mut m| m.by_id.remove(id));
    if let Some(handle) = handle {
        handle.abort();
    }
}

/// Stops every delivery in flight.
fn abort_all(cancels: &Cancels) {
    if let Ok(mut in_flight) = cancels.lock() {
        let InFlight { by_id, displaced } = &mut *in_flight;
        for handle in by_id
            .drain()
            .map(|(_, handle)| handle)
            .chain(displaced.drain(..))
        {
            handle.abort();
        }
    }
}

/// Stops every delivery in flight when dropped.
struct AbortOnDrop(Cancels);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        abort_all(&self.0);
    }
}

async fn run_delivery(
    ctx: Arc<Ctx>,
    outbox: Outbox,
    head: RequestHead,
    body_rx: Option<forward::BodyRx>,
    cancel: AbortRegistration,
    cancels: Cancels,
) {
    let started = Started::now(&head);
    let id = head.id;
    let routes = &ctx.config.routes;
    let Some(index) = routes.pick(started.event_type()) else {
        let outcome = forward::unrouted(&outbox, id, started.event_type()).await;
        if let Ok(mut in_flight) = cancels.lock() {
            in_flight.by_id.remove(&id);
        }
        ctx.emit(Event::Delivered(started.finish(outcome)));
        return;
    };
    let target = (routes.targets().nth(index)).expect("pick names one of the targets");
    // Boxed: the task starts small, so spawning it copies a few words, not the whole
    // state of a request to the target and its response.
    let deliver = Box::pin(forward::deliver(
        &ctx.pools[index],
        target,
        head,
        body_rx,
        &outbox,
        ctx.config.target_timeout,
        ctx.config.print_body,
    ));
    let outcome = Abortable::new(deliver, cancel)
        .await
        .unwrap_or_else(|Aborted| Outcome {
            status: None,
            error: Some("aborted by the server".to_owned()),
            body: None,
        });
    if let Ok(mut in_flight) = cancels.lock() {
        in_flight.by_id.remove(&id);
    }
    ctx.emit(Event::Delivered(started.finish(outcome)));
}
