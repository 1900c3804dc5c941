//! The HTTP API's JSON, pinned byte for byte: the inspector page, scripts and older agents
//! read these answers, so a renamed field, a `null` turned absent or a reordered object fails
//! here. Each expected string is what the server answered before these types existed.

use bytes::Bytes;
use protocol::DeliveryId;
use protocol::api::{
    Accepted, AdminChannel, AdminChannels, AgentStatus, Attempt, AttemptKind, AttemptSummary,
    BodyEncoding, ChannelStatus, ContentError, ErrorBody, EventDetail, EventPage, EventStatus,
    EventSummary, Header, Health, LiveAttempt, LiveReload, Open, ReplayEdit, Replayed,
    TokenChannel, decode_body,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn id() -> DeliveryId {
    DeliveryId::from_uuid(uuid::Uuid::nil())
}

/// `value` serialises to `json` exactly, and `json` reads back as `value`.
fn pinned<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T, json: &str) {
    assert_eq!(serde_json::to_string(value).expect("serialises"), json);
    let back: T = serde_json::from_str(json).expect("deserialises");
    assert_eq!(&back, value);
}

fn summary() -> EventSummary {
    EventSummary {
        attempts: 2,
        body_bytes: 3,
        event_type: Some("push".into()),
        id: id(),
        method: "POST".into(),
        next_attempt_at: Some("2023-11-14T22:13:21.000Z".into()),
        path: "/x".into(),
        query: Some("a=1".into()),
        received_at: "2023-11-14T22:13:20.123Z".into(),
        replay_of: None,
        response_status: Some(500),
        status: EventStatus::Queued.into(),
    }
}

fn attempt_summary() -> AttemptSummary {
    AttemptSummary {
        agent: Some("ag".into()),
        duration_ms: 12,
        error: Some("boom".into()),
        kind: AttemptKind::Queued.into(),
        n: 1,
        started_at: "2023-11-14T22:13:20.500Z".into(),
        status: None,
    }
}

fn attempt() -> Attempt {
    let headers = vec![
        ("a".to_owned(), Bytes::from_static(b"b")),
        ("x".to_owned(), Bytes::from_static(b"\xff")),
    ];
    Attempt::new(attempt_summary(), &headers, b"\xff\x00")
}

const ATTEMPT: &str = r#"{"agent":"ag","body":"/wA=","body_bytes":2,"body_encoding":"base64","duration_ms":12,"error":"boom","headers":[{"name":"a","value":"b"},{"name":"x","value_base64":"/w=="}],"kind":"queued","n":1,"started_at":"2023-11-14T22:13:20.500Z","status":null}"#;

#[test]
fn event_summary() {
    pinned(
        &summary(),
        r#"{"attempts":2,"body_bytes":3,"event_type":"push","id":"00000000-0000-0000-0000-000000000000","method":"POST","next_attempt_at":"2023-11-14T22:13:21.000Z","path":"/x","query":"a=1","received_at":"2023-11-14T22:13:20.123Z","replay_of":null,"response_status":500,"status":"queued"}"#,
    );
    let delivered = EventSummary {
        event_type: None,
        next_attempt_at: None,
        replay_of: Some(id()),
        query: None,
        response_status: None,
        status: EventStatus::Delivered.into(),
        ..summary()
    };
    pinned(
        &delivered,
        r#"{"attempts":2,"body_bytes":3,"event_type":null,"id":"00000000-0000-0000-0000-000000000000","method":"POST","next_attempt_at":null,"path":"/x","query":null,"received_at":"2023-11-14T22:13:20.123Z","replay_of":"00000000-0000-0000-0000-000000000000","response_status":null,"status":"delivered"}"#,
    );
}

#[test]
fn an_older_servers_summary_reads_without_a_type() {
    let old = r#"{"attempts":2,"body_bytes":3,"id":"00000000-0000-0000-0000-000000000000","method":"POST","next_attempt_at":null,"path":"/x","query":null,"received_at":"2023-11-14T22:13:20.123Z","response_status":null,"status":"delivered"}"#;
    let read: EventSummary = serde_json::from_str(old).expect("an older answer reads");
    assert_eq!((read.event_type, read.replay_of), (None, None));
}

#[test]
fn edited_replays_leave_out_what_they_keep() {
    pinned(&ReplayEdit::default(), "{}");
    let edit = ReplayEdit {
        body: Some("{}".into()),
        body_encoding: None,
        headers: Some(vec![Header::encode("x-a", b"1")]),
    };
    pinned(
        &edit,
        r#"{"body":"{}","headers":[{"name":"x-a","value":"1"}]}"#,
    );
    assert!(ReplayEdit::default().is_empty() && !edit.is_empty());
}

#[test]
fn event_page() {
    let page = EventPage {
        channel: "c".into(),
        events: vec![],
        next_before: None,
    };
    pinned(&page, r#"{"channel":"c","events":[],"next_before":null}"#);
}

#[test]
fn attempts_with_and_without_the_response() {
    pinned(&attempt(), ATTEMPT);
    pinned(
        &attempt_summary(),
        r#"{"agent":"ag","duration_ms":12,"error":"boom","kind":"queued","n":1,"started_at":"2023-11-14T22:13:20.500Z","status":null}"#,
    );
}

#[test]
fn event_detail() {
    let s = summary();
    let detail = EventDetail {
        attempts: vec![attempt()],
        body: "abc".into(),
        body_bytes: 3,
        body_encoding: BodyEncoding::Utf8,
        channel: "c".into(),
        event_type: s.event_type,
        headers: vec![Header::encode("content-type", b"text/plain")],
        id: s.id,
        method: s.method,
        next_attempt_at: s.next_attempt_at,
        path: s.path,
        query: s.query,
        received_at: s.received_at,
        replay_of: s.replay_of,
        response_status: s.response_status,
        source: None,
        status: s.status,
    };
    let json = format!(
        r#"{{"attempts":[{ATTEMPT}],"body":"abc","body_bytes":3,"body_encoding":"utf8","channel":"c","event_type":"push","headers":[{{"name":"content-type","value":"text/plain"}}],"id":"{NIL}","method":"POST","next_attempt_at":"2023-11-14T22:13:21.000Z","path":"/x","query":"a=1","received_at":"2023-11-14T22:13:20.123Z","replay_of":null,"response_status":500,"source":null,"status":"queued"}}"#
    );
    pinned(&detail, &json);
}

#[test]
fn replay_and_live_stream() {
    let replayed = Replayed {
        attempt: attempt(),
        event_type: Some("push".into()),
        id: id(),
        method: "POST".into(),
        path: "/x".into(),
        query: None,
        replay_of: None,
        status: EventStatus::Failed.into(),
    };
    let json = format!(
        r#"{{"attempt":{ATTEMPT},"event_type":"push","id":"{NIL}","method":"POST","path":"/x","query":null,"replay_of":null,"status":"failed"}}"#
    );
    pinned(&replayed, &json);
    let live = LiveAttempt {
        attempt: attempt_summary(),
        id: id(),
        status: EventStatus::Delivering.into(),
    };
    let json = format!(
        r#"{{"attempt":{{"agent":"ag","duration_ms":12,"error":"boom","kind":"queued","n":1,"started_at":"2023-11-14T22:13:20.500Z","status":null}},"id":"{NIL}","status":"delivering"}}"#
    );
    pinned(&live, &json);
    pinned(&LiveReload { missed: 3 }, r#"{"missed":3}"#);
}

#[test]
fn channel_answers() {
    let status = ChannelStatus {
        agent_count: 1,
        agents: vec![AgentStatus {
            client: "relay-client/0.1.0".into(),
            connected_at: "2023-11-14T22:13:20.123Z".into(),
            events: Some(vec!["push".into(), "issue*".into()]),
            id: NIL.into(),
            in_flight: 0,
            node: "relay-1".into(),
            peer: "127.0.0.1:5000".into(),
        }],
        channel: "c".into(),
        mode: "balance".into(),
        registered: false,
        url: "http://r/h/c".into(),
    };
    pinned(
        &status,
        r#"{"agent_count":1,"agents":[{"client":"relay-client/0.1.0","connected_at":"2023-11-14T22:13:20.123Z","events":["push","issue*"],"id":"00000000-0000-0000-0000-000000000000","in_flight":0,"node":"relay-1","peer":"127.0.0.1:5000"}],"channel":"c","mode":"balance","registered":false,"url":"http://r/h/c"}"#,
    );
    let token = TokenChannel {
        channel: "c".into(),
        url: "http://r/h/c".into(),
    };
    pinned(&token, r#"{"channel":"c","url":"http://r/h/c"}"#);

    let created = AdminChannel {
        agent_count: None,
        allow_from: vec!["10.0.0.0/8".into()],
        created_at: "2023-11-14T22:13:20.123Z".into(),
        event_type: Some("json:/meta/kind".into()),
        mode: "fanout".into(),
        name: "c".into(),
        rate_limit: None,
        token: Some("hrt_x".into()),
        url: "http://r/h/c".into(),
        verify: Some("github".into()),
    };
    pinned(
        &created,
        r#"{"allow_from":["10.0.0.0/8"],"created_at":"2023-11-14T22:13:20.123Z","event_type":"json:/meta/kind","mode":"fanout","name":"c","rate_limit":null,"token":"hrt_x","url":"http://r/h/c","verify":"github"}"#,
    );
    let listed = AdminChannels {
        channels: vec![AdminChannel {
            agent_count: Some(2),
            token: None,
            rate_limit: Some("10/s".into()),
            verify: None,
            event_type: None,
            ..created
        }],
    };
    pinned(
        &listed,
        r#"{"channels":[{"agent_count":2,"allow_from":["10.0.0.0/8"],"created_at":"2023-11-14T22:13:20.123Z","event_type":null,"mode":"fanout","name":"c","rate_limit":"10/s","url":"http://r/h/c","verify":null}]}"#,
    );
}

#[test]
fn small_answers() {
    pinned(&ErrorBody::new("not found"), r#"{"error":"not found"}"#);
    pinned(
        &Accepted::queued(id()),
        &format!(r#"{{"id":"{NIL}","status":"queued"}}"#),
    );
    pinned(
        &Accepted::pending(id()),
        &format!(r#"{{"id":"{NIL}","status":"pending"}}"#),
    );
    pinned(
        &Accepted::unrouted(id()),
        &format!(r#"{{"id":"{NIL}","status":"unrouted"}}"#),
    );
    let offline = Accepted {
        error: Some("no agent connected to channel c; the webhook is queued".into()),
        ..Accepted::queued(id())
    };
    pinned(
        &offline,
        &format!(
            r#"{{"error":"no agent connected to channel c; the webhook is queued","id":"{NIL}","status":"queued"}}"#
        ),
    );
    pinned(&Health::ok(), r#"{"status":"ok"}"#);
    pinned(&Health::ready(), r#"{"status":"ready"}"#);
    pinned(
        &Health::not_ready("shutting down"),
        r#"{"reason":"shutting down","status":"not ready"}"#,
    );
}

#[test]
fn names_are_written_as_the_api_names_them() {
    for status in EventStatus::ALL {
        let json = format!("\"{status}\"");
        pinned(&status, &json);
        pinned(&Open::Known(status), &json);
    }
    for kind in AttemptKind::ALL {
        pinned(&kind, &format!("\"{kind}\""));
    }
}

#[test]
fn a_name_from_a_newer_server_is_kept_as_sent() {
    let status: Open<EventStatus> = serde_json::from_str(r#""parked""#).expect("any name reads");
    assert_eq!(status, Open::Unknown("parked".to_owned()));
    assert_eq!(status.to_string(), "parked");
    assert_eq!(status.known(), None);
    assert_eq!(
        serde_json::to_string(&status).expect("serialises"),
        r#""parked""#
    );
}

#[test]
fn bodies_and_header_values_keep_every_byte() {
    let (text, encoding) = protocol::api::encode_body(b"\xff\x00\xfe");
    assert_eq!((text.as_str(), encoding), ("/wD+", BodyEncoding::Base64));
    assert_eq!(
        decode_body(text, encoding, 3),
        Ok(Bytes::from_static(b"\xff\x00\xfe"))
    );
    assert_eq!(
        decode_body("abc".into(), BodyEncoding::Utf8, 10),
        Err(ContentError::ShortBody {
            got: 3,
            expected: 10
        })
    );
    let header = Header::encode("x-bin", b"\xff\x00");
    assert_eq!(header.value_base64.as_deref(), Some("/wA="));
    assert_eq!(
        header.decode(),
        Ok(("x-bin".to_owned(), Bytes::from_static(b"\xff\x00")))
    );
    let empty = Header {
        name: "x".into(),
        value: None,
        value_base64: None,
    };
    assert_eq!(
        empty.decode().expect_err("no value").to_string(),
        "header x has no value"
    );
}
