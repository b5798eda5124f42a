//! Power loss (RELIABILITY.md row 3): a real `kiln run` on a store whose file system forgets
//! every write that was not synced (`common::lazyfs`), cut at every moment its durable state
//! changed. After each "reboot" the store must verify, hold no zero-length or torn blob or
//! record, and let the run complete; what kiln reported done before the cut must still be
//! there.

use crate::common::TimedOutput as _;
use std::path::{Path, PathBuf};

use crate::common::lazyfs::{Image, LazyFs, Model};
use crate::common::{Workspace, docker_or_skip, outcomes, skip, text, unique};

/// FUSE needs `/dev/fuse` and root (the test command has both).
fn fuse_or_skip() -> bool {
    if !Path::new("/dev/fuse").exists() {
        skip("no /dev/fuse: the power-loss tests need FUSE");
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        skip("the power-loss tests mount FUSE file systems and need root");
        return false;
    }
    true
}

fn kiln_on(ws: &Workspace, store: &Path) -> std::process::Command {
    let mut command = crate::common::kiln();
    command.arg("--store").arg(store).current_dir(ws.path());
    command
}

/// `kiln store verify --json` on `store`: its exit code and report.
fn verify(ws: &Workspace, store: &Path) -> (Option<i32>, serde_json::Value, String) {
    let output = kiln_on(ws, store)
        .args(["store", "verify", "--json"])
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code(), report, format!("{stdout}\n{stderr}"))
}

/// Mounts `image` (the disk after the cut) at a fresh directory of `ws`.
fn reboot(ws: &Workspace, image: &Image) -> LazyFs {
    let at = ws.path().join(format!("reboot-{}", unique()));
    std::fs::create_dir(&at).unwrap();
    LazyFs::mount_image(&at, image).unwrap()
}

/// Blobs and records of the image that are empty: what a store that renames before it syncs
/// leaves after a power cut.
fn empty_store_files(image: &Image) -> Vec<PathBuf> {
    image
        .listing()
        .into_iter()
        .filter(|(path, len)| {
            *len == Some(0)
                && (path.starts_with("store/store-v1/blobs")
                    || path.starts_with("store/store-v1/records")
                    || path.starts_with("store/store-v1/names"))
        })
        .map(|(path, _)| path)
        .collect()
}

fn power_cut_at_every_moment_of_a_run(model: Model) {
    let ws = Workspace::new();
    let id = unique();
    // A git input, a file output and a tree output read by the next step: every kind of
    // store write (blobs, trees, records, names).
    ws.write_plan(&crate::engine::chain(&id));
    let disk = ws.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let fs = LazyFs::mount(&disk, model).unwrap();
    let store = fs.path().join("store");
    let output = kiln_on(&ws, &store)
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{model:?}: {stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        outcomes(&report).iter().all(|(_, o)| o == "ran"),
        "{report}"
    );
    let images = fs.images();
    let syncs = fs.syncs();
    fs.unmount().unwrap();
    assert!(syncs > 0, "kiln synced nothing on the store");
    assert!(images.len() >= syncs, "an image per sync at least");

    // Every crash point: the store verifies and holds no empty blob or record.
    let mut records_seen = 0;
    for (at, image) in images.iter().enumerate() {
        let empty = empty_store_files(image);
        assert!(
            empty.is_empty(),
            "{model:?}, cut {at}/{}: empty store files after the power cut: {empty:?}",
            images.len()
        );
        let disk = reboot(&ws, image);
        let (code, report, said) = verify(&ws, &disk.path().join("store"));
        assert_eq!(
            code,
            Some(0),
            "{model:?}, cut {at}/{}: {said}",
            images.len()
        );
        records_seen = records_seen.max(report["records"].as_u64().unwrap_or(0));
        disk.unmount().unwrap();
    }
    assert_eq!(records_seen, 3, "the cuts saw the records appear");

    // A cut halfway: the run completes on what is left.
    let disk = reboot(&ws, &images[images.len() / 2]);
    let store = disk.path().join("store");
    let output = kiln_on(&ws, &store)
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "{model:?}, halfway: {stdout}\n{stderr}"
    );
    assert_eq!(verify(&ws, &store).0, Some(0));
    disk.unmount().unwrap();

    // A cut right after kiln said it was done: everything it recorded is still there.
    let disk = reboot(&ws, images.last().unwrap());
    let store = disk.path().join("store");
    let (code, report, said) = verify(&ws, &store);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        report["records"], 3,
        "{model:?}: records lost after the run ended: {report}"
    );
    let output = kiln_on(&ws, &store)
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        outcomes(&report).iter().all(|(_, o)| o == "cached"),
        "{model:?}: a step ran again after a cut that followed its record: {report}"
    );
    disk.unmount().unwrap();
}

#[tokio::test]
async fn a_power_cut_at_any_moment_of_a_run_leaves_a_store_that_verifies() {
    if !fuse_or_skip() {
        return;
    }
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // Names durable only when their directory is synced; then LazyFS's model (names durable
    // at once, data only when synced).
    power_cut_at_every_moment_of_a_run(Model::Strict);
    power_cut_at_every_moment_of_a_run(Model::Lazy);
}

/// The stand-in itself forgets what is not synced, and `kiln store verify` finds the empty
/// blob a store that renames before it syncs would leave: the test above can fail.
#[test]
fn an_unsynced_blob_comes_back_empty_and_verify_finds_it() {
    if !fuse_or_skip() {
        return;
    }
    let ws = Workspace::new();
    let disk = ws.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let fs = LazyFs::mount(&disk, Model::Lazy).unwrap();
    let store = fs.path().join("store");
    // A real blob, put by kiln (synced), then a copy of it written as a careless writer would:
    // no fsync before the rename into place.
    std::fs::write(ws.path().join("payload"), b"kiln power-loss payload\n").unwrap();
    let put = kiln_on(&ws, &store)
        .args(["store", "put"])
        .arg(ws.path().join("payload"))
        .timed_output()
        .unwrap();
    assert!(put.status.success(), "{}", text(&put).1);
    let blobs = store.join("store-v1/blobs/sha256");
    let careless = "00".repeat(32);
    let prefix = blobs.join(&careless[..2]);
    std::fs::create_dir_all(&prefix).unwrap();
    let tmp = store.join("store-v1/tmp/careless");
    std::fs::write(&tmp, b"bytes never synced\n").unwrap();
    std::fs::rename(&tmp, prefix.join(&careless)).unwrap();
    let images = fs.images();
    fs.unmount().unwrap();

    let image = images.last().unwrap();
    let empty = empty_store_files(image);
    assert_eq!(
        empty,
        [PathBuf::from(format!(
            "store/store-v1/blobs/sha256/{}/{careless}",
            &careless[..2]
        ))],
        "only the unsynced blob comes back empty"
    );
    let disk = reboot(&ws, image);
    let (code, _, said) = verify(&ws, &disk.path().join("store"));
    assert_ne!(code, Some(0), "verify accepted an empty blob: {said}");
    assert!(said.contains(&careless), "{said}");
    disk.unmount().unwrap();
}
