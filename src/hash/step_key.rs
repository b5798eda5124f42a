use std::fmt;
use std::str::FromStr;

use super::{Digest, DigestParseError};

/// The identity of a step: the digest of its [`Derivation`](super::Derivation). Two steps
/// with the same key are the same computation and MUST produce the same outputs.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct StepKey(Digest);

impl StepKey {
    /// Wraps a digest computed by [`Derivation::key`](super::Derivation::key).
    #[must_use]
    pub(crate) const fn from_digest(digest: Digest) -> Self {
        Self(digest)
    }

    /// The underlying digest.
    #[must_use]
    pub(crate) const fn digest(&self) -> &Digest {
        &self.0
    }

    /// Lowercase hex without prefix (file names in the store).
    #[must_use]
    pub fn hex(&self) -> String {
        self.0.hex()
    }

    /// The first 12 hex characters.
    #[must_use]
    pub(crate) fn short(&self) -> String {
        self.0.short()
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepKey({})", self.0)
    }
}

impl FromStr for StepKey {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}
