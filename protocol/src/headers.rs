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

/// Appends to `into` the end-to-end headers of `headers`, exactly those [`end_to_end`] gives
/// and in the same order, for headers already held as [`Headers`]: each value shares the
/// bytes of `headers` (a reference count, not a copy) and a name already lowercase is cloned
/// rather than lowercased again. Appending lets the caller size `into` for what it adds after.
pub fn push_end_to_end(into: &mut Headers, headers: &Headers) {
    let mut listed: Vec<&str> = Vec::new();
    for (_, value) in headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        listed.extend(
            value
                .split(|b| *b == b',')
                .filter_map(|token| std::str::from_utf8(token).ok())
                .map(str::trim)
                .filter(|token| !token.is_empty()),
        );
    }
    let kept = headers.iter().filter(|(name, _)| {
        !is_hop_by_hop(name) && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    });
    into.extend(kept.map(|(name, value)| {
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase()
        } else {
            name.clone()
        };
        (name, value.clone())
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// End-to-end headers mixed with hop-by-hop ones and one the `Connection` header names.
    const MIXED: &[(&str, &[u8])] = &[
        ("Content-Type", b"application/json"),
        ("Connection", b"keep-alive, X-Private"),
        ("x-private", b"secret"),
        ("Transfer-Encoding", b"chunked"),
        ("X-Dup", b"1"),
        ("X-Dup", b"\xff2"),
    ];

    #[test]
    fn drops_hop_by_hop_and_connection_listed_headers() {
        let out = end_to_end(MIXED.iter().copied());
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

    #[test]
    fn push_end_to_end_gives_what_end_to_end_gives() {
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            vec![],
            MIXED.to_vec(),
            vec![
                ("host", b"example.com"),
                ("connection", b" ,x-a ,, \xff, Upgrade"),
                ("connection", b"X-B"),
                ("X-A", b"1"),
                ("x-b", b"2"),
                ("x-c", b"3"),
                ("upgrade", b"websocket"),
                ("TE", b"trailers"),
            ],
        ];
        for case in cases {
            let owned: Headers = case
                .iter()
                .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v)))
                .collect();
            let mut pushed = vec![("first".to_owned(), Bytes::from_static(b"0"))];
            push_end_to_end(&mut pushed, &owned);
            let mut expected = vec![("first".to_owned(), Bytes::from_static(b"0"))];
            expected.extend(end_to_end(case.iter().copied()));
            assert_eq!(pushed, expected, "{case:?}");
        }
    }
}
