//! The JSON handlers of routes/events.rs, admin.rs and api.rs, called in-process through
//! `app(state).oneshot(request)` as axum's testing example does: no socket, no agent, the
//! memory store. Cheap checks of who is refused, what is not found, and a happy path; what
//! needs a socket or an agent is in the other tests.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use relay_server::store::MemoryStore;
use relay_server::{AppState, Config, Reach, ServerState};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const AGENT: &str = "agent-token-0123456789";

/// The state `serve` builds, on a memory store, for a relay only this test reaches: open
/// mode, an admin token and an agent token, so every handler has something to refuse.
fn state() -> AppState {
    let config = Config {
        admin_token: Some(ADMIN.to_owned()),
        agent_token: Some(AGENT.to_owned()),
        ..Config::default()
    };
    ServerState::new(
        config,
        "http://relay.test".to_owned(),
        Arc::new(MemoryStore::default()),
        Reach {
            open: true,
            public: false,
        },
        CancellationToken::new(),
    )
}

/// One request through the whole router; answers the status and the body as JSON (`Null`
/// when empty).
async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(doc) => {
            req = req.header("content-type", "application/json");
            Body::from(doc.to_string())
        }
        None => Body::empty(),
    };
    let response = relay_server::app(Arc::clone(state))
        .oneshot(req.body(body).expect("valid request"))
        .await
        .expect("the router is infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    let doc = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, doc)
}

/// Registers `name` through the admin API; answers its token.
async fn create(state: &AppState, name: &str) -> String {
    let (status, doc) = call(
        state,
        "POST",
        "/api/admin/channels",
        Some(ADMIN),
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    doc["token"].as_str().expect("token shown once").to_owned()
}

/// Sends a webhook to `channel`; with no agent it is stored and queued. Answers its id.
async fn queue_webhook(state: &AppState, channel: &str) -> String {
    let (status, doc) = call(
        state,
        "POST",
        &format!("/h/{channel}/hook"),
        None,
        Some(json!({ "n": 1 })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
    assert_eq!(doc["status"], "queued");
    doc["id"].as_str().expect("event id").to_owned()
}

#[tokio::test]
async fn admin_refuses_a_missing_or_wrong_token() {
    let state = state();
    for token in [None, Some("wrong"), Some(AGENT)] {
        let (status, doc) = call(&state, "GET", "/api/admin/channels", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {doc}");
        assert!(doc["error"].is_string(), "{doc}");
    }
}

#[tokio::test]
async fn admin_revoking_an_unknown_channel_is_not_found() {
    let state = state();
    let (status, doc) = call(
        &state,
        "DELETE",
        "/api/admin/channels/nobody",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
}

#[tokio::test]
async fn admin_creates_lists_and_revokes_a_channel() {
    let state = state();
    let token = create(&state, "billing").await;
    assert!(!token.is_empty());

    let (status, doc) = call(&state, "GET", "/api/admin/channels", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let names: Vec<&str> = doc["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["billing"], "{doc}");
    assert!(
        !doc.to_string().contains(&token),
        "the token is shown once, at creation: {doc}"
    );

    let (status, _) = call(
        &state,
        "DELETE",
        "/api/admin/channels/billing",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, doc) = call(&state, "GET", "/api/admin/channels", Some(ADMIN), None).await;
    assert_eq!(doc["channels"], json!([]), "{doc}");
}

#[tokio::test]
async fn api_health_and_readiness_answer_without_a_token() {
    let state = state();
    let (status, doc) = call(&state, "GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (status, doc) = call(&state, "GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "ready");
}

#[tokio::test]
async fn api_channel_needs_the_agent_token_and_reports_no_agents() {
    let state = state();
    let (status, doc) = call(&state, "GET", "/api/channels/orders", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{doc}");

    let (status, doc) = call(&state, "GET", "/api/channels/orders", Some(AGENT), None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["channel"], "orders");
    assert_eq!(doc["url"], "http://relay.test/h/orders");
    assert_eq!(doc["registered"], false);
    assert_eq!(doc["agent_count"], 0);
}

#[tokio::test]
async fn api_token_channel_names_the_channel_of_its_token_only() {
    let state = state();
    let token = create(&state, "payments").await;
    let (status, doc) = call(&state, "GET", "/api/token/channel", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["channel"], "payments");
    assert_eq!(doc["url"], "http://relay.test/h/payments");

    for other in [None, Some(ADMIN), Some(AGENT), Some("hrt_wrong")] {
        let (status, doc) = call(&state, "GET", "/api/token/channel", other, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{other:?}: {doc}");
    }
}

#[tokio::test]
async fn events_refuse_a_missing_or_wrong_token() {
    let state = state();
    for token in [None, Some("wrong")] {
        let (status, doc) = call(&state, "GET", "/api/channels/orders/events", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {doc}");
    }
}

#[tokio::test]
async fn events_an_unknown_or_malformed_id_is_not_found_or_bad() {
    let state = state();
    let unknown = "/api/channels/orders/events/5f0c1a2b-0000-4000-8000-000000000001";
    let (status, doc) = call(&state, "GET", unknown, Some(AGENT), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
    let (status, doc) = call(
        &state,
        "POST",
        &format!("{unknown}/replay"),
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");

    let malformed = "/api/channels/orders/events/not-an-id";
    let (status, doc) = call(&state, "GET", malformed, Some(AGENT), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
}

#[tokio::test]
async fn events_list_and_get_a_queued_webhook() {
    let state = state();
    let (status, doc) = call(
        &state,
        "GET",
        "/api/channels/orders/events",
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["events"], json!([]), "{doc}");

    let id = queue_webhook(&state, "orders").await;
    let (status, doc) = call(
        &state,
        "GET",
        "/api/channels/orders/events",
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let events = doc["events"].as_array().expect("events array");
    assert_eq!(events.len(), 1, "{doc}");
    assert_eq!(events[0]["id"], id.as_str());
    assert_eq!(events[0]["status"], "queued");

    let (status, doc) = call(
        &state,
        "GET",
        &format!("/api/channels/orders/events/{id}"),
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/hook");

    // Another channel's history does not hold it.
    let (status, _) = call(
        &state,
        "GET",
        &format!("/api/channels/invoices/events/{id}"),
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn events_replay_without_an_agent_is_unavailable() {
    let state = state();
    let id = queue_webhook(&state, "orders").await;
    let (status, doc) = call(
        &state,
        "POST",
        &format!("/api/channels/orders/events/{id}/replay"),
        Some(AGENT),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("no agent")),
        "{doc}"
    );
}
