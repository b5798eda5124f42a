//! Toolchain images: bootstrap is a no-op when present, the lock explains differences, the
//! derived image carries its recipe; exact Go toolchains from pinned distributions. Needs the
//! Go 1.23 base, the plain base and the Go archives of `KILN_GO_ARCHIVES` (scripts/test makes
//! them all).

use crate::common::TimedOutput as _;
use crate::common::{self, Workspace, docker_or_skip, text};

fn bootstrap_json(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let output = common::kiln()
        .args(["image", "bootstrap", "--go", "1.23", "--json"])
        .args(args)
        .timed_output()
        .unwrap();
    let value = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output, value)
}

#[tokio::test]
async fn bootstrap_with_the_image_present_is_a_no_op() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (output, report) = bootstrap_json(&[]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(report["already_present"], true);
    assert!(
        report["image"]["rootfs"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        report["image"]["go_version"]
            .as_str()
            .unwrap()
            .starts_with("1.23.")
    );
    let packages = report["image"]["packages"].as_object().unwrap();
    for package in [
        "golang-1.23-go",
        "git",
        "make",
        "bash",
        "coreutils",
        "tar",
        "gzip",
        "ca-certificates",
    ] {
        assert!(packages.contains_key(package), "{package} missing");
    }
    // Docs, man pages and locales were excluded: no locales package, no man-db.
    assert!(!packages.contains_key("man-db"));
}

#[tokio::test]
async fn lock_differences_are_explained_and_locked_refuses_them() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().to_str().unwrap();

    // No lock in the directory: reported as missing, and --locked refuses.
    let (output, report) = bootstrap_json(&["--lock-dir", lock_dir]);
    assert!(output.status.success());
    assert_eq!(report["lock"]["status"], "missing");
    let (output, _) = bootstrap_json(&["--lock-dir", lock_dir, "--locked"]);
    assert_eq!(output.status.code(), Some(1));

    // --update-lock records it; then it matches.
    let (output, report) = bootstrap_json(&["--lock-dir", lock_dir, "--update-lock"]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(report["lock"]["status"], "updated");
    let lock_path = dir.path().join("bookworm-go1.23.lock");
    let (_, report) = bootstrap_json(&["--lock-dir", lock_dir, "--locked"]);
    assert_eq!(report["lock"]["status"], "matches");

    // Edit the lock as if Debian had moved git and dropped a package since.
    let original = std::fs::read_to_string(&lock_path).unwrap();
    let edited: String = original
        .lines()
        .filter(|l| !l.starts_with("package make "))
        .map(|l| {
            if l.starts_with("package git ") {
                "package git 1:0.0.1-1".to_owned()
            } else {
                l.to_owned()
            }
        })
        .chain(["package imaginary 1.0".to_owned()])
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&lock_path, edited).unwrap();

    let (output, report) = bootstrap_json(&["--lock-dir", lock_dir]);
    assert!(
        output.status.success(),
        "without --locked a difference is a warning"
    );
    assert_eq!(report["lock"]["status"], "differs");
    let (output, _) = bootstrap_json(&["--lock-dir", lock_dir, "--locked"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("changed git: 1:0.0.1-1 ->"), "{stderr}");
    assert!(stderr.contains("added   make"), "{stderr}");
    assert!(stderr.contains("removed imaginary 1.0"), "{stderr}");
    assert!(stderr.contains("--update-lock"), "{stderr}");
}

#[tokio::test]
async fn toolchain_image_is_found_by_its_recipe() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let output = common::kiln()
        .args(["image", "toolchain", "--go", "1.23", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let image: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(image["id"], docker.image.as_str());
    let base: kiln::hash::Digest = image["base"].as_str().unwrap().parse().unwrap();
    let recipe = kiln::image::toolchain_recipe(&base, kiln::image::GoLine::Go123);
    assert_eq!(image["recipe"], recipe.to_string());
}

/// A production-like base (what images/production/Dockerfile yields: Go under /usr/local/go,
/// `GOLANG_VERSION` in its env), made locally from the bootstrapped one since no registry is
/// reachable here.
#[tokio::test]
async fn toolchain_builds_on_a_production_style_base_identified_by_its_layers() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine();
    let base = kiln::image::find_base(engine, kiln::image::GoLine::Go123)
        .await
        .unwrap()
        .unwrap();
    let tag = format!("kiln-test/prod-base:{}", uuid::Uuid::new_v4().simple());
    let dockerfile = format!(
        "FROM {}\nENV GOLANG_VERSION={}\nRUN ln -s /usr/lib/go-1.23 /usr/local/go\nLABEL kiln.test=1\n",
        base.id, base.go_version
    );
    let mut context = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    context
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let context = context.into_inner().unwrap();
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .networkmode("none")
        .rm(true)
        .build();
    let mut build =
        engine
            .docker()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(info) = futures::TryStreamExt::try_next(&mut build).await.unwrap() {
        assert!(info.error_detail.is_none(), "{info:?}");
    }

    let output = common::kiln()
        .args([
            "image",
            "toolchain",
            "--go",
            "1.23",
            "--base",
            &tag,
            "--json",
        ])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let image: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Another base, another identity and recipe than the bootstrapped one.
    assert_ne!(image["base"], base.rootfs.to_string());
    assert_ne!(image["id"], docker.image.as_str());
    let id = image["id"].as_str().unwrap().to_owned();
    let (mut step, _) = docker.step("prod-go", &["go", "version"]);
    step.image = id.clone();
    let out = kiln::sandbox::run_to_end(&docker.sandbox, step, |_| {})
        .await
        .unwrap()
        .stdout;
    assert!(
        out[0].starts_with(&format!("go version go{} ", base.go_version)),
        "{out:?}"
    );

    // A base whose Go is another line is refused.
    let output = common::kiln()
        .args(["image", "toolchain", "--go", "1.22", "--base", &tag])
        .timed_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("expected Go 1.22"),
        "{}",
        text(&output).1
    );

    let remove = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    engine
        .docker()
        .remove_image(&id, Some(remove.clone()), None)
        .await
        .unwrap();
    engine
        .docker()
        .remove_image(&tag, Some(remove), None)
        .await
        .unwrap();
}

/// Two bootstraps from the same mirror state are bit-identical: a forced rebuild gives the
/// rootfs digest the engine already has.
#[tokio::test]
async fn forced_bootstrap_reproduces_the_same_rootfs() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let before = kiln::image::find_base(docker.sandbox.engine(), kiln::image::GoLine::Go123)
        .await
        .unwrap()
        .unwrap();
    let docker_api = docker.sandbox.engine().docker();
    let old_id = docker_api
        .inspect_image("kiln/base:bookworm-go1.23")
        .await
        .unwrap()
        .id
        .unwrap();
    let (output, report) = bootstrap_json(&["--force"]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(report["already_present"], false);
    assert_eq!(report["image"]["rootfs"], before.rootfs.to_string());
    assert_eq!(
        report["image"]["packages"].as_object().unwrap().len(),
        before.packages.len()
    );
    // The replaced import is gone, unless an image (a toolchain) is built on it.
    if docker_api.inspect_image(&old_id).await.is_ok() {
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .all(true)
            .build();
        let images = docker_api.list_images(Some(options)).await.unwrap();
        assert!(
            images.iter().any(|i| i.parent_id == old_id),
            "the replaced base {old_id} was left behind unused"
        );
    }
}

/// A release (or any step) on a Go whose base was never bootstrapped says how to get it.
#[tokio::test]
async fn a_missing_base_names_the_bootstrap_command() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    // scripts/test bootstraps 1.22 and 1.23 only; a machine that has 1.21 cannot show this.
    if kiln::image::find_base(docker.sandbox.engine(), kiln::image::GoLine::Go121)
        .await
        .unwrap()
        .is_some()
    {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: this engine has a Go 1.21 base");
        }
        return;
    }
    let output = common::kiln()
        .args(["image", "toolchain", "--go", "1.21"])
        .timed_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("base image kiln/base:bookworm-go1.21 is not on the Docker engine"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kiln image bootstrap --go 1.21"),
        "{stderr}"
    );
}

use common::{go_archives, go_wheel as wheel};

fn toolchain(args: &[&str]) -> std::process::Output {
    common::kiln()
        .env("KILN_GO_ARCHIVES", go_archives())
        .args(["image", "toolchain", "--json"])
        .args(args)
        .timed_output()
        .unwrap()
}

/// The ids of the toolchain images whose Go is `version`.
async fn images_of(docker: &common::Docker, version: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("label", vec![format!("kiln.go={version}")])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut ids: Vec<String> = docker
        .sandbox
        .engine()
        .docker()
        .list_images(Some(options))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// `go version` inside image `id`, through `kiln sandbox run`.
fn go_version_in(id: &str) -> String {
    let output = common::kiln()
        .args(["sandbox", "run", "--image", id, "--", "go", "version"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    text(&output).0
}

/// Exact Go from pinned distributions: 1.24.11 and 1.21.13 each give an image whose `go
/// version` is exactly that, found again with the same identity; a one-byte-changed archive is
/// refused naming both digests with nothing imported; an unpinned version is refused (also
/// under `--locked`) and pinned with `--update-lock`; a plan step names `toolchain:1.24.11`.
#[tokio::test]
async fn exact_go_toolchains_come_from_pinned_distributions_only() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    for version in ["1.24.11", "1.21.13"] {
        let first = toolchain(&["--go", version]);
        assert!(first.status.success(), "{}", text(&first).1);
        let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
        assert_eq!(first["go_version"], version);
        assert_eq!(
            go_version_in(first["id"].as_str().unwrap()).trim(),
            format!("go version go{version} linux/amd64")
        );
        let again = toolchain(&["--go", version]);
        let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(again["recipe"], first["recipe"]);
        assert_eq!(again["already_present"], true);
        // The identity is the base, the version, the archive and the recipe.
        let recipe = kiln::image::exact_recipe(
            &first["base"].as_str().unwrap().parse().unwrap(),
            &kiln::image::ExactGo::parse(version).unwrap(),
            &first["pin"]["digest"].as_str().unwrap().parse().unwrap(),
        );
        assert_eq!(first["recipe"], recipe.to_string());
    }

    // One byte changed: refused naming the pin's digest and the archive's, nothing imported.
    let scratch = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(wheel("1.24.11")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let altered = scratch.path().join("go1.24.11.linux-amd64.zip");
    std::fs::write(&altered, &bytes).unwrap();
    let before = images_of(&docker, "1.24.11").await;
    let output = toolchain(&["--go", "1.24.11", "--go-archive", altered.to_str().unwrap()]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let pinned = kiln::hash::Digest::of(&std::fs::read(wheel("1.24.11")).unwrap());
    assert!(
        stderr.contains("does not match its pin")
            && stderr.contains(&pinned.to_string())
            && stderr.contains(&kiln::hash::Digest::of(&bytes).to_string()),
        "{stderr}"
    );
    assert_eq!(images_of(&docker, "1.24.11").await, before);
    // Nor with --update-lock: a version kiln pins is never trusted anew, whichever lock file
    // is written.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = toolchain(&[
        "--go",
        "1.24.11",
        "--go-archive",
        altered.to_str().unwrap(),
        "--update-lock",
        "--lock-dir",
        elsewhere.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output).1);
    assert!(text(&output).1.contains("does not match its pin"));
    assert!(!elsewhere.path().join("go.lock").exists());
    // An archive of another version is not pinned as this one, even with --update-lock.
    let output = toolchain(&[
        "--go",
        "1.24.12",
        "--go-archive",
        wheel("1.24.11").to_str().unwrap(),
        "--update-lock",
        "--lock-dir",
        elsewhere.path().to_str().unwrap(),
    ]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds go1.24.11, not go1.24.12"),
        "{stderr}"
    );
    assert!(!elsewhere.path().join("go.lock").exists());
    assert!(images_of(&docker, "1.24.12").await.is_empty());

    // An unpinned version refused, then trusted with --update-lock: a whole release does that
    // (release::an_unpinned_go_is_refused_before_any_step_and_pinned_with_update_go_lock).

    // A plan step in the exact toolchain: the Go it runs is the one named.
    let ws = Workspace::new();
    ws.write_plan(
        r#"
[[step]]
name = "go-version"
image = "toolchain:1.24.11"
argv = ["/bin/sh", "-c", "go version > go.txt; go env GOROOT GOTOOLCHAIN >> go.txt"]
outputs = ["go.txt"]
"#,
    );
    let out = ws.path().join("out");
    let output = ws
        .kiln()
        .env("KILN_GO_ARCHIVES", go_archives())
        .args(["run", "--file", "plan.toml", "--out"])
        .arg(&out)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(
        std::fs::read_to_string(out.join("go-version/go.txt")).unwrap(),
        "go version go1.24.11 linux/amd64\n/usr/local/go\nlocal\n"
    );
}

/// A tiny stand-in Go distribution of `version` whose `bin/go` is a script printing what the
/// real one prints: as the official `.tar.gz` (`go/` tree) or as the module proxy's zip (no
/// modes, `golang.org/toolchain@v0.0.1-go<V>.linux-amd64/` prefix).
fn fake_go(version: &str, module_zip: bool) -> Vec<u8> {
    use std::io::Write as _;
    let script = format!("#!/bin/sh\necho \"go version go{version} linux/amd64\"\n");
    let entries = [
        (
            "VERSION",
            format!("go{version}\ntime 2026-01-01T00:00:00Z\n"),
        ),
        ("bin/go", script),
        ("src/_go.mod", "module std\n".to_owned()),
    ];
    if module_zip {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, content) in &entries {
            zip.start_file(
                format!("golang.org/toolchain@v0.0.1-go{version}.linux-amd64/{name}"),
                zip::write::SimpleFileOptions::default().unix_permissions(0o644),
            )
            .unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        return zip.finish().unwrap().into_inner();
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, content) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(if name.starts_with("bin/") {
            0o755
        } else {
            0o644
        });
        tar.append_data(&mut header, format!("go/{name}"), content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Go archives from the network: with nothing on the machine, an unpinned version is refused
/// before anything is downloaded; `--update-lock` takes it from the official download (or,
/// when that has none, from the module proxy's toolchain zip, whose modes and go.mod files are
/// restored), checks `go version` in the image and pins it; a download that later differs from
/// its pin is refused naming both digests.
#[tokio::test]
async fn go_archives_come_from_the_download_or_the_module_proxy_when_missing_here() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let server = common::HttpFiles::start(None);
    let (official, module) = ("1.99.1", "1.99.2");
    server.serve(
        &format!("/dl/go{official}.linux-amd64.tar.gz"),
        fake_go(official, false),
    );
    server.serve(
        &format!("/proxy/golang.org/toolchain/@v/v0.0.1-go{module}.linux-amd64.zip"),
        fake_go(module, true),
    );
    let empty = tempfile::tempdir().unwrap();
    let locks = tempfile::tempdir().unwrap();
    let lock_dir = locks.path().to_str().unwrap();
    let remove = |version: &'static str| {
        let docker = &docker;
        async move {
            for id in images_of(docker, version).await {
                let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                    .force(true)
                    .build();
                let _ = docker
                    .sandbox
                    .engine()
                    .docker()
                    .remove_image(&id, Some(options), None)
                    .await;
            }
        }
    };
    remove(official).await;
    remove(module).await;
    let fetch = |args: &[&str]| {
        common::kiln()
            .env("KILN_GO_ARCHIVES", empty.path())
            .env("KILN_GO_DOWNLOAD_URL", format!("{}/dl", server.url))
            .env("KILN_GO_PROXY", format!("{}/proxy", server.url))
            .args(["image", "toolchain", "--json", "--lock-dir", lock_dir])
            .args(args)
            .timed_output()
            .unwrap()
    };

    let output = fetch(&["--go", official]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("Go {official} has no pin")),
        "{stderr}"
    );
    assert_eq!(server.requests(), 0, "an unpinned version was downloaded");
    // An unpinned archive on this machine: refused naming its digest, with what to do; under
    // --locked, saying the lock is held. Nothing is pinned either way.
    let given = empty
        .path()
        .join("given")
        .join(format!("go{official}.linux-amd64.tar.gz"));
    std::fs::create_dir_all(given.parent().unwrap()).unwrap();
    std::fs::write(&given, fake_go(official, false)).unwrap();
    for (extra, said) in [
        (None, "--update-lock"),
        (Some("--locked"), "--locked refuses new pins"),
    ] {
        let mut args = vec!["--go", official, "--go-archive", given.to_str().unwrap()];
        args.extend(extra);
        let output = fetch(&args);
        let stderr = text(&output).1;
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("Go {official} has no pin")),
            "{stderr}"
        );
        assert!(stderr.contains(said), "{said}: {stderr}");
        assert!(!locks.path().join("go.lock").exists());
    }
    assert!(images_of(&docker, official).await.is_empty());

    for (version, file) in [
        (official, format!("go{official}.linux-amd64.tar.gz")),
        (module, format!("v0.0.1-go{module}.linux-amd64.zip")),
    ] {
        let output = fetch(&["--go", version, "--update-lock"]);
        let stderr = text(&output).1;
        assert!(output.status.success(), "{stderr}");
        let made: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(made["pin"]["file"], file.as_str());
        assert_eq!(
            go_version_in(made["id"].as_str().unwrap()).trim(),
            format!("go version go{version} linux/amd64")
        );
    }
    let lock = std::fs::read_to_string(locks.path().join("go.lock")).unwrap();
    assert_eq!(
        lock.lines().filter(|l| l.starts_with("go 1.99.")).count(),
        2
    );

    // The download changes under its pin: refused naming both digests, nothing imported.
    remove(official).await;
    let mut altered = fake_go(official, false);
    altered.extend_from_slice(b"\0");
    server.serve(
        &format!("/dl/go{official}.linux-amd64.tar.gz"),
        altered.clone(),
    );
    let output = fetch(&["--go", official]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not match its pin")
            && stderr.contains(&kiln::hash::Digest::of(&fake_go(official, false)).to_string())
            && stderr.contains(&kiln::hash::Digest::of(&altered).to_string()),
        "{stderr}"
    );
    assert!(images_of(&docker, official).await.is_empty());
}
