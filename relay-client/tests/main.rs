//! relay-client's own tests: each module tests the agent or its binary alone, with no relay
//! server. One test binary with a module per topic, so the crate is linked into one test
//! executable instead of one per file. Tests that run a server and an agent together are in
//! the e2e crate.

mod common;

mod agent;
mod cli;
mod history;
