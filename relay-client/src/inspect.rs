//! `--inspect ADDR`: the live inspector page on a local address, like ngrok's port 4040.
//!
//! The page is the relay server's own (the same assets, from `runtime::inspector`), so it looks
//! and works the same. Its API calls (`/api/channels/{channel}/...`: the history, an event,
//! the live stream, replay) are passed to the server with the agent's token, so nobody logs in
//! locally. Only this agent's channel is served; bind a loopback address, since whoever reaches
//! it reads the channel.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use runtime::inspector::{FAVICON, FAVICON_PATH, HEADERS, SCRIPT, SCRIPT_PATH, STYLE, STYLE_PATH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::api::Api;
use crate::config::ApiConfig;
use crate::error::Error;

/// Largest request body passed on: an edited replay carries a whole webhook body (up to the
/// server's `--max-body`, 25 MiB by default, a third more as base64 in JSON). The server
/// enforces its own limit; this one only bounds what a local page can make the agent hold.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

type Body = BoxBody<Bytes, hyper::Error>;

struct Inspector {
    api: Api,
}

/// Serves the inspector of `api`'s channel on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    api: ApiConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let inspector = Arc::new(Inspector {
        api: Api::new(api)?,
    });
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!(error = %e, "inspector accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let inspector = Arc::clone(&inspector);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let inspector = Arc::clone(&inspector);
                async move { Ok::<_, Infallible>(inspector.handle(req).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    debug!(%peer, error = %e, "inspector connection failed");
                },
                () = stop.cancelled() => {}
            }
        });
    }
}

impl Inspector {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let channel = self.api.channel().as_str();
        let path = req.uri().path().to_owned();
        let page = format!("/c/{channel}");
        let api = protocol::api::path::channel(channel);
        match path.as_str() {
            "/" => redirect(&page),
            // No token to ask for: this side adds the agent's to every API call.
            p if p == page => asset(runtime::inspector::page(false), "text/html; charset=utf-8"),
            SCRIPT_PATH => asset(SCRIPT, "text/javascript; charset=utf-8"),
            STYLE_PATH => asset(STYLE, "text/css; charset=utf-8"),
            FAVICON_PATH => asset(FAVICON, "image/svg+xml"),
            p if p == api || p.starts_with(&format!("{api}/")) => {
                let rest = p[api.len()..].to_owned();
                self.pass_on(req, rest).await
            }
            _ => json_error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// Passes an API call to the server with the agent's token, and streams its answer back
    /// (the live stream is one long answer).
    async fn pass_on(&self, req: Request<Incoming>, rest: String) -> Response<Body> {
        let (parts, body) = req.into_parts();
        if parts.method != Method::GET && parts.method != Method::POST {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let body = Full::new(body)
            .map_err(|never: Infallible| match never {})
            .boxed();
        let answer = self
            .api
            .send(
                parts.method.clone(),
                &format!("{rest}{query}"),
                header(header::ACCEPT),
                header(header::CONTENT_TYPE),
                body,
            )
            .await;
        match answer {
            Ok(answer) => {
                let (parts, body) = answer.into_parts();
                let mut response = Response::new(body.boxed());
                *response.status_mut() = parts.status;
                for name in [
                    header::CONTENT_TYPE,
                    header::CACHE_CONTROL,
                    header::RETRY_AFTER,
                ] {
                    if let Some(value) = parts.headers.get(&name) {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                response
            }
            Err(e) => json_error(StatusCode::BAD_GATEWAY, &e.to_string()),
        }
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&protocol::api::ErrorBody::new(message))
        .expect("a struct of one string always serialises");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
