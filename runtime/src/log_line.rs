//! The human log line without colours, as a file or the journal gets it: the line
//! tracing-subscriber's default format writes, byte for byte, written more cheaply.
//!
//! relay-server logs one line per webhook. Through the default format that line cost about
//! 9,000 instructions: the time formatted from scratch each time, and each part of the line
//! through `write!` and the colour wrappers even with colours off. [`Plain`] formats the date
//! and time to the second once per second and thread, and writes the fixed parts as they are;
//! the fields are formatted by the same field formatter as before.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// `2026-12-08T00:13:43.545323Z  INFO span{a=1}:inner: target: message a=1`, as
/// `tracing_subscriber::fmt::format::Full` without ANSI colours writes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

thread_local! {
    /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// Writes `now` as `2026-12-08T00:13:43.545323Z` (UTC, microseconds), without the space after.
fn write_time(writer: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = date_time(secs);
        SECOND.set((secs, text));
    }
    let mut micros = *b".000000Z";
    put_digits(&mut micros[1..7], u64::from(since.subsec_micros()));
    // Both are ASCII digits and separators.
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    writer.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the Unix epoch, in UTC (years 1970 to 9999).
fn date_time(secs: u64) -> [u8; 19] {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], rest / 3600);
    put_digits(&mut text[14..16], rest / 60 % 60);
    put_digits(&mut text[17..19], rest % 60);
    text
}

/// Writes `value` in decimal into all of `out`, zero-padded on the left (its lowest digits
/// when it has more).
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// Lines written, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lines").clone()).expect("UTF-8")
        }
    }

    /// Logs the same events at every level, in spans with and without fields.
    fn log_some() {
        let id = "01a252ff-c479-7059-a551-15325cc143a5";
        tracing::info!("started with no span");
        let outer = tracing::info_span!("delivery", delivery_id = %id, channel = "bench", n = 3);
        let _outer = outer.enter();
        tracing::info!(status = 200u16, elapsed_ms = 17u64, "{}", "delivered");
        let inner = tracing::warn_span!("plain");
        let _inner = inner.enter();
        tracing::warn!(error = %"timed out", cause = ?Some("slow"), "delivery failed");
        tracing::error!(target: "elsewhere", text = "quoted \"here\"", flag = true, "oh");
        tracing::debug!(x = 1.5f64, "debug line");
        tracing::trace!("trace line");
    }

    #[test]
    fn lines_are_the_default_formats_without_colours_byte_for_byte() {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(ours.clone())
                    .event_format(Plain),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(theirs.clone()),
            );
        tracing::subscriber::with_default(subscriber, log_some);
        let strip = |text: String| -> Vec<String> {
            text.lines()
                .map(|line| {
                    // The time differs by when each layer read the clock.
                    let (time, rest) = line.split_once(' ').expect("a time first");
                    assert_eq!(time.len(), "2026-12-08T00:13:43.545323Z".len(), "{line}");
                    rest.to_owned()
                })
                .collect()
        };
        let (ours, theirs) = (strip(ours.text()), strip(theirs.text()));
        assert_eq!(ours.len(), 6);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn times_are_utc_with_microseconds() {
        // The expected dates are `date -u -d @SECS`'s.
        let cases = [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_796_688_823, "2026-12-08T00:13:43"),
            (4_107_542_399, "2100-02-28T23:59:59"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ];
        for (secs, date) in cases {
            for (micros, fraction) in [(0, ".000000Z"), (7, ".000007Z"), (545_323, ".545323Z")] {
                let at = UNIX_EPOCH + Duration::new(secs, micros * 1000 + 999);
                let mut text = String::new();
                write_time(&mut Writer::new(&mut text), at).expect("write");
                assert_eq!(text, format!("{date}{fraction}"));
                // Again within the same second, from the thread's cache.
                text.clear();
                write_time(&mut Writer::new(&mut text), at).expect("write");
                assert_eq!(text, format!("{date}{fraction}"));
            }
        }
    }
}
