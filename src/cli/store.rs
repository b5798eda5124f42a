//! `kiln store verify|gc|put`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic as _, WrapErr as _, miette};

use crate::hash::Digest;
use crate::store::{GcOptions, LocalStore, gc, verify};

use super::{Outcome, print_json};

/// Exit code of `kiln store verify` when it finds damage.
const EXIT_CORRUPT: u8 = 3;

#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Re-hash every blob and check every record; exit 3 when something is damaged.
    Verify(VerifyArgs),
    /// Remove what no lockfile, recent run or running step needs.
    Gc(GcArgs),
    /// Store a file; prints its digest and size.
    Put(PutArgs),
    /// Copy a blob out of the store to a new file, verifying its digest.
    Get(GetArgs),
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    /// Move damaged blobs and records to store-v1/corrupt/ (their steps will run again).
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct GcArgs {
    /// Lockfile, or directory of lockfiles, whose steps and artifacts are kept (repeatable;
    /// default: ./lockfiles if it exists).
    #[arg(long = "lockfiles", value_name = "PATH")]
    lockfiles: Vec<PathBuf>,
    /// Keep everything written more recently than this (`0`, `90s`, `30m`, `12h`, `7d`).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    keep_recent: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct GetArgs {
    /// The blob's digest (`sha256:<hex>`).
    digest: Digest,
    /// Where to write it (must not exist).
    dest: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct PutArgs {
    /// The file.
    file: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30m, 12h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` is not a duration like 30m, 12h or 7d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

pub(super) async fn run(command: StoreCommand, store_dir: &Path) -> Outcome {
    let store = LocalStore::open(store_dir)?;
    match command {
        StoreCommand::Verify(args) => {
            let report = tokio::task::spawn_blocking({
                let store = store.clone();
                move || verify(&store, args.repair)
            })
            .await
            .into_diagnostic()??;
            if args.json {
                print_json(&report)?;
            } else {
                println!(
                    "blobs      {} ({} MiB) re-hashed",
                    report.blobs,
                    report.bytes / (1 << 20)
                );
                println!("records    {} checked", report.records);
                for path in &report.corrupt_blobs {
                    println!("CORRUPT    {}", path.display());
                }
                for (path, why) in &report.bad_records {
                    println!("BAD RECORD {}: {why}", path.display());
                }
                for (path, digest) in &report.missing_blobs {
                    println!("MISSING    {digest} (named by {})", path.display());
                }
                if report.repaired {
                    println!(
                        "repaired   moved the damaged entries to {}",
                        store.root().join("corrupt").display()
                    );
                } else if !report.is_clean() {
                    println!(
                        "run `kiln store verify --repair` to move them aside; their steps will run again"
                    );
                }
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CORRUPT)
            })
        }
        StoreCommand::Gc(args) => {
            let mut paths = args.lockfiles.clone();
            if paths.is_empty() && Path::new("lockfiles").is_dir() {
                paths.push(PathBuf::from("lockfiles"));
            }
            let roots = lockfile_roots(&paths)?;
            let options = GcOptions {
                roots,
                keep_recent: args.keep_recent,
            };
            let report = tokio::task::spawn_blocking({
                let store = store.clone();
                move || gc(&store, &options)
            })
            .await
            .into_diagnostic()??;
            if args.json {
                print_json(&report)?;
            } else {
                println!(
                    "freed  {} MiB: {} blobs, {} records, {} leftovers",
                    report.bytes_freed / (1 << 20),
                    report.blobs_removed,
                    report.records_removed,
                    report.leftovers_removed
                );
                println!(
                    "kept   {} MiB: {} blobs, {} records ({} steps running)",
                    report.bytes_kept / (1 << 20),
                    report.blobs_kept,
                    report.records_kept,
                    report.running_steps
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Put(args) => {
            let (digest, size) =
                tokio::task::spawn_blocking(move || store.put_file_sync(&args.file))
                    .await
                    .into_diagnostic()??;
            println!("{digest} {size}");
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Get(args) => {
            let found =
                tokio::task::spawn_blocking(move || store.export_sync(&args.digest, &args.dest))
                    .await
                    .into_diagnostic()??;
            if found {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(miette!("{} is not in the store", args.digest))
            }
        }
    }
}

/// Every `sha256:<hex>` a lockfile mentions: step keys and blob digests alike are roots.
fn lockfile_roots(paths: &[PathBuf]) -> miette::Result<HashSet<Digest>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot list {}", path.display()))?;
            for entry in entries {
                let entry = entry.into_diagnostic()?;
                if entry.path().extension().is_some_and(|e| e == "json") {
                    files.push(entry.path());
                }
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(miette!(
                help = "give a lockfile or a directory of them",
                "{} does not exist",
                path.display()
            ));
        }
    }
    let mut roots = HashSet::new();
    for file in files {
        let text = crate::lockfile::Lockfile::read_text(&file)?;
        let mut rest = text.as_str();
        while let Some(at) = rest.find("sha256:") {
            let candidate = rest.get(at..at + 71).unwrap_or("");
            if let Ok(digest) = candidate.parse::<Digest>() {
                roots.insert(digest);
            }
            rest = &rest[at + 7..];
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("x").is_err());
    }
}
