//! Toolchain images with an exact Go: the plain offline base (`kiln/base:bookworm`, no Go)
//! plus a pinned Go distribution unpacked at `/usr/local/go`, with the same build user,
//! caches, `date` shim and environment as every toolchain image (`images/toolchain/`).
//!
//! Identity: a hash of the base's rootfs, the Go version, the distribution archive's SHA-256
//! and the recipe files. Finding an existing image reads no archive: the version's pins give
//! the candidate identities.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::hash::{Digest, KeyHasher};
use crate::sandbox::{DockerSandbox, Engine, StepSpec, run_to_end};

use super::toolchain::{BuildContext, CONTEXT, build};
use super::{
    BaseKind, ExactGo, GoPin, GoPins, GoSources, ImageError, ImageProgress, LABEL_BASE, LABEL_GO,
    LABEL_KIND, LABEL_RECIPE, PinPolicy, ToolchainImage, checked_archive, find_base,
    find_toolchain, goroot_tar, platform,
};

/// Schema version of the exact recipe key; bump it when what is hashed, or how an archive is
/// read into the image (`goroot_tar`), changes.
const RECIPE_VERSION: u32 = 2;

/// Label on an exact toolchain image: the SHA-256 of the Go archive it was built from.
pub(crate) const LABEL_GO_ARCHIVE: &str = "kiln.go-archive";

/// Where `go.lock` is written unless `--lock-dir` says otherwise (the checkout's).
const DEFAULT_PIN_DIR: &str = "images/go";

/// Where the distribution goes; first on the image's `PATH`.
const GOROOT: &str = "/usr/local/go";

/// The shared Dockerfile plus the step that adds the distribution.
fn dockerfile() -> Vec<u8> {
    let mut text = CONTEXT[0].2.to_vec();
    text.extend_from_slice(
        format!("\n# The exact Go distribution, pinned in images/go/go.lock.\nCOPY go {GOROOT}\n")
            .as_bytes(),
    );
    text
}

/// The recipe key of the toolchain image for Go `version` from the archive `archive`, on the
/// plain base identified by `base`.
#[must_use]
pub fn exact_recipe(base: &Digest, version: &ExactGo, archive: &Digest) -> Digest {
    let mut key = KeyHasher::new("kiln/toolchain-image-exact", RECIPE_VERSION);
    key.digest("base", base)
        .str("go", version.as_str())
        .digest("archive", archive)
        .bytes("Dockerfile", &dockerfile());
    for (path, mode, bytes) in &CONTEXT[1..] {
        key.str("path", path)
            .u64("mode", u64::from(*mode))
            .bytes("content", bytes);
    }
    key.finish()
}

/// How to get an exact toolchain.
#[derive(Clone, Debug)]
pub struct ExactRequest {
    /// The Go version.
    pub version: ExactGo,
    /// Where archives are.
    pub sources: GoSources,
    /// What to do without a pin.
    pub policy: PinPolicy,
    /// Where `go.lock` is read and written; `None`: the pins built into kiln, and
    /// `images/go/` when writing.
    pub lock_dir: Option<PathBuf>,
    /// Only the archive with this SHA-256 (the one a lockfile records), whatever else is
    /// pinned for the version.
    pub archive: Option<Digest>,
}

impl ExactRequest {
    /// The lock file's pins (written back when a pin is added) and every pin that counts:
    /// those plus kiln's built-in ones, narrowed to [`Self::archive`] when it is set.
    fn pins(&self) -> Result<(GoPins, GoPins), ImageError> {
        // A new pin is added to the lock file it is written to (the checkout's, by default), so
        // the pins read are that file's.
        let read_from = match (&self.lock_dir, self.policy) {
            (Some(dir), _) => Some(dir.clone()),
            (None, PinPolicy::Update) => Some(PathBuf::from(DEFAULT_PIN_DIR)),
            (None, _) => None,
        };
        // A pin that could not be written is refused before anything is fetched or built.
        if self.policy == PinPolicy::Update
            && let Some(dir) = &read_from
            && !dir.is_dir()
        {
            return Err(ImageError::NoLockDir { path: dir.clone() });
        }
        let (file, _origin) = GoPins::load(read_from.as_deref())?;
        // A version pinned in kiln itself is never trusted anew, whichever lock file is written.
        let (built_in, _) = GoPins::load(None)?;
        let mut known = file.merged(&built_in);
        if let Some(digest) = &self.archive {
            known = known.only(digest);
            if known.of(&self.version, &platform()).is_empty() {
                return Err(ImageError::LockedGoArchiveUnpinned {
                    version: self.version.to_string(),
                    digest: digest.to_string(),
                });
            }
        }
        Ok((file, known))
    }
}

/// What `go version` prints in the toolchain of `version` on `platform` (`linux-amd64`):
/// `go version go1.24.11 linux/amd64`.
#[must_use]
pub fn go_version_line(version: &ExactGo, platform: &str) -> String {
    format!("go version go{version} {}", platform.replacen('-', "/", 1))
}

/// The toolchain image a release's steps run in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ToolchainChoice {
    /// The engine's reference for it (its id), or `(not built yet)` when only planned.
    pub(crate) reference: String,
    /// Its identity: the recipe key.
    pub(crate) recipe: Digest,
    /// The Go version (`.go-version`'s text).
    pub(crate) go: String,
    /// The SHA-256 of the Go archive it is built from.
    pub(crate) archive: Digest,
    /// What `go version` prints in it (checked when it was built).
    pub(crate) go_version: String,
    /// The lock file a new pin was written to (`--update-go-lock`).
    pub(crate) pinned_in: Option<PathBuf>,
}

/// The toolchain image of `request.version`: found or built when `build`; else found, or
/// reported as not built yet with the identity its first pin gives. A version without a pin
/// is refused here, before any step (or download) when nothing may pin it.
pub(crate) async fn toolchain_for(
    engine: &Engine,
    request: &ExactRequest,
    build: bool,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<ToolchainChoice, ImageError> {
    let version = &request.version;
    let line = go_version_line(version, &platform());
    if build {
        let made = ensure_exact_toolchain(engine, request, progress).await?;
        return Ok(ToolchainChoice {
            reference: made.image.id,
            recipe: made.image.recipe,
            go: version.to_string(),
            archive: made.pin.digest,
            go_version: line,
            pinned_in: made.pinned_in,
        });
    }
    let (_, known) = request.pins()?;
    if let Some((image, pin)) = find_exact_toolchain(engine, version, &known).await? {
        return Ok(ToolchainChoice {
            reference: image.id,
            recipe: image.recipe,
            go: version.to_string(),
            archive: pin.digest,
            go_version: line,
            pinned_in: None,
        });
    }
    let Some(pin) = known.of(version, &platform()).first().copied().cloned() else {
        return Err(ImageError::GoNoPin {
            version: version.to_string(),
        });
    };
    let base = plain_base(engine).await?;
    Ok(ToolchainChoice {
        reference: "(not built yet)".into(),
        recipe: exact_recipe(&base.rootfs, version, &pin.digest),
        go: version.to_string(),
        archive: pin.digest,
        go_version: line,
        pinned_in: None,
    })
}

/// What [`ensure_exact_toolchain`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExactToolchain {
    /// The image.
    #[serde(flatten)]
    pub image: ToolchainImage,
    /// The pin of the archive it was built from.
    pub pin: GoPin,
    /// True when it was already on the engine.
    pub already_present: bool,
    /// The lock file a new pin was written to.
    pub pinned_in: Option<PathBuf>,
}

/// The plain base, or the error that says how to bootstrap it.
async fn plain_base(engine: &Engine) -> Result<super::BaseImage, ImageError> {
    find_base(engine, BaseKind::Plain)
        .await?
        .ok_or_else(|| ImageError::BaseMissing {
            tag: BaseKind::Plain.tag(),
            command: BaseKind::Plain.command(),
        })
}

/// The exact toolchain image of `version` already on the engine, found through its pins
/// without reading any archive.
pub(crate) async fn find_exact_toolchain(
    engine: &Engine,
    version: &ExactGo,
    pins: &GoPins,
) -> Result<Option<(ToolchainImage, GoPin)>, ImageError> {
    let base = plain_base(engine).await?;
    for pin in pins.of(version, &platform()) {
        let recipe = exact_recipe(&base.rootfs, version, &pin.digest);
        if let Some(found) = find_toolchain(engine, &recipe).await? {
            return Ok(Some((found, pin.clone())));
        }
    }
    Ok(None)
}

/// Finds or builds the toolchain image of `request.version`: from the first archive that
/// matches its pin (nothing is imported otherwise), checked by running `go version` in it.
///
/// # Panics
///
/// Only if reading the archive panics on its blocking thread (a bug).
pub async fn ensure_exact_toolchain(
    engine: &Engine,
    request: &ExactRequest,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<ExactToolchain, ImageError> {
    let version = &request.version;
    let base = plain_base(engine).await?;
    let (mut pins, known) = request.pins()?;
    // An archive given by name is always checked against its pin, even when the image exists.
    if request.policy != PinPolicy::Update
        && request.sources.files.is_empty()
        && let Some((image, pin)) = find_exact_toolchain(engine, version, &known).await?
    {
        return Ok(ExactToolchain {
            image,
            pin,
            already_present: true,
            pinned_in: None,
        });
    }
    let scratch = tempfile::Builder::new()
        .prefix("kiln-go-")
        .tempdir()
        .map_err(|source| ImageError::Io {
            action: "create a scratch directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let platform = platform();
    let mut sources = request.sources.clone();
    if !sources.has_local(version, &platform) {
        // Nothing on this machine. An unpinned version is refused before anything is fetched;
        // a download is then checked against its pin like any archive.
        if known.of(version, &platform).is_empty() && request.policy != PinPolicy::Update {
            return Err(ImageError::GoNoPin {
                version: version.to_string(),
            });
        }
        let fetched = download(&sources, version, &platform, scratch.path(), progress).await?;
        sources = GoSources {
            files: vec![fetched],
            ..GoSources::default()
        };
    }
    progress(ImageProgress::Phase(format!(
        "checking a Go {version} archive against its pin"
    )));
    let checked = {
        let (version, sources, pins, policy, dir) = (
            version.clone(),
            sources,
            known.clone(),
            request.policy,
            scratch.path().to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            checked_archive(&version, &sources, &pins, policy, &dir)
        })
        .await
        .expect("checking an archive does not panic")?
    };
    if let Some(wanted) = &request.archive
        && wanted != &checked.pin.digest
    {
        return Err(ImageError::GoArchiveMismatch {
            version: version.to_string(),
            archive: checked.source.display().to_string(),
            actual: format!("{} ({} bytes)", checked.pin.digest, checked.pin.size),
            expected: format!("{wanted} (the archive the lockfile records)"),
        });
    }
    let recipe = exact_recipe(&base.rootfs, version, &checked.pin.digest);
    // A new pin is written only once its archive proved to be that Go (an image built from it
    // ran `go version`), never before.
    let mut pin_it = |pin: &GoPin| -> Result<Option<PathBuf>, ImageError> {
        if !checked.newly_pinned {
            return Ok(None);
        }
        pins.add(pin.clone());
        write_pins(&pins, request.lock_dir.as_deref()).map(Some)
    };
    if let Some(image) = find_toolchain(engine, &recipe).await? {
        let pinned_in = pin_it(&checked.pin)?;
        return Ok(ExactToolchain {
            image,
            pin: checked.pin,
            already_present: true,
            pinned_in,
        });
    }
    let tag = format!("kiln/toolchain:go{version}-{}", &recipe.hex()[..12]);
    progress(ImageProgress::Phase(format!(
        "unpacking {} into the build context of {tag}",
        checked.source.display()
    )));
    let context = scratch.path().join("context.tar");
    {
        let (archive, version, context) = (checked.copy.clone(), version.clone(), context.clone());
        tokio::task::spawn_blocking(move || write_context(&archive, &version, &context))
            .await
            .expect("writing the context does not panic")?;
    }
    progress(ImageProgress::Phase(format!(
        "building {tag} on {}",
        base.tag
    )));
    let build_args = HashMap::from([("BASE", base.id.clone()), ("GO_MINOR", version.to_string())]);
    let labels = HashMap::from([
        (LABEL_KIND, "toolchain".to_owned()),
        (LABEL_RECIPE, recipe.to_string()),
        (LABEL_BASE, base.rootfs.to_string()),
        (LABEL_GO, version.to_string()),
        (LABEL_GO_ARCHIVE, checked.pin.digest.to_string()),
    ]);
    build(
        engine,
        &tag,
        &build_args,
        &labels,
        BuildContext::File(context),
        progress,
    )
    .await?;
    let image = find_toolchain(engine, &recipe)
        .await?
        .ok_or(ImageError::Build {
            action: "finding the freshly built",
            image: tag.clone(),
            message: "the engine reported success but has no image with its recipe label".into(),
        })?;
    progress(ImageProgress::Phase(format!(
        "checking `go version` in {tag}"
    )));
    // The check runs a container: only a build needs a sandbox (finding an image stays a few
    // engine requests).
    let sandbox = DockerSandbox::with_engine(engine.clone()).await?;
    if let Err(error) = check_go_version(&sandbox, &image, version).await {
        // An image whose Go is not the one asked for must never be found by its recipe.
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        let _ = engine
            .docker()
            .remove_image(&image.id, Some(options), None)
            .await;
        return Err(error);
    }
    let pinned_in = pin_it(&checked.pin)?;
    Ok(ExactToolchain {
        image,
        pin: checked.pin,
        already_present: false,
        pinned_in,
    })
}

/// The largest Go archive kiln downloads (a distribution is about 80 MB compressed).
const MAX_DOWNLOAD: u64 = 1 << 30;

/// Downloads an archive of `version` from the first of `sources`' URLs that has one, into
/// `scratch/download/`. Every failed URL is named in the error.
async fn download(
    sources: &GoSources,
    version: &ExactGo,
    platform: &str,
    scratch: &Path,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<PathBuf, ImageError> {
    use futures::TryStreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let dir = scratch.join("download");
    let io = super::go_dist::io_failed;
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| ImageError::Build {
            action: "setting up downloads for",
            image: format!("Go {version}"),
            message: e.to_string(),
        })?;
    let mut failures = Vec::new();
    for (url, name) in sources.urls(version, platform) {
        progress(ImageProgress::Phase(format!("downloading {url}")));
        let response = match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                failures.push(format!("{url}: HTTP {}", response.status()));
                continue;
            }
            Err(error) => {
                failures.push(format!("{url}: {error}"));
                continue;
            }
        };
        let path = dir.join(&name);
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(io("create", &path))?;
        let mut body = response.bytes_stream();
        let mut written = 0u64;
        let result: Result<(), String> = async {
            while let Some(chunk) = body.try_next().await.map_err(|e| e.to_string())? {
                written += chunk.len() as u64;
                if written > MAX_DOWNLOAD {
                    return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
                }
                file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(()) => return Ok(path),
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                failures.push(format!("{url}: {error}"));
            }
        }
    }
    let mut looked =
        vec!["no archive on this machine (no --go-archive, none in KILN_GO_ARCHIVES)".to_owned()];
    if failures.is_empty() {
        looked.push("no download URL (KILN_GO_DOWNLOAD_URL and KILN_GO_PROXY are off)".into());
    }
    looked.extend(failures);
    Err(ImageError::NoGoArchive {
        version: version.to_string(),
        platform: platform.to_owned(),
        looked: looked.join("; "),
    })
}

/// The build context: the Dockerfile, the files beside it, and the GOROOT under `go/`.
fn write_context(archive: &Path, version: &ExactGo, context: &Path) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        action: "write the build context",
        path: context.to_owned(),
        source,
    };
    let file = std::fs::File::create(context).map_err(io)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let dockerfile = dockerfile();
    let files = std::iter::once(("Dockerfile", 0o644, dockerfile.as_slice()))
        .chain(CONTEXT[1..].iter().map(|(p, m, b)| (*p, *m, *b)));
    for (path, mode, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes).map_err(io)?;
    }
    goroot_tar(archive, version, &mut builder)?;
    let mut writer = builder.into_inner().map_err(io)?;
    std::io::Write::flush(&mut writer).map_err(io)?;
    Ok(())
}

async fn check_go_version(
    sandbox: &DockerSandbox,
    image: &ToolchainImage,
    version: &ExactGo,
) -> Result<(), ImageError> {
    let step = StepSpec::new(
        "go-version",
        image.id.clone(),
        [format!("{GOROOT}/bin/go"), "version".into()],
    )
    .env("GOTOOLCHAIN", "local");
    let output = run_to_end(sandbox, step, |_| {}).await?;
    let printed = output.stdout.join(" ");
    // Exactly the line the lockfile records for this toolchain.
    if printed.trim() == go_version_line(version, &platform()) {
        Ok(())
    } else {
        Err(ImageError::WrongGo {
            image: image.tag.clone(),
            printed,
            expected: version.to_string(),
        })
    }
}

/// Writes the pins to `dir/go.lock` (default `images/go/`), whole and durably.
fn write_pins(pins: &GoPins, dir: Option<&Path>) -> Result<PathBuf, ImageError> {
    let dir = dir.map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), Path::to_owned);
    if !dir.is_dir() {
        return Err(ImageError::NoLockDir { path: dir });
    }
    let path = dir.join("go.lock");
    super::bootstrap::write_atomically(&path, pins.render().as_bytes())?;
    Ok(path)
}
