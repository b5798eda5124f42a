//! kiln makes the K3s Kubernetes patch release reproducible: every step is a pure function of
//! content-hashed inputs, run in a hermetic container. See `docs/design/` and the README.
//!
//! The binary is a thin wrapper around [`cli::run`]. Everything else is `pub(crate)`; the few
//! items the integration tests (`tests/it`) drive directly — the sandbox, the store, hashing,
//! the toolchain images, the shared cache and a handful of release and module functions — are
//! `pub` in the modules below that are.

pub mod cache;
pub mod cli;
pub mod demo;
mod durable;
mod engine;
mod failpoint;
mod git;
pub mod gomod;
pub mod hash;
pub mod image;
pub mod lockfile;
mod names;
mod publish;
pub mod release;
pub mod sandbox;
pub mod store;

/// What the fuzz targets (`fuzz/`) drive, with the `fuzzing` feature only.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::path::Path;

    /// Restores a tree archive into the empty directory `dest` with the store's checks (at
    /// most 16 MiB), as a cache download or an engine's archive is restored.
    pub fn unpack_tree(archive: &[u8], dest: &Path) -> Result<(), String> {
        crate::store::unpack_tree(archive, dest, 16 << 20, "fuzz").map_err(|e| e.to_string())
    }

    /// Decodes a store record; `Some(canonical bytes)` when it is accepted.
    #[must_use]
    pub fn decode_record(bytes: &[u8]) -> Option<Vec<u8>> {
        let record = crate::store::Record::parse(bytes).ok()?;
        Some(serde_json::to_vec(&record).expect("a record always serializes"))
    }

    /// Decodes a signed record as the shared cache serves it; `Some(canonical bytes)` when it
    /// parses (signature checks are not the decoder's job).
    #[must_use]
    pub fn decode_signed_record(bytes: &[u8]) -> Option<Vec<u8>> {
        let signed: crate::cache::SignedRecord = serde_json::from_slice(bytes).ok()?;
        Some(serde_json::to_vec(&signed).expect("a signed record always serializes"))
    }
}
