//! Every test that runs the relay server and an agent together, in one binary (one link of
//! both crates instead of one per file), a module per topic. The harness is this crate's
//! library, `hookrelay_e2e`.

mod acme;
mod agent_ws;
mod channels;
mod client_cli;
mod client_history;
mod durability;
mod event_types;
mod failover;
mod inspector;
mod limits;
mod never_refuse;
mod ops;
mod postgres;
mod real_senders;
mod relay;
mod store;
mod tls;
mod verify;
