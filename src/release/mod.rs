//! K3s release knowledge and the release pipeline: the repositories a release reads
//! (kiln.toml), resolving them, the recipe (the release as engine steps), go.mod editing and
//! the Go bump, the lockfile a finished release becomes, verification by rebuilding, and the
//! follow-through (RC/GA tags, KDM, the stable channel). Knows nothing about Docker: the
//! caller picks the toolchain image and hands in a sandbox.

mod channel;
mod config;
mod error;
mod fetch;
mod go_directive;
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
pub(crate) mod verify;

pub(crate) use channel::{set_stable, stable_latest};
pub(crate) use config::{CacheConfig, KilnToml, PublishConfig, RepoFlags, RepoSet};
pub(crate) use error::ReleaseError;
pub(crate) use fetch::{FetchConfig, explain_pin_mismatch};
pub(crate) use go_directive::check_go_directives;
pub(crate) use gomod::{GoModEdit, bump_go_files, bump_k3s, edit_go_mod};
pub(crate) use into::add_into;
pub(crate) use kdm::{AddOptions, KdmAction, add_entry, listed_versions, promote_entry};
pub(crate) use lock::{artifacts_tree, k3s_bundle, lockfile, tag_bundle, unpack_artifacts};
pub(crate) use locked::resolve_locked;
pub(crate) use modules::FORK_MODULE;
pub use modules::{extra_module_versions, fork_module_versions};
pub(crate) use pipeline::{
    Prepared, ReleaseRequest, Toolchain, export_artifacts, lockfile_path, prepare, resolve_request,
    resolve_started, run, start_listing, write_lockfile,
};
pub(crate) use rcga::{TagKind, create_tag, plan_tag};
pub(crate) use recipe::{FETCHED_CACHE, ReleaseInputs, ServedModule, release_plan, step};
pub(crate) use resolve::choose_k3s_branch;
pub(crate) use resolve::{Resolved, derive_names, resolve};
