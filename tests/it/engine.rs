//! The engine and the store against a real Docker engine: caching, concurrency, gc, crashes.

use crate::common::TimedOutput as _;
use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use futures::TryStreamExt as _;

use crate::common::{self, Workspace, docker_or_skip, now_text, outcomes, text, unique};

/// A three-step chain with a git input: a → b → c.
/// Three steps: a git input, a file output, a tree output read by the next step.
pub(crate) fn chain(id: &str) -> String {
    format!(
        r#"
[[step]]
name = "a-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "cat /in/src/README > a.txt; echo $V >> a.txt"]
env = {{ V = "1" }}
outputs = ["a.txt"]
[step.inputs]
src = {{ git = "repo", rev = "v1" }}

[[step]]
name = "b-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "mkdir -p tree/sub && cp /in/a tree/sub/a && echo b > tree/b"]
outputs = ["tree/"]
[step.inputs]
a = {{ step = "a-{id}", output = "a.txt" }}

[[step]]
name = "c-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "cat /in/tree/sub/a /in/tree/b > c.txt"]
outputs = ["c.txt"]
[step.inputs]
tree = {{ step = "b-{id}", output = "tree/" }}
"#
    )
}

/// How many step containers named `prefix…` the engine created between `since` and `until`.
async fn containers_created(docker: &common::Docker, since: &str, until: &str, id: &str) -> usize {
    let filters = HashMap::from([("type", vec!["container"]), ("event", vec!["create"])]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(since)
        .until(until)
        .filters(&filters)
        .build();
    let events: Vec<_> = docker
        .sandbox
        .engine()
        .docker()
        .events(Some(options))
        .try_collect()
        .await
        .unwrap();
    events
        .iter()
        .filter(|e| {
            e.actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get("kiln.step"))
                .is_some_and(|s| s.ends_with(id))
        })
        .count()
}

#[tokio::test]
async fn a_fully_cached_rerun_starts_no_container() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&chain(&id));

    let before_first = now_text();
    let first = ws.run_json();
    let after_first = now_text();
    assert!(outcomes(&first).iter().all(|(_, o)| o == "ran"), "{first}");
    assert_eq!(
        containers_created(&docker, &before_first, &after_first, &id).await,
        3
    );

    let output = ws
        .kiln()
        .args(["run", "--file", "plan.toml", "--json", "--out", "out"])
        .timed_output()
        .unwrap();
    let after_second = now_text();
    assert!(output.status.success(), "{}", text(&output).1);
    let second: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        outcomes(&second).iter().all(|(_, o)| o == "cached"),
        "{second}"
    );
    assert_eq!(
        containers_created(&docker, &after_first, &after_second, &id).await,
        0
    );
    let keys_and_outputs =
        |report: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
            report["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["key"].clone(), s["outputs"].clone()))
                .collect()
        };
    assert_eq!(keys_and_outputs(&first), keys_and_outputs(&second));
    // Outputs are restored from the store without running anything.
    let c = std::fs::read_to_string(ws.path().join(format!("out/c-{id}/c.txt"))).unwrap();
    assert_eq!(c, "kiln test repository\n1\nb\n");
    assert!(ws.path().join(format!("out/b-{id}/tree/sub/a")).is_file());
}

/// A relative `--store` (or `KILN_STORE`) is taken from the working directory: step mounts
/// need absolute paths.
#[tokio::test]
async fn a_relative_store_path_works() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&chain(&id));
    for (flag, env) in [(Some("rel-store"), None), (None, Some("env-store"))] {
        let mut command = common::kiln();
        command.current_dir(ws.path());
        if let Some(dir) = flag {
            command.args(["--store", dir]);
        }
        if let Some(dir) = env {
            command.env("KILN_STORE", dir);
        }
        let output = command
            .args(["run", "--file", "plan.toml", "--json"])
            .timed_output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
        let store = ws
            .path()
            .join(flag.or(env).unwrap())
            .join("store-v1/records");
        assert_eq!(
            std::fs::read_dir(&store).unwrap().count(),
            3,
            "{}",
            store.display()
        );
    }
}

#[tokio::test]
async fn plan_says_what_will_run_and_why() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&chain(&id));
    ws.run_json();
    ws.write_plan(&chain(&id).replace("V = \"1\"", "V = \"2\""));
    let output = ws
        .kiln()
        .args(["plan", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let planned: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(planned[0]["status"], "will-run");
    assert_eq!(planned[0]["why"][0], "env `V` changed: 1 → 2");
    assert_eq!(planned[1]["status"], "pending");
    assert_eq!(planned[1]["waiting_for"][0], format!("a-{id}"));
    let table = ws
        .kiln()
        .args(["plan", "--file", "plan.toml"])
        .timed_output()
        .unwrap();
    assert!(
        text(&table).0.contains("env `V` changed: 1 → 2"),
        "{}",
        text(&table).0
    );
}

#[tokio::test]
async fn two_processes_run_each_step_once() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&chain(&id).replace(
        "cat /in/src/README > a.txt;",
        // Long enough that the second run reaches step a while the first runs it.
        "sleep 5; cat /in/src/README > a.txt;",
    ));
    let spawn = || {
        ws.kiln()
            .args(["run", "--file", "plan.toml", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    assert!(
        one.status.success() && two.status.success(),
        "{}\n{}",
        text(&one).1,
        text(&two).1
    );
    let stderr = [text(&one).1, text(&two).1];
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    let two: serde_json::Value = serde_json::from_slice(&two.stdout).unwrap();
    for ((name, a), (_, b)) in outcomes(&one).iter().zip(outcomes(&two).iter()) {
        let ran = [a, b].iter().filter(|o| o.as_str() == "ran").count();
        assert_eq!(ran, 1, "step {name} ran {ran} times ({a}, {b})");
    }
    // The run that did not run step a waited for the other's lock, and said so.
    let waited = if outcomes(&one)[0].1 == "ran" {
        &stderr[1]
    } else {
        &stderr[0]
    };
    assert!(
        waited.contains(&format!("a-{id}: waiting for the lock on")),
        "{waited}"
    );
    assert_eq!(
        one["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["key"])
            .collect::<Vec<_>>(),
        two["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["key"])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        one["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["outputs"])
            .collect::<Vec<_>>(),
        two["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["outputs"])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn gc_keeps_what_a_running_step_needs() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "a-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "echo input > a.txt"]
outputs = ["a.txt"]

[[step]]
name = "b-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "sleep 4; cat /in/a > b.txt"]
outputs = ["b.txt"]
[step.inputs]
a = {{ step = "a-{id}", output = "a.txt" }}
"#
    ));
    let run = ws
        .kiln()
        .args(["run", "--file", "plan.toml", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until b runs: its container exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let filters = HashMap::from([("label", vec![format!("kiln.step=b-{id}")])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let running = docker
            .sandbox
            .engine()
            .docker()
            .list_containers(Some(options))
            .await
            .unwrap();
        if !running.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gc = ws
        .kiln()
        .args(["store", "gc", "--keep-recent", "0", "--json"])
        .timed_output()
        .unwrap();
    assert!(gc.status.success(), "{}", text(&gc).1);
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(gc["running_steps"], 1, "{gc}");
    assert!(
        gc["records_removed"].as_u64().unwrap() >= 1,
        "a's record was collectable: {gc}"
    );

    let finished = run.wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "the running step lost its inputs or outputs"
    );
    let report: serde_json::Value = serde_json::from_slice(&finished.stdout).unwrap();
    let b_out = report["steps"][1]["outputs"]["b.txt"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = &b_out[7..];
    assert!(
        ws.store()
            .join(format!("store-v1/blobs/sha256/{}/{hex}", &hex[..2]))
            .is_file()
    );
    let verify = ws.kiln().args(["store", "verify"]).timed_output().unwrap();
    assert!(verify.status.success(), "{}", text(&verify).0);
    // b's record survived: a re-run reruns only a (its record was collected) and hits b.
    let again = ws.run_json();
    assert_eq!(outcomes(&again)[1].1, "cached");
}

// The crash point exists only in builds with the `failpoints` feature (the test command's).
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn kill_between_blob_and_record_leaves_a_consistent_store() {
    use std::os::unix::process::ExitStatusExt as _;
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // Killed after the first step's blob and before its record; then after its record and
    // before anything else.
    for (point, records, rerun) in [
        ("before-record", 0, ["ran", "ran", "ran"]),
        ("after-record", 1, ["cached", "ran", "ran"]),
    ] {
        let ws = Workspace::new();
        let id = unique();
        ws.write_plan(&chain(&id));
        let crashed = ws
            .kiln()
            .env("KILN_FAILPOINT", point)
            .args(["run", "--file", "plan.toml"])
            .timed_output()
            .unwrap();
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the failpoint killed kiln"
        );
        let verify = ws
            .kiln()
            .args(["store", "verify", "--json"])
            .timed_output()
            .unwrap();
        assert!(verify.status.success(), "{point}: {}", text(&verify).0);
        let verify: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert_eq!(verify["records"], records, "{point}");
        assert_eq!(
            verify["blobs"], 1,
            "{point}: the first step's output blob is durable"
        );
        // What was not recorded simply runs again, and the store ends complete.
        let report = ws.run_json();
        let outcomes: Vec<String> = outcomes(&report).into_iter().map(|(_, o)| o).collect();
        assert_eq!(outcomes, rerun, "{point}");
        let verify = ws
            .kiln()
            .args(["store", "verify", "--json"])
            .timed_output()
            .unwrap();
        let verify: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert_eq!(verify["records"], 3, "{point}");
    }
}

/// Deterministic pseudo-random numbers for kill timings.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[test]
fn kill_9_during_blob_writes_never_leaves_a_partial_blob() {
    let ws = Workspace::new();
    let big = ws.path().join("big.bin");
    let mut file = std::fs::File::create(&big).unwrap();
    let mut seed = 7u64;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|_| lcg(&mut seed).to_le_bytes()[0])
        .collect();
    for i in 0..48u8 {
        let mut c = chunk.clone();
        c[0] = i;
        file.write_all(&c).unwrap();
    }
    drop(file);
    let blobs = ws.store().join("store-v1/blobs/sha256");
    for round in 0..common::stress_rounds(50) {
        let mut child = ws
            .kiln()
            .args(["store", "put"])
            .arg(&big)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(lcg(&mut seed) % 120));
        child.kill().unwrap();
        child.wait().unwrap();
        let verify = ws
            .kiln()
            .args(["store", "verify", "--json"])
            .timed_output()
            .unwrap();
        assert!(
            verify.status.success(),
            "round {round}: {}",
            text(&verify).0
        );
        // The next start (that verify) removed what the killed writer left in tmp/.
        assert_eq!(
            std::fs::read_dir(ws.store().join("store-v1/tmp"))
                .unwrap()
                .count(),
            0,
            "round {round}: tmp/ holds leftovers after the next start"
        );
        let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert!(report["blobs"].as_u64().unwrap() <= 1, "round {round}");
        if report["blobs"] == 1 {
            assert_eq!(
                report["bytes"],
                48 << 20,
                "round {round}: a partial blob was published"
            );
        }
    }
    assert!(blobs.is_dir());
    // A final put completes.
    let put = ws
        .kiln()
        .args(["store", "put"])
        .arg(&big)
        .timed_output()
        .unwrap();
    assert!(put.status.success());
}

#[tokio::test]
async fn kill_9_during_a_run_with_a_large_output_keeps_the_store_consistent() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "big-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "head -c 200000000 /dev/zero > big.bin"]
outputs = ["big.bin"]
"#
    ));
    let mut seed = 11u64;
    let mut killed = Vec::new();
    for round in 0..common::stress_rounds(5) {
        let mut child = ws
            .kiln()
            .args(["run", "--file", "plan.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + lcg(&mut seed) % 900));
        child.kill().unwrap();
        child.wait().unwrap();
        killed.push(child.id());
        let verify = ws.kiln().args(["store", "verify"]).timed_output().unwrap();
        assert!(
            verify.status.success(),
            "round {round}: {}",
            text(&verify).0
        );
        assert_eq!(
            std::fs::read_dir(ws.store().join("store-v1/tmp"))
                .unwrap()
                .count(),
            0,
            "round {round}: tmp/ holds leftovers after the next start"
        );
    }
    let report = ws.run_json();
    assert_eq!(
        report["steps"][0]["outputs"]["big.bin"]["size"],
        200_000_000
    );
    // Every killed run's container is gone: the next kiln run removed it.
    for pid in killed {
        assert!(
            common::containers_of_pid(&engine, pid).await.is_empty(),
            "a container of killed kiln {pid} is left"
        );
    }
}

#[tokio::test]
async fn damaged_blobs_are_found_moved_aside_and_rebuilt() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    for damage in ["flip", "truncate", "empty", "delete"] {
        let ws = Workspace::new();
        let id = unique();
        ws.write_plan(&chain(&id));
        let report = ws.run_json();
        let digest = report["steps"][2]["outputs"]["c.txt"]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let hex = &digest[7..];
        let blob = ws
            .store()
            .join(format!("store-v1/blobs/sha256/{}/{hex}", &hex[..2]));
        let original = std::fs::read(&blob).unwrap();
        let mut bytes = original.clone();
        match damage {
            "flip" => bytes[0] ^= 0x01,
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => bytes.clear(), // `truncate -s 0`; "delete" removes the file below
        }
        let damage_it = || {
            let _ = std::fs::remove_file(&blob);
            if damage != "delete" {
                std::fs::write(&blob, &bytes).unwrap();
            }
        };
        damage_it();
        let corrupt = ws.store().join("store-v1/corrupt");
        let aside = || {
            std::fs::read_dir(&corrupt)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains(hex)
                })
                .count()
        };

        if damage == "delete" {
            // The plan says why the step runs again.
            let plan = ws
                .kiln()
                .args(["plan", "--file", "plan.toml", "--json"])
                .timed_output()
                .unwrap();
            let planned: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
            assert_eq!(planned[2]["status"], "will-run", "{planned}");
            assert_eq!(
                planned[2]["why"][0], "its outputs are no longer in the store",
                "{planned}"
            );
        }
        // Export is verified: --out refuses the damaged bytes and moves them to corrupt/.
        // A deleted blob is a miss: the step runs again and the export is whole.
        let export = ws
            .kiln()
            .args(["run", "--file", "plan.toml", "--out", "out", "--json"])
            .timed_output()
            .unwrap();
        if damage == "delete" {
            assert!(export.status.success(), "{damage}: {}", text(&export).1);
            let report: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
            assert_eq!(outcomes(&report)[2].1, "ran", "{damage}");
            assert_eq!(std::fs::read(&blob).unwrap(), original, "{damage}: rebuilt");
        } else {
            assert_eq!(export.status.code(), Some(1), "{damage}");
            assert!(
                text(&export).1.contains("is corrupt"),
                "{damage}: {}",
                text(&export).1
            );
            assert!(!ws.path().join("out/c.txt").exists(), "{damage}: exported");
            assert_eq!(aside(), 1, "{damage}: the damaged blob is in corrupt/");
        }

        // Damage it again and let verify find it.
        damage_it();
        let verify = ws.kiln().args(["store", "verify"]).timed_output().unwrap();
        assert_eq!(verify.status.code(), Some(3), "{damage}");
        assert!(
            text(&verify).0.contains(hex),
            "{damage}: {}",
            text(&verify).0
        );
        let repair = ws
            .kiln()
            .args(["store", "verify", "--repair"])
            .timed_output()
            .unwrap();
        assert_eq!(repair.status.code(), Some(3));
        let clean = ws.kiln().args(["store", "verify"]).timed_output().unwrap();
        assert!(clean.status.success(), "{damage}: {}", text(&clean).0);
        let rebuilt = ws.run_json();
        assert_eq!(outcomes(&rebuilt)[2].1, "ran", "{damage}");
        assert_eq!(
            rebuilt["steps"][2]["outputs"]["c.txt"]["digest"],
            digest.as_str()
        );
    }
}

#[tokio::test]
async fn a_garbage_record_is_a_miss_with_a_warning() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    for garbage in ["not json", "another version", "an absent blob"] {
        let ws = Workspace::new();
        let id = unique();
        ws.write_plan(&chain(&id));
        let report = ws.run_json();
        let key = report["steps"][0]["key"].as_str().unwrap();
        let record = ws
            .store()
            .join(format!("store-v1/records/{}.json", &key[7..]));
        let text_of = std::fs::read_to_string(&record).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text_of).unwrap();
        let bytes = match garbage {
            "not json" => b"{ this is not a record".to_vec(),
            "another version" => {
                json["version"] = 999.into();
                serde_json::to_vec(&json).unwrap()
            }
            _ => {
                let absent = format!("sha256:{}", "ab".repeat(32));
                json["outputs"]["a.txt"]["digest"] = absent.into();
                serde_json::to_vec(&json).unwrap()
            }
        };
        let _ = std::fs::remove_file(&record);
        std::fs::write(&record, bytes).unwrap();
        let plan = ws
            .kiln()
            .args(["plan", "--file", "plan.toml", "--json"])
            .timed_output()
            .unwrap();
        let (stdout, stderr) = text(&plan);
        assert!(plan.status.success(), "{garbage}: {stderr}");
        let planned: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(planned[0]["status"], "will-run", "{garbage}: {planned}");
        assert!(
            stderr.contains(&record.display().to_string()),
            "{garbage}: the warning names the file: {stderr}"
        );
        let rerun = ws.run_json();
        assert_eq!(outcomes(&rerun)[0].1, "ran", "{garbage}");
        assert_eq!(outcomes(&rerun)[1].1, "cached", "{garbage}");
        let verify = ws.kiln().args(["store", "verify"]).timed_output().unwrap();
        assert!(verify.status.success(), "{garbage}: {}", text(&verify).0);
    }
}

#[test]
fn a_full_disk_is_reported_and_leaves_no_partial_entry() {
    if !rustix::process::geteuid().is_root() {
        common::skip("the full-disk test needs root to mount a tmpfs");
        return;
    }
    let ws = Workspace::new();
    let mount = ws.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "kiln-test-tiny"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let big = ws.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    let put = common::kiln()
        .arg("--store")
        .arg(&mount)
        .args(["store", "put"])
        .arg(&big)
        .timed_output();
    let blobs: Vec<_> = walk(&mount.join("store-v1/blobs"));
    let tmp: Vec<_> = walk(&mount.join("store-v1/tmp"));
    let verify = common::kiln()
        .arg("--store")
        .arg(&mount)
        .args(["store", "verify"])
        .timed_output();
    let _ = std::process::Command::new("umount").arg(&mount).status();
    let put = put.unwrap();
    assert_eq!(put.status.code(), Some(1));
    let stderr = text(&put).1;
    assert!(
        stderr.contains("no space left on the device while writing"),
        "{stderr}"
    );
    assert!(stderr.contains("store-v1/tmp"), "{stderr}");
    // The filesystem is named: its type, where it is mounted, and how full it is.
    assert!(
        stderr.contains(&format!("tmpfs at {}", mount.display())),
        "{stderr}"
    );
    assert!(stderr.contains("1.00 MiB total"), "{stderr}");
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(tmp.is_empty(), "{tmp:?}");
    assert!(verify.unwrap().status.success());
}

/// A step's output fits the store's disk but its blob does not: `kiln run` fails naming the
/// filesystem, records nothing, leaves `tmp/` empty and the store verifiable.
#[tokio::test]
async fn a_full_disk_under_a_run_is_reported_and_leaves_no_partial_entry() {
    if !rustix::process::geteuid().is_root() {
        common::skip("the full-disk test needs root to mount a tmpfs");
        return;
    }
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let mount = ws.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "kiln-test-small"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    ws.write_plan(&format!(
        r#"
[[step]]
name = "big-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "head -c 4000000 /dev/urandom > big.bin"]
outputs = ["big.bin"]
"#,
        id = unique()
    ));
    let kiln = |args: &[&str]| {
        common::kiln()
            .arg("--store")
            .arg(&mount)
            .current_dir(ws.path())
            .args(args)
            .timed_output()
    };
    let run = kiln(&["run", "--file", "plan.toml"]);
    let records: Vec<_> = walk(&mount.join("store-v1/records"));
    let tmp: Vec<_> = walk(&mount.join("store-v1/tmp"));
    let verify = kiln(&["store", "verify"]);
    let _ = std::process::Command::new("umount").arg(&mount).status();
    let run = run.unwrap();
    let stderr = text(&run).1;
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no space left on the device while writing"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("tmpfs at {}", mount.display())),
        "{stderr}"
    );
    assert!(records.is_empty(), "{records:?}");
    assert!(tmp.is_empty(), "{tmp:?}");
    let verify = verify.unwrap();
    assert!(verify.status.success(), "{}", text(&verify).0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A loopback TCP server that answers every connection with the current `body` and closes.
struct Served {
    port: u16,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Served {
    fn start(body: &[u8]) -> Self {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = std::sync::Arc::new(std::sync::Mutex::new(body.to_vec()));
        let served = body.clone();
        // Ends with the test binary; loopback only.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let bytes = served.lock().unwrap().clone();
                let mut client = client;
                let _ = client.write_all(&bytes);
            }
        });
        Self { port, body }
    }

    fn set(&self, body: &[u8]) {
        *self.body.lock().unwrap() = body.to_vec();
    }
}

/// Fetch steps: only a step that says `network = "host"` reaches a server on the host's
/// loopback (an offline step running the same command cannot); its output without a pin is
/// trusted on first use (said), with the pin it is cached; when the server later serves other
/// bytes, a fresh store refetches and refuses naming the step, the output and both digests,
/// recording nothing.
#[tokio::test]
async fn a_fetch_step_reaches_the_host_network_and_is_held_to_its_pin() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let server = Served::start(b"module zip v1\n");
    let id = unique();
    let plan = |network: &str, pins: &str| {
        format!(
            r#"
[[step]]
name = "fetch-{id}"
image = "toolchain:1.24.11"
argv = ["/bin/bash", "-c", "cat < /dev/tcp/127.0.0.1/{port} > src.txt"]
outputs = ["src.txt"]
network = "{network}"
{pins}
"#,
            port = server.port
        )
    };
    let run = |ws: &Workspace| {
        ws.kiln()
            .args(["run", "--file", "plan.toml", "--json"])
            .timed_output()
            .unwrap()
    };

    // Without network the server is out of reach.
    let ws = Workspace::new();
    ws.write_plan(&plan("none", ""));
    let output = run(&ws);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output).0);
    assert!(
        text(&output).1.contains("Connection refused"),
        "{}",
        text(&output).1
    );

    // With the host's network: fetched, trusted on first use and said so.
    ws.write_plan(&plan("host", ""));
    let output = run(&ws);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("trusted on first use"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let digest = kiln::hash::Digest::of(b"module zip v1\n").to_string();
    assert_eq!(report["steps"][0]["outputs"]["src.txt"]["digest"], digest);

    // Pinned to it: the same key, cached, no fetch.
    ws.write_plan(&plan(
        "host",
        &format!("pins = {{ \"src.txt\" = \"{digest}\" }}"),
    ));
    let report = ws.run_json();
    assert_eq!(
        outcomes(&report),
        vec![(format!("fetch-{id}"), "cached".into())]
    );

    // The server changes what it serves: a fresh store refetches and refuses.
    server.set(b"module zip v1, altered\n");
    let fresh = Workspace::new();
    fresh.write_plan(&plan(
        "host",
        &format!("pins = {{ \"src.txt\" = \"{digest}\" }}"),
    ));
    let output = run(&fresh);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let altered = kiln::hash::Digest::of(b"module zip v1, altered\n").to_string();
    for said in [
        format!("step `fetch-{id}` gave output `src.txt` as {altered}"),
        format!("pinned to {digest}"),
    ] {
        assert!(stderr.contains(&said), "{said}: {stderr}");
    }
    let records =
        std::fs::read_dir(fresh.store().join("store-v1/records")).map_or(0, Iterator::count);
    assert_eq!(records, 0, "a record was written for a mismatching fetch");
}

/// The engine client's per-request timeout bounds how long one request waits for its answer to
/// begin, never a step: a step that runs (silently) for longer than it is read to its end. Here
/// the timeout is 3 s and the step 10 s; an hour-long tag.sh against the default hour is the
/// same case.
#[tokio::test]
async fn a_step_longer_than_the_engine_request_timeout_is_not_cut() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "long-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "sleep 10; echo done > a.txt"]
outputs = ["a.txt"]
"#
    ));
    let output = ws
        .kiln()
        .env("KILN_ENGINE_REQUEST_TIMEOUT", "3")
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        outcomes(&report),
        [(format!("long-{id}"), "ran".to_owned())]
    );

    // A value that is not a number of seconds is refused before any step, naming it.
    let output = ws
        .kiln()
        .env("KILN_ENGINE_REQUEST_TIMEOUT", "soon")
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    let stderr = text(&output).1;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("KILN_ENGINE_REQUEST_TIMEOUT=`soon` is not a whole number of seconds"),
        "{stderr}"
    );
}

/// A git input costs its checkout: it borrows the repository's objects, which the step reads
/// (history included) but cannot change.
#[tokio::test]
async fn a_git_input_borrows_the_repository_s_objects_read_only() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    let id = unique();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "borrow-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", """
set -e
cd /in/src
git log --format=%s > /out/log
alt=$(cat .git/objects/info/alternates)
echo "$alt" > /out/alternates
awk -v d="$alt" '$5 == d {{ print $6 }}' /proc/self/mountinfo | cut -d, -f1 > /out/verdict
git for-each-ref --format='%(refname)' > /out/refs
git rev-list --count HEAD >> /out/refs
"""]
outputs = ["log", "verdict", "refs", "alternates"]
[step.inputs]
src = {{ git = "repo", rev = "v1" }}
"#
    ));
    let output = ws
        .kiln()
        .args(["run", "--file", "plan.toml", "--out", "out"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let out = |name: &str| {
        std::fs::read_to_string(ws.path().join(format!("out/borrow-{id}/{name}"))).unwrap()
    };
    assert_eq!(out("log"), "init\n");
    // Bound read-only, at a path of kiln's, not the host's.
    assert_eq!(out("verdict"), "ro\n");
    assert!(
        out("alternates").starts_with("/kiln/objects/"),
        "{}",
        out("alternates")
    );
    assert_eq!(out("refs"), "refs/tags/v1\n1\n");
}
