//! k3s built the way k3s's own Dockerfile builds it, never through dapper's Makefile:
//! `scripts/download` runs once with network in the `k3s-download` fetch step (every URL it
//! fetches pinned in the lockfile), then `scripts/download` (replayed offline from those
//! files), `scripts/build` and `scripts/package-cli` run offline; kubernetes'
//! build/dependencies.yaml, which scripts/version.sh asks GitHub for, comes from the upstream
//! tree kiln holds.

use sha2::Digest as _;

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
    assert_eq!(
        asked,
        [
            "/github.com/k3s-io/k3s-root/releases/download/v0.12.2/k3s-root-amd64.tar",
            "/k3s.io/k3s-charts/assets/traefik/traefik-25.0.2+up25.0.0.tgz"
        ]
    );

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
            && listed.contains("build/static/charts/traefik-25.0.2+up25.0.0.tgz"),
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

    // A k3s whose build asks for a URL no fetch step pinned fails naming it, even when the
    // build ignores curl's status.
    change_k3s(&world, "fetch an extra", |work| {
        let path = work.join("scripts/build");
        let body = std::fs::read_to_string(&path).unwrap();
        let edited = body.replacen(
            "mkdir -p dist/artifacts\n",
            "mkdir -p dist/artifacts\ncurl -sfL https://example.com/unpinned/extra.tar -o /tmp/extra.tar || true\n",
            1,
        );
        assert_ne!(body, edited);
        std::fs::write(&path, edited).unwrap();
    });
    let output = release_aside(&world);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("curl https://example.com/unpinned/extra.tar: no fetch step pinned this URL")
            && stderr.contains("the step asked for URLs it could not have"),
        "{stderr}"
    );

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
