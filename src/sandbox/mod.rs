//! Runs one step in isolation. Owns the [`Sandbox`] trait, the step description
//! ([`StepSpec`]), the events a running step emits ([`StepEvent`]) and two backends:
//! [`DockerSandbox`] (a real Docker Engine through bollard) and [`FakeSandbox`] (scripted, for
//! scheduler unit tests).
//!
//! The hermetic contract every backend honours (see `docs/design/hermetic-steps.md`): the
//! environment is exactly [`StepSpec::env`], the network is `none` unless declared, the
//! process runs as [`StepSpec::user`] with umask 022 and a fixed hostname, and the container
//! is removed on every path — success, failure, cancellation (dropping the stream) and panic.

mod copy;
mod docker;
mod engine;
mod error;
#[cfg(test)]
mod fake;
mod guard;
mod lines;
mod probe;
mod run_owner;
mod ssh;
mod step_event;
mod step_spec;

pub use docker::{DockerSandbox, LABEL_MOUNTS, LABEL_OWNER};
use docker::{STEP_MIN_OPEN_FILES, STEP_PIDS_LIMIT};
pub use engine::Engine;
pub(crate) use engine::{EngineInfo, HostFacts};
pub use error::SandboxError;
#[cfg(test)]
pub(crate) use fake::{FakeSandbox, FakeStep};
pub(crate) use probe::{IsolationCheck, probe_isolation};
pub use step_event::{LogStream, STDERR_TAIL_LINES, StepEvent, StepExit, StepOutput, run_to_end};
pub(crate) use step_spec::STEP_HOSTNAME;
pub use step_spec::{
    BindMount, CacheMount, LentTrees, Network, RESERVED_CACHE_PREFIX, StepSpec, UserId,
    is_reserved_cache_name,
};

use futures::stream::BoxStream;

/// Runs one step in isolation.
///
/// The stream yields [`StepEvent::Started`] once, then any number of [`StepEvent::Log`]
/// events, and ends with exactly one [`StepEvent::Finished`] — or with an `Err` if the sandbox
/// itself failed (the step's own non-zero exit is a `Finished`, not an `Err`). Dropping the
/// stream before it ends cancels the step and removes its container.
pub trait Sandbox: Send + Sync {
    /// Starts `step` and returns its event stream.
    fn run(&self, step: StepSpec) -> BoxStream<'static, Result<StepEvent, SandboxError>>;

    /// Whether the engine binds host directories into the step (a local engine); one that
    /// does not gets copies of them, so nothing a step reads may live outside its mounts.
    fn binds_host_dirs(&self) -> bool {
        true
    }
}
