use std::collections::VecDeque;

use futures::TryStreamExt as _;

use super::{Sandbox, SandboxError, StepSpec};

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepExit {
    /// The process exit code (128 + signal when killed by a signal).
    pub code: i64,
    /// The kernel's OOM killer ended the step.
    pub oom_killed: bool,
}

impl StepExit {
    /// True when the step exited 0 and was not OOM-killed.
    #[must_use]
    pub const fn is_success(&self) -> bool {
        self.code == 0 && !self.oom_killed
    }
}

/// One event of a running step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepEvent {
    /// The container exists and its process was started.
    Started {
        /// The engine's container id.
        container: String,
    },
    /// One line of output, without its trailing newline (lossily decoded as UTF-8).
    Log {
        /// Where the line came from.
        stream: LogStream,
        /// The line.
        line: String,
    },
    /// What the step runs now: the command line of its newest process, sampled while it
    /// runs (sent when it changes).
    Command {
        /// The command line.
        command: String,
    },
    /// The step ended; always the last event.
    Finished(StepExit),
}

/// What [`run_to_end`] collects from a successful step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepOutput {
    /// Every stdout line.
    pub stdout: Vec<String>,
    /// The last [`STDERR_TAIL_LINES`] lines of stderr.
    pub stderr_tail: Vec<String>,
}

/// How many stderr lines an error report keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// Runs `step` to its end, forwarding every event to `on_event` (for progress), and turns a
/// non-zero exit or an OOM kill into an error carrying the step name and stderr's last lines.
pub async fn run_to_end(
    sandbox: &impl Sandbox,
    step: StepSpec,
    mut on_event: impl FnMut(&StepEvent),
) -> Result<StepOutput, SandboxError> {
    let name = step.name.clone();
    let memory_limit = step.memory_limit;
    let mut events = sandbox.run(step);
    let mut stdout = Vec::new();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Some(event) = events.try_next().await? {
        on_event(&event);
        match event {
            StepEvent::Started { .. } | StepEvent::Command { .. } => {}
            StepEvent::Log {
                stream: LogStream::Stdout,
                line,
            } => stdout.push(line),
            StepEvent::Log {
                stream: LogStream::Stderr,
                line,
            } => {
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            StepEvent::Finished(exit) => {
                let stderr_tail: Vec<String> = tail.into_iter().collect();
                if exit.oom_killed {
                    return Err(SandboxError::OomKilled {
                        step: name,
                        memory_limit,
                        stderr_tail,
                    });
                }
                if let Some(signal) = super::error::signal_of(exit.code) {
                    return Err(SandboxError::Killed {
                        step: name,
                        signal,
                        code: exit.code,
                        stderr_tail,
                    });
                }
                if exit.code != 0 {
                    return Err(SandboxError::StepFailed {
                        step: name,
                        code: exit.code,
                        stderr_tail,
                    });
                }
                return Ok(StepOutput {
                    stdout,
                    stderr_tail,
                });
            }
        }
    }
    Err(SandboxError::Truncated { step: name })
}
