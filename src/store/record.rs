//! Step records: what a step was (its derivation) and what it produced.

use std::collections::BTreeMap;

use crate::hash::{Derivation, Digest, InputRef, StepKey};

/// Version of the record file format.
pub(crate) const RECORD_VERSION: u32 = 1;

/// One finished step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Format version ([`RECORD_VERSION`]).
    pub version: u32,
    /// The step key; always `derivation.key()`.
    pub key: StepKey,
    /// The step's name in its plan (why-rebuild finds earlier records by it).
    pub name: String,
    /// The canonical input description.
    pub derivation: Derivation,
    /// The outputs, by declared path.
    pub outputs: BTreeMap<String, OutputRef>,
}

/// One stored output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputRef {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// True when the blob is a tree (a canonical tar of a directory).
    pub tree: bool,
}

impl Record {
    /// A record of `derivation` with `outputs`.
    #[must_use]
    pub fn new(name: &str, derivation: Derivation, outputs: BTreeMap<String, OutputRef>) -> Self {
        Self {
            version: RECORD_VERSION,
            key: derivation.key(),
            name: name.to_owned(),
            derivation,
            outputs,
        }
    }

    /// Parses and checks a record file: known version, and a key that its derivation hashes
    /// to (so a damaged or foreign file can never pass for a step).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let record: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a record: {e}"))?;
        if record.version != RECORD_VERSION {
            return Err(format!(
                "record version {} is not {RECORD_VERSION}",
                record.version
            ));
        }
        let derived = record.derivation.key();
        if derived != record.key {
            return Err(format!(
                "its derivation hashes to {derived}, not its key {}",
                record.key
            ));
        }
        Ok(record)
    }

    /// Every blob this record keeps alive: its outputs and the blob inputs it was built from.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        let inputs = self
            .derivation
            .inputs
            .values()
            .filter_map(|input| match input {
                InputRef::Blob { digest, .. } | InputRef::Output { digest, .. } => Some(*digest),
                InputRef::Value { .. } | InputRef::Git { .. } => None,
            });
        self.outputs.values().map(|o| o.digest).chain(inputs)
    }
}
