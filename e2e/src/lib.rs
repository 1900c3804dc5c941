//! The one test harness of hookrelay: the real relay server (in-process on 127.0.0.1:0, or
//! its binary), real agents, a real local target and an HTTP client. Nothing here mocks our
//! own crates.
//!
//! The end-to-end tests (`tests/`, one binary with a module per topic) run a server and an
//! agent together and use all of it through `hookrelay_e2e::*`. relay-server's and
//! relay-client's own tests must not depend on the other crate, so they cannot use this
//! library; instead their `tests/common/mod.rs` compiles the modules they may use straight
//! from this directory with `#[path]`, so every helper is written once:
//!
//! | module | uses of our crates | also compiled by |
//! | --- | --- | --- |
//! | [`requests`], [`process`] | none | relay-server's and relay-client's tests |
//! | [`postgres`] | none | relay-server's store tests |
//! | [`rng`] | none | relay-server's tests |
//! | [`server`], [`ws`], [`tls`], [`live`] | relay-server | relay-server's tests |
//! | [`client_process`] | none (the `relay-client` binary) | relay-client's tests |
//! | [`target`], [`agent`] | relay-client too | e2e only |
//! | [`node`] | none (Node.js and `tests/senders`) | e2e only |
//! | [`pebble`] | relay-server (through [`tls`]) | e2e only |
//!
//! So a module of every row but the last names its siblings as `super::...`, not `crate::...`,
//! and uses no crate its row does not list. Binaries: [`process::binary`] finds
//! `relay-server` and `relay-client` next to the test binary, where `cargo test --workspace`
//! builds them; run alone, `cargo test -p hookrelay-e2e` does not build them (Cargo builds a
//! binary only for the tests of its own package), so `cargo build` first, or an older build
//! there is what runs.

pub mod agent;
pub mod client_process;
pub mod live;
pub mod node;
pub mod pebble;
pub mod postgres;
pub mod process;
pub mod requests;
pub mod rng;
pub mod server;
pub mod target;
pub mod tls;
pub mod ws;

pub use agent::*;
pub use client_process::*;
pub use process::*;
pub use requests::*;
pub use server::*;
pub use target::*;
