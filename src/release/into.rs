//! `kiln release --into`: a finished release's results added to the captain's own local
//! repositories — the fork's new tags, the k3s branch — from the store's bundles. Existing refs
//! are never moved: both repositories are checked before either is touched.

use std::path::Path;

use crate::git::{self, Location};
use crate::hash::Digest;
use crate::lockfile::Lockfile;
use crate::store::LocalStore;

use super::{ReleaseError, RepoSet, k3s_bundle, tag_bundle};

/// The refs `lock` adds to one repository, and the bundle holding them.
struct Addition<'a> {
    location: &'a Location,
    repo: &'a Path,
    bundle: Digest,
    refs: Vec<(String, String)>,
}

fn local(location: &Location) -> Result<&Path, ReleaseError> {
    location
        .local_path()
        .filter(|p| p.exists())
        .ok_or_else(|| ReleaseError::NotLocal {
            location: location.to_string(),
        })
}

/// Adds the release's tags to the fork and its branch to k3s (both local repositories).
pub(crate) fn add_into(
    store: &LocalStore,
    repos: &RepoSet,
    lock: &Lockfile,
) -> Result<(), ReleaseError> {
    let bundle = |digest: Option<Digest>, what| {
        digest.ok_or(ReleaseError::MissingOutput {
            step: what,
            output: "bundle",
        })
    };
    let additions = [
        Addition {
            location: &repos.fork,
            repo: local(&repos.fork)?,
            bundle: bundle(tag_bundle(lock), super::step::TAG)?,
            refs: lock
                .tags
                .iter()
                .map(|(tag, commit)| (format!("refs/tags/{tag}"), commit.clone()))
                .collect(),
        },
        Addition {
            location: &repos.k3s,
            repo: local(&repos.k3s)?,
            bundle: bundle(k3s_bundle(lock), super::step::K3S_TIDY)?,
            refs: vec![(
                format!("refs/heads/{}", lock.k3s.branch),
                lock.k3s.commit.clone(),
            )],
        },
    ];
    // Both repositories are checked first, so a refusal leaves both untouched.
    for addition in &additions {
        for (name, commit) in &addition.refs {
            if let Some(existing) = git::ref_commit(addition.repo, name)?
                && existing != *commit
            {
                return Err(ReleaseError::RefExists {
                    location: addition.location.to_string(),
                    name: name.clone(),
                    existing,
                    made: commit.clone(),
                });
            }
        }
    }
    for addition in &additions {
        let scratch = store.scratch_dir("kiln-bundle-")?;
        let path = scratch.path().join("results.bundle");
        if !store.export_sync(&addition.bundle, &path)? {
            return Err(ReleaseError::OutputGone {
                digest: addition.bundle,
            });
        }
        git::fetch_bundle(addition.repo, &path, &addition.refs)?;
    }
    Ok(())
}
