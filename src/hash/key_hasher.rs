use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Builds a content key from named fields with an unambiguous encoding.
///
/// Encoding (all integers little-endian, fixed width):
/// `"kiln-key\0"`, then the domain as a length-prefixed string and the schema version as `u32`,
/// then per field: a one-byte type tag, the field name length-prefixed (`u64`), and the value:
/// `b` bytes (length-prefixed), `s` list of bytes (count, then each length-prefixed),
/// `m` map (count, then key and value length-prefixed, in key order), `d` digest (32 raw
/// bytes), `u` a `u64`. Field order is the caller's and part of the key.
///
/// Never feed `Debug` output, JSON or a `HashMap` in: only explicit, ordered fields. Any change
/// to what a caller feeds MUST bump that caller's schema version.
pub(crate) struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// Starts a key in `domain` (e.g. `kiln/step`) at schema `version`.
    #[must_use]
    pub(crate) fn new(domain: &str, version: u32) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"kiln-key\0");
        hasher.update((domain.len() as u64).to_le_bytes());
        hasher.update(domain.as_bytes());
        hasher.update(version.to_le_bytes());
        Self { hasher }
    }

    fn field(&mut self, tag: u8, name: &str) {
        self.hasher.update([tag]);
        self.raw(name.as_bytes());
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Adds a byte string.
    pub(crate) fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.field(b'b', name);
        self.raw(value);
        self
    }

    /// Adds a string.
    pub(crate) fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.bytes(name, value.as_bytes())
    }

    /// Adds an ordered list of strings.
    pub(crate) fn strs<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut Self {
        self.field(b's', name);
        self.hasher.update((values.len() as u64).to_le_bytes());
        for value in values {
            self.raw(value.as_ref().as_bytes());
        }
        self
    }

    /// Adds a map, in key order.
    pub(crate) fn map(&mut self, name: &str, values: &BTreeMap<String, String>) -> &mut Self {
        self.field(b'm', name);
        self.hasher.update((values.len() as u64).to_le_bytes());
        for (key, value) in values {
            self.raw(key.as_bytes());
            self.raw(value.as_bytes());
        }
        self
    }

    /// Adds a digest.
    pub(crate) fn digest(&mut self, name: &str, value: &Digest) -> &mut Self {
        self.field(b'd', name);
        self.hasher.update(value.as_bytes());
        self
    }

    /// Adds an integer.
    pub(crate) fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.field(b'u', name);
        self.hasher.update(value.to_le_bytes());
        self
    }

    /// The key.
    #[must_use]
    pub(crate) fn finish(self) -> Digest {
        Digest::from_bytes(self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The literal was computed by an independent implementation of the documented encoding.
    fn golden_key_is_stable() {
        let mut h = KeyHasher::new("kiln/test", 1);
        h.str("image", "sha256:00")
            .strs("cmd", &["go", "version"])
            .u64("n", 7);
        h.map(
            "env",
            &BTreeMap::from([("TZ".to_owned(), "UTC".to_owned())]),
        );
        h.digest("input", &Digest::of(b"kiln"));
        assert_eq!(
            h.finish().to_string(),
            "sha256:b14cadf891dbbdee26d13ab0ce745473fa0d3d2d8c83fb123c2f9decb81a229b"
        );
    }

    #[test]
    fn boundaries_between_fields_are_unambiguous() {
        let key = |a: &str, b: &str| {
            let mut h = KeyHasher::new("kiln/test", 1);
            h.str("a", a).str("b", b);
            h.finish()
        };
        assert_ne!(key("ab", "c"), key("a", "bc"));
        let list = |v: &[&str]| {
            let mut h = KeyHasher::new("kiln/test", 1);
            h.strs("l", v);
            h.finish()
        };
        assert_ne!(list(&["a", "b"]), list(&["ab"]));
        assert_ne!(list(&["a", ""]), list(&["a"]));
    }

    #[test]
    fn domain_and_version_separate_keys() {
        assert_ne!(
            KeyHasher::new("kiln/a", 1).finish(),
            KeyHasher::new("kiln/b", 1).finish()
        );
        assert_ne!(
            KeyHasher::new("kiln/a", 1).finish(),
            KeyHasher::new("kiln/a", 2).finish()
        );
    }
}
