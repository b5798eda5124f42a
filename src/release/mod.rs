//! K3s release knowledge: version names, the repositories a release reads, go.mod editing,
//! the Go bump. Knows nothing about Docker; the recipe turns this into engine steps.

mod channel;
mod config;
mod error;
mod gomod;
mod kdm;
mod locked;
mod modules;
mod outcome;
mod rcga;
mod recipe;
mod resolve;
mod scripts;
pub mod verify;
mod version;

pub use channel::{ChannelError, is_ga, set_stable, stable_latest};
pub use config::{CacheConfig, ExtraModule, PublishConfig, RepoSet, load_publish, load_repos};
pub use error::ReleaseError;
pub use gomod::{BumpReport, GoBump, GoModEdit, LineChange, bump_go_files, bump_k3s, edit_go_mod};
pub use kdm::{
    AddOptions, KdmAction, KdmEdit, KdmError, add_entry, listed_versions, promote_entry,
};
pub use locked::resolve_locked;
pub use modules::{FORK_MODULE, extra_module_versions, fork_module_versions, staging_modules};
pub use outcome::{lockfile, unpack_artifacts};
pub use rcga::{TagError, TagKind, TagPlan, create_tag, plan_tag};
pub use recipe::{Identity, RECIPE_SCHEMA, ReleaseInputs, ServedModule, release_plan};
pub use resolve::{ReleaseArgs, Resolved, default_identity, resolve};
pub use version::{
    K3sVersion, K8sVersion, ReleaseNames, RepoFacts, Suffix, check_pair, derive, highest_suffix,
    next_rc, rcs_among,
};
