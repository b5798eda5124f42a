//! A mirror's refs read from its `packed-refs` file, when that file holds all of them.
//!
//! A cached release asks each mirror for its refs to compare them with the remote's listing.
//! `git for-each-ref` checks that every ref's object exists, one lookup in the pack index
//! per ref: for the fork's ten thousand tags that costs more than the rest of a cached release
//! together. The comparison needs only the names and ids, which `packed-refs` holds as text
//! (`OID SP NAME` lines, `^OID` peeled lines, a `#` header; gitrepository-layout(5)). Kiln
//! packs a mirror's refs after each fetch, so this is the common case; anything else (a loose
//! ref, a reftable repository, a line this reader does not know) returns `None`, and the
//! caller asks git.

use std::path::Path;

use super::{Listed, RefList};

/// Every ref of the bare repository `repo`, from `packed-refs` alone; `None` when a ref may
/// live elsewhere or the file is not as git writes it.
#[cfg(test)]
pub(super) fn packed_only(repo: &Path) -> Option<RefList> {
    parse(&packed_text(repo)?)
}

/// Whether the bare repository `repo` holds exactly the refs `listed` under its prefixes, and
/// no ref but branches and tags (see [`Listed::held_by`]), read from `packed-refs` alone
/// without building a second list (in name order, as git sorts the file); `None` when that
/// file cannot tell (a loose ref, a reftable repository, a line git would not write).
pub(super) fn holds_exactly(repo: &Path, listed: &Listed) -> Option<bool> {
    let text = packed_text(repo)?;
    let sorted = text.is_empty()
        || text
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("# pack-refs with:") && h.contains(" sorted"));
    if !sorted {
        // Not said to be in name order (an old git's file): compare as a list.
        return parse(&text).map(|held| listed.held_by(&held));
    }
    let mut wanted = listed.refs.iter();
    for entry in ref_lines(&text) {
        let (name, oid) = entry?;
        if !super::mirrored(name) {
            return Some(false);
        }
        if !listed.covers(name) {
            continue;
        }
        match wanted.next() {
            Some((n, o)) if n == name && o == oid => {}
            _ => return Some(false),
        }
    }
    Some(wanted.next().is_none())
}

/// The text of `repo`'s `packed-refs` when it holds every ref (empty when there is none and
/// no loose ref either); `None` when a ref may live elsewhere.
fn packed_text(repo: &Path) -> Option<String> {
    if !no_loose_refs(&repo.join("refs")) {
        return None;
    }
    match std::fs::read_to_string(repo.join("packed-refs")) {
        Ok(text) => Some(text),
        // No loose refs and no packed ones: a repository without refs.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(String::new()),
        Err(_) => None,
    }
}

/// Whether the directory tree under `refs` holds directories only (a reftable repository
/// keeps a file `refs/heads` there, so it is not taken for one without refs).
fn no_loose_refs(refs: &Path) -> bool {
    let mut dirs = vec![refs.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        for entry in entries {
            let Ok(entry) = entry else {
                return false;
            };
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => dirs.push(entry.path()),
                _ => return false,
            }
        }
    }
    true
}

/// Whether every pack and pack index in `dir` (a repository's `objects/pack`) has at least
/// its header and fan-out table and begins as git writes them (gitformat-pack(5)): what a
/// power cut leaves of a file git never synced is empty or cut short. Cheap (a few bytes of
/// each); the objects themselves are git's to check.
pub(super) fn packs_look_whole(dir: &Path) -> bool {
    use std::io::Read as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        // No pack directory: nothing packed to be damaged.
        return !dir.exists();
    };
    for entry in entries {
        let Ok(entry) = entry else {
            return false;
        };
        let path = entry.path();
        let (magic, least): (&[u8], u64) = match path.extension().and_then(|e| e.to_str()) {
            // Header (12) and trailing checksum (20).
            Some("pack") => (b"PACK", 32),
            // Magic, version, the 256-entry fan-out table and two checksums.
            Some("idx") => (b"\xfftOc", 8 + 256 * 4 + 40),
            _ => continue,
        };
        let mut head = [0_u8; 4];
        let whole = entry.metadata().is_ok_and(|m| m.len() >= least)
            && std::fs::File::open(&path).is_ok_and(|mut f| f.read_exact(&mut head).is_ok())
            && head == magic;
        if !whole {
            return false;
        }
    }
    true
}

/// The refs of a `packed-refs` text; `None` on any line git would not write.
fn parse(text: &str) -> Option<RefList> {
    ref_lines(text)
        .map(|entry| entry.map(|(name, oid)| (name.to_owned(), oid.to_owned())))
        .collect()
}

/// Each ref line of a `packed-refs` text as (name, id), in file order; `None` for a line git
/// would not write. The header and the peeled lines (`^ID`, after an annotated tag) are
/// checked and skipped.
fn ref_lines(text: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            if let Some(peeled) = line.strip_prefix('^') {
                return (!is_oid(peeled)).then_some(None);
            }
            Some(
                line.split_once(' ')
                    .filter(|(oid, name)| {
                        is_oid(oid) && name.starts_with("refs/") && !name.contains([' ', '\t'])
                    })
                    .map(|(oid, name)| (name, oid)),
            )
        })
}

/// A full object id, SHA-1 or SHA-256, in lowercase hex.
pub(super) fn is_oid(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::local_refs;
    use crate::git::tests::test_git;

    /// Packed, the refs read from the file are git's own; a loose ref, a missing `refs/`
    /// or a line git would not write leaves it to git.
    #[test]
    fn packed_refs_read_as_git_lists_them_and_anything_else_is_left_to_git() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        test_git(&work, &["init", "--quiet", "-b", "main"]);
        test_git(&work, &["commit", "--quiet", "--allow-empty", "-m", "one"]);
        test_git(&work, &["tag", "-a", "-m", "annotated", "v1.28.2"]);
        test_git(&work, &["tag", "v1.28.2-k3s1"]);
        test_git(&work, &["branch", "release-1.28"]);
        let bare = dir.path().join("bare.git");
        let status = std::process::Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(&work)
            .arg(&bare)
            .status()
            .unwrap();
        assert!(status.success());
        test_git(&bare, &["pack-refs", "--all"]);
        let packed = packed_only(&bare).expect("all refs are packed");
        assert_eq!(packed, local_refs(&bare).unwrap());
        assert_eq!(packed.len(), 4, "{packed:?}");
        let every = |refs: &RefList| Listed {
            prefixes: crate::git::ALL_REFS.map(str::to_owned).to_vec(),
            refs: refs.clone(),
        };
        assert_eq!(holds_exactly(&bare, &every(&packed)), Some(true));
        for change in [
            |refs: &mut RefList| drop(refs.pop_first()),
            |refs: &mut RefList| drop(refs.pop_last()),
            |refs: &mut RefList| drop(refs.insert("refs/tags/zz".into(), "a".repeat(40))),
            |refs: &mut RefList| drop(refs.insert("refs/heads/a".into(), "a".repeat(40))),
            |refs: &mut RefList| *refs.values_mut().next().unwrap() = "b".repeat(40),
        ] {
            let mut other = packed.clone();
            change(&mut other);
            assert_eq!(
                holds_exactly(&bare, &every(&other)),
                Some(false),
                "{other:?}"
            );
        }
        // Under prefixes, only the refs there are compared: the branches are not.
        let tags = Listed {
            prefixes: vec!["refs/tags/v1.28.2".into()],
            refs: packed.clone(),
        };
        let tags = Listed {
            refs: tags.within(&packed),
            ..tags
        };
        assert_eq!(tags.refs.len(), 2, "{tags:?}");
        assert_eq!(holds_exactly(&bare, &tags), Some(true));
        let mut moved = tags.clone();
        *moved.refs.values_mut().last().unwrap() = "b".repeat(40);
        assert_eq!(holds_exactly(&bare, &moved), Some(false));
        let mut fewer = tags.clone();
        fewer.refs.pop_first();
        assert_eq!(holds_exactly(&bare, &fewer), Some(false));
        let mut outside = tags.clone();
        outside.prefixes = vec!["refs/tags/v1.28.3".into()];
        assert_eq!(holds_exactly(&bare, &outside), Some(false));
        outside.refs.clear();
        assert_eq!(holds_exactly(&bare, &outside), Some(true));
        // A ref no mirror keeps, wherever the prefixes point, is a difference.
        test_git(
            &bare,
            &["update-ref", "refs/pull/1/head", "refs/heads/main"],
        );
        test_git(&bare, &["pack-refs", "--all"]);
        assert_eq!(holds_exactly(&bare, &outside), Some(false));
        test_git(&bare, &["update-ref", "-d", "refs/pull/1/head"]);
        assert_eq!(holds_exactly(&bare, &outside), Some(true));
        assert!(
            std::fs::read_to_string(bare.join("packed-refs"))
                .unwrap()
                .contains("\n^"),
            "the annotated tag's peeled line is skipped, not read as a ref"
        );

        // A file not said to be sorted (an old git's) is compared as a list.
        let text = std::fs::read_to_string(bare.join("packed-refs")).unwrap();
        let mut lines: Vec<&str> = text.lines().skip(1).collect();
        lines.reverse();
        std::fs::write(bare.join("packed-refs"), lines.join("\n") + "\n").unwrap();
        assert_eq!(holds_exactly(&bare, &every(&packed)), Some(true));
        assert_eq!(holds_exactly(&bare, &tags), Some(true));
        let mut fewer = packed.clone();
        fewer.pop_first();
        assert_eq!(holds_exactly(&bare, &every(&fewer)), Some(false));
        assert_eq!(holds_exactly(&bare, &moved), Some(false));
        std::fs::write(bare.join("packed-refs"), &text).unwrap();

        // A loose ref (as a fetch writes one): git is asked.
        test_git(
            &bare,
            &["update-ref", "refs/heads/moved", "refs/heads/main"],
        );
        assert_eq!(packed_only(&bare), None);
        assert_eq!(holds_exactly(&bare, &every(&packed)), None);
        test_git(&bare, &["pack-refs", "--all"]);
        assert_eq!(packed_only(&bare).unwrap(), local_refs(&bare).unwrap());

        // What git would not write.
        assert_eq!(parse("0123 refs/heads/main\n"), None);
        assert_eq!(parse(&format!("{} HEAD\n", "a".repeat(40))), None);
        assert_eq!(parse(&format!("^{}\n", "g".repeat(40))), None);
        assert_eq!(parse("").unwrap().len(), 0);

        // Its packs look whole; emptied or cut short, they do not.
        let packs = bare.join("objects/pack");
        test_git(&bare, &["repack", "-a", "-d", "-q"]);
        assert!(packs_look_whole(&packs));
        let pack = std::fs::read_dir(&packs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        let bytes = std::fs::read(&pack).unwrap();
        let index = pack.with_extension("idx");
        let index_bytes = std::fs::read(&index).unwrap();
        for (file, damaged) in [
            (&pack, Vec::new()),
            (&pack, bytes[..20].to_vec()),
            (&pack, [vec![0; 4], bytes[4..].to_vec()].concat()),
            (&index, index_bytes[..100].to_vec()),
        ] {
            let whole = std::fs::read(file).unwrap();
            std::fs::remove_file(file).unwrap();
            std::fs::write(file, &damaged).unwrap();
            assert!(
                !packs_look_whole(&packs),
                "{} as {} bytes",
                file.display(),
                damaged.len()
            );
            std::fs::remove_file(file).unwrap();
            std::fs::write(file, &whole).unwrap();
        }
        assert!(packs_look_whole(&packs));
        assert!(packs_look_whole(&dir.path().join("no-such-dir")));

        // No refs directory at all is not an empty repository.
        std::fs::remove_dir_all(bare.join("refs")).unwrap();
        assert_eq!(packed_only(&bare), None);
    }
}
