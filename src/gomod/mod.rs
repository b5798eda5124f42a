//! Go modules from git tags: module zips built by Go's rules, their `h1:` hashes, and a
//! `file://` GOPROXY tree, so every Go build runs offline against exactly the tags a release
//! made.
//!
//! Proxy layout (the GOPROXY protocol, served from files):
//! ```text
//! <escaped module path>/@v/list              one version per line
//! <escaped module path>/@v/<version>.info    {"Version":"…","Time":"…"}
//! <escaped module path>/@v/<version>.mod     the module's go.mod
//! <escaped module path>/@v/<version>.zip     files under <module>@<version>/
//! ```
//! Zip rules follow golang.org/x/mod/zip as Go 1.21–1.23 apply them: files of nested modules
//! (directories with their own go.mod), files in vendored packages (including Go's historic
//! offset quirk), `.hg_archival.txt`, symlinks and submodules are left out; paths must be valid
//! module file paths and unique under case folding; at most 500 MiB in all, 16 MiB for go.mod
//! and LICENSE. Entries are sorted and timestamped 1980-01-01, so a zip's bytes depend only on
//! its files.

mod files;
mod hash;
mod proxy;

pub(crate) use files::{ModuleFiles, module_files};

pub(crate) use hash::{go_mod_h1, zip_h1};
pub use proxy::{ModuleVersion, ProxyModule, write_proxy};
pub(crate) use proxy::{escape_path, proxy_path_module};

/// Why git could not give a module's files.
#[derive(Debug, thiserror::Error)]
pub enum GitReadError {
    /// kiln's own git call failed.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// git could not be started or talked to.
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    /// git exited with an error.
    #[error("git said: {0}")]
    Failed(String),
    /// git answered something that is not what was asked.
    #[error("unexpected answer from git: {0}")]
    Protocol(String),
}

/// Why a module could not be built.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GoModError {
    /// git could not list or read the module's files.
    #[error("cannot read {what} at {rev} from {repo}")]
    #[diagnostic(code(kiln::gomod::git))]
    Git {
        /// What was read.
        what: String,
        /// The repository.
        repo: String,
        /// The revision.
        rev: String,
        /// Why.
        #[source]
        source: GitReadError,
    },
    /// A file breaks the module zip rules.
    #[error("module {module}@{version}: {reason}")]
    #[diagnostic(
        code(kiln::gomod::invalid),
        help("Go would refuse this module zip too; fix the file in the tagged tree")
    )]
    Invalid {
        /// The module.
        module: String,
        /// The version.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing the proxy tree failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
