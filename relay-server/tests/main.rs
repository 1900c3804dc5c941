//! relay-server's own tests: each module tests the server alone, in-process or as its binary,
//! with no agent. One test binary with a module per topic, so the crate is linked into one
//! test executable instead of one per file. Tests that run a server and an agent together
//! are in the e2e crate.

mod common;

mod agent_ws;
mod api;
mod channels;
mod cli;
mod deploy;
mod durability;
mod inspector;
mod limits;
mod never_refuse;
mod ops;
mod relay;
mod store;
mod tls;
mod verify;
