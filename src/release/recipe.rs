//! The release as a plan of engine steps (DESIGN.md §1, §2):
//!
//! ```text
//! rebase ──► tag ──► modules ──┬──► k3s-tidy ──► build
//!                  k3s-edit ───┘
//! ```
//! `rebase`, `tag`, `k3s-tidy` and `build` run in the Go toolchain container; `modules` (the
//! GOPROXY tree) and `k3s-edit` (go.mod and the Go bump, as data) are builtins run by kiln.
//! Git results travel as bundles between steps; their commit ids are what the lockfile records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::engine::{EngineError, HostAction, Plan, Step, StepImage, StepInput};
use crate::gomod::{ModuleVersion, write_proxy};
use crate::hash::Digest;
use crate::sandbox::CacheMount;

use super::{
    FORK_MODULE, GoModEdit, ReleaseNames, bump_go_files, edit_go_mod, extra_module_versions,
    fork_module_versions, scripts,
};

/// Version of the release recipe: part of every step's kind schema.
pub const RECIPE_SCHEMA: u32 = 1;

/// Who the release's commits are by.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// An extra module served from its repository's tags.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServedModule {
    /// Module path.
    pub path: String,
    /// Local mirror of its repository.
    #[serde(skip)]
    pub mirror: PathBuf,
    /// Its tags → commit ids.
    pub tags: BTreeMap<String, String>,
}

/// Everything resolved before planning.
#[derive(Clone, Debug)]
pub struct ReleaseInputs {
    /// The names.
    pub names: ReleaseNames,
    /// Mirror of upstream.
    pub upstream: PathBuf,
    /// Mirror of the fork.
    pub fork: PathBuf,
    /// Mirror of k3s.
    pub k3s: PathBuf,
    /// Commit of the old upstream tag.
    pub old_commit: String,
    /// Commit of the new upstream tag.
    pub new_commit: String,
    /// Commit of the old fork tag.
    pub old_fork_commit: String,
    /// The release branch head of k3s.
    pub k3s_commit: String,
    /// `.go-version` at the old upstream tag (the Go bump happens when it differs).
    pub old_go: String,
    /// The toolchain image.
    pub toolchain: StepImage,
    /// Commit identity.
    pub identity: Identity,
    /// `SOURCE_DATE_EPOCH` and the commit dates.
    pub source_date_epoch: i64,
    /// Extra modules k3s requires.
    pub modules: Vec<ServedModule>,
}

fn base_env(inputs: &ReleaseInputs) -> BTreeMap<String, String> {
    let n = &inputs.names;
    let date = format!("@{} +0000", inputs.source_date_epoch);
    let mut env: BTreeMap<String, String> = [
        ("GIT_AUTHOR_NAME", inputs.identity.name.as_str()),
        ("GIT_AUTHOR_EMAIL", inputs.identity.email.as_str()),
        ("GIT_COMMITTER_NAME", inputs.identity.name.as_str()),
        ("GIT_COMMITTER_EMAIL", inputs.identity.email.as_str()),
        ("GIT_AUTHOR_DATE", date.as_str()),
        ("GIT_COMMITTER_DATE", date.as_str()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GOTOOLCHAIN", "local"),
        ("GOFLAGS", "-mod=mod"),
        ("NEW_K8S", n.new_k8s.as_str()),
        ("NEW_FORK_TAG", n.new_fork_tag.as_str()),
        ("NEW_COMMIT", inputs.new_commit.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert(
        "SOURCE_DATE_EPOCH".into(),
        inputs.source_date_epoch.to_string(),
    );
    env
}

fn git(repo: &Path, commit: &str) -> StepInput {
    StepInput::Git {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
    }
}

fn output(step: &str, output: &str) -> StepInput {
    StepInput::Output {
        step: step.into(),
        output: output.into(),
    }
}

fn container(
    name: &str,
    inputs: &ReleaseInputs,
    script: &str,
    env: BTreeMap<String, String>,
) -> Step {
    Step {
        name: name.into(),
        kind: format!("release/{name}"),
        schema: RECIPE_SCHEMA,
        image: inputs.toolchain.clone(),
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        env,
        inputs: BTreeMap::new(),
        outputs: Vec::new(),
        caches: Vec::new(),
        memory_limit: None,
        writable_inputs: true,
        host: None,
    }
}

fn builtin(name: &str, action: HostAction) -> Step {
    Step {
        name: name.into(),
        kind: format!("release/{name}"),
        schema: RECIPE_SCHEMA,
        // Builtins run in kiln itself: their "image" is kiln's builtin of this schema.
        image: StepImage {
            reference: "builtin".into(),
            identity: Digest::of(b"kiln/builtin/1"),
        },
        argv: vec!["kiln-builtin".into(), name.into()],
        env: BTreeMap::new(),
        inputs: BTreeMap::new(),
        outputs: Vec::new(),
        caches: Vec::new(),
        memory_limit: None,
        writable_inputs: false,
        host: Some(action),
    }
}

/// The release's plan.
pub fn release_plan(inputs: &ReleaseInputs) -> Result<Plan, EngineError> {
    let n = &inputs.names;
    let mut env = base_env(inputs);
    env.insert("OLD_COMMIT".into(), inputs.old_commit.clone());
    env.insert("OLD_FORK_COMMIT".into(), inputs.old_fork_commit.clone());

    let mut rebase = container("rebase", inputs, scripts::REBASE, env);
    rebase
        .inputs
        .insert("fork".into(), git(&inputs.fork, &inputs.old_fork_commit));
    rebase
        .inputs
        .insert("upstream".into(), git(&inputs.upstream, &inputs.new_commit));
    rebase.outputs = vec!["head".into(), "rebase.bundle".into()];

    let mut env = base_env(inputs);
    env.insert("GOPROXY".into(), "off".into());
    env.insert("GOSUMDB".into(), "off".into());
    let mut tag = container("tag", inputs, scripts::TAG, env);
    tag.inputs
        .insert("upstream".into(), git(&inputs.upstream, &inputs.new_commit));
    tag.inputs
        .insert("rebase.bundle".into(), output("rebase", "rebase.bundle"));
    tag.inputs.insert("head".into(), output("rebase", "head"));
    tag.outputs = vec!["tags".into(), "push".into(), "tag.bundle".into()];
    tag.caches = vec![CacheMount {
        name: "go-build".into(),
        target: "/cache/go-build".into(),
    }];

    let fork_tag = n.new_fork_tag.clone();
    let served = inputs.modules.clone();
    let mut modules = builtin(
        "modules",
        HostAction::new(move |input, out| build_proxy(input, out, &fork_tag, &served)),
    );
    modules
        .inputs
        .insert("upstream".into(), git(&inputs.upstream, &inputs.new_commit));
    modules
        .inputs
        .insert("tag.bundle".into(), output("tag", "tag.bundle"));
    for (index, module) in inputs.modules.iter().enumerate() {
        let tags: Vec<String> = module
            .tags
            .iter()
            .map(|(t, c)| format!("{t}={c}"))
            .collect();
        modules.inputs.insert(
            format!("module-{index}"),
            StepInput::Value(format!("{} {}", module.path, tags.join(" "))),
        );
        if let Some(commit) = module.tags.values().next() {
            modules
                .inputs
                .insert(format!("module-{index}-repo"), git(&module.mirror, commit));
        }
    }
    modules.outputs = vec!["proxy/".into(), "sums".into()];

    let edit = GoModEdit {
        old_k8s: n.old_k8s.clone(),
        new_k8s: n.new_k8s.clone(),
        old_client: n.old_client.clone(),
        new_client: n.new_client.clone(),
        old_fork_tag: n.old_fork_tag.clone(),
        new_fork_tag: n.new_fork_tag.clone(),
    };
    let go_bump = (inputs.old_go != n.go_version).then(|| n.go_version.clone());
    let mut k3s_edit = {
        let (edit, go_bump) = (edit.clone(), go_bump.clone());
        builtin(
            "k3s-edit",
            HostAction::new(move |input, out| edit_k3s(input, out, &edit, go_bump.as_deref())),
        )
    };
    k3s_edit
        .inputs
        .insert("k3s".into(), git(&inputs.k3s, &inputs.k3s_commit));
    for (key, value) in [
        ("old_k8s", &edit.old_k8s),
        ("new_k8s", &edit.new_k8s),
        ("old_client", &edit.old_client),
        ("new_client", &edit.new_client),
        ("old_fork_tag", &edit.old_fork_tag),
        ("new_fork_tag", &edit.new_fork_tag),
    ] {
        k3s_edit
            .inputs
            .insert(key.into(), StepInput::Value(value.clone()));
    }
    k3s_edit.inputs.insert(
        "go_bump".into(),
        StepInput::Value(go_bump.unwrap_or_default()),
    );
    k3s_edit.outputs = vec!["edit/".into(), "changes".into()];

    let served_paths: Vec<String> = std::iter::once(FORK_MODULE.to_owned())
        .chain(inputs.modules.iter().map(|m| m.path.clone()))
        .collect();
    let go_env = |mut env: BTreeMap<String, String>| {
        env.insert("GOPROXY".into(), "file:///in/proxy".into());
        env.insert("GONOSUMDB".into(), served_paths.join(","));
        env.insert("GOSUMDB".into(), "off".into());
        env
    };
    let mut tidy = container(
        "k3s-tidy",
        inputs,
        scripts::K3S_TIDY,
        go_env(base_env(inputs)),
    );
    tidy.inputs
        .insert("k3s".into(), git(&inputs.k3s, &inputs.k3s_commit));
    tidy.inputs
        .insert("edit".into(), output("k3s-edit", "edit/"));
    tidy.inputs
        .insert("proxy".into(), output("modules", "proxy/"));
    tidy.outputs = vec!["head".into(), "k3s.bundle".into()];
    tidy.caches = vec![CacheMount {
        name: "go-mod".into(),
        target: "/cache/gomod".into(),
    }];

    let mut build = container("build", inputs, scripts::BUILD, go_env(base_env(inputs)));
    build
        .inputs
        .insert("k3s".into(), git(&inputs.k3s, &inputs.k3s_commit));
    build
        .inputs
        .insert("k3s.bundle".into(), output("k3s-tidy", "k3s.bundle"));
    build
        .inputs
        .insert("proxy".into(), output("modules", "proxy/"));
    build.outputs = vec!["artifacts/".into()];
    build.caches = vec![
        CacheMount {
            name: "go-mod".into(),
            target: "/cache/gomod".into(),
        },
        CacheMount {
            name: "go-build".into(),
            target: "/cache/go-build".into(),
        },
    ];

    Plan::new(vec![rebase, tag, modules, k3s_edit, tidy, build])
}

/// The `modules` builtin: the fork's new tags and the extra modules as a GOPROXY tree.
fn build_proxy(
    input: &Path,
    out: &Path,
    fork_tag: &str,
    served: &[ServedModule],
) -> Result<(), String> {
    let repo = input.join("upstream");
    let fetch = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["fetch", "--quiet"])
        .arg(input.join("tag.bundle"))
        .arg("refs/tags/*:refs/tags/*")
        .output()
        .map_err(|e| format!("cannot run git fetch: {e}"))?;
    if !fetch.status.success() {
        return Err(format!(
            "cannot read the tag bundle: {}",
            String::from_utf8_lossy(&fetch.stderr).trim()
        ));
    }
    let mut versions: Vec<ModuleVersion> =
        fork_module_versions(&repo, fork_tag).map_err(|e| e.to_string())?;
    for (index, module) in served.iter().enumerate() {
        let tags: Vec<String> = module.tags.keys().cloned().collect();
        versions.extend(
            extra_module_versions(
                &input.join(format!("module-{index}-repo")),
                &module.path,
                &tags,
            )
            .map_err(|e| e.to_string())?,
        );
    }
    let served = write_proxy(&out.join("proxy"), &versions).map_err(|e| e.to_string())?;
    let mut sums = String::new();
    for m in &served {
        let _ = writeln!(sums, "{} {} {}", m.module, m.version, m.h1);
        let _ = writeln!(sums, "{} {}/go.mod {}", m.module, m.version, m.go_mod_h1);
    }
    std::fs::write(out.join("sums"), sums).map_err(|e| format!("cannot write sums: {e}"))
}

/// The `k3s-edit` builtin: go.mod and the Go bump, as data, into `edit/`.
fn edit_k3s(input: &Path, out: &Path, edit: &GoModEdit, go: Option<&str>) -> Result<(), String> {
    let k3s = input.join("k3s");
    let text = std::fs::read_to_string(k3s.join("go.mod"))
        .map_err(|e| format!("cannot read k3s's go.mod: {e}"))?;
    let (new_text, mut changes) = edit_go_mod(&text, edit, "go.mod").map_err(|e| e.to_string())?;
    let edit_dir = out.join("edit");
    std::fs::create_dir_all(&edit_dir).map_err(|e| e.to_string())?;
    std::fs::write(edit_dir.join("go.mod"), new_text).map_err(|e| e.to_string())?;
    if let Some(go) = go {
        let (files, go_changes) = bump_go_files(&k3s, go).map_err(|e| e.to_string())?;
        for (path, content) in files {
            let relative = path.strip_prefix(&k3s).map_err(|e| e.to_string())?;
            let dest = edit_dir.join(relative);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(dest, content).map_err(|e| e.to_string())?;
        }
        changes.extend(go_changes);
    }
    let mut report = String::new();
    for change in &changes {
        let _ = writeln!(report, "{change}");
    }
    std::fs::write(out.join("changes"), report).map_err(|e| e.to_string())
}
