//! Agents: their WebSocket sessions ([`ws`]), who serves which channel and which attempts each
//! owes an answer for ([`registry`]), and the frames on the wire ([`wire`]).

pub mod registry;
pub mod wire;
pub mod ws;
