//! Plan files: a build written down as TOML, for running arbitrary steps through the engine.
//!
//! ```toml
//! [[step]]
//! name = "compile"                      # unique, [A-Za-z0-9_.-]
//! image = "toolchain:1.23"              # or "image:<engine reference>"
//! argv = ["go", "build", "-o", "/out/app", "./..."]
//! env = { CGO_ENABLED = "0" }
//! outputs = ["app"]                     # under /out; "dir/" for a directory
//! caches = { gomod = "/cache/gomod" }   # named cache volumes (never part of the key)
//! memory = 2147483648                   # optional limit in bytes
//! network = "host"                      # a fetch step: the host's network (default "none")
//! pins = { "lib.tar" = "sha256:…" }     # what its outputs must be (checked, not keyed)
//! [step.inputs]                         # each appears under /in/<name>
//! go_version = { value = "1.23.5" }
//! src = { git = "../repo", rev = "v1.28.2" }
//! notes = { file = "notes.txt" }
//! assets = { dir = "assets" }
//! lib = { step = "fetch", output = "lib.tar" }
//! ```
//! Relative paths are relative to the plan file's directory.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::hash::{Digest, Sha256Reader, Sha256Writer};
use crate::sandbox::{CacheMount, Network};
use crate::store::pack_tree;

use super::{EngineError, Plan, Step, StepImage, StepInput};

/// Turns a plan file's `image = "…"` into an image reference and content identity.
pub(crate) trait ImageResolver: Sync {
    /// Resolves `image`; the error is a diagnostic that says what to do.
    fn resolve(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<StepImage, Box<dyn miette::Diagnostic + Send + Sync>>> + Send;
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    step: Vec<StepEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_schema")]
    schema: u32,
    image: String,
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inputs: BTreeMap<String, InputEntry>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    caches: BTreeMap<String, String>,
    memory: Option<u64>,
    #[serde(default)]
    network: NetworkEntry,
    #[serde(default)]
    pins: BTreeMap<String, Digest>,
}

/// `network = "none"` (the default) or `"host"` (a fetch step).
#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum NetworkEntry {
    #[default]
    None,
    Host,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InputEntry {
    value: Option<String>,
    file: Option<String>,
    dir: Option<String>,
    git: Option<String>,
    rev: Option<String>,
    step: Option<String>,
    output: Option<String>,
}

fn default_kind() -> String {
    "exec".into()
}

const fn default_schema() -> u32 {
    1
}

/// Reads, resolves and checks the plan file at `path`: git revisions become commit ids, host
/// files and directories are hashed, images resolved to their identities.
pub(crate) async fn load_plan_file(
    path: &Path,
    images: &impl ImageResolver,
) -> Result<Plan, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::PlanFile {
        path: path.to_owned(),
        reason: e.to_string(),
        src: miette::NamedSource::new(path.display().to_string(), String::new()),
        at: None,
    })?;
    let invalid = |reason: String, at: Option<miette::SourceSpan>| EngineError::PlanFile {
        path: path.to_owned(),
        reason,
        src: miette::NamedSource::new(path.display().to_string(), text.clone()),
        at,
    };
    let file: PlanFile = toml::from_str(&text)
        .map_err(|e| invalid(e.message().to_owned(), e.span().map(Into::into)))?;
    // Inputs are read later from other working directories: anchor them absolutely.
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(parent)
        .map_err(|e| invalid(format!("cannot resolve its directory: {e}"), None))?;
    let mut resolved_images: HashMap<String, StepImage> = HashMap::new();
    let mut steps = Vec::with_capacity(file.step.len());
    for entry in file.step {
        let image =
            match resolved_images.get(&entry.image) {
                Some(image) => image.clone(),
                None => {
                    let image = images.resolve(&entry.image).await.map_err(|source| {
                        EngineError::Image {
                            step: entry.name.clone(),
                            source: super::error::ResolveError(source),
                        }
                    })?;
                    resolved_images.insert(entry.image.clone(), image.clone());
                    image
                }
            };
        // kiln's own cache volumes (the release's build cache, what its fetches fetched) are
        // written only by kiln's steps: a plan step naming one could plant content there.
        if let Some(name) = entry
            .caches
            .keys()
            .find(|n| crate::sandbox::is_reserved_cache_name(n))
        {
            return Err(invalid(
                format!(
                    "step `{}`: cache `{name}` could be kiln's own (names holding `{}` are \
                     reserved); name the cache otherwise",
                    entry.name,
                    crate::sandbox::RESERVED_CACHE_PREFIX
                ),
                None,
            ));
        }
        let mut inputs = BTreeMap::new();
        for (name, input) in entry.inputs {
            let resolved = resolve_input(&entry.name, &name, input, &base)
                .await
                .map_err(|e| match e {
                    EngineError::PlanFile { reason, .. } => invalid(reason, None),
                    other => other,
                })?;
            inputs.insert(name, resolved);
        }
        steps.push(Step {
            name: entry.name,
            kind: entry.kind,
            schema: entry.schema,
            image,
            argv: entry.argv,
            env: entry.env,
            inputs,
            outputs: entry.outputs,
            caches: entry
                .caches
                .into_iter()
                .map(|(name, target)| CacheMount { name, target })
                .collect(),
            memory_limit: entry.memory,
            writable_inputs: false,
            network: match entry.network {
                NetworkEntry::None => Network::None,
                NetworkEntry::Host => Network::Host,
            },
            pins: entry.pins,
            impure_env: BTreeMap::new(),
            host: None,
        });
    }
    Plan::new(steps)
}

async fn resolve_input(
    step: &str,
    name: &str,
    input: InputEntry,
    base: &Path,
) -> Result<StepInput, EngineError> {
    let bad = |reason: String| EngineError::PlanFile {
        path: PathBuf::new(),
        reason: format!("step `{step}`, input `{name}`: {reason}"),
        src: miette::NamedSource::new("", String::new()),
        at: None,
    };
    let read_error = |path: &Path, source| EngineError::Input {
        step: step.to_owned(),
        input: name.to_owned(),
        path: path.to_owned(),
        source,
    };
    match input {
        InputEntry { value: Some(value), file: None, dir: None, git: None, rev: None, step: None, output: None } => {
            Ok(StepInput::Value(value))
        }
        InputEntry { file: Some(file), value: None, dir: None, git: None, rev: None, step: None, output: None } => {
            let path = base.join(file);
            let digest = hash_file(&path).await.map_err(|e| read_error(&path, e))?;
            Ok(StepInput::File { path, digest })
        }
        InputEntry { dir: Some(dir), value: None, file: None, git: None, rev: None, step: None, output: None } => {
            let path = base.join(dir);
            let digest = hash_tree(&path).await?;
            Ok(StepInput::Tree { path, digest })
        }
        InputEntry { git: Some(repo), rev: Some(rev), value: None, file: None, dir: None, step: None, output: None } => {
            let repo = base.join(repo);
            let commit = {
                let repo = repo.clone();
                tokio::task::spawn_blocking(move || crate::git::resolve_commit(&repo, &rev))
                    .await
                    .expect("git rev-parse does not panic")?
            };
            Ok(StepInput::Git {
                repo,
                commit,
                history_from: None,
                worktree: true,
            })
        }
        InputEntry { step: Some(parent), output: Some(output), value: None, file: None, dir: None, git: None, rev: None } => {
            Ok(StepInput::Output { step: parent, output })
        }
        _ => Err(bad(
            "give exactly one of `value`, `file`, `dir`, `git` (with `rev`) or `step` (with `output`)".into(),
        )),
    }
}

async fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(
            Sha256Reader::new(std::io::BufReader::with_capacity(1 << 20, file))
                .finish()?
                .0,
        )
    })
    .await
    .expect("hashing does not panic")
}

async fn hash_tree(path: &Path) -> Result<Digest, EngineError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut writer = Sha256Writer::new(std::io::sink());
        pack_tree(&path, &mut writer)?;
        Ok(writer.finish().0)
    })
    .await
    .expect("hashing does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedImage;

    impl ImageResolver for FixedImage {
        async fn resolve(
            &self,
            _image: &str,
        ) -> Result<StepImage, Box<dyn miette::Diagnostic + Send + Sync>> {
            Ok(StepImage {
                reference: "img".into(),
                identity: Digest::of(b"img"),
            })
        }
    }

    async fn keys(toml: &str) -> Vec<crate::hash::StepKey> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, toml).unwrap();
        let plan = load_plan_file(&path, &FixedImage).await.unwrap();
        plan.steps()
            .iter()
            .map(|s| s.derivation(&BTreeMap::new()).unwrap().key())
            .collect()
    }

    #[tokio::test]
    async fn the_order_of_env_and_inputs_in_the_file_does_not_change_the_key() {
        let one = keys(
            "[[step]]\nname = \"a\"\nimage = \"x\"\nargv = [\"true\"]\n\
             env = { A = \"1\", B = \"2\", C = \"3\" }\n\
             [step.inputs]\nv = { value = \"1\" }\nw = { value = \"2\" }\n",
        )
        .await;
        let two = keys(
            "[[step]]\nname = \"a\"\nimage = \"x\"\nargv = [\"true\"]\n\
             env = { C = \"3\", A = \"1\", B = \"2\" }\n\
             [step.inputs]\nw = { value = \"2\" }\nv = { value = \"1\" }\n",
        )
        .await;
        assert_eq!(one, two);
        // …while a value does.
        let three = keys(
            "[[step]]\nname = \"a\"\nimage = \"x\"\nargv = [\"true\"]\n\
             env = { C = \"3\", A = \"1\", B = \"9\" }\n\
             [step.inputs]\nw = { value = \"2\" }\nv = { value = \"1\" }\n",
        )
        .await;
        assert_ne!(one, three);
    }

    #[tokio::test]
    async fn a_plan_step_cannot_mount_kilns_own_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        let plan = |cache: &str| {
            format!(
                "[[step]]\nname = \"a\"\nimage = \"x\"\nargv = [\"true\"]\n\
                 caches = {{ {cache} = \"/cache/x\" }}\n"
            )
        };
        std::fs::write(&path, plan("kiln-fetched-modules")).unwrap();
        let err = load_plan_file(&path, &FixedImage).await.unwrap_err();
        let EngineError::PlanFile { reason, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            reason.contains("cache `kiln-fetched-modules` could be kiln's own"),
            "{reason}"
        );
        // A namespaced volume's name must not be reachable by a plain name either.
        std::fs::write(&path, plan("ci-kiln-fetched-modules")).unwrap();
        assert!(load_plan_file(&path, &FixedImage).await.is_err());
        std::fs::write(&path, plan("gomod")).unwrap();
        assert!(load_plan_file(&path, &FixedImage).await.is_ok());
    }

    #[tokio::test]
    async fn a_malformed_plan_points_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, "[[step]]\nname = \"a\"\nimage = 7\n").unwrap();
        let err = load_plan_file(&path, &FixedImage).await.unwrap_err();
        assert!(
            matches!(err, EngineError::PlanFile { at: Some(_), .. }),
            "{err:?}"
        );
    }
}
