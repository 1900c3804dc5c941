//! Agents: their WebSocket sessions ([`ws`]), who serves which channel and which attempts each
//! owes an answer for ([`registry`]), the frames on the wire ([`wire`]), and, on a store that
//! several nodes share, the leases that tell the others which agents this node holds
//! ([`leases`]).

pub mod leases;
pub mod registry;
pub mod wire;
pub mod ws;
