//! kiln's integration tests: one binary. Docker tests use a real engine (`DOCKER_HOST` or the
//! default socket) and the Go 1.23 toolchain image; under `KILN_TEST_DOCKER=1` a missing
//! engine or image fails them instead of skipping.

#![allow(clippy::unwrap_used)] // helpers below #[test] fns unwrap too

mod common;

mod cache;
mod cli_errors;
mod concurrent;
mod demo;
mod engine;
mod faults;
mod fetch;
mod gomod;
mod image;
mod images;
mod k3s_build;
mod limits;
mod nested;
mod podman;
mod powerloss;
mod publish;
mod rcga;
mod real_size;
mod release;
mod release_e2e;
mod remote_engine;
mod reproducible;
mod sandbox;
mod secrets;
mod signals;
mod ssh_engine;
mod status;
mod tag_sh;
mod verify;
