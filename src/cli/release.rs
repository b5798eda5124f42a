//! `kiln release`: the whole patch release, and `kiln plan --old --new`: what it would do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::engine::{Plan, RunOptions, StepImage, StepOutcome};
use crate::image::{GoLine, ensure_toolchain, find_base, find_toolchain, toolchain_recipe};
use crate::release::{
    Identity, ReleaseArgs, ReleaseError, ReleaseInputs, Resolved, default_identity, lockfile,
    release_plan, resolve, unpack_artifacts,
};
use crate::sandbox::{DockerSandbox, Engine};
use crate::store::LocalStore;

use super::table::Table;
use super::versions::{RepoArgs, VersionPair};
use super::{Outcome, print_json};

/// What names the release.
#[derive(Debug, Args)]
pub(super) struct ReleaseSpec {
    #[command(flatten)]
    pub(super) pair: VersionPair,
    #[command(flatten)]
    pub(super) repos: RepoArgs,
    #[command(flatten)]
    pub(super) identity: IdentityArgs,
}

/// Who the release's commits are by.
#[derive(Debug, Args)]
pub(super) struct IdentityArgs {
    /// Name for the release's commits (never taken from your git configuration).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Email for the release's commits.
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct ReleaseCmdArgs {
    #[command(flatten)]
    spec: ReleaseSpec,
    /// Copy dist/artifacts to DIR (verified against their digests).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the lockfile goes (as <new fork tag>.lock.json).
    #[arg(long, value_name = "DIR", default_value = "lockfiles")]
    lockfile_dir: PathBuf,
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

/// Everything up to the plan.
pub(super) struct Prepared {
    pub(super) repos: crate::release::RepoSet,
    pub(super) resolved: Resolved,
    pub(super) identity: Identity,
    pub(super) toolchain: (crate::hash::Digest, String),
    pub(super) plan: Plan,
}

async fn prepare(
    spec: &ReleaseSpec,
    store: &LocalStore,
    engine: &Engine,
    build_image: bool,
) -> miette::Result<Prepared> {
    // Bad versions are refused before any repository is read.
    spec.pair.check()?;
    let repos = spec.repos.load()?;
    let args = ReleaseArgs {
        old: spec.pair.old.clone(),
        new: spec.pair.new.clone(),
        old_suffix: spec.pair.old_suffix.clone(),
        new_suffix: spec.pair.new_suffix.clone(),
    };
    let git_dir = store.root().join("git");
    let resolved = {
        let repos = repos.clone();
        tokio::task::spawn_blocking(move || resolve(&repos, &args, &git_dir))
            .await
            .expect("resolving does not panic")?
    };
    let identity = Identity {
        name: spec
            .identity
            .name
            .clone()
            .unwrap_or_else(|| default_identity().name),
        email: spec
            .identity
            .email
            .clone()
            .unwrap_or_else(|| default_identity().email),
    };
    plan_resolved(repos, resolved, identity, engine, build_image).await
}

/// The plan of a resolved release: finds its toolchain (building it when `build_image`).
pub(super) async fn plan_resolved(
    repos: crate::release::RepoSet,
    resolved: Resolved,
    identity: Identity,
    engine: &Engine,
    build_image: bool,
) -> miette::Result<Prepared> {
    let go: GoLine = resolved.names.go_version.parse()?;
    let base =
        find_base(engine, go)
            .await?
            .ok_or_else(|| crate::image::ImageError::BaseMissing {
                tag: go.base_tag(),
                go: go.minor().into(),
            })?;
    if base.go_version != resolved.names.go_version {
        tracing::warn!(
            wanted = %resolved.names.go_version,
            have = %base.go_version,
            "the offline toolchain's Go differs from .go-version; the lockfile records both"
        );
    }
    let recipe = toolchain_recipe(&base.rootfs, go);
    let reference = if build_image {
        ensure_toolchain(engine, go, None, &mut |_| {}).await?.id
    } else {
        find_toolchain(engine, &recipe)
            .await?
            .map_or_else(|| "(not built yet)".to_owned(), |t| t.id)
    };
    let inputs = ReleaseInputs {
        names: resolved.names.clone(),
        upstream: resolved.upstream.clone(),
        fork: resolved.fork.clone(),
        k3s: resolved.k3s.clone(),
        old_commit: resolved.old_commit.clone(),
        new_commit: resolved.new_commit.clone(),
        old_fork_commit: resolved.old_fork_commit.clone(),
        k3s_commit: resolved.k3s_commit.clone(),
        old_go: resolved.old_go.clone(),
        toolchain: StepImage {
            reference,
            identity: recipe,
        },
        identity: identity.clone(),
        source_date_epoch: resolved.source_date_epoch,
        modules: resolved.modules.clone(),
    };
    let plan = release_plan(&inputs)?;
    Ok(Prepared {
        toolchain: (recipe, base.go_version),
        repos,
        resolved,
        identity,
        plan,
    })
}

pub(super) async fn run_release(args: ReleaseCmdArgs, store_dir: &Path) -> Outcome {
    let store = LocalStore::open(store_dir)?;
    // Bad versions and cache settings are refused before the engine is even asked.
    args.spec.pair.check()?;
    let remote = args
        .cache
        .remote_with(args.spec.repos.load()?.cache.as_ref())?;
    let engine = Engine::connect().await?;
    let prepared = prepare(&args.spec, &store, &engine, true).await?;
    let sandbox = DockerSandbox::with_engine(engine).await?;
    let options = RunOptions {
        jobs: args.jobs,
        work_dir: store.work_dir(),
    };
    let layered = crate::cache::CachedStore::new(store.clone(), remote);
    let report =
        super::events::run_drawn(&prepared.plan, &layered, &sandbox, &options, args.logs).await?;

    let scratch = tempfile::Builder::new()
        .prefix("kiln-artifacts-")
        .tempdir_in(store.root().join("tmp"))
        .into_diagnostic()
        .wrap_err("cannot create a scratch directory in the store")?;
    let artifacts = unpack_artifacts(&store, &report, scratch.path()).await?;
    let lock = lockfile(
        &prepared.resolved,
        prepared.toolchain.clone(),
        &prepared.identity,
        &report,
        &store,
        artifacts,
    )?;
    let names = &prepared.resolved.names;
    if let Some(existing) = &prepared.resolved.existing_new_tag {
        let made = lock
            .tags
            .get(&names.new_fork_tag)
            .cloned()
            .unwrap_or_default();
        if *existing != made {
            return Err(ReleaseError::TagExists {
                tag: names.new_fork_tag.clone(),
                existing: existing.clone(),
                made,
            }
            .into());
        }
    }
    std::fs::create_dir_all(&args.lockfile_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", args.lockfile_dir.display()))?;
    let lock_path = args
        .lockfile_dir
        .join(format!("{}.lock.json", names.new_fork_tag));
    write_atomically(&lock_path, lock.to_canonical().as_bytes())?;
    if let Some(out) = &args.out {
        copy_dir(scratch.path(), out)?;
    }
    if args.into {
        let bundle = |step: &str, name: &str| lock.steps[step].outputs[name];
        let tags: Vec<(String, String)> = lock
            .tags
            .iter()
            .map(|(t, c)| (format!("refs/tags/{t}"), c.clone()))
            .collect();
        let branch = vec![(
            format!("refs/heads/{}", names.new_fork_tag),
            lock.k3s.commit.clone(),
        )];
        // Check both repositories first, so a refusal leaves both untouched.
        check_refs(&prepared.repos.fork, &tags)?;
        check_refs(&prepared.repos.k3s, &branch)?;
        add_into(
            &store,
            &prepared.repos.fork,
            &bundle("tag", "tag.bundle"),
            &tags,
        )?;
        add_into(
            &store,
            &prepared.repos.k3s,
            &bundle("k3s-tidy", "k3s.bundle"),
            &branch,
        )?;
    }
    if args.json {
        print_json(&lock)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["step", "outcome", "key"]);
    for step in &report.steps {
        let outcome = if step.outcome == StepOutcome::Ran {
            "ran"
        } else {
            "cached"
        };
        table.row(vec![step.name.clone(), outcome.into(), step.key.short()]);
    }
    print!("{}", table.render());
    println!(
        "release   {} (from {}), k3s {} on {}",
        names.new_fork_tag, names.old_fork_tag, names.ga, names.release_branch
    );
    println!(
        "fork      {} tags at {}",
        lock.tags.len(),
        lock.tags
            .get(&names.new_fork_tag)
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

/// `kiln plan --old --new`: the release's steps and what would run.
pub(super) async fn run_release_plan(spec: &ReleaseSpec, json: bool, store_dir: &Path) -> Outcome {
    let store = LocalStore::open(store_dir)?;
    spec.pair.check()?;
    let engine = Engine::connect().await?;
    let prepared = prepare(spec, &store, &engine, false).await?;
    let planned = prepared.plan.status(&store).await?;
    super::plan::print_plan(&planned, json)
}

fn local_repo(location: &str) -> miette::Result<&Path> {
    let repo = Path::new(location);
    if location.contains("://") || !repo.exists() {
        return Err(miette::miette!(
            help = "--into adds results to local repositories; publish to remotes with `kiln push`",
            "{location} is not a local repository"
        ));
    }
    Ok(repo)
}

/// Refuses when any of `refs` exists in the repository at another commit: kiln adds results,
/// it never moves a tag or a branch (not even forward).
fn check_refs(location: &str, refs: &[(String, String)]) -> miette::Result<()> {
    let repo = local_repo(location)?;
    for (name, commit) in refs {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{name}^{{commit}}"),
            ])
            .output()
            .into_diagnostic()
            .wrap_err("cannot run git")?;
        let existing = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && existing != *commit {
            return Err(miette::miette!(
                help = "kiln never moves a tag or a branch; remove or rename the existing ref if it is wrong",
                "cannot add the results to {location}: {name} exists at {existing}, the release made {commit}"
            ));
        }
    }
    Ok(())
}

/// Fetches a result bundle from the store into the user's repository at `location`, creating
/// the refs `refs` names (already checked by [`check_refs`]; git itself also refuses to move
/// a tag without `--force`, which kiln never passes).
fn add_into(
    store: &LocalStore,
    location: &str,
    bundle: &crate::hash::Digest,
    refs: &[(String, String)],
) -> miette::Result<()> {
    let repo = local_repo(location)?;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-bundle-")
        .tempdir_in(store.root().join("tmp"))
        .into_diagnostic()?;
    let path = scratch.path().join("results.bundle");
    if !store.export_sync(bundle, &path)? {
        return Err(miette::miette!(
            "the result bundle {bundle} is not in the store; run the release again"
        ));
    }
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--end-of-options",
        ])
        .arg(&path)
        .args(refs.iter().map(|(name, _)| format!("{name}:{name}")))
        .output()
        .into_diagnostic()
        .wrap_err("cannot run git")?;
    if !output.status.success() {
        return Err(miette::miette!(
            help = "kiln never moves a tag or rewinds a branch; remove the conflicting ref yourself if it is wrong",
            "cannot add the results to {location}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> miette::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    tmp.write_all(bytes).into_diagnostic()?;
    // A file that exists keeps its mode; a new one is 0644.
    let mode = std::fs::metadata(path).map_or(0o644, |m| {
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
    });
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .into_diagnostic()?;
    tmp.persist(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> miette::Result<()> {
    std::fs::create_dir_all(to)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).into_diagnostic()? {
        let entry = entry.into_diagnostic()?;
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot copy to {}", dest.display()))?;
        }
    }
    Ok(())
}
