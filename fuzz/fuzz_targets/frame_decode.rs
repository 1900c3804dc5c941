//! Any bytes a peer sends: `protocol::decode` returns an error or a frame, never panics, never
//! allocates past its limit (`-rss_limit_mb` catches that), and a frame it returns survives
//! encode/decode unchanged, so what one side decodes and forwards the other decodes the same;
//! `ToAgent` and `FromAgent` decode the same bytes to the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = protocol::decode(data) {
        let bytes = protocol::encode(&frame).expect("a decoded frame re-encodes");
        let again = protocol::decode(&bytes).expect("a re-encoded frame decodes");
        assert_eq!(again, frame);
    }
    // The typed decoders take exactly the frames of their direction, and the bytes they
    // re-encode are the frame's own.
    if let Ok(message) = protocol::ToAgent::decode(data) {
        assert_eq!(
            message.encode().ok(),
            protocol::decode(data)
                .ok()
                .and_then(|f| protocol::encode(&f).ok())
        );
    }
    if let Ok(message) = protocol::FromAgent::decode(data) {
        assert_eq!(
            message.encode().ok(),
            protocol::decode(data)
                .ok()
                .and_then(|f| protocol::encode(&f).ok())
        );
    }
});
