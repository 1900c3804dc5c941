//! Load helpers for `bench/run.sh`; see `bench/README.md`. The crate's code lives in its
//! binaries: `bench-target` (a fast local HTTP target) and `idle-agents` (a crowd of connected,
//! idle agents for the memory measurement).
