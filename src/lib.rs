//! kiln makes the K3s Kubernetes patch release reproducible: every step is a pure function of
//! content-hashed inputs, run in a hermetic container. See `docs/design/` and the README.
//!
//! The binary is a thin wrapper around [`cli::run`]; everything else is `pub(crate)` unless an
//! integration test needs it.

pub mod cache;
pub mod cli;
pub mod demo;
pub mod durable;
pub mod engine;
pub mod failpoint;
pub mod git;
pub mod gomod;
pub mod hash;
pub mod image;
pub mod lockfile;
pub mod names;
pub mod publish;
pub mod release;
pub mod sandbox;
pub mod store;
