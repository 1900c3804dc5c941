//! The parts of the test harness that need no relay-server, compiled here from the e2e crate's
//! source (`e2e/src/`, where each is written once) so that relay-client's own tests depend on
//! no other crate of ours. See `e2e/src/lib.rs` for which module may use what.

// Each test binary uses only some of the helpers, and of the re-exports.
#![allow(dead_code, unused_imports)]

#[path = "../../../e2e/src/client_process.rs"]
pub mod client_process;
#[path = "../../../e2e/src/process.rs"]
pub mod process;
#[path = "../../../e2e/src/requests.rs"]
pub mod requests;

pub use client_process::*;
pub use process::*;
pub use requests::*;
