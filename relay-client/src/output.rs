//! The only place that prints for humans: the lines a developer watches while webhooks arrive.

use std::io::Write;

use tokio::sync::mpsc;

use crate::agent::{Delivery, Event};

/// Most events written before one flush of stdout.
const PRINT_BATCH: usize = 1024;
/// Pause after each write to stdout, so lines arriving together leave together.
const PRINT_COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// Prints events until every sender is gone; run it on its own thread, so a terminal or pipe
/// that blocks never stalls deliveries (the agent drops lines rather than wait for output).
/// Whatever is queued when the printer wakes goes out in one write, so a burst of deliveries
/// costs one system call, not one per line.
pub fn print_events(mut rx: mpsc::Receiver<Event>) {
    while let Some(first) = rx.blocking_recv() {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let rest = std::iter::from_fn(|| rx.try_recv().ok()).take(PRINT_BATCH);
        for event in std::iter::once(first).chain(rest) {
            match &event {
                Event::Disconnected { .. } => {
                    let _ = out.flush();
                    print(&event);
                }
                _ => {
                    let _ = write_event(&mut out, &event);
                }
            }
        }
        let _ = out.flush();
        drop(out);
        // Coalesce: under load, the next lines gather while we pause, and the agent's threads
        // are not woken once per delivery; a human sees no difference.
        std::thread::sleep(PRINT_COALESCE);
    }
}

/// Prints one event: connection changes and one line per delivery.
pub fn print(event: &Event) {
    match event {
        Event::Disconnected { reason, retry_in } => {
            eprintln!(
                "Disconnected from the relay ({reason}); reconnecting in {:.1}s",
                retry_in.as_secs_f64()
            );
        }
        _ => {
            let _ = write_event(&mut std::io::stdout().lock(), event);
        }
    }
}

fn write_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    match event {
        Event::Connected { public_url, target } => {
            writeln!(out, "Forwarding {public_url} -> {target}")
        }
        Event::Disconnected { .. } => Ok(()),
        Event::Delivered(delivery) => writeln!(out, "{}", delivery_line(delivery)),
    }
}

/// `2026-11-23T09:41:02Z POST /github?x=1 200 12ms 5f0c...`: time, method, path, status,
/// duration, delivery id, and the error when there was one.
pub fn delivery_line(d: &Delivery) -> String {
    let status = d.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
    let mut line = format!(
        "{} {} {} {} {}ms {}",
        humantime::format_rfc3339_seconds(d.at),
        d.method,
        d.path,
        status,
        d.duration.as_millis(),
        d.id
    );
    if let Some(error) = &d.error {
        line.push_str(" (");
        line.push_str(error);
        line.push(')');
    }
    line
}

/// Prints a start-up or fatal error.
pub fn error(message: &str) {
    eprintln!("error: {message}");
}
