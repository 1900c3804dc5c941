//! The wire format: round trips, pinned bytes for every frame, and hostile input.

use bytes::Bytes;
use proptest::prelude::*;
use protocol::*;
use uuid::Uuid;

fn id() -> DeliveryId {
    DeliveryId::from_uuid(Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff))
}

fn samples() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            version: 1,
            channel: Some("ch".into()),
            token: None,
            client: "c".into(),
        }),
        Frame::Welcome(Welcome {
            version: 1,
            channel: "ch".into(),
            public_url: "u".into(),
            agent_id: Uuid::from_u128(1),
        }),
        Frame::Request(RequestHead {
            id: id(),
            method: "POST".into(),
            path: "/p".into(),
            query: Some("q=1".into()),
            headers: vec![("a".into(), Bytes::from_static(b"\xff"))],
            body: Bytes::from_static(b"hi"),
            fin: true,
        }),
        Frame::Response(ResponseHead {
            id: id(),
            status: 201,
            headers: vec![],
            body: Bytes::new(),
            fin: false,
        }),
        Frame::Body(BodyChunk {
            id: id(),
            data: Bytes::from_static(b"xyz"),
            fin: true,
        }),
        Frame::Abort(Abort {
            id: id(),
            reason: "r".into(),
        }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::Unauthorized,
            message: "m".into(),
        }),
        Frame::Subscribe(Subscribe {
            hello: Hello {
                version: 1,
                channel: Some("ch".into()),
                token: None,
                client: "c".into(),
            },
            events: vec!["push".into(), "a*".into()],
        }),
    ]
}

/// The encoding of each sample, pinned. A change here breaks every deployed peer: bump
/// PROTOCOL_VERSION and update docs/protocol.md in the same commit.
const GOLDEN: [&str; 8] = [
    "000101026368000163",
    "010102636801751000000000000000000000000000000001",
    "021000112233445566778899aabbccddeeff04504f5354022f700103713d3101016101ff02686901",
    "031000112233445566778899aabbccddeeffc9000000",
    "041000112233445566778899aabbccddeeff0378797a01",
    "051000112233445566778899aabbccddeeff0172",
    "0601016d",
    "07010102636800016302047075736802612a",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_frame_encodes_to_its_pinned_bytes() {
    for (frame, golden) in samples().iter().zip(GOLDEN) {
        let bytes = encode(frame).expect("sample encodes");
        assert_eq!(hex(&bytes), golden, "encoding of {frame:?} changed");
        assert_eq!(&decode(&bytes).expect("golden decodes"), frame);
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&samples()[0]).expect("encodes");
    bytes.push(0);
    assert!(matches!(decode(&bytes), Err(DecodeError::TrailingBytes(1))));
}

#[test]
fn oversize_input_is_rejected_before_decoding() {
    let bytes = vec![0u8; MAX_FRAME_LEN + 1];
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn huge_length_prefix_does_not_allocate() {
    // A Body frame whose data length claims u64::MAX bytes.
    let mut bytes = vec![4u8, 16];
    bytes.extend_from_slice(&[0u8; 16]);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
}

#[test]
fn oversize_frame_does_not_encode() {
    let frame = Frame::Body(BodyChunk {
        id: id(),
        data: Bytes::from(vec![0u8; MAX_FRAME_LEN]),
        fin: true,
    });
    assert!(matches!(encode(&frame), Err(EncodeError::TooLarge { .. })));
}

#[test]
fn channel_names_are_url_safe() {
    assert!(ChannelId::parse("my-hooks_1").is_ok());
    for bad in ["", "a b", "a/b", "é", &"x".repeat(MAX_CHANNEL_LEN + 1)] {
        assert!(ChannelId::parse(bad).is_err(), "{bad:?}");
    }
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    prop::collection::vec(
        (
            "[a-z-]{1,12}",
            prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
        ),
        0..6,
    )
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let id = any::<u128>().prop_map(|n| DeliveryId::from_uuid(Uuid::from_u128(n)));
    let body = prop::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from);
    prop_oneof![
        (
            any::<u16>(),
            proptest::option::of("[a-z0-9]{1,8}"),
            proptest::option::of(".{0,8}"),
            ".{0,8}"
        )
            .prop_map(|(version, channel, token, client)| Frame::Hello(Hello {
                version,
                channel,
                token,
                client
            })),
        (
            id.clone(),
            "[A-Z]{1,7}",
            "(/[a-z%0-9]{0,5}){0,3}",
            proptest::option::of("[a-z=&]{0,9}"),
            arb_headers(),
            body.clone(),
            any::<bool>()
        )
            .prop_map(
                |(id, method, path, query, headers, body, fin)| Frame::Request(RequestHead {
                    id,
                    method,
                    path,
                    query,
                    headers,
                    body,
                    fin
                })
            ),
        (
            id.clone(),
            100u16..600,
            arb_headers(),
            body.clone(),
            any::<bool>()
        )
            .prop_map(
                |(id, status, headers, body, fin)| Frame::Response(ResponseHead {
                    id,
                    status,
                    headers,
                    body,
                    fin
                })
            ),
        (id.clone(), body, any::<bool>()).prop_map(|(id, data, fin)| Frame::Body(BodyChunk {
            id,
            data,
            fin
        })),
        (id, ".{0,20}").prop_map(|(id, reason)| Frame::Abort(Abort { id, reason })),
    ]
}

/// One change to an encoded frame, as a fuzzer would make it.
#[derive(Debug, Clone)]
enum Edit {
    Overwrite(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

impl Edit {
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Edit::Overwrite(at, b) => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Edit::Remove(at) => {
                bytes.remove(at.index(bytes.len()));
            }
            Edit::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        }
    }
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        (at.clone(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        at.clone().prop_map(Edit::Remove),
        at.clone().prop_map(Edit::Truncate),
        // Varint markers (0xfb..=0xfe announce a 2, 4, 8 or 16 byte integer) and other large
        // bytes, aimed at length prefixes.
        (at, 0xf0u8..=0xff).prop_map(|(i, b)| Edit::Overwrite(i, b)),
    ]
}

proptest! {
    #[test]
    fn decode_inverts_encode(frame in arb_frame()) {
        let bytes = encode(&frame).expect("small frames encode");
        prop_assert_eq!(decode(&bytes).expect("own encoding decodes"), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn truncated_frames_are_errors(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        // Decoding reads a frame front to back, so a strict prefix of a valid encoding can never
        // be a whole frame: it must be an error, not a shorter frame.
        let bytes = encode(&frame).expect("encodes");
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn edited_frames_never_panic_and_what_decodes_round_trips(
        frame in arb_frame(),
        edits in prop::collection::vec(arb_edit(), 1..8),
    ) {
        let mut bytes = encode(&frame).expect("encodes");
        for edit in edits {
            edit.apply(&mut bytes);
        }
        if let Ok(decoded) = decode(&bytes) {
            let again = encode(&decoded).expect("a decoded frame re-encodes");
            prop_assert_eq!(decode(&again).expect("re-encoding decodes"), decoded);
        }
    }

    #[test]
    fn valid_frame_with_random_tail_is_refused(
        frame in arb_frame(),
        tail in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut bytes = encode(&frame).expect("encodes");
        bytes.extend_from_slice(&tail);
        prop_assert!(matches!(decode(&bytes), Err(DecodeError::TrailingBytes(n)) if n == tail.len()));
    }

    #[test]
    fn larger_arbitrary_inputs_never_panic(
        tag in 0u8..10,
        rest in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        // A plausible variant index first, so the decoder gets past the first byte more often.
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&rest);
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(frame in arb_frame(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&frame).expect("encodes");
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode(&bytes);
    }
}

/// Splits a frame by who sends it: `Ok` what the server sends, `Err` what an agent sends.
fn by_sender(frame: Frame) -> Result<ToAgent, FromAgent> {
    match frame {
        Frame::Welcome(v) => Ok(ToAgent::Welcome(v)),
        Frame::Request(v) => Ok(ToAgent::Request(v)),
        Frame::Hello(v) => Err(FromAgent::Hello(v)),
        Frame::Subscribe(v) => Err(FromAgent::Subscribe(v)),
        Frame::Response(v) => Err(FromAgent::Response(v)),
        // Both sides send these; the server's copy is checked here, the agent's below.
        Frame::Body(v) => Ok(ToAgent::Body(v)),
        Frame::Abort(v) => Ok(ToAgent::Abort(v)),
        Frame::Error(v) => Ok(ToAgent::Error(v)),
    }
}

#[test]
fn typed_messages_write_the_bytes_of_their_frame() {
    for frame in samples() {
        let bytes = encode(&frame).expect("encodes");
        match by_sender(frame.clone()) {
            Ok(to_agent) => {
                assert_eq!(to_agent.encode().expect("encodes"), bytes, "{frame:?}");
                assert_eq!(ToAgent::decode(&bytes).expect("decodes"), to_agent);
                let err = FromAgent::decode(&bytes);
                let shared = matches!(frame, Frame::Body(_) | Frame::Abort(_) | Frame::Error(_));
                assert_eq!(err.is_ok(), shared, "{frame:?}: {err:?}");
            }
            Err(from_agent) => {
                assert_eq!(from_agent.encode().expect("encodes"), bytes, "{frame:?}");
                assert_eq!(FromAgent::decode(&bytes).expect("decodes"), from_agent);
                let err = ToAgent::decode(&bytes).expect_err("only an agent sends it");
                assert!(matches!(
                    err,
                    DecodeError::WrongDirection {
                        from: "relay server",
                        ..
                    }
                ));
            }
        }
        let back: Frame = by_sender(frame.clone()).map_or_else(Frame::from, Frame::from);
        assert_eq!(back, frame);
    }
    let err = FromAgent::decode(&encode(&samples()[2]).expect("encodes")).expect_err("a request");
    assert_eq!(err.to_string(), "unexpected request frame from the agent");
}
