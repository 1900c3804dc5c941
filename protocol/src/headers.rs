//! Which headers cross the relay.
//!
//! Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the message: the
//! relay drops them in both directions, together with every header the `Connection` header
//! names. Everything else passes in order, duplicates and raw bytes kept.

use bytes::Bytes;

use crate::Headers;

/// Header names that never cross the relay, lowercase.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a hop-by-hop header name (case-insensitive).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The end-to-end headers of a message: `headers` without hop-by-hop headers and without the
/// headers its `Connection` header lists. Names come out lowercase.
pub fn end_to_end<'a, I>(headers: I) -> Headers
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let headers: Vec<(&str, &[u8])> = headers.into_iter().collect();
    let listed: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(|b| *b == b','))
        .filter_map(|token| std::str::from_utf8(token).ok())
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    headers
        .into_iter()
        .filter(|(name, _)| !is_hop_by_hop(name))
        .filter(|(name, _)| !listed.iter().any(|l| l.eq_ignore_ascii_case(name)))
        .map(|(name, value)| (name.to_ascii_lowercase(), Bytes::copy_from_slice(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_hop_by_hop_and_connection_listed_headers() {
        let input: Vec<(&str, &[u8])> = vec![
            ("Content-Type", b"application/json"),
            ("Connection", b"keep-alive, X-Private"),
            ("x-private", b"secret"),
            ("Transfer-Encoding", b"chunked"),
            ("X-Dup", b"1"),
            ("X-Dup", b"\xff2"),
        ];
        let out = end_to_end(input.iter().copied());
        assert_eq!(
            out,
            vec![
                (
                    "content-type".to_owned(),
                    Bytes::from_static(b"application/json")
                ),
                ("x-dup".to_owned(), Bytes::from_static(b"1")),
                ("x-dup".to_owned(), Bytes::from_static(b"\xff2")),
            ]
        );
    }
}
