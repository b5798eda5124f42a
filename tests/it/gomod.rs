//! kiln's module proxy against the real Go: the k3s tree builds offline from the fork's tags,
//! and Go computes exactly the `h1:` sums kiln computed.

use crate::common::TimedOutput as _;
use kiln::gomod::write_proxy;
use kiln::release::{extra_module_versions, fork_module_versions};
use kiln::sandbox::{BindMount, LentTrees, run_to_end};

use crate::common::{self, docker_or_skip, text};

#[tokio::test]
async fn k3s_builds_offline_from_kilns_proxy_and_go_agrees_on_every_sum() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (versions, served, k3s, proxy) = demo_k3s_and_proxy(dir.path());
    assert_eq!(served.len(), 1 + 6 + 2);
    // Nested modules are not part of the root module's zip.
    let root = versions
        .iter()
        .find(|v| v.module == "github.com/k3s-io/kubernetes")
        .unwrap();
    assert!(root.files.contains_key("cmd/kubectl/main.go"));
    assert!(
        root.files.keys().all(|p| !p.starts_with("staging/")),
        "{:?}",
        root.files.keys().collect::<Vec<_>>()
    );

    // k3s's release-1.28 requires Kubernetes v1.28.1, whose build/dependencies.yaml names Go
    // 1.21.13: built in that exact toolchain, the binary's own Go check passes.
    let request = kiln::image::ExactRequest {
        version: kiln::image::ExactGo::parse("1.21.13").unwrap(),
        sources: kiln::image::GoSources::from_env(Vec::new()),
        policy: kiln::image::PinPolicy::Refuse,
        lock_dir: None,
        archive: None,
    };
    let exact = kiln::image::ensure_exact_toolchain(docker.sandbox.engine(), &request, &mut |_| {})
        .await
        .unwrap()
        .image;
    let script =
        format!("{BUILD_K3S} >&2 && ./dist/artifacts/k3s && go mod verify >&2 && cat go.sum");
    let out = build_k3s(&docker, &k3s, &proxy, &exact.id, &script)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = out.stdout.join("\n");
    assert!(stdout.contains("golang go1.21.13"), "{stdout}");
    assert!(stdout.contains("k3s version release-1.28"), "{stdout}");
    assert!(stdout.contains("kubernetes v1.28.1-k3s1"), "{stdout}");
    assert!(
        stdout.contains("built 2023-08-24T12:00:00Z"),
        "date -u honours SOURCE_DATE_EPOCH: {stdout}"
    );
    assert!(stdout.contains("helper v0.28.1"), "{stdout}");

    // Every module Go fetched has the sums kiln computed, zip and go.mod alike.
    let sums: Vec<&String> = out.stdout.iter().filter(|l| l.contains(" h1:")).collect();
    // `go build` records the modules whose packages it built: the fork root, client-go and helper.
    assert!(sums.len() >= 6, "{sums:?}");
    for line in sums {
        let fields: Vec<&str> = line.split(' ').collect();
        let [module, version, sum] = fields.as_slice() else {
            panic!("odd go.sum line {line}")
        };
        let (version, is_mod) = match version.strip_suffix("/go.mod") {
            Some(v) => (v, true),
            None => (*version, false),
        };
        let ours = served
            .iter()
            .find(|s| s.module == *module && s.version == version)
            .unwrap_or_else(|| panic!("Go fetched {module} {version}, which kiln does not serve"));
        let expected = if is_mod { &ours.go_mod_h1 } else { &ours.h1 };
        assert_eq!(sum, expected, "{line}");
    }
}

/// Runs `script` on the k3s checkout `k3s` in `image`, offline, with kiln's proxy at /proxy.
async fn build_k3s(
    docker: &common::Docker,
    k3s: &std::path::Path,
    proxy: &std::path::Path,
    image: &str,
    script: &str,
) -> Result<kiln::sandbox::StepOutput, kiln::sandbox::SandboxError> {
    let (mut step, _) = docker.step("proxy-build", &["/bin/sh", "-c", script]);
    step.image = image.to_owned();
    for (k, v) in [
        ("GOPROXY", "file:///proxy"),
        ("GOSUMDB", "off"),
        ("GOFLAGS", "-mod=mod"),
        ("SOURCE_DATE_EPOCH", "1692878400"),
    ] {
        step.env.insert(k.into(), v.into());
    }
    step.workdir = "/work".into();
    let lent = LentTrees::lend(&[k3s]).unwrap();
    step.user = Some(lent.user());
    step.mounts.push(BindMount {
        source: k3s.to_owned(),
        target: "/work".into(),
        read_only: false,
    });
    step.mounts.push(BindMount {
        source: proxy.to_owned(),
        target: "/proxy".into(),
        read_only: true,
    });
    let out = run_to_end(&docker.sandbox, step, |_| {}).await;
    lent.give_back().unwrap();
    out
}

/// k3s's build as dapper's container runs it (its `make` is dapper's). The one URL it asks for
/// (kubernetes' build/dependencies.yaml at the required version) is answered from that
/// module's source, as kiln's build step serves it from the upstream tree. What scripts/build
/// builds from clones (runc from scripts/download's, the CNI plugins from its own) is stood in
/// for: these tests are about the module graph, offline.
const BUILD_K3S: &str = "mkdir -p /tmp/bin && go mod download k8s.io/kubernetes && \
    dir=$(go list -m -f '{{with .Replace}}{{.Dir}}{{else}}{{.Dir}}{{end}}' k8s.io/kubernetes) && \
    printf '#!/bin/sh\\ncat %s/build/dependencies.yaml\\n' \"$dir\" >/tmp/bin/curl && \
    chmod +x /tmp/bin/curl && \
    mkdir -p bin build/src/github.com/opencontainers/runc && touch bin/cni && chmod +x bin/cni && \
    printf 'package main\\n\\nfunc main() {}\\n' >build/src/github.com/opencontainers/runc/main.go && \
    PATH=/tmp/bin:$PATH ./scripts/build";

/// k3s's own check, as the real server does: built in another Go than the one Kubernetes names
/// in build/dependencies.yaml, the binary refuses to run, naming both.
#[tokio::test]
async fn the_demo_k3s_refuses_to_run_on_another_go_than_upstream_s() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, _, k3s, proxy) = demo_k3s_and_proxy(dir.path());
    // Debian's Go 1.22 (the test toolchain's line), not upstream's 1.21.13.
    let other = kiln::image::ensure_toolchain(
        docker.sandbox.engine(),
        kiln::image::GoLine::Go122,
        None,
        &mut |_| {},
    )
    .await
    .unwrap();
    let script = format!("{BUILD_K3S} >&2 && {{ ./dist/artifacts/k3s; echo \"exit $?\"; }}");
    let out = build_k3s(&docker, &k3s, &proxy, &other.id, &script)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = out.stdout.join("\n");
    let stderr = out.stderr_tail.join("\n");
    assert!(stdout.ends_with("exit 1"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "k3s: incorrect golang build version - kubernetes release-1.28 should be built with \
             go1.21.13, runtime version is go1.22."
        ),
        "{stderr}"
    );
}

/// A demo world under `dir`, kiln's proxy of its fork modules (v1.28.1-k3s1) and the helper
/// module in `dir/proxy`, and a clone of k3s's release-1.28 in `dir/k3s`: the module
/// versions, what the proxy serves, the clone and the proxy.
fn demo_k3s_and_proxy(
    dir: &std::path::Path,
) -> (
    Vec<kiln::gomod::ModuleVersion>,
    Vec<kiln::gomod::ProxyModule>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let world = dir.join("world");
    // Without third-party modules: kiln's proxy alone serves everything k3s needs.
    let output = common::kiln()
        .args(["demo", "init", "--no-third-party"])
        .arg(&world)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let mut versions = fork_module_versions(&world.join("fork.git"), "v1.28.1-k3s1").unwrap();
    versions.extend(
        extra_module_versions(
            &world.join("helper.git"),
            "github.com/k3s-io/helper",
            &[
                ("v0.28.1".into(), "v0.28.1".into()),
                ("v0.28.2".into(), "v0.28.2".into()),
            ],
        )
        .unwrap(),
    );
    let proxy = dir.join("proxy");
    let served = write_proxy(&proxy, &versions).unwrap();
    let k3s = dir.join("k3s");
    let status = std::process::Command::new("git")
        .args(["clone", "--quiet", "--branch", "release-1.28"])
        .arg(world.join("k3s.git"))
        .arg(&k3s)
        .status()
        .unwrap();
    assert!(status.success());
    (versions, served, k3s, proxy)
}
