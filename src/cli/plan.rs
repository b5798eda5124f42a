//! `kiln plan` and `kiln run`: a plan file through the engine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::engine::{Plan, PlannedStep, RunOptions, StepOutcome, StepStatus, load_plan_file};
use crate::image::EngineImageResolver;
use crate::sandbox::{DockerSandbox, Engine};
use crate::store::{LocalStore, Store as _};

use super::table::Table;
use super::{Outcome, print_json};

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// A plan file (TOML; see `docs/design/plan-files.md`) instead of a release.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["old", "new"])]
    file: Option<PathBuf>,
    /// The released Kubernetes version (plan a release, as `kiln release` would run it).
    #[arg(long, requires = "new")]
    old: Option<String>,
    /// The Kubernetes version to release.
    #[arg(long, requires = "old")]
    new: Option<String>,
    /// The old release's suffix (default: the highest k3sN the fork has).
    #[arg(long)]
    old_suffix: Option<String>,
    /// The new release's suffix.
    #[arg(long, default_value = "k3s1")]
    new_suffix: String,
    #[command(flatten)]
    repos: super::args::RepoArgs,
    #[command(flatten)]
    identity: super::args::IdentityArgs,
    /// The k3s branch to branch the update from (default: release-X.Y when k3s has it, else
    /// its default branch).
    #[arg(long, value_name = "BRANCH")]
    k3s_branch: Option<String>,
    #[command(flatten)]
    go: super::args::GoArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The plan file (TOML; see `docs/design/plan-files.md`).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Copy every step's outputs to DIR/<step>/<output> (verified against their digests).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Steps running at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Show every log line of running steps (stderr lines are always shown off a terminal).
    #[arg(long)]
    logs: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: super::cache::CacheArgs,
}

async fn load(file: &Path, engine: &Engine, build_missing: bool) -> miette::Result<Plan> {
    if !file.is_file() {
        return Err(miette::miette!(
            help = "pass the path of a plan file (TOML)",
            "{} is not a file",
            file.display()
        ));
    }
    let resolver = EngineImageResolver::new(engine.clone(), build_missing);
    Ok(load_plan_file(file, &resolver).await?)
}

pub(super) async fn run_plan(args: PlanArgs, store_dir: &Path) -> Outcome {
    let Some(file) = &args.file else {
        let (Some(old), Some(new)) = (args.old, args.new) else {
            return Err(miette::miette!(
                help = "kiln plan --old v1.28.1 --new v1.28.2, or kiln plan --file PLAN.toml",
                "nothing to plan"
            ));
        };
        let spec = super::args::ReleaseSpec {
            pair: super::args::VersionPair::new(old, new, args.old_suffix, args.new_suffix),
            repos: args.repos,
            identity: args.identity,
            k3s_branch: args.k3s_branch,
            go: args.go,
        };
        return run_release_plan(&spec, args.json, store_dir).await;
    };
    if !file.is_file() {
        return Err(miette::miette!(
            help = "pass the path of a plan file (TOML)",
            "{} is not a file",
            file.display()
        ));
    }
    let store = LocalStore::open(store_dir)?;
    let engine = Engine::connect().await?;
    let plan = load(file, &engine, false).await?;
    let planned = plan.status(&store).await?;
    print_plan(&planned, args.json)
}

/// `kiln plan --old --new`: the release's steps and what would run.
async fn run_release_plan(
    spec: &super::args::ReleaseSpec,
    json: bool,
    store_dir: &Path,
) -> Outcome {
    let (request, toml) = spec.request()?;
    let go = spec.go.settings(toml.as_ref())?;
    let store = LocalStore::open(store_dir)?;
    let engine = Engine::connect().await?;
    let resolved = crate::release::resolve_request(&request, &store).await?;
    let prepared =
        super::release::plan_on_engine(&request.identity, resolved, &engine, false, &go).await?;
    let planned = prepared.plan.status(&store).await?;
    print_plan(&planned, json)
}

/// Prints a plan's statuses: a table (step, status, key, why), or JSON.
fn print_plan(planned: &[PlannedStep], json: bool) -> Outcome {
    if json {
        print_json(&planned)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["step", "status", "key", "why"]);
    for step in planned {
        let (status, key, why) = match &step.status {
            StepStatus::Cached { key, .. } => ("cached", key.short(), String::new()),
            StepStatus::WillRun { key, why } => ("will run", key.short(), why.join("; ")),
            StepStatus::Pending { waiting_for, why } => {
                let mut reasons = vec![format!("waits for {}", waiting_for.join(", "))];
                reasons.extend(why.iter().cloned());
                ("pending", "-".to_owned(), reasons.join("; "))
            }
        };
        table.row(vec![step.name.clone(), status.into(), key, why]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_run(args: RunArgs, store_dir: &Path) -> Outcome {
    let store = LocalStore::open(store_dir)?;
    let remote = args.cache.remote()?;
    let engine = Engine::connect().await?;
    let plan = load(&args.file, &engine, true).await?;
    let sandbox = DockerSandbox::with_engine(engine).await?;
    let options = RunOptions {
        jobs: args.jobs,
        work_dir: store.work_dir(),
        limits: crate::engine::StepLimits::default(),
    };
    let layered = crate::cache::CachedStore::new(store.clone(), remote);
    let report = super::events::drawn(args.logs, |events| {
        let (plan, layered, sandbox, options) = (&plan, &layered, &sandbox, &options);
        async move { crate::engine::run(plan, layered, sandbox, options, &events).await }
    })
    .await?;
    if let Some(out) = &args.out {
        export_outputs(&store, &report, out).await?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        let mut table = Table::new(&["step", "outcome", "key"]);
        for step in &report.steps {
            let outcome = match step.outcome {
                StepOutcome::Ran => "ran",
                StepOutcome::Cached => "cached",
            };
            table.row(vec![
                step.name.clone(),
                outcome.into(),
                step.key.to_string(),
            ]);
        }
        print!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

async fn export_outputs(
    store: &LocalStore,
    report: &crate::engine::RunReport,
    out: &Path,
) -> miette::Result<()> {
    for step in &report.steps {
        for (name, output) in &step.outputs {
            let dest = out.join(&step.name).join(name.trim_end_matches('/'));
            if dest.exists() {
                return Err(miette::miette!(
                    help = "choose an empty --out directory",
                    "{} already exists; kiln does not overwrite outputs",
                    dest.display()
                ));
            }
            let parent = dest.parent().expect("output paths have a parent");
            std::fs::create_dir_all(parent)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", parent.display()))?;
            if output.tree {
                std::fs::create_dir(&dest)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot create {}", dest.display()))?;
                store.unpack(&output.digest, &dest).await?;
            } else {
                store.export(&output.digest, &dest).await?;
            }
        }
    }
    Ok(())
}
