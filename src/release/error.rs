use std::path::PathBuf;

use crate::git::GitError;

/// Why a release cannot go ahead, said in the captain's terms.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReleaseError {
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

    /// A version is not `vMAJOR.MINOR.PATCH`.
    #[error("`{given}` is not a Kubernetes version")]
    #[diagnostic(
        code(kiln::release::not_semver),
        help("write versions as vMAJOR.MINOR.PATCH, e.g. --old v1.28.1 --new v1.28.2")
    )]
    NotSemver {
        /// What was given.
        given: String,
    },

    /// Not a k3s release name.
    #[error("`{given}` is not a k3s version")]
    #[diagnostic(
        code(kiln::release::not_k3s_version),
        help("k3s versions look like v1.28.2+k3s1, or v1.28.2-rc1+k3s1 for a release candidate")
    )]
    NotK3sVersion {
        /// What was given.
        given: String,
    },

    /// A suffix is not `k3sN`.
    #[error("`{given}` is not a k3s suffix")]
    #[diagnostic(
        code(kiln::release::bad_suffix),
        help("suffixes look like k3s1, k3s2, …")
    )]
    BadSuffix {
        /// What was given.
        given: String,
    },

    /// Old and new are on different minors.
    #[error("{old} and {new} are different minor releases")]
    #[diagnostic(
        code(kiln::release::different_minors),
        help("a patch release moves within one minor (e.g. v1.28.1 → v1.28.2)")
    )]
    DifferentMinors {
        /// Old.
        old: String,
        /// New.
        new: String,
    },

    /// New is not newer than old.
    #[error("the new version {new} is not newer than the old {old}")]
    #[diagnostic(code(kiln::release::not_newer), help("swap --old and --new?"))]
    NotNewer {
        /// Old.
        old: String,
        /// New.
        new: String,
    },

    /// An upstream tag is missing.
    #[error("upstream has no tag {tag}")]
    #[diagnostic(
        code(kiln::release::missing_upstream_tag),
        help(
            "check the version, or fetch upstream's tags into the repository kiln reads (--upstream)"
        )
    )]
    MissingUpstreamTag {
        /// The tag.
        tag: String,
    },

    /// The old fork tag is missing.
    #[error("the fork has no release tag {tag} (it has: {found})")]
    #[diagnostic(
        code(kiln::release::missing_fork_tag),
        help(
            "check --old / --old-suffix, or fetch the fork's tags into the repository kiln reads (--fork)"
        )
    )]
    MissingForkTag {
        /// The tag looked for.
        tag: String,
        /// The fork's tags of that version.
        found: String,
    },

    /// k3s has no release branch for the minor.
    #[error("k3s has no branch {branch}")]
    #[diagnostic(
        code(kiln::release::missing_branch),
        help("kiln branches the k3s update from the release branch of the minor; check --k3s")
    )]
    MissingBranch {
        /// The branch.
        branch: String,
    },

    /// The new upstream tag has no `.go-version`.
    #[error("upstream {tag} has no .go-version")]
    #[diagnostic(
        code(kiln::release::no_go_version),
        help("kiln reads the Go version from .go-version at the new upstream tag")
    )]
    NoGoVersion {
        /// The tag.
        tag: String,
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

    /// A finished step's results are not what the recipe expects.
    #[error("the release's results are inconsistent: {reason}")]
    #[diagnostic(code(kiln::release::broken), help("this is a bug in kiln"))]
    Broken {
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
}
