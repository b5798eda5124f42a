//! Release names: everything a captain would otherwise type by hand, derived from
//! `--old vX.Y.Z --new vX.Y.Z` and what the repositories hold (DESIGN.md §1).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::ReleaseError;

/// A Kubernetes version `vMAJOR.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct K8sVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl FromStr for K8sVersion {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReleaseError::NotSemver {
            given: s.to_owned(),
        };
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(bad());
        };
        let number = |p: &str| -> Result<u32, ReleaseError> {
            // No signs, no leading zeros (semver), at most 4 digits.
            if p.is_empty()
                || p.len() > 4
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        Ok(Self {
            major: number(major)?,
            minor: number(minor)?,
            patch: number(patch)?,
        })
    }
}

impl fmt::Display for K8sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl K8sVersion {
    /// The client-go style version: `v1.28.2` → `v0.28.2`.
    #[must_use]
    pub fn client(&self) -> String {
        format!("v{}.{}.{}", self.major - 1, self.minor, self.patch)
    }

    /// `release-1.28`.
    #[must_use]
    pub fn release_branch(&self) -> String {
        format!("release-{}.{}", self.major, self.minor)
    }
}

/// A k3s suffix `k3sN` (N ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Suffix(pub u32);

impl FromStr for Suffix {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReleaseError::BadSuffix {
            given: s.to_owned(),
        };
        let n = s.strip_prefix("k3s").ok_or_else(bad)?;
        if n.is_empty()
            || n.len() > 3
            || n.starts_with('0')
            || !n.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(Self(n.parse().map_err(|_| bad())?))
    }
}

impl fmt::Display for Suffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k3s{}", self.0)
    }
}

/// A k3s release name: `vX.Y.Z+k3sN` (GA) or `vX.Y.Z-rcM+k3sN` (a release candidate), as
/// k3s tags and KDM entries spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct K3sVersion {
    /// The Kubernetes version.
    pub k8s: K8sVersion,
    /// The release candidate number, `None` for GA.
    pub rc: Option<u32>,
    /// The k3s suffix.
    pub suffix: Suffix,
}

impl FromStr for K3sVersion {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, ReleaseError> {
        let bad = || ReleaseError::NotK3sVersion {
            given: s.to_owned(),
        };
        let (left, suffix) = s.split_once('+').ok_or_else(bad)?;
        let suffix: Suffix = suffix.parse().map_err(|_| bad())?;
        let (k8s, rc) = match left.split_once("-rc") {
            Some((k8s, n)) => {
                if n.is_empty()
                    || n.len() > 3
                    || n.starts_with('0')
                    || !n.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                (k8s, Some(n.parse().map_err(|_| bad())?))
            }
            None => (left, None),
        };
        Ok(Self {
            k8s: k8s.parse().map_err(|_| bad())?,
            rc,
            suffix,
        })
    }
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rc {
            Some(n) => write!(f, "{}-rc{n}+{}", self.k8s, self.suffix),
            None => write!(f, "{}+{}", self.k8s, self.suffix),
        }
    }
}

impl Ord for K3sVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for K3sVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl K3sVersion {
    /// RCs before their GA; a later suffix after every RC and GA of an earlier one.
    fn rank(&self) -> (K8sVersion, Suffix, u32) {
        (self.k8s, self.suffix, self.rc.unwrap_or(u32::MAX))
    }

    /// The GA version of this one.
    #[must_use]
    pub fn ga(&self) -> Self {
        Self { rc: None, ..*self }
    }

    pub(crate) fn minor(&self) -> (u32, u32) {
        (self.k8s.major, self.k8s.minor)
    }
}

/// Every name of one patch release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseNames {
    /// `v1.28.1`.
    pub old_k8s: String,
    /// `v1.28.2`.
    pub new_k8s: String,
    /// `v0.28.1`.
    pub old_client: String,
    /// `v0.28.2`.
    pub new_client: String,
    /// `v1.28.1-k3s1`: the highest existing suffix unless one was given.
    pub old_fork_tag: String,
    /// `v1.28.2-k3s1`.
    pub new_fork_tag: String,
    /// `release-1.28`.
    pub release_branch: String,
    /// `.go-version` at the new upstream tag.
    pub go_version: String,
    /// The next RC: `v1.28.2-rc1+k3s1` (n = highest existing + 1).
    pub rc: String,
    /// The GA name: `v1.28.2+k3s1`.
    pub ga: String,
    /// The RC as an image tag: `v1.28.2-rc1-k3s1`.
    pub rc_image_tag: String,
    /// The GA as an image tag: `v1.28.2-k3s1`.
    pub ga_image_tag: String,
}

/// What the repositories say, for [`derive`].
#[derive(Clone, Debug, Default)]
pub struct RepoFacts {
    /// Tag names in the upstream repository.
    pub upstream_tags: Vec<String>,
    /// Tag names in the fork.
    pub fork_tags: Vec<String>,
    /// Tag names in the k3s repository (for RC numbering).
    pub k3s_tags: Vec<String>,
}

/// The highest `-k3sN` suffix of `version` among `tags` (fork tags `vX.Y.Z-k3sN`).
#[must_use]
pub fn highest_suffix(version: &K8sVersion, tags: &[String]) -> Option<Suffix> {
    let prefix = format!("{version}-");
    tags.iter()
        .filter_map(|t| t.strip_prefix(&prefix)?.parse::<Suffix>().ok())
        .max()
}

/// The next RC number of `version`+`suffix` among k3s tags `vX.Y.Z-rcN+k3sM`.
#[must_use]
pub fn next_rc(version: &K8sVersion, suffix: Suffix, tags: &[String]) -> u32 {
    rcs_among(version, suffix, tags.iter().map(String::as_str))
        .last()
        .map_or(1, |(n, _)| n + 1)
}

/// The release candidates of `version`+`suffix` among `names` (tags, KDM entries), with their
/// numbers, lowest first.
pub fn rcs_among<'a>(
    version: &K8sVersion,
    suffix: Suffix,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(u32, &'a str)> {
    let mut found: Vec<(u32, &str)> = names
        .into_iter()
        .filter_map(|name| {
            let parsed: K3sVersion = name.parse().ok()?;
            (parsed.k8s == *version && parsed.suffix == suffix)
                .then_some(parsed.rc)?
                .map(|n| (n, name))
        })
        .collect();
    found.sort_unstable();
    found
}

/// Parses and checks a version pair: semver, same minor, new > old.
pub fn check_pair(old: &str, new: &str) -> Result<(K8sVersion, K8sVersion), ReleaseError> {
    let old_v: K8sVersion = old.parse()?;
    let new_v: K8sVersion = new.parse()?;
    if (old_v.major, old_v.minor) != (new_v.major, new_v.minor) {
        return Err(ReleaseError::DifferentMinors {
            old: old_v.to_string(),
            new: new_v.to_string(),
        });
    }
    if new_v <= old_v {
        return Err(ReleaseError::NotNewer {
            old: old_v.to_string(),
            new: new_v.to_string(),
        });
    }
    Ok((old_v, new_v))
}

/// Derives every name, checking the rules of DESIGN.md §1: semver, same minor, new > old,
/// both upstream tags exist, the old fork tag exists.
pub fn derive(
    old: &str,
    new: &str,
    old_suffix: Option<&str>,
    new_suffix: Option<&str>,
    facts: &RepoFacts,
    go_version: impl FnOnce(&K8sVersion) -> Result<String, ReleaseError>,
) -> Result<ReleaseNames, ReleaseError> {
    let (old_v, new_v) = check_pair(old, new)?;
    for version in [old_v, new_v] {
        if !facts
            .upstream_tags
            .iter()
            .any(|t| *t == version.to_string())
        {
            return Err(ReleaseError::MissingUpstreamTag {
                tag: version.to_string(),
            });
        }
    }
    let old_suffix = match old_suffix {
        Some(given) => {
            let suffix: Suffix = given.parse()?;
            let tag = format!("{old_v}-{suffix}");
            if !facts.fork_tags.contains(&tag) {
                return Err(ReleaseError::MissingForkTag {
                    tag,
                    found: fork_tags_of(&old_v, &facts.fork_tags),
                });
            }
            suffix
        }
        None => highest_suffix(&old_v, &facts.fork_tags).ok_or_else(|| {
            ReleaseError::MissingForkTag {
                tag: format!("{old_v}-k3sN"),
                found: fork_tags_of(&old_v, &facts.fork_tags),
            }
        })?,
    };
    let new_suffix: Suffix = new_suffix.unwrap_or("k3s1").parse()?;
    let rc = next_rc(&new_v, new_suffix, &facts.k3s_tags);
    Ok(ReleaseNames {
        old_k8s: old_v.to_string(),
        new_k8s: new_v.to_string(),
        old_client: old_v.client(),
        new_client: new_v.client(),
        old_fork_tag: format!("{old_v}-{old_suffix}"),
        new_fork_tag: format!("{new_v}-{new_suffix}"),
        release_branch: new_v.release_branch(),
        go_version: go_version(&new_v)?,
        rc: format!("{new_v}-rc{rc}+{new_suffix}"),
        ga: format!("{new_v}+{new_suffix}"),
        rc_image_tag: format!("{new_v}-rc{rc}-{new_suffix}"),
        ga_image_tag: format!("{new_v}-{new_suffix}"),
    })
}

fn fork_tags_of(version: &K8sVersion, tags: &[String]) -> String {
    let prefix = format!("{version}-k3s");
    let found: Vec<&str> = tags
        .iter()
        .filter(|t| t.starts_with(&prefix))
        .map(String::as_str)
        .collect();
    if found.is_empty() {
        "none".into()
    } else {
        found.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RepoFacts {
        RepoFacts {
            upstream_tags: vec!["v1.28.1".into(), "v1.28.2".into(), "v1.28.10".into()],
            fork_tags: vec![
                "v1.28.1-k3s1".into(),
                "v1.28.1-k3s2".into(),
                "staging/src/k8s.io/api/v1.28.1-k3s2".into(),
            ],
            k3s_tags: vec![
                "v1.28.2-rc1+k3s1".into(),
                "v1.28.2-rc2+k3s1".into(),
                "v1.28.2-rc9+k3s2".into(),
            ],
        }
    }

    #[allow(clippy::unnecessary_wraps)] // the shape `derive` takes
    fn go(_: &K8sVersion) -> Result<String, ReleaseError> {
        Ok("1.23.5".into())
    }

    #[test]
    fn derives_every_name() {
        let names = derive("v1.28.1", "v1.28.2", None, None, &facts(), go).unwrap();
        assert_eq!(names.old_client, "v0.28.1");
        assert_eq!(names.new_client, "v0.28.2");
        assert_eq!(names.old_fork_tag, "v1.28.1-k3s2", "highest suffix wins");
        assert_eq!(names.new_fork_tag, "v1.28.2-k3s1");
        assert_eq!(names.release_branch, "release-1.28");
        assert_eq!(names.go_version, "1.23.5");
        assert_eq!(names.rc, "v1.28.2-rc3+k3s1");
        assert_eq!(names.ga, "v1.28.2+k3s1");
        assert_eq!(names.rc_image_tag, "v1.28.2-rc3-k3s1");
        assert_eq!(names.ga_image_tag, "v1.28.2-k3s1");
        let pinned = derive(
            "v1.28.1",
            "v1.28.2",
            Some("k3s1"),
            Some("k3s2"),
            &facts(),
            go,
        )
        .unwrap();
        assert_eq!(pinned.old_fork_tag, "v1.28.1-k3s1");
        assert_eq!(pinned.new_fork_tag, "v1.28.2-k3s2");
        assert_eq!(pinned.rc, "v1.28.2-rc10+k3s2");
    }

    #[test]
    fn double_digit_patches_compare_numerically() {
        let names = derive(
            "v1.28.2",
            "v1.28.10",
            Some("k3s1"),
            None,
            &RepoFacts {
                fork_tags: vec!["v1.28.2-k3s1".into()],
                ..facts()
            },
            go,
        )
        .unwrap();
        assert_eq!(names.new_client, "v0.28.10");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let err = |old: &str, new: &str| derive(old, new, None, None, &facts(), go).unwrap_err();
        assert!(matches!(
            err("1.28.1", "v1.28.2"),
            ReleaseError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28", "v1.28.2"),
            ReleaseError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28.01", "v1.28.2"),
            ReleaseError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28.1", "v1.29.0"),
            ReleaseError::DifferentMinors { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.1"),
            ReleaseError::NotNewer { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.2"),
            ReleaseError::NotNewer { .. }
        ));
        assert!(matches!(
            err("v1.28.1", "v1.28.3"),
            ReleaseError::MissingUpstreamTag { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.10"),
            ReleaseError::MissingForkTag { .. }
        ));
        let bad_suffix =
            derive("v1.28.1", "v1.28.2", Some("k3s0"), None, &facts(), go).unwrap_err();
        assert!(matches!(bad_suffix, ReleaseError::BadSuffix { .. }));
        let missing = derive("v1.28.1", "v1.28.2", Some("k3s7"), None, &facts(), go).unwrap_err();
        assert!(missing.to_string().contains("v1.28.1-k3s7"), "{missing}");
    }
}
