//! Toolchain images: the offline Debian base bootstrapped with mmdebstrap ([`bootstrap`]), its
//! committed package lock ([`BaseLock`]), and the derived toolchain image every step runs in
//! ([`ensure_toolchain`]).
//!
//! Images are identified by content, never by the engine's image id (imports and classic
//! builds embed timestamps): a bootstrapped base by the SHA-256 of its rootfs tar (which is
//! also its single layer's diff id), a derived image by its recipe key. Engine ids are local
//! facts, found through the labels below.

mod base_lock;
mod bootstrap;
mod error;
mod exact;
mod go_dist;
mod go_line;
mod resolver;
mod rootfs;
mod toolchain;

pub(crate) use base_lock::{BaseLock, LockDiff};
pub use bootstrap::{BaseImage, find_base};
pub(crate) use bootstrap::{BootstrapOptions, DEFAULT_MIRROR, LockStatus, bootstrap};
pub use error::ImageError;
pub use exact::{
    ExactRequest, ExactToolchain, ensure_exact_toolchain, exact_recipe, go_version_line,
};
pub(crate) use exact::{LABEL_GO_ARCHIVE, toolchain_for};
pub use go_dist::{ExactGo, GoConfig, GoPin, GoSources, PinPolicy, is_base_url};
pub(crate) use go_dist::{GoPins, checked_archive, goroot_tar, platform};
pub use go_line::{BaseKind, GoLine};
pub(crate) use resolver::{EngineImageResolver, identity_of};
pub(crate) use rootfs::{RootfsScan, scan_rootfs};
pub(crate) use toolchain::find_toolchain;
pub use toolchain::{ToolchainImage, ensure_toolchain, list_toolchains, toolchain_recipe};

/// Label: what kind of kiln image this is (`base` or `toolchain`).
pub(crate) const LABEL_KIND: &str = "kiln.image";
/// Label on a bootstrapped base: the SHA-256 of its rootfs tar.
pub(crate) const LABEL_ROOTFS: &str = "kiln.rootfs";
/// Label on a bootstrapped base: its installed packages, one `name=version` per line.
pub(crate) const LABEL_PACKAGES: &str = "kiln.packages";
/// Label: the Go version inside (`1.23.5`).
pub(crate) const LABEL_GO: &str = "kiln.go";
/// Label on a toolchain image: its recipe key.
pub(crate) const LABEL_RECIPE: &str = "kiln.recipe";
/// Label on a toolchain image: the identity of the base it was built on.
pub(crate) const LABEL_BASE: &str = "kiln.base";

/// Something an image operation reports while it works (the CLI draws it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageProgress {
    /// A new phase started.
    Phase(String),
    /// A line of output from a tool (mmdebstrap, the builder).
    Line(String),
}
