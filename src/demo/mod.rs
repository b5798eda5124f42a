//! The demo world: upstream Kubernetes, the k3s-io fork and k3s as small but faithful bare
//! repositories, generated with pinned identities and dates so that every commit and tag id is
//! the same on every machine. It is the default for `kiln demo`, the fixture of end-to-end
//! tests and, with `--scale`, the benchmark input.
//!
//! ```text
//! DIR/upstream.git   annotated tags v1.28.1, v1.28.2, v1.28.3 on a linear history
//! DIR/fork.git       upstream + two k3s patches on v1.28.1 + the stamp commit of tag.sh,
//!                    tags v1.28.1-k3s1 and staging/src/k8s.io/<m>/v1.28.1-k3s1
//! DIR/k3s.git        branch release-1.28 requiring the v1.28.1-k3s1 fork tags
//! DIR/helper.git     github.com/k3s-io/helper, an unrelated module k3s requires
//! DIR/downloads/     what k3s's scripts/download fetches (k3s-root, a Helm chart), as
//!                    `<host>/<path>`, for a download stand-in (KILN_DOWNLOAD_MIRROR)
//! DIR/goproxy/       third-party modules k3s requires and upstream vendors, in GOPROXY
//!                    layout, for a stand-in module proxy (not with `--no-third-party`)
//! DIR/kiln.toml      names them, so `kiln release` in DIR finds them
//! ```

mod fast_import;
mod k3s;
mod third_party;
mod upstream;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::{
    ExactGo, ExactRequest, GoSources, ImageError, PinPolicy, ensure_exact_toolchain,
};
use crate::sandbox::{BindMount, DockerSandbox, LentTrees, SandboxError, StepSpec, run_to_end};

use fast_import::{File, Signature, Stream, Tree};
pub(crate) use k3s::HELPER_MODULE;
pub use upstream::VERSION_FILES;
pub(crate) use upstream::{DEFAULT_MODULES, FULL_MODULES, RELEASES};

/// The fork's tag.sh, which the demo's first k3s patch adds.
const TAG_SH: &str = include_str!("tag.sh");
/// The fork's tag.sh that builds through hack/, talks, and makes annotated tags.
const TAG_SH_HACK: &str = include_str!("tag-hack.sh");
/// Its hack/build-cmds.sh (rsync staging, then `go build` of every command).
const HACK_BUILD_CMDS: &str = include_str!("hack-build-cmds.sh");
/// The fork's tag.sh that commits nothing and tags the patch head.
const TAG_SH_NO_STAMP: &str = include_str!("tag-nostamp.sh");

/// Which shape of the fork's tag.sh the demo carries (the real one changed across minors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TagSh {
    /// Stamps the version files, commits the stamp, lightweight tags, prints only push lines.
    #[default]
    Stamp,
    /// Builds through hack/build-cmds.sh (rsync), prints build chatter around the push lines,
    /// commits the stamp, annotated tags.
    Hack,
    /// Commits nothing: tags the patch head itself.
    NoStamp,
}

/// Why the demo world could not be generated.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum DemoError {
    /// The target directory is not empty.
    #[error("{path} is not empty")]
    #[diagnostic(
        code(kiln::demo::not_empty),
        help("give `kiln demo init` a new or empty directory")
    )]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// git failed.
    #[error("`git {args}` failed: {stderr}")]
    #[diagnostic(
        code(kiln::demo::git),
        help("kiln needs git 2.30 or newer (`apt-get install git`)")
    )]
    Git {
        /// The arguments.
        args: String,
        /// What git said.
        stderr: String,
    },
    /// The Go toolchain image for tag.sh is missing or broken.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] ImageError),
    /// The stand-in proxy's modules could not be written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    GoMod(#[from] crate::gomod::GoModError),
    /// tag.sh failed in its container.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sandbox(#[from] SandboxError),
}

/// What to generate.
#[derive(Clone, Copy, Debug, Default)]
#[allow(clippy::struct_excessive_bools)] // independent options of `kiln demo init`
pub(crate) struct DemoOptions {
    /// All 30 staging modules of Kubernetes 1.28 instead of 6.
    pub(crate) full: bool,
    /// Grow the world toward Kubernetes' size: 40·N generated files per staging module and N
    /// extra commits between upstream releases. 0 keeps it small.
    pub(crate) scale: u32,
    /// Also cut `v1.28.1-k3s2` (a third patch and a second stamp), for "highest suffix wins".
    pub(crate) k3s2: bool,
    /// k3s requires third-party modules, served from `goproxy/` by a stand-in proxy, and
    /// upstream vendors one (the default of `kiln demo init`).
    pub(crate) third_party: bool,
    /// The fork's tag.sh.
    pub(crate) tag_sh: TagSh,
    /// k3s's 1.28 line lives on its default branch `main` (the newest minor), with no
    /// release-1.28.
    pub(crate) k3s_on_main: bool,
    /// Upstream releases on Go 1.22 or later are workspaces (`go.work`, workspace `vendor/`),
    /// as kubernetes is from 1.30.
    pub(crate) go_work: bool,
    /// Development commits before the 1.28 import (kubernetes has more than 130,000).
    pub(crate) history: u32,
    /// Pull requests in the upstream stand-in, as `refs/pull/N/{head,merge}`.
    pub(crate) pull_refs: u32,
    /// Past fork releases (`v1.X.Y-k3sN` and one tag per staging module each) on that history.
    pub(crate) past_releases: u32,
}

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DemoWorld {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// Staging modules.
    pub(crate) modules: Vec<String>,
    /// Upstream tags → commit ids.
    pub(crate) upstream_tags: BTreeMap<String, String>,
    /// Fork tags → commit ids (upstream's and the fork's own).
    pub(crate) fork_tags: BTreeMap<String, String>,
    /// k3s branches → commit ids.
    pub(crate) k3s_branches: BTreeMap<String, String>,
}

/// The fork's old release tag.
pub(crate) const OLD_FORK_TAG: &str = "v1.28.1-k3s1";
/// k3s's `channel.yaml` (on its main branch).
pub(crate) const CHANNEL_YAML: &str = include_str!("channel.yaml");
/// KDM's `channels.yaml` (in `kdm.git`, on [`KDM_BRANCH`]).
pub(crate) const KDM_CHANNELS_YAML: &str = include_str!("kdm.yaml");
/// The KDM repository's branch.
pub(crate) const KDM_BRANCH: &str = "dev-v2.8";
const KDM_DEV: Signature = Signature {
    name: "Rancher KDM Bot",
    email: "kdm@kiln-demo.invalid",
    time: 0,
};

const UPSTREAM: Signature = Signature {
    name: "Kubernetes Release Robot",
    email: "k8s-release-robot@kiln-demo.invalid",
    time: 1_692_100_800, // 2023-08-15T12:00:00Z
};
const CONTRIBUTOR: Signature = Signature {
    name: "Kubernetes Contributor",
    email: "contributor@kiln-demo.invalid",
    time: 0,
};
const K3S_DEV: Signature = Signature {
    name: "K3s Developer",
    email: "dev@kiln-demo.invalid",
    time: 1_692_867_600,
};
const CAPTAIN_NAME: &str = "K3s Release Captain";
const CAPTAIN_EMAIL: &str = "captain@kiln-demo.invalid";
/// When the captain stamped v1.28.1-k3s1: 2023-08-24T12:00:00Z.
const STAMP_TIME: i64 = 1_692_878_400;

fn at(who: &Signature, time: i64) -> Signature {
    Signature {
        time,
        ..who.clone()
    }
}

/// A git command isolated from the user's and system's configuration, with the demo's
/// identity, run in `dir`.
pub(crate) fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/nonexistent")
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    command
}

/// Runs git in `dir` with `args`; returns its trimmed stdout.
pub(crate) fn git<A: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: impl IntoIterator<Item = A>,
) -> Result<String, DemoError> {
    let mut command = git_command(dir);
    command.args(args);
    let output = command.output().map_err(|source| DemoError::Io {
        action: "run git in",
        path: dir.to_owned(),
        source,
    })?;
    if !output.status.success() {
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(DemoError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A commit by `who` in `repo` (a work tree) of everything staged, with pinned dates.
fn commit_all(repo: &Path, who: &Signature, message: &str) -> Result<(), DemoError> {
    let date = format!("@{} +0000", who.time);
    let mut command = git_command(repo);
    command
        .args([
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "-m",
            message,
        ])
        .env("GIT_AUTHOR_NAME", who.name)
        .env("GIT_AUTHOR_EMAIL", who.email)
        .env("GIT_COMMITTER_NAME", who.name)
        .env("GIT_COMMITTER_EMAIL", who.email)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date);
    let output = command.output().map_err(|source| DemoError::Io {
        action: "run git in",
        path: repo.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(DemoError::Git {
            args: "commit".into(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Every ref under `prefix` in `repo` → the commit it points to (tags peeled).
pub(crate) fn refs(repo: &Path, prefix: &str) -> Result<BTreeMap<String, String>, DemoError> {
    let out = git(
        repo,
        [
            "for-each-ref",
            "--format=%(refname) %(objectname) %(*objectname)",
            prefix,
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let name = parts.next()?.strip_prefix(prefix)?.to_owned();
            let object = parts.next()?;
            let peeled = parts.next().filter(|p| !p.is_empty()).unwrap_or(object);
            Some((name, peeled.to_owned()))
        })
        .collect())
}

/// The upstream history, appended to `stream`: returns the release marks and trees.
/// The upstream history, appended to `stream`: `options.history` small development commits
/// (each changing one file of `history/`, as deep as kubernetes' 130,000 commits can be made
/// in minutes), the 1.28 import, then the releases. Returns the release marks and trees, and
/// `options.past_releases` history commits spread evenly (where the fork's past `-k3sN` tags
/// go).
fn upstream_history(
    stream: &mut Stream,
    modules: &[&str],
    options: &DemoOptions,
) -> (
    Vec<(&'static str, fast_import::Mark, Tree)>,
    Vec<fast_import::Mark>,
) {
    let (scale, third_party, go_work) = (options.scale, options.third_party, options.go_work);
    let mut history_tree = Tree::new();
    let mut previous = None;
    let mut sampled = Vec::new();
    let every = (options.history / options.past_releases.max(1)).max(1);
    let first = UPSTREAM.time - i64::from(options.history) * 1200;
    for i in 0..options.history {
        let path = format!("history/{:x}/{:x}.txt", (i / 16) % 16, i % 16);
        let file = File::text(format!("Development change {i} before the 1.28 import.\n"));
        history_tree.insert(path.clone(), file.clone());
        let mark = stream.change(
            "refs/heads/master",
            previous,
            &at(&UPSTREAM, first + i64::from(i) * 1200),
            &format!("Development change {i}\n"),
            &[(path, file)],
        );
        if i % every == every - 1 && sampled.len() < options.past_releases as usize {
            sampled.push(mark);
        }
        previous = Some(mark);
    }
    let import = upstream::tree(
        modules,
        "v1.28.0",
        "1.21.13",
        scale,
        0,
        third_party,
        go_work,
    );
    let mut parent = stream.commit(
        "master",
        previous.map(|mark| (mark, &history_tree)),
        &UPSTREAM,
        "Import Kubernetes 1.28 into the demo world\n",
        &import,
    );
    while sampled.len() < options.past_releases as usize {
        sampled.push(parent);
    }
    let mut parent_tree = import;
    let mut start = UPSTREAM.time;
    let mut releases = Vec::new();
    for release in RELEASES {
        // --scale: some ordinary development between releases.
        for step in 0..scale {
            let mut tree = parent_tree.clone();
            let done = u32::try_from(releases.len()).expect("three releases");
            let history = step + 1 + done * scale;
            for module in modules {
                let path = format!(
                    "staging/src/k8s.io/{module}/zz_generated/scale_{:05}.go",
                    step % (scale * 40)
                );
                tree.insert(path, File::text(format!("package zzgenerated\n\n// Revision {history}.\nconst Revision = {history}\n")));
            }
            let when = start + i64::from(step + 1) * 3600;
            parent = stream.commit(
                "master",
                Some((parent, &parent_tree)),
                &at(&UPSTREAM, when),
                &format!("Development change {history}\n"),
                &tree,
            );
            parent_tree = tree;
        }
        let mut tree = upstream::tree(
            modules,
            release.tag,
            release.go,
            scale,
            0,
            third_party,
            go_work,
        );
        // Keep the development changes: they are part of the history.
        for (path, file) in &parent_tree {
            if path.contains("/zz_generated/") {
                tree.insert(path.clone(), file.clone());
            }
        }
        let who = at(&UPSTREAM, release.time);
        parent = stream.commit(
            "master",
            Some((parent, &parent_tree)),
            &who,
            &format!("Release {}\n", release.tag),
            &tree,
        );
        stream.annotated_tag(
            release.tag,
            parent,
            &who,
            &format!("Kubernetes {}\n", release.tag),
        );
        releases.push((release.tag, parent, tree.clone()));
        parent_tree = tree;
        start = release.time;
    }
    (releases, sampled)
}

/// `count` pull requests on `base`, as GitHub keeps them: `refs/pull/N/head` (one commit) and
/// `refs/pull/N/merge` (one on top of it), each reachable from nothing else.
fn pull_requests(stream: &mut Stream, base: fast_import::Mark, count: u32) {
    for n in 1..=count {
        let when = UPSTREAM.time + 86_400 * 90 + i64::from(n) * 60;
        let head = stream.change(
            &format!("refs/pull/{n}/head"),
            Some(base),
            &at(&CONTRIBUTOR, when),
            &format!("Pull request {n}\n"),
            &[(
                format!("pr/{n}.txt"),
                File::text(format!("The change of pull request {n}.\n")),
            )],
        );
        stream.change(
            &format!("refs/pull/{n}/merge"),
            Some(head),
            &at(&CONTRIBUTOR, when + 30),
            &format!("Merge {n} into master\n"),
            &[(
                format!("pr/{n}.merged"),
                File::text(format!("Pull request {n}, merged for testing.\n")),
            )],
        );
    }
}

/// The fork's past releases, as years of `-k3sN` tags leave them: `count` of them on
/// `marks` (older minors, newest first), each with one tag per staging module.
fn past_fork_tags(stream: &mut Stream, modules: &[&str], marks: &[fast_import::Mark]) {
    for (i, mark) in marks.iter().rev().enumerate() {
        let minor = 27usize.saturating_sub(i / 40).max(10);
        let patch = (i / 2) % 20 + 1;
        let tag = format!("v1.{minor}.{patch}-k3s{}", i % 2 + 1);
        stream.reset(&format!("refs/tags/{tag}"), *mark);
        for module in modules {
            stream.reset(
                &format!("refs/tags/staging/src/k8s.io/{module}/{tag}"),
                *mark,
            );
        }
    }
}

/// The repositories k3s's scripts clone (runc in scripts/download, the CNI plugins in
/// scripts/build), as bare repositories a static file server can serve over git's dumb HTTP
/// (`<host>/<path>` under `dir`, `git update-server-info` run): each a Go program built in
/// GOPATH mode, tagged with the version k3s's scripts/version.sh names.
fn cloned_repositories(dir: &Path) -> Result<(), DemoError> {
    for (path, tag, annotated, program) in [
        ("github.com/k3s-io/runc", k3s::VERSION_RUNC, false, "runc"),
        (
            "github.com/rancher/plugins.git",
            k3s::VERSION_CNIPLUGINS,
            true,
            "cni",
        ),
    ] {
        let mut stream = Stream::default();
        let mut tree = Tree::new();
        tree.insert(
            "README.md".into(),
            File::text(format!(
                "# {program} (kiln demo world)\n\nA stand-in for {path}.\n"
            )),
        );
        tree.insert(
            "main.go".into(),
            File::text(format!(
                "// Command {program} stands in for {path} in kiln's demo world.\npackage main\n\n                 import \"fmt\"\n\nfunc main() {{\n\tfmt.Println(\"{program} version {tag}\")\n}}\n"
            )),
        );
        let first = stream.commit("master", None, &K3S_DEV, "Initial import\n", &tree);
        let mut next = tree.clone();
        next.insert(
            "VERSION".into(),
            File::text(format!("{}\n", tag.trim_start_matches('v'))),
        );
        let release = stream.commit(
            "master",
            Some((first, &tree)),
            &at(&K3S_DEV, K3S_DEV.time + 3600),
            &format!("Release {tag}\n"),
            &next,
        );
        if annotated {
            stream.annotated_tag(
                tag,
                release,
                &at(&K3S_DEV, K3S_DEV.time + 3600),
                &format!("{tag}\n"),
            );
        } else {
            stream.reset(&format!("refs/tags/{tag}"), release);
        }
        let repo = dir.join(path);
        if let Some(parent) = repo.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DemoError::Io {
                action: "create",
                path: parent.to_owned(),
                source,
            })?;
        }
        stream.import(&repo)?;
        git(&repo, ["update-server-info"])?;
    }
    Ok(())
}

/// Refuses a target directory that exists and holds anything: the demo never writes over
/// someone's files.
pub(crate) fn check_target(dir: &Path) -> Result<(), DemoError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|source| DemoError::Io {
            action: "list",
            path: dir.to_owned(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(DemoError::NotEmpty {
                path: dir.to_owned(),
            });
        }
    }
    Ok(())
}

/// Writes the demo world into `dir` (new or empty). Runs the fork's tag.sh in the toolchain of
/// the exact Go its tree names (the v1.28.1 release's), found or built from its pinned
/// distribution on the plain base, which must exist (`kiln image bootstrap`).
pub(crate) async fn init(
    dir: &Path,
    options: &DemoOptions,
    sandbox: &DockerSandbox,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<DemoWorld, DemoError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::Io {
            action,
            path,
            source,
        }
    };
    check_target(dir)?;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io("resolve", dir))?;
    let modules: Vec<&str> = if options.full {
        FULL_MODULES.to_vec()
    } else {
        DEFAULT_MODULES.to_vec()
    };

    progress(format!(
        "upstream: {} staging modules, releases v1.28.1..v1.28.3",
        modules.len()
    ));
    let mut stream = Stream::default();
    let (releases, _) = upstream_history(&mut stream, &modules, options);
    if options.pull_refs > 0 {
        progress(format!(
            "upstream: {} pull requests under refs/pull/",
            options.pull_refs
        ));
        pull_requests(
            &mut stream,
            releases[releases.len() - 1].1,
            options.pull_refs,
        );
    }
    stream.import(&dir.join("upstream.git"))?;

    progress("fork: upstream plus two k3s patches on v1.28.1".into());
    let mut stream = Stream::default();
    let (releases, past) = upstream_history(&mut stream, &modules, options);
    past_fork_tags(&mut stream, &modules, &past);
    let (_, base_mark, base_tree) = releases[0].clone();
    let mut patched = base_tree.clone();
    match options.tag_sh {
        TagSh::Stamp => {
            patched.insert("tag.sh".into(), File::script(TAG_SH));
        }
        TagSh::Hack => {
            patched.insert("tag.sh".into(), File::script(TAG_SH_HACK));
            patched.insert("hack/build-cmds.sh".into(), File::script(HACK_BUILD_CMDS));
            patched.insert(".gitignore".into(), File::text("/_output/\n"));
        }
        TagSh::NoStamp => {
            patched.insert("tag.sh".into(), File::script(TAG_SH_NO_STAMP));
        }
    }
    let first = stream.commit(
        "k3s-patches",
        Some((base_mark, &base_tree)),
        &K3S_DEV,
        "Add k3s tag.sh\n",
        &patched,
    );
    let mut second_tree = patched.clone();
    second_tree.insert(
        upstream::REST_CONFIG.into(),
        File::text(
            upstream::REST_CONFIG_UPSTREAM
                .replace("DefaultQPS float32 = 5.0", "DefaultQPS float32 = 50.0"),
        ),
    );
    stream.commit(
        "k3s-patches",
        Some((first, &patched)),
        &at(&K3S_DEV, K3S_DEV.time + 600),
        "Raise the default client rate limit for embedded use\n",
        &second_tree,
    );
    let fork = dir.join("fork.git");
    stream.import(&fork)?;

    let go = upstream::RELEASES[0].go;
    progress(format!(
        "fork: running tag.sh {OLD_FORK_TAG} in the Go {go} toolchain container"
    ));
    let request = ExactRequest {
        version: ExactGo::parse(go)?,
        sources: GoSources::from_env(Vec::new()),
        policy: PinPolicy::Refuse,
        lock_dir: None,
        archive: None,
    };
    let toolchain = ensure_exact_toolchain(sandbox.engine(), &request, &mut |_| {})
        .await?
        .image;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-demo-")
        .tempdir()
        .map_err(io("create a scratch directory for", &dir))?;
    let work = scratch.path().join("work");
    git(
        scratch.path(),
        [
            OsStr::new("clone"),
            "--quiet".as_ref(),
            "--no-checkout".as_ref(),
            "--end-of-options".as_ref(),
            fork.as_os_str(),
            work.as_os_str(),
        ],
    )?;
    git(
        &work,
        [
            "checkout",
            "--quiet",
            "--detach",
            "refs/remotes/origin/k3s-patches",
        ],
    )?;
    run_tag_sh(sandbox, &toolchain.id, &work, OLD_FORK_TAG, STAMP_TIME).await?;
    if options.k3s2 {
        std::fs::write(
            work.join("staging/src/k8s.io/client-go/rest/k3s.go"),
            "package rest\n\n// K3sPatched marks the k3s2 re-release.\nconst K3sPatched = true\n",
        )
        .map_err(io("write", &work))?;
        git(&work, ["add", "staging/src/k8s.io/client-go/rest/k3s.go"])?;
        commit_all(
            &work,
            &at(&K3S_DEV, STAMP_TIME + 86_400),
            "Mark the k3s2 re-release\n",
        )?;
        run_tag_sh(
            sandbox,
            &toolchain.id,
            &work,
            "v1.28.1-k3s2",
            STAMP_TIME + 90_000,
        )
        .await?;
    }
    git(
        &work,
        [
            OsStr::new("push"),
            "--quiet".as_ref(),
            "--end-of-options".as_ref(),
            fork.as_os_str(),
            "refs/tags/*:refs/tags/*".as_ref(),
            "HEAD:refs/heads/release-1.28".as_ref(),
        ],
    )?;

    progress(format!(
        "k3s: branch {} on the v1.28.1-k3s1 fork tags",
        if options.k3s_on_main {
            "main"
        } else {
            "release-1.28"
        }
    ));
    progress("downloads: what k3s's scripts/download fetches, for a download stand-in".into());
    k3s::write_downloads(&dir.join("downloads")).map_err(io("write", &dir.join("downloads")))?;
    cloned_repositories(&dir.join("downloads"))?;
    // GitHub serves kubernetes' files by tag, which k3s's scripts/version.sh asks for (a
    // captain's build reaches it; kiln's steps get it from the upstream tree instead).
    for release in &RELEASES {
        let yaml = crate::git::read_file(
            &dir.join("upstream.git"),
            release.tag,
            "build/dependencies.yaml",
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let at = dir.join(format!(
            "downloads/raw.githubusercontent.com/kubernetes/kubernetes/{}/build",
            release.tag
        ));
        std::fs::create_dir_all(&at).map_err(io("create", &at))?;
        std::fs::write(at.join("dependencies.yaml"), yaml).map_err(io("write", &at))?;
    }
    let mut stream = Stream::default();
    let third_party = if options.third_party {
        progress("goproxy: third-party modules for the stand-in module proxy".into());
        Some(third_party::write_goproxy(&dir.join("goproxy"))?)
    } else {
        None
    };
    let k3s_tree = k3s::tree(
        &modules,
        OLD_FORK_TAG,
        "v0.28.1",
        "v1.28.1",
        "1.21.13",
        third_party.as_deref(),
    );
    let k3s_dev = at(&K3S_DEV, STAMP_TIME + 3600);
    let main = stream.commit(
        "main",
        None,
        &k3s_dev,
        "k3s on Kubernetes v1.28.1\n",
        &k3s_tree,
    );
    if !options.k3s_on_main {
        stream.reset("refs/heads/release-1.28", main);
    }
    // k3s's default branch carries the channel server's channel.yaml; the release branch does
    // not (so the release's inputs do not depend on it).
    let mut with_channel = k3s_tree.clone();
    with_channel.insert("channel.yaml".into(), File::text(CHANNEL_YAML));
    stream.commit(
        "main",
        Some((main, &k3s_tree)),
        &at(&K3S_DEV, STAMP_TIME + 7200),
        "Update stable channel to v1.28.1+k3s1\n",
        &with_channel,
    );
    stream.import(&dir.join("k3s.git"))?;
    git(
        &dir.join("k3s.git"),
        ["symbolic-ref", "HEAD", "refs/heads/main"],
    )?;

    progress("kdm: Rancher's k3s channels.yaml (v1.26 to v1.29 entries)".into());
    let mut stream = Stream::default();
    let mut kdm_tree = Tree::new();
    kdm_tree.insert("channels.yaml".into(), File::text(KDM_CHANNELS_YAML));
    stream.commit(
        KDM_BRANCH,
        None,
        &at(&KDM_DEV, STAMP_TIME + 7200),
        "Add v1.28.1+k3s1\n",
        &kdm_tree,
    );
    stream.import(&dir.join("kdm.git"))?;
    git(
        &dir.join("kdm.git"),
        ["symbolic-ref", "HEAD", &format!("refs/heads/{KDM_BRANCH}")],
    )?;

    let mut stream = Stream::default();
    let helper_dev = at(&K3S_DEV, UPSTREAM.time);
    let v1 = stream.commit(
        "main",
        None,
        &helper_dev,
        "helper v0.28.1\n",
        &k3s::helper_tree("v0.28.1"),
    );
    stream.annotated_tag("v0.28.1", v1, &helper_dev, "v0.28.1\n");
    let later = at(&K3S_DEV, RELEASES[1].time);
    let v2 = stream.commit(
        "main",
        Some((v1, &k3s::helper_tree("v0.28.1"))),
        &later,
        "helper v0.28.2\n",
        &k3s::helper_tree("v0.28.2"),
    );
    stream.annotated_tag("v0.28.2", v2, &later, "v0.28.2\n");
    stream.import(&dir.join("helper.git"))?;

    // Refs packed, as a hosting service keeps them: the fork's thousands of tags as loose files
    // would make listing them (every release's first question) ten times dearer than on GitHub.
    for repo in [
        "upstream.git",
        "fork.git",
        "k3s.git",
        "kdm.git",
        "helper.git",
    ] {
        git(&dir.join(repo), ["pack-refs", "--all"])?;
    }

    let config = format!(
        "# Written by `kiln demo init`: the demo world's repositories, relative to this file.\n\
         [repos]\nupstream = \"upstream.git\"\nfork = \"fork.git\"\nk3s = \"k3s.git\"\n\n\
         # Modules k3s requires that are neither Kubernetes nor the fork, served by kiln's proxy.\n\
         [[modules]]\npath = \"{HELPER_MODULE}\"\nrepo = \"helper.git\"\n\n\
         # Who the demo release's commits are by (a placeholder, taken only for local repositories).\n\
         [release]\nname = \"{CAPTAIN_NAME}\"\nemail = \"{CAPTAIN_EMAIL}\"\n\n\
         # Not read by releases: KDM's channels.yaml lives in kdm.git (branch {KDM_BRANCH}), k3s's\n\
         # channel.yaml on k3s.git's main.\n{go}",
        go = if options.third_party {
            format!(
                "\n# k3s's third-party modules come from the module proxy (KILN_GO_PROXY: here a stand-in\n\
                 # serving goproxy/). The stand-in has no checksum database, so its paths are exempt\n\
                 # from GOSUMDB; go.sum still pins what it lists.\n[go]\nnosumdb = [\"{}\"]\n",
                third_party::PREFIX
            )
        } else {
            String::new()
        }
    );
    std::fs::write(dir.join("kiln.toml"), config).map_err(io("write", &dir.join("kiln.toml")))?;

    Ok(DemoWorld {
        modules: modules.iter().map(|m| (*m).to_owned()).collect(),
        upstream_tags: refs(&dir.join("upstream.git"), "refs/tags/")?,
        fork_tags: refs(&fork, "refs/tags/")?,
        k3s_branches: refs(&dir.join("k3s.git"), "refs/heads/")?,
        dir,
    })
}

/// Runs `./tag.sh TAG` in the work tree `work`, in the toolchain container, as the tree's
/// owner, with the captain's identity and the clock pinned to `time`.
async fn run_tag_sh(
    sandbox: &DockerSandbox,
    image: &str,
    work: &Path,
    tag: &str,
    time: i64,
) -> Result<(), DemoError> {
    let date = format!("@{time} +0000");
    let mut step = StepSpec::new("demo-tag", image, ["./tag.sh", tag])
        .env("GIT_AUTHOR_NAME", CAPTAIN_NAME)
        .env("GIT_AUTHOR_EMAIL", CAPTAIN_EMAIL)
        .env("GIT_COMMITTER_NAME", CAPTAIN_NAME)
        .env("GIT_COMMITTER_EMAIL", CAPTAIN_EMAIL)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .env("SOURCE_DATE_EPOCH", time.to_string())
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off");
    step.workdir = "/work".into();
    // Host-side git reads the tree afterwards: it goes back to its owner.
    let lent = LentTrees::lend(&[work])?;
    step.user = Some(lent.user());
    step.mounts.push(BindMount {
        source: work.to_owned(),
        target: "/work".into(),
        read_only: false,
    });
    let ran = run_to_end(sandbox, step, |_| {}).await;
    lent.give_back()?;
    ran?;
    Ok(())
}
