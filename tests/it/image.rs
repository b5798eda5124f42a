//! Toolchain images: bootstrap is a no-op when present, the lock explains differences, the
//! derived image carries its recipe. Needs the Go 1.23 base (scripts/test bootstraps it).

use crate::common::TimedOutput as _;
use crate::common::{self, docker_or_skip, text};

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
        .args(["image", "toolchain", "--go", "1.23.5", "--json"])
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
