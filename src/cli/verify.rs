//! `kiln verify LOCK`: rebuild a locked release from its recorded inputs in a fresh store with
//! fresh cache volumes, and compare every output with the lock.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::engine::{Plan, RunOptions};
use crate::hash::Digest;
use crate::lockfile::Lockfile;
use crate::release::verify::{Compared, Scope, compare, compare_keys, first_difference};
use crate::release::{lockfile, resolve_locked, unpack_artifacts};
use crate::sandbox::{DockerSandbox, Engine};
use crate::store::{LocalStore, Store as _};

use super::table::Table;
use super::versions::RepoArgs;
use super::{Outcome, print_json};

/// Exit code when a rebuilt output differs from the lock.
const EXIT_MISMATCH: u8 = 3;

/// Marks a directory `kiln verify` made, so a later run may replace it.
const KEEP_MARKER: &str = ".kiln-verify";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StepsArg {
    /// Every step, the Go build included.
    All,
    /// Rebase, tag, modules and the k3s update only (seconds, no build): tags, module sums
    /// and the k3s commit.
    Git,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every rebuilt output equals the locked one; \
    3 when any differs; 1 on any other error."
)]
pub(super) struct VerifyArgs {
    /// The lockfile.
    lockfile: PathBuf,
    /// Which steps to rebuild.
    #[arg(long, value_enum, default_value = "all")]
    steps: StepsArg,
    #[command(flatten)]
    repos: RepoArgs,
    /// Where both copies of every differing file go (default: kiln-verify/<fork tag>).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Steps running at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Show every log line of running steps.
    #[arg(long)]
    logs: bool,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

/// A differing file, with both copies kept.
#[derive(Debug, serde::Serialize)]
struct DifferingFile {
    what: String,
    locked_sha256: String,
    rebuilt_sha256: String,
    locked_size: Option<u64>,
    rebuilt_size: Option<u64>,
    /// `None` when a copy is missing.
    first_difference: Option<u64>,
    locked_copy: Option<PathBuf>,
    rebuilt_copy: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    lockfile: PathBuf,
    steps: &'static str,
    matches: bool,
    outputs: Vec<Compared>,
    keys: Vec<Compared>,
    differing_files: Vec<DifferingFile>,
    kept: Option<PathBuf>,
}

pub(super) async fn run_verify(args: VerifyArgs, store_dir: &Path) -> Outcome {
    // The lockfile is checked before any repository, engine or store is touched.
    let (lock, lock_digest) = Lockfile::read_with_digest(&args.lockfile)?;
    let keep = args
        .keep
        .clone()
        .unwrap_or_else(|| Path::new("kiln-verify").join(&lock.release.new_fork_tag));
    // Refused before the rebuild, not after it.
    check_keep_dir(&keep)?;
    let scope = match args.steps {
        StepsArg::All => Scope::All,
        StepsArg::Git => Scope::Git,
    };
    let repos = args.repos.load()?;
    let engine = Engine::connect().await?;
    // The user's store gives the repository mirrors and the locked copies of outputs; nothing
    // is read from it as a result.
    let store = LocalStore::open(store_dir)?;
    let resolved = {
        let (repos, lock, git_dir) = (repos.clone(), lock.clone(), store.root().join("git"));
        tokio::task::spawn_blocking(move || resolve_locked(&repos, &lock, &git_dir))
            .await
            .expect("resolving does not panic")?
    };
    let prepared =
        super::release::plan_resolved(repos, resolved, lock.inputs.identity.clone(), &engine, true)
            .await?;
    if prepared.toolchain.0 != lock.inputs.toolchain.image {
        eprintln!(
            "kiln: warning: this machine's toolchain image ({}) is not the locked one ({}): step \
             keys will differ; outputs are still compared",
            prepared.toolchain.0, lock.inputs.toolchain.image
        );
    }
    let plan = Plan::new(
        prepared
            .plan
            .steps()
            .iter()
            .filter(|s| scope.includes(&s.name))
            .cloned()
            .collect(),
    )?;

    let fresh_dir = tempfile::Builder::new()
        .prefix("kiln-verify-")
        .tempdir_in(store.root().join("tmp"))
        .into_diagnostic()
        .wrap_err("cannot create a fresh store for the rebuild")?;
    let fresh = LocalStore::open(fresh_dir.path())?;
    let sandbox = DockerSandbox::with_engine(engine)
        .await?
        .with_fresh_caches();
    let options = RunOptions {
        jobs: args.jobs,
        work_dir: fresh.work_dir(),
    };
    eprintln!(
        "==> verify: rebuilding {} step(s) of {} in a fresh store with fresh caches",
        plan.steps().len(),
        lock.release.new_fork_tag
    );
    let result = super::events::run_drawn(&plan, &fresh, &sandbox, &options, args.logs).await;
    if let Err(error) = sandbox.remove_cache_volumes().await {
        tracing::warn!(%error, "cannot remove the rebuild's cache volumes");
    }
    let report = result?;

    let scratch = fresh_dir.path().join("artifacts");
    let artifacts = if scope == Scope::All {
        std::fs::create_dir_all(&scratch).into_diagnostic()?;
        unpack_artifacts(&fresh, &report, &scratch).await?
    } else {
        std::collections::BTreeMap::new()
    };
    let rebuilt = lockfile(
        &prepared.resolved,
        prepared.toolchain.clone(),
        &prepared.identity,
        &report,
        &fresh,
        artifacts,
    )?;
    let outputs = compare(&lock, &rebuilt, scope);
    let keys = compare_keys(&lock, &rebuilt, scope);
    let matches = outputs.iter().all(|r| r.matches);

    let mut differing_files = Vec::new();
    let mut kept = None;
    if matches {
        // `kiln status` reports this: the lockfile, as it is byte for byte, was rebuilt here.
        let note = serde_json::json!({
            "lockfile_sha256": lock_digest.to_string(),
            "fork_tag": lock.release.new_fork_tag,
            "steps": match scope { Scope::All => "all", Scope::Git => "git" },
        });
        store.put_verified_sync(&lock_digest, note.to_string().as_bytes())?;
    }
    if !matches {
        fresh_keep_dir(&keep)?;
        differing_files =
            keep_differences(&lock, &rebuilt, &outputs, &store, &fresh, &keep).await?;
        kept = Some(keep);
    }
    let verdict = Report {
        lockfile: args.lockfile.clone(),
        steps: match scope {
            Scope::All => "all",
            Scope::Git => "git",
        },
        matches,
        outputs,
        keys,
        differing_files,
        kept,
    };
    if args.json {
        print_json(&verdict)?;
    } else {
        print_report(&verdict);
    }
    Ok(if matches {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

fn check_keep_dir(dir: &Path) -> miette::Result<()> {
    if dir.exists() && !dir.join(KEEP_MARKER).is_file() {
        return Err(miette::miette!(
            help = "pass --keep with a new directory, or remove it",
            "{} exists and was not made by kiln verify",
            dir.display()
        ));
    }
    Ok(())
}

/// Makes `dir` an empty directory for this run's copies: one an earlier `kiln verify` made is
/// replaced; anything else that exists is refused.
fn fresh_keep_dir(dir: &Path) -> miette::Result<()> {
    check_keep_dir(dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(KEEP_MARKER), "").into_diagnostic()?;
    Ok(())
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Keeps both copies of every differing artifact and file output under `keep` (`locked/…`,
/// `rebuilt/…`) and describes each difference.
async fn keep_differences(
    lock: &Lockfile,
    rebuilt: &Lockfile,
    outputs: &[Compared],
    store: &LocalStore,
    fresh: &LocalStore,
    keep: &Path,
) -> miette::Result<Vec<DifferingFile>> {
    let mut files = Vec::new();
    let tree = |l: &Lockfile| {
        l.steps
            .get("build")
            .and_then(|s| s.outputs.get("artifacts/"))
            .copied()
    };
    let (locked_root, rebuilt_root) = (keep.join("locked"), keep.join("rebuilt"));
    let mut unpacked: (Option<bool>, Option<bool>) = (None, None);
    for row in outputs.iter().filter(|r| !r.matches) {
        if let Some(path) = row.what.strip_prefix("artifact ") {
            if unpacked.0.is_none() {
                unpacked = (
                    Some(unpack_into(store, tree(lock), &locked_root.join("artifacts")).await?),
                    Some(unpack_into(fresh, tree(rebuilt), &rebuilt_root.join("artifacts")).await?),
                );
            }
            let l = unpacked
                .0
                .unwrap_or(false)
                .then(|| locked_root.join("artifacts").join(path));
            let r = unpacked
                .1
                .unwrap_or(false)
                .then(|| rebuilt_root.join("artifacts").join(path));
            files.push(describe(
                row,
                lock.artifacts.get(path).map(|a| a.sha256.to_string()),
                rebuilt.artifacts.get(path).map(|a| a.sha256.to_string()),
                l,
                r,
            )?);
        } else if let Some(rest) = row.what.strip_prefix("step ")
            && let Some((step, output)) = rest.split_once(' ')
            && !output.ends_with('/')
        {
            let digest = |l: &Lockfile| {
                l.steps
                    .get(step)
                    .and_then(|s| s.outputs.get(output))
                    .copied()
            };
            let name = format!("steps/{step}/{output}");
            let l = export_into(store, digest(lock), &locked_root.join(&name))?;
            let r = export_into(fresh, digest(rebuilt), &rebuilt_root.join(&name))?;
            files.push(describe(
                row,
                digest(lock).map(|d| d.to_string()),
                digest(rebuilt).map(|d| d.to_string()),
                l,
                r,
            )?);
        }
    }
    Ok(files)
}

fn describe(
    row: &Compared,
    locked: Option<String>,
    rebuilt: Option<String>,
    l: Option<PathBuf>,
    r: Option<PathBuf>,
) -> miette::Result<DifferingFile> {
    let l = l.filter(|p| p.is_file());
    let r = r.filter(|p| p.is_file());
    let first = match (&l, &r) {
        (Some(a), Some(b)) => first_difference(a, b).into_diagnostic()?,
        _ => None,
    };
    Ok(DifferingFile {
        what: row.what.clone(),
        locked_sha256: locked.unwrap_or_else(|| "-".into()),
        rebuilt_sha256: rebuilt.unwrap_or_else(|| "-".into()),
        locked_size: l.as_deref().and_then(size_of),
        rebuilt_size: r.as_deref().and_then(size_of),
        first_difference: first,
        locked_copy: l,
        rebuilt_copy: r,
    })
}

async fn unpack_into(store: &LocalStore, tree: Option<Digest>, dir: &Path) -> miette::Result<bool> {
    let Some(tree) = tree else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir).into_diagnostic()?;
    Ok(store.unpack(&tree, dir).await?)
}

fn export_into(
    store: &LocalStore,
    digest: Option<Digest>,
    path: &Path,
) -> miette::Result<Option<PathBuf>> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).into_diagnostic()?;
    }
    Ok(store.export_sync(&digest, path)?.then(|| path.to_owned()))
}

fn short(value: &str) -> String {
    let value = value.strip_prefix("sha256:").unwrap_or(value);
    value.chars().take(16).collect()
}

fn print_report(report: &Report) {
    let mut table = Table::new(&["output", "locked", "rebuilt", "result"]);
    for row in &report.outputs {
        table.row(vec![
            row.what.clone(),
            short(&row.locked),
            short(&row.rebuilt),
            if row.matches { "match" } else { "MISMATCH" }.into(),
        ]);
    }
    print!("{}", table.render());
    let differing_keys: Vec<&Compared> = report.keys.iter().filter(|k| !k.matches).collect();
    if !differing_keys.is_empty() {
        println!(
            "note: {} step key(s) differ from the lock (the rebuild's inputs differ, e.g. another \
             toolchain image); outputs were compared regardless",
            differing_keys.len()
        );
    }
    for file in &report.differing_files {
        println!("differs   {}", file.what);
        let size =
            |s: Option<u64>| s.map_or_else(|| "no copy".to_owned(), |s| format!("{s} bytes"));
        println!(
            "  locked  {} ({})",
            file.locked_sha256,
            size(file.locked_size)
        );
        println!(
            "  rebuilt {} ({})",
            file.rebuilt_sha256,
            size(file.rebuilt_size)
        );
        match file.first_difference {
            Some(offset) => println!("  first differing byte at offset {offset}"),
            None => println!(
                "  offset unknown: the locked copy is not in this store (release here first)"
            ),
        }
        for copy in [&file.locked_copy, &file.rebuilt_copy]
            .into_iter()
            .flatten()
        {
            println!("  kept    {}", copy.display());
        }
    }
    let total = report.outputs.len();
    let bad = report.outputs.iter().filter(|r| !r.matches).count();
    if bad == 0 {
        println!(
            "verified: all {total} outputs of {} rebuilt bit for bit",
            report.lockfile.display()
        );
    } else {
        println!(
            "NOT REPRODUCIBLE: {bad} of {total} outputs differ{}",
            report.kept.as_ref().map_or_else(String::new, |k| format!(
                "; both copies are under {} (compare them with diffoscope)",
                k.display()
            ))
        );
    }
}
