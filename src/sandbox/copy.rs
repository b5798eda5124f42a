//! Steps on an engine that does not share this machine's filesystem: each of the step's mounts
//! is an anonymous volume of the container (the image itself stays read-only), filled by one
//! deterministic tar stream (sorted, fixed owners and modes; modification times as on the
//! host, exactly what a bind mount shows — a fixed time would hide same-size edits from git's
//! stat checks), and the writable ones it
//! names come back as the engine's archive, unpacked with the store's checks (no `..`, no
//! absolute paths, no links out, no devices, bounded size) into a fresh directory before
//! anything reaches the step's host directory.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::TryStreamExt as _;

use super::error::CopyError;
use super::{SandboxError, StepSpec};
use crate::store::{MAX_TREE_BYTES, unpack_tree};

fn copy_error<'a>(
    step: &'a StepSpec,
    action: &'static str,
) -> impl Fn(CopyError) -> SandboxError + 'a {
    move |source| SandboxError::Copy {
        step: step.name.clone(),
        action,
        source,
    }
}

/// An I/O failure at `path`.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the tar of `step`'s mount number `index` to `out` (and returns it), its entries
/// relative to the mount's target (`./` is the target itself): a writable mount owned by the
/// step's user, a read-only one by root and not writable by the step.
pub(super) fn pack_mount<W: std::io::Write>(
    step: &StepSpec,
    index: usize,
    out: W,
) -> Result<W, SandboxError> {
    let err = copy_error(step, "pack the step's inputs");
    let mount = &step.mounts[index];
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let (uid, gid) = step.user.map_or((0, 0), |u| (u.uid, u.gid));
    let owner = if mount.read_only { (0, 0) } else { (uid, gid) };
    let top = std::fs::metadata(&mount.source).map_err(|e| err(io_at(&mount.source)(e)))?;
    let mtime = u64::try_from(top.mtime()).unwrap_or(0);
    append_dir(&mut builder, ".", 0o755, owner, mtime).map_err(|e| err(archive_error(e)))?;
    let mut stack = vec![(mount.source.clone(), String::new())];
    while let Some((dir, at)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| err(io_at(&dir)(e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(io_at(&dir)(e)))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(err(CopyError::NotUtf8(path)));
            };
            let inside = if at.is_empty() {
                name.to_owned()
            } else {
                format!("{at}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| err(io_at(&path)(e)))?;
            let mode = mode_for(meta.mode(), mount.read_only);
            let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
            if meta.is_dir() {
                append_dir(&mut builder, &inside, mode, owner, mtime)
                    .map_err(|e| err(archive_error(e)))?;
                stack.push((path, inside));
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| err(io_at(&path)(e)))?;
                let mut header = header(tar::EntryType::Symlink, 0o777, owner, 0, mtime);
                builder
                    .append_link(&mut header, &inside, &target)
                    .map_err(|e| err(archive_error(e)))?;
            } else if meta.is_file() {
                let file = std::fs::File::open(&path).map_err(|e| err(io_at(&path)(e)))?;
                let mut header = header(tar::EntryType::Regular, mode, owner, meta.len(), mtime);
                builder
                    .append_data(&mut header, &inside, file)
                    .map_err(|e| err(archive_error(e)))?;
            } else {
                return Err(err(CopyError::Special(path)));
            }
        }
    }
    builder.into_inner().map_err(|e| err(archive_error(e)))
}

/// Read-only inputs lose their write bits; every file keeps only whether it is executable.
fn mode_for(mode: u32, read_only: bool) -> u32 {
    let executable = mode & 0o111 != 0 || mode & 0o170_000 == 0o040_000;
    match (executable, read_only) {
        (true, true) => 0o555,
        (true, false) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    (uid, gid): (u32, u32),
    size: u64,
    mtime: u64,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(u64::from(uid));
    header.set_gid(u64::from(gid));
    header.set_mtime(mtime);
    header.set_size(size);
    header
}

fn append_dir<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    owner: (u32, u32),
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, owner, 0, mtime);
    builder.append_data(&mut header, format!("{path}/"), std::io::empty())
}

/// Sends `step`'s mounts into the created container `id`, each into its volume.
pub(super) async fn upload(
    docker: &bollard::Docker,
    id: &str,
    step: &StepSpec,
) -> Result<(), SandboxError> {
    for (index, mount) in step.mounts.iter().enumerate() {
        let (packer, body) = pack_streaming(step, index);
        let options = UploadToContainerOptionsBuilder::default()
            .path(&mount.target)
            .build();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = {
            let sent = sent.clone();
            futures::StreamExt::inspect(body, move |chunk| {
                sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            })
        };
        let uploaded = docker
            .upload_to_container(id, Some(options), bollard::body_stream(counted))
            .await;
        tracing::info!(
            step = %step.name,
            mount = %mount.target,
            bytes = sent.load(std::sync::atomic::Ordering::Relaxed),
            "sent to the engine"
        );
        let pack_result = packer.await.expect("packing does not panic");
        if let Ok(tar_bytes) = &pack_result {
            tracing::info!(step = %step.name, mount = %mount.target, tar_bytes, "packed");
        }
        match (pack_result.map(|_| ()), uploaded) {
            // A packing failure of its own comes first: the engine may have taken the
            // truncated archive without complaint.
            (Err(error), _) if !is_engine_gone(&error) => return Err(error),
            (_, Err(source)) => {
                return Err(SandboxError::Engine {
                    step: step.name.clone(),
                    action: "sending the step's inputs",
                    source,
                });
            }
            (Err(error), Ok(())) => return Err(error),
            (Ok(()), Ok(())) => {}
        }
    }
    Ok(())
}

/// Bytes per chunk handed from the packer to the upload.
const PACK_CHUNK: usize = 1 << 20;
/// Chunks in flight between them: memory stays near `PACK_CHUNK * (PACK_QUEUE + 1)` whatever
/// the inputs' size.
const PACK_QUEUE: usize = 4;
/// The packer's writer fails with this when the upload stopped reading.
const ENGINE_GONE: &str = "the engine stopped reading the step's inputs";

/// Whether a packing failure only says the engine stopped reading (its own error says why).
fn is_engine_gone(error: &SandboxError) -> bool {
    matches!(
        error,
        SandboxError::Copy {
            source: CopyError::EngineGone,
            ..
        }
    )
}

/// A write failure of the packer: the engine gone, or the archive's own failure.
fn archive_error(error: std::io::Error) -> CopyError {
    if error.kind() == std::io::ErrorKind::BrokenPipe
        && error
            .get_ref()
            .is_some_and(|inner| inner.to_string() == ENGINE_GONE)
    {
        CopyError::EngineGone
    } else {
        CopyError::Archive(error)
    }
}

/// A writer that hands what it gets to a channel in chunks of about [`PACK_CHUNK`] bytes.
struct ChannelWriter {
    buffer: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, ENGINE_GONE))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= PACK_CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A writer that counts what passes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Packs `step`'s mount number `index` on a blocking thread into a stream of gzip-compressed
/// chunks (the engine's archive endpoint takes gzip, and a remote engine gets about a
/// quarter of a source tree's bytes); the task's result says whether the stream is the whole
/// archive, and how many bytes the archive had before compression.
fn pack_streaming(
    step: &StepSpec,
    index: usize,
) -> (
    tokio::task::JoinHandle<Result<u64, SandboxError>>,
    impl futures::Stream<Item = bytes::Bytes> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(PACK_QUEUE);
    let packer = {
        let step = step.clone();
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter {
                buffer: Vec::with_capacity(PACK_CHUNK),
                tx,
            };
            let counted = Counted {
                inner: flate2::write::GzEncoder::new(writer, flate2::Compression::fast()),
                bytes: 0,
            };
            let counted = pack_mount(&step, index, counted)?;
            let failed = |e| copy_error(&step, "pack the step's inputs")(archive_error(e));
            let mut writer = counted.inner.finish().map_err(failed)?;
            writer.flush().map_err(failed)?;
            Ok(counted.bytes)
        })
    };
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (packer, body)
}

/// Copies the writable mounts `step` collects back from the finished container `id`.
pub(super) async fn download(
    docker: &bollard::Docker,
    id: &str,
    step: &StepSpec,
    podman: bool,
) -> Result<(), SandboxError> {
    for mount in step
        .mounts
        .iter()
        .filter(|m| !m.read_only && (step.collect.is_empty() || step.collect.contains(&m.target)))
    {
        let err = copy_error(step, "take the step's outputs back");
        let parent = mount.source.parent().unwrap_or(Path::new("/"));
        let scratch = tempfile::Builder::new()
            .prefix(".kiln-download-")
            .tempdir_in(parent)
            .map_err(|e| err(io_at(parent)(e)))?;
        let archive = scratch.path().join("archive.tar");
        {
            let file = std::fs::File::create(&archive).map_err(|e| err(io_at(&archive)(e)))?;
            // Podman (4.3) names the entries of a volume's root absolutely (`/`, `/a`); asked
            // for the directory's contents (`DIR/.`) it names them relative to it.
            let path = if podman {
                format!("{}/.", mount.target.trim_end_matches('/'))
            } else {
                mount.target.clone()
            };
            let options = DownloadFromContainerOptionsBuilder::default()
                .path(&path)
                .build();
            let stream = docker.download_from_container(id, Some(options));
            save_bounded(stream, file, &archive, MAX_ARCHIVE_BYTES)
                .await
                .map_err(|failure| match failure {
                    Saved::Engine(source) => SandboxError::Engine {
                        step: step.name.clone(),
                        action: "reading the step's outputs",
                        source,
                    },
                    Saved::Copy(error) => err(error),
                })?;
        }
        let unpacked = scratch.path().join("unpacked");
        let (archive_path, unpacked_path) = (archive.clone(), unpacked.clone());
        tokio::task::spawn_blocking(move || unpack_archive(&archive_path, &unpacked_path))
            .await
            .expect("unpacking does not panic")
            .map_err(&err)?;
        // Docker's archive holds the mount's directory itself, Podman's its entries: move
        // them over.
        let root = if podman {
            unpacked.clone()
        } else {
            let base = Path::new(&mount.target)
                .file_name()
                .ok_or_else(|| err(CopyError::Missing(mount.target.clone())))?;
            unpacked.join(base)
        };
        // The host directory becomes what the container's was: its old entries go first.
        for entry in std::fs::read_dir(&mount.source).map_err(|e| err(io_at(&mount.source)(e)))? {
            let path = entry.map_err(|e| err(io_at(&mount.source)(e)))?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| err(io_at(&path)(e)))?;
        }
        for entry in std::fs::read_dir(&root).map_err(|e| err(io_at(&root)(e)))? {
            let entry = entry.map_err(|e| err(io_at(&root)(e)))?;
            let dest = mount.source.join(entry.file_name());
            std::fs::rename(entry.path(), &dest).map_err(|e| err(io_at(&dest)(e)))?;
        }
    }
    Ok(())
}

/// The most bytes an engine's archive of a step's outputs may hold before it is refused: the
/// store's bound on a tree's content, plus room for the tar headers of its entries.
const MAX_ARCHIVE_BYTES: u64 = MAX_TREE_BYTES + (1 << 30);

/// Why saving an engine's stream stopped.
enum Saved {
    /// The engine failed.
    Engine(bollard::errors::Error),
    /// Writing failed, or the stream outgrew its bound.
    Copy(CopyError),
}

/// Writes `stream` to `file` (at `path`), refusing it as soon as it holds more than `limit`
/// bytes: a hostile or broken engine cannot fill the disk before the unpacker's own bounds
/// apply.
async fn save_bounded(
    mut stream: impl futures::Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> + Unpin,
    mut file: std::fs::File,
    path: &Path,
    limit: u64,
) -> Result<u64, Saved> {
    let mut written: u64 = 0;
    while let Some(chunk) = stream.try_next().await.map_err(Saved::Engine)? {
        written = written.saturating_add(chunk.len() as u64);
        if written > limit {
            return Err(Saved::Copy(CopyError::TooLarge { limit }));
        }
        file.write_all(&chunk)
            .map_err(|e| Saved::Copy(io_at(path)(e)))?;
    }
    Ok(written)
}

/// Unpacks an archive from an engine into the new directory `dest` with the store's checks.
pub(super) fn unpack_archive(archive: &Path, dest: &Path) -> Result<(), CopyError> {
    std::fs::create_dir(dest).map_err(io_at(dest))?;
    let file = std::fs::File::open(archive).map_err(io_at(archive))?;
    unpack_tree(
        std::io::BufReader::new(file),
        dest,
        MAX_TREE_BYTES,
        "the engine's archive",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{BindMount, UserId};

    fn spec(dir: &Path) -> StepSpec {
        let mut step = StepSpec::new("s", "img", ["true"]);
        step.user = Some(UserId {
            uid: 1234,
            gid: 4321,
        });
        step.mounts.push(BindMount {
            source: dir.join("in"),
            target: "/in".into(),
            read_only: true,
        });
        step.mounts.push(BindMount {
            source: dir.join("out"),
            target: "/out".into(),
            read_only: false,
        });
        step
    }

    #[test]
    fn mounts_pack_deterministically_with_their_owners_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in/sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("in/sub/b"), "b").unwrap();
        std::fs::write(dir.path().join("in/a"), "a").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("in/link")).unwrap();
        let step = spec(dir.path());
        let list = |index: usize| {
            let first = pack_mount(&step, index, Vec::new()).unwrap();
            assert_eq!(pack_mount(&step, index, Vec::new()).unwrap(), first);
            let mut archive = tar::Archive::new(&first[..]);
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.path().unwrap().to_string_lossy().into_owned(),
                        e.header().uid().unwrap(),
                        e.header().mode().unwrap(),
                    )
                })
                .collect::<Vec<(String, u64, u32)>>()
        };
        let input = list(0);
        let names: Vec<&str> = input.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["./", "a", "link", "sub/", "sub/b"]);
        // Read-only inputs: root's and not writable; the output directory: the step user's.
        assert!(input.iter().all(|(_, uid, _)| *uid == 0));
        assert_eq!(input[1].2, 0o444);
        let output = list(1);
        assert_eq!(output.len(), 1);
        assert_eq!((output[0].0.as_str(), output[0].1), ("./", 1234));
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn the_streamed_archive_is_the_packed_one_in_bounded_chunks() {
        use futures::StreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        // Larger than the channel holds, so the packer must wait for the reader.
        // Incompressible (xorshift), so the compressed stream is as long.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let big: Vec<u8> = (0..(PACK_QUEUE + 3) * PACK_CHUNK + 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(dir.path().join("in/big"), &big).unwrap();
        std::fs::write(dir.path().join("in/small"), "s").unwrap();
        let step = spec(dir.path());
        let (packer, body) = pack_streaming(&step, 0);
        let chunks: Vec<bytes::Bytes> = body.collect().await;
        let tar_bytes = packer.await.unwrap().unwrap();
        assert!(chunks.len() > 3, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= PACK_CHUNK + 64 * 1024));
        let archive = pack_mount(&step, 0, Vec::new()).unwrap();
        assert_eq!(gunzip(&chunks.concat()), archive);
        assert_eq!(tar_bytes, archive.len() as u64);

        // A source-like tree goes out compressed.
        let text = "package main\n\nfunc main() { println(\"kiln\") }\n".repeat(50_000);
        std::fs::write(dir.path().join("in/big"), &text).unwrap();
        let (packer, body) = pack_streaming(&step, 0);
        let sent: usize = body.map(|c| c.len()).collect::<Vec<_>>().await.iter().sum();
        let tar_bytes = packer.await.unwrap().unwrap();
        assert!(tar_bytes > text.len() as u64, "{tar_bytes}");
        assert!((sent as u64) < tar_bytes / 10, "{sent} of {tar_bytes}");

        // Something that cannot be packed: the packer says so (whatever the stream carried).
        let fifo = dir.path().join("in/fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let (packer, body) = pack_streaming(&step, 0);
        let _: Vec<bytes::Bytes> = body.collect().await;
        let error = packer.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &error,
                SandboxError::Copy {
                    source: CopyError::Special(path),
                    ..
                } if *path == fifo
            ),
            "{error:?}"
        );

        // The reader gone: the packer stops with ENGINE_GONE instead of blocking (with more
        // than the channel holds, whatever runs first).
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(dir.path().join("in/big"), &big).unwrap();
        let (packer, body) = pack_streaming(&step, 0);
        drop(body);
        let error = packer.await.unwrap().unwrap_err();
        assert!(is_engine_gone(&error), "{error:?}");
    }

    #[tokio::test]
    async fn an_engine_archive_past_its_bound_is_refused_while_it_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.tar");
        let chunks = |n: usize| {
            futures::stream::iter(
                (0..n)
                    .map(|_| Ok::<_, bollard::errors::Error>(bytes::Bytes::from(vec![7u8; 1000]))),
            )
        };
        let file = std::fs::File::create(&path).unwrap();
        let saved = save_bounded(chunks(3), file, &path, 3000).await;
        assert!(matches!(saved, Ok(3000)));
        let file = std::fs::File::create(&path).unwrap();
        let refused = save_bounded(chunks(100), file, &path, 3000).await;
        assert!(
            matches!(
                refused,
                Err(Saved::Copy(CopyError::TooLarge { limit: 3000 }))
            ),
            "the fourth chunk passes the bound"
        );
        assert!(std::fs::metadata(&path).unwrap().len() <= 3000);
    }

    #[test]
    fn hostile_engine_archives_are_refused_inside_a_fresh_directory() {
        let named = |name: &str, kind: tar::EntryType| {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            let mut bytes = header.as_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 1024]);
            bytes
        };
        for (i, archive) in [
            named("out/../../escape", tar::EntryType::Regular),
            named("/etc/kiln-escape", tar::EntryType::Regular),
            named("out/dev", tar::EntryType::Char),
        ]
        .iter()
        .enumerate()
        {
            let parent = tempfile::tempdir().unwrap();
            let file = parent.path().join("archive.tar");
            std::fs::write(&file, archive).unwrap();
            let dest = parent.path().join("unpacked");
            assert!(unpack_archive(&file, &dest).is_err(), "case {i}");
            let left: Vec<_> = std::fs::read_dir(parent.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left.len(), 2, "case {i} wrote outside: {left:?}");
        }
        assert!(!Path::new("/etc/kiln-escape").exists());
    }
}
