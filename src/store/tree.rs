//! Trees: directories stored as one blob, a canonical tar.
//!
//! Canonical means the same directory content always gives the same bytes: entries in byte
//! order of their paths, directories before their contents, uid/gid 0 with empty names,
//! mtime 0, mode 0755 for directories and executables, 0644 for other files, symlinks kept
//! as links. Nothing else (hard links, devices, fifos, sockets) may appear.
//!
//! Unpacking accepts only what packing produces: relative paths without `..`, regular files,
//! directories, and symlinks whose target stays inside the tree; and at most a given number of
//! bytes and entries in all, so a hostile archive cannot fill the disk.
//!
//! A link "stays inside" when resolving its target *against the tree* never leaves the root:
//! `..` from the root escapes, and a component that is itself a link is followed (its target
//! spliced in, at most [`MAX_LINK_HOPS`] times), so a chain such as `a/b -> ..` plus
//! `c -> a/b/../..` is refused even though each target looks harmless as text. Links whose
//! target does not exist (yet) are judged by the rest of the path, lexically.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use super::StoreError;

/// How many links one resolution may follow before the tree counts as looping (Linux's
/// `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// The most entries one tree may hold (Kubernetes' tree with vendor/ has about 30 000 files;
/// a bomb of empty entries is stopped here).
const MAX_TREE_ENTRIES: u64 = 2_000_000;

/// Every regular file of a stored tree (its canonical tar read from `tar`): path → SHA-256.
pub(crate) fn tree_manifest(
    tar: impl Read,
) -> Result<std::collections::BTreeMap<String, crate::hash::Digest>, std::io::Error> {
    let mut archive = tar::Archive::new(tar);
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(path, crate::hash::Digest::of(&bytes));
    }
    Ok(files)
}

/// Writes the canonical tar of `dir` to `out`.
pub(crate) fn pack_tree(dir: &Path, out: impl Write) -> Result<(), StoreError> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    pack_dir(&mut builder, dir, Path::new(""))?;
    builder
        .into_inner()
        .map_err(|e| StoreError::io("finish the tree of", dir, e))?;
    Ok(())
}

fn pack_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<(), StoreError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| StoreError::io("list", &dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::io("list", &dir, e))?;
    entries.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in entries {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io("inspect", &path, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let file_type = meta.file_type();
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &rel_path, std::io::empty())
                .map_err(|e| StoreError::io("pack", &path, e))?;
            pack_dir(builder, root, &rel_path)?;
        } else if file_type.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if meta.permissions().mode() & 0o111 == 0 {
                0o644
            } else {
                0o755
            });
            header.set_size(meta.len());
            let file = fs::File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            builder
                .append_data(&mut header, &rel_path, file)
                .map_err(|e| StoreError::io("pack", &path, e))?;
        } else if file_type.is_symlink() {
            let target =
                fs::read_link(&path).map_err(|e| StoreError::io("read the link", &path, e))?;
            check_link(root, &rel_path, &target).map_err(|reason| StoreError::BadTree {
                what: path.display().to_string(),
                reason,
            })?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &rel_path, &target)
                .map_err(|e| StoreError::io("pack", &path, e))?;
        } else {
            return Err(StoreError::BadTree {
                what: path.display().to_string(),
                reason: "only files, directories and symlinks can be stored".into(),
            });
        }
    }
    Ok(())
}

/// Checks that the link at `at` (relative to `root`) pointing to `target` resolves inside the
/// tree, following links it passes through as the kernel would (see the module docs).
fn check_link(root: &Path, at: &Path, target: &Path) -> Result<(), String> {
    let escapes = || {
        format!(
            "symlink {} escapes the tree ({})",
            at.display(),
            target.display()
        )
    };
    if target.is_absolute() {
        return Err(format!(
            "symlink {} points to the absolute path {}",
            at.display(),
            target.display()
        ));
    }
    // Where resolution stands (components below the root), and what is left to walk.
    let mut current: Vec<std::ffi::OsString> = at
        .parent()
        .map(|p| p.iter().map(ToOwned::to_owned).collect())
        .unwrap_or_default();
    let mut pending: Vec<std::ffi::OsString> = target.iter().rev().map(ToOwned::to_owned).collect();
    let mut hops = 0;
    // Once a component does not exist, the rest is judged lexically.
    let mut dangling = false;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                if current.pop().is_none() {
                    return Err(escapes());
                }
            }
            Some(Component::RootDir | Component::Prefix(_)) => return Err(escapes()),
            Some(Component::Normal(name)) => {
                let candidate: PathBuf = current.iter().chain([&part]).collect();
                let meta = if dangling {
                    None
                } else {
                    fs::symlink_metadata(root.join(&candidate)).ok()
                };
                match meta {
                    Some(meta) if meta.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Err(format!(
                                "symlink {} loops (more than {MAX_LINK_HOPS} links)",
                                at.display()
                            ));
                        }
                        let next = fs::read_link(root.join(&candidate)).map_err(|e| {
                            format!("cannot read the link {}: {e}", candidate.display())
                        })?;
                        if next.is_absolute() {
                            return Err(escapes());
                        }
                        pending.extend(next.iter().rev().map(ToOwned::to_owned));
                    }
                    Some(_) => current.push(name.to_owned()),
                    None => {
                        dangling = true;
                        current.push(name.to_owned());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Longest name of one path component Linux file systems take.
const MAX_NAME: usize = 255;
/// Longest path (`PATH_MAX` less its NUL).
const MAX_PATH: usize = 4095;

/// A relative, `..`-free path inside the tree, whose names a file system can hold: no NUL
/// (a PAX `path` record can carry one), no name over 255 bytes, at most 4095 bytes in all.
fn safe_path(path: &Path) -> Result<PathBuf, String> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let shown = || {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        let more = if bytes.len() > 80 { "…" } else { "" };
        format!("`{}{more}`", text.escape_debug())
    };
    if bytes.contains(&0) {
        return Err(format!("entry {} has a NUL byte in its name", shown()));
    }
    if bytes.len() > MAX_PATH {
        return Err(format!(
            "entry {} has a path of {} bytes (at most {MAX_PATH})",
            shown(),
            bytes.len()
        ));
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) if part.len() > MAX_NAME => {
                return Err(format!(
                    "entry {} has a name of {} bytes (at most {MAX_NAME})",
                    shown(),
                    part.len()
                ));
            }
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(format!("entry {} leaves the tree", shown())),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(clean)
}

/// A reader that counts what it read.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpacks a canonical tar from `input` into `dest` (which must exist and be empty), writing
/// at most `max_bytes` of file content. `what` names the tree in errors.
pub(crate) fn unpack_tree(
    input: impl Read,
    dest: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<(), StoreError> {
    unpack_tree_limited(input, dest, max_bytes, MAX_TREE_ENTRIES, what)
}

/// [`unpack_tree`] of an archive known to be `archive_len` bytes long (a stored blob, whose
/// size the record naming it states and a download is held to). A tar is not compressed: it
/// holds at most `archive_len` bytes of content and one entry per 512-byte header, so those are
/// its limits — an entry that claims more (a PAX `size` record, say) is refused before anything
/// of it is written, however far below the fixed limits the claim is.
pub(crate) fn unpack_tree_sized(
    input: impl Read,
    archive_len: u64,
    dest: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<(), StoreError> {
    unpack_tree_limited(
        input,
        dest,
        max_bytes.min(archive_len),
        MAX_TREE_ENTRIES.min(archive_len / 512),
        what,
    )
}

/// [`unpack_tree`] with at most `max_entries` entries.
fn unpack_tree_limited(
    input: impl Read,
    dest: &Path,
    max_bytes: u64,
    max_entries: u64,
    what: &str,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadTree {
        what: what.to_owned(),
        reason,
    };
    let mut archive = tar::Archive::new(Counted {
        inner: input,
        bytes: 0,
    });
    let mut written: u64 = 0;
    let mut count: u64 = 0;
    let mut links = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| StoreError::io("read the tree for", dest, e))?
    {
        let mut entry = entry.map_err(|e| bad(format!("malformed archive: {e}")))?;
        count += 1;
        if count > max_entries {
            return Err(bad(format!("it holds more than {max_entries} entries")));
        }
        let raw_path = entry
            .path()
            .map_err(|e| bad(format!("bad path: {e}")))?
            .into_owned();
        let rel = safe_path(&raw_path).map_err(bad)?;
        let path = dest.join(&rel);
        // Parents must be real directories created by this unpack, never symlinks.
        if let Some(parent) = rel.parent() {
            let mut at = dest.to_path_buf();
            for part in parent.components() {
                at.push(part);
                match fs::symlink_metadata(&at) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(bad(format!("{} is not a directory", at.display()))),
                    Err(_) => fs::create_dir(&at).map_err(|e| StoreError::io("create", &at, e))?,
                }
            }
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(bad(format!("{} appears twice", rel.display()))),
                Err(_) => fs::create_dir(&path).map_err(|e| StoreError::io("create", &path, e))?,
            },
            tar::EntryType::Regular => {
                // The entry's size, PAX `size` record included (its ustar header may say 0:
                // reading that would restore other bytes than GNU tar does).
                let size = entry.size();
                written = written.saturating_add(size);
                if written > max_bytes {
                    return Err(bad(format!("it unpacks to more than {max_bytes} bytes")));
                }
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|e| bad(format!("bad mode: {e}")))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("create", &path, e))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| StoreError::io("write", &path, e))?;
                if copied != size {
                    return Err(bad(format!("{} is truncated", rel.display())));
                }
                let mode = if mode & 0o111 == 0 { 0o644 } else { 0o755 };
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| StoreError::io("set the mode of", &path, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("bad link: {e}")))?
                    .ok_or_else(|| bad("symlink without a target".into()))?
                    .into_owned();
                if target.is_absolute() {
                    return Err(bad(format!(
                        "symlink {} points to the absolute path {}",
                        rel.display(),
                        target.display()
                    )));
                }
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| StoreError::io("create the link", &path, e))?;
                links.push((rel, target));
            }
            other => {
                return Err(bad(format!(
                    "{} is a {other:?}; only files, directories and symlinks are allowed",
                    rel.display()
                )));
            }
        }
    }
    // No bytes at all is no archive (kiln's own, even of an empty tree, end with two zero
    // blocks); GNU tar refuses it too.
    if archive.into_inner().bytes == 0 {
        return Err(bad("it is empty, not an archive".into()));
    }
    // Links are judged once the whole tree is there: a link may point at (or through) one
    // that comes later in the archive.
    for (rel, target) in &links {
        if let Err(reason) = check_link(dest, rel, target) {
            // No escaping link is left behind for a later reader to follow.
            for (rel, _) in &links {
                let _ = fs::remove_file(dest.join(rel));
            }
            return Err(bad(reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("b/c")).unwrap();
        fs::write(dir.join("a.txt"), b"a").unwrap();
        fs::write(dir.join("b/c/run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("b/c/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("c/run.sh", dir.join("b/link")).unwrap();
    }

    fn pack(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        pack_tree(dir, &mut out).unwrap();
        out
    }

    #[test]
    fn same_content_gives_the_same_bytes_and_round_trips() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        sample(one.path());
        sample(two.path());
        // Different times and modes that do not matter.
        fs::set_permissions(two.path().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(two.path().join("a.txt"), b"a").unwrap();
        assert_eq!(pack(one.path()), pack(two.path()));

        let out = tempfile::tempdir().unwrap();
        unpack_tree(&pack(one.path())[..], out.path(), 1 << 20, "t").unwrap();
        assert_eq!(pack(out.path()), pack(one.path()));
        assert_eq!(
            fs::read_link(out.path().join("b/link")).unwrap(),
            Path::new("c/run.sh")
        );
        let mode = fs::metadata(out.path().join("b/c/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn links_are_resolved_against_the_tree_not_their_text() {
        use std::os::unix::fs::symlink;
        // Each target looks harmless alone; together they climb two levels above the root.
        let chain = tempfile::tempdir().unwrap();
        let root = chain.path().join("root");
        fs::create_dir_all(root.join("a")).unwrap();
        symlink("..", root.join("a/b")).unwrap();
        symlink("a/b/../..", root.join("c")).unwrap();
        let packed = pack_tree(&root, Vec::new());
        assert!(
            matches!(&packed, Err(StoreError::BadTree { reason, .. }) if reason.contains("escapes")),
            "{packed:?}"
        );
        // A loop is refused instead of recursing.
        let looped = tempfile::tempdir().unwrap();
        symlink("l2", looped.path().join("l1")).unwrap();
        symlink("l1/x", looped.path().join("l2")).unwrap();
        let packed = pack_tree(looped.path(), Vec::new());
        assert!(
            matches!(&packed, Err(StoreError::BadTree { reason, .. }) if reason.contains("loops")),
            "{packed:?}"
        );
        // Links that stay inside, through other links or dangling, are kept.
        let fine = tempfile::tempdir().unwrap();
        fs::create_dir_all(fine.path().join("a/b")).unwrap();
        symlink("..", fine.path().join("a/b/up")).unwrap();
        symlink("a/b/up/b", fine.path().join("same")).unwrap();
        symlink(".", fine.path().join("here")).unwrap();
        symlink("not/yet/there", fine.path().join("dangling")).unwrap();
        let bytes = pack(fine.path());
        let out = tempfile::tempdir().unwrap();
        unpack_tree(&bytes[..], out.path(), 1 << 20, "t").unwrap();
        assert_eq!(pack(out.path()), bytes);
    }

    #[test]
    fn a_link_chain_in_an_archive_is_refused_and_removed() {
        // The same chain delivered as an archive (in an order where each link is created
        // before the one it passes through).
        let tar = raw_tar(&[
            ("a", tar::EntryType::Directory, b"", None),
            ("c", tar::EntryType::Symlink, b"", Some("a/b/../..")),
            ("a/b", tar::EntryType::Symlink, b"", Some("..")),
        ]);
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let result = unpack_tree(&tar[..], &dest, 1024, "chain");
        assert!(
            matches!(&result, Err(StoreError::BadTree { reason, .. }) if reason.contains("escapes")),
            "{result:?}"
        );
        assert!(
            fs::symlink_metadata(dest.join("c")).is_err(),
            "the link was left"
        );
        assert!(
            fs::symlink_metadata(dest.join("a/b")).is_err(),
            "the link was left"
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        let tar = raw_tar(&[
            ("a", tar::EntryType::Regular, b"", None),
            ("b", tar::EntryType::Regular, b"", None),
            ("c", tar::EntryType::Regular, b"", None),
        ]);
        let dest = tempfile::tempdir().unwrap();
        let refused = unpack_tree_limited(&tar[..], dest.path(), 1024, 2, "many");
        assert!(
            matches!(&refused, Err(StoreError::BadTree { reason, .. }) if reason.contains("more than 2 entries")),
            "{refused:?}"
        );
        let dest = tempfile::tempdir().unwrap();
        unpack_tree_limited(&tar[..], dest.path(), 1024, 3, "many").unwrap();
    }

    #[test]
    fn escaping_links_are_refused_when_packing() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", dir.path().join("evil")).unwrap();
        assert!(matches!(
            pack_tree(dir.path(), Vec::new()),
            Err(StoreError::BadTree { .. })
        ));
    }

    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            // set_path refuses `..`; write the raw name to build hostile archives.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn hostile_archives_are_refused_without_writing_outside() {
        let cases: Vec<Vec<u8>> = vec![
            // No bytes at all (GNU tar refuses it too; found by the archive fuzz target).
            Vec::new(),
            raw_tar(&[("../escape", tar::EntryType::Regular, b"x", None)]),
            raw_tar(&[("/abs", tar::EntryType::Regular, b"x", None)]),
            raw_tar(&[("l", tar::EntryType::Symlink, b"", Some("../../x"))]),
            raw_tar(&[("l", tar::EntryType::Symlink, b"", Some("/etc"))]),
            raw_tar(&[("h", tar::EntryType::Link, b"", Some("/etc/passwd"))]),
            raw_tar(&[("dev", tar::EntryType::Char, b"", None)]),
            raw_tar(&[("big", tar::EntryType::Regular, &[0u8; 4096], None)]),
            // A symlinked directory followed by a file through it.
            raw_tar(&[
                ("d", tar::EntryType::Symlink, b"", Some(".")),
                ("d/f", tar::EntryType::Regular, b"x", None),
            ]),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let parent = tempfile::tempdir().unwrap();
            let dest = parent.path().join("dest");
            fs::create_dir(&dest).unwrap();
            let result = unpack_tree(&tar[..], &dest, 1024, "hostile");
            assert!(
                matches!(result, Err(StoreError::BadTree { .. })),
                "case {i}: {result:?}"
            );
            let outside: Vec<_> = fs::read_dir(parent.path()).unwrap().collect();
            assert_eq!(outside.len(), 1, "case {i} wrote outside dest");
        }
    }

    /// A tar whose entries carry PAX `path` records (any bytes, any length).
    fn pax_tar(entries: &[(&[u8], tar::EntryType, u32, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in entries {
            builder.append_pax_extensions([("path", *path)]).unwrap();
            let mut header = tar::Header::new_ustar();
            header.set_path("placeholder").unwrap();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn odd_names_are_refused_naming_the_entry() {
        let long_name = "n".repeat(300);
        let long_path = format!("{}/f", vec!["d".repeat(200); 30].join("/"));
        let cases: [(Vec<u8>, &str); 5] = [
            (
                pax_tar(&[(b"a\0b", tar::EntryType::Regular, 0o644, b"x")]),
                "NUL byte",
            ),
            (
                pax_tar(&[(long_name.as_bytes(), tar::EntryType::Regular, 0o644, b"x")]),
                "a name of 300 bytes",
            ),
            (
                pax_tar(&[(long_path.as_bytes(), tar::EntryType::Regular, 0o644, b"x")]),
                "bytes (at most 4095)",
            ),
            (
                raw_tar(&[("../escape", tar::EntryType::Regular, b"x", None)]),
                "`../escape` leaves the tree",
            ),
            (
                raw_tar(&[("pipe", tar::EntryType::Fifo, b"", None)]),
                "pipe is a Fifo",
            ),
        ];
        for (tar, said) in cases {
            let parent = tempfile::tempdir().unwrap();
            let dest = parent.path().join("dest");
            fs::create_dir(&dest).unwrap();
            match unpack_tree(&tar[..], &dest, 1 << 20, "odd") {
                Err(StoreError::BadTree { reason, .. }) => {
                    assert!(reason.contains(said), "{said}: {reason}");
                }
                other => panic!("{said}: {other:?}"),
            }
            assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1, "{said}");
            assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "{said}");
        }
    }

    #[test]
    fn setuid_setgid_and_world_writable_modes_are_not_restored() {
        let tar = pax_tar(&[
            (b"suid", tar::EntryType::Regular, 0o4755, b"x"),
            (b"sgid", tar::EntryType::Regular, 0o2644, b"x"),
            (b"open", tar::EntryType::Regular, 0o777, b"x"),
            (b"sticky", tar::EntryType::Regular, 0o1666, b"x"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack_tree(&tar[..], dest.path(), 1 << 20, "modes").unwrap();
        for (name, want) in [
            ("suid", 0o755),
            ("sgid", 0o644),
            ("open", 0o755),
            ("sticky", 0o644),
        ] {
            let mode = fs::metadata(dest.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, want, "{name}: {mode:o}");
        }
    }

    /// The PAX/GNU header desync of CVE-2025-62518 ("TARmageddon"): a PAX `size` record says
    /// the entry holds 1536 bytes while its ustar header says 0, and those bytes start with
    /// a header of a smuggled entry. A parser that ignores the PAX size sees `smuggled.txt`;
    /// GNU tar does not. kiln must list what GNU tar lists.
    #[test]
    fn a_pax_size_desync_unpacks_as_gnu_tar_lists_it() {
        use std::io::Write as _;
        let mut smuggled = tar::Header::new_ustar();
        smuggled.set_path("smuggled.txt").unwrap();
        smuggled.set_size(512);
        smuggled.set_mode(0o644);
        smuggled.set_entry_type(tar::EntryType::Regular);
        smuggled.set_cksum();
        let mut body = smuggled.as_bytes().to_vec();
        body.extend_from_slice(&[b's'; 512]);
        body.extend_from_slice(&[0; 512]);
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("size", b"1536".as_slice())])
            .unwrap();
        let mut outer = tar::Header::new_ustar();
        outer.set_path("outer.txt").unwrap();
        outer.set_size(0);
        outer.set_mode(0o644);
        outer.set_entry_type(tar::EntryType::Regular);
        outer.set_cksum();
        builder.get_mut().write_all(outer.as_bytes()).unwrap();
        builder.get_mut().write_all(&body).unwrap();
        let archive = builder.into_inner().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("desync.tar");
        fs::write(&file, &archive).unwrap();
        let listed = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(listed.status.success());
        let gnu: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(gnu, ["outer.txt"], "GNU tar honours the PAX size");

        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        match unpack_tree(&archive[..], &dest, 1 << 20, "desync") {
            Ok(()) => {
                let ours: Vec<String> = fs::read_dir(&dest)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                assert_eq!(ours, gnu, "kiln saw other entries than GNU tar");
                assert_eq!(fs::metadata(dest.join("outer.txt")).unwrap().len(), 1536);
            }
            Err(StoreError::BadTree { .. }) => {
                assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    /// The two-archive plant (GNU tar CVE-2025-45582): the first archive leaves a link, the
    /// second writes through it. kiln removes a refused archive's links, and never writes
    /// through a link an earlier archive left, so the victim outside is never touched.
    #[test]
    fn a_link_planted_by_one_archive_is_never_written_through_by_the_next() {
        let parent = tempfile::tempdir().unwrap();
        let victim = parent.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let dest = parent.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let through = raw_tar(&[("d/planted", tar::EntryType::Regular, b"x", None)]);

        // An escaping link: refused, and removed with the archive.
        let escaping = raw_tar(&[("d", tar::EntryType::Symlink, b"", Some("../victim"))]);
        assert!(unpack_tree(&escaping[..], &dest, 1024, "first").is_err());
        assert!(
            fs::symlink_metadata(dest.join("d")).is_err(),
            "the link stayed"
        );
        // The second archive then makes a real directory of its own.
        unpack_tree(&through[..], &dest, 1024, "second").unwrap();
        assert!(fs::symlink_metadata(dest.join("d")).unwrap().is_dir());

        // A link that stays inside is kept; a later archive still never writes through it.
        let dest = parent.path().join("dest2");
        fs::create_dir_all(dest.join("sub")).unwrap();
        let inside = raw_tar(&[("d", tar::EntryType::Symlink, b"", Some("sub"))]);
        unpack_tree(&inside[..], &dest, 1024, "first").unwrap();
        match unpack_tree(&through[..], &dest, 1024, "second") {
            Err(StoreError::BadTree { reason, .. }) => {
                assert!(reason.contains("is not a directory"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fs::read_dir(&victim).unwrap().count(),
            0,
            "the victim was written"
        );
        assert_eq!(fs::read_dir(dest.join("sub")).unwrap().count(), 0);
    }
}
