//! Any bytes a peer sends: `protocol::decode` returns an error or a frame, never panics, never
//! allocates past its limit (`-rss_limit_mb` catches that), and a frame it returns survives
//! encode/decode unchanged, so what one side decodes and forwards the other decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = protocol::decode(data) {
        let bytes = protocol::encode(&frame).expect("a decoded frame re-encodes");
        let again = protocol::decode(&bytes).expect("a re-encoded frame decodes");
        assert_eq!(again, frame);
    }
});
