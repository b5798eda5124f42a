//! The committed lock of a bootstrapped base: `images/base/<name>.lock`.
//!
//! ```text
//! # comment lines and blank lines are ignored
//! name bookworm-go1.23
//! rootfs sha256:<hex>            # SHA-256 of the rootfs tar
//! package <name> <version>       # one per installed package, sorted by name
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::hash::Digest;

use super::ImageError;

/// What a base image was when its lock was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseLock {
    /// The base's name (`bookworm-go1.23`).
    pub(crate) name: String,
    /// SHA-256 of its rootfs tar.
    pub(crate) rootfs: Digest,
    /// Installed packages: name → version.
    pub(crate) packages: BTreeMap<String, String>,
}

impl BaseLock {
    /// Parses a lock file; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, ImageError> {
        let bad = |line: usize, reason: &str| ImageError::BadLock {
            origin: origin.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let mut name = None;
        let mut rootfs = None;
        let mut packages = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["name", value] => name = Some((*value).to_owned()),
                ["rootfs", value] => {
                    rootfs = Some(
                        value
                            .parse()
                            .map_err(|_| bad(line_no, "rootfs is not a digest"))?,
                    );
                }
                ["package", pkg, version] => {
                    if packages
                        .insert((*pkg).to_owned(), (*version).to_owned())
                        .is_some()
                    {
                        return Err(bad(line_no, "package listed twice"));
                    }
                }
                _ => return Err(bad(line_no, "expected `name`, `rootfs` or `package` line")),
            }
        }
        Ok(Self {
            name: name.ok_or_else(|| bad(0, "missing `name` line"))?,
            rootfs: rootfs.ok_or_else(|| bad(0, "missing `rootfs` line"))?,
            packages,
        })
    }

    /// The canonical text of the lock.
    #[must_use]
    pub(crate) fn render(&self, refresh_hint: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# kiln base image lock: what `{refresh_hint}` produced."
        );
        let _ = writeln!(
            out,
            "# Written by kiln; refresh with `{refresh_hint} --update-lock`."
        );
        let _ = writeln!(out, "name {}", self.name);
        let _ = writeln!(out, "rootfs {}", self.rootfs);
        for (pkg, version) in &self.packages {
            let _ = writeln!(out, "package {pkg} {version}");
        }
        out
    }

    /// How `actual` differs from this lock.
    #[must_use]
    pub(crate) fn diff(
        &self,
        actual_rootfs: &Digest,
        actual: &BTreeMap<String, String>,
    ) -> LockDiff {
        let mut diff = LockDiff::default();
        for (pkg, version) in actual {
            match self.packages.get(pkg) {
                None => diff.added.push((pkg.clone(), version.clone())),
                Some(locked) if locked != version => {
                    diff.changed
                        .push((pkg.clone(), locked.clone(), version.clone()));
                }
                Some(_) => {}
            }
        }
        for (pkg, version) in &self.packages {
            if !actual.contains_key(pkg) {
                diff.removed.push((pkg.clone(), version.clone()));
            }
        }
        if &self.rootfs != actual_rootfs {
            diff.rootfs = Some((self.rootfs, *actual_rootfs));
        }
        diff
    }
}

/// The difference between a lock and a bootstrapped base.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LockDiff {
    /// Packages installed now but not in the lock: (name, version).
    pub(crate) added: Vec<(String, String)>,
    /// Packages in the lock but not installed now: (name, version).
    pub(crate) removed: Vec<(String, String)>,
    /// Packages whose version moved: (name, locked, now).
    pub(crate) changed: Vec<(String, String, String)>,
    /// The rootfs digest, when it differs: (locked, now).
    pub(crate) rootfs: Option<(Digest, Digest)>,
}

impl LockDiff {
    /// True when the base is exactly what the lock says.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.rootfs.is_none()
    }

    /// True when only the rootfs digest differs: the same packages gave other bytes.
    #[must_use]
    pub(crate) fn is_rootfs_only(&self) -> bool {
        self.rootfs.is_some()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
    }
}

impl fmt::Display for LockDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (pkg, old, new) in &self.changed {
            writeln!(f, "  changed {pkg}: {old} -> {new}")?;
        }
        for (pkg, version) in &self.added {
            writeln!(f, "  added   {pkg} {version}")?;
        }
        for (pkg, version) in &self.removed {
            writeln!(f, "  removed {pkg} {version}")?;
        }
        if let Some((old, new)) = &self.rootfs {
            writeln!(f, "  rootfs  {old} -> {new}")?;
            if self.is_rootfs_only() {
                writeln!(
                    f,
                    "  (same packages, different bytes: the bootstrap was not reproducible here; \
                     compare mmdebstrap versions)"
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> BaseLock {
        BaseLock {
            name: "bookworm-go1.23".into(),
            rootfs: Digest::of(b"a"),
            packages: BTreeMap::from([
                ("bash".into(), "5.2".into()),
                ("git".into(), "1:2.39.5-0+deb12u2".into()),
                ("tar".into(), "1.34".into()),
            ]),
        }
    }

    #[test]
    fn render_and_parse_round_trip() {
        let text = lock().render("kiln image bootstrap --go 1.23");
        assert_eq!(BaseLock::parse(&text, "t").unwrap(), lock());
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = BaseLock::parse("name x\nrootfs nope\n", "images/base/x.lock").unwrap_err();
        assert!(
            matches!(err, ImageError::BadLock { line: 2, .. }),
            "{err:?}"
        );
        let err = BaseLock::parse("name x\n", "f").unwrap_err();
        assert!(
            matches!(err, ImageError::BadLock { line: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn diff_explains_every_kind_of_difference() {
        let mut now = lock().packages;
        now.insert("bash".into(), "5.3".into());
        now.remove("tar");
        now.insert("make".into(), "4.3".into());
        let diff = lock().diff(&Digest::of(b"b"), &now);
        assert_eq!(
            diff.changed,
            vec![("bash".into(), "5.2".into(), "5.3".into())]
        );
        assert_eq!(diff.added, vec![("make".into(), "4.3".into())]);
        assert_eq!(diff.removed, vec![("tar".into(), "1.34".into())]);
        assert!(!diff.is_rootfs_only());
        let text = diff.to_string();
        assert!(text.contains("changed bash: 5.2 -> 5.3"), "{text}");
        assert!(lock().diff(&Digest::of(b"a"), &lock().packages).is_empty());
        assert!(
            lock()
                .diff(&Digest::of(b"b"), &lock().packages)
                .is_rootfs_only()
        );
    }
}
