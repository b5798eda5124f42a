//! Fuzzes archive restore differentially against GNU tar: whatever kiln's unpacker accepts
//! must be exactly what `tar -t` lists (no entry kiln sees that tar does not, or the other way:
//! the PAX/GNU header desync class of bugs) with the bytes `tar -x` extracts, must stay inside
//! its directory, and must hold nothing but files, directories and links that resolve inside it.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use libfuzzer_sys::fuzz_target;

/// Every path below `root`, relative, without following links.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let entry = entry.expect("readable");
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("below root");
            found.insert(relative.to_string_lossy().into_owned());
            let kind = entry.file_type().expect("inspectable");
            assert!(
                kind.is_dir() || kind.is_file() || kind.is_symlink(),
                "special file {}",
                path.display()
            );
            if kind.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::tempdir().expect("temp dir");
    let dest = parent.path().join("dest");
    std::fs::create_dir(&dest).expect("dest");
    let accepted = kiln::fuzzing::unpack_tree(data, &dest).is_ok();
    // Nothing is ever written beside the destination.
    let beside: Vec<_> = std::fs::read_dir(parent.path()).expect("readable").collect();
    assert_eq!(beside.len(), 1, "wrote outside the destination");
    if !accepted {
        return;
    }
    let ours = walk(&dest);
    let archive = parent.path().join("archive.tar");
    std::fs::write(&archive, data).expect("write");
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .stderr(Stdio::null())
        .output()
        .expect("GNU tar runs");
    if !listed.status.success() {
        panic!("kiln accepted an archive GNU tar refuses");
    }
    // The same path spelled the same way: no empty or `.` components.
    let theirs: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| {
            l.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(ours, theirs, "kiln and GNU tar disagree on the entries");
    // And on the bytes: every file kiln restored holds what GNU tar extracts (a PAX `size`
    // record the unpacker ignored once gave empty files here).
    let gnu = parent.path().join("gnu");
    std::fs::create_dir(&gnu).expect("gnu dir");
    let extracted = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&gnu)
        .arg("--no-same-owner")
        .stderr(Stdio::null())
        .status()
        .expect("GNU tar runs");
    assert!(extracted.success(), "GNU tar cannot extract what kiln accepted");
    for path in &ours {
        let (mine, theirs) = (dest.join(path), gnu.join(path));
        let kind = std::fs::symlink_metadata(&mine).expect("restored").file_type();
        if kind.is_file() {
            assert_eq!(
                std::fs::read(&mine).expect("readable"),
                std::fs::read(&theirs).expect("GNU tar extracted it"),
                "kiln and GNU tar restore other bytes for {path}"
            );
        }
    }
});
