//! The local target an agent forwards to: a real HTTP server on 127.0.0.1:0 that reports
//! every request it gets, byte for byte.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::DEADLINE;

/// What the target saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

pub struct TestTarget {
    pub addr: SocketAddr,
    pub url: String,
    pub seen: mpsc::Receiver<Seen>,
    release: Arc<watch::Sender<bool>>,
}

impl TestTarget {
    /// Lets every request waiting in `/hold` (now or later) answer.
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

#[derive(Clone)]
struct TargetState {
    seen: mpsc::Sender<Seen>,
    release: Arc<watch::Sender<bool>>,
}

/// A local target on 127.0.0.1:0. Every request is reported on `seen`, then:
/// `/hold...` waits for [`TestTarget::release`] and answers 200 `released`; `/flaky...` answers 503
/// until then and 200 `finally` after; `/status/{code}` answers that
/// status; anything else answers 201 echoing the body, with `x-echo-method`, `x-echo-uri` and
/// two `x-repeat` headers.
pub async fn start_target() -> TestTarget {
    let (tx, seen) = mpsc::channel(4096);
    let release = Arc::new(watch::channel(false).0);
    let state = TargetState {
        seen: tx,
        release: Arc::clone(&release),
    };
    let app = Router::new()
        .fallback(target_handler)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    let addr = serve_local(app).await;
    TestTarget {
        addr,
        url: format!("http://{addr}"),
        seen,
        release,
    }
}

/// Serves `app` on 127.0.0.1:0 in the background; answers the bound address.
pub async fn serve_local(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn target_handler(State(state): State<TargetState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.expect("target reads body").to_bytes();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.clone(),
    };
    let _ = state.seen.send(seen).await;
    if uri.starts_with("/hold") {
        let _ = state
            .release
            .subscribe()
            .wait_for(|released| *released)
            .await;
        return Response::new(Body::from("released"));
    }
    if uri.starts_with("/flaky") {
        if *state.release.borrow() {
            return Response::new(Body::from("finally"));
        }
        let mut resp = Response::new(Body::from("not yet"));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    }
    if let Some(code) = uri.strip_prefix("/status/") {
        let code: u16 = code.parse().expect("status code in path");
        let mut resp = Response::new(Body::from(format!("status {code}")));
        *resp.status_mut() = StatusCode::from_u16(code).expect("valid status");
        return resp;
    }
    Response::builder()
        .status(201)
        .header("x-echo-method", parts.method.as_str())
        .header("x-echo-uri", uri)
        .header("x-repeat", "one")
        .header("x-repeat", "two")
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .expect("valid response")
}

/// Receives the next request the target saw.
pub async fn next_seen(target: &mut TestTarget) -> Seen {
    tokio::time::timeout(DEADLINE, target.seen.recv())
        .await
        .expect("target saw a request within the deadline")
        .expect("target still running")
}

/// One request [`start_recording_target`] served: the delivery id the relay gave it, the body
/// byte for byte, and when the target started and finished serving it.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The `x-hookrelay-delivery` header (empty if the request had none).
    pub delivery: String,
    pub body: Bytes,
    pub started: std::time::Instant,
    pub finished: std::time::Instant,
}

/// The target of [`start_recording_target`]: every request it served so far, in the order
/// each finished.
pub struct RecordingTarget {
    pub url: String,
    visits: Arc<std::sync::Mutex<Vec<Visit>>>,
}

impl RecordingTarget {
    /// A copy of every visit so far.
    pub fn visits(&self) -> Vec<Visit> {
        self.visits.lock().expect("visits lock").clone()
    }
}

/// A local target on 127.0.0.1:0 that answers every request 200 after holding it for `hold`,
/// and records each one as a [`Visit`] when it answers. Unlike [`start_target`] it keeps no
/// channel that could fill up, so it suits tests that send hundreds of webhooks, and its
/// start/finish times let a test check that no delivery id was ever being served twice at
/// once (the hold widens each request's window, so such an overlap cannot slip between two
/// quick requests).
pub async fn start_recording_target(hold: std::time::Duration) -> RecordingTarget {
    let visits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&visits);
    let app = Router::new()
        .fallback(move |req: Request| {
            let visits = Arc::clone(&kept);
            async move {
                let started = std::time::Instant::now();
                let (parts, body) = req.into_parts();
                let delivery = parts
                    .headers
                    .get("x-hookrelay-delivery")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let body = body.collect().await.expect("target reads body").to_bytes();
                tokio::time::sleep(hold).await;
                let visit = Visit {
                    delivery,
                    body,
                    started,
                    finished: std::time::Instant::now(),
                };
                visits.lock().expect("visits lock").push(visit);
                Response::new(Body::from("recorded"))
            }
        })
        .layer(axum::extract::DefaultBodyLimit::disable());
    let addr = serve_local(app).await;
    RecordingTarget {
        url: format!("http://{addr}"),
        visits,
    }
}
