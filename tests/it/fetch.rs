//! Third-party modules as fixed outputs: a demo world whose k3s requires modules only a module
//! proxy has (a plain one, a `/v3` module from a subdirectory, a pseudo-version, a
//! `+incompatible` one), served by a stand-in proxy on loopback that the test starts and stops.

use crate::common::TimedOutput as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::common::{HttpFiles, World, cache_namespace, docker_or_skip, git, kiln, text};

/// Another stand-in over the world's GOPROXY directory, which the test stops or alters apart
/// from the world's own.
fn stand_in(world: &World) -> HttpFiles {
    HttpFiles::start(Some(&world.path().join("goproxy")))
}

/// `kiln release --old v1.28.1 --new v1.28.2 --json [extra]` in `world` with `store`, the
/// module proxy at `proxy`.
fn release(world: &World, store: &Path, proxy: &str, extra: &[&str]) -> std::process::Output {
    kiln()
        .current_dir(world.path())
        .env("KILN_GO_PROXY", proxy)
        .arg("--store")
        .arg(store)
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2", "--json"])
        .args(extra)
        .timed_output()
        .unwrap()
}

/// The volumes of what this test's fetch steps kept for later fetches.
fn fetched_volumes() -> Vec<String> {
    let listed = std::process::Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=kiln.cache=kiln-fetched-modules",
        ])
        .args([
            "--filter",
            &format!("label=kiln.cache.namespace={}", cache_namespace()),
        ])
        .timed_output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed).1);
    text(&listed).0.lines().map(str::to_owned).collect()
}

/// Every file this test's fetches kept, by path in GOPROXY layout.
fn kept_files() -> Vec<String> {
    let mut files = Vec::new();
    for volume in fetched_volumes() {
        let listed = std::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", "-v"])
            .arg(format!("{volume}:/v:ro"))
            .args(["kiln/base:bookworm", "find", "/v", "-type", "f"])
            .timed_output()
            .unwrap();
        assert!(listed.status.success(), "{}", text(&listed).1);
        files.extend(
            text(&listed)
                .0
                .lines()
                .map(|l| l.trim_start_matches("/v/").to_owned()),
        );
    }
    files.sort();
    files
}

/// Drops what this test's fetches kept: the next fetch is another machine's first.
fn forget_fetched() {
    for volume in fetched_volumes() {
        let removed = std::process::Command::new("docker")
            .args(["volume", "rm", &volume])
            .timed_output()
            .unwrap();
        assert!(removed.status.success(), "{}", text(&removed).1);
    }
}

/// The network of every step the store has a record of, by step name.
fn networks(store: &Path) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::fs::read_dir(store.join("store-v1/records"))
        .unwrap()
        .flatten()
        .map(|entry| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
            (
                record["name"].as_str().unwrap().to_owned(),
                record["derivation"]["network"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// The environment of the stored record of step `name`.
fn derivation_env(store: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(store.join("store-v1/records"))
        .unwrap()
        .flatten()
        .map(|entry| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(entry.path()).unwrap())
                .unwrap()
        })
        .find(|record| record["name"] == name)
        .map_or_else(
            || panic!("no record of {name}"),
            |record| serde_json::from_value(record["derivation"]["env"].clone()).unwrap(),
        )
}

#[tokio::test]
async fn third_party_modules_are_fetched_once_pinned_and_built_offline() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let proxy = stand_in(&world);
    let store = world.store();
    let out = world.dir.path().join("artifacts");
    let output = release(
        &world,
        &store,
        &proxy.url,
        &["--out", out.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", text(&output).1);
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Only the fetch steps had network (the host's): the modules' and scripts/download's;
    // tidy and build had none.
    let networks = networks(&store);
    for fetch in ["modules-fetch", "k3s-download"] {
        assert!(
            networks.contains(&(fetch.into(), "host".into())),
            "{networks:?}"
        );
    }
    assert!(
        networks
            .iter()
            .filter(|(name, _)| name != "modules-fetch" && name != "k3s-download")
            .all(|(_, network)| network == "none"),
        "{networks:?}"
    );
    for step in ["k3s-tidy", "build"] {
        assert!(networks.contains(&(step.into(), "none".into())), "{step}");
        // The checksum database stays on but for kiln's own paths and the stand-in's (which
        // kiln.toml exempts): offline, tidy starts from the sums the fetch step pinned.
        let env = derivation_env(&store, step);
        assert_eq!(env.get("GOSUMDB"), None, "{step}: {env:?}");
        assert_eq!(
            env.get("GONOSUMDB").map(String::as_str),
            Some("github.com/k3s-io/kubernetes,github.com/k3s-io/helper,github.com/kiln-demo"),
            "{step}"
        );
    }

    // The new upstream's apimachinery raises semver to v1.3.0, which the old go.sum lacks:
    // tidy needed a version only the fetch could bring.
    let old_go_sum = git(
        &world.path().join("k3s.git"),
        &["show", "release-1.28:go.sum"],
    );
    assert!(
        old_go_sum.contains("github.com/kiln-demo/semver v1.2.0 "),
        "{old_go_sum}"
    );
    assert!(!old_go_sum.contains("semver v1.3.0"), "{old_go_sum}");
    assert!(
        git(
            &world.path().join("upstream.git"),
            &["show", "v1.28.2:staging/src/k8s.io/apimachinery/go.mod"]
        )
        .contains("github.com/kiln-demo/semver v1.3.0")
    );

    // The lockfile lists every third-party module with the sums the new k3s go.sum pins.
    let k3s = world.k3s_with_release_branch(&lock, "k3s-work");
    let go_sum = git(&k3s, &["show", "v1.28.2-k3s1:go.sum"]);
    let third_party = lock["third_party"].as_array().unwrap();
    let listed: Vec<&str> = third_party
        .iter()
        .map(|m| m["module"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "github.com/kiln-demo/legacy",
            "github.com/kiln-demo/pseudo",
            "github.com/kiln-demo/semver",
            "github.com/kiln-demo/store/api/v3"
        ]
    );
    let versions: Vec<&str> = third_party
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert!(versions.contains(&"v1.3.0"), "{versions:?}");
    // Every file fetched is recorded with its digest.
    assert!(
        lock["fetched"]["github.com/kiln-demo/semver/@v/v1.3.0.zip"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{}",
        lock["fetched"]
    );
    for m in third_party {
        let (module, version) = (
            m["module"].as_str().unwrap(),
            m["version"].as_str().unwrap(),
        );
        assert!(
            go_sum.contains(&format!("{module} {version} {}", m["h1"].as_str().unwrap())),
            "{module}: {go_sum}"
        );
        assert!(
            go_sum.contains(&format!(
                "{module} {version}/go.mod {}",
                m["go_mod_h1"].as_str().unwrap()
            )),
            "{module}: {go_sum}"
        );
    }
    // The artifact was built on them.
    let ran = std::process::Command::new(out.join("k3s"))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran).1);
    assert!(
        text(&ran).0.contains(
            "third-party [v1.3.0 v3.5.9 v0.0.0-20230801120000-0123456789ab v2.1.0+incompatible]"
        ),
        "{}",
        text(&ran).0
    );

    // Kept for later fetches: only what Go checks when it reads it. These paths are exempt from
    // the checksum database, so only versions k3s's committed go.sum pins (semver v1.2.0, not
    // the v1.3.0 upstream raised it to) and never an .info.
    let kept = kept_files();
    assert!(
        kept.contains(&"github.com/kiln-demo/semver/@v/v1.2.0.zip".to_owned()),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|f| f.contains("semver/@v/v1.3.0")
            || std::path::Path::new(f)
                .extension()
                .is_some_and(|e| e == "info")),
        "{kept:?}"
    );

    // A bump that raises one module (v1.28.3 raises semver to v1.3.1) downloads that module
    // only: everything else comes from what the first fetch kept.
    let before = proxy.paths().len();
    let output = kiln()
        .current_dir(world.path())
        .env("KILN_GO_PROXY", &proxy.url)
        .arg("--store")
        .arg(&store)
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.3", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    // (Only a version's .info, which nothing checks, is asked again for the others.)
    let asked: Vec<String> = proxy.paths()[before..]
        .iter()
        .filter(|p| {
            std::path::Path::new(p)
                .extension()
                .is_none_or(|e| e != "info")
        })
        .cloned()
        .collect();
    assert_eq!(
        asked,
        [
            "/github.com/kiln-demo/semver/@v/v1.3.1.mod",
            "/github.com/kiln-demo/semver/@v/v1.3.1.zip"
        ],
        "{:?}",
        proxy.paths()
    );
    let bumped: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        bumped["third_party"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["version"] == "v1.3.1"),
        "{}",
        bumped["third_party"]
    );

    // What was kept never changes an output: with nothing kept, in a fresh store, the bump
    // gives the same lockfile byte for byte.
    forget_fetched();
    let cold = world.dir.path().join("cold-lockfiles");
    let output = kiln()
        .current_dir(world.path())
        .env("KILN_GO_PROXY", &proxy.url)
        .arg("--store")
        .arg(world.dir.path().join("cold-store"))
        .args([
            "release",
            "--old",
            "v1.28.1",
            "--new",
            "v1.28.3",
            "--lockfile-dir",
        ])
        .arg(&cold)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(
        std::fs::read_to_string(cold.join("v1.28.3-k3s1.lock.json")).unwrap(),
        std::fs::read_to_string(world.path().join("lockfiles/v1.28.3-k3s1.lock.json")).unwrap()
    );

    // Another world, another store and another stand-in (another port: the proxy's URL is not
    // part of any key), with nothing kept from earlier fetches: the same lockfile, byte for
    // byte.
    forget_fetched();
    let other = World::new();
    let other_proxy = stand_in(&other);
    let output = release(&other, &other.store(), &other_proxy.url, &[]);
    assert!(output.status.success(), "{}", text(&output).1);
    let lock_path = |w: &World| w.path().join("lockfiles/v1.28.2-k3s1.lock.json");
    assert_eq!(
        std::fs::read_to_string(lock_path(&other)).unwrap(),
        std::fs::read_to_string(lock_path(&world)).unwrap()
    );

    // `kiln verify` refetches in a fresh store, held to the lockfile's pins, and matches.
    let output = kiln()
        .current_dir(world.path())
        .env("KILN_GO_PROXY", &proxy.url)
        .arg("--store")
        .arg(&store)
        .args(["verify", "lockfiles/v1.28.2-k3s1.lock.json", "--json"])
        .timed_output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output).0,
        text(&output).1
    );

    // The proxy now serves other bytes for a version already fetched (its .info, which go.sum
    // does not cover): a fresh store refetches, and the pin the lockfile holds refuses it.
    let info = world
        .path()
        .join("goproxy/github.com/kiln-demo/semver/@v/v1.3.0.info");
    let original = std::fs::read(&info).unwrap();
    std::fs::write(
        &info,
        "{\"Version\":\"v1.3.0\",\"Time\":\"2024-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    forget_fetched();
    let output = release(&world, &world.dir.path().join("store-2"), &proxy.url, &[]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // What the refused fetch kept is dropped with it.
    assert_eq!(fetched_volumes(), Vec::<String>::new());
    assert!(
        stderr.contains("step `modules-fetch` gave output `proxy/` as")
            && stderr.contains(&format!(
                "pinned to {}",
                lock["steps"]["modules-fetch"]["outputs"]["proxy/"]
                    .as_str()
                    .unwrap()
            ))
            // Named file by file from the lockfile's record of what was fetched.
            && stderr.contains("changed github.com/kiln-demo/semver@v1.3.0 (info)"),
        "{stderr}"
    );
    // `kiln verify` refetches (fresh caches) and names it the same way.
    let output = kiln()
        .current_dir(world.path())
        .env("KILN_GO_PROXY", &proxy.url)
        .arg("--store")
        .arg(&store)
        .args(["verify", "lockfiles/v1.28.2-k3s1.lock.json"])
        .timed_output()
        .unwrap();
    let stderr = text(&output).1;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("changed github.com/kiln-demo/semver@v1.3.0 (info)"),
        "{stderr}"
    );
    std::fs::write(&info, original).unwrap();

    // The stand-in stopped: with the fetch outputs in the store the release needs no network;
    // a fresh store cannot fetch, and says through which proxy.
    let url = proxy.url.clone();
    drop(proxy);
    let output = release(&world, &store, &url, &[]);
    assert!(output.status.success(), "{}", text(&output).1);
    let fresh = world.dir.path().join("fresh-store");
    let output = release(&world, &fresh, &url, &[]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("resolving k3s's modules through {url} failed")),
        "{stderr}"
    );

    // `kiln verify --offline` rebuilds everything but the fetch, whose pinned outputs come
    // from the store; without them in the store it says so, before any step.
    let verify = |store: &Path, extra: &[&str]| {
        kiln()
            .current_dir(world.path())
            .env("KILN_GO_PROXY", &url)
            .arg("--store")
            .arg(store)
            .args(["verify", "lockfiles/v1.28.2-k3s1.lock.json", "--json"])
            .args(extra)
            .timed_output()
            .unwrap()
    };
    let output = verify(&store, &["--offline"]);
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output).0,
        text(&output).1
    );
    let output = verify(&world.dir.path().join("empty-store"), &["--offline"]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the store holds no record of the `modules-fetch` step"),
        "{stderr}"
    );
    // Online, with the stand-in down, the refetch fails naming the proxy.
    let output = verify(&store, &[]);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text(&output).1.contains(&format!("through {url} failed")),
        "{}",
        text(&output).1
    );
}

/// A zip that go.sum pins, altered on the stand-in: the release fails naming the module, no
/// record of the fetch is stored and no lockfile written.
#[tokio::test]
async fn an_altered_zip_on_the_proxy_is_refused_naming_the_module() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let zip_path: PathBuf = world
        .path()
        .join("goproxy/github.com/kiln-demo/semver/@v/v1.2.0.zip");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in [
        ("go.mod", "module github.com/kiln-demo/semver\n\ngo 1.20\n"),
        (
            "semver.go",
            "// Package semver, altered on its way.\npackage semver\n\nconst Version = \"v1.2.0-evil\"\n",
        ),
    ] {
        zip.start_file(
            format!("github.com/kiln-demo/semver@v1.2.0/{name}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    std::fs::write(&zip_path, zip.finish().unwrap().into_inner()).unwrap();
    let proxy = stand_in(&world);
    let output = release(&world, &world.store(), &proxy.url, &[]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("github.com/kiln-demo/semver@v1.2.0")
            && stderr.contains("checksum mismatch")
            && stderr.contains("SECURITY ERROR"),
        "{stderr}"
    );
    assert!(
        !networks(&world.store())
            .iter()
            .any(|(name, _)| name == "modules-fetch"),
        "a record of the failed fetch was stored"
    );
    assert!(
        !world
            .path()
            .join("lockfiles/v1.28.2-k3s1.lock.json")
            .exists()
    );
}

/// `[go] fetch-network` in kiln.toml decides the fetch step's network: on an internal network
/// the loopback stand-in is out of reach and the release says which proxy it could not
/// resolve through; a network the engine lacks is named as such.
#[tokio::test]
async fn the_fetch_step_runs_on_the_network_kiln_toml_names() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let proxy = stand_in(&world);
    let network = format!("kiln-test-internal-{}", std::process::id());
    let created = std::process::Command::new("docker")
        .args(["network", "create", "--internal", &network])
        .timed_output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created).1);
    let toml_path = world.path().join("kiln.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let set_network = |name: &str| {
        std::fs::write(
            &toml_path,
            toml.replace("\n[go]\n", &format!("\n[go]\nfetch-network = \"{name}\"\n")),
        )
        .unwrap();
    };

    set_network(&network);
    let output = release(&world, &world.store(), &proxy.url, &[]);
    let removed = std::process::Command::new("docker")
        .args(["network", "rm", &network])
        .timed_output()
        .unwrap();
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resolving k3s's modules through {} failed",
            proxy.url
        )),
        "{stderr}"
    );
    assert!(removed.status.success(), "{}", text(&removed).1);

    set_network(&network);
    let output = release(&world, &world.store(), &proxy.url, &[]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the engine has no network `{network}`")),
        "{stderr}"
    );
    assert!(
        !world
            .path()
            .join("lockfiles/v1.28.2-k3s1.lock.json")
            .exists()
    );

    // The host's network (the default) reaches the stand-in.
    set_network("host");
    let output = release(&world, &world.store(), &proxy.url, &[]);
    assert!(output.status.success(), "{}", text(&output).1);
}
