//! `kiln cache …`: keys and moving a whole release between the local store and a registry;
//! [`CacheArgs`], the flags every building command takes to use a shared cache.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::cache::{Lookup, PublicKey, RemoteCache, SecretKey, keygen};
use crate::lockfile::Lockfile;
use crate::store::{LocalStore, Store as _};

use super::table::Table;
use super::{Outcome, print_json};

/// The shared cache, as flags.
#[derive(Debug, Args, Default)]
pub(super) struct CacheArgs {
    /// A shared cache in an OCI registry: `oci://HOST[:PORT]/REPO` (loopback over HTTP, any
    /// other host over HTTPS; credentials from `KILN_CACHE_USERNAME`/`KILN_CACHE_PASSWORD` or
    /// the Docker config).
    #[arg(long, value_name = "URL", env = "KILN_CACHE")]
    pub(super) cache: Option<String>,
    /// Sign and publish step records to the cache with this key (from `kiln cache keygen`).
    #[arg(long, value_name = "FILE", env = "KILN_SIGNING_KEY")]
    pub(super) signing_key: Option<PathBuf>,
    /// Use cache records signed by this public key (ed25519:…); repeatable. Your own signing
    /// key is always trusted.
    #[arg(long = "trust", value_name = "KEY")]
    pub(super) trust: Vec<String>,
}

impl CacheArgs {
    /// The remote layer, when `--cache` is given.
    pub(super) fn remote(&self) -> miette::Result<Option<Arc<RemoteCache>>> {
        self.remote_with(None)
    }

    /// The remote layer from these flags over kiln.toml's `[cache]`: a flag replaces the
    /// file's URL or signing key; trusted keys add up.
    pub(super) fn remote_with(
        &self,
        file: Option<&crate::release::CacheConfig>,
    ) -> miette::Result<Option<Arc<RemoteCache>>> {
        let merged = Self {
            cache: self.cache.clone().or_else(|| file.map(|f| f.url.clone())),
            signing_key: self
                .signing_key
                .clone()
                .or_else(|| file.and_then(|f| f.signing_key.as_ref().map(PathBuf::from))),
            trust: self
                .trust
                .iter()
                .chain(file.map(|f| &f.trusted_keys).into_iter().flatten())
                .cloned()
                .collect(),
        };
        merged.remote_from_flags()
    }

    fn remote_from_flags(&self) -> miette::Result<Option<Arc<RemoteCache>>> {
        let Some(url) = &self.cache else {
            if self.signing_key.is_some() || !self.trust.is_empty() {
                return Err(miette::miette!(
                    help = "add --cache oci://HOST[:PORT]/REPO",
                    "--signing-key and --trust need a cache"
                ));
            }
            return Ok(None);
        };
        let mut trusted = self
            .trust
            .iter()
            .map(|k| k.parse::<PublicKey>())
            .collect::<Result<Vec<_>, _>>()?;
        let signer = self
            .signing_key
            .as_deref()
            .map(SecretKey::read)
            .transpose()?;
        if let Some(signer) = &signer {
            trusted.push(signer.public());
        }
        Ok(Some(Arc::new(RemoteCache::new(url, trusted, signer)?)))
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum CacheCommand {
    /// Make a signing key: the secret goes to FILE (mode 0600), the public key is printed.
    Keygen {
        /// Where the secret key goes (must not exist).
        file: PathBuf,
    },
    /// Publish every step record of a locked release (and its outputs) to the cache, signed.
    Push {
        /// The lockfile.
        #[arg(long, value_name = "LOCK")]
        lockfile: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch every step record of a locked release from the cache into the local store.
    Pull {
        /// The lockfile.
        #[arg(long, value_name = "LOCK")]
        lockfile: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(serde::Serialize)]
struct Moved {
    step: String,
    key: String,
    result: String,
}

pub(super) async fn run(command: CacheCommand, store_dir: &Path) -> Outcome {
    match command {
        CacheCommand::Keygen { file } => {
            let public = keygen(&file)?;
            println!("{public}");
            eprintln!(
                "kiln: secret key written to {} (mode 0600); give the line above to the captains \
                 who should trust your records (--trust)",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Push {
            lockfile,
            cache,
            json,
        } => {
            let lock = Lockfile::read(&lockfile)?;
            if cache.signing_key.is_none() {
                return Err(miette::miette!(
                    help = "make one with `kiln cache keygen FILE`",
                    "publishing needs --signing-key"
                ));
            }
            let remote = require(&cache)?;
            let store = LocalStore::open(store_dir)?;
            // Every record is read and held to the lockfile before anything is published: a
            // lockfile whose outputs disagree with the store publishes nothing.
            let mut records = Vec::new();
            let mut disagreements = Vec::new();
            for (name, step) in &lock.steps {
                let record = store.record(&step.key).await?;
                if let Some(record) = &record {
                    disagreements.extend(disagreement(name, step, record));
                }
                records.push((name, step, record));
            }
            if !disagreements.is_empty() {
                return Err(miette::miette!(
                    help = "the lockfile was edited, or the store holds another build under these \
                            keys: run `kiln store verify`, and restore the lockfile from git or \
                            release again; nothing was published",
                    "{} does not match this store:\n  {}",
                    lockfile.display(),
                    disagreements.join("\n  ")
                ));
            }
            let mut moved = Vec::new();
            for (name, step, record) in records {
                let result = match record {
                    None => "not in the local store".to_owned(),
                    Some(record) => {
                        remote.publish(&record, &store).await?;
                        "published".to_owned()
                    }
                };
                moved.push(Moved {
                    step: name.clone(),
                    key: step.key.to_string(),
                    result,
                });
            }
            report(&moved, json)
        }
        CacheCommand::Pull {
            lockfile,
            cache,
            json,
        } => {
            let lock = Lockfile::read(&lockfile)?;
            let remote = require(&cache)?;
            let store = LocalStore::open(store_dir)?;
            let mut moved = Vec::new();
            for (name, step) in &lock.steps {
                let result = if store.record(&step.key).await?.is_some() {
                    "already local".to_owned()
                } else {
                    match remote.fetch(&step.key, &store).await? {
                        Lookup::Hit(_) => "pulled".to_owned(),
                        Lookup::Miss => "not in the cache".to_owned(),
                        Lookup::Rejected(why) => format!("rejected: {why}"),
                    }
                };
                moved.push(Moved {
                    step: name.clone(),
                    key: step.key.to_string(),
                    result,
                });
            }
            report(&moved, json)
        }
    }
}

/// Where a step's locked outputs differ from the record the store holds for its key.
fn disagreement(
    name: &str,
    step: &crate::lockfile::LockedStep,
    record: &crate::store::Record,
) -> Vec<String> {
    let paths: std::collections::BTreeSet<&String> =
        step.outputs.keys().chain(record.outputs.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| {
            let locked = step.outputs.get(path).map(ToString::to_string);
            let stored = record.outputs.get(path).map(|o| o.digest.to_string());
            (locked != stored).then(|| {
                format!(
                    "step {name}, output {path}: the lockfile says {}, the store's record {}",
                    locked.as_deref().unwrap_or("nothing"),
                    stored.as_deref().unwrap_or("nothing")
                )
            })
        })
        .collect()
}

fn require(cache: &CacheArgs) -> miette::Result<Arc<RemoteCache>> {
    cache.remote()?.ok_or_else(|| {
        miette::miette!(
            help = "give --cache oci://HOST[:PORT]/REPO (or set KILN_CACHE)",
            "no cache named"
        )
    })
}

fn report(moved: &[Moved], json: bool) -> Outcome {
    if json {
        print_json(&moved)?;
    } else {
        let mut table = Table::new(&["step", "key", "result"]);
        for m in moved {
            table.row(vec![m.step.clone(), m.key.clone(), m.result.clone()]);
        }
        print!("{}", table.render());
    }
    let complete = moved
        .iter()
        .all(|m| matches!(m.result.as_str(), "published" | "pulled" | "already local"));
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
