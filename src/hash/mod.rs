//! Content digests and content keys. Owns [`Digest`] (SHA-256, shown as `sha256:<hex>`), the
//! streaming hasher used wherever kiln names bytes by content, and [`KeyHasher`], the explicit,
//! versioned, length-prefixed encoding that every content key (image recipes now, step keys
//! later) is computed with.

mod digest;
mod key_hasher;

pub use digest::{Digest, DigestParseError, Sha256Reader, Sha256Writer};
pub use key_hasher::KeyHasher;
