//! The build engine: steps with declared inputs and outputs ([`Step`]), a plan that computes
//! their keys bottom-up and says what is cached, what will run and why ([`Plan`]), and a
//! scheduler that runs the misses through a [`Sandbox`](crate::sandbox::Sandbox) and stores
//! their outputs ([`run`]). It knows nothing about K3s: recipes build plans.

mod error;
mod event;
mod limits;
mod plan;
mod plan_file;
mod run;
mod step;

#[cfg(test)]
mod tests;

pub(crate) use error::EngineError;
pub(crate) use event::EngineEvent;
pub(crate) use limits::{Limits, StepLimits, parse_duration, parse_memory};
pub(crate) use plan::{Plan, PlannedStep, StepStatus};
pub(crate) use plan_file::{ImageResolver, load_plan_file};
pub(crate) use run::{RunOptions, RunReport, StepOutcome, run, wait_for_steps};
pub(crate) use step::{HostAction, HostError, Step, StepImage, StepInput};
