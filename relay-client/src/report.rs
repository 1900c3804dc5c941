//! What the lines a developer watches say: one per connection change and per delivery (with
//! the start of the target's answer under it, for `--print-body`), and the `relay-client
//! events` table. Text only; where it goes is `output.rs`'s.

use std::fmt::Write as _;
use std::io::Write;

use protocol::DeliveryId;
use protocol::api::{AttemptKind, EventPage};

use crate::config::EventsQuery;
use crate::event::{BodyPrefix, Delivery, Disconnect, Event, Via, shown_path};

/// Longest path (with its query) a delivery line shows; longer ones are cut with `...`. The
/// history keeps them whole.
const MAX_SHOWN_PATH: usize = 80;

/// Writes the line `event` shows on stdout; [`Event::Disconnected`] shows none there (it goes
/// to stderr as [`disconnected_line`]).
pub fn write_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    match event {
        Event::Connected { public_url, target } => {
            writeln!(out, "Forwarding {public_url} -> {target}")
        }
        Event::Disconnected { .. } => Ok(()),
        Event::Draining { in_flight: 0, .. } => writeln!(out, "Stopping: no deliveries in flight"),
        Event::Draining { in_flight, grace } => writeln!(
            out,
            "Stopping: waiting for {} in flight (up to {}s)",
            deliveries(*in_flight),
            grace.as_secs()
        ),
        Event::Stopped { unfinished: 0 } => writeln!(out, "Stopped"),
        Event::Stopped { unfinished } => writeln!(
            out,
            "Stopped: {} cut off at the end of the grace period",
            deliveries(*unfinished)
        ),
        Event::Delivered(delivery) => {
            writeln!(out, "{}", DeliveryLine(delivery))?;
            match &delivery.body {
                Some(body) => write!(out, "{}", BodyLines(body)),
                None => Ok(()),
            }
        }
    }
}

fn deliveries(n: usize) -> String {
    if n == 1 {
        "1 delivery".to_owned()
    } else {
        format!("{n} deliveries")
    }
}

/// `Disconnected: the relay at http://host:8080 is shutting down (1001); reconnecting in
/// 0.5s`: why the agent is not connected to `server`, and when it tries again.
pub fn disconnected_line(server: &str, why: &Disconnect, retry_in: std::time::Duration) -> String {
    let server = server.trim_end_matches('/');
    let secs = retry_in.as_secs_f64();
    match why {
        Disconnect::Closed { code: 1001, .. } => format!(
            "Disconnected: the relay at {server} is shutting down (1001); reconnecting in {secs:.1}s"
        ),
        Disconnect::Closed { code, reason } => format!(
            "Disconnected: the relay at {server} closed the connection ({code}: {reason}); reconnecting in {secs:.1}s"
        ),
        Disconnect::Refused { status, message } => {
            let status = http::StatusCode::from_u16(*status)
                .map_or_else(|_| status.to_string(), |s| s.to_string());
            format!(
                "The relay at {server} refused the connection with {status}: {message}; retrying in {secs:.1}s"
            )
        }
        Disconnect::Unreachable(reason) => {
            format!("Cannot reach the relay at {server} ({reason}); retrying in {secs:.1}s")
        }
        Disconnect::Lost(reason) => format!(
            "Disconnected from the relay at {server} ({reason}); reconnecting in {secs:.1}s"
        ),
    }
}

/// `2026-11-23T09:41:02Z POST /github?x=1 push 200 12ms 5f0c...`: time, method, path (cut to
/// [`MAX_SHOWN_PATH`]), event type (`-` when none), status, duration, delivery id, then
/// `queued` or `replay` for those kinds of attempt, and the error when there was one.
pub fn delivery_line(d: &Delivery) -> String {
    DeliveryLine(d).to_string()
}

/// [`delivery_line`] as it is written out: formatted straight into the output, so a
/// delivery costs no `String` of its own on the way to the terminal.
struct DeliveryLine<'a>(&'a Delivery);

impl std::fmt::Display for DeliveryLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        write!(
            f,
            "{} {} {} {} ",
            humantime::format_rfc3339_seconds(d.at),
            d.method,
            shortened(&d.path),
            d.event_type.as_deref().map_or("-".into(), shortened_type),
        )?;
        match d.status {
            Some(status) => write!(f, "{status}")?,
            None => f.write_str("---")?,
        }
        write!(f, " {}ms {}", d.duration.as_millis(), d.id)?;
        match d.via {
            Via::Relay(AttemptKind::Live) => {}
            Via::Relay(AttemptKind::Queued) => f.write_str(" queued")?,
            Via::Relay(AttemptKind::Replay) => f.write_str(" replay")?,
            Via::Local => f.write_str(" replay (from here, not recorded on the relay)")?,
        }
        if let Some(error) = &d.error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

/// An event type as the delivery line shows it: one word, so the line's fields stay apart
/// (GitLab's `Push Hook` shows as `Push_Hook`).
fn shortened_type(event_type: &str) -> std::borrow::Cow<'_, str> {
    match event_type.contains(' ') {
        true => event_type.replace(' ', "_").into(),
        false => event_type.into(),
    }
}

/// `path` whole when it has at most [`MAX_SHOWN_PATH`] characters, else its start and `...`.
fn shortened(path: &str) -> std::borrow::Cow<'_, str> {
    if path.chars().count() <= MAX_SHOWN_PATH {
        return path.into();
    }
    let mut short: String = path.chars().take(MAX_SHOWN_PATH - 3).collect();
    short.push_str("...");
    short.into()
}

/// `Stored as new event ID, an edited replay of ORIGINAL (unchanged)`: after the delivery
/// line of `relay-client replay` with edits, whose id is the new event's.
pub fn stored_replay_line(id: DeliveryId, original: DeliveryId) -> String {
    format!("Stored as new event {id}, an edited replay of {original} (unchanged)")
}

/// Writes `relay-client events`: the table, a line saying there is nothing to show, and a hint
/// when older events were left out.
pub fn write_event_page(
    out: &mut impl Write,
    channel: &str,
    query: &EventsQuery,
    page: &EventPage,
) -> std::io::Result<()> {
    if page.events.is_empty() {
        let which = query.status.map_or("", |s| s.as_str());
        let space = if which.is_empty() { "" } else { " " };
        let of_type = query
            .event_type
            .as_ref()
            .map_or_else(String::new, |t| format!(" of type {t}"));
        return writeln!(out, "No {which}{space}events{of_type} in channel {channel}");
    }
    out.write_all(event_table(page).as_bytes())?;
    if page.next_before.is_some() {
        writeln!(
            out,
            "Older events not shown; use --limit to see more than {}",
            query.limit
        )?;
    }
    Ok(())
}

/// The events as a table, one line per event in the order given, columns padded to fit. TYPE
/// is `-` for an event without one, and one word as in the delivery line (`Push_Hook`).
pub fn event_table(page: &EventPage) -> String {
    const HEADERS: [&str; 8] = [
        "ID", "RECEIVED", "METHOD", "PATH", "TYPE", "STATUS", "CODE", "ATTEMPTS",
    ];
    let rows: Vec<[String; 8]> = page
        .events
        .iter()
        .map(|e| {
            [
                e.id.to_string(),
                e.received_at.clone(),
                e.method.clone(),
                shown_path(&e.path, e.query.as_deref()),
                (e.event_type.as_deref())
                    .map_or_else(|| "-".to_owned(), |t| shortened_type(t).into_owned()),
                e.status.to_string(),
                e.response_status
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                e.attempts.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    let header = HEADERS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// What starts each line of a response body under its delivery line.
const BODY_INDENT: &str = "  ";

/// The lines `--print-body` writes under a delivery line, each ending with a newline; none for
/// an empty body.
///
/// Text (UTF-8 without a NUL byte) is shown line by line, each indented by [`BODY_INDENT`]
/// (an empty line stays empty), with its control characters other than tab escaped as Rust
/// writes them (`\u{1b}`, `\r`), so a target cannot move the cursor, recolour or retitle the
/// terminal. A `\r\n` ends a line like `\n`. When the body was cut (at
/// [`SHOWN_BODY_BYTES`](crate::event::SHOWN_BODY_BYTES), and then at the last whole character)
/// a last line says how many bytes were not shown: `  ... (12,345 more bytes)`. Anything else
/// is not dumped: `  (1,234 bytes, not text)`.
struct BodyLines<'a>(&'a BodyPrefix);

impl std::fmt::Display for BodyLines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self.0;
        if body.total() == 0 {
            return Ok(());
        }
        let Some(text) = shown_text(body) else {
            let total = body.total();
            return writeln!(
                f,
                "{BODY_INDENT}({} {}, not text)",
                Grouped(total),
                bytes(total)
            );
        };
        for line in text.lines() {
            if !line.is_empty() {
                f.write_str(BODY_INDENT)?;
                write_escaped(f, line)?;
            }
            f.write_char('\n')?;
        }
        let not_shown = body.total().saturating_sub(text.len() as u64);
        if not_shown > 0 {
            let n = Grouped(not_shown);
            writeln!(f, "{BODY_INDENT}... ({n} more {})", bytes(not_shown))?;
        }
        Ok(())
    }
}

/// What of `body`'s kept bytes shows as text: all of them, or those before a character the cut
/// split; `None` when they are not text (not UTF-8, or with a NUL byte, as binary formats that
/// start with ASCII have).
fn shown_text(body: &BodyPrefix) -> Option<&str> {
    let kept = body.kept();
    let text = match std::str::from_utf8(kept) {
        Ok(text) => text,
        // Only a cut can end the bytes inside a character; a whole body that does is not text.
        Err(e) if e.error_len().is_none() && body.is_cut() => {
            std::str::from_utf8(kept.get(..e.valid_up_to())?).ok()?
        }
        Err(_) => return None,
    };
    (!text.contains('\0')).then_some(text)
}

/// Writes `line` with its control characters other than tab escaped (`\u{1b}`), so none
/// reaches the terminal raw: C0 (ESC starts the terminal's escape sequences), DEL and C1 (CSI,
/// U+009B, starts them too on some terminals).
fn write_escaped(f: &mut std::fmt::Formatter<'_>, line: &str) -> std::fmt::Result {
    let mut rest = line;
    while let Some(at) = rest.find(|c: char| c.is_control() && c != '\t') {
        let (plain, from) = rest.split_at(at);
        f.write_str(plain)?;
        let mut chars = from.chars();
        if let Some(c) = chars.next() {
            write!(f, "{}", c.escape_debug())?;
        }
        rest = chars.as_str();
    }
    f.write_str(rest)
}

/// `byte` or `bytes`, as `n` asks.
fn bytes(n: u64) -> &'static str {
    if n == 1 { "byte" } else { "bytes" }
}

/// `12,345`: a count with its digits grouped by thousands.
struct Grouped(u64);

impl std::fmt::Display for Grouped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.0.to_string();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                f.write_char(',')?;
            }
            f.write_char(digit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventStatus;
    use crate::event::SHOWN_BODY_BYTES;

    fn page(json: serde_json::Value) -> EventPage {
        serde_json::from_value(json).expect("valid page")
    }

    #[test]
    fn event_table_has_one_padded_row_per_event() {
        let page = page(serde_json::json!({
            "channel": "abc",
            "events": [
                {"id": "5f0c1a2b-0000-4000-8000-000000000001", "received_at": "2026-11-23T10:00:00.123Z",
                 "method": "POST", "path": "/github", "query": "x=1", "status": "delivered",
                 "attempts": 2, "response_status": 201, "body_bytes": 12, "next_attempt_at": null,
                 "event_type": "pull_request", "replay_of": null},
                {"id": "5f0c1a2b-0000-4000-8000-000000000002", "received_at": "2026-11-23T09:59:00.000Z",
                 "method": "DELETE", "path": "", "query": null, "status": "unrouted",
                 "attempts": 0, "response_status": null, "body_bytes": 0, "next_attempt_at": null,
                 "event_type": null, "replay_of": null}
            ],
            "next_before": null
        }));
        let table = event_table(&page);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "ID                                    RECEIVED                  METHOD  PATH         TYPE          STATUS     CODE  ATTEMPTS",
                "5f0c1a2b-0000-4000-8000-000000000001  2026-11-23T10:00:00.123Z  POST    /github?x=1  pull_request  delivered  201   2",
                "5f0c1a2b-0000-4000-8000-000000000002  2026-11-23T09:59:00.000Z  DELETE  /            -             unrouted   -     0",
            ]
        );
    }

    fn delivery(path: &str, via: Via) -> Delivery {
        Delivery {
            at: std::time::UNIX_EPOCH,
            id: protocol::DeliveryId::from_uuid(uuid::Uuid::nil()),
            method: "POST".to_owned(),
            path: path.to_owned(),
            event_type: None,
            status: Some(200),
            duration: std::time::Duration::from_millis(3),
            error: None,
            via,
            body: None,
        }
    }

    #[test]
    fn delivery_lines_mark_queued_and_replayed_deliveries() {
        let id = "00000000-0000-0000-0000-000000000000";
        let line = |via| delivery_line(&delivery("/gh", via));
        let start = format!("1970-01-01T00:00:00Z POST /gh - 200 3ms {id}");
        assert_eq!(line(Via::Relay(AttemptKind::Live)), start);
        let typed = Delivery {
            event_type: Some("Push Hook".to_owned()),
            ..delivery("/gh", Via::Relay(AttemptKind::Live))
        };
        assert_eq!(
            delivery_line(&typed),
            format!("1970-01-01T00:00:00Z POST /gh Push_Hook 200 3ms {id}"),
            "one field, whatever the type"
        );
        assert_eq!(
            line(Via::Relay(AttemptKind::Queued)),
            format!("{start} queued")
        );
        assert_eq!(
            line(Via::Relay(AttemptKind::Replay)),
            format!("{start} replay")
        );
        assert_eq!(
            line(Via::Local),
            format!("{start} replay (from here, not recorded on the relay)")
        );
    }

    #[test]
    fn long_paths_are_cut_in_the_delivery_line() {
        let long = format!("/{}", "\u{e9}".repeat(60 * 1024));
        let line = delivery_line(&delivery(&long, Via::Relay(AttemptKind::Live)));
        let path = line.split(' ').nth(2).expect("path field");
        assert_eq!(path.chars().count(), MAX_SHOWN_PATH);
        assert!(path.ends_with("..."), "{path}");
        assert!(long.starts_with(path.trim_end_matches("...")));
        let exact = format!("/{}", "a".repeat(MAX_SHOWN_PATH - 1));
        assert!(delivery_line(&delivery(&exact, Via::Relay(AttemptKind::Live))).contains(&exact));
    }

    /// The lines `--print-body` writes for a response body that arrived in `slices`.
    fn body_lines(slices: &[&[u8]]) -> String {
        let mut body = BodyPrefix::default();
        for slice in slices {
            body.keep(slice);
        }
        BodyLines(&body).to_string()
    }

    #[test]
    fn a_text_body_is_shown_line_by_line_indented() {
        assert_eq!(
            body_lines(&[b"{\"ok\":true,\n", b"\t\"id\": 7}\r\n\nend"]),
            "  {\"ok\":true,\n  \t\"id\": 7}\n\n  end\n"
        );
        assert_eq!(
            body_lines(&[b"done\n"]),
            "  done\n",
            "no line after the last newline"
        );
        assert_eq!(
            body_lines(&["caf\u{e9} \u{2713}".as_bytes()]),
            "  caf\u{e9} \u{2713}\n"
        );
    }

    #[test]
    fn an_empty_body_adds_no_line() {
        assert_eq!(body_lines(&[]), "");
        assert_eq!(body_lines(&[b""]), "");
    }

    #[test]
    fn a_cut_body_ends_with_how_many_bytes_were_not_shown() {
        let long = "line\n".repeat(3000);
        let shown = body_lines(&[long.as_bytes()]);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines.len(),
            SHOWN_BODY_BYTES / 5 + 2,
            "whole lines, a part, the marker"
        );
        assert!(lines[..lines.len() - 2].iter().all(|l| *l == "  line"));
        assert_eq!(lines[lines.len() - 2], "  l", "4096 = 819 * 5 + 1");
        assert_eq!(lines[lines.len() - 1], "  ... (10,904 more bytes)");
        let one_more = [&[b'a'; SHOWN_BODY_BYTES][..], b"b"];
        assert!(body_lines(&one_more).ends_with("\n  ... (1 more byte)\n"));
    }

    #[test]
    fn a_cut_inside_a_character_shows_the_text_before_it() {
        // 4095 bytes, then a 2-byte character the cut splits.
        let body = format!("{}\u{e9}rest", "a".repeat(SHOWN_BODY_BYTES - 1));
        let shown = body_lines(&[body.as_bytes()]);
        let (text, marker) = shown.split_once('\n').expect("two lines");
        assert_eq!(text, format!("  {}", "a".repeat(SHOWN_BODY_BYTES - 1)));
        assert_eq!(
            marker, "  ... (6 more bytes)\n",
            "the split character and `rest`"
        );
    }

    #[test]
    fn a_body_that_is_not_text_shows_only_its_size() {
        assert_eq!(
            body_lines(&[b"\x89PNG\r\n\x1a\n\0\0"]),
            "  (10 bytes, not text)\n"
        );
        assert_eq!(
            body_lines(&[b"GIF89a\0\0", &[0xff; 2000]]),
            "  (2,008 bytes, not text)\n",
            "a NUL byte: binary, though its start is ASCII"
        );
        assert_eq!(
            body_lines(&[b"caf\xc3"]),
            "  (4 bytes, not text)\n",
            "a whole body that ends inside a character"
        );
        let big = vec![0xfe; 1_234_567];
        assert_eq!(body_lines(&[&big]), "  (1,234,567 bytes, not text)\n");
        assert_eq!(body_lines(&[b"\xff"]), "  (1 byte, not text)\n");
    }

    #[test]
    fn control_characters_in_a_body_are_escaped() {
        assert_eq!(
            body_lines(&["\u{1b}]0;owned\u{7}\u{1b}[2Jred\rover\u{7f}\u{9b}31m\tend".as_bytes()]),
            "  \\u{1b}]0;owned\\u{7}\\u{1b}[2Jred\\rover\\u{7f}\\u{9b}31m\tend\n"
        );
        let shown = body_lines(&["\u{1b}[31m\u{8}\u{c}\u{85}".as_bytes()]);
        assert!(
            !shown.trim_end_matches('\n').chars().any(char::is_control),
            "{shown:?}"
        );
    }

    #[test]
    fn a_delivery_with_a_body_writes_it_under_its_line() {
        let mut d = delivery("/gh", Via::Relay(AttemptKind::Live));
        let mut out = Vec::new();
        write_event(&mut out, &Event::Delivered(d.clone())).expect("written");
        let line = String::from_utf8(out).expect("text");
        let mut body = BodyPrefix::default();
        body.keep(b"thanks\n");
        d.body = Some(Box::new(body));
        let mut out = Vec::new();
        write_event(&mut out, &Event::Delivered(d)).expect("written");
        assert_eq!(
            String::from_utf8(out).expect("text"),
            format!("{line}  thanks\n")
        );
    }

    #[test]
    fn byte_counts_group_their_digits_by_thousands() {
        let shown = |n| Grouped(n).to_string();
        assert_eq!(shown(0), "0");
        assert_eq!(shown(999), "999");
        assert_eq!(shown(1000), "1,000");
        assert_eq!(shown(12_345), "12,345");
        assert_eq!(shown(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn disconnected_lines_name_the_relay_and_say_what_happened() {
        let half = std::time::Duration::from_millis(500);
        let server = "http://127.0.0.1:8080/";
        let line = |why: Disconnect| disconnected_line(server, &why, half);
        assert_eq!(
            line(Disconnect::Closed {
                code: 1001,
                reason: "server shutting down".to_owned()
            }),
            "Disconnected: the relay at http://127.0.0.1:8080 is shutting down (1001); reconnecting in 0.5s"
        );
        assert_eq!(
            line(Disconnect::Refused {
                status: 429,
                message: "too many wrong tokens from this address; try again in 60 s".to_owned()
            }),
            "The relay at http://127.0.0.1:8080 refused the connection with 429 Too Many Requests: too many wrong tokens from this address; try again in 60 s; retrying in 0.5s"
        );
        assert_eq!(
            line(Disconnect::Unreachable("connection refused".to_owned())),
            "Cannot reach the relay at http://127.0.0.1:8080 (connection refused); retrying in 0.5s"
        );
    }

    #[test]
    fn empty_page_says_so_and_names_the_status_asked_for() {
        let empty = page(serde_json::json!({"channel": "abc", "events": [], "next_before": null}));
        let mut out = Vec::new();
        let query = EventsQuery {
            limit: 20,
            status: Some(EventStatus::Failed),
            event_type: None,
        };
        write_event_page(&mut out, "abc", &query, &empty).expect("written");
        assert_eq!(out, b"No failed events in channel abc\n");
        let mut out = Vec::new();
        let query = EventsQuery {
            limit: 20,
            status: None,
            event_type: None,
        };
        write_event_page(&mut out, "abc", &query, &empty).expect("written");
        assert_eq!(out, b"No events in channel abc\n");
    }

    #[test]
    fn event_table_shows_a_type_as_one_word() {
        let page = page(serde_json::json!({
            "channel": "abc",
            "events": [
                {"id": "5f0c1a2b-0000-4000-8000-000000000001", "received_at": "2026-11-23T10:00:00.123Z",
                 "method": "POST", "path": "/gitlab", "query": null, "status": "delivered",
                 "attempts": 1, "response_status": 200, "body_bytes": 2, "next_attempt_at": null,
                 "event_type": "Push Hook", "replay_of": null}
            ],
            "next_before": null
        }));
        let table = event_table(&page);
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .expect("a row")
            .split_whitespace()
            .collect();
        assert_eq!(row[3..6], ["/gitlab", "Push_Hook", "delivered"]);
    }

    #[test]
    fn empty_page_names_the_type_asked_for() {
        let empty = page(serde_json::json!({"channel": "abc", "events": [], "next_before": null}));
        let pattern = |text| protocol::TypePattern::parse(text).expect("valid");
        for (status, event_type, line) in [
            (None, "push", "No events of type push in channel abc\n"),
            (
                Some(EventStatus::Unrouted),
                "pull_request*",
                "No unrouted events of type pull_request* in channel abc\n",
            ),
        ] {
            let query = EventsQuery {
                limit: 20,
                status,
                event_type: Some(pattern(event_type)),
            };
            let mut out = Vec::new();
            write_event_page(&mut out, "abc", &query, &empty).expect("written");
            assert_eq!(String::from_utf8_lossy(&out), line);
        }
    }
}
