//! `kiln release`: the whole patch release, and `kiln plan --old --new`: what it would do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::engine::{RunOptions, StepImage, StepOutcome};
use crate::lockfile::Lockfile;
use crate::names::Identity;
use crate::release::{
    Prepared, ReleaseError, Resolved, Toolchain, add_into, export_artifacts, lockfile_path,
    prepare, resolve_started, start_listing, write_lockfile,
};
use crate::sandbox::{DockerSandbox, Engine};
use crate::store::LocalStore;

use super::args::{GoSettings, ReleaseSpec};
use super::progress::Progress;
use super::table::Table;
use super::{Outcome, print_json};

#[derive(Debug, Args)]
pub(super) struct ReleaseCmdArgs {
    #[command(flatten)]
    spec: ReleaseSpec,
    /// Copy dist/artifacts to DIR (verified against their digests).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    lock: LockArgs,
    /// Steps running at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Show every log line of running steps.
    #[arg(long)]
    logs: bool,
    /// Add the results to your repositories (local paths only): the new tags to the fork, the
    /// new branch to k3s. Existing tags and branches are never moved.
    #[arg(long)]
    into: bool,
    /// Print the lockfile as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: super::cache::CacheArgs,
}

/// Where the release's lockfile lives, and whether the release must match it.
#[derive(Debug, Args)]
struct LockArgs {
    /// Where the lockfile goes (as <new fork tag>.lock.json).
    #[arg(long, value_name = "DIR", default_value = "lockfiles")]
    lockfile_dir: PathBuf,
    /// Hold the release to its existing lockfile: fail, writing nothing, when the result
    /// differs from it in any value (for CI).
    #[arg(long)]
    frozen: bool,
}

/// Plans a resolved release on the toolchain image of its exact Go (upstream's `.go-version`),
/// found or built (when `build_image`) from a pinned distribution. A Go without a pin fails
/// here, before any step.
pub(super) async fn plan_on_engine(
    identity: &Identity,
    resolved: Resolved,
    engine: &Engine,
    build_image: bool,
    go: &GoSettings,
) -> miette::Result<Prepared> {
    let request = go.request(&resolved.names.go_version().to_string())?;
    let choice = if build_image {
        let progress = Progress::new();
        let result = crate::image::toolchain_for(engine, &request, true, &mut |event| {
            progress.image(event);
        })
        .await;
        progress.finish();
        result?
    } else {
        crate::image::toolchain_for(engine, &request, false, &mut |_| {}).await?
    };
    if let Some(path) = &choice.pinned_in {
        super::image::said_pinned(&choice.go, &choice.archive, path);
    }
    // A go.mod asking for a newer Go than the toolchain's is reported before any step.
    crate::release::check_go_directives(&resolved, &choice.go)?;
    let toolchain = Toolchain {
        image: StepImage {
            reference: choice.reference,
            identity: choice.recipe,
        },
        go: choice.go,
        archive: choice.archive,
        go_version: choice.go_version,
    };
    Ok(prepare(
        resolved,
        identity.clone(),
        toolchain,
        &go.fetch_config(),
    )?)
}

/// Whether `held` records a release of exactly the repositories' state `resolved` found.
fn same_inputs(held: &Lockfile, resolved: &Resolved) -> bool {
    let i = &held.inputs;
    i.k3s_release_branch_commit == resolved.k3s_commit
        && i.new_k8s_commit == resolved.new_commit
        && i.old_fork_commit == resolved.old_fork_commit
        && i.extra_modules.len() == resolved.modules.len()
        && resolved
            .modules
            .iter()
            .all(|m| i.extra_modules.get(&m.path) == Some(&m.tags))
}

pub(super) async fn run_release(args: ReleaseCmdArgs, store_dir: &Path) -> Outcome {
    tracing::debug!("release: reading the request");
    // Bad versions, kiln.toml and cache settings are refused before the engine is asked.
    let (request, toml) = args.spec.request()?;
    let remote = args
        .cache
        .remote_with(toml.as_ref().and_then(|t| t.cache.as_ref()))?;
    let store = LocalStore::open(store_dir)?;
    // The remotes are listed while the engine is asked (listing clones and fetches nothing).
    let listing = start_listing(&request, &store);
    let engine = Engine::connect().await?;
    tracing::debug!("engine connected");
    let resolved = resolve_started(&request, &store, listing).await?;
    tracing::debug!("resolved");
    // `--frozen`: the lockfile to hold the release to (named by the resolved fork tag) is read
    // and checked before any step runs.
    let frozen = if args.lock.frozen {
        let path = lockfile_path(&args.lock.lockfile_dir, resolved.names.new_fork_tag());
        if !path.exists() {
            return Err(ReleaseError::FrozenWithoutLock { path }.into());
        }
        Some((Lockfile::read(&path)?, path))
    } else {
        None
    };
    // What this release fetched before (its lockfile) is what it must fetch again.
    let mut go = args.spec.go.settings(toml.as_ref())?;
    let path = lockfile_path(&args.lock.lockfile_dir, resolved.names.new_fork_tag());
    match &frozen {
        Some((held, _)) => go.fetch_pins_from(held),
        None if path.exists() => match Lockfile::read(&path) {
            // Only a lockfile of these very inputs says what must be fetched again; one of an
            // earlier k3s branch head (say) is superseded, and rewritten.
            Ok(held) if same_inputs(&held, &resolved) => go.fetch_pins_from(&held),
            Ok(_) => tracing::info!(
                "the earlier lockfile of this release was made from other inputs: its fetched \
                 modules are fetched anew and recorded"
            ),
            Err(error) => tracing::warn!(
                %error,
                "the release's earlier lockfile cannot be read: its fetched modules are not \
                 held to it (it is rewritten)"
            ),
        },
        None => {}
    }
    let prepared = plan_on_engine(&request.identity, resolved, &engine, true, &go).await?;
    let sandbox = DockerSandbox::with_engine(engine).await?;
    let options = RunOptions {
        jobs: args.jobs,
        work_dir: store.work_dir(),
        limits: toml.as_ref().map(|t| t.steps.clone()).unwrap_or_default(),
    };
    let layered = crate::cache::CachedStore::new(store.clone(), remote);
    let held = go.held().cloned();
    let released = super::events::drawn(args.logs, |events| {
        let (prepared, store, layered) = (&prepared, &store, &layered);
        let (sandbox, options, held) = (&sandbox, &options, held.as_ref());
        async move {
            let ran =
                crate::release::run(prepared, store, layered, sandbox, options, &events).await;
            match ran {
                Err(error) => {
                    if error.is_fetch_failure() {
                        // What the failed or refused module fetch kept for later fetches is
                        // never read again.
                        if let Err(cleared) =
                            sandbox.forget_cache(crate::release::FETCHED_CACHE).await
                        {
                            tracing::warn!(%cleared, "cannot drop what the refused fetch kept");
                        }
                    }
                    // A refused pin (modules or downloads) names what changed.
                    Err(crate::release::explain_pin_mismatch(error, held, store))
                }
                ran => ran,
            }
        }
    })
    .await?;
    let lock = &released.lock;
    let lock_path = match frozen {
        Some((held, path)) => {
            let differences = held.drift(lock);
            if !differences.is_empty() {
                return Err(ReleaseError::Drift { path, differences }.into());
            }
            path
        }
        None => write_lockfile(&args.lock.lockfile_dir, lock)?,
    };
    if let Some(out) = &args.out {
        export_artifacts(&released, out)?;
    }
    if args.into {
        add_into(&store, &request.repos, lock)?;
    }
    if args.json {
        print_json(lock)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["step", "outcome", "key"]);
    for step in &released.report.steps {
        let outcome = match step.outcome {
            StepOutcome::Ran => "ran",
            StepOutcome::Cached => "cached",
        };
        table.row(vec![step.name.clone(), outcome.into(), step.key.short()]);
    }
    print!("{}", table.render());
    let names = &lock.release;
    println!(
        "release   {} (from {}), k3s {} on {}",
        names.new_fork_tag(),
        names.old_fork_tag(),
        names.ga(),
        if lock.inputs.k3s_branch.is_empty() {
            names.release_branch()
        } else {
            lock.inputs.k3s_branch.clone()
        }
    );
    println!(
        "fork      {} tags at {}",
        lock.tags.len(),
        lock.tags
            .get(&names.new_fork_tag().to_string())
            .map_or("?", String::as_str)
    );
    println!(
        "k3s       branch {} at {}",
        lock.k3s.branch, lock.k3s.commit
    );
    for (path, artifact) in &lock.artifacts {
        println!(
            "artifact  {path} {} ({} bytes)",
            artifact.sha256, artifact.size
        );
    }
    println!("lockfile  {}", lock_path.display());
    Ok(ExitCode::SUCCESS)
}
