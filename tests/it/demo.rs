//! The demo world: reproducible ids, a fork shaped like the real one, trees that build.

use crate::common::TimedOutput as _;
use std::collections::BTreeMap;
use std::path::Path;

use kiln::sandbox::{BindMount, LentTrees, StepSpec, run_to_end};

use crate::common::{self, docker_or_skip, text};

/// The fork's tags → commit ids every `kiln demo init` must produce, on every machine.
const GOLDEN_FORK_TAGS: [(&str, &str); 10] = [
    (
        "staging/src/k8s.io/api/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    (
        "staging/src/k8s.io/apimachinery/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    (
        "staging/src/k8s.io/client-go/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    (
        "staging/src/k8s.io/component-base/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    (
        "staging/src/k8s.io/cri-api/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    (
        "staging/src/k8s.io/kubectl/v1.28.1-k3s1",
        "254b225c77911949086e26f9901500c0a5aedd61",
    ),
    ("v1.28.1", "e72e5e90d4ed5def01554fc0315cf2dde7f9364e"),
    ("v1.28.1-k3s1", "254b225c77911949086e26f9901500c0a5aedd61"),
    ("v1.28.2", "277a9499de4708afd161e44526544f2de8915134"),
    ("v1.28.3", "708445344e7c1ac38bdc3571cc9bc0f0bb94791c"),
];

fn init(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let output = common::kiln()
        .args(["demo", "init", "--json"])
        .arg(dir)
        .args(extra)
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "kiln demo init failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .timed_output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn two_inits_give_the_same_ids_as_the_golden_list() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let a = init(&one.path().join("world"), &[]);
    let b = init(&two.path().join("elsewhere"), &[]);
    for key in ["upstream_tags", "fork_tags", "k3s_branches"] {
        assert_eq!(a[key], b[key], "{key} differ between two inits");
    }
    let golden: BTreeMap<String, String> = GOLDEN_FORK_TAGS
        .iter()
        .map(|(t, c)| ((*t).to_owned(), (*c).to_owned()))
        .collect();
    let fork: BTreeMap<String, String> = serde_json::from_value(a["fork_tags"].clone()).unwrap();
    assert_eq!(fork, golden);
    // The kiln.toml names the repositories.
    let config = std::fs::read_to_string(one.path().join("world/kiln.toml")).unwrap();
    for repo in ["upstream.git", "fork.git", "k3s.git", "helper.git"] {
        assert!(config.contains(repo), "{config}");
        assert!(
            one.path().join("world").join(repo).join("HEAD").is_file(),
            "{repo} is not a bare repo"
        );
    }
}

#[tokio::test]
async fn the_fork_carries_a_real_release_tag_set() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let world = init(&dir.path().join("w"), &[]);
    let fork = dir.path().join("w/fork.git");
    let modules = world["modules"].as_array().unwrap().len();
    let tags: BTreeMap<String, String> =
        serde_json::from_value(world["fork_tags"].clone()).unwrap();
    let release: Vec<(&String, &String)> = tags
        .iter()
        .filter(|(t, _)| t.ends_with("v1.28.1-k3s1"))
        .collect();
    assert_eq!(release.len(), 1 + modules, "{release:?}");
    let stamp = &tags["v1.28.1-k3s1"];
    assert!(
        release.iter().all(|(_, c)| *c == stamp),
        "all on the stamp commit"
    );
    assert!(
        !tags.contains_key("v0.0.0"),
        "tag.sh's temporary tag was removed"
    );
    // The staging tags are lightweight (they name the commit itself).
    assert_eq!(
        git(
            &fork,
            &[
                "cat-file",
                "-t",
                "refs/tags/staging/src/k8s.io/api/v1.28.1-k3s1"
            ]
        ),
        "commit"
    );
    assert_eq!(
        git(&fork, &["log", "-1", "--format=%s", stamp]),
        "v1.28.1-k3s1"
    );
    let parent = git(&fork, &["rev-parse", &format!("{stamp}~1")]);
    assert_eq!(
        git(&fork, &["log", "-1", "--format=%s", &parent]),
        "Raise the default client rate limit for embedded use"
    );
    // The patch set is OLD_K8S..OLD_FORK~1: exactly the two k3s patches.
    let patches = git(
        &fork,
        &["rev-list", "--reverse", &format!("v1.28.1..{stamp}~1")],
    );
    assert_eq!(patches.lines().count(), 2);
    // The stamp rewrote both version files, with the pinned date, and only them.
    let changed = git(&fork, &["diff", "--name-only", &parent, stamp]);
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        kiln::demo::VERSION_FILES
    );
    let base = git(
        &fork,
        &[
            "show",
            &format!("{stamp}:staging/src/k8s.io/client-go/pkg/version/base.go"),
        ],
    );
    assert!(
        base.contains("gitVersion   string = \"v1.28.1-k3s1\""),
        "{base}"
    );
    assert!(
        base.contains(&format!("gitCommit    string = \"{parent}\"")),
        "{base}"
    );
    assert!(
        base.contains("buildDate    string = \"2023-08-24T12:00:00Z\""),
        "{base}"
    );
    // k3s requires the unrelated helper at the old client version, and pins Go 1.21.13.
    let k3s = dir.path().join("w/k3s.git");
    let go_mod = git(&k3s, &["show", "release-1.28:go.mod"]);
    assert!(
        go_mod.contains("\tgithub.com/k3s-io/helper v0.28.1\n"),
        "{go_mod}"
    );
    assert!(
        go_mod.contains("\nreplace k8s.io/cri-api => "),
        "single-line replace: {go_mod}"
    );
    assert!(
        go_mod.contains("kubernetes-stale"),
        "stale replace: {go_mod}"
    );
    assert!(
        git(&k3s, &["show", "release-1.28:Dockerfile.dapper"])
            .contains("ARG GOLANG=golang:1.21.13-alpine3.18")
    );
    assert!(
        git(
            &k3s,
            &["show", "release-1.28:.github/workflows/unitcoverage.yaml"]
        )
        .contains("go-version: '1.21.13'")
    );
}

#[tokio::test]
async fn a_k3s2_variant_can_be_cut() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let world = init(&dir.path().join("w"), &["--k3s2"]);
    let tags: BTreeMap<String, String> =
        serde_json::from_value(world["fork_tags"].clone()).unwrap();
    assert!(tags.contains_key("v1.28.1-k3s2"));
    assert!(tags.contains_key("staging/src/k8s.io/api/v1.28.1-k3s2"));
    assert_ne!(tags["v1.28.1-k3s1"], tags["v1.28.1-k3s2"]);
    // k3s1 is unchanged by adding k3s2.
    assert_eq!(tags["v1.28.1-k3s1"], GOLDEN_FORK_TAGS[7].1);
}

#[test]
fn init_refuses_a_directory_with_content_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "keep me").unwrap();
    // No engine answers: the refusal must come first, not a connection error.
    let output = common::kiln()
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["demo", "init"])
        .arg(dir.path())
        .timed_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert!(stderr.contains("new or empty directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious")).unwrap(),
        "keep me"
    );
}

/// Checks out `rev` of `repo` into a fresh directory and runs `script` there in the toolchain
/// image for `go`, offline.
async fn in_container(
    docker: &common::Docker,
    repo: &Path,
    rev: &str,
    go: &str,
    script: &str,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let status = std::process::Command::new("git")
        .args(["clone", "--quiet", "--no-checkout"])
        .arg(repo)
        .arg(&work)
        .status()
        .unwrap();
    assert!(status.success());
    git(
        &work,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            rev,
        ],
    );
    let request = kiln::image::ExactRequest {
        version: kiln::image::ExactGo::parse(go).unwrap(),
        sources: kiln::image::GoSources::from_env(Vec::new()),
        policy: kiln::image::PinPolicy::Refuse,
        lock_dir: None,
        archive: None,
    };
    let image = kiln::image::ensure_exact_toolchain(docker.sandbox.engine(), &request, &mut |_| {})
        .await
        .unwrap()
        .image;
    let (mut step, _) = docker.step("demo-check", &["/bin/sh", "-c", script]);
    step.image = image.id;
    step.env.insert("GOPROXY".into(), "off".into());
    step.workdir = "/work".into();
    let lent = LentTrees::lend(&[&work]).unwrap();
    step.user = Some(lent.user());
    step.mounts.push(BindMount {
        source: work.clone(),
        target: "/work".into(),
        read_only: false,
    });
    let _: &StepSpec = &step;
    let ran = run_to_end(&docker.sandbox, step, |_| {}).await;
    lent.give_back().unwrap();
    ran.unwrap_or_else(|e| panic!("{rev}: {e}")).stdout
}

#[tokio::test]
async fn every_tree_builds_vets_and_is_gofmt_clean_offline() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("w"), &[]);
    let upstream = dir.path().join("w/upstream.git");
    let fork = dir.path().join("w/fork.git");
    // Offline and in vendor mode, as kubernetes builds: staging packages through vendor/'s
    // links (by name: Go's `./...` does not follow the links, as in the real tree).
    let check = "test -z \"$(gofmt -l .)\" || { gofmt -l . >&2; exit 1; }; go build ./cmd/... && go vet ./... && \
                 go vet $(find staging/src -name '*.go' -exec dirname {} \\; | sort -u | sed 's#^staging/src/##') && \
                 go run ./cmd/kube-apiserver";
    // Each tree builds in the exact Go its .go-version names (one of them a Go 1.24).
    for (repo, rev, go) in [
        (&upstream, "v1.28.1", "1.21.13"),
        (&upstream, "v1.28.2", "1.22.10"),
        (&upstream, "v1.28.3", "1.24.11"),
        (&fork, "v1.28.1-k3s1", "1.21.13"),
    ] {
        assert_eq!(git(repo, &["show", &format!("{rev}:.go-version")]), go);
        let out = in_container(&docker, repo, rev, go, check).await;
        let expected = if rev.contains("k3s") {
            "kube-apiserver v1.28.1-k3s1 (component-base v1.28.1-k3s1, api v1.28.1)"
        } else {
            &format!(
                "kube-apiserver v0.0.0-master+$Format:%H$ (component-base v0.0.0-master+$Format:%H$, api {rev})"
            )
        };
        assert_eq!(out.last().map(String::as_str), Some(expected), "{rev}");
    }
    // k3s's own code is gofmt-clean (validate checks it); its build needs the module proxy.
    let k3s = dir.path().join("w/k3s.git");
    let out = in_container(
        &docker,
        &k3s,
        "origin/release-1.28",
        "1.21.13",
        "gofmt -l . ; echo done",
    )
    .await;
    assert_eq!(out, vec!["done"]);
}
