//! The names of a K3s release, typed: Kubernetes, client, fork-tag, k3s and Go versions, every
//! name one patch release derives from them, and who its commits are by. Below everything that
//! speaks of releases (the lockfile format, the recipe, publishing), above nothing.

mod release_names;
mod version;

pub(crate) use release_names::{
    ReleaseNames, ReleaseVersions, RepoFacts, derive, next_rc, old_fork_tag, rcs_among,
};
pub(crate) use version::{ClientVersion, ForkTag, GoVersion, K3sVersion, K8sVersion, Suffix};

/// Why a name is not acceptable, said in the captain's terms.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum NameError {
    /// A version is not `vMAJOR.MINOR.PATCH`.
    #[error("`{given}` is not a Kubernetes version")]
    #[diagnostic(
        code(kiln::release::not_semver),
        help("write versions as vMAJOR.MINOR.PATCH, e.g. --old v1.28.1 --new v1.28.2")
    )]
    NotSemver {
        /// What was given (escaped).
        given: String,
    },

    /// Not a k3s release name.
    #[error("`{given}` is not a k3s version")]
    #[diagnostic(
        code(kiln::release::not_k3s_version),
        help("k3s versions look like v1.28.2+k3s1, or v1.28.2-rc1+k3s1 for a release candidate")
    )]
    NotK3sVersion {
        /// What was given (escaped).
        given: String,
    },

    /// Not a fork tag.
    #[error("`{given}` is not a fork tag")]
    #[diagnostic(
        code(kiln::release::not_fork_tag),
        help("the fork's release tags look like v1.28.2-k3s1")
    )]
    NotForkTag {
        /// What was given (escaped).
        given: String,
    },

    /// A suffix is not `k3sN`.
    #[error("`{given}` is not a k3s suffix")]
    #[diagnostic(
        code(kiln::release::bad_suffix),
        help("suffixes look like k3s1, k3s2, …")
    )]
    BadSuffix {
        /// What was given (escaped).
        given: String,
    },

    /// Not a Go version.
    #[error("`{given}` is not a Go version")]
    #[diagnostic(code(kiln::release::not_go_version), help("for example 1.23.5"))]
    NotGoVersion {
        /// What was given (escaped).
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
        old: K8sVersion,
        /// New.
        new: K8sVersion,
    },

    /// New is not newer than old.
    #[error("the new version {new} is not newer than the old {old}")]
    #[diagnostic(code(kiln::release::not_newer), help("swap --old and --new?"))]
    NotNewer {
        /// Old.
        old: K8sVersion,
        /// New.
        new: K8sVersion,
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
        tag: K8sVersion,
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

    /// A written name (in a lockfile) is malformed or not the one kiln derives.
    #[error("{field}: `{given}`: {reason}")]
    Field {
        /// Which name.
        field: &'static str,
        /// What is written (escaped).
        given: String,
        /// What is wrong.
        reason: String,
    },
}

/// Who a release's commits are by (author and committer): never the host's git
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    /// Name.
    pub(crate) name: String,
    /// Email.
    pub(crate) email: String,
}

impl Default for Identity {
    /// kiln's own identity.
    fn default() -> Self {
        Self {
            name: "K3s Release Captain".into(),
            email: "captain@kiln-demo.invalid".into(),
        }
    }
}

/// A Go module path (or path prefix): slash-separated elements of `[A-Za-z0-9._~-]`, none
/// empty, `.`, `..` or starting with `-`; at most 1024 bytes.
#[must_use]
pub(crate) fn is_module_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && !part.starts_with('-')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        })
}
