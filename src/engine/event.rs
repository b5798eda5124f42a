use crate::hash::StepKey;
use crate::sandbox::LogStream;

/// What the engine reports while it runs a plan; the CLI renders these.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EngineEvent {
    /// A step's result was found in the store; nothing ran.
    Cached {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
    },
    /// Another kiln run holds the step's lock (it is running that step): this one waits, and
    /// then finds its record.
    Waiting {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
    },
    /// A step started running.
    Started {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
    },
    /// A line of a running step's output.
    Log {
        /// The step.
        step: String,
        /// Which stream.
        stream: LogStream,
        /// The line.
        line: String,
    },
    /// What a running step runs now: its newest process's command line.
    Command {
        /// The step.
        step: String,
        /// The command line.
        command: String,
    },
    /// A step finished and its outputs were stored.
    Finished {
        /// The step.
        step: String,
        /// Its key.
        key: StepKey,
        /// Wall time in seconds.
        seconds: f64,
    },
}
