//! A webhook's event type (`push`, `payment_intent.succeeded`), derived once when it arrives
//! and stored with its event: what agents subscribe to (`--events`), what routes pick a local
//! URL by (`--route`) and what the history filters on (`?type=`). The body is only read, never
//! changed.
//!
//! Where the type is, in order:
//! 1. a channel's own source ([`TypeSource`], `--event-type header:NAME` or
//!    `json:/json/pointer`), which replaces the places below when it is set;
//! 2. the senders' headers: `X-GitHub-Event`, `X-Gitlab-Event`, `X-Shopify-Topic`,
//!    `X-Event-Key` (Bitbucket);
//! 3. a JSON object body's top-level string `type` (Stripe, Standard Webhooks and most
//!    others), or for Slack's `event_callback` the inner `event.type`.
//!
//! A header that names the type is found without looking at the body; only a body read for
//! its type is scanned, and then into nothing but the one or two strings it needs.

use std::borrow::Cow;
use std::fmt;

use protocol::{Headers, is_event_type};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The headers senders put their event type in, lowercase as headers are kept.
const TYPE_HEADERS: [&str; 4] = [
    "x-github-event",
    "x-gitlab-event",
    "x-shopify-topic",
    "x-event-key",
];

/// Where a channel's webhooks carry their type, when not where senders usually put it.
/// Written `header:NAME` or `json:/json/pointer` (RFC 6901), in flags, the config file and
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSource {
    /// The value of this header (a lowercase name).
    Header(String),
    /// The string at this JSON pointer in the body.
    Json(String),
}

impl std::str::FromStr for TypeSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "use header:NAME or json:/json/pointer";
        if let Some(name) = s.strip_prefix("header:") {
            let name = name.trim();
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("{s:?}: {name:?} is not a header name; {usage}"));
            }
            return Ok(TypeSource::Header(name.to_ascii_lowercase()));
        }
        if let Some(pointer) = s.strip_prefix("json:") {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "{s:?}: a JSON pointer starts with / (json:/type, json:/meta/kind); {usage}"
                ));
            }
            return Ok(TypeSource::Json(pointer.to_owned()));
        }
        Err(format!("{s:?} is not an event type source; {usage}"))
    }
}

impl fmt::Display for TypeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeSource::Header(name) => write!(f, "header:{name}"),
            TypeSource::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

impl serde::Serialize for TypeSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TypeSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The type of a webhook with `headers` and `body`, read from `source` when the channel has
/// one, else from the usual places (see the module's documentation). `None` when it has none:
/// nothing found, or what was found is not an event type ([`is_event_type`]; spaces around
/// it are trimmed).
pub fn derive(source: Option<&TypeSource>, headers: &Headers, body: &[u8]) -> Option<String> {
    let found = match source {
        Some(TypeSource::Header(name)) => header(headers, name).map(Cow::Borrowed),
        Some(TypeSource::Json(pointer)) => at_pointer(body, pointer),
        None => TYPE_HEADERS
            .iter()
            .find_map(|name| header(headers, name))
            .map(Cow::Borrowed)
            .or_else(|| from_body(body)),
    }?;
    let found = found.trim();
    is_event_type(found).then(|| found.to_owned())
}

/// The first value of header `name`, when it is text.
fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    let (_, value) = headers.iter().find(|(n, _)| n == name)?;
    std::str::from_utf8(value).ok()
}

/// The string at `pointer` in a JSON body.
fn at_pointer<'a>(body: &[u8], pointer: &str) -> Option<Cow<'a, str>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.pointer(pointer)? {
        serde_json::Value::String(text) => Some(Cow::Owned(text.clone())),
        _ => None,
    }
}

/// The top-level `type` of a JSON object body, or Slack's inner `event.type` when that `type`
/// is `event_callback`. Anything else in the body is skipped over, not built.
fn from_body(body: &[u8]) -> Option<Cow<'_, str>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' {
        return None;
    }
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    match (top.kind.0, top.event.and_then(|event| event.0)) {
        (Some(kind), Some(inner)) if kind == "event_callback" => Some(inner),
        (kind, _) => kind,
    }
}

/// The fields of a body [`from_body`] looks at.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Found<'a, Text>,
    #[serde(borrow, default)]
    event: Option<Found<'a, TypeField>>,
}

/// What [`Look`] found of a value: a string, or `None` for a value of another kind, which is
/// skipped over (a body with `"type": 1` is not refused, it has no type).
struct Found<'a, L>(Option<Cow<'a, str>>, std::marker::PhantomData<L>);

impl<L> Default for Found<'_, L> {
    fn default() -> Self {
        Found(None, std::marker::PhantomData)
    }
}

/// What to look for in a value: the value itself, when it is a string ([`Text`]), or the
/// string `type` of an object ([`TypeField`]).
trait Look {
    const TEXT: bool;
}

struct Text;
struct TypeField;

impl Look for Text {
    const TEXT: bool = true;
}

impl Look for TypeField {
    const TEXT: bool = false;
}

impl<'de: 'a, 'a, L: Look> Deserialize<'de> for Found<'a, L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let found = deserializer.deserialize_any(Visit::<L>(std::marker::PhantomData))?;
        Ok(Found(found, std::marker::PhantomData))
    }
}

struct Visit<L>(std::marker::PhantomData<L>);

impl<'de, L: Look> Visitor<'de> for Visit<L> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(L::TEXT.then_some(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        // A string with escapes, unescaped into a buffer of serde_json's.
        Ok(L::TEXT.then(|| Cow::Owned(v.to_owned())))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind = None;
        while let Some(IsType(is_type)) = map.next_key()? {
            if !L::TEXT && is_type && kind.is_none() {
                kind = map.next_value::<Found<'de, Text>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kind)
    }
}

/// Whether an object's key is `type`, read without building the key.
struct IsType(bool);

impl<'de> Deserialize<'de> for IsType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = IsType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E>(self, v: &str) -> Result<IsType, E> {
                Ok(IsType(v == "type"))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    fn typed(h: &[(&str, &str)], body: &str) -> Option<String> {
        derive(None, &headers(h), body.as_bytes())
    }

    #[test]
    fn senders_headers_name_the_type_before_the_body() {
        let body = r#"{"type":"ignored"}"#;
        assert_eq!(
            typed(&[("x-github-event", "push")], body).as_deref(),
            Some("push")
        );
        assert_eq!(
            typed(&[("x-gitlab-event", " Push Hook ")], "").as_deref(),
            Some("Push Hook")
        );
        assert_eq!(
            typed(&[("x-shopify-topic", "orders/create")], "").as_deref(),
            Some("orders/create")
        );
        assert_eq!(
            typed(&[("x-event-key", "repo:push")], "").as_deref(),
            Some("repo:push")
        );
    }

    #[test]
    fn a_json_body_names_its_type_at_the_top_or_in_slacks_event() {
        let stripe = r#" {"id":"evt_1","object":"event","data":{"object":{"type":"card"}},"type":"payment_intent.succeeded"}"#;
        assert_eq!(
            typed(&[], stripe).as_deref(),
            Some("payment_intent.succeeded")
        );
        let slack =
            r#"{"token":"x","event":{"type":"app_mention","text":"hi"},"type":"event_callback"}"#;
        assert_eq!(typed(&[], slack).as_deref(), Some("app_mention"));
        let challenge = r#"{"type":"url_verification","challenge":"c"}"#;
        assert_eq!(typed(&[], challenge).as_deref(), Some("url_verification"));
        let escaped = r#"{"type":"a\u002eb"}"#;
        assert_eq!(typed(&[], escaped).as_deref(), Some("a.b"));
        let other_event = r#"{"type":"x","event":"y"}"#;
        assert_eq!(typed(&[], other_event).as_deref(), Some("x"));
    }

    #[test]
    fn anything_else_has_no_type() {
        for body in [
            "",
            "type=push",
            "[1,2]",
            r#"{"type":1}"#,
            r#"{"type":{"a":1}}"#,
            r#"{"type":""}"#,
            r#"{"type":"a\nb"}"#,
            r#"{"type":"push""#,
            r#"{"pad":"aaaa"}"#,
        ] {
            assert_eq!(typed(&[], body), None, "{body}");
        }
        assert_eq!(typed(&[("x-github-event", "")], ""), None);
        let binary = derive(
            None,
            &vec![("x-github-event".into(), Bytes::from_static(b"\xff"))],
            b"",
        );
        assert_eq!(binary, None);
        let long = format!(
            r#"{{"type":"{}"}}"#,
            "x".repeat(protocol::MAX_EVENT_TYPE_LEN + 1)
        );
        assert_eq!(typed(&[], &long), None);
    }

    #[test]
    fn a_channels_own_source_replaces_the_usual_places() {
        let kind: TypeSource = "json:/meta/kind".parse().expect("valid");
        let body = br#"{"type":"not this","meta":{"kind":"build.done"}}"#;
        let h = headers(&[("x-github-event", "push")]);
        assert_eq!(derive(Some(&kind), &h, body).as_deref(), Some("build.done"));
        assert_eq!(derive(Some(&kind), &h, b"{}"), None);
        let header: TypeSource = "header:X-Kind".parse().expect("valid");
        assert_eq!(header, TypeSource::Header("x-kind".into()));
        let h = headers(&[("x-kind", "deploy"), ("x-github-event", "push")]);
        assert_eq!(derive(Some(&header), &h, b"").as_deref(), Some("deploy"));
        assert_eq!(header.to_string(), "header:x-kind");
        for bad in ["", "x-kind", "header:", "header:a b", "json:meta", "xml:/a"] {
            assert!(bad.parse::<TypeSource>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&kind).expect("serialises");
        assert_eq!(json, r#""json:/meta/kind""#);
        assert_eq!(
            serde_json::from_str::<TypeSource>(&json).expect("reads"),
            kind
        );
    }
}
