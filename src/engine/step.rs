use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::hash::{Derivation, Digest, InputRef};
use crate::sandbox::{CacheMount, Network};
use crate::store::OutputRef;

use super::EngineError;

/// The image a step runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepImage {
    /// How the engine finds it (an id or tag); a local fact, not part of the key.
    pub(crate) reference: String,
    /// Its content identity (rootfs digest or recipe key); part of the key.
    pub(crate) identity: Digest,
}

/// One input of a step. Inside the container, inputs other than values appear under
/// `/in/<name>` (a file, or a directory for trees, git checkouts and tree outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StepInput {
    /// A plain value (keyed; pass it to the command through `env` or `argv` to use it).
    Value(String),
    /// A host file, hashed when planned.
    File {
        /// Where it is.
        path: PathBuf,
        /// Its digest when planned.
        digest: Digest,
    },
    /// A host directory, hashed as a canonical tree when planned.
    Tree {
        /// Where it is.
        path: PathBuf,
        /// Its tree digest when planned.
        digest: Digest,
    },
    /// A commit of a host repository, checked out detached (see [`crate::git::materialize`]).
    Git {
        /// The repository.
        repo: PathBuf,
        /// The commit id.
        commit: String,
        /// The oldest commit whose history up to `commit` the step reads; `None`: it reads
        /// `commit` alone.
        history_from: Option<String>,
        /// Whether the step reads the checked-out files; without, it reads the repository
        /// through git only and no checkout is made.
        worktree: bool,
    },
    /// An output of another step of the plan.
    Output {
        /// The producing step.
        step: String,
        /// Its declared output.
        output: String,
    },
}

/// A command in an image with declared inputs and outputs. It runs with `/in` (read-only
/// inputs) and `/out` (where it writes its declared outputs) as its only host directories,
/// `/out` as its working directory, and as the owner of its work directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// Unique name within the plan.
    pub(crate) name: String,
    /// Kind (`exec` for plan files; recipes name theirs).
    pub(crate) kind: String,
    /// Schema version of the kind.
    pub(crate) schema: u32,
    /// The image.
    pub(crate) image: StepImage,
    /// The command.
    pub(crate) argv: Vec<String>,
    /// Declared environment (on top of the sandbox's fixed base).
    pub(crate) env: BTreeMap<String, String>,
    /// Named inputs.
    pub(crate) inputs: BTreeMap<String, StepInput>,
    /// Declared outputs, relative to `/out`; a trailing `/` declares a directory.
    pub(crate) outputs: Vec<String>,
    /// Cache volumes (never part of the key: caches must not change outputs).
    pub(crate) caches: Vec<CacheMount>,
    /// Memory limit in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// Mount `/in` writable: the step may work in its inputs (a git checkout to rebase, say).
    /// Inputs are materialized afresh for every run, so nothing outside the run changes.
    pub(crate) writable_inputs: bool,
    /// The network: none, or the host's for a fetch step (part of the key).
    pub(crate) network: Network,
    /// Output → the digest it must have (a fetch step's fixed outputs; checked after every
    /// run and on every cache hit, never part of the key).
    pub(crate) pins: BTreeMap<String, Digest>,
    /// Environment a fetch step gets that is not part of its key (where to fetch from: a
    /// proxy URL on this machine), as Nix's `impureEnvVars`. Its pinned outputs, not these
    /// values, say what it made.
    pub(crate) impure_env: BTreeMap<String, String>,
    /// Run this in the host process instead of a container (a builtin, like Nix's): it gets
    /// the input and output directories. `image` and `argv` still describe it for the key.
    pub(crate) host: Option<HostAction>,
}

/// Why a builtin step failed: the recipe's own typed error, kept whole (with its sources) for
/// the diagnostic.
pub(crate) type HostError = Box<dyn std::error::Error + Send + Sync>;

/// The function a builtin step runs: `(input dir, output dir) -> Result`.
pub(crate) type HostFn = dyn Fn(&Path, &Path) -> Result<(), HostError> + Send + Sync;

/// A builtin step's work, done by kiln itself.
#[derive(Clone)]
pub(crate) struct HostAction(pub(crate) std::sync::Arc<HostFn>);

impl HostAction {
    /// Wraps a function.
    pub(crate) fn new<E: std::error::Error + Send + Sync + 'static>(
        action: impl Fn(&Path, &Path) -> Result<(), E> + Send + Sync + 'static,
    ) -> Self {
        Self(std::sync::Arc::new(move |input: &Path, output: &Path| {
            action(input, output).map_err(HostError::from)
        }))
    }
}

impl std::fmt::Debug for HostAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostAction")
    }
}

impl PartialEq for HostAction {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for HostAction {}

impl Step {
    /// The derivation, given the digests of the parent outputs it reads. `None` when a parent
    /// output is not known yet.
    #[must_use]
    pub(crate) fn derivation(
        &self,
        parents: &BTreeMap<String, BTreeMap<String, OutputRef>>,
    ) -> Option<Derivation> {
        let mut inputs = BTreeMap::new();
        for (name, input) in &self.inputs {
            let resolved = match input {
                StepInput::Value(value) => InputRef::Value {
                    value: value.clone(),
                },
                StepInput::File { digest, .. } => InputRef::Blob {
                    digest: *digest,
                    tree: false,
                },
                StepInput::Tree { digest, .. } => InputRef::Blob {
                    digest: *digest,
                    tree: true,
                },
                StepInput::Git {
                    commit,
                    history_from,
                    worktree,
                    ..
                } => InputRef::Git {
                    commit: commit.clone(),
                    view: [
                        history_from.as_ref().map(|f| format!("history from {f}")),
                        (!worktree).then(|| "no checkout".to_owned()),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                },
                StepInput::Output { step, output } => {
                    let found = parents.get(step)?.get(output)?;
                    InputRef::Output {
                        step: step.clone(),
                        output: output.clone(),
                        digest: found.digest,
                        tree: found.tree,
                    }
                }
            };
            inputs.insert(name.clone(), resolved);
        }
        Some(Derivation {
            kind: self.kind.clone(),
            schema: self.schema,
            image: self.image.identity,
            argv: self.argv.clone(),
            env: self.env.clone(),
            inputs,
            outputs: self.outputs.clone(),
            // Only whether the step has network: which one reached the outside does not change
            // what it must produce (its outputs are pinned). Written `host`, as it was before
            // a fetch step could be given a named network, so keys stay what they were.
            network: (self.network != Network::None).then(|| "host".to_owned()),
        })
    }

    /// The steps whose outputs this one reads.
    pub(crate) fn parents(&self) -> impl Iterator<Item = &str> {
        self.inputs.values().filter_map(|input| match input {
            StepInput::Output { step, .. } => Some(step.as_str()),
            _ => None,
        })
    }

    /// Checks names and paths.
    pub(crate) fn validate(&self) -> Result<(), EngineError> {
        let invalid = |reason: String| EngineError::InvalidStep {
            step: self.name.clone(),
            reason,
        };
        if !is_name(&self.name) {
            return Err(invalid(
                "step names are 1-64 characters of [A-Za-z0-9_.-]".into(),
            ));
        }
        if self.argv.is_empty() {
            return Err(invalid("the command is empty".into()));
        }
        for name in self.inputs.keys() {
            if !is_name(name) {
                return Err(invalid(format!(
                    "input name `{name}` must be 1-64 characters of [A-Za-z0-9_.-]"
                )));
            }
        }
        for output in &self.outputs {
            if !is_output_path(output) {
                return Err(invalid(format!(
                    "output `{output}` must be a relative path without `..` (end it with `/` for a directory)"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for output in &self.outputs {
            if !seen.insert(output.trim_end_matches('/')) {
                return Err(invalid(format!("output `{output}` is declared twice")));
            }
        }
        for output in self.pins.keys() {
            if !self.outputs.contains(output) {
                return Err(invalid(format!(
                    "pin `{output}` names no declared output ({})",
                    self.outputs.join(", ")
                )));
            }
        }
        if !self.impure_env.is_empty() && self.network == Network::None {
            return Err(invalid(
                "only a fetch step (network \"host\") takes unkeyed environment".into(),
            ));
        }
        if self.network != Network::None && self.host.is_some() {
            return Err(invalid("a builtin step has no network".into()));
        }
        Ok(())
    }

    /// Checks outputs against the step's pins: the first that differs is an error.
    pub(crate) fn check_pins(
        &self,
        outputs: &BTreeMap<String, OutputRef>,
    ) -> Result<(), EngineError> {
        for (output, expected) in &self.pins {
            if let Some(found) = outputs.get(output)
                && found.digest != *expected
            {
                return Err(EngineError::PinMismatch {
                    step: self.name.clone(),
                    output: output.clone(),
                    expected: *expected,
                    actual: found.digest,
                    changes: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// The outputs of a fetch step that have no pin: trusted on first use.
    pub(crate) fn unpinned_fetches<'a>(
        &'a self,
        outputs: &'a BTreeMap<String, OutputRef>,
    ) -> impl Iterator<Item = (&'a String, &'a OutputRef)> {
        outputs
            .iter()
            .filter(move |(o, _)| self.network != Network::None && !self.pins.contains_key(*o))
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_output_path(path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    !trimmed.is_empty()
        && !path.starts_with('/')
        && Path::new(trimmed)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
