//! The parts of the test harness that need no relay-client, compiled here from the e2e crate's
//! source (`e2e/src/`, where each is written once) so that relay-server's own tests depend on
//! no other crate of ours. See `e2e/src/lib.rs` for which module may use what.

// Each test binary uses only some of the helpers, and of the re-exports.
#![allow(dead_code, unused_imports)]

#[path = "../../../e2e/src/live.rs"]
pub mod live;
#[path = "../../../e2e/src/process.rs"]
pub mod process;
#[path = "../../../e2e/src/requests.rs"]
pub mod requests;
#[path = "../../../e2e/src/rng.rs"]
pub mod rng;
#[path = "../../../e2e/src/server.rs"]
pub mod server;
#[path = "../../../e2e/src/tls.rs"]
pub mod tls;
#[path = "../../../e2e/src/ws.rs"]
pub mod ws;

pub use process::*;
pub use requests::*;
pub use server::*;
