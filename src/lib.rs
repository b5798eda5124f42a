//! kiln makes the K3s Kubernetes patch release reproducible: every step is a pure function of
//! content-hashed inputs, run in a hermetic container. See `docs/design/` and the README.
//!
//! The binary is a thin wrapper around [`cli::run`]. Everything else is `pub(crate)`; the few
//! items the integration tests (`tests/it`) drive directly — the sandbox, the store, hashing,
//! the toolchain images, the shared cache and a handful of release and module functions — are
//! `pub` in the modules below that are.

pub mod cache;
pub mod cli;
pub mod demo;
mod durable;
mod engine;
mod failpoint;
mod git;
pub mod gomod;
pub mod hash;
pub mod image;
pub mod lockfile;
mod names;
mod publish;
pub mod release;
pub mod sandbox;
pub mod store;
