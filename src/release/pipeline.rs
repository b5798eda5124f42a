//! The release as a library call: a typed [`ReleaseRequest`] is resolved against the
//! repositories ([`resolve_request`]), planned on a toolchain image ([`prepare`]), run through
//! the engine with its results read back into a lockfile ([`run`]), and written out
//! ([`write_lockfile`], [`export_artifacts`], [`add_into`](super::add_into)). The CLI turns
//! flags and kiln.toml into the request, picks the toolchain image (the image layer knows the
//! engine; this module does not) and renders what comes back.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{EngineEvent, Plan, RunOptions, RunReport, StepImage};
use crate::hash::Digest;
use crate::lockfile::Lockfile;
use crate::names::{ForkTag, Identity, ReleaseVersions};
use crate::sandbox::Sandbox;
use crate::store::{LocalStore, Store};

use super::resolve::{Listing, list_remotes, resolve_listed};
use super::{
    FetchConfig, ReleaseError, ReleaseInputs, RepoSet, Resolved, lockfile, release_plan, resolve,
    unpack_artifacts,
};

/// One patch release, as a captain asks for it: the versions, the repositories, who the
/// commits are by.
#[derive(Clone, Debug)]
pub(crate) struct ReleaseRequest {
    /// `--old`/`--new` and the suffixes, checked as a pair.
    pub(crate) versions: ReleaseVersions,
    /// The repositories.
    pub(crate) repos: RepoSet,
    /// The commits' author and committer.
    pub(crate) identity: Identity,
    /// The k3s branch asked for (`--k3s-branch`, kiln.toml), if any.
    pub(crate) k3s_branch: Option<String>,
}

/// The image a release's container steps run in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Toolchain {
    /// The engine's reference and the image's content identity (its recipe key).
    pub(crate) image: StepImage,
    /// The Go inside it (`.go-version`'s text).
    pub(crate) go: String,
    /// The SHA-256 of the Go distribution archive it was built from.
    pub(crate) archive: Digest,
    /// What `go version` prints in it.
    pub(crate) go_version: String,
}

/// A release resolved and planned, not run yet.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// Everything read from the repositories.
    pub(crate) resolved: Resolved,
    /// The commits' identity.
    pub(crate) identity: Identity,
    /// The image the steps run in.
    pub(crate) toolchain: Toolchain,
    /// The steps.
    pub(crate) plan: Plan,
}

/// A release that ran: its lockfile, what each step did, and its artifacts unpacked (checked
/// against their digests) in scratch space of the store, removed on drop.
#[derive(Debug)]
pub(crate) struct Released {
    /// The lockfile.
    pub(crate) lock: Lockfile,
    /// Each step's outcome.
    pub(crate) report: RunReport,
    /// `dist/artifacts`, unpacked.
    pub(crate) artifacts: crate::store::ScratchDir,
}

/// Resolves `request` against its repositories (mirrored under the store): names, commits,
/// Go versions, the clock. Bad versions were refused when the request was made; missing tags
/// and branches are refused here, before any mirror is fetched.
///
/// # Panics
/// Never: resolving runs no code that panics.
pub(crate) async fn resolve_request(
    request: &ReleaseRequest,
    store: &LocalStore,
) -> Result<Resolved, ReleaseError> {
    let (repos, versions, git_dir) = (request.repos.clone(), request.versions, store.git_dir());
    let branch = request.k3s_branch.clone();
    tokio::task::spawn_blocking(move || resolve(&repos, &versions, branch.as_deref(), &git_dir))
        .await
        .expect("resolving does not panic")
}

/// The remotes of a request being listed (the first part of [`resolve_request`]), started
/// before the engine is asked: a remote's listing is a round trip, and at Kubernetes' size
/// the fork's ten thousand tags take longer than connecting to the engine. Listing clones
/// and fetches nothing; a release that stops before [`resolve_started`] leaves its thread to
/// end with the process.
#[derive(Debug)]
pub(crate) struct StartedListing(Option<std::thread::JoinHandle<Result<Listing, ReleaseError>>>);

/// Starts listing `request`'s remotes on a thread of its own (or, when the host has no thread
/// to give, leaves it to [`resolve_started`]).
pub(crate) fn start_listing(request: &ReleaseRequest, store: &LocalStore) -> StartedListing {
    let (repos, versions, git_dir) = (request.repos.clone(), request.versions, store.git_dir());
    StartedListing(
        std::thread::Builder::new()
            .name("kiln-listing".into())
            .spawn(move || list_remotes(&repos, &versions, &git_dir))
            .ok(),
    )
}

/// [`resolve_request`], its remotes listed by `started`.
///
/// # Panics
/// Never: listing and resolving run no code that panics.
pub(crate) async fn resolve_started(
    request: &ReleaseRequest,
    store: &LocalStore,
    started: StartedListing,
) -> Result<Resolved, ReleaseError> {
    let (repos, versions, git_dir) = (request.repos.clone(), request.versions, store.git_dir());
    let branch = request.k3s_branch.clone();
    tokio::task::spawn_blocking(move || {
        let listing = match started.0 {
            Some(thread) => thread.join().expect("listing does not panic")?,
            None => list_remotes(&repos, &versions, &git_dir)?,
        };
        resolve_listed(listing, &repos, &versions, branch.as_deref(), &git_dir)
    })
    .await
    .expect("resolving does not panic")
}

/// Plans a resolved release on `toolchain`.
pub(crate) fn prepare(
    resolved: Resolved,
    identity: Identity,
    toolchain: Toolchain,
    fetch: &FetchConfig,
) -> Result<Prepared, ReleaseError> {
    let plan = release_plan(&ReleaseInputs {
        resolved: &resolved,
        toolchain: &toolchain.image,
        identity: &identity,
        fetch,
    })?;
    Ok(Prepared {
        resolved,
        identity,
        toolchain,
        plan,
    })
}

/// Runs the prepared release: cached steps are restored from `layered` (the local store, with
/// a shared cache in front when configured), the others run through `sandbox`; then the
/// artifacts are unpacked from `store` and the lockfile assembled. Refuses a release whose new
/// fork tag already exists in the fork at another commit than the one this run made.
/// Dropping the future cancels the running steps (their containers are removed).
pub(crate) async fn run<S: Store, B: Sandbox + Clone + 'static>(
    prepared: &Prepared,
    store: &LocalStore,
    layered: &S,
    sandbox: &B,
    options: &RunOptions,
    events: &UnboundedSender<EngineEvent>,
) -> Result<Released, ReleaseError> {
    let report = crate::engine::run(&prepared.plan, layered, sandbox, options, events).await?;
    let artifacts = store.scratch_dir("kiln-artifacts-")?;
    let found = unpack_artifacts(store, &report, artifacts.path()).await?;
    let lock = lockfile(
        &prepared.resolved,
        &prepared.toolchain,
        &prepared.identity,
        &report,
        store,
        found,
    )?;
    if let Some(existing) = &prepared.resolved.existing_new_tag {
        let tag = prepared.resolved.names.new_fork_tag().to_string();
        let made = lock.tags.get(&tag).cloned().unwrap_or_default();
        if *existing != made {
            return Err(ReleaseError::TagExists {
                tag,
                existing: existing.clone(),
                made,
            });
        }
    }
    Ok(Released {
        lock,
        report,
        artifacts,
    })
}

/// Where the lockfile of the release `fork_tag` goes in `dir`: `<fork tag>.lock.json`.
#[must_use]
pub(crate) fn lockfile_path(dir: &Path, fork_tag: ForkTag) -> PathBuf {
    dir.join(format!("{fork_tag}.lock.json"))
}

/// Writes `lock` into `dir` (created if needed) as canonical JSON, atomically and durably;
/// returns its path.
pub(crate) fn write_lockfile(dir: &Path, lock: &Lockfile) -> Result<PathBuf, ReleaseError> {
    std::fs::create_dir_all(dir).map_err(ReleaseError::io("create", dir))?;
    let path = lockfile_path(dir, lock.release.new_fork_tag());
    crate::durable::write(
        &path,
        lock.to_canonical().as_bytes(),
        crate::durable::Placement::Beside,
    )?;
    Ok(path)
}

/// Copies the release's artifacts (already checked against their digests) into `out`.
pub(crate) fn export_artifacts(released: &Released, out: &Path) -> Result<(), ReleaseError> {
    copy_dir(released.artifacts.path(), out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    let io = ReleaseError::io;
    std::fs::create_dir_all(to).map_err(io("create", to))?;
    for entry in std::fs::read_dir(from).map_err(io("list", from))? {
        let entry = entry.map_err(io("list", from))?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io("inspect", &source))?;
        if kind.is_dir() {
            copy_dir(&source, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &dest).map_err(io("copy to", &dest))?;
        }
    }
    Ok(())
}
