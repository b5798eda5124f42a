//! Content digests and content keys. Owns [`Digest`] (SHA-256, shown as `sha256:<hex>`), the
//! streaming hashers used wherever kiln names bytes by content, [`KeyHasher`] — the explicit,
//! versioned, length-prefixed encoding every content key is computed with — and the canonical
//! description of a step's inputs ([`Derivation`]) from which its [`StepKey`] is derived.

mod derivation;
mod digest;
mod key_hasher;
mod step_key;

pub use derivation::{Derivation, InputRef};
pub use digest::{Digest, DigestParseError};
pub(crate) use digest::{Sha256Reader, Sha256Writer};
pub(crate) use key_hasher::KeyHasher;
pub use step_key::StepKey;
