//! k3s built the way k3s's own Dockerfile builds it, never through dapper's Makefile:
//! `scripts/download` runs once with network in the `k3s-download` fetch step (every URL it
//! fetches pinned in the lockfile), then `scripts/download` (replayed offline from those
//! files), `scripts/build` and `scripts/package-cli` run offline; kubernetes'
//! build/dependencies.yaml, which scripts/version.sh asks GitHub for, comes from the upstream
//! tree kiln holds. The repositories the scripts clone are pinned the same way (scripts/build's
//! by walking it in the fetch step with a go that compiles nothing).

use sha2::Digest as _;

use crate::common::TimedOutput as _;
use crate::common::{World, docker_or_skip, git, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// Changes k3s's release-1.28 by `change` (run in a work tree of it, as `git` arguments or a
/// file edit), committed on top and pushed back to the world's k3s.git.
fn change_k3s(world: &World, message: &str, change: impl FnOnce(&std::path::Path)) {
    let work = world.dir.path().join("k3s-edit");
    git(
        world.dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            "release-1.28",
            world.path().join("k3s.git").to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    change(&work);
    git(
        &work,
        &[
            "-c",
            "user.name=K3s Developer",
            "-c",
            "user.email=dev@kiln-demo.invalid",
            "commit",
            "--quiet",
            "-am",
            message,
            "--date=@1692900000",
        ],
    );
    git(&work, &["push", "--quiet", "origin", "release-1.28"]);
    std::fs::remove_dir_all(&work).unwrap();
}

/// `kiln release` of v1.28.2 in `world`, its lockfile (if any) beside the committed one.
fn release_aside(world: &World) -> std::process::Output {
    world.kiln(&[
        "release",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--lockfile-dir",
        "other",
    ])
}

#[tokio::test]
async fn k3s_builds_from_its_scripts_with_pinned_downloads_and_never_through_dapper() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let out = world.dir.path().join("artifacts");
    let lock = world.release("v1.28.2", &["--out", out.to_str().unwrap()]);

    // Every URL scripts/download fetched is pinned, with the digest of what the stand-in
    // served; each was asked of the stand-in once, by the fetch step.
    let downloads = lock["downloads"].as_object().unwrap();
    let root_url =
        "https://github.com/k3s-io/k3s-root/releases/download/v0.12.2/k3s-root-amd64.tar";
    let chart_url = "https://k3s.io/k3s-charts/assets/traefik/traefik-25.0.2+up25.0.0.tgz";
    assert_eq!(
        downloads.keys().map(String::as_str).collect::<Vec<_>>(),
        [root_url, chart_url]
    );
    for (url, digest) in downloads {
        let served = std::fs::read(
            world
                .path()
                .join("downloads")
                .join(&url["https://".len()..]),
        )
        .unwrap();
        assert_eq!(
            digest.as_str().unwrap(),
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&served)))
        );
    }
    let mut asked = world.downloads.as_ref().unwrap().paths();
    asked.sort();
    let files: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|p| !p.contains("/runc/") && !p.contains("/plugins.git/"))
        .collect();
    assert_eq!(
        files,
        [
            "/github.com/k3s-io/k3s-root/releases/download/v0.12.2/k3s-root-amd64.tar",
            "/k3s.io/k3s-charts/assets/traefik/traefik-25.0.2+up25.0.0.tgz"
        ]
    );
    // Each repository k3s's scripts clone (runc in scripts/download, the CNI plugins in
    // scripts/build, reached by walking it) was cloned from the stand-in once, by the fetch
    // step, and is locked at the commit its tag names there.
    let clones = lock["clones"].as_object().unwrap();
    let served = world.path().join("downloads/github.com");
    for (name, repo, tag) in [
        (
            "https://github.com/k3s-io/runc#v1.1.12-k3s1",
            served.join("k3s-io/runc"),
            "v1.1.12-k3s1",
        ),
        (
            "https://github.com/rancher/plugins.git#v1.4.0-k3s2",
            served.join("rancher/plugins.git"),
            "v1.4.0-k3s2",
        ),
    ] {
        assert_eq!(
            clones[name].as_str().unwrap(),
            git(&repo, &["rev-parse", &format!("{tag}^{{commit}}")]).trim(),
            "{clones:?}"
        );
    }
    assert_eq!(clones.len(), 2, "{clones:?}");
    for repo in [
        "/github.com/k3s-io/runc/",
        "/github.com/rancher/plugins.git/",
    ] {
        let refs = asked
            .iter()
            .filter(|p| p.starts_with(repo) && p.ends_with("/info/refs"))
            .count();
        assert_eq!(refs, 1, "{repo} asked {refs} times: {asked:?}");
    }

    // The build was offline and packaged what the downloads hold beside k3s; the built k3s
    // starts: its Go check passes (the upstream Go came from the upstream tree kiln holds).
    let data = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(out.join("k3s-data-amd64.tar.gz"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&data.stdout);
    assert!(
        listed.contains("bin/aux/iptables-detect.sh")
            && listed.contains("build/static/charts/traefik-25.0.2+up25.0.0.tgz")
            && listed.contains("bin/cni")
            && listed.contains("bin/runc"),
        "{listed}"
    );
    let ran = std::process::Command::new(out.join("k3s"))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran).1);
    assert!(
        text(&ran).0.contains("golang go1.22.10"),
        "{}",
        text(&ran).0
    );

    // What the lockfile pinned is what any later fetch of these inputs must get: with the
    // chart's bytes changed and runc's tag moved at the source, a release in a fresh store is
    // refused naming the URL and the repository#ref, each with what was pinned and what came.
    let chart = world
        .path()
        .join("downloads")
        .join(&chart_url["https://".len()..]);
    let chart_bytes = std::fs::read(&chart).unwrap();
    std::fs::write(&chart, b"not the chart that was pinned").unwrap();
    let runc = served.join("k3s-io/runc");
    let runc_tag = git(&runc, &["rev-parse", "v1.1.12-k3s1"]);
    git(&runc, &["tag", "-f", "v1.1.12-k3s1", "v1.1.12-k3s1~1"]);
    git(&runc, &["update-server-info"]);
    let fresh = world.dir.path().join("fresh-store");
    let output = crate::common::kiln()
        .current_dir(world.path())
        .arg("--store")
        .arg(&fresh)
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .timed_output()
        .unwrap();
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step `k3s-download` gave output `urls/`")
            && stderr.contains(&format!("changed {chart_url} (pinned "))
            && stderr.contains("changed https://github.com/k3s-io/runc#v1.1.12-k3s1 (pinned "),
        "{stderr}"
    );
    std::fs::write(&chart, chart_bytes).unwrap();
    git(&runc, &["tag", "-f", "v1.1.12-k3s1", runc_tag.trim()]);
    git(&runc, &["update-server-info"]);

    // A k3s whose build asks for a URL or a clone no fetch step pinned (here only once k3s
    // is really built, which the fetch step's walk of scripts/build does not do) fails naming
    // it, even when the build ignores curl's and git's status.
    for (what, line, said) in [
        (
            "fetch an extra",
            "curl -sfL https://example.com/unpinned/extra.tar -o /tmp/extra.tar || true",
            "curl https://example.com/unpinned/extra.tar: no fetch step pinned this URL",
        ),
        (
            "clone an extra",
            "git clone --depth=1 --branch=v1 https://example.com/unpinned/extra.git /tmp/extra || true",
            "git clone https://example.com/unpinned/extra.git v1: no fetch step pinned this repository",
        ),
    ] {
        change_k3s(&world, what, |work| {
            let path = work.join("scripts/build");
            let body = std::fs::read_to_string(&path).unwrap();
            let marker = "echo \"built dist/artifacts/k3s";
            let edited = body.replacen(
                marker,
                &format!("if [ -s dist/artifacts/k3s ]; then {line}; fi\n{marker}"),
                1,
            );
            assert_ne!(body, edited);
            std::fs::write(&path, edited).unwrap();
        });
        let output = release_aside(&world);
        let stderr = text(&output).1;
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(said) && stderr.contains("the step asked for URLs it could not have"),
            "{stderr}"
        );
    }

    // Without scripts/build kiln falls back to `make`, which is dapper's here: offline, its
    // download of dapper is refused by name. The release above never called it.
    change_k3s(&world, "no scripts/build", |work| {
        git(work, &["rm", "--quiet", "scripts/build"]);
    });
    let output = release_aside(&world);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("curl https://releases.rancher.com/dapper/latest/dapper-"),
        "{stderr}"
    );
    assert!(!world.path().join("other").exists());
    assert!(world.path().join(LOCK).exists());
}
