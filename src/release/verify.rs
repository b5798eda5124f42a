//! Comparing a rebuilt release with its lockfile, output by output, and locating the first
//! difference between two copies of a file.

use std::collections::BTreeSet;
use std::path::Path;

use crate::lockfile::Lockfile;

/// The steps a `--steps git` verification re-runs: everything but the Go build.
pub const GIT_STEPS: [&str; 5] = ["rebase", "tag", "modules", "k3s-edit", "k3s-tidy"];

/// What a verification rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every step.
    All,
    /// [`GIT_STEPS`]: tags, module sums and the k3s commit, no build.
    Git,
}

impl Scope {
    /// Whether `step` is rebuilt.
    #[must_use]
    pub fn includes(self, step: &str) -> bool {
        self == Self::All || GIT_STEPS.contains(&step)
    }
}

/// One compared output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Compared {
    /// What it is: `tag …`, `module …`, `k3s …`, `artifact …`, `step … output`.
    pub what: String,
    /// The locked value (`-` when the lock has none).
    pub locked: String,
    /// The rebuilt value (`-` when the rebuild has none).
    pub rebuilt: String,
    /// Whether they are equal.
    pub matches: bool,
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
pub fn compare(locked: &Lockfile, rebuilt: &Lockfile, scope: Scope) -> Vec<Compared> {
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
pub fn compare_keys(locked: &Lockfile, rebuilt: &Lockfile, scope: Scope) -> Vec<Compared> {
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
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
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
