//! Trees: directories stored as one blob, a canonical tar.
//!
//! Canonical means the same directory content always gives the same bytes: entries in byte
//! order of their paths, directories before their contents, uid/gid 0 with empty names,
//! mtime 0, mode 0755 for directories and executables, 0644 for other files, symlinks kept
//! as links. Nothing else (hard links, devices, fifos, sockets) may appear.
//!
//! Unpacking accepts only what packing produces: relative paths without `..`, regular files,
//! directories, and symlinks whose target stays inside the tree; and at most a given number of
//! bytes in all, so a hostile archive cannot fill the disk.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use super::StoreError;

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
            check_link(&rel_path, &target).map_err(|reason| StoreError::BadTree {
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

/// A link at `at` (relative to the tree root) pointing to `target` must stay in the tree.
fn check_link(at: &Path, target: &Path) -> Result<(), String> {
    if target.is_absolute() {
        return Err(format!(
            "symlink {} points to the absolute path {}",
            at.display(),
            target.display()
        ));
    }
    let mut depth: usize = at.parent().map_or(0, |p| p.components().count());
    for component in target.components() {
        let escaped = match component {
            Component::ParentDir => depth.checked_sub(1).map(|d| depth = d).is_none(),
            Component::Normal(_) => {
                depth += 1;
                false
            }
            Component::CurDir => false,
            Component::RootDir | Component::Prefix(_) => return Err("absolute link".into()),
        };
        if escaped {
            return Err(format!(
                "symlink {} escapes the tree ({})",
                at.display(),
                target.display()
            ));
        }
    }
    Ok(())
}

/// A relative, `..`-free path inside the tree.
fn safe_path(path: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(format!("path {} leaves the tree", path.display())),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(clean)
}

/// Unpacks a canonical tar from `input` into `dest` (which must exist and be empty), writing
/// at most `max_bytes` of file content. `what` names the tree in errors.
pub(crate) fn unpack_tree(
    input: impl Read,
    dest: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadTree {
        what: what.to_owned(),
        reason,
    };
    let mut archive = tar::Archive::new(input);
    let mut written: u64 = 0;
    for entry in archive
        .entries()
        .map_err(|e| StoreError::io("read the tree for", dest, e))?
    {
        let mut entry = entry.map_err(|e| bad(format!("malformed archive: {e}")))?;
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
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| bad(format!("bad size: {e}")))?;
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
                check_link(&rel, &target).map_err(bad)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| StoreError::io("create the link", &path, e))?;
            }
            other => {
                return Err(bad(format!(
                    "{} is a {other:?}; only files, directories and symlinks are allowed",
                    rel.display()
                )));
            }
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
}
