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

use super::fetch::{FetchConfig, third_party_requires};

use crate::gomod::GoModError;
use crate::names::Identity;

use super::{
    FORK_MODULE, GoModEdit, ReleaseError, Resolved, bump_go_files, edit_go_mod,
    extra_module_versions, fork_module_versions, scripts,
};

/// Version of the release recipe: part of every step's kind schema.
pub(crate) const RECIPE_SCHEMA: u32 = 1;

/// The recipe's step names, as the lockfile and run reports carry them.
pub(crate) mod step {
    /// The rebase of the k3s patches onto the new upstream tag.
    pub(crate) const REBASE: &str = "rebase";
    /// The fork's `tag.sh`.
    pub(crate) const TAG: &str = "tag";
    /// The GOPROXY tree of the new tags and the extra modules.
    pub(crate) const MODULES: &str = "modules";
    /// k3s's go.mod and Go bump, as data.
    pub(crate) const K3S_EDIT: &str = "k3s-edit";
    /// k3s's third-party modules, fetched with network and pinned.
    pub(crate) const MODULES_FETCH: &str = "modules-fetch";
    /// `go mod tidy` and the k3s commit.
    pub(crate) const K3S_TIDY: &str = "k3s-tidy";
    /// k3s's `scripts/download`, with network and pinned.
    pub(crate) const K3S_DOWNLOAD: &str = "k3s-download";
    /// `make`.
    pub(crate) const BUILD: &str = "build";
}

/// The recipe's output names (a trailing `/` marks a directory).
pub(crate) mod output {
    /// A commit id.
    pub(crate) const HEAD: &str = "head";
    /// The rebased commits.
    pub(crate) const REBASE_BUNDLE: &str = "rebase.bundle";
    /// What `scripts/download` fetched, as `<scheme>/<host>/<path>`.
    pub(crate) const URLS: &str = "urls/";
    /// `commit title` lines of the carried patches, oldest first.
    pub(crate) const PATCHES: &str = "patches";
    /// `tag commit [tag-object]` lines of every tag `tag.sh` made.
    pub(crate) const TAGS: &str = "tags";
    /// tag.sh's `git push` lines.
    pub(crate) const PUSH: &str = "push";
    /// The stamp commit and every tag.
    pub(crate) const TAG_BUNDLE: &str = "tag.bundle";
    /// The GOPROXY tree.
    pub(crate) const PROXY: &str = "proxy/";
    /// `module version h1:` lines.
    pub(crate) const SUMS: &str = "sums";
    /// The edited k3s files.
    pub(crate) const EDIT: &str = "edit/";
    /// The changed lines.
    pub(crate) const CHANGES: &str = "changes";
    /// The k3s branch's commit.
    pub(crate) const K3S_BUNDLE: &str = "k3s.bundle";
    /// `dist/artifacts`.
    pub(crate) const ARTIFACTS: &str = "artifacts/";
}

/// Why a builtin step (`modules`, `k3s-edit`) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuiltinError {
    /// git could not read the tag bundle.
    #[error("cannot read the tag bundle: {stderr}")]
    TagBundle {
        /// What git said.
        stderr: String,
    },
    /// git could not be started.
    #[error("cannot run git")]
    Git(#[source] std::io::Error),
    /// The modules could not be served.
    #[error(transparent)]
    Modules(#[from] GoModError),
    /// k3s could not be edited.
    #[error(transparent)]
    Edit(#[from] ReleaseError),
    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuiltinError {
    let path = path.to_owned();
    move |source| BuiltinError::Io {
        action,
        path,
        source,
    }
}

/// An extra module served from its repository's tags.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ServedModule {
    /// Module path.
    pub(crate) path: String,
    /// Local mirror of its repository.
    #[serde(skip)]
    pub(crate) mirror: PathBuf,
    /// Its tags → commit ids.
    pub(crate) tags: BTreeMap<String, String>,
}

/// Everything the plan is made of: what the release resolved to, the toolchain image its
/// container steps run in, and who its commits are by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReleaseInputs<'a> {
    /// The names, mirrors, commits, Go versions, clock and extra modules.
    pub(crate) resolved: &'a Resolved,
    /// The toolchain image.
    pub(crate) toolchain: &'a StepImage,
    /// Commit identity.
    pub(crate) identity: &'a Identity,
    /// Where third-party modules come from.
    pub(crate) fetch: &'a FetchConfig,
}

fn base_env(inputs: &ReleaseInputs<'_>) -> BTreeMap<String, String> {
    let n = &inputs.resolved.names;
    let date = format!("@{} +0000", inputs.resolved.source_date_epoch);
    let (new_k8s, new_fork_tag) = (n.new_k8s().to_string(), n.new_fork_tag().to_string());
    let mut env: BTreeMap<String, String> = [
        ("GIT_AUTHOR_NAME", inputs.identity.name.as_str()),
        ("GIT_AUTHOR_EMAIL", inputs.identity.email.as_str()),
        ("GIT_COMMITTER_NAME", inputs.identity.name.as_str()),
        ("GIT_COMMITTER_EMAIL", inputs.identity.email.as_str()),
        ("GIT_AUTHOR_DATE", date.as_str()),
        ("GIT_COMMITTER_DATE", date.as_str()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GOTOOLCHAIN", "local"),
        ("NEW_K8S", new_k8s.as_str()),
        ("NEW_FORK_TAG", new_fork_tag.as_str()),
        ("NEW_COMMIT", inputs.resolved.new_commit.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert(
        "SOURCE_DATE_EPOCH".into(),
        inputs.resolved.source_date_epoch.to_string(),
    );
    env
}

fn git(repo: &Path, commit: &str) -> StepInput {
    StepInput::Git {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        history_from: None,
        worktree: true,
    }
}

/// A commit the step reads through git alone: no checkout.
fn git_objects(repo: &Path, commit: &str) -> StepInput {
    StepInput::Git {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        history_from: None,
        worktree: false,
    }
}

fn from_step(step: &str, output: &str) -> StepInput {
    StepInput::Output {
        step: step.into(),
        output: output.into(),
    }
}

fn container(
    name: &str,
    inputs: &ReleaseInputs<'_>,
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
        network: crate::sandbox::Network::None,
        pins: BTreeMap::new(),
        impure_env: BTreeMap::new(),
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
        network: crate::sandbox::Network::None,
        pins: BTreeMap::new(),
        impure_env: BTreeMap::new(),
        host: Some(action),
    }
}

/// The release's plan.
pub(crate) fn release_plan(inputs: &ReleaseInputs<'_>) -> Result<Plan, EngineError> {
    let n = &inputs.resolved.names;
    let mut env = base_env(inputs);
    env.insert("OLD_COMMIT".into(), inputs.resolved.old_commit.clone());
    env.insert(
        "OLD_FORK_COMMIT".into(),
        inputs.resolved.old_fork_commit.clone(),
    );
    env.insert("PATCHES_TIP".into(), inputs.resolved.patches_tip.clone());

    let mut rebase = container(step::REBASE, inputs, scripts::REBASE, env);
    // The rebase reads the patches' history back to the old upstream commit, no further,
    // through git alone: no checkout.
    rebase.inputs.insert(
        "fork".into(),
        StepInput::Git {
            repo: inputs.resolved.fork.clone(),
            commit: inputs.resolved.old_fork_commit.clone(),
            history_from: Some(inputs.resolved.old_commit.clone()),
            worktree: false,
        },
    );
    // Only its tag is fetched from it: no checkout.
    rebase.inputs.insert(
        "upstream".into(),
        git_objects(&inputs.resolved.upstream, &inputs.resolved.new_commit),
    );
    rebase.outputs = vec![
        output::HEAD.into(),
        output::REBASE_BUNDLE.into(),
        output::PATCHES.into(),
    ];

    // No GOFLAGS: tag.sh builds the tree the way the tree says (kubernetes' vendor/, and its
    // go.work from 1.30, which refuses -mod=mod), offline.
    let mut env = base_env(inputs);
    env.insert("GOPROXY".into(), "off".into());
    env.insert("GOSUMDB".into(), "off".into());
    let mut tag = container(step::TAG, inputs, scripts::TAG, env);
    tag.inputs.insert(
        "upstream".into(),
        git(&inputs.resolved.upstream, &inputs.resolved.new_commit),
    );
    tag.inputs.insert(
        "rebase.bundle".into(),
        from_step(step::REBASE, output::REBASE_BUNDLE),
    );
    tag.inputs
        .insert("head".into(), from_step(step::REBASE, output::HEAD));
    tag.outputs = vec![
        output::TAGS.into(),
        output::PUSH.into(),
        output::TAG_BUNDLE.into(),
    ];
    tag.caches = vec![CacheMount {
        name: go_build_cache(inputs.toolchain),
        target: "/cache/go-build".into(),
    }];

    let fork_tag = n.new_fork_tag().to_string();
    let served = inputs.resolved.modules.clone();
    let mut modules = builtin(
        step::MODULES,
        HostAction::new(move |input, out| build_proxy(input, out, &fork_tag, &served)),
    );
    // The builtin reads the tagged trees through git: no checkout.
    modules.inputs.insert(
        "upstream".into(),
        git_objects(&inputs.resolved.upstream, &inputs.resolved.new_commit),
    );
    modules.inputs.insert(
        "tag.bundle".into(),
        from_step(step::TAG, output::TAG_BUNDLE),
    );
    for (index, module) in inputs.resolved.modules.iter().enumerate() {
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
            modules.inputs.insert(
                format!("module-{index}-repo"),
                git_objects(&module.mirror, commit),
            );
        }
    }
    modules.outputs = vec![output::PROXY.into(), output::SUMS.into()];

    let edit = GoModEdit::new(n.old_fork_tag(), n.new_fork_tag());
    let go_bump = (inputs.resolved.old_go != *n.go_version()).then(|| n.go_version().to_string());
    let mut k3s_edit = {
        let (edit, go_bump) = (edit.clone(), go_bump.clone());
        builtin(
            step::K3S_EDIT,
            HostAction::new(move |input, out| edit_k3s(input, out, &edit, go_bump.as_deref())),
        )
    };
    k3s_edit.inputs.insert(
        "k3s".into(),
        git(&inputs.resolved.k3s, &inputs.resolved.k3s_commit),
    );
    for (key, value) in edit.as_inputs() {
        k3s_edit.inputs.insert(key.into(), StepInput::Value(value));
    }
    k3s_edit.inputs.insert(
        "go_bump".into(),
        StepInput::Value(go_bump.unwrap_or_default()),
    );
    k3s_edit.outputs = vec![output::EDIT.into(), output::CHANGES.into()];

    let served_paths: Vec<String> = std::iter::once(FORK_MODULE.to_owned())
        .chain(inputs.resolved.modules.iter().map(|m| m.path.clone()))
        .collect();
    // k3s's third-party modules, when it has any, come from the one step with network.
    let fetch = fetch_step(inputs, &served_paths)?;
    let go_env = |mut env: BTreeMap<String, String>| {
        // k3s has no vendor/: tidy writes go.mod and go.sum, the build reads the module graph.
        env.insert("GOFLAGS".into(), "-mod=mod".into());
        let proxy = if fetch.is_some() {
            "file:///in/proxy,file:///in/fetched"
        } else {
            "file:///in/proxy"
        };
        env.insert("GOPROXY".into(), proxy.into());
        // The checksum database stays on for every path but kiln's own and kiln.toml's
        // exemptions, as in the fetch step. Offline, it can answer nothing: tidy starts from
        // the sums the fetch step checked against it (pinned since), and a module without a
        // sum fails loudly instead of being trusted.
        let nosumdb: Vec<String> = served_paths
            .iter()
            .chain(&inputs.fetch.nosumdb)
            .cloned()
            .collect();
        env.insert("GONOSUMDB".into(), nosumdb.join(","));
        env
    };
    let mut tidy = container(
        step::K3S_TIDY,
        inputs,
        scripts::K3S_TIDY,
        go_env(base_env(inputs)),
    );
    tidy.inputs.insert(
        "k3s".into(),
        git(&inputs.resolved.k3s, &inputs.resolved.k3s_commit),
    );
    tidy.inputs
        .insert("edit".into(), from_step(step::K3S_EDIT, output::EDIT));
    tidy.inputs
        .insert("proxy".into(), from_step(step::MODULES, output::PROXY));
    if fetch.is_some() {
        tidy.inputs.insert(
            "fetched".into(),
            from_step(step::MODULES_FETCH, output::PROXY),
        );
        tidy.inputs
            .insert("sums".into(), from_step(step::MODULES_FETCH, output::SUMS));
    }
    tidy.outputs = vec![output::HEAD.into(), output::K3S_BUNDLE.into()];
    // No module cache volume: GOMODCACHE (/cache/gomod) is the container's own, filled from
    // kiln's proxy by this step alone. A shared one let any earlier step (or another
    // release's module of the same version with other content) decide what this one reads.

    // The shared build cache also holds Go's index of module-cache directories, keyed by their
    // path alone (Go trusts them immutable): one step's writes there would decide which files
    // the next build compiles. Without the index Go lists the directory itself; compiled
    // packages stay keyed by the content of their files.
    let mut build_env = go_env(base_env(inputs));
    build_env.insert("GODEBUG".into(), "goindex=0".into());
    // What k3s's scripts/version.sh asks GitHub for, served from the upstream tree kiln holds:
    // kubernetes' build/dependencies.yaml at the new tag (the upstream Go).
    if let Some(yaml) = crate::git::read_file(
        &inputs.resolved.upstream,
        &inputs.resolved.new_commit,
        "build/dependencies.yaml",
    )
    .map_err(EngineError::from)?
    {
        build_env.insert("KILN_DEPENDENCIES_YAML".into(), yaml.trim_end().to_owned());
    }
    let download = download_step(inputs, &build_env, fetch.is_some())?;
    let build_script = format!("{}{}", scripts::URL_SHIM, scripts::BUILD);
    let mut build = container(step::BUILD, inputs, &build_script, build_env);
    if download.is_some() {
        build
            .inputs
            .insert("urls".into(), from_step(step::K3S_DOWNLOAD, output::URLS));
    }
    build.inputs.insert(
        "k3s".into(),
        git(&inputs.resolved.k3s, &inputs.resolved.k3s_commit),
    );
    build.inputs.insert(
        "k3s.bundle".into(),
        from_step(step::K3S_TIDY, output::K3S_BUNDLE),
    );
    build
        .inputs
        .insert("proxy".into(), from_step(step::MODULES, output::PROXY));
    if fetch.is_some() {
        build.inputs.insert(
            "fetched".into(),
            from_step(step::MODULES_FETCH, output::PROXY),
        );
    }
    build.outputs = vec![output::ARTIFACTS.into()];
    // The module cache is the step's own, as for k3s-tidy. The Go build cache is shared only
    // among steps of one toolchain image (its entries are keyed by Go's own action hashes,
    // which a different Go computes differently).
    build.caches = vec![CacheMount {
        name: go_build_cache(inputs.toolchain),
        target: "/cache/go-build".into(),
    }];

    let mut steps = vec![rebase, tag, modules, k3s_edit, tidy, build];
    steps.extend(fetch);
    steps.extend(download);
    Plan::new(steps)
}

/// The `k3s-download` step, when k3s has `scripts/download`: it runs with network, and every
/// URL it asks for is fetched once into its output, pinned like the modules; the build replays
/// it offline (`env`: the build's, so scripts/version.sh sees the same module graph).
fn download_step(
    inputs: &ReleaseInputs<'_>,
    env: &BTreeMap<String, String>,
    fetched_modules: bool,
) -> Result<Option<Step>, EngineError> {
    let resolved = inputs.resolved;
    let has_download =
        crate::git::read_file(&resolved.k3s, &resolved.k3s_commit, "scripts/download")
            .map_err(EngineError::from)?
            .is_some();
    if !has_download {
        return Ok(None);
    }
    let script = format!("{}{}", scripts::URL_SHIM, scripts::DOWNLOAD);
    let mut download = container(step::K3S_DOWNLOAD, inputs, &script, env.clone());
    download.network = inputs.fetch.network.clone();
    if let Some(mirror) = &inputs.fetch.download_mirror {
        download
            .impure_env
            .insert("KILN_DOWNLOAD_MIRROR".into(), mirror.clone());
    }
    download
        .inputs
        .insert("k3s".into(), git(&resolved.k3s, &resolved.k3s_commit));
    // k3s as the edit leaves it, not tidy's commit: scripts/version.sh reads only the module
    // graph (which Go resolves from these offline) and the branch name, so the fetch runs
    // beside tidy instead of after it.
    download
        .inputs
        .insert("edit".into(), from_step(step::K3S_EDIT, output::EDIT));
    download
        .inputs
        .insert("proxy".into(), from_step(step::MODULES, output::PROXY));
    if fetched_modules {
        download.inputs.insert(
            "fetched".into(),
            from_step(step::MODULES_FETCH, output::PROXY),
        );
        download
            .inputs
            .insert("sums".into(), from_step(step::MODULES_FETCH, output::SUMS));
    }
    download.outputs = vec![output::URLS.into()];
    download.pins.clone_from(&inputs.fetch.download_pins);
    Ok(Some(download))
}

/// The `modules-fetch` step, when k3s requires modules kiln does not serve: refused (before
/// any step) when no module proxy may be asked.
fn fetch_step(inputs: &ReleaseInputs<'_>, served: &[String]) -> Result<Option<Step>, EngineError> {
    let resolved = inputs.resolved;
    let go_mod = crate::git::read_file(&resolved.k3s, &resolved.k3s_commit, "go.mod")
        .map_err(EngineError::from)?
        .unwrap_or_default();
    let third_party = third_party_requires(&go_mod, served);
    if third_party.is_empty() {
        return Ok(None);
    }
    let Some(proxy) = &inputs.fetch.proxy else {
        return Err(EngineError::InvalidStep {
            step: step::MODULES_FETCH.into(),
            reason: format!(
                "k3s requires modules only a module proxy has ({}), and the module proxy is \
                 off: set [go] proxy in kiln.toml or KILN_GO_PROXY",
                third_party.join(", ")
            ),
        });
    };
    let mut env = base_env(inputs);
    env.insert("GOFLAGS".into(), "-mod=mod".into());
    let nosumdb: Vec<String> = served
        .iter()
        .chain(&inputs.fetch.nosumdb)
        .cloned()
        .collect();
    env.insert("GONOSUMDB".into(), nosumdb.join(","));
    // Served paths as written and as the module cache spells them (`!x` for `X`).
    let mut spelled: Vec<String> = served.to_vec();
    spelled.extend(served.iter().map(|p| crate::gomod::escape_path(p)));
    spelled.sort();
    spelled.dedup();
    env.insert("KILN_SERVED".into(), spelled.join(" "));
    // The paths no checksum database covers, as written and case-escaped: what is kept of
    // them for later fetches must be pinned by k3s's go.sum.
    let mut unchecked: Vec<String> = inputs.fetch.nosumdb.clone();
    unchecked.extend(
        inputs
            .fetch
            .nosumdb
            .iter()
            .map(|p| crate::gomod::escape_path(p)),
    );
    unchecked.sort();
    unchecked.dedup();
    env.insert("KILN_NOSUMDB".into(), unchecked.join(" "));
    let mut fetch = container(step::MODULES_FETCH, inputs, scripts::FETCH, env);
    fetch.network = inputs.fetch.network.clone();
    fetch
        .impure_env
        .insert("KILN_MODULE_PROXY".into(), proxy.clone());
    fetch
        .inputs
        .insert("k3s".into(), git(&resolved.k3s, &resolved.k3s_commit));
    fetch
        .inputs
        .insert("edit".into(), from_step(step::K3S_EDIT, output::EDIT));
    fetch
        .inputs
        .insert("proxy".into(), from_step(step::MODULES, output::PROXY));
    fetch.outputs = vec![output::PROXY.into(), output::SUMS.into()];
    // What earlier fetches fetched, read before the network: a bump that raises one module
    // downloads that module only. Not part of the key and never trusted blindly: Go checks
    // every module it reads there against go.sum or the checksum database as any download,
    // the outputs are held to their pins, and `kiln verify` refetches with fresh caches.
    fetch.caches = vec![CacheMount {
        name: FETCHED_CACHE.into(),
        target: "/cache/fetched".into(),
    }];
    fetch.pins.clone_from(&inputs.fetch.pins);
    if fetch.pins.is_empty() {
        tracing::info!(
            "k3s's third-party modules are fetched for the first time for this release: the \
             lockfile records what was fetched, and later runs must fetch the same"
        );
    }
    Ok(Some(fetch))
}

/// The cache volume of what `modules-fetch` steps fetched (a GOPROXY tree).
pub(crate) const FETCHED_CACHE: &str = "kiln-fetched-modules";

/// The prefix of the Go build cache volumes of release steps (kiln's own: plan files may not
/// name them).
const GO_BUILD_CACHE_PREFIX: &str = "kiln-go-build-";

/// The name of the Go build cache volume of steps in `toolchain`.
fn go_build_cache(toolchain: &StepImage) -> String {
    format!("{GO_BUILD_CACHE_PREFIX}{}", &toolchain.identity.hex()[..16])
}

/// The `modules` builtin: the fork's new tags and the extra modules as a GOPROXY tree.
fn build_proxy(
    input: &Path,
    out: &Path,
    fork_tag: &str,
    served: &[ServedModule],
) -> Result<(), BuiltinError> {
    let repo = input.join("upstream");
    let fetch = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .args(["fetch", "--quiet", "--end-of-options"])
        .arg(input.join("tag.bundle"))
        .arg("refs/tags/*:refs/tags/*")
        .output()
        .map_err(BuiltinError::Git)?;
    if !fetch.status.success() {
        return Err(BuiltinError::TagBundle {
            stderr: String::from_utf8_lossy(&fetch.stderr).trim().to_owned(),
        });
    }
    let mut versions: Vec<ModuleVersion> = fork_module_versions(&repo, fork_tag)?;
    for (index, module) in served.iter().enumerate() {
        let tags: Vec<(String, String)> = module
            .tags
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        versions.extend(extra_module_versions(
            &input.join(format!("module-{index}-repo")),
            &module.path,
            &tags,
        )?);
    }
    let served = write_proxy(&out.join("proxy"), &versions)?;
    let mut sums = String::new();
    for m in &served {
        let _ = writeln!(sums, "{} {} {}", m.module, m.version, m.h1);
        let _ = writeln!(sums, "{} {}/go.mod {}", m.module, m.version, m.go_mod_h1);
    }
    let path = out.join("sums");
    std::fs::write(&path, sums).map_err(io_error("write", &path))
}

/// The `k3s-edit` builtin: go.mod and the Go bump, as data, into `edit/`.
fn edit_k3s(
    input: &Path,
    out: &Path,
    edit: &GoModEdit,
    go: Option<&str>,
) -> Result<(), BuiltinError> {
    let k3s = input.join("k3s");
    let go_mod = k3s.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).map_err(io_error("read", &go_mod))?;
    let (new_text, mut changes) = edit_go_mod(&text, edit, "go.mod")?;
    let edit_dir = out.join("edit");
    std::fs::create_dir_all(&edit_dir).map_err(io_error("create", &edit_dir))?;
    let edited = edit_dir.join("go.mod");
    std::fs::write(&edited, new_text).map_err(io_error("write", &edited))?;
    if let Some(go) = go {
        let (files, go_changes) = bump_go_files(&k3s, go)?;
        for (path, content) in files {
            let relative = path
                .strip_prefix(&k3s)
                .expect("bump_go_files names files below the checkout");
            let dest = edit_dir.join(relative);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
            }
            std::fs::write(&dest, content).map_err(io_error("write", &dest))?;
        }
        changes.extend(go_changes);
    }
    let mut report = String::new();
    for change in &changes {
        let _ = writeln!(report, "{change}");
    }
    let path = out.join("changes");
    std::fs::write(&path, report).map_err(io_error("write", &path))
}
