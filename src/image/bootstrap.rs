//! `kiln image bootstrap`: an offline Go toolchain base built from Debian packages.
//!
//! mmdebstrap (`--variant=essential`, bookworm + bookworm-backports, docs/man/locales
//! excluded, a fixed `SOURCE_DATE_EPOCH`) writes a rootfs tar; kiln hashes it and reads its
//! package list in one pass, imports it through the engine's image-create endpoint, checks that
//! the layer the engine stored is the tar it hashed, runs `go version` inside, and compares the
//! result with the committed lock `images/base/<name>.lock`. Two bootstraps from the same mirror
//! state give bit-identical tars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures::TryStreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::hash::Digest;
use crate::sandbox::{DockerSandbox, Engine, StepSpec, run_to_end};

use super::{
    BaseKind, BaseLock, GoLine, ImageError, ImageProgress, LABEL_GO, LABEL_KIND, LABEL_PACKAGES,
    LABEL_ROOTFS, LockDiff, RootfsScan, scan_rootfs,
};

/// `SOURCE_DATE_EPOCH` of every bootstrap (2024-01-01T00:00:00Z): mmdebstrap clamps file
/// times and names generated files from it, so the tar does not depend on when it was built.
pub(crate) const BOOTSTRAP_EPOCH: u64 = 1_704_067_200;

/// The Debian mirror used unless one is given.
pub(crate) const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Packages besides Go (DESIGN.md §3).
const PACKAGES: [&str; 12] = [
    "git",
    "make",
    // k3s's scripts/download fetches with curl (only in its fetch step; every other step gets
    // kiln's pinned-URL stand-in first in PATH).
    "curl",
    // Kubernetes' hack/ scripts (which some tag.sh variants build through) copy with rsync
    // and may compile cgo parts.
    "rsync",
    "gcc",
    "libc6-dev",
    "bash",
    "coreutils",
    "tar",
    "gzip",
    "ca-certificates",
    "findutils",
];

/// The committed locks, compiled in so an installed kiln verifies without a checkout.
const EMBEDDED_LOCKS: [(BaseKind, &str); 4] = [
    (
        BaseKind::Plain,
        include_str!("../../images/base/bookworm.lock"),
    ),
    (
        BaseKind::Debian(super::GoLine::Go121),
        include_str!("../../images/base/bookworm-go1.21.lock"),
    ),
    (
        BaseKind::Debian(super::GoLine::Go122),
        include_str!("../../images/base/bookworm-go1.22.lock"),
    ),
    (
        BaseKind::Debian(super::GoLine::Go123),
        include_str!("../../images/base/bookworm-go1.23.lock"),
    ),
];

/// How to bootstrap.
#[derive(Clone, Debug)]
pub(crate) struct BootstrapOptions {
    /// Which base.
    pub(crate) base: BaseKind,
    /// Debian mirror (must carry bookworm and bookworm-backports).
    pub(crate) mirror: String,
    /// Rebuild even when the image exists.
    pub(crate) force: bool,
    /// Fail when the result differs from its lock.
    pub(crate) locked: bool,
    /// Rewrite the lock from the result.
    pub(crate) update_lock: bool,
    /// Where lock files live; `None` reads the compiled-in locks and writes to `images/base`.
    pub(crate) lock_dir: Option<PathBuf>,
    /// Where the temporary rootfs tar is written.
    pub(crate) scratch_dir: PathBuf,
}

/// A bootstrapped base on the engine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BaseImage {
    /// The engine tag (`kiln/base:bookworm-go1.23`).
    pub(crate) tag: String,
    /// The engine's image id (a local fact).
    pub id: String,
    /// Content identity: SHA-256 of the rootfs tar.
    pub rootfs: Digest,
    /// The Go inside (`1.23.5`).
    pub go_version: String,
    /// Installed packages: name → version.
    pub packages: BTreeMap<String, String>,
}

/// How the base compares with its lock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub(crate) enum LockStatus {
    /// Identical packages and rootfs digest.
    Matches {
        /// The lock compared with.
        origin: String,
    },
    /// Something differs; see the diff.
    Differs {
        /// The lock compared with.
        origin: String,
        /// What differs.
        diff: LockDiff,
    },
    /// No lock is recorded for this base.
    Missing,
    /// The lock was rewritten from this base.
    Updated {
        /// The file written.
        path: PathBuf,
    },
}

/// What `bootstrap` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct BootstrapReport {
    /// The base image.
    pub(crate) image: BaseImage,
    /// True when the image already existed and nothing was built.
    pub(crate) already_present: bool,
    /// The lock comparison.
    pub(crate) lock: LockStatus,
}

/// Builds (or finds) the offline base for `options.go`, imports it and checks it.
pub(crate) async fn bootstrap(
    sandbox: &DockerSandbox,
    options: &BootstrapOptions,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<BootstrapReport, ImageError> {
    let engine = sandbox.engine();
    let go = options.base;
    let existing = if options.force {
        None
    } else {
        // A base tag kiln did not bootstrap (moved, altered) is replaced.
        match find_base(engine, go).await {
            Err(ImageError::BaseMoved { .. }) => None,
            found => found?,
        }
    };
    // A forced rebuild re-imports under the same tag; the image it replaces is removed unless
    // something still uses it (a toolchain image built on it), so repeated runs leave nothing
    // behind.
    let replaced = if options.force {
        engine
            .docker()
            .inspect_image(&go.tag())
            .await
            .ok()
            .and_then(|i| i.id)
    } else {
        None
    };
    let (image, already_present) = if let Some(image) = existing {
        progress(ImageProgress::Phase(format!(
            "{} is already on the engine",
            image.tag
        )));
        (image, true)
    } else {
        (build_base(sandbox, options, progress).await?, false)
    };
    if let Some(old) = replaced {
        let now = engine
            .docker()
            .inspect_image(&go.tag())
            .await
            .ok()
            .and_then(|i| i.id);
        if now.as_deref() != Some(old.as_str()) {
            let options = RemoveImageOptionsBuilder::default().build();
            if let Err(error) = engine
                .docker()
                .remove_image(&old, Some(options), None)
                .await
            {
                tracing::debug!(%error, image = %old, "the replaced base is still in use; kept");
            }
        }
    }
    let lock = check_lock(&image, options)?;
    Ok(BootstrapReport {
        image,
        already_present,
        lock,
    })
}

/// The bootstrapped base for `go`, if the engine has it; an error when its tag names another
/// image ([`ImageError::BaseMoved`]).
pub async fn find_base(
    engine: &Engine,
    base: impl Into<BaseKind>,
) -> Result<Option<BaseImage>, ImageError> {
    let base = base.into();
    let tag = base.tag();
    let inspected = match engine.docker().inspect_image(&tag).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Ok(None);
        }
        Err(source) => {
            return Err(ImageError::Engine {
                action: "inspecting the base image",
                source,
            });
        }
    };
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    let layers = inspected.root_fs.and_then(|r| r.layers).unwrap_or_default();
    // The label is only a claim: the base is the image kiln imported when its one layer is
    // that rootfs. A tag moved to another image (labels copied or not) is refused, never
    // built on.
    let label = labels.get(LABEL_ROOTFS);
    let rootfs: Option<Digest> = label.and_then(|d| d.parse().ok());
    let Some(rootfs) = rootfs.filter(|r| layers == [r.to_string()]) else {
        return Err(ImageError::BaseMoved {
            tag,
            command: base.command(),
            label: label.cloned().unwrap_or_else(|| "none".into()),
            layers: if layers.is_empty() {
                "none".into()
            } else {
                layers.join(", ")
            },
        });
    };
    Ok(Some(BaseImage {
        tag,
        id: inspected.id.unwrap_or_default(),
        rootfs,
        go_version: labels.get(LABEL_GO).cloned().unwrap_or_default(),
        packages: decode_packages(labels.get(LABEL_PACKAGES).map_or("", String::as_str)),
    }))
}

async fn build_base(
    sandbox: &DockerSandbox,
    options: &BootstrapOptions,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<BaseImage, ImageError> {
    let base = options.base;
    let name = base.name();
    let scratch = tempfile::Builder::new()
        .prefix("kiln-bootstrap-")
        .tempdir_in(&options.scratch_dir)
        .map_err(|source| ImageError::Io {
            action: "create a scratch directory in",
            path: options.scratch_dir.clone(),
            source,
        })?;
    let tar_path = scratch.path().join("rootfs.tar");

    progress(ImageProgress::Phase(format!(
        "building {name} with mmdebstrap from {} (bookworm + bookworm-backports)",
        options.mirror
    )));
    run_mmdebstrap(base, &options.mirror, &tar_path, scratch.path(), progress).await?;

    progress(ImageProgress::Phase(
        "hashing the rootfs and reading its package list".into(),
    ));
    let scan = {
        let tar_path = tar_path.clone();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&tar_path).map_err(|source| ImageError::Io {
                action: "open",
                path: tar_path.clone(),
                source,
            })?;
            scan_rootfs(std::io::BufReader::with_capacity(1 << 20, file)).map_err(|source| {
                ImageError::Io {
                    action: "read the rootfs tar",
                    path: tar_path,
                    source,
                }
            })
        })
        .await
        .expect("the rootfs scan does not panic")?
    };
    // The plain base carries no Go; a Debian line's base carries its package's.
    let go_version = match base.go() {
        None => String::new(),
        Some(go) => scan
            .packages
            .get(&go.package())
            .map(|v| upstream_version(v))
            .ok_or_else(|| ImageError::WrongGo {
                image: name.clone(),
                printed: format!("(package {} is not installed)", go.package()),
                expected: go.minor().to_owned(),
            })?,
    };

    progress(ImageProgress::Phase(format!(
        "importing {} ({} MiB, {})",
        base.tag(),
        scan.size / (1024 * 1024),
        scan.digest
    )));
    let image = import(sandbox.engine(), base, &tar_path, &scan, &go_version).await?;

    let Some(go) = base.go() else {
        return Ok(image);
    };
    progress(ImageProgress::Phase(format!(
        "checking `go version` in {}",
        image.tag
    )));
    if let Err(error) = check_go_version(sandbox, &image, go).await {
        // A base that fails its check must not satisfy the next "already present" lookup.
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        let _ = sandbox
            .engine()
            .docker()
            .remove_image(&image.tag, Some(options), None)
            .await;
        return Err(error);
    }
    Ok(image)
}

async fn run_mmdebstrap(
    base: BaseKind,
    mirror: &str,
    tar_path: &Path,
    scratch: &Path,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<(), ImageError> {
    let mut include: Vec<String> = base.go().map(GoLine::package).into_iter().collect();
    include.extend(PACKAGES.iter().map(|p| (*p).to_owned()));
    let mut command = tokio::process::Command::new("mmdebstrap");
    command
        .arg("--variant=essential")
        .arg(format!("--include={}", include.join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-exclude=/usr/share/info/*")
        .arg("--format=tar")
        .arg("bookworm")
        .arg(tar_path)
        .arg(format!("deb {mirror} bookworm main"))
        .arg(format!("deb {mirror} bookworm-backports main"))
        // Nothing from the caller's environment reaches the rootfs but proxy settings, which
        // change how packages are fetched, never their bytes.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", BOOTSTRAP_EPOCH.to_string())
        .env("TMPDIR", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    let mut child = command.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::NoMmdebstrap
        } else {
            ImageError::Io {
                action: "start mmdebstrap for",
                path: tar_path.to_owned(),
                source,
            }
        }
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = futures::stream::select(tokio_stream_lines(stdout), tokio_stream_lines(stderr));
    let mut tail = std::collections::VecDeque::new();
    while let Some(line) = lines.try_next().await.map_err(|source| ImageError::Io {
        action: "read mmdebstrap's output for",
        path: tar_path.to_owned(),
        source,
    })? {
        if tail.len() == 15 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        progress(ImageProgress::Line(line));
    }
    let status = child.wait().await.map_err(|source| ImageError::Io {
        action: "wait for mmdebstrap building",
        path: tar_path.to_owned(),
        source,
    })?;
    if !status.success() {
        return Err(ImageError::Mmdebstrap {
            name: base.name(),
            mirror: mirror.to_owned(),
            status: status.to_string(),
            stderr_tail: tail.into_iter().collect(),
        });
    }
    Ok(())
}

fn tokio_stream_lines(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> futures::stream::BoxStream<'static, std::io::Result<String>> {
    Box::pin(futures::stream::try_unfold(
        BufReader::new(reader).lines(),
        |mut lines| async move { Ok(lines.next_line().await?.map(|line| (line, lines))) },
    ))
}

async fn import(
    engine: &Engine,
    base: BaseKind,
    tar_path: &Path,
    scan: &RootfsScan,
    go_version: &str,
) -> Result<BaseImage, ImageError> {
    let tag = base.tag();
    let file = tokio::fs::File::open(tar_path)
        .await
        .map_err(|source| ImageError::Io {
            action: "open",
            path: tar_path.to_owned(),
            source,
        })?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    // Imported bare, then named and labelled by a build `FROM` its id: the import's `tag` and
    // `changes` are not taken alike by every engine (Podman names the image `:latest` and
    // reads the newline-joined changes as one), a build's `t` and `labels` are.
    let options = CreateImageOptionsBuilder::default().from_src("-").build();
    let mut events = engine
        .docker()
        .create_image(Some(options), Some(body), None);
    // The import's answer names the new image's id. Its name is given again by id below:
    // Podman's import takes `repo` but not `tag` (it names the image `…:latest`).
    let mut imported: Option<String> = None;
    while let Some(event) = events
        .try_next()
        .await
        .map_err(|source| ImageError::Build {
            action: "importing",
            image: tag.clone(),
            message: source.to_string(),
        })?
    {
        if let Some(detail) = event.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build {
                action: "importing",
                image: tag,
                message: detail,
            });
        }
        if let Some(id) = event.status.filter(|s| s.starts_with("sha256:")) {
            imported = Some(id);
        }
    }
    let id = imported.ok_or_else(|| ImageError::Build {
        action: "importing",
        image: tag.clone(),
        message: "the engine did not say which image it made".into(),
    })?;
    let wanted = [
        (LABEL_KIND, "base".to_owned()),
        (LABEL_ROOTFS, scan.digest.to_string()),
        (LABEL_GO, go_version.to_owned()),
        (LABEL_PACKAGES, encode_packages(&scan.packages)),
    ];
    super::toolchain::label(engine, &id, &tag, &wanted.iter().cloned().collect()).await?;
    let inspected = engine
        .docker()
        .inspect_image(&tag)
        .await
        .map_err(|source| ImageError::Engine {
            action: "inspecting the imported base",
            source,
        })?;
    // The engine must have kept every label (the layers are checked below).
    let labels = inspected
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let lost: Vec<&str> = wanted
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(v))
        .map(|(k, _)| *k)
        .collect();
    if !lost.is_empty() {
        return Err(ImageError::Build {
            action: "importing",
            image: tag,
            message: format!("the engine did not keep the labels {}", lost.join(", ")),
        });
    }
    let layers = inspected.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let expected = scan.digest.to_string();
    if layers != [expected.clone()] {
        return Err(ImageError::ImportMismatch {
            name: tag,
            expected,
            actual: layers.join(","),
        });
    }
    Ok(BaseImage {
        tag,
        id: inspected.id.unwrap_or_default(),
        rootfs: scan.digest,
        go_version: go_version.to_owned(),
        packages: scan.packages.clone(),
    })
}

async fn check_go_version(
    sandbox: &DockerSandbox,
    image: &BaseImage,
    go: GoLine,
) -> Result<(), ImageError> {
    let step = StepSpec::new(
        "go-version",
        image.id.clone(),
        [format!("{}/bin/go", go.goroot()), "version".into()],
    )
    .env("GOTOOLCHAIN", "local");
    let output = run_to_end(sandbox, step, |_| {}).await?;
    let printed = output.stdout.join(" ");
    let wanted = format!("go version go{} ", image.go_version);
    if printed.starts_with(&wanted) {
        Ok(())
    } else {
        Err(ImageError::WrongGo {
            image: image.tag.clone(),
            printed,
            expected: image.go_version.clone(),
        })
    }
}

fn check_lock(image: &BaseImage, options: &BootstrapOptions) -> Result<LockStatus, ImageError> {
    let base = options.base;
    let name = base.name();
    let hint = base.command();
    if options.update_lock {
        let dir = options
            .lock_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("images/base"));
        if !dir.is_dir() {
            return Err(ImageError::NoLockDir { path: dir });
        }
        let path = dir.join(format!("{name}.lock"));
        let lock = BaseLock {
            name,
            rootfs: image.rootfs,
            packages: image.packages.clone(),
        };
        write_atomically(&path, lock.render(&hint).as_bytes())?;
        return Ok(LockStatus::Updated { path });
    }
    let (origin, text) = if let Some(dir) = &options.lock_dir {
        let path = dir.join(format!("{name}.lock"));
        match std::fs::read_to_string(&path) {
            Ok(text) => (path.display().to_string(), text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (path.display().to_string(), String::new())
            }
            Err(source) => {
                return Err(ImageError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        }
    } else {
        let text = EMBEDDED_LOCKS
            .iter()
            .find(|(kind, _)| *kind == base)
            .map_or("", |(_, t)| *t);
        (
            format!("images/base/{name}.lock (built into kiln)"),
            text.to_owned(),
        )
    };
    if text.trim().is_empty() {
        if options.locked {
            return Err(ImageError::LockMismatch {
                name,
                origin,
                command: base.command(),
                diff: "  (no lock is recorded)".into(),
            });
        }
        return Ok(LockStatus::Missing);
    }
    let lock = BaseLock::parse(&text, &origin)?;
    let diff = lock.diff(&image.rootfs, &image.packages);
    if diff.is_empty() {
        return Ok(LockStatus::Matches { origin });
    }
    if options.locked {
        return Err(ImageError::LockMismatch {
            name,
            origin,
            command: base.command(),
            diff: diff.to_string(),
        });
    }
    Ok(LockStatus::Differs { origin, diff })
}

/// Lock files are committed: replaced whole and durably; readable by everyone, like any
/// other source file.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    crate::durable::write(path, bytes, crate::durable::Placement::Beside).map_err(|e| {
        ImageError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    })
}

/// `1:2.39.5-0+deb12u2` → `2.39.5`: the upstream part of a Debian version.
fn upstream_version(debian: &str) -> String {
    let without_epoch = debian.split_once(':').map_or(debian, |(_, rest)| rest);
    without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(upstream, _)| upstream)
        .to_owned()
}

fn encode_packages(packages: &BTreeMap<String, String>) -> String {
    packages
        .iter()
        .map(|(name, version)| format!("{name}={version}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_packages(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|item| item.split_once('='))
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_version_drops_epoch_and_revision() {
        assert_eq!(upstream_version("1.23.5-1~bpo12+1"), "1.23.5");
        assert_eq!(upstream_version("1:2.39.5-0+deb12u2"), "2.39.5");
        assert_eq!(upstream_version("4.3"), "4.3");
    }

    #[test]
    fn package_label_round_trips() {
        let packages = BTreeMap::from([
            ("git".to_owned(), "1:2.39.5-0+deb12u2".to_owned()),
            ("golang-1.23-go".to_owned(), "1.23.5-1~bpo12+1".to_owned()),
        ]);
        assert_eq!(decode_packages(&encode_packages(&packages)), packages);
    }
}
