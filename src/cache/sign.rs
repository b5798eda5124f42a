//! Signed step records: ed25519 over the step key, the derivation's digest and every output,
//! so a record is only ever used for the step it was made for, and only from a trusted key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::hash::{KeyHasher, StepKey};
use crate::store::Record;

use super::CacheError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A public key as kiln writes it: `ed25519:<base64 of 32 bytes>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0.to_bytes()))
    }
}

impl FromStr for PublicKey {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CacheError::BadKey { key: s.to_owned() };
        let b64 = s.trim().strip_prefix("ed25519:").ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad())
    }
}

/// A private signing key, read from a file holding the hex of its 32-byte seed.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "SecretKey({})", self.public())
    }
}

impl SecretKey {
    /// Its public key.
    #[must_use]
    pub(crate) fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Reads a key written by [`keygen`], refusing a file others may read (a leaked CI key
    /// signs anything).
    pub fn read(path: &Path) -> Result<Self, CacheError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |source| CacheError::Io {
            action: "read the signing key",
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CacheError::KeyReadable {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CacheError::BadKey {
                key: path.display().to_string(),
            })?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }
}

/// Makes a new key pair: the secret seed goes to `path` (a new file, mode 0600); returns the
/// public key to give to other captains.
pub fn keygen(path: &Path) -> Result<PublicKey, CacheError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CacheError::Io {
        action: "get randomness for",
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key = SecretKey(SigningKey::from_bytes(&seed));
    let io = |source| CacheError::Io {
        action: "write the signing key",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(file, "{}", hex::encode(seed)).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key.public())
}

/// A record as the cache holds it: the record, who signed it, and the signature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// The record.
    pub(crate) record: Record,
    /// The signer's public key (`ed25519:…`), empty when unsigned.
    pub(crate) signer: String,
    /// The signature (base64), empty when unsigned.
    pub(crate) signature: String,
}

/// Version of what a signature covers; bump when [`message`] changes.
const SIGNATURE_VERSION: u32 = 2;

/// What a signature covers: the record's name and format version, the step key, the key its
/// derivation hashes to, and every output (name, digest, size, tree or file), in kiln's
/// length-prefixed, domain-separated encoding (never JSON), so no two records share a message
/// and no output name can be read as the start of another field.
fn message(record: &Record) -> Vec<u8> {
    let mut h = KeyHasher::new("kiln/cache-record-signature", SIGNATURE_VERSION);
    h.str("name", &record.name)
        .u64("record_version", u64::from(record.version))
        .digest("key", record.key.digest())
        .digest("derivation", record.derivation.key().digest())
        .u64("outputs", record.outputs.len() as u64);
    for (name, output) in &record.outputs {
        h.str("output", name)
            .digest("digest", &output.digest)
            .u64("size", output.size)
            .u64("tree", u64::from(output.tree));
    }
    h.finish().to_string().into_bytes()
}

impl SignedRecord {
    /// `record`, signed by `key` (or unsigned).
    #[must_use]
    pub fn new(record: Record, key: Option<&SecretKey>) -> Self {
        match key {
            Some(key) => Self {
                signature: B64.encode(key.0.sign(&message(&record)).to_bytes()),
                signer: key.public().to_string(),
                record,
            },
            None => Self {
                record,
                signer: String::new(),
                signature: String::new(),
            },
        }
    }

    /// The record, if it is for step `key`, signed by one of `trusted`, and intact.
    pub(crate) fn check(self, key: &StepKey, trusted: &[PublicKey]) -> Result<Record, String> {
        if self.record.key != *key {
            return Err(format!(
                "the record served for step {key} is the record of step {}",
                self.record.key
            ));
        }
        let derived = self.record.derivation.key();
        if derived != *key {
            return Err(format!(
                "the record's derivation hashes to {derived}, not {key}"
            ));
        }
        if self.signature.is_empty() {
            return Err(format!("the record of step {key} is unsigned"));
        }
        let signer: PublicKey = self
            .signer
            .parse()
            .map_err(|_| format!("the record of step {key} names no valid signing key"))?;
        if !trusted.contains(&signer) {
            return Err(format!(
                "the record of step {key} is signed by the untrusted key {signer}"
            ));
        }
        let signature: [u8; 64] = B64
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("the record of step {key} has a malformed signature"))?;
        signer
            .0
            .verify_strict(&message(&self.record), &Signature::from_bytes(&signature))
            .map_err(|_| {
                format!("the record of step {key} does not match its signature by {signer}")
            })?;
        Ok(self.record)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hash::{Derivation, Digest, InputRef};
    use crate::store::OutputRef;

    fn record(value: &str) -> Record {
        let derivation = Derivation {
            kind: "exec".into(),
            schema: 1,
            image: Digest::of(b"image"),
            argv: vec!["true".into()],
            env: BTreeMap::new(),
            inputs: BTreeMap::from([(
                "v".into(),
                InputRef::Value {
                    value: value.into(),
                },
            )]),
            outputs: vec!["out".into()],
            network: None,
        };
        Record::new(
            "step",
            derivation,
            BTreeMap::from([(
                "out".into(),
                OutputRef {
                    digest: Digest::of(value.as_bytes()),
                    size: 3,
                    tree: false,
                },
            )]),
        )
    }

    #[test]
    fn the_signature_covers_the_name_version_and_escaped_output_names() {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("a.key")).unwrap();
        let secret = SecretKey::read(&dir.path().join("a.key")).unwrap();
        let public = secret.public();
        let r = record("one");
        let key = r.key;
        let signed = SignedRecord::new(r.clone(), Some(&secret));
        // Renamed after signing: the signature no longer holds.
        let mut renamed = signed.clone();
        renamed.record.name = "other-step".into();
        assert!(renamed.check(&key, &[public]).is_err());
        // Another record format version.
        let mut versioned = signed.clone();
        versioned.record.version += 1;
        assert!(versioned.check(&key, &[public]).is_err());
        // Output names cannot shift into each other: `a` + `bc` is not `ab` + `c`.
        let outputs = |names: [&str; 2]| {
            let mut r = r.clone();
            r.outputs = names
                .iter()
                .map(|n| {
                    (
                        (*n).to_owned(),
                        OutputRef {
                            digest: Digest::of(b"x"),
                            size: 1,
                            tree: false,
                        },
                    )
                })
                .collect();
            message(&r)
        };
        assert_ne!(outputs(["a", "bc"]), outputs(["ab", "c"]));
    }

    #[test]
    fn signed_records_check_only_for_their_key_and_trusted_signers() {
        let dir = tempfile::tempdir().unwrap();
        let public = keygen(&dir.path().join("a.key")).unwrap();
        let other = keygen(&dir.path().join("b.key")).unwrap();
        let secret = SecretKey::read(&dir.path().join("a.key")).unwrap();
        assert_eq!(secret.public(), public);
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);

        let r = record("one");
        let key = r.key;
        let signed = SignedRecord::new(r.clone(), Some(&secret));
        assert_eq!(signed.clone().check(&key, &[public]).unwrap(), r);
        let untrusted = signed.clone().check(&key, &[other]).unwrap_err();
        assert!(
            untrusted.contains(&format!("untrusted key {public}")),
            "{untrusted}"
        );
        let unsigned = SignedRecord::new(r.clone(), None)
            .check(&key, &[public])
            .unwrap_err();
        assert!(unsigned.contains("unsigned"), "{unsigned}");
        // Replayed under another step's key.
        let other_key = record("two").key;
        let replayed = signed.clone().check(&other_key, &[public]).unwrap_err();
        assert!(replayed.contains("is the record of step"), "{replayed}");
        // An output swapped after signing.
        let mut forged = signed;
        forged.record.outputs.get_mut("out").unwrap().digest = Digest::of(b"evil");
        let error = forged.check(&key, &[public]).unwrap_err();
        assert!(error.contains("does not match its signature"), "{error}");
        // Keys are never overwritten.
        assert!(keygen(&dir.path().join("a.key")).is_err());
        // A key others can read is refused, naming its mode.
        let leaked = dir.path().join("b.key");
        std::fs::set_permissions(&leaked, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretKey::read(&leaked),
            Err(CacheError::KeyReadable { mode: 0o644, .. })
        ));
        assert_eq!(
            std::fs::metadata(dir.path().join("a.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    use std::os::unix::fs::PermissionsExt as _;
}
