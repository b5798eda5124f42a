//! The demo's whole command sequence with the world inside another git work tree — as
//! `./demo-world` lies inside a kiln checkout — run from a subdirectory with every remote and
//! path given relative to it. git resolves a relative local path from the top of the work tree
//! enclosing its cwd, so a relative path that reaches git unresolved breaks here (it once broke
//! `kiln verify-tags --remote published-fork.git` in the README's main command).

use crate::common::TimedOutput as _;
use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{World, docker_or_skip, git, kiln, text};

const LOCK: &str = "../lockfiles/v1.28.2-k3s1.lock.json";

/// Runs kiln in `dir` with the world's store; returns (exit code, stdout, stderr).
fn run(world: &World, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = kiln()
        .current_dir(dir)
        .arg("--store")
        .arg(world.store())
        .args(args)
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

fn run_ok(world: &World, dir: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(world, dir, args);
    assert_eq!(code, Some(0), "kiln {args:?}:\n{stdout}\n{stderr}");
    stdout
}

/// `kiln status --json` lines by id → mark.
fn marks(world: &World, dir: &Path, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["status", "v1.28.2", "--json"];
    all.extend_from_slice(args);
    let (_, stdout, stderr) = run(world, dir, &all);
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["mark"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_demo_sequence_works_inside_another_work_tree_from_a_subdirectory() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::nested();
    let w = world.path();
    // The world really is inside another work tree.
    let top = git(&w, &["rev-parse", "--show-toplevel"]);
    assert_ne!(Path::new(top.trim()), w.as_path(), "{top}");
    assert!(w.starts_with(top.trim()), "{top}");
    // The subdirectory has a kiln.toml of its own naming everything by `../` paths (the extra
    // module only comes from there); the flags below name the repositories again, relatively.
    let sub = w.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("kiln.toml"),
        format!("[repos]\nupstream = \"../upstream.git\"\nfork = \"../fork.git\"\nk3s = \"../k3s.git\"\n\n\
         [[modules]]\npath = \"github.com/k3s-io/helper\"\nrepo = \"../helper.git\"\n\n\
         [release]\nname = \"K3s Release Captain\"\nemail = \"captain@kiln-demo.invalid\"\n\
         download-mirror = \"{}\"\n",
        world.downloads.as_ref().unwrap().url
        ),
    )
    .unwrap();
    let repos = [
        "--upstream",
        "../upstream.git",
        "--fork",
        "../fork.git",
        "--k3s",
        "../k3s.git",
    ];

    // versions, plan and release with relative repositories, lockfile dir and --out.
    let mut args = vec!["versions", "--old", "v1.28.1", "--new", "v1.28.2", "--json"];
    args.extend(repos);
    let names: serde_json::Value = serde_json::from_str(&run_ok(&world, &sub, &args)).unwrap();
    assert_eq!(names["new_fork_tag"], "v1.28.2-k3s1");
    let mut args = vec![
        "release",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--lockfile-dir",
        "../lockfiles",
        "--out",
        "../artifacts",
        "--json",
    ];
    args.extend(repos);
    let lock: serde_json::Value = serde_json::from_str(&run_ok(&world, &sub, &args)).unwrap();
    assert!(
        lock["inputs"]["extra_modules"]["github.com/k3s-io/helper"].is_object(),
        "{lock:#}"
    );
    assert!(w.join("lockfiles/v1.28.2-k3s1.lock.json").is_file());
    assert!(w.join("artifacts/k3s").is_file());
    let mut args = vec!["plan", "--old", "v1.28.1", "--new", "v1.28.2", "--json"];
    args.extend(repos);
    let plan: serde_json::Value = serde_json::from_str(&run_ok(&world, &sub, &args)).unwrap();
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached"),
        "{plan:#}"
    );

    // verify with relative repositories and --keep.
    let mut args = vec!["verify", LOCK, "--steps", "git", "--keep", "../kept"];
    args.extend(repos);
    run_ok(&world, &sub, &args);

    // Bare stand-in remotes, named relatively: verify-tags, push, verify-tags.
    world.clone_repo("fork.git", "demo-world/published-fork.git", true);
    world.clone_repo("k3s.git", "demo-world/published-k3s.git", true);
    let fork_remote = "../published-fork.git";
    let k3s_remote = "../published-k3s.git";
    let (code, stdout, stderr) = run(
        &world,
        &sub,
        &["verify-tags", LOCK, "--remote", fork_remote],
    );
    assert_eq!(code, Some(4), "not pushed yet:\n{stdout}\n{stderr}");
    run_ok(
        &world,
        &sub,
        &[
            "push",
            LOCK,
            "--remote",
            fork_remote,
            "--k3s-remote",
            k3s_remote,
        ],
    );
    run_ok(
        &world,
        &sub,
        &["verify-tags", LOCK, "--remote", fork_remote],
    );

    // RC: its name and tag on the published branch, the KDM entry.
    let rc = run_ok(&world, &sub, &["rc", "v1.28.2", "--k3s", k3s_remote]);
    assert_eq!(rc.trim(), "v1.28.2-rc1+k3s1");
    run_ok(
        &world,
        &sub,
        &[
            "tag",
            "rc",
            "v1.28.2",
            "--k3s",
            k3s_remote,
            "--branch",
            "v1.28.2-k3s1",
        ],
    );
    world.clone_repo("kdm.git", "demo-world/kdm", false);
    world.clone_repo("k3s.git", "demo-world/k3s", false);
    run_ok(
        &world,
        &sub,
        &[
            "kdm",
            "add",
            "v1.28.2-rc1+k3s1",
            "--file",
            "../kdm/channels.yaml",
        ],
    );
    let paths = [
        "--lock",
        LOCK,
        "--remote",
        fork_remote,
        "--k3s-remote",
        k3s_remote,
        "--kdm",
        "../kdm/channels.yaml",
        "--channel",
        "../k3s/channel.yaml",
        "--registry",
        "127.0.0.1:1",
    ];
    let board = marks(&world, &sub, &paths);
    for (id, mark) in [
        ("built", "done"),
        ("pushed", "done"),
        ("k3s-branch", "done"),
        ("rc", "done"),
        ("verified", "todo"),
        ("kdm", "todo"),
        ("stable", "todo"),
    ] {
        assert_eq!(board[id], mark, "{id}: {board:?}");
    }

    // GA: tag, KDM promotion, stable channel, all by relative paths.
    run_ok(
        &world,
        &sub,
        &[
            "tag",
            "ga",
            "v1.28.2",
            "--k3s",
            k3s_remote,
            "--branch",
            "v1.28.2-k3s1",
        ],
    );
    run_ok(
        &world,
        &sub,
        &[
            "kdm",
            "add",
            "v1.28.2+k3s1",
            "--promote",
            "--file",
            "../kdm/channels.yaml",
        ],
    );
    run_ok(
        &world,
        &sub,
        &[
            "channel",
            "set-stable",
            "v1.28.2+k3s1",
            "--file",
            "../k3s/channel.yaml",
        ],
    );
    let board = marks(&world, &sub, &paths);
    for id in ["ga", "kdm", "stable"] {
        assert_eq!(board[id], "done", "{id}: {board:?}");
    }

    // kiln.toml's [publish], its paths relative to kiln.toml, used from the world's directory.
    let toml = w.join("kiln.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(
        "\n[publish]\nfork-remote = \"published-fork.git\"\nk3s-remote = \"published-k3s.git\"\n\
         registry = \"127.0.0.1:1\"\nkdm = \"kdm/channels.yaml\"\nchannel = \"k3s/channel.yaml\"\n",
    );
    std::fs::write(&toml, text).unwrap();
    run_ok(
        &world,
        &w,
        &["verify-tags", "lockfiles/v1.28.2-k3s1.lock.json"],
    );
    let board = marks(&world, &w, &[]);
    for id in ["built", "pushed", "k3s-branch", "rc", "ga", "kdm", "stable"] {
        assert_eq!(board[id], "done", "{id}: {board:?}");
    }

    // bump-k3s on a relative checkout path.
    let bumped = run_ok(
        &world,
        &sub,
        &["bump-k3s", "--old", "v1.28.1", "--new", "v1.28.2", "../k3s"],
    );
    assert!(bumped.contains("lines changed"), "{bumped}");
    assert!(
        std::fs::read_to_string(w.join("k3s/go.mod"))
            .unwrap()
            .contains("v1.28.2-k3s1")
    );
}
