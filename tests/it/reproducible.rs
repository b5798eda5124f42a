//! Reproducibility across machines and environments: the committed demo lockfile rebuilds byte
//! for byte, and a release run under a varied host environment (reprotest-style) gives the
//! same lockfile.
#![allow(clippy::print_stderr)]

use crate::common::TimedOutput as _;
use std::path::Path;

use crate::common::{self, World, docker_or_skip, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

fn committed() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCK)).unwrap()
}

/// A fresh demo world released from a fresh store: its lockfile's text.
fn fresh_release() -> String {
    let world = World::new();
    world.release("v1.28.2", &[]);
    std::fs::read_to_string(world.path().join(LOCK)).unwrap()
}

/// How this engine's base image (the plain base the release's exact Go toolchain is built on;
/// the Go distribution itself is pinned by digest) compares with its committed lock: `None`
/// when it matches, else what differs.
fn base_differences() -> Option<String> {
    let output = common::kiln()
        .args(["image", "bootstrap", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (report["lock"]["status"] != "matches").then(|| {
        format!(
            "bookworm: {}",
            serde_json::to_string_pretty(&report["lock"]).unwrap()
        )
    })
}

#[tokio::test]
async fn the_committed_demo_lockfile_rebuilds_byte_identical() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let committed = committed();
    let first = fresh_release();
    if first == committed {
        return;
    }
    let Some(bases) = base_differences() else {
        panic!(
            "the demo release no longer reproduces {LOCK}, and this machine's base image matches \
             its committed lock: a real reproducibility regression (or an intended change: \
             refresh it with scripts/refresh-lockfile and say why in the commit)\n{}",
            common::line_diff(&committed, &first)
        );
    };
    let notice = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! {LOCK} NEEDS A REFRESH (scripts/refresh-lockfile):\n\
         !!! this machine's bootstrapped base image differs from its committed lock, so the\n\
         !!! demo release's keys differ from the committed lockfile. What differs:\n{bases}\n\
         !!! Instead, two fresh releases on this machine must agree with each other.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    );
    eprintln!("{notice}");
    // cargo test hides a passing test's output: scripts/test prints this file at the end.
    let notices = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kiln-test-notices.txt");
    let _ = std::fs::write(notices, &notice);
    let second = fresh_release();
    assert!(
        first == second,
        "two fresh releases on this machine disagree:\n{}",
        common::line_diff(&first, &second)
    );
}

#[tokio::test]
async fn a_release_under_a_varied_host_environment_gives_the_same_lockfile() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    if std::process::Command::new("faketime")
        .arg("--version")
        .timed_output()
        .is_err()
    {
        common::skip("faketime is not installed (scripts/test installs it)");
        return;
    }
    let baseline = fresh_release();

    // Another world at another path, another store at a deep path with a space, another HOME
    // with its own git identity, TZ, LANG, umask, inherited git and SOURCE_DATE_EPOCH variables,
    // run from a subdirectory, under a host clock moved 1000 days ahead.
    let world = World::new();
    let scratch = world.dir.path();
    let home = scratch.join("home of someone else");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Someone Else\n\temail = else@example.invalid\n[core]\n\tautocrlf = true\n[tag]\n\tsort = -v:refname\n",
    )
    .unwrap();
    let store = scratch.join("another/store dir/deep");
    let cwd = world.path().join("sub dir");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::copy(world.path().join("kiln.toml"), cwd.join("kiln.toml")).unwrap();
    let toml = std::fs::read_to_string(cwd.join("kiln.toml")).unwrap();
    // Paths in kiln.toml are relative to it: point them one level up.
    let toml = ["upstream", "fork", "k3s", "helper"]
        .iter()
        .fold(toml, |t, r| {
            t.replace(&format!("\"{r}.git\""), &format!("\"../{r}.git\""))
        });
    assert_eq!(toml.matches("\"../").count(), 4, "{toml}");
    std::fs::write(cwd.join("kiln.toml"), toml).unwrap();
    let output = std::process::Command::new("faketime")
        .args([
            "-f",
            "+1000d",
            "/bin/sh",
            "-c",
            "umask 077 && exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .current_dir(&cwd)
        .env("HOME", &home)
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "fr_FR.UTF-8")
        .env("LC_ALL", "fr_FR.UTF-8")
        .env("GIT_AUTHOR_NAME", "Intruder")
        .env("GIT_COMMITTER_EMAIL", "intruder@example.invalid")
        .env("GIT_COMMITTER_DATE", "@1 +0000")
        .env("SOURCE_DATE_EPOCH", "1")
        .env("USER", "nobody-else")
        .env("LOGNAME", "nobody-else")
        .timed_output()
        .unwrap();
    assert!(
        output.status.success(),
        "varied release failed:\n{}",
        text(&output).1
    );
    let varied = std::fs::read_to_string(cwd.join(LOCK)).unwrap();
    assert!(
        varied == baseline,
        "the host environment reached the lockfile:\n{}",
        common::line_diff(&baseline, &varied)
    );
    // The clock really is moved through the same wrapper chain kiln ran in.
    let date = std::process::Command::new("faketime")
        .args([
            "-f",
            "+1000d",
            "/bin/sh",
            "-c",
            "umask 077 && exec \"$0\" \"$@\"",
        ])
        .args(["date", "+%Y"])
        .timed_output()
        .unwrap();
    let year: i32 = String::from_utf8_lossy(&date.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(year >= 2028, "{year}");
}
