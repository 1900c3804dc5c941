//! `relay-client replay ID --body-file FILE --header 'Name: value'`: what to change in a stored
//! request before it is sent again. The edits are checked once, at start, and applied the same
//! way whichever path the replay takes: through the server (sent as a [`ReplayEdit`], which
//! the server stores as a new event) or from here with `--forward` (applied to the fetched
//! request before it is sent).
//!
//! A `--header` replaces every stored header of its name (names compare in any case) where
//! the first of them was, or is added at the end when there is none. The same name given twice
//! sends both values, in the order given; `Name:` with nothing after the colon removes the
//! header. An empty header value cannot be sent this way, and asking both to remove a name
//! and to set it is refused, since either reading would surprise someone.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use protocol::api::{self, ATTEMPT_HEADER, DELIVERY_HEADER, ReplayEdit};
use protocol::{EVENT_TYPE_HEADER, Headers};

use crate::error::Error;

/// One `--header` as typed: a name (lowercase, as stored headers are) and its value, or
/// `None` to remove the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    name: String,
    value: Option<Bytes>,
}

/// Reads `--header 'Name: value'` (`Name:` removes it). The message says why a value is
/// refused; clap puts the flag and the value in front of it.
pub fn parse_header(text: &str) -> Result<HeaderEdit, String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(
            "no `:` in it: write 'Name: value', or 'Name:' to remove the header".to_owned(),
        );
    };
    let name = name.trim();
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?
        .as_str()
        .to_owned();
    if let Some(why) = not_editable(&name) {
        return Err(format!("{name} cannot be edited: {why}"));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Ok(HeaderEdit { name, value: None });
    }
    HeaderValue::from_str(value).map_err(|_| {
        "its value holds characters a header cannot (control characters)".to_owned()
    })?;
    Ok(HeaderEdit {
        name,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    })
}

/// Why a header named `name` (lowercase) is not the user's to set: the relay or the HTTP
/// connection decides it on every request, so an edit would be silently lost.
fn not_editable(name: &str) -> Option<&'static str> {
    match name {
        "content-length" => Some("it is always the length of the body sent"),
        "host" => Some("it names the target, and is set for each request"),
        DELIVERY_HEADER | ATTEMPT_HEADER | EVENT_TYPE_HEADER => {
            Some("the relay sets it on every attempt")
        }
        _ if protocol::is_hop_by_hop(name) => {
            Some("it is hop-by-hop: it describes one connection and never reaches the target")
        }
        _ => None,
    }
}

/// The edits of one replay: a new body, and header changes by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEdit {
    body: Option<Bytes>,
    /// Each edited name once, in the order first given, with its new values in order; no
    /// values removes the name.
    headers: Vec<(String, Vec<Bytes>)>,
}

impl RequestEdit {
    /// The edits of `--body-file` (its bytes) and every `--header`. Fails when one name is
    /// both removed and given a value.
    pub fn new(body: Option<Bytes>, edits: Vec<HeaderEdit>) -> Result<Self, Error> {
        let mut headers: Vec<(String, Vec<Bytes>, bool)> = Vec::new();
        for edit in edits {
            let at = match headers.iter().position(|(name, ..)| *name == edit.name) {
                Some(at) => at,
                None => {
                    headers.push((edit.name.clone(), Vec::new(), false));
                    headers.len() - 1
                }
            };
            let (_, values, removed) = &mut headers[at];
            match edit.value {
                Some(value) => values.push(value),
                None => *removed = true,
            }
            if *removed && !values.is_empty() {
                return Err(Error::HeaderConflict { name: edit.name });
            }
        }
        Ok(Self {
            body,
            headers: headers.into_iter().map(|(n, v, _)| (n, v)).collect(),
        })
    }

    /// Whether it changes nothing: a plain replay.
    pub fn is_empty(&self) -> bool {
        self.body.is_none() && self.headers.is_empty()
    }

    /// The new body, if it is edited.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// `stored` with the header edits made, order and duplicates of every other header kept.
    /// When the body is edited, a `content-length` the request had is set to the new body's
    /// length (and only the first one kept), so the stored copy says what is sent; one it did
    /// not have is not added (the server and the HTTP client set it on the wire anyway).
    pub fn apply_headers(&self, stored: &[(String, Bytes)]) -> Headers {
        let edited = |name: &str| {
            self.headers
                .iter()
                .find(|(edited, _)| edited.eq_ignore_ascii_case(name))
        };
        let mut out = Headers::with_capacity(stored.len() + self.headers.len());
        let mut placed: Vec<&str> = Vec::new();
        let mut length_seen = false;
        for (name, value) in stored {
            if let Some((edited, values)) = edited(name) {
                if !placed.contains(&edited.as_str()) {
                    placed.push(edited);
                    out.extend(values.iter().map(|v| (edited.clone(), v.clone())));
                }
                continue;
            }
            match &self.body {
                Some(body) if name.eq_ignore_ascii_case("content-length") => {
                    if !length_seen {
                        length_seen = true;
                        out.push((name.clone(), Bytes::from(body.len().to_string())));
                    }
                }
                _ => out.push((name.clone(), value.clone())),
            }
        }
        for (name, values) in &self.headers {
            if !placed.contains(&name.as_str()) {
                out.extend(values.iter().map(|v| (name.clone(), v.clone())));
            }
        }
        out
    }

    /// What the server's replay takes to replay `stored_headers` with these edits: the new
    /// body (as UTF-8 text when it is, else base64) and the whole edited header list.
    pub fn replay_edit(&self, stored_headers: &[(String, Bytes)]) -> ReplayEdit {
        let (body, body_encoding) = match &self.body {
            Some(body) => {
                let (text, encoding) = api::encode_body(body);
                (Some(text), Some(encoding))
            }
            None => (None, None),
        };
        ReplayEdit {
            body,
            body_encoding,
            headers: Some(api::encode_headers(&self.apply_headers(stored_headers))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v)))
            .collect()
    }

    fn edit(body: Option<&'static [u8]>, flags: &[&str]) -> RequestEdit {
        let edits = flags
            .iter()
            .map(|f| parse_header(f).expect("valid --header"))
            .collect();
        RequestEdit::new(body.map(Bytes::from_static), edits).expect("valid edits")
    }

    #[test]
    fn a_header_replaces_every_one_of_its_name_where_the_first_was() {
        let stored = headers(&[
            ("content-type", b"application/json"),
            ("x-dup", b"1"),
            ("x-sig", b"\xff\x01"),
            ("x-dup", b"2"),
            ("x-gone", b"bye"),
        ]);
        let edited = edit(None, &["X-Dup: 3", "x-new:  added\t", "X-Gone:"]);
        assert_eq!(
            edited.apply_headers(&stored),
            headers(&[
                ("content-type", b"application/json"),
                ("x-dup", b"3"),
                ("x-sig", b"\xff\x01"),
                ("x-new", b"added"),
            ])
        );
        let twice = edit(None, &["x-dup: a", "x-dup: b"]);
        assert_eq!(
            twice.apply_headers(&stored)[1..3],
            headers(&[("x-dup", b"a"), ("x-dup", b"b")])[..]
        );
        assert!(!edited.is_empty());
        assert!(edit(None, &[]).is_empty());
    }

    #[test]
    fn an_edited_body_sets_the_stored_content_length_and_adds_none() {
        let stored = headers(&[
            ("content-length", b"12"),
            ("x-a", b"1"),
            ("content-length", b"12"),
        ]);
        assert_eq!(
            edit(Some(b"short"), &[]).apply_headers(&stored),
            headers(&[("content-length", b"5"), ("x-a", b"1")])
        );
        assert_eq!(edit(None, &["x-a: 2"]).apply_headers(&stored)[0].1, "12");
        let without = headers(&[("x-a", b"1")]);
        assert_eq!(edit(Some(b"short"), &[]).apply_headers(&without), without);
    }

    #[test]
    fn the_replay_edit_carries_a_binary_body_as_base64_and_every_header() {
        let stored = headers(&[("x-bin", b"\xfe")]);
        let sent = edit(Some(b"\xff\x00"), &["x-a: 1"]).replay_edit(&stored);
        assert_eq!(sent.body.as_deref(), Some("/wA="));
        assert_eq!(sent.body_encoding, Some(api::BodyEncoding::Base64));
        let json = serde_json::to_value(&sent).expect("serialises");
        assert_eq!(
            json["headers"],
            serde_json::json!([
                {"name": "x-bin", "value_base64": "/g=="},
                {"name": "x-a", "value": "1"},
            ])
        );
        let text = edit(Some(b"{\"a\":1}"), &[]).replay_edit(&stored);
        assert_eq!(text.body.as_deref(), Some("{\"a\":1}"));
        assert_eq!(text.body_encoding, Some(api::BodyEncoding::Utf8));
    }

    #[test]
    fn bad_headers_are_refused_saying_why() {
        let why = |text: &str| parse_header(text).expect_err(text);
        assert!(why("X-A 1").starts_with("no `:` in it"), "{}", why("X-A 1"));
        assert_eq!(why("X A: 1"), "\"X A\" is not a header name");
        assert_eq!(why(": 1"), "\"\" is not a header name");
        assert!(why("X-A: a\u{7}b").contains("control characters"));
        for name in [
            "Content-Length",
            "host",
            "Transfer-Encoding",
            "connection",
            "x-hookrelay-delivery",
            "x-hookrelay-event-type",
        ] {
            let message = why(&format!("{name}: 1"));
            assert!(
                message.starts_with(&format!("{} cannot be edited: ", name.to_lowercase())),
                "{message}"
            );
        }
        let conflict = RequestEdit::new(
            None,
            vec![
                parse_header("x-a: 1").expect("valid"),
                parse_header("X-A:").expect("valid"),
            ],
        )
        .expect_err("remove and set");
        assert_eq!(
            conflict.to_string(),
            "--header x-a: given both empty (to remove it) and with a value; give one or the other"
        );
    }
}
