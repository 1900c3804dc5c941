//! The only place that prints for humans: the lines a developer watches while webhooks arrive.

use crate::agent::{Delivery, Event};

/// Prints one event: connection changes and one line per delivery.
pub fn print(event: &Event) {
    match event {
        Event::Connected { public_url, target } => {
            println!("Forwarding {public_url} -> {target}");
        }
        Event::Disconnected { reason, retry_in } => {
            eprintln!(
                "Disconnected from the relay ({reason}); reconnecting in {:.1}s",
                retry_in.as_secs_f64()
            );
        }
        Event::Delivered(delivery) => println!("{}", delivery_line(delivery)),
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
