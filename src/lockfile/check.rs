//! What a parsed lockfile must hold before anything acts on it. Every string that could reach
//! git's argv, a path on disk or a remote is checked here; the reason names the field.

use std::collections::BTreeSet;

use super::Lockfile;
use crate::git::validate_rev;
use crate::gomod::ProxyModule;

/// Checks every value of `lock`; the error names the field and what is wrong with it.
pub(super) fn check(lock: &Lockfile) -> Result<(), String> {
    // The release's names are typed: parsing them checked each, and that each written name
    // is the one kiln derives.
    let r = &lock.release;
    let fork_tag = r.new_fork_tag();
    for (tag, commit) in &lock.tags {
        ref_name("tags", tag)?;
        commit_id(&format!("tags.{tag}"), commit)?;
        // A release's tags are the new fork tag and its module tags, nothing else: a lockfile
        // can never make push touch an unrelated tag.
        if !fork_tag.names(tag) {
            return Err(format!(
                "tags: `{tag}` is not a tag of the release {fork_tag}"
            ));
        }
    }
    for url in lock.downloads.keys() {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && !url.contains("..")
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!(
                "downloads: `{}` is not a URL kiln pins",
                url.escape_debug()
            ));
        }
    }
    for (clone, commit) in &lock.clones {
        let (url, reference) = clone.split_once('#').unwrap_or(("", ""));
        let ok = ["https://", "http://", "git://", "ssh://"]
            .iter()
            .any(|s| url.starts_with(s))
            && !reference.is_empty()
            && !clone.contains("..")
            && !clone.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!(
                "clones: `{}` is not a repository URL#ref kiln pins",
                clone.escape_debug()
            ));
        }
        commit_id(&format!("clones.{clone}"), commit)?;
    }
    for (tag, object) in &lock.tag_objects {
        if !lock.tags.contains_key(tag) {
            return Err(format!(
                "tag_objects: `{tag}` is not one of the release's tags"
            ));
        }
        commit_id(&format!("tag_objects.{tag}"), object)?;
    }
    if !lock.tags.contains_key(&fork_tag.to_string()) {
        return Err(format!("tags: the release's own tag {fork_tag} is missing"));
    }
    ref_name("k3s.branch", &lock.k3s.branch)?;
    if !lock.inputs.k3s_branch.is_empty() {
        ref_name("inputs.k3s_branch", &lock.inputs.k3s_branch)?;
    }
    if lock.k3s.branch != fork_tag.to_string() {
        return Err(format!(
            "k3s.branch: `{}` is not the release's branch {fork_tag}",
            lock.k3s.branch
        ));
    }
    commit_id("k3s.commit", &lock.k3s.commit)?;

    let i = &lock.inputs;
    for (field, commit) in [
        ("inputs.old_k8s_commit", &i.old_k8s_commit),
        ("inputs.new_k8s_commit", &i.new_k8s_commit),
        ("inputs.old_fork_commit", &i.old_fork_commit),
        (
            "inputs.k3s_release_branch_commit",
            &i.k3s_release_branch_commit,
        ),
    ] {
        commit_id(field, commit)?;
    }
    for commit in &i.patches {
        commit_id("inputs.patches", commit)?;
    }
    for (tag, go) in &i.go_versions {
        ref_name("inputs.go_versions", tag)?;
        go_version(&format!("inputs.go_versions.{tag}"), go)?;
    }
    if !i.go_versions.contains_key(&r.old_k8s().to_string()) {
        return Err(format!(
            "inputs.go_versions: no Go version for the old tag {}",
            r.old_k8s()
        ));
    }
    go_version("inputs.toolchain.go", &i.toolchain.go)?;
    // `go version go1.22.10 linux/amd64`: the toolchain's own Go on an os/arch.
    let platform = i
        .toolchain
        .go_version
        .strip_prefix(&format!("go version go{} ", i.toolchain.go));
    if !platform.is_some_and(|p| {
        p.split_once('/').is_some_and(|(os, arch)| {
            [os, arch].iter().all(|w| {
                !w.is_empty()
                    && w.len() <= 16
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
        })
    }) {
        return Err(format!(
            "inputs.toolchain.go_version: expected `go version go{} OS/ARCH`",
            i.toolchain.go
        ));
    }
    person("inputs.identity.name", &i.identity.name)?;
    person("inputs.identity.email", &i.identity.email)?;
    if i.source_date_epoch < 0 {
        return Err("inputs.source_date_epoch: negative".into());
    }
    for (path, tags) in &i.extra_modules {
        module_path("inputs.extra_modules", path)?;
        for (tag, commit) in tags {
            ref_name(&format!("inputs.extra_modules.{path}"), tag)?;
            commit_id(&format!("inputs.extra_modules.{path}.{tag}"), commit)?;
        }
    }

    modules("modules", &lock.modules, false)?;
    // A third-party module whose go.mod alone was needed has no zip sum.
    modules("third_party", &lock.third_party, true)?;
    for path in lock.fetched.keys() {
        relative_path("fetched", path)?;
    }

    for (name, step) in &lock.steps {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("steps: `{name}` is not a step name"));
        }
        for output in step.outputs.keys() {
            relative_path(
                &format!("steps.{name}.outputs"),
                output.strip_suffix('/').unwrap_or(output),
            )?;
        }
    }
    for path in lock.artifacts.keys() {
        relative_path("artifacts", path)?;
    }
    Ok(())
}

fn ref_name(field: &str, name: &str) -> Result<(), String> {
    validate_rev(name).map_err(|_| {
        format!(
            "{field}: `{}` is not an acceptable ref name",
            name.escape_debug()
        )
    })
}

fn commit_id(field: &str, commit: &str) -> Result<(), String> {
    if commit.len() == 40
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{field}: `{}` is not a commit id (40 lowercase hex digits)",
            commit.escape_debug()
        ))
    }
}

fn go_version(field: &str, version: &str) -> Result<(), String> {
    version
        .parse::<crate::names::GoVersion>()
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// A git identity part: printable, no `<` `>` (git's delimiters), not empty.
fn person(field: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty()
        || text.len() > 200
        || text.chars().any(|c| c.is_control() || c == '<' || c == '>')
    {
        return Err(format!(
            "{field}: `{}` is not usable in a git identity",
            text.escape_debug()
        ));
    }
    Ok(())
}

/// `h1:` followed by the base64 of a SHA-256 (44 characters).
fn h1(field: &str, sum: &str) -> Result<(), String> {
    let ok = sum.strip_prefix("h1:").is_some_and(|b64| {
        b64.len() == 44
            && b64.ends_with('=')
            && b64[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: `{}` is not an h1: sum",
            sum.escape_debug()
        ))
    }
}

/// A module list (`field`): paths, versions and sums well formed, each module@version once;
/// `zip_optional` lets a module have no zip sum.
fn modules(field: &str, list: &[ProxyModule], zip_optional: bool) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for m in list {
        module_path(&format!("{field}.module"), &m.module)?;
        ref_name(&format!("{field}.{}.version", m.module), &m.version)?;
        if !(zip_optional && m.h1.is_empty()) {
            h1(&format!("{field}.{}@{}.h1", m.module, m.version), &m.h1)?;
        }
        h1(
            &format!("{field}.{}@{}.go_mod_h1", m.module, m.version),
            &m.go_mod_h1,
        )?;
        if !seen.insert((&m.module, &m.version)) {
            return Err(format!(
                "{field}: {}@{} is listed twice",
                m.module, m.version
            ));
        }
    }
    Ok(())
}

/// A Go module path: a relative slash path of `[A-Za-z0-9._~-]` elements.
fn module_path(field: &str, path: &str) -> Result<(), String> {
    if crate::names::is_module_path(path) {
        Ok(())
    } else {
        Err(format!(
            "{field}: `{}` is not a module path",
            path.escape_debug()
        ))
    }
}

/// A relative path that stays below where it is joined: not empty, not absolute, no empty,
/// `.` or `..` elements, no element starting with `-`, printable ASCII without `\`.
fn relative_path(field: &str, path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.len() <= 1024
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with('-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: `{}` is not a safe relative path",
            path.escape_debug()
        ))
    }
}

/// A JSON document read only to refuse an object with a key twice: serde's maps keep the last
/// value silently, so `{"tags": {"v1": A, "v1": B}}` would parse as B while a reviewer of the
/// diff saw A.
pub(super) struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = Self;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(Self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Self>()?.is_some() {}
        Ok(Self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    key.escape_debug()
                )));
            }
            map.next_value::<Self>()?;
        }
        Ok(Self)
    }
}
