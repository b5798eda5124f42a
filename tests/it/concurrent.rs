//! Row 17 of the reliability plan: two `kiln release` processes on one store, round after
//! round, each step runs once, the lockfiles are identical, and two concurrent pushes of the
//! result push each tag once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use crate::common::TimedOutput as _;
use crate::common::{self, World, created_between, docker_or_skip, git, now_text, text};

const LOCK: &str = "v1.28.2-k3s1.lock.json";

/// Starts `kiln --store STORE ARGS` in the world, its output piped.
fn start(world: &World, store: &Path, args: &[&str]) -> Child {
    common::kiln()
        .current_dir(world.path())
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for every child, within the suite's process limit (past it they are killed and the
/// test fails).
fn wait_all(children: Vec<Child>) -> Vec<Output> {
    let started = std::time::Instant::now();
    let waiters: Vec<_> = children
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output().unwrap()))
        .collect();
    while !waiters.iter().all(std::thread::JoinHandle::is_finished) {
        assert!(
            started.elapsed() < common::PROCESS_LIMIT,
            "concurrent kiln processes did not finish within {:?}",
            common::PROCESS_LIMIT
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    waiters.into_iter().map(|w| w.join().unwrap()).collect()
}

fn release_args(locks: &Path) -> Vec<String> {
    [
        "release",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--lockfile-dir",
        locks.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn two_concurrent_releases_on_one_store_run_each_step_once_and_lock_the_same() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let rounds = common::stress_rounds(3);
    let mut waited_rounds = 0;
    let mut first_lock: Option<Vec<u8>> = None;
    for round in 0..rounds {
        // A fresh store each round: every step is a miss, and the two processes race for it.
        let store = world.dir.path().join(format!("store-{round}"));
        let locks: [PathBuf; 2] =
            [0, 1].map(|i| world.dir.path().join(format!("locks-{round}-{i}")));
        let since = now_text();
        let children: Vec<Child> = locks
            .iter()
            .map(|dir| {
                let args = release_args(dir);
                start(
                    &world,
                    &store,
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let outputs = wait_all(children);
        let until = now_text();
        for output in &outputs {
            assert!(
                output.status.success(),
                "round {round}: a release failed:\n{}",
                text(output).1
            );
        }
        // Every step container was created once across the two processes.
        let mut created: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (pid, labels) in created_between(&docker, &since, &until, &pids).await {
            let step = labels.get("kiln.step").cloned().unwrap_or_default();
            created.entry(step).or_default().push(pid);
        }
        assert!(
            created.len() >= 4,
            "round {round}: too few steps ran: {created:?}"
        );
        for (step, by) in &created {
            assert_eq!(
                by.len(),
                1,
                "round {round}: step {step} ran {} times (by pids {by:?})",
                by.len()
            );
        }
        // The lockfiles are byte-identical, within the round and across rounds.
        let [one, two] = locks.map(|dir| std::fs::read(dir.join(LOCK)).unwrap());
        assert!(one == two, "round {round}: the two lockfiles differ");
        match &first_lock {
            None => first_lock = Some(one),
            Some(first) => assert!(*first == one, "round {round}: the lockfile changed"),
        }
        if outputs
            .iter()
            .any(|o| text(o).1.contains("waiting for the lock on"))
        {
            waited_rounds += 1;
        }
        // Nothing torn: the store verifies.
        let verify = common::kiln()
            .current_dir(world.path())
            .arg("--store")
            .arg(&store)
            .args(["store", "verify"])
            .timed_output()
            .unwrap();
        assert!(
            verify.status.success(),
            "round {round}: {}",
            text(&verify).1
        );
    }
    // The rounds overlapped: in at least one, a process waited for the other's step lock (a
    // test whose processes ran one after the other would prove nothing).
    assert!(
        waited_rounds > 0,
        "no round had one release wait for the other's lock"
    );

    // Two concurrent pushes of the locked release to one remote: both succeed, the remote
    // ends with each tag once, at its locked object.
    let store = world.dir.path().join("store-0");
    let lock_path = world.dir.path().join("locks-0-0").join(LOCK);
    let fork = world.clone_repo("fork.git", "fork-remote.git", true);
    let before = git(&fork, &["for-each-ref", "refs/tags"]).lines().count();
    let push = |_: usize| {
        start(
            &world,
            &store,
            &[
                "push",
                lock_path.to_str().unwrap(),
                "--remote",
                fork.to_str().unwrap(),
                "--json",
            ],
        )
    };
    let outputs = wait_all((0..2).map(push).collect());
    for output in &outputs {
        assert!(output.status.success(), "{}", text(output).1);
    }
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    let locked = lock["tags"].as_object().unwrap();
    let remote = git(
        &fork,
        &[
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname)",
            "refs/tags",
        ],
    );
    for (tag, object) in locked {
        let lines: Vec<_> = remote
            .lines()
            .filter(|l| l.split(' ').next() == Some(tag.as_str()))
            .collect();
        assert_eq!(lines.len(), 1, "{tag}: {remote}");
        assert!(
            lines[0].ends_with(object.as_str().unwrap()),
            "{tag} is not at its locked object: {}",
            lines[0]
        );
    }
    assert!(remote.lines().count() > before);
}
