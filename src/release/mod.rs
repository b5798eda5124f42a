//! K3s release knowledge and the release pipeline: the repositories a release reads
//! (kiln.toml), resolving them, the recipe (the release as engine steps), go.mod editing and
//! the Go bump, the lockfile a finished release becomes, verification by rebuilding, and the
//! follow-through (RC/GA tags, KDM, the stable channel). Knows nothing about Docker: the
//! caller picks the toolchain image and hands in a sandbox.

mod channel;
mod config;
mod error;
mod gomod;
mod into;
mod kdm;
mod lock;
mod locked;
mod modules;
mod pipeline;
mod rcga;
mod recipe;
mod resolve;
mod scripts;
pub mod verify;

pub use channel::{ChannelError, is_ga, set_stable, stable_latest};
pub use config::{CacheConfig, ExtraModule, KilnToml, PublishConfig, RepoFlags, RepoSet};
pub use error::ReleaseError;
pub use gomod::{BumpReport, GoBump, GoModEdit, LineChange, bump_go_files, bump_k3s, edit_go_mod};
pub use into::add_into;
pub use kdm::{
    AddOptions, KdmAction, KdmEdit, KdmError, add_entry, listed_versions, promote_entry,
};
pub use lock::{artifacts_tree, k3s_bundle, lockfile, tag_bundle, unpack_artifacts};
pub use locked::resolve_locked;
pub use modules::{FORK_MODULE, extra_module_versions, fork_module_versions, staging_modules};
pub(crate) use pipeline::scratch_dir;
pub use pipeline::{
    Prepared, ReleaseRequest, Released, Toolchain, export_artifacts, lockfile_path, prepare,
    resolve_request, run, write_lockfile,
};
pub use rcga::{TagError, TagKind, TagPlan, create_tag, plan_tag};
pub use recipe::{
    BuiltinError, RECIPE_SCHEMA, ReleaseInputs, ServedModule, output, release_plan, step,
};
pub use resolve::{Resolved, derive_names, resolve};
