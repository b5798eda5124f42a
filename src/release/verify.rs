//! Verifying a locked release by rebuilding it ([`rebuild`]): its inputs read back from the
//! lock ([`resolve_locked`](super::resolve_locked)), the plan run in a fresh store with fresh
//! caches, every output compared with the lock, both copies of a differing file kept, and a
//! passed verification noted in the store ([`VerifiedNote`]) for `kiln status`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{EngineEvent, Plan, RunOptions, StepLimits};
use crate::hash::Digest;
use crate::lockfile::Lockfile;
use crate::sandbox::{Network, Sandbox};
use crate::store::{LocalStore, Store as _};

use super::recipe::step;
use super::{
    Prepared, ReleaseError, RepoSet, Resolved, artifacts_tree, lockfile, resolve_locked,
    unpack_artifacts,
};

/// The steps a `--steps git` verification re-runs: everything but the Go build (the fetch of
/// third-party modules too, when the release has one: tidy reads it).
pub(crate) const GIT_STEPS: [&str; 6] = [
    step::REBASE,
    step::TAG,
    step::MODULES,
    step::K3S_EDIT,
    step::MODULES_FETCH,
    step::K3S_TIDY,
];

/// Marks a directory `kiln verify` made for kept copies, so a later run may replace it.
const KEEP_MARKER: &str = ".kiln-verify";

/// What a verification rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scope {
    /// Every step.
    All,
    /// [`GIT_STEPS`]: tags, module sums and the k3s commit, no build.
    Git,
}

impl Scope {
    /// Whether `step` is rebuilt.
    #[must_use]
    pub(crate) fn includes(self, step: &str) -> bool {
        self == Self::All || GIT_STEPS.contains(&step)
    }

    /// `all` or `git`, as `--steps` names it.
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Git => "git",
        }
    }
}

/// What `kiln verify` leaves in the store when every output matched: `kiln status` reads it
/// to say that the lockfile, as it is byte for byte, was rebuilt here.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifiedNote {
    /// The SHA-256 of the lockfile's bytes.
    pub(crate) lockfile_sha256: Digest,
    /// The release's fork tag.
    pub(crate) fork_tag: String,
    /// What was rebuilt.
    pub(crate) steps: Scope,
}

impl VerifiedNote {
    /// The note of a passed verification of the lockfile whose bytes hash to `lockfile`;
    /// `Ok(None)` when there is none (or it is unreadable: that is no proof).
    pub(crate) fn read(
        store: &LocalStore,
        lockfile: &Digest,
    ) -> Result<Option<Self>, ReleaseError> {
        let Some(bytes) = store.verified_sync(lockfile)? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Self>(&bytes) {
            Ok(note) if note.lockfile_sha256 == *lockfile => Ok(Some(note)),
            Ok(_) | Err(_) => {
                tracing::warn!(%lockfile, "ignoring a damaged verification note");
                Ok(None)
            }
        }
    }

    fn write(&self, store: &LocalStore) -> Result<(), ReleaseError> {
        let bytes = serde_json::to_vec(self).expect("a note always serializes");
        store.put_verified_sync(&self.lockfile_sha256, &bytes)?;
        Ok(())
    }
}

/// A differing file, with both copies kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DifferingFile {
    /// What it is (`artifact k3s`, `step tag tags`).
    pub(crate) what: String,
    /// The locked digest (`-` when the lock has none).
    pub(crate) locked_sha256: String,
    /// The rebuilt digest.
    pub(crate) rebuilt_sha256: String,
    /// Size of the locked copy, when there is one.
    pub(crate) locked_size: Option<u64>,
    /// Size of the rebuilt copy.
    pub(crate) rebuilt_size: Option<u64>,
    /// Offset of the first differing byte; `None` when a copy is missing.
    pub(crate) first_difference: Option<u64>,
    /// Where the locked copy was kept.
    pub(crate) locked_copy: Option<PathBuf>,
    /// Where the rebuilt copy was kept.
    pub(crate) rebuilt_copy: Option<PathBuf>,
}

/// What a verification found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Verdict {
    /// What was rebuilt.
    pub(crate) steps: Scope,
    /// Whether every output matched.
    pub(crate) matches: bool,
    /// Every output, compared.
    pub(crate) outputs: Vec<Compared>,
    /// Every step key, compared (a differing key is a differing input, not output).
    pub(crate) keys: Vec<Compared>,
    /// Differing files with both copies.
    pub(crate) differing_files: Vec<DifferingFile>,
    /// Where the copies are.
    pub(crate) kept: Option<PathBuf>,
}

/// Refuses a `--keep` directory that exists and was not made by `kiln verify` (checked before
/// the rebuild, not after it).
pub(crate) fn check_keep_dir(dir: &Path) -> Result<(), ReleaseError> {
    if dir.exists() && !dir.join(KEEP_MARKER).is_file() {
        return Err(ReleaseError::KeepDirTaken {
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

/// The release `lock` records, resolved against mirrors of `repos` (blocking git on a worker
/// thread): every commit must exist there.
///
/// # Panics
/// Never: resolving runs no code that panics.
pub(crate) async fn resolve_lock(
    repos: &RepoSet,
    lock: &Lockfile,
    store: &LocalStore,
) -> Result<Resolved, ReleaseError> {
    let (repos, lock, git_dir) = (repos.clone(), lock.clone(), store.git_dir());
    tokio::task::spawn_blocking(move || resolve_locked(&repos, &lock, &git_dir))
        .await
        .expect("resolving does not panic")
}

/// Rebuilds the steps of `prepared` within `scope` in a fresh store under `store`'s `tmp/`
/// (removed afterwards) through `sandbox` (which must use fresh caches), and compares every
/// output with `lock`. On a match the verification is noted in `store` for `kiln status`
/// (under `lock_sha256`, the digest of the lockfile's bytes); on a mismatch both copies of
/// every differing file go under `keep`.
#[allow(clippy::too_many_arguments)] // one verification's whole description
pub(crate) async fn rebuild<B: Sandbox + Clone + 'static>(
    prepared: &Prepared,
    lock: &Lockfile,
    lock_sha256: Digest,
    scope: Scope,
    keep: &Path,
    store: &LocalStore,
    sandbox: &B,
    (jobs, limits): (usize, &StepLimits),
    offline: bool,
    events: &UnboundedSender<EngineEvent>,
) -> Result<Verdict, ReleaseError> {
    check_keep_dir(keep)?;
    if prepared.toolchain.image.identity != lock.inputs.toolchain.image {
        tracing::warn!(
            here = %prepared.toolchain.image.identity,
            locked = %lock.inputs.toolchain.image,
            "this machine's toolchain image is not the locked one: step keys will differ; \
             outputs are still compared"
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
    let fresh_dir = store.scratch_dir("kiln-verify-")?;
    let fresh = LocalStore::open(fresh_dir.path())?;
    if offline {
        seed_fetches(&plan, lock, store, &fresh, fresh_dir.path()).await?;
    }
    let options = RunOptions {
        jobs,
        work_dir: fresh.work_dir(),
        limits: limits.clone(),
    };
    // A refetch that differs from the lockfile's pin names what changed, file by file.
    let report = crate::engine::run(&plan, &fresh, sandbox, &options, events)
        .await
        .map_err(|error| super::fetch::explain_pin_mismatch(error.into(), Some(lock), &fresh))?;
    let artifacts = if scope == Scope::All {
        let scratch = fresh_dir.path().join("artifacts");
        std::fs::create_dir_all(&scratch).map_err(ReleaseError::io("create", &scratch))?;
        unpack_artifacts(&fresh, &report, &scratch).await?
    } else {
        BTreeMap::new()
    };
    let rebuilt = lockfile(
        &prepared.resolved,
        &prepared.toolchain,
        &prepared.identity,
        &report,
        &fresh,
        artifacts,
    )?;
    let outputs = compare(lock, &rebuilt, scope);
    let keys = compare_keys(lock, &rebuilt, scope);
    let matches = outputs.iter().all(|r| r.matches);
    let mut differing_files = Vec::new();
    let mut kept = None;
    if matches {
        VerifiedNote {
            lockfile_sha256: lock_sha256,
            fork_tag: lock.release.new_fork_tag().to_string(),
            steps: scope,
        }
        .write(store)?;
    } else {
        fresh_keep_dir(keep)?;
        differing_files = keep_differences(lock, &rebuilt, &outputs, store, &fresh, keep).await?;
        kept = Some(keep.to_owned());
    }
    Ok(Verdict {
        steps: scope,
        matches,
        outputs,
        keys,
        differing_files,
        kept,
    })
}

/// `--offline`: the records (and outputs) the lockfile names for the plan's fetch steps, copied
/// from `store` into the fresh store, so the rebuild uses what was fetched and pinned instead of
/// fetching again. Their pins are still checked when the rebuild reaches them.
async fn seed_fetches(
    plan: &Plan,
    lock: &Lockfile,
    store: &LocalStore,
    fresh: &LocalStore,
    scratch: &Path,
) -> Result<(), ReleaseError> {
    for fetch in plan.steps().iter().filter(|s| s.network != Network::None) {
        let missing = || ReleaseError::OfflineWithoutFetch {
            step: fetch.name.clone(),
        };
        let locked = lock.steps.get(&fetch.name).ok_or_else(missing)?;
        let record = store.record(&locked.key).await?.ok_or_else(missing)?;
        for (index, output) in record.outputs.values().enumerate() {
            let copy = scratch.join(format!("seed-{index}"));
            if !store.export(&output.digest, &copy).await? {
                return Err(missing());
            }
            fresh.put_file(&copy).await?;
            std::fs::remove_file(&copy).map_err(ReleaseError::io("remove", &copy))?;
        }
        fresh.put_record(&record).await?;
    }
    Ok(())
}

/// Makes `dir` an empty directory for this run's copies: one an earlier `kiln verify` made is
/// replaced; anything else that exists is refused.
fn fresh_keep_dir(dir: &Path) -> Result<(), ReleaseError> {
    check_keep_dir(dir)?;
    let io = ReleaseError::io;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("replace", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let marker = dir.join(KEEP_MARKER);
    std::fs::write(&marker, "").map_err(io("write", &marker))
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
) -> Result<Vec<DifferingFile>, ReleaseError> {
    let mut files = Vec::new();
    let (locked_root, rebuilt_root) = (keep.join("locked"), keep.join("rebuilt"));
    let mut unpacked: Option<(bool, bool)> = None;
    for row in outputs.iter().filter(|r| !r.matches) {
        if let Some(path) = row.what.strip_prefix("artifact ") {
            let (l, r) = match unpacked {
                Some(done) => done,
                None => {
                    let done = (
                        unpack_into(store, artifacts_tree(lock), &locked_root.join("artifacts"))
                            .await?,
                        unpack_into(
                            fresh,
                            artifacts_tree(rebuilt),
                            &rebuilt_root.join("artifacts"),
                        )
                        .await?,
                    );
                    unpacked = Some(done);
                    done
                }
            };
            files.push(describe(
                row,
                lock.artifacts.get(path).map(|a| a.sha256.to_string()),
                rebuilt.artifacts.get(path).map(|a| a.sha256.to_string()),
                l.then(|| locked_root.join("artifacts").join(path)),
                r.then(|| rebuilt_root.join("artifacts").join(path)),
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
) -> Result<DifferingFile, ReleaseError> {
    let l = l.filter(|p| p.is_file());
    let r = r.filter(|p| p.is_file());
    let first = match (&l, &r) {
        (Some(a), Some(b)) => first_difference(a, b).map_err(ReleaseError::io("compare", a))?,
        _ => None,
    };
    let size = |p: &Option<PathBuf>| {
        p.as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
    };
    Ok(DifferingFile {
        what: row.what.clone(),
        locked_sha256: locked.unwrap_or_else(|| "-".into()),
        rebuilt_sha256: rebuilt.unwrap_or_else(|| "-".into()),
        locked_size: size(&l),
        rebuilt_size: size(&r),
        first_difference: first,
        locked_copy: l,
        rebuilt_copy: r,
    })
}

async fn unpack_into(
    store: &LocalStore,
    tree: Option<Digest>,
    dir: &Path,
) -> Result<bool, ReleaseError> {
    let Some(tree) = tree else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir).map_err(ReleaseError::io("create", dir))?;
    Ok(store.unpack(&tree, dir).await?)
}

fn export_into(
    store: &LocalStore,
    digest: Option<Digest>,
    path: &Path,
) -> Result<Option<PathBuf>, ReleaseError> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ReleaseError::io("create", parent))?;
    }
    Ok(store.export_sync(&digest, path)?.then(|| path.to_owned()))
}

/// One compared output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Compared {
    /// What it is: `tag …`, `module …`, `k3s …`, `artifact …`, `step … output`.
    pub(crate) what: String,
    /// The locked value (`-` when the lock has none).
    pub(crate) locked: String,
    /// The rebuilt value (`-` when the rebuild has none).
    pub(crate) rebuilt: String,
    /// Whether they are equal.
    pub(crate) matches: bool,
}

fn row(what: String, locked: Option<String>, rebuilt: Option<String>) -> Compared {
    let matches = locked.is_some() && locked == rebuilt;
    Compared {
        what,
        locked: locked.unwrap_or_else(|| "-".into()),
        rebuilt: rebuilt.unwrap_or_else(|| "-".into()),
        matches,
    }
}

/// Every output of `locked` within `scope` against `rebuilt`: the fork's tags, module sums,
/// the k3s commit, each artifact's sha256 and size, and every step output's digest.
#[must_use]
pub(crate) fn compare(locked: &Lockfile, rebuilt: &Lockfile, scope: Scope) -> Vec<Compared> {
    let mut rows = Vec::new();
    let tags: BTreeSet<&String> = locked.tags.keys().chain(rebuilt.tags.keys()).collect();
    for tag in tags {
        rows.push(row(
            format!("tag {tag}"),
            locked.tags.get(tag).cloned(),
            rebuilt.tags.get(tag).cloned(),
        ));
    }
    let find = |lock: &Lockfile, module: &str, version: &str| {
        lock.modules
            .iter()
            .find(|m| m.module == module && m.version == version)
            .cloned()
    };
    let modules: BTreeSet<(&String, &String)> = locked
        .modules
        .iter()
        .chain(&rebuilt.modules)
        .map(|m| (&m.module, &m.version))
        .collect();
    for (module, version) in modules {
        let (l, r) = (
            find(locked, module, version),
            find(rebuilt, module, version),
        );
        rows.push(row(
            format!("module {module}@{version}"),
            l.as_ref().map(|m| m.h1.clone()),
            r.as_ref().map(|m| m.h1.clone()),
        ));
        rows.push(row(
            format!("module {module}@{version}/go.mod"),
            l.map(|m| m.go_mod_h1),
            r.map(|m| m.go_mod_h1),
        ));
    }
    rows.push(row(
        format!("k3s {}", locked.k3s.branch),
        Some(locked.k3s.commit.clone()),
        Some(rebuilt.k3s.commit.clone()),
    ));
    if scope == Scope::All {
        let paths: BTreeSet<&String> = locked
            .artifacts
            .keys()
            .chain(rebuilt.artifacts.keys())
            .collect();
        for path in paths {
            let show = |a: &crate::lockfile::Artifact| format!("{} ({} bytes)", a.sha256, a.size);
            rows.push(row(
                format!("artifact {path}"),
                locked.artifacts.get(path).map(show),
                rebuilt.artifacts.get(path).map(show),
            ));
        }
    }
    for (name, step) in &locked.steps {
        if !scope.includes(name) {
            continue;
        }
        let other = rebuilt.steps.get(name);
        for (output, digest) in &step.outputs {
            rows.push(row(
                format!("step {name} {output}"),
                Some(digest.to_string()),
                other
                    .and_then(|s| s.outputs.get(output))
                    .map(ToString::to_string),
            ));
        }
    }
    rows
}

/// The step keys of `locked` within `scope` against `rebuilt`: a differing key means the
/// rebuild's inputs differ (another toolchain image, say), not that an output does.
#[must_use]
pub(crate) fn compare_keys(locked: &Lockfile, rebuilt: &Lockfile, scope: Scope) -> Vec<Compared> {
    locked
        .steps
        .iter()
        .filter(|(name, _)| scope.includes(name))
        .map(|(name, step)| {
            row(
                format!("key {name}"),
                Some(step.key.to_string()),
                rebuilt.steps.get(name).map(|s| s.key.to_string()),
            )
        })
        .collect()
}

/// The offset of the first byte where `a` and `b` differ; `None` when they are identical.
/// A file that is a prefix of the other differs at the shorter one's length.
pub(crate) fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    let mut a = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(a)?);
    let mut b = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(b)?);
    let (mut left, mut right) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut a, &mut left)?;
        let m = read_full(&mut b, &mut right)?;
        let common = n.min(m);
        if let Some(at) = left[..common]
            .iter()
            .zip(&right[..common])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + at as u64));
        }
        if n != m {
            return Ok(Some(offset + common as u64));
        }
        if n == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the end.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_lockfiles_match_everywhere() {
        let lock = crate::lockfile::sample();
        let rows = compare(&lock, &lock, Scope::All);
        assert!(rows.iter().all(|r| r.matches), "{rows:#?}");
        assert!(rows.iter().any(|r| r.what == "artifact k3s"));
        assert!(rows.iter().any(|r| r.what.starts_with("tag ")));
        assert!(rows.iter().any(|r| r.what.starts_with("module ")));
    }

    #[test]
    fn each_kind_of_difference_is_a_mismatch() {
        let lock = crate::lockfile::sample();
        let mut other = lock.clone();
        let tag = other.tags.keys().next().unwrap().clone();
        other.tags.insert(tag.clone(), "f".repeat(40));
        other.modules[0].h1 = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        other.artifacts.get_mut("k3s").unwrap().size += 1;
        other.k3s.commit = "e".repeat(40);
        let rows = compare(&lock, &other, Scope::All);
        let bad: Vec<&str> = rows
            .iter()
            .filter(|r| !r.matches)
            .map(|r| r.what.as_str())
            .collect();
        assert_eq!(
            bad,
            [
                format!("tag {tag}").as_str(),
                "module github.com/k3s-io/helper@v0.28.1",
                "k3s v1.28.2-k3s1",
                "artifact k3s"
            ]
        );
        // --steps git compares neither artifacts nor the build step.
        let git = compare(&lock, &other, Scope::Git);
        assert!(
            !git.iter()
                .any(|r| r.what.starts_with("artifact") || r.what.starts_with("step build"))
        );
        assert!(git.iter().any(|r| r.what.starts_with("step rebase")));
    }

    #[test]
    fn first_difference_finds_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut bytes = vec![7u8; 200_000];
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), None);
        bytes[150_001] = 8;
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some(150_001));
        std::fs::write(&b, &bytes[..70_000]).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some(70_000));
    }
}
