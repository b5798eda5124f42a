//! Where a repository is: a URL kept as given, or a local path made absolute once, where it is
//! parsed. git resolves a relative local path from the top of whatever work tree encloses its
//! cwd, not from the cwd, so no relative path ever reaches it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::GitError;

/// A repository location checked and fixed at parse time: never starts with `-`, carries no
/// control character, and is a URL (`scheme://…`, or scp-like `host:path`) or an absolute path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Location(String);

impl Location {
    /// Parses a location given on the command line: a relative path is taken from the cwd.
    pub(crate) fn parse(text: &str) -> Result<Self, GitError> {
        let cwd = std::env::current_dir().map_err(|source| GitError::Cwd { source })?;
        Self::parse_in(text, &cwd)
    }

    /// Parses a location written in a file in `base` (kiln.toml): a relative path is taken
    /// from `base`, which must be absolute.
    pub(crate) fn parse_in(text: &str, base: &Path) -> Result<Self, GitError> {
        if text.is_empty() || text.starts_with('-') || text.chars().any(char::is_control) {
            return Err(GitError::BadLocation {
                location: text.escape_debug().to_string(),
            });
        }
        if is_url(text) {
            if has_credentials(text) {
                return Err(GitError::Credentials {
                    location: redact(text),
                });
            }
            return Ok(Self(text.to_owned()));
        }
        let path = Path::new(text);
        let absolute = if path.is_absolute() {
            path.to_owned()
        } else {
            debug_assert!(
                base.is_absolute(),
                "locations are resolved from absolute bases"
            );
            base.join(path)
        };
        Ok(Self(normalize(&absolute).to_string_lossy().into_owned()))
    }

    /// The location as git takes it.
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The local path, when this is not a URL.
    #[must_use]
    pub(crate) fn local_path(&self) -> Option<&Path> {
        (!is_url(&self.0)).then(|| Path::new(&self.0))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// git's own rule: `scheme://…` is a URL; `host:path` is scp-like ssh when a `:` comes before
/// any `/`; everything else is a local path.
fn is_url(text: &str) -> bool {
    if text.contains("://") {
        return true;
    }
    match (text.find(':'), text.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `user:password@` in a `scheme://` URL: kiln never carries a secret in a location (it would
/// be echoed in errors and logs); the user's credential helper supplies it.
fn has_credentials(text: &str) -> bool {
    let Some((_, rest)) = text.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn redact(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

/// Removes `.` components and folds `dir/..` lexically (the path need not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_absolute_and_urls_stay() {
        let base = Path::new("/work/demo");
        let at = |t: &str| Location::parse_in(t, base).map(|l| l.as_str().to_owned());
        assert_eq!(
            at("published-fork.git").unwrap(),
            "/work/demo/published-fork.git"
        );
        assert_eq!(at("./a/../b.git").unwrap(), "/work/demo/b.git");
        assert_eq!(at("../up.git").unwrap(), "/work/up.git");
        assert_eq!(at("/srv/x.git").unwrap(), "/srv/x.git");
        for url in [
            "https://github.com/k3s-io/kubernetes.git",
            "ssh://git@github.com/k3s-io/k3s.git",
            "git@github.com:k3s-io/k3s.git",
            "file:///srv/x.git",
        ] {
            assert_eq!(at(url).unwrap(), url);
        }
        assert!(
            Location::parse_in("./dir:with-colon", base)
                .unwrap()
                .local_path()
                .is_some()
        );
        assert!(
            Location::parse_in("host:repo", base)
                .unwrap()
                .local_path()
                .is_none()
        );
    }

    #[test]
    fn option_like_control_and_credential_locations_are_refused() {
        let base = Path::new("/w");
        for bad in ["", "-x", "--upload-pack=evil", "a\nb", "a\u{1b}b"] {
            assert!(
                matches!(
                    Location::parse_in(bad, base),
                    Err(GitError::BadLocation { .. })
                ),
                "{bad:?}"
            );
        }
        let err = Location::parse_in("https://bob:s3cret@example.com/r.git", base).unwrap_err();
        assert!(matches!(err, GitError::Credentials { .. }));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        // A user name alone is no secret (ssh).
        assert!(Location::parse_in("ssh://git@example.com/r.git", base).is_ok());
    }
}
