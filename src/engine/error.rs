use std::path::PathBuf;

use crate::git::GitError;
use crate::hash::Digest;
use crate::sandbox::SandboxError;
use crate::store::StoreError;

/// Why a plan could not be made or run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum EngineError {
    /// A step is malformed.
    #[error("step `{step}`: {reason}")]
    #[diagnostic(code(kiln::engine::invalid_step))]
    InvalidStep {
        /// The step.
        step: String,
        /// What is wrong.
        reason: String,
    },

    /// A step ran past its timeout and was stopped (its container removed).
    #[error("step `{step}` ran past its timeout of {timeout} and was stopped{running}")]
    #[diagnostic(
        code(kiln::engine::timed_out),
        help(
            "if it only needs longer, raise it in kiln.toml: `[steps.{step}]` `timeout = \"…\"` \
             (or `[steps]` `timeout` for every step)"
        )
    )]
    TimedOut {
        /// The step.
        step: String,
        /// Its timeout, as said.
        timeout: String,
        /// " while running" and its last command when that is known, else empty.
        running: String,
    },

    /// Two steps share a name.
    #[error("two steps are named `{step}`")]
    #[diagnostic(
        code(kiln::engine::duplicate_step),
        help("give every step a unique name")
    )]
    DuplicateStep {
        /// The name.
        step: String,
    },

    /// A step reads an output no step declares.
    #[error("step `{step}` reads `{parent}:{output}`, which no step declares")]
    #[diagnostic(
        code(kiln::engine::unknown_output),
        help("declare `{output}` in the outputs of `{parent}`")
    )]
    UnknownOutput {
        /// The reading step.
        step: String,
        /// The step it names.
        parent: String,
        /// The output it names.
        output: String,
    },

    /// Steps depend on each other in a circle.
    #[error("steps depend on each other in a cycle: {}", .steps.join(" → "))]
    #[diagnostic(code(kiln::engine::cycle))]
    Cycle {
        /// The steps in the cycle.
        steps: Vec<String>,
    },

    /// The plan file is not valid.
    #[error("invalid plan file {path}: {reason}")]
    #[diagnostic(code(kiln::engine::plan_file))]
    PlanFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The file's text, for the label.
        #[source_code]
        src: miette::NamedSource<String>,
        /// Where.
        #[label("here")]
        at: Option<miette::SourceSpan>,
    },

    /// A host input cannot be read.
    #[error("step `{step}`: cannot read input `{input}` at {path}")]
    Input {
        /// The step.
        step: String,
        /// The input.
        input: String,
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A host input changed between planning and running.
    #[error("step `{step}`: input `{input}` changed after it was planned ({path})")]
    #[diagnostic(
        code(kiln::engine::input_changed),
        help("run again; nothing was recorded for this step")
    )]
    InputChanged {
        /// The step.
        step: String,
        /// The input.
        input: String,
        /// The host path.
        path: PathBuf,
    },

    /// A step did not write an output it declares.
    #[error("step `{step}` did not produce its declared output `{output}`")]
    #[diagnostic(
        code(kiln::engine::missing_output),
        help("the command must write /out/{output}")
    )]
    MissingOutput {
        /// The step.
        step: String,
        /// The output.
        output: String,
    },

    /// A declared output lies behind a symlink the step made: reading it would follow the link
    /// out of the step's directory (onto the host, on a bind-mounted engine).
    #[error("step `{step}`: output `{output}` is reached through the symlink {link}")]
    #[diagnostic(
        code(kiln::engine::output_through_link),
        help("a step's outputs must be real files and directories under /out; fix the step")
    )]
    OutputThroughLink {
        /// The step.
        step: String,
        /// The output.
        output: String,
        /// The link, relative to `/out`.
        link: String,
    },

    /// An image could not be resolved.
    #[error("step `{step}`: cannot resolve its image")]
    #[diagnostic(code(kiln::engine::image))]
    Image {
        /// The step.
        step: String,
        /// Why, as the image layer says it (with its help).
        #[source]
        #[diagnostic_source]
        source: ResolveError,
    },

    /// The work directory could not be prepared or cleaned.
    #[error("cannot {action} the work directory {path}")]
    Work {
        /// What kiln was doing.
        action: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A step's output is not the digest it is pinned to.
    #[error(
        "step `{step}` gave output `{output}` as {actual}, but it is pinned to {expected}; no \
         record was written for it{}",
        describe_changes(changes)
    )]
    #[diagnostic(
        code(kiln::engine::pin_mismatch),
        help(
            "what the step fetched is not what was pinned: the source changed it, or something \
             between you and it did. Check the source; only if the new content is right, change \
             the pin"
        )
    )]
    PinMismatch {
        /// The step.
        step: String,
        /// The output.
        output: String,
        /// Its pin.
        expected: Digest,
        /// What it was.
        actual: Digest,
        /// What a caller that knows the pinned tree's files found different (`changed`,
        /// `added` or `removed`, then the path); the engine itself leaves it empty.
        changes: Vec<String>,
    },

    /// A builtin step failed.
    #[error("step `{step}` failed")]
    #[diagnostic(code(kiln::engine::host_step))]
    HostStep {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: super::HostError,
    },

    /// A step failed in its sandbox.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sandbox(#[from] SandboxError),

    /// The store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),

    /// Git failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Git(#[from] GitError),
}

/// An image resolver's own diagnostic, kept whole: the engine knows no image layer, so it holds
/// the resolver's error behind this, help text and sources included.
pub(crate) struct ResolveError(pub(crate) Box<dyn miette::Diagnostic + Send + Sync>);

impl std::fmt::Debug for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl miette::Diagnostic for ResolveError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.code()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.help()
    }

    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.0.diagnostic_source()
    }
}

/// The differing paths of a pinned tree, for [`EngineError::PinMismatch`]: a path in a
/// GOPROXY layout (`<module>/@v/<version>.<ext>`) is named as `module@version`.
fn describe_changes(changes: &[String]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = changes
        .iter()
        .take(20)
        .map(|change| {
            let (what, rest) = change.split_once(' ').unwrap_or(("changed", change));
            let (path, detail) = rest.split_once(' ').map_or((rest, ""), |(p, d)| (p, d));
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" {detail}")
            };
            match crate::gomod::proxy_path_module(path) {
                Some((module, version, file)) => {
                    format!("{what} {module}@{version} ({file}){detail}")
                }
                None => format!("{what} {path}{detail}"),
            }
        })
        .collect();
    let more = changes.len().saturating_sub(shown.len());
    let tail = if more > 0 {
        format!("\n  … and {more} more")
    } else {
        String::new()
    };
    format!(". What differs:\n  {}{tail}", shown.join("\n  "))
}
