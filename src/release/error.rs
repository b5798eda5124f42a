use std::path::PathBuf;

use crate::git::GitError;
use crate::names::{K8sVersion, NameError};

/// Why a release cannot go ahead, said in the captain's terms.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum ReleaseError {
    /// A lockfile's input is not in the repository it came from.
    #[error("{what} {commit}, recorded in the lockfile, is not in {repo}")]
    #[diagnostic(
        code(kiln::release::locked_input_missing),
        help(
            "verify reads the same repositories as the release (kiln.toml or --upstream/--fork/--k3s); \
             point them at the repositories the release was made from"
        )
    )]
    LockedInputMissing {
        /// What the commit is.
        what: String,
        /// The commit.
        commit: String,
        /// The repository.
        repo: String,
    },

    /// The configured extra modules are not the locked ones.
    #[error("the lockfile serves extra modules {locked:?}, the configuration names {configured:?}")]
    #[diagnostic(
        code(kiln::release::locked_modules),
        help("use the kiln.toml the release was made with")
    )]
    LockedModules {
        /// In the lock.
        locked: Vec<String>,
        /// In kiln.toml.
        configured: Vec<String>,
    },

    /// k3s has no branch of that name (`--k3s-branch`, or kiln.toml's), or neither the
    /// minor's release branch nor a default branch.
    #[error("k3s has no branch {branch}")]
    #[diagnostic(
        code(kiln::release::missing_branch),
        help(
            "kiln branches the k3s update from --k3s-branch (or [release] k3s-branch in \
             kiln.toml); by default from release-X.Y when k3s has it, else from k3s's default \
             branch; check --k3s and the branch name"
        )
    )]
    MissingBranch {
        /// The branch.
        branch: String,
    },

    /// Nobody was named as the release's author.
    #[error("kiln release needs to know who the release's commits are by")]
    #[diagnostic(
        code(kiln::release::no_identity),
        help(
            "pass --name and --email (k3s requires a DCO sign-off by the captain), or set \
             [release] name and email in kiln.toml; kiln never takes them from your git \
             configuration"
        )
    )]
    NoIdentity,

    /// A name or email git cannot carry.
    #[error("the release's {what} `{value}` is not usable in a git identity")]
    #[diagnostic(
        code(kiln::release::bad_identity),
        help(
            "a name and an email: not empty, at most 200 characters, no `<`, `>` or control characters"
        )
    )]
    BadIdentity {
        /// `name` or `email`.
        what: &'static str,
        /// The value, escaped.
        value: String,
    },

    /// A placeholder identity against repositories that are not all local.
    #[error("the release's email `{email}` is a placeholder (.invalid), and {remote} is not local")]
    #[diagnostic(
        code(kiln::release::placeholder_identity),
        help(
            "pass your own --name and --email to kiln release (or [release] name/email in \
             kiln.toml); a release made as the placeholder is pushed only to local repositories"
        )
    )]
    PlaceholderIdentity {
        /// The email.
        email: String,
        /// A repository that is not a local path.
        remote: String,
    },

    /// An upstream tag has no `.go-version`.
    #[error("upstream {tag} has no .go-version")]
    #[diagnostic(
        code(kiln::release::no_go_version),
        help("kiln reads the Go version from .go-version at the upstream tags")
    )]
    NoGoVersion {
        /// The tag.
        tag: K8sVersion,
    },

    /// A go.mod the release builds asks for a newer Go than the toolchain has.
    #[error(
        "{} go.mod file(s) ask for a newer Go than the release's toolchain (Go {toolchain}):\n  {}",
        .files.len(),
        .files.join("\n  ")
    )]
    #[diagnostic(
        code(kiln::release::go_directive_too_new),
        help(
            "the toolchain is chosen by upstream's .go-version ({go_version}); nothing ran. A \
             go directive above it is a tree inconsistent with its .go-version: check the new tag, \
             or the k3s branch's go.mod"
        )
    )]
    GoDirectiveTooNew {
        /// The Go of the toolchain image.
        toolchain: String,
        /// `.go-version` at the new upstream tag.
        go_version: String,
        /// Each offending file, named with its tree.
        files: Vec<String>,
    },

    /// An upstream tag's `.go-version` does not hold a Go version.
    #[error("upstream {tag}'s .go-version holds `{text}`, not a Go version")]
    #[diagnostic(code(kiln::release::bad_go_version))]
    BadGoVersion {
        /// The tag.
        tag: K8sVersion,
        /// What it holds.
        text: String,
    },

    /// git printed something other than a commit time.
    #[error("cannot read the commit time of {commit}: git printed `{text}`")]
    #[diagnostic(code(kiln::release::commit_time), help("this is a bug in kiln"))]
    CommitTime {
        /// The commit.
        commit: String,
        /// What git printed.
        text: String,
    },

    /// No repositories were named.
    #[error("no repositories given and no kiln.toml in {dir}")]
    #[diagnostic(
        code(kiln::release::no_repos),
        help(
            "pass --upstream, --fork and --k3s (paths or URLs), or run where `kiln demo init` wrote a kiln.toml"
        )
    )]
    NoRepos {
        /// Where kiln looked.
        dir: PathBuf,
    },

    /// An environment variable kiln reads holds something it cannot use.
    #[error("{name}=`{value}` {reason}")]
    #[diagnostic(
        code(kiln::release::bad_env),
        help("fix or unset {name}; kiln.toml's setting is used when it is unset")
    )]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// kiln.toml is not valid.
    #[error("invalid {path}: {reason}")]
    #[diagnostic(code(kiln::release::config))]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// go.mod could not be edited.
    #[error("{path}:{line}: {reason}")]
    #[diagnostic(
        code(kiln::release::go_mod),
        help("kiln edits go.mod as data; fix the line or edit it by hand")
    )]
    GoMod {
        /// The file.
        path: String,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// A finished run lacks an output the recipe declares.
    #[error("step `{step}` has no output `{output}`")]
    #[diagnostic(code(kiln::release::missing_output), help("this is a bug in kiln"))]
    MissingOutput {
        /// The step.
        step: &'static str,
        /// The output.
        output: &'static str,
    },

    /// A step's output is not in the store any more.
    #[error("the output {digest} of the run is not in the store")]
    #[diagnostic(
        code(kiln::release::output_gone),
        help("a concurrent `kiln store gc` or a repair removed it; run the release again")
    )]
    OutputGone {
        /// The output.
        digest: crate::hash::Digest,
    },

    /// A step's text output is not what the recipe writes.
    #[error("step `{step}`'s output `{output}` is malformed: {reason}")]
    #[diagnostic(code(kiln::release::malformed_output), help("this is a bug in kiln"))]
    MalformedOutput {
        /// The step.
        step: &'static str,
        /// The output.
        output: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The fork already has the new tag, at another commit than this release makes.
    #[error("the fork already has {tag} at {existing}, but this release makes it {made}")]
    #[diagnostic(
        code(kiln::release::tag_exists),
        help(
            "a published tag never moves; release under a new suffix (--new-suffix k3s2) instead"
        )
    )]
    TagExists {
        /// The tag.
        tag: String,
        /// Where it is.
        existing: String,
        /// Where this release puts it.
        made: String,
    },

    /// `--into` names a repository that is not a local path.
    #[error("{location} is not a local repository")]
    #[diagnostic(
        code(kiln::release::not_local),
        help("--into adds results to local repositories; publish to remotes with `kiln push`")
    )]
    NotLocal {
        /// The location.
        location: String,
    },

    /// `--into` would move a ref.
    #[error(
        "cannot add the results to {location}: {name} exists at {existing}, the release made {made}"
    )]
    #[diagnostic(
        code(kiln::release::ref_exists),
        help(
            "kiln never moves a tag or a branch; remove or rename the existing ref if it is wrong"
        )
    )]
    RefExists {
        /// The repository.
        location: String,
        /// The ref.
        name: String,
        /// Where it is.
        existing: String,
        /// Where the release puts it.
        made: String,
    },

    /// `kiln verify --keep` names a directory kiln did not make.
    #[error("{dir} exists and was not made by kiln verify")]
    #[diagnostic(
        code(kiln::verify::keep_dir),
        help("pass --keep with a new directory, or remove it")
    )]
    KeepDirTaken {
        /// The directory.
        dir: PathBuf,
    },

    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Git failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Git(#[from] GitError),

    /// A name is wrong.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Name(#[from] NameError),

    /// The store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] crate::store::StoreError),

    /// The engine failed (a step, the sandbox, the store under it).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] crate::engine::EngineError),

    /// `kiln verify --offline` without the fetched modules in the store.
    #[error(
        "`--offline`: the store holds no record of the `{step}` step this lockfile names, so its \
         modules would have to be fetched again"
    )]
    #[diagnostic(
        code(kiln::release::offline_without_fetch),
        help(
            "run the release once with this store (or `kiln cache pull` it), or verify without \
             --offline to fetch them, held to the lockfile's pins"
        )
    )]
    OfflineWithoutFetch {
        /// The fetch step.
        step: String,
    },

    /// The toolchain image could not be found or built.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] crate::image::ImageError),

    /// `--frozen` and no lockfile to hold the release to.
    #[error("--frozen: there is no lockfile {path} to hold this release to")]
    #[diagnostic(
        code(kiln::release::frozen_without_lock),
        help(
            "release once without --frozen (and commit the lockfile), or point --lockfile-dir at it"
        )
    )]
    FrozenWithoutLock {
        /// Where it was looked for.
        path: PathBuf,
    },

    /// `--frozen` and the release came out different from its lockfile.
    #[error(
        "--frozen: this release differs from {path} in {} place(s) (the lockfile → this \
         release):\n  {}",
        differences.len(),
        differences.iter().take(40).cloned().collect::<Vec<_>>().join("\n  ")
    )]
    #[diagnostic(
        code(kiln::release::drift),
        help(
            "nothing was written: the lockfile, --out and --into were left alone; find what changed \
             (an input repository, kiln.toml, the toolchain image) or release without --frozen to \
             record the new result"
        )
    )]
    Drift {
        /// The lockfile.
        path: PathBuf,
        /// What differs, one line each.
        differences: Vec<String>,
    },

    /// A lockfile could not be written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lockfile(#[from] crate::lockfile::LockfileError),
}

impl From<crate::durable::WriteError> for ReleaseError {
    fn from(error: crate::durable::WriteError) -> Self {
        Self::Io {
            action: error.action,
            path: error.path,
            source: error.source,
        }
    }
}

impl ReleaseError {
    /// The error of a file operation `action` on `path`, for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

impl ReleaseError {
    /// Whether the `modules-fetch` step failed or was refused for fetching other content than
    /// its pin: then nothing it kept for later fetches is read again.
    pub(crate) fn is_fetch_failure(&self) -> bool {
        match self {
            Self::Engine(
                crate::engine::EngineError::PinMismatch { step, .. }
                | crate::engine::EngineError::Sandbox(crate::sandbox::SandboxError::StepFailed {
                    step,
                    ..
                }),
            ) => step == super::step::MODULES_FETCH,
            _ => false,
        }
    }
}
