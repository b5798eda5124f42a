//! The canonical description of a step's inputs — its derivation — and the key computed from
//! it. A store record carries the derivation, so a record's key can always be re-derived and
//! checked, and a later run can say which input changed.

use std::collections::BTreeMap;

use super::{Digest, KeyHasher, StepKey};

/// Version of the step key encoding. Any change to what [`Derivation::key`] feeds the hasher,
/// or how, MUST bump it.
pub(crate) const STEP_KEY_VERSION: u32 = 1;

/// Everything that determines a step's outputs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Derivation {
    /// Step kind (`exec`, `rebase`, `tag`, …).
    pub kind: String,
    /// Schema version of the kind: bump when the kind's behaviour changes.
    pub schema: u32,
    /// Content identity of the image (rootfs digest or recipe key; never an engine id).
    pub image: Digest,
    /// The command.
    pub argv: Vec<String>,
    /// The declared environment.
    pub env: BTreeMap<String, String>,
    /// Named inputs.
    pub inputs: BTreeMap<String, InputRef>,
    /// Declared outputs, as paths under the step's output directory (`dir/` for a tree).
    pub outputs: Vec<String>,
    /// The network a fetch step runs with (`host`); absent for every other step, which has
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// One resolved input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum InputRef {
    /// A plain value the step depends on (a version, a name).
    Value {
        /// The value.
        value: String,
    },
    /// Bytes from the store: a file, or a tree (a canonical tar unpacked as a directory).
    Blob {
        /// The blob.
        digest: Digest,
        /// True for a tree.
        tree: bool,
    },
    /// A git commit, by object id (already a content hash; never re-hashed).
    Git {
        /// The commit id.
        commit: String,
        /// What of it the step sees beyond the checked-out commit (history back to a commit,
        /// no checkout); empty for the commit alone, checked out.
        view: String,
    },
    /// An output of another step, by the digest it had.
    Output {
        /// The producing step's name.
        step: String,
        /// The output's path.
        output: String,
        /// Its digest.
        digest: Digest,
        /// True for a tree.
        tree: bool,
    },
}

impl InputRef {
    /// A short human form, for why-rebuild messages.
    #[must_use]
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Value { value } => value.clone(),
            Self::Blob { digest, tree } => {
                format!("{} {}", if *tree { "tree" } else { "file" }, digest.short())
            }
            Self::Git { commit, .. } => format!("commit {}", &commit[..commit.len().min(12)]),
            Self::Output {
                step,
                output,
                digest,
                ..
            } => {
                format!("{step}:{output} {}", digest.short())
            }
        }
    }
}

impl Derivation {
    /// The step key: SHA-256 over the versioned, domain-separated, length-prefixed encoding of
    /// every field (see [`KeyHasher`]). Maps are fed in key order.
    #[must_use]
    pub(crate) fn key(&self) -> StepKey {
        let mut h = KeyHasher::new("kiln/step", STEP_KEY_VERSION);
        h.str("kind", &self.kind)
            .u64("schema", u64::from(self.schema));
        h.digest("image", &self.image);
        h.strs("argv", &self.argv);
        h.map("env", &self.env);
        h.u64("inputs", self.inputs.len() as u64);
        for (name, input) in &self.inputs {
            h.str("input", name);
            match input {
                InputRef::Value { value } => h.str("value", value),
                InputRef::Blob { digest, tree } => {
                    h.u64("tree", u64::from(*tree)).digest("blob", digest)
                }
                // The plain view hashes as before views existed.
                InputRef::Git { commit, view } if view.is_empty() => h.str("git", commit),
                InputRef::Git { commit, view } => h.str("git", commit).str("git-view", view),
                InputRef::Output {
                    step,
                    output,
                    digest,
                    tree,
                } => h
                    .str("step", step)
                    .str("output", output)
                    .u64("tree", u64::from(*tree))
                    .digest("digest", digest),
            };
        }
        h.strs("outputs", &self.outputs);
        // Fed only for fetch steps, so every other step keeps the key it always had.
        if let Some(network) = &self.network {
            h.str("network", network);
        }
        StepKey::from_digest(h.finish())
    }

    /// What changed from `earlier` to `self`, in the step's own terms.
    #[must_use]
    pub(crate) fn changes_since(&self, earlier: &Self) -> Vec<String> {
        let mut changes = Vec::new();
        if self.kind != earlier.kind || self.schema != earlier.schema {
            changes.push(format!(
                "step kind changed: {} v{} → {} v{}",
                earlier.kind, earlier.schema, self.kind, self.schema
            ));
        }
        if self.image != earlier.image {
            changes.push(format!(
                "image changed: {} → {}",
                earlier.image.short(),
                self.image.short()
            ));
        }
        if self.argv != earlier.argv {
            changes.push(format!(
                "command changed: `{}` → `{}`",
                earlier.argv.join(" "),
                self.argv.join(" ")
            ));
        }
        diff_maps(&earlier.env, &self.env, "env", String::clone, &mut changes);
        diff_maps(
            &earlier.inputs,
            &self.inputs,
            "input",
            InputRef::describe,
            &mut changes,
        );
        if self.network != earlier.network {
            changes.push(format!(
                "network changed: {} → {}",
                earlier.network.as_deref().unwrap_or("none"),
                self.network.as_deref().unwrap_or("none")
            ));
        }
        if self.outputs != earlier.outputs {
            changes.push(format!(
                "declared outputs changed: {} → {}",
                earlier.outputs.join(", "),
                self.outputs.join(", ")
            ));
        }
        changes
    }
}

fn diff_maps<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    what: &str,
    show: impl Fn(&V) -> String,
    changes: &mut Vec<String>,
) {
    for (name, value) in new {
        match old.get(name) {
            None => changes.push(format!("{what} `{name}` added: {}", show(value))),
            Some(before) if before != value => changes.push(format!(
                "{what} `{name}` changed: {} → {}",
                show(before),
                show(value)
            )),
            Some(_) => {}
        }
    }
    for (name, value) in old {
        if !new.contains_key(name) {
            changes.push(format!("{what} `{name}` removed (was {})", show(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Derivation {
        Derivation {
            kind: "exec".into(),
            schema: 1,
            image: Digest::of(b"image"),
            argv: vec!["go".into(), "build".into()],
            env: BTreeMap::from([("TZ".into(), "UTC".into())]),
            inputs: BTreeMap::from([
                (
                    "go_version".into(),
                    InputRef::Value {
                        value: "1.22.12".into(),
                    },
                ),
                (
                    "src".into(),
                    InputRef::Git {
                        commit: "0123456789abcdef0123456789abcdef01234567".into(),
                        view: String::new(),
                    },
                ),
                (
                    "lib".into(),
                    InputRef::Output {
                        step: "fetch".into(),
                        output: "lib.tar".into(),
                        digest: Digest::of(b"lib"),
                        tree: false,
                    },
                ),
                (
                    "patch".into(),
                    InputRef::Blob {
                        digest: Digest::of(b"patch"),
                        tree: true,
                    },
                ),
            ]),
            outputs: vec!["out/".into(), "k3s".into()],
            network: None,
        }
    }

    #[test]
    // Pinned: a change here means every cached step of every user is invalidated. Bump
    // STEP_KEY_VERSION deliberately if it must change. The literal was computed by an
    // independent implementation of the encoding documented on `KeyHasher`.
    fn golden_step_key() {
        assert_eq!(
            sample().key().to_string(),
            "sha256:c2ecd0eca770377c21b56351c21c860beb910f5f207bbf549e57c59a344c3549"
        );
    }

    #[test]
    fn why_rebuild_names_the_changed_input_in_its_own_terms() {
        let old = sample();
        let mut new = sample();
        new.inputs.insert(
            "go_version".into(),
            InputRef::Value {
                value: "1.23.5".into(),
            },
        );
        new.env.insert("GOFLAGS".into(), "-mod=mod".into());
        assert_eq!(
            new.changes_since(&old),
            vec![
                "env `GOFLAGS` added: -mod=mod".to_owned(),
                "input `go_version` changed: 1.22.12 → 1.23.5".to_owned(),
            ]
        );
        assert!(old.changes_since(&old).is_empty());
    }

    proptest! {
        #[test]
        fn changing_any_one_field_changes_the_key(field in 0usize..9, text in "[a-z]{1,6}") {
            let base = sample();
            let mut changed = sample();
            match field {
                0 => changed.kind.push_str(&text),
                1 => changed.schema += 1,
                2 => changed.image = Digest::of(text.as_bytes()),
                3 => changed.argv.push(text),
                4 => { changed.env.insert("X".into(), text); }
                5 => { changed.inputs.insert("go_version".into(), InputRef::Value { value: text }); }
                6 => { changed.inputs.insert("src".into(), InputRef::Git { commit: text, view: String::new() }); }
                7 => { changed.inputs.insert("lib".into(), InputRef::Output {
                        step: "fetch".into(), output: "lib.tar".into(),
                        digest: Digest::of(text.as_bytes()), tree: false }); }
                _ => changed.outputs.push(text),
            }
            prop_assert_ne!(base.key(), changed.key());
        }
    }
}
