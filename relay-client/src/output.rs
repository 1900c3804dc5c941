//! The only place that prints for humans: where the lines `report.rs` words go (stdout, and
//! stderr for trouble), and how they are batched so printing never stalls deliveries.

use std::io::Write;

use tokio::sync::mpsc;

use crate::config::EventsQuery;
use crate::event::Event;
use crate::report::{disconnected_line, stored_replay_line, write_event, write_event_page};
use protocol::DeliveryId;
use protocol::api::EventPage;

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
        Event::Disconnected {
            server,
            why,
            retry_in,
        } => eprintln!("{}", disconnected_line(server, why, *retry_in)),
        _ => {
            let _ = write_event(&mut std::io::stdout().lock(), event);
        }
    }
}

/// Prints `relay-client events`: the table, a line saying there is nothing to show, and a hint
/// when older events were left out.
pub fn print_event_page(channel: &str, query: &EventsQuery, page: &EventPage) {
    let mut out = std::io::stdout().lock();
    let _ = write_event_page(&mut out, channel, query, page);
}

/// Prints the line saying an edited replay was stored as event `id`, a replay of `original`.
pub fn print_stored_replay(id: DeliveryId, original: DeliveryId) {
    println!("{}", stored_replay_line(id, original));
}

/// Prints a start-up or fatal error.
pub fn error(message: &str) {
    eprintln!("error: {message}");
}
