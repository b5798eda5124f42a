//! `kiln status` on the demo, walked through the whole runbook: after release + push + an RC
//! tag exactly those lines are done; then images (the demo's k3s binary, pushed to a local
//! `docker-registry`), the KDM entry (`kiln kdm add` on a clone of the demo's kdm.git), the GA
//! tag, the stable channel and `kiln verify` make every line done; a moved branch is wrong.

use crate::common::TimedOutput as _;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::common::{Registry, World, docker_or_skip, git, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// The demo's release images: the k3s binary the release built, as the single layer of
/// each of the three images, pushed through the registry's HTTP API.
async fn push_images(registry: &Registry, binary: &[u8], tag: &str) {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    for repository in [
        "rancher/k3s",
        "rancher/k3s-upgrade",
        "rancher/system-agent-installer-k3s",
    ] {
        let reference =
            Reference::with_tag(registry.addr.clone(), repository.to_owned(), tag.to_owned());
        let layer = ImageLayer::new(
            binary.to_vec(),
            "application/vnd.oci.image.layer.v1.tar".to_owned(),
            None,
        );
        let config = Config::new(
            br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
            "application/vnd.oci.image.config.v1+json".to_owned(),
            None,
        );
        client
            .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
            .await
            .unwrap_or_else(|e| panic!("push {repository}:{tag}: {e}"));
    }
}

struct Board {
    code: Option<i32>,
    marks: BTreeMap<String, String>,
    json: serde_json::Value,
}

fn status(world: &World, args: &[&str]) -> Board {
    let mut all = vec!["status", "v1.28.2", "--json"];
    all.extend_from_slice(args);
    let output = world.kiln(&all);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output).1));
    let marks = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["mark"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Board {
        code: output.status.code(),
        marks,
        json,
    }
}

fn expect(board: &Board, done: &[&str], todo: &[&str]) {
    let want: BTreeMap<String, String> = done
        .iter()
        .map(|id| ((*id).to_owned(), "done".to_owned()))
        .chain(todo.iter().map(|id| ((*id).to_owned(), "todo".to_owned())))
        .collect();
    assert_eq!(board.marks, want, "{:#}", board.json);
}

fn run_ok(world: &World, args: &[&str]) -> String {
    let output = world.kiln(args);
    assert!(
        output.status.success(),
        "kiln {args:?}: {}",
        text(&output).1
    );
    text(&output).0
}

/// `kiln tag KIND v1.28.2` on the published release branch.
fn tag(world: &World, kind: &str, k3s_remote: &str) {
    run_ok(
        world,
        &[
            "tag",
            kind,
            "v1.28.2",
            "--k3s",
            k3s_remote,
            "--branch",
            "v1.28.2-k3s1",
        ],
    );
}

fn numstat(repo: &Path) -> String {
    git(repo, &["diff", "--numstat"]).trim().to_owned()
}

#[tokio::test]
async fn status_walks_the_runbook_and_measures_every_line() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let world = World::new();
    world.release("v1.28.2", &["--out", "dist"]);
    let fork_remote = world.clone_repo("fork.git", "fork-remote.git", true);
    let k3s_remote = world.clone_repo("k3s.git", "k3s-remote.git", true);
    let kdm = world.clone_repo("kdm.git", "kdm", false);
    let k3s = world.clone_repo("k3s.git", "k3s", false);
    let (fork_remote, k3s_remote) = (fork_remote.to_str().unwrap(), k3s_remote.to_str().unwrap());
    let kdm_file = kdm.join("channels.yaml");
    let channel_file = k3s.join("channel.yaml");
    let sources = [
        "--remote",
        fork_remote,
        "--k3s-remote",
        k3s_remote,
        "--registry",
        &registry.addr,
        "--kdm",
        kdm_file.to_str().unwrap(),
        "--channel",
        channel_file.to_str().unwrap(),
    ];
    let all = [
        "built",
        "pushed",
        "verified",
        "k3s-branch",
        "rc",
        "ga",
        "images",
        "kdm",
        "stable",
    ];

    // Released only: the lockfile is the one line done.
    let board = status(&world, &sources);
    expect(&board, &["built"], &all[1..]);
    assert_eq!(board.code, Some(4));

    // Release + push + RC tag: exactly those lines.
    run_ok(
        &world,
        &[
            "push",
            LOCK,
            "--remote",
            fork_remote,
            "--k3s-remote",
            k3s_remote,
        ],
    );
    tag(&world, "rc", k3s_remote);
    let board = status(&world, &sources);
    expect(
        &board,
        &["built", "pushed", "k3s-branch", "rc"],
        &["verified", "ga", "images", "kdm", "stable"],
    );
    assert_eq!(board.code, Some(4));
    let rc = &board.json["items"][4];
    assert!(
        rc["detail"]
            .as_str()
            .unwrap()
            .contains("v1.28.2-rc1+k3s1 at ")
            && rc["detail"]
                .as_str()
                .unwrap()
                .contains("the locked k3s commit"),
        "{rc}"
    );

    // The RC's images and KDM entry.
    let binary = std::fs::read(world.path().join("dist/k3s")).unwrap();
    push_images(&registry, &binary, "v1.28.2-rc1-k3s1").await;
    let kdm_path = kdm_file.to_str().unwrap();
    run_ok(
        &world,
        &["kdm", "add", "v1.28.2-rc1+k3s1", "--file", kdm_path],
    );
    assert_eq!(numstat(&kdm), "6\t0\tchannels.yaml");
    let once = std::fs::read(&kdm_file).unwrap();
    run_ok(
        &world,
        &["kdm", "add", "v1.28.2-rc1+k3s1", "--file", kdm_path],
    );
    assert_eq!(
        std::fs::read(&kdm_file).unwrap(),
        once,
        "a second run changed the file"
    );
    let board = status(&world, &sources);
    expect(
        &board,
        &["built", "pushed", "k3s-branch", "rc", "images"],
        &["verified", "ga", "kdm", "stable"],
    );

    // GA: tag, images, KDM promotion, stable channel, and a verified rebuild.
    tag(&world, "ga", k3s_remote);
    let board = status(&world, &sources);
    // Images are now looked for at the GA tag, which has none yet.
    assert_eq!(board.marks["images"], "todo", "{:#}", board.json);
    push_images(&registry, &binary, "v1.28.2-k3s1").await;
    run_ok(
        &world,
        &[
            "kdm",
            "add",
            "v1.28.2+k3s1",
            "--promote",
            "--file",
            kdm_path,
        ],
    );
    assert_eq!(numstat(&kdm), "6\t0\tchannels.yaml");
    run_ok(
        &world,
        &[
            "channel",
            "set-stable",
            "v1.28.2+k3s1",
            "--file",
            channel_file.to_str().unwrap(),
        ],
    );
    assert_eq!(numstat(&k3s), "1\t1\tchannel.yaml");
    run_ok(&world, &["verify", LOCK]);
    let board = status(&world, &sources);
    expect(&board, &all, &[]);
    assert_eq!(board.code, Some(0), "{:#}", board.json);
    let mut plain = vec!["status", "v1.28.2"];
    plain.extend_from_slice(&sources);
    let text_board = run_ok(&world, &plain);
    assert!(text_board.contains("9/9 done"), "{text_board}");
    // The same sources from kiln.toml's [publish] (relative paths from kiln.toml).
    let config = world.path().join("kiln.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    let _ = write!(
        toml,
        "\n[publish]\nfork-remote = \"../fork-remote.git\"\nk3s-remote = \"../k3s-remote.git\"\n\
         registry = \"{}\"\nkdm = \"../kdm/channels.yaml\"\nchannel = \"../k3s/channel.yaml\"\n",
        registry.addr
    );
    std::fs::write(&config, toml).unwrap();
    let board = status(&world, &[]);
    expect(&board, &all, &[]);
    let output = world.kiln(&["verify-tags", LOCK]);
    assert!(output.status.success(), "{}", text(&output).1);

    // A changed lockfile is not the verified one; a moved branch is wrong, not "todo".
    let lock_path = world.path().join(LOCK);
    let original = std::fs::read_to_string(&lock_path).unwrap();
    std::fs::write(&lock_path, format!("{original}\n")).unwrap();
    let board = status(&world, &sources);
    assert_eq!(board.marks["verified"], "todo", "{:#}", board.json);
    std::fs::write(&lock_path, original).unwrap();
    let main = git(Path::new(k3s_remote), &["rev-parse", "refs/heads/main"]);
    let main = main.trim();
    git(
        Path::new(k3s_remote),
        &["update-ref", "refs/heads/v1.28.2-k3s1", main],
    );
    let board = status(&world, &sources);
    assert_eq!(board.marks["k3s-branch"], "wrong", "{:#}", board.json);
    assert_eq!(board.code, Some(5));
}

#[test]
fn sources_not_given_are_unknown_and_a_missing_lockfile_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = crate::common::kiln()
        .current_dir(dir.path())
        .args(["--store"])
        .arg(dir.path().join("store"))
        .args(["status", "v1.28.2", "--registry", "127.0.0.1:1", "--json"])
        .timed_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output).1);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items[0]["mark"], "todo");
    assert!(
        items[0]["next"]
            .as_str()
            .unwrap()
            .starts_with("kiln release"),
        "{json:#}"
    );
    for item in &items[1..] {
        assert_eq!(item["mark"], "unknown", "{json:#}");
    }
    let bad = crate::common::kiln()
        .args(["status", "v1.28", "--json"])
        .timed_output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("v1.28"), "{}", text(&bad).1);
}
