//! The version-shaped names of a release, each a type: parsed once where it enters kiln
//! (a flag, a lockfile, a repository's tags) and spelled only by its `Display`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::NameError;

/// A Kubernetes version `vMAJOR.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct K8sVersion {
    /// Major.
    pub(crate) major: u32,
    /// Minor.
    pub(crate) minor: u32,
    /// Patch.
    pub(crate) patch: u32,
}

/// A decimal number of at most `max_digits` digits, without sign or leading zero.
fn number(text: &str, max_digits: usize) -> Option<u32> {
    let plain = !text.is_empty()
        && text.len() <= max_digits
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

impl FromStr for K8sVersion {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| NameError::NotSemver {
            given: s.escape_debug().to_string(),
        })
    }
}

impl fmt::Display for K8sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl K8sVersion {
    /// The version `s` spells, without allocating: a fork's thousands of tags are mostly
    /// not versions, and only a name a user gave needs the error's escaped text.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix('v')?.split('.');
        let version = Self {
            major: number(parts.next()?, 4)?,
            minor: number(parts.next()?, 4)?,
            patch: number(parts.next()?, 4)?,
        };
        parts.next().is_none().then_some(version)
    }

    /// The version of the staging modules (client-go and friends): `v1.28.2` → `v0.28.2`.
    #[must_use]
    pub(crate) fn client(self) -> ClientVersion {
        ClientVersion(self)
    }

    /// k3s's release branch of the minor: `release-1.28`.
    #[must_use]
    pub(crate) fn release_branch(self) -> String {
        format!("release-{}.{}", self.major, self.minor)
    }

    /// Whether both are patch releases of one minor.
    #[must_use]
    pub(crate) fn same_minor(self, other: Self) -> bool {
        (self.major, self.minor) == (other.major, other.minor)
    }

    /// The fork tag of this version with `suffix`.
    #[must_use]
    pub(crate) fn fork_tag(self, suffix: Suffix) -> ForkTag {
        ForkTag { k8s: self, suffix }
    }
}

/// The version of Kubernetes' staging modules: `v0.MINOR.PATCH` for `v1.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClientVersion(K8sVersion);

impl fmt::Display for ClientVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k8s = self.0;
        write!(f, "v{}.{}.{}", k8s.major - 1, k8s.minor, k8s.patch)
    }
}

/// A k3s suffix `k3sN` (N ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Suffix(pub(crate) u32);

impl FromStr for Suffix {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| NameError::BadSuffix {
            given: s.escape_debug().to_string(),
        })
    }
}

impl Suffix {
    /// The suffix `s` spells, without allocating.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("k3s")
            .and_then(|n| number(n, 3))
            .filter(|n| *n > 0)
            .map(Self)
    }
}

impl fmt::Display for Suffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k3s{}", self.0)
    }
}

impl Default for Suffix {
    /// `k3s1`, the suffix of a first release of a version.
    fn default() -> Self {
        Self(1)
    }
}

/// A tag of the k3s-io fork of Kubernetes: `v1.28.2-k3s1` (its staging modules are tagged
/// `staging/src/k8s.io/<module>/v1.28.2-k3s1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ForkTag {
    /// The Kubernetes version.
    pub(crate) k8s: K8sVersion,
    /// The suffix.
    pub(crate) suffix: Suffix,
}

impl FromStr for ForkTag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| NameError::NotForkTag {
            given: s.escape_debug().to_string(),
        })
    }
}

impl fmt::Display for ForkTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.k8s, self.suffix)
    }
}

impl ForkTag {
    /// The tag `s` spells, without allocating: most of a fork's tags are module tags.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (k8s, suffix) = s.split_once('-')?;
        Some(Self {
            k8s: K8sVersion::parse(k8s)?,
            suffix: Suffix::parse(suffix)?,
        })
    }

    /// The k3s GA version released from this tag: `v1.28.2+k3s1`.
    #[must_use]
    pub(crate) fn ga(self) -> K3sVersion {
        K3sVersion {
            k8s: self.k8s,
            rc: None,
            suffix: self.suffix,
        }
    }

    /// The k3s release candidate `n` of this tag: `v1.28.2-rc1+k3s1`.
    #[must_use]
    pub(crate) fn rc(self, n: u32) -> K3sVersion {
        K3sVersion {
            rc: Some(n),
            ..self.ga()
        }
    }

    /// Whether `tag` is this tag or one of its module tags (`…/v1.28.2-k3s1`).
    #[must_use]
    pub(crate) fn names(self, tag: &str) -> bool {
        let own = self.to_string();
        tag == own
            || tag
                .strip_suffix(own.as_str())
                .is_some_and(|prefix| prefix.ends_with('/'))
    }
}

/// A k3s release name: `vX.Y.Z+k3sN` (GA) or `vX.Y.Z-rcM+k3sN` (a release candidate), as
/// k3s tags and KDM entries spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct K3sVersion {
    /// The Kubernetes version.
    pub(crate) k8s: K8sVersion,
    /// The release candidate number, `None` for GA.
    pub(crate) rc: Option<u32>,
    /// The k3s suffix.
    pub(crate) suffix: Suffix,
}

impl FromStr for K3sVersion {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s).ok_or_else(|| NameError::NotK3sVersion {
            given: s.escape_debug().to_string(),
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
    /// The release name `s` spells, without allocating: k3s's tags are read by the thousand.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (left, suffix) = s.split_once('+')?;
        let suffix = Suffix::parse(suffix)?;
        let (k8s, rc) = match left.split_once("-rc") {
            Some((k8s, n)) => (k8s, Some(number(n, 3).filter(|n| *n > 0)?)),
            None => (left, None),
        };
        Some(Self {
            k8s: K8sVersion::parse(k8s)?,
            rc,
            suffix,
        })
    }

    /// RCs before their GA; a later suffix after every RC and GA of an earlier one.
    fn rank(self) -> (K8sVersion, Suffix, u32) {
        (self.k8s, self.suffix, self.rc.unwrap_or(u32::MAX))
    }

    /// The GA version of this one.
    #[must_use]
    pub(crate) fn ga(self) -> Self {
        Self { rc: None, ..self }
    }

    /// The fork tag this k3s version is built from.
    #[must_use]
    pub(crate) fn fork_tag(self) -> ForkTag {
        self.k8s.fork_tag(self.suffix)
    }

    /// The image tag: `+` is not allowed in OCI tags, so `v1.28.2-rc1+k3s1` → `v1.28.2-rc1-k3s1`.
    #[must_use]
    pub(crate) fn image_tag(self) -> String {
        self.to_string().replace('+', "-")
    }

    /// `(major, minor)`.
    #[must_use]
    pub(crate) fn minor(self) -> (u32, u32) {
        (self.k8s.major, self.k8s.minor)
    }
}

/// A Go version as `.go-version` holds it (`1.22.12`, `1.23.0`, `1.24rc1`): a digit first,
/// then letters, digits and dots, at most 32 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GoVersion(String);

impl FromStr for GoVersion {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::NotGoVersion {
                given: s.escape_debug().to_string(),
            })
        }
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl GoVersion {
    /// The version text.
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serializes a name by its `Display` and deserializes it by its `FromStr`.
macro_rules! serde_as_text {
    ($($name:ty),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_text!(K8sVersion, Suffix, ForkTag, K3sVersion, GoVersion);

impl serde::Serialize for ClientVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_and_prints_back() {
        for text in ["v1.28.2", "v1.28.10", "v0.0.0"] {
            assert_eq!(text.parse::<K8sVersion>().unwrap().to_string(), text);
        }
        for text in ["v1.28.2-k3s1", "v1.28.10-k3s12"] {
            assert_eq!(text.parse::<ForkTag>().unwrap().to_string(), text);
        }
        for text in ["v1.28.2+k3s1", "v1.28.2-rc10+k3s2"] {
            assert_eq!(text.parse::<K3sVersion>().unwrap().to_string(), text);
        }
        let tag: ForkTag = "v1.28.2-k3s1".parse().unwrap();
        assert_eq!(tag.rc(3).to_string(), "v1.28.2-rc3+k3s1");
        assert_eq!(tag.rc(3).image_tag(), "v1.28.2-rc3-k3s1");
        assert_eq!(tag.ga().image_tag(), "v1.28.2-k3s1");
        assert_eq!(tag.k8s.client().to_string(), "v0.28.2");
        assert_eq!(tag.k8s.release_branch(), "release-1.28");
        assert!(tag.names("v1.28.2-k3s1"));
        assert!(tag.names("staging/src/k8s.io/api/v1.28.2-k3s1"));
        assert!(!tag.names("v1.28.2-k3s10"));
        assert!(!tag.names("xv1.28.2-k3s1"));
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "1.28.1",
            "v1.28",
            "v1.28.01",
            "v1.28.1.1",
            "v1.+1.2",
            "v1.28.1 ",
        ] {
            assert!(bad.parse::<K8sVersion>().is_err(), "{bad}");
        }
        for bad in ["k3s0", "k3s", "k3s01", "k3s1000", "rke1", "k3s-1"] {
            assert!(bad.parse::<Suffix>().is_err(), "{bad}");
        }
        for bad in ["v1.28.2", "v1.28.2-k3s0", "v1.28.2+k3s1", "--upload-pack=x"] {
            assert!(bad.parse::<ForkTag>().is_err(), "{bad}");
        }
        for bad in [
            "v1.28.2",
            "v1.28.2-rc0+k3s1",
            "v1.28.2-rc+k3s1",
            "v1.28.2+k3s",
        ] {
            assert!(bad.parse::<K3sVersion>().is_err(), "{bad}");
        }
        for bad in ["", "go1.22", "1.22; rm", "1.22-x"] {
            assert!(bad.parse::<GoVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn k3s_versions_order_rcs_before_their_ga() {
        let mut versions: Vec<K3sVersion> = [
            "v1.28.2+k3s2",
            "v1.28.2+k3s1",
            "v1.28.2-rc2+k3s1",
            "v1.28.2-rc10+k3s1",
            "v1.28.10-rc1+k3s1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        versions.sort();
        let sorted: Vec<String> = versions.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "v1.28.2-rc2+k3s1",
                "v1.28.2-rc10+k3s1",
                "v1.28.2+k3s1",
                "v1.28.2+k3s2",
                "v1.28.10-rc1+k3s1"
            ]
        );
    }
}
