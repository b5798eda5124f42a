//! `kiln verify LOCK`: rebuild a locked release from its recorded inputs in a fresh store with
//! fresh cache volumes, and compare every output with the lock.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::lockfile::Lockfile;
use crate::release::verify::{Compared, Scope, Verdict, check_keep_dir, rebuild, resolve_lock};
use crate::sandbox::{DockerSandbox, Engine};
use crate::store::LocalStore;

use super::args::RepoArgs;
use super::table::Table;
use super::{Outcome, print_json};

/// Exit code when a rebuilt output differs from the lock.
const EXIT_MISMATCH: u8 = 3;

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
    /// Use the fetched third-party modules the store holds for this lockfile instead of
    /// fetching them again (no step gets network); everything else is rebuilt.
    #[arg(long)]
    offline: bool,
    /// Which steps to rebuild.
    #[arg(long, value_enum, default_value = "all")]
    steps: StepsArg,
    #[command(flatten)]
    repos: RepoArgs,
    #[command(flatten)]
    go: super::args::GoArgs,
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

pub(super) async fn run_verify(args: VerifyArgs, store_dir: &Path) -> Outcome {
    // The lockfile is checked before any repository, engine or store is touched.
    let (lock, lock_sha256) = Lockfile::read_with_digest(&args.lockfile)?;
    let keep = args
        .keep
        .clone()
        .unwrap_or_else(|| Path::new("kiln-verify").join(lock.release.new_fork_tag().to_string()));
    check_keep_dir(&keep)?;
    let scope = match args.steps {
        StepsArg::All => Scope::All,
        StepsArg::Git => Scope::Git,
    };
    let toml = super::args::kiln_toml()?;
    let repos = args.repos.repos(toml.as_ref())?;
    let limits = toml.as_ref().map(|t| t.steps.clone()).unwrap_or_default();
    // The rebuild uses the Go archive the lockfile records, not another one of that version.
    let mut go = args.go.settings(toml.as_ref())?;
    go.archive = Some(lock.inputs.toolchain.archive);
    go.fetch_pins_from(&lock);
    go.offline = args.offline;
    let engine = Engine::connect().await?;
    // The user's store gives the repository mirrors and the locked copies of outputs; nothing
    // is read from it as a result.
    let store = LocalStore::open(store_dir)?;
    let resolved = resolve_lock(&repos, &lock, &store).await?;
    let identity = &lock.inputs.identity;
    let prepared = super::release::plan_on_engine(identity, resolved, &engine, true, &go).await?;
    let sandbox = DockerSandbox::with_engine(engine)
        .await?
        .with_fresh_caches();
    eprintln!(
        "==> verify: rebuilding the {} steps of {} in a fresh store with fresh caches",
        scope.as_str(),
        lock.release.new_fork_tag()
    );
    let result = super::events::drawn(args.logs, |events| {
        let (prepared, lock, keep, store, sandbox) = (&prepared, &lock, &keep, &store, &sandbox);
        async move {
            rebuild(
                prepared,
                lock,
                lock_sha256,
                scope,
                keep,
                store,
                sandbox,
                (args.jobs, &limits),
                args.offline,
                &events,
            )
            .await
        }
    })
    .await;
    if let Err(error) = sandbox.remove_cache_volumes().await {
        tracing::warn!(%error, "cannot remove the rebuild's cache volumes");
    }
    let verdict = result?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            lockfile: &'a Path,
            #[serde(flatten)]
            verdict: &'a Verdict,
        }
        print_json(&Json {
            lockfile: &args.lockfile,
            verdict: &verdict,
        })?;
    } else {
        print_verdict(&args.lockfile, &verdict);
    }
    Ok(if verdict.matches {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

fn short(value: &str) -> String {
    let value = value.strip_prefix("sha256:").unwrap_or(value);
    value.chars().take(16).collect()
}

fn print_verdict(lockfile: &Path, verdict: &Verdict) {
    let mut table = Table::new(&["output", "locked", "rebuilt", "result"]);
    for row in &verdict.outputs {
        table.row(vec![
            row.what.clone(),
            short(&row.locked),
            short(&row.rebuilt),
            if row.matches { "match" } else { "MISMATCH" }.into(),
        ]);
    }
    print!("{}", table.render());
    let differing_keys: Vec<&Compared> = verdict.keys.iter().filter(|k| !k.matches).collect();
    if !differing_keys.is_empty() {
        println!(
            "note: {} step key(s) differ from the lock (the rebuild's inputs differ, e.g. another \
             toolchain image); outputs were compared regardless",
            differing_keys.len()
        );
    }
    for file in &verdict.differing_files {
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
    let total = verdict.outputs.len();
    let bad = verdict.outputs.iter().filter(|r| !r.matches).count();
    if bad == 0 {
        println!(
            "verified: all {total} outputs of {} rebuilt bit for bit",
            lockfile.display()
        );
    } else {
        println!(
            "NOT REPRODUCIBLE: {bad} of {total} outputs differ{}",
            verdict.kept.as_ref().map_or_else(String::new, |k| format!(
                "; both copies are under {} (compare them with diffoscope)",
                k.display()
            ))
        );
    }
}
