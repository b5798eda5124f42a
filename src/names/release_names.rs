//! Every name of one patch release, derived from the captain's `--old`/`--new` and what the
//! repositories hold (DESIGN.md §1), in one place.

use super::{ClientVersion, ForkTag, GoVersion, K3sVersion, K8sVersion, NameError, Suffix};

/// The versions a captain names: `--old v1.28.1 --new v1.28.2 [--old-suffix] [--new-suffix]`,
/// checked as a pair (same minor, new newer than old) when made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReleaseVersions {
    old: K8sVersion,
    new: K8sVersion,
    old_suffix: Option<Suffix>,
    new_suffix: Suffix,
}

impl ReleaseVersions {
    /// The pair, refused unless both are patch releases of one minor and new is newer.
    pub(crate) fn new(
        old: K8sVersion,
        new: K8sVersion,
        old_suffix: Option<Suffix>,
        new_suffix: Suffix,
    ) -> Result<Self, NameError> {
        if !old.same_minor(new) {
            return Err(NameError::DifferentMinors { old, new });
        }
        if new <= old {
            return Err(NameError::NotNewer { old, new });
        }
        Ok(Self {
            old,
            new,
            old_suffix,
            new_suffix,
        })
    }

    /// The released version.
    #[must_use]
    pub(crate) fn old(&self) -> K8sVersion {
        self.old
    }

    /// The version to release.
    #[must_use]
    pub(crate) fn new_version(&self) -> K8sVersion {
        self.new
    }

    /// The old release's suffix, when the captain named one.
    #[must_use]
    pub(crate) fn old_suffix(&self) -> Option<Suffix> {
        self.old_suffix
    }

    /// The new fork tag.
    #[must_use]
    pub(crate) fn new_fork_tag(&self) -> ForkTag {
        self.new.fork_tag(self.new_suffix)
    }
}

/// What the repositories say, for [`derive`].
#[derive(Clone, Debug, Default)]
pub(crate) struct RepoFacts {
    /// Tag names in the upstream repository.
    pub(crate) upstream: Vec<String>,
    /// Tag names in the fork.
    pub(crate) fork: Vec<String>,
    /// Tag names in the k3s repository (for RC numbering).
    pub(crate) k3s: Vec<String>,
}

/// Every name of one patch release. Stored by what determines it; every other name is derived
/// by a method, so no two spellings can disagree. In a lockfile it is written out whole (each
/// name as text) and read back only when every written name equals the derived one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "NamesRecord", try_from = "NamesRecord")]
pub(crate) struct ReleaseNames {
    old_fork_tag: ForkTag,
    new_fork_tag: ForkTag,
    go_version: GoVersion,
    rc_number: u32,
}

impl ReleaseNames {
    /// The names of a release from `old_fork_tag` to `new_fork_tag` with the Go of
    /// `.go-version` and RC number `rc_number` next.
    #[must_use]
    pub(crate) fn new(
        old_fork_tag: ForkTag,
        new_fork_tag: ForkTag,
        go_version: GoVersion,
        rc_number: u32,
    ) -> Self {
        Self {
            old_fork_tag,
            new_fork_tag,
            go_version,
            rc_number,
        }
    }

    /// `v1.28.1`.
    #[must_use]
    pub(crate) fn old_k8s(&self) -> K8sVersion {
        self.old_fork_tag.k8s
    }

    /// `v1.28.2`.
    #[must_use]
    pub(crate) fn new_k8s(&self) -> K8sVersion {
        self.new_fork_tag.k8s
    }

    /// `v0.28.1`.
    #[must_use]
    pub(crate) fn old_client(&self) -> ClientVersion {
        self.old_k8s().client()
    }

    /// `v0.28.2`.
    #[must_use]
    pub(crate) fn new_client(&self) -> ClientVersion {
        self.new_k8s().client()
    }

    /// `v1.28.1-k3s1`: the highest existing suffix unless one was given.
    #[must_use]
    pub(crate) fn old_fork_tag(&self) -> ForkTag {
        self.old_fork_tag
    }

    /// `v1.28.2-k3s1`.
    #[must_use]
    pub(crate) fn new_fork_tag(&self) -> ForkTag {
        self.new_fork_tag
    }

    /// `release-1.28`.
    #[must_use]
    pub(crate) fn release_branch(&self) -> String {
        self.new_k8s().release_branch()
    }

    /// `.go-version` at the new upstream tag.
    #[must_use]
    pub(crate) fn go_version(&self) -> &GoVersion {
        &self.go_version
    }

    /// The next RC: `v1.28.2-rc1+k3s1` (n = highest existing + 1).
    #[must_use]
    pub(crate) fn rc(&self) -> K3sVersion {
        self.new_fork_tag.rc(self.rc_number)
    }

    /// The GA name: `v1.28.2+k3s1`.
    #[must_use]
    pub(crate) fn ga(&self) -> K3sVersion {
        self.new_fork_tag.ga()
    }

    /// Every name with its label, in the order a captain reads them.
    #[must_use]
    pub(crate) fn table(&self) -> Vec<(&'static str, String)> {
        let record = NamesRecord::from(self.clone());
        vec![
            ("old k8s", record.old_k8s),
            ("new k8s", record.new_k8s),
            ("old client", record.old_client),
            ("new client", record.new_client),
            ("old fork tag", record.old_fork_tag),
            ("new fork tag", record.new_fork_tag),
            ("release branch", record.release_branch),
            ("go version", record.go_version),
            ("next rc", record.rc),
            ("ga", record.ga),
            ("rc image tag", record.rc_image_tag),
            ("ga image tag", record.ga_image_tag),
        ]
    }
}

/// [`ReleaseNames`] as text, the shape lockfiles and `kiln versions --json` hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesRecord {
    old_k8s: String,
    new_k8s: String,
    old_client: String,
    new_client: String,
    old_fork_tag: String,
    new_fork_tag: String,
    release_branch: String,
    go_version: String,
    rc: String,
    ga: String,
    rc_image_tag: String,
    ga_image_tag: String,
}

impl From<ReleaseNames> for NamesRecord {
    fn from(names: ReleaseNames) -> Self {
        Self {
            old_k8s: names.old_k8s().to_string(),
            new_k8s: names.new_k8s().to_string(),
            old_client: names.old_client().to_string(),
            new_client: names.new_client().to_string(),
            old_fork_tag: names.old_fork_tag.to_string(),
            new_fork_tag: names.new_fork_tag.to_string(),
            release_branch: names.release_branch(),
            go_version: names.go_version.to_string(),
            rc: names.rc().to_string(),
            ga: names.ga().to_string(),
            rc_image_tag: names.rc().image_tag(),
            ga_image_tag: names.ga().image_tag(),
        }
    }
}

impl TryFrom<NamesRecord> for ReleaseNames {
    type Error = NameError;

    fn try_from(record: NamesRecord) -> Result<Self, NameError> {
        let field = |name: &'static str, text: &str, error: NameError| NameError::Field {
            field: name,
            given: text.escape_debug().to_string(),
            reason: error.to_string(),
        };
        let old_fork_tag: ForkTag = record
            .old_fork_tag
            .parse()
            .map_err(|e| field("release.old_fork_tag", &record.old_fork_tag, e))?;
        let new_fork_tag: ForkTag = record
            .new_fork_tag
            .parse()
            .map_err(|e| field("release.new_fork_tag", &record.new_fork_tag, e))?;
        let go_version: GoVersion = record
            .go_version
            .parse()
            .map_err(|e| field("release.go_version", &record.go_version, e))?;
        let rc: K3sVersion = record
            .rc
            .parse()
            .map_err(|e| field("release.rc", &record.rc, e))?;
        let rc_number = rc.rc.ok_or_else(|| NameError::Field {
            field: "release.rc",
            given: record.rc.escape_debug().to_string(),
            reason: "not a release candidate".into(),
        })?;
        let names = Self::new(old_fork_tag, new_fork_tag, go_version, rc_number);
        ReleaseVersions::new(
            names.old_k8s(),
            names.new_k8s(),
            Some(old_fork_tag.suffix),
            new_fork_tag.suffix,
        )?;
        // Every written name must be the derived one: a lockfile cannot carry a name kiln
        // would not have made.
        let derived = NamesRecord::from(names.clone());
        let pairs = [
            ("release.old_k8s", &record.old_k8s, &derived.old_k8s),
            ("release.new_k8s", &record.new_k8s, &derived.new_k8s),
            (
                "release.old_client",
                &record.old_client,
                &derived.old_client,
            ),
            (
                "release.new_client",
                &record.new_client,
                &derived.new_client,
            ),
            (
                "release.release_branch",
                &record.release_branch,
                &derived.release_branch,
            ),
            ("release.rc", &record.rc, &derived.rc),
            ("release.ga", &record.ga, &derived.ga),
            (
                "release.rc_image_tag",
                &record.rc_image_tag,
                &derived.rc_image_tag,
            ),
            (
                "release.ga_image_tag",
                &record.ga_image_tag,
                &derived.ga_image_tag,
            ),
        ];
        for (name, given, want) in pairs {
            if given != want {
                return Err(NameError::Field {
                    field: name,
                    given: given.escape_debug().to_string(),
                    reason: format!("the release's name is `{want}`"),
                });
            }
        }
        Ok(names)
    }
}

/// The highest `-k3sN` suffix of `version` among `tags` (fork tags `vX.Y.Z-k3sN`).
#[must_use]
pub(crate) fn highest_suffix(version: K8sVersion, tags: &[String]) -> Option<Suffix> {
    tags.iter()
        .filter_map(|t| ForkTag::parse(t))
        .filter(|t| t.k8s == version)
        .map(|t| t.suffix)
        .max()
}

/// The next RC number of `tag`'s version among k3s tags `vX.Y.Z-rcN+k3sM`.
#[must_use]
pub(crate) fn next_rc<'a>(tag: ForkTag, names: impl IntoIterator<Item = &'a str>) -> u32 {
    rcs_among(tag, names).last().map_or(1, |(n, _)| n + 1)
}

/// The release candidates of `tag`'s version among `names` (tags, KDM entries), with their
/// numbers, lowest first.
pub(crate) fn rcs_among<'a>(
    tag: ForkTag,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(u32, &'a str)> {
    let mut found: Vec<(u32, &str)> = names
        .into_iter()
        .filter_map(|name| {
            let parsed = K3sVersion::parse(name)?;
            (parsed.fork_tag() == tag)
                .then_some(parsed.rc)?
                .map(|n| (n, name))
        })
        .collect();
    found.sort_unstable();
    found
}

/// Checks `versions` against the repositories (both upstream tags exist, the old fork tag
/// exists) and returns the old fork tag: the one named, else the highest `-k3sN`.
pub(crate) fn old_fork_tag(
    versions: &ReleaseVersions,
    facts: &RepoFacts,
) -> Result<ForkTag, NameError> {
    for version in [versions.old, versions.new] {
        if !facts.upstream.iter().any(|t| *t == version.to_string()) {
            return Err(NameError::MissingUpstreamTag { tag: version });
        }
    }
    let found = || fork_tags_of(versions.old, &facts.fork);
    let suffix = match versions.old_suffix {
        Some(suffix) => {
            let tag = versions.old.fork_tag(suffix);
            if !facts.fork.contains(&tag.to_string()) {
                return Err(NameError::MissingForkTag {
                    tag: tag.to_string(),
                    found: found(),
                });
            }
            suffix
        }
        None => {
            highest_suffix(versions.old, &facts.fork).ok_or_else(|| NameError::MissingForkTag {
                tag: format!("{}-k3sN", versions.old),
                found: found(),
            })?
        }
    };
    Ok(versions.old.fork_tag(suffix))
}

/// Derives every name (DESIGN.md §1): [`old_fork_tag`]'s checks, the Go version of the new
/// upstream tag, and the next RC number from k3s's tags.
pub(crate) fn derive(
    versions: &ReleaseVersions,
    facts: &RepoFacts,
    go_version: GoVersion,
) -> Result<ReleaseNames, NameError> {
    let old = old_fork_tag(versions, facts)?;
    let new = versions.new_fork_tag();
    let rc = next_rc(new, facts.k3s.iter().map(String::as_str));
    Ok(ReleaseNames::new(old, new, go_version, rc))
}

fn fork_tags_of(version: K8sVersion, tags: &[String]) -> String {
    let found: Vec<&str> = tags
        .iter()
        .filter(|t| ForkTag::parse(t).is_some_and(|t| t.k8s == version))
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
            upstream: vec!["v1.28.1".into(), "v1.28.2".into(), "v1.28.10".into()],
            fork: vec![
                "v1.28.1-k3s1".into(),
                "v1.28.1-k3s2".into(),
                "staging/src/k8s.io/api/v1.28.1-k3s2".into(),
            ],
            k3s: vec![
                "v1.28.2-rc1+k3s1".into(),
                "v1.28.2-rc2+k3s1".into(),
                "v1.28.2-rc9+k3s2".into(),
            ],
        }
    }

    fn versions(
        old: &str,
        new: &str,
        old_suffix: Option<&str>,
        new_suffix: &str,
    ) -> Result<ReleaseVersions, NameError> {
        ReleaseVersions::new(
            old.parse()?,
            new.parse()?,
            old_suffix.map(str::parse).transpose()?,
            new_suffix.parse()?,
        )
    }

    fn go() -> GoVersion {
        "1.23.5".parse().unwrap()
    }

    fn derived(old: &str, new: &str) -> Result<ReleaseNames, NameError> {
        derive(&versions(old, new, None, "k3s1")?, &facts(), go())
    }

    #[test]
    fn derives_every_name() {
        let names = derived("v1.28.1", "v1.28.2").unwrap();
        let table: Vec<(&str, String)> = names.table();
        let want = [
            ("old k8s", "v1.28.1"),
            ("new k8s", "v1.28.2"),
            ("old client", "v0.28.1"),
            ("new client", "v0.28.2"),
            ("old fork tag", "v1.28.1-k3s2"),
            ("new fork tag", "v1.28.2-k3s1"),
            ("release branch", "release-1.28"),
            ("go version", "1.23.5"),
            ("next rc", "v1.28.2-rc3+k3s1"),
            ("ga", "v1.28.2+k3s1"),
            ("rc image tag", "v1.28.2-rc3-k3s1"),
            ("ga image tag", "v1.28.2-k3s1"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        assert_eq!(table, want, "the highest suffix wins; rc = highest + 1");
        let pinned = derive(
            &versions("v1.28.1", "v1.28.2", Some("k3s1"), "k3s2").unwrap(),
            &facts(),
            go(),
        )
        .unwrap();
        assert_eq!(pinned.old_fork_tag().to_string(), "v1.28.1-k3s1");
        assert_eq!(pinned.new_fork_tag().to_string(), "v1.28.2-k3s2");
        assert_eq!(pinned.rc().to_string(), "v1.28.2-rc10+k3s2");
    }

    #[test]
    fn double_digit_patches_compare_numerically() {
        let facts = RepoFacts {
            fork: vec!["v1.28.2-k3s1".into()],
            ..facts()
        };
        let names = derive(
            &versions("v1.28.2", "v1.28.10", Some("k3s1"), "k3s1").unwrap(),
            &facts,
            go(),
        )
        .unwrap();
        assert_eq!(names.new_client().to_string(), "v0.28.10");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let err = |old: &str, new: &str| derived(old, new).unwrap_err();
        assert!(matches!(
            err("1.28.1", "v1.28.2"),
            NameError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28", "v1.28.2"),
            NameError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28.01", "v1.28.2"),
            NameError::NotSemver { .. }
        ));
        assert!(matches!(
            err("v1.28.1", "v1.29.0"),
            NameError::DifferentMinors { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.1"),
            NameError::NotNewer { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.2"),
            NameError::NotNewer { .. }
        ));
        assert!(matches!(
            err("v1.28.1", "v1.28.3"),
            NameError::MissingUpstreamTag { .. }
        ));
        assert!(matches!(
            err("v1.28.2", "v1.28.10"),
            NameError::MissingForkTag { .. }
        ));
        assert!(matches!(
            versions("v1.28.1", "v1.28.2", Some("k3s0"), "k3s1"),
            Err(NameError::BadSuffix { .. })
        ));
        let missing = derive(
            &versions("v1.28.1", "v1.28.2", Some("k3s7"), "k3s1").unwrap(),
            &facts(),
            go(),
        )
        .unwrap_err();
        assert!(missing.to_string().contains("v1.28.1-k3s7"), "{missing}");
    }

    #[test]
    fn written_names_round_trip_and_must_be_the_derived_ones() {
        let names = derived("v1.28.1", "v1.28.2").unwrap();
        let value = serde_json::to_value(&names).unwrap();
        assert_eq!(value["rc_image_tag"], "v1.28.2-rc3-k3s1");
        let back: ReleaseNames = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, names);
        for (field, text) in [
            ("ga", "v1.28.3+k3s1"),
            ("old_client", "v0.28.9"),
            ("release_branch", "main"),
            ("old_fork_tag", "--upload-pack=x"),
            ("new_k8s", "v1.28.2;x"),
        ] {
            let mut edited = value.clone();
            edited[field] = text.into();
            let error = serde_json::from_value::<ReleaseNames>(edited).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("release.{field}: `{text}`")),
                "{error}"
            );
        }
    }
}
