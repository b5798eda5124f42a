//! Scheduler and planner tests on the fake sandbox and the in-memory store.

use std::collections::BTreeMap;

use crate::hash::Digest;
use crate::sandbox::{FakeSandbox, FakeStep, SandboxError};
use crate::store::{MemoryStore, Store as _};

use super::*;

fn step(name: &str, inputs: &[(&str, StepInput)], outputs: &[&str]) -> Step {
    Step {
        name: name.into(),
        kind: "exec".into(),
        schema: 1,
        image: StepImage {
            reference: "img".into(),
            identity: Digest::of(b"img"),
        },
        argv: vec!["build".into(), name.into()],
        env: BTreeMap::new(),
        inputs: inputs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
        caches: Vec::new(),
        memory_limit: None,
        writable_inputs: false,
        network: crate::sandbox::Network::None,
        pins: BTreeMap::new(),
        impure_env: BTreeMap::new(),
        host: None,
    }
}

fn output(step: &str, output: &str) -> StepInput {
    StepInput::Output {
        step: step.into(),
        output: output.into(),
    }
}

fn chain(version: &str) -> Plan {
    Plan::new(vec![
        // Given child first: the plan orders parents first.
        step("b", &[("a", output("a", "a.txt"))], &["b.txt"]),
        step(
            "a",
            &[("version", StepInput::Value(version.into()))],
            &["a.txt"],
        ),
    ])
    .unwrap()
}

fn sandbox() -> FakeSandbox {
    FakeSandbox::new()
        .script(
            "a",
            FakeStep::succeeds(&["making a"]).writing("/out/a.txt", b"A"),
        )
        .script("b", FakeStep::succeeds(&[]).writing("/out/b.txt", b"B"))
}

async fn run_plan(
    plan: &Plan,
    store: &MemoryStore,
    sandbox: &FakeSandbox,
) -> Result<RunReport, EngineError> {
    let work = tempfile::tempdir().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        jobs: 2,
        work_dir: work.path().to_owned(),
        limits: super::StepLimits::default(),
    };
    run(plan, store, sandbox, &options, &tx).await
}

#[test]
fn plans_are_checked_and_ordered() {
    assert_eq!(
        chain("1")
            .steps()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let dup = Plan::new(vec![step("a", &[], &[]), step("a", &[], &[])]);
    assert!(matches!(dup, Err(EngineError::DuplicateStep { .. })));
    let unknown = Plan::new(vec![
        step("b", &[("x", output("a", "nope"))], &[]),
        step("a", &[], &["a.txt"]),
    ]);
    assert!(matches!(unknown, Err(EngineError::UnknownOutput { .. })));
    let cycle = Plan::new(vec![
        step("a", &[("x", output("b", "b.txt"))], &["a.txt"]),
        step("b", &[("x", output("a", "a.txt"))], &["b.txt"]),
    ]);
    assert!(matches!(cycle, Err(EngineError::Cycle { .. })));
    let escaping = Plan::new(vec![step("a", &[], &["../x"])]);
    assert!(matches!(escaping, Err(EngineError::InvalidStep { .. })));
}

#[tokio::test]
async fn a_second_run_is_fully_cached_and_starts_nothing() {
    let store = MemoryStore::new();
    let sandbox = sandbox();
    let first = run_plan(&chain("1"), &store, &sandbox).await.unwrap();
    assert!(first.steps.iter().all(|s| s.outcome == StepOutcome::Ran));
    assert_eq!(sandbox.ran().len(), 2);
    // b read a's output: its input is a's digest.
    let b = &sandbox.ran()[1];
    assert!(b.mounts.iter().any(|m| m.target == "/in" && m.read_only));

    let second = run_plan(&chain("1"), &store, &sandbox).await.unwrap();
    assert!(
        second
            .steps
            .iter()
            .all(|s| s.outcome == StepOutcome::Cached)
    );
    assert_eq!(sandbox.ran().len(), 2, "nothing ran the second time");
    assert_eq!(first.steps[1].outputs, second.steps[1].outputs);
    let statuses = chain("1").status(&store).await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s.status, StepStatus::Cached { .. }))
    );
}

#[tokio::test]
async fn plan_explains_why_a_step_will_run() {
    let store = MemoryStore::new();
    let planned = chain("1").status(&store).await.unwrap();
    assert!(
        matches!(&planned[0].status, StepStatus::WillRun { why, .. } if why == &["no earlier run of this step is recorded"])
    );
    assert!(
        matches!(&planned[1].status, StepStatus::Pending { waiting_for, .. } if waiting_for == &["a"])
    );

    run_plan(&chain("1"), &store, &sandbox()).await.unwrap();
    let planned = chain("2").status(&store).await.unwrap();
    match &planned[0].status {
        StepStatus::WillRun { why, .. } => assert_eq!(why, &["input `version` changed: 1 → 2"]),
        other => panic!("unexpected {other:?}"),
    }
    // b waits for a; nothing else about b changed.
    match &planned[1].status {
        StepStatus::Pending { waiting_for, why } => {
            assert_eq!(waiting_for, &["a"]);
            assert!(why.is_empty(), "{why:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_unchanged_output_keeps_the_child_cached() {
    // a's key changes but it writes the same bytes: b's key is unchanged, so b is a hit.
    let store = MemoryStore::new();
    let sandbox = sandbox();
    run_plan(&chain("1"), &store, &sandbox).await.unwrap();
    let report = run_plan(&chain("2"), &store, &sandbox).await.unwrap();
    assert_eq!(report.steps[0].outcome, StepOutcome::Ran);
    assert_eq!(report.steps[1].outcome, StepOutcome::Cached);
}

#[tokio::test]
async fn a_failing_step_stops_the_run_and_records_nothing() {
    let store = MemoryStore::new();
    let sandbox = FakeSandbox::new().script("a", FakeStep::fails(2, &["boom"]));
    let err = run_plan(&chain("1"), &store, &sandbox).await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Sandbox(SandboxError::StepFailed { code: 2, .. })
        ),
        "{err:?}"
    );
    assert_eq!(sandbox.ran().len(), 1, "b never started");
    let planned = chain("1").status(&store).await.unwrap();
    assert!(matches!(planned[0].status, StepStatus::WillRun { .. }));
}

#[tokio::test]
async fn a_missing_declared_output_is_an_error() {
    let store = MemoryStore::new();
    let sandbox = FakeSandbox::new().script("a", FakeStep::succeeds(&[]));
    let err = run_plan(&chain("1"), &store, &sandbox).await.unwrap_err();
    assert!(
        matches!(err, EngineError::MissingOutput { ref output, .. } if output == "a.txt"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_corrupt_output_is_caught_when_read_and_rebuilt_next_time() {
    let store = MemoryStore::new();
    let sandbox = sandbox();
    let first = run_plan(&chain("1"), &store, &sandbox).await.unwrap();
    let a_out = first.steps[0].outputs["a.txt"].digest;
    store.corrupt(&a_out, b"X".to_vec());

    // b changes, so it must read a's (cached) output: the corruption is caught there.
    let mut changed = chain("1").steps().to_vec();
    changed[1].env.insert("FLAG".into(), "1".into());
    let changed = Plan::new(changed).unwrap();
    let err = run_plan(&changed, &store, &sandbox).await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Store(crate::store::StoreError::Corrupt { .. })
        ),
        "{err:?}"
    );

    // The bad blob was dropped: a is a miss now, runs again, and b gets good bytes.
    let report = run_plan(&changed, &store, &sandbox).await.unwrap();
    assert_eq!(report.steps[0].outcome, StepOutcome::Ran);
    assert_eq!(report.steps[1].outcome, StepOutcome::Ran);
}

#[tokio::test]
async fn an_output_behind_a_link_the_step_made_is_refused_not_read_from_the_host() {
    // A secret on the host, outside any step directory.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("secret.txt"), b"host secret").unwrap();
    let target = host.path().to_owned();
    let mut linking = step("linking", &[], &["d/secret.txt", "e/"]);
    linking.host = Some(HostAction::new(move |_input, out| {
        std::os::unix::fs::symlink(&target, out.join("d"))?;
        std::fs::create_dir(out.join("e"))
    }));
    let store = MemoryStore::new();
    let error = run_plan(
        &Plan::new(vec![linking]).unwrap(),
        &store,
        &FakeSandbox::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, EngineError::OutputThroughLink { link, .. } if link == "d"),
        "{error:?}"
    );
    assert!(
        !store.contains(&Digest::of(b"host secret")).await.unwrap(),
        "the host file reached the store"
    );
}

/// A fetch step: the host's network (and a key of its own), its outputs held to their pins
/// after a run and on every cache hit; a mismatch records nothing.
#[tokio::test]
async fn a_fetch_step_runs_with_network_and_its_outputs_are_held_to_their_pins() {
    let fetch_step = |pins: &[(&str, &[u8])]| {
        let mut s = step("fetch", &[], &["src.tar"]);
        s.network = crate::sandbox::Network::Host;
        s.pins = pins
            .iter()
            .map(|(o, bytes)| ((*o).to_owned(), Digest::of(bytes)))
            .collect();
        s
    };
    let fetch = |pins: &[(&str, &[u8])]| Plan::new(vec![fetch_step(pins)]).unwrap();
    let served = |bytes: &'static [u8]| {
        FakeSandbox::new().script(
            "fetch",
            FakeStep::succeeds(&[]).writing("/out/src.tar", bytes),
        )
    };
    // The network is part of the key: the same command without it is another step.
    let key_of = |s: &Step| s.derivation(&BTreeMap::new()).unwrap().key();
    assert_ne!(
        key_of(&fetch_step(&[])),
        key_of(&step("fetch", &[], &["src.tar"]))
    );
    // The pins are not: pinning a fetched output does not make it run again.
    assert_eq!(
        key_of(&fetch_step(&[])),
        key_of(&fetch_step(&[("src.tar", b"x")]))
    );

    // Served other bytes than pinned: refused, nothing recorded.
    let store = MemoryStore::new();
    let sandbox = served(b"tampered");
    let error = run_plan(&fetch(&[("src.tar", b"original")]), &store, &sandbox)
        .await
        .unwrap_err();
    let EngineError::PinMismatch {
        step: named,
        output,
        expected,
        actual,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!((named.as_str(), output.as_str()), ("fetch", "src.tar"));
    assert_eq!(*expected, Digest::of(b"original"));
    assert_eq!(*actual, Digest::of(b"tampered"));
    assert_eq!(sandbox.ran()[0].network, crate::sandbox::Network::Host);
    assert!(matches!(
        fetch(&[]).status(&store).await.unwrap()[0].status,
        StepStatus::WillRun { .. }
    ));

    // Unpinned: trusted on first use and recorded; pinned to what it gave: cached, checked.
    let store = MemoryStore::new();
    let sandbox = served(b"original");
    run_plan(&fetch(&[]), &store, &sandbox).await.unwrap();
    let again = run_plan(&fetch(&[("src.tar", b"original")]), &store, &sandbox)
        .await
        .unwrap();
    assert_eq!(again.steps[0].outcome, StepOutcome::Cached);
    assert_eq!(sandbox.ran().len(), 1);
    // A record that contradicts a (newer) pin is not used.
    let error = run_plan(&fetch(&[("src.tar", b"other")]), &store, &sandbox)
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::PinMismatch { .. }), "{error}");
    assert_eq!(sandbox.ran().len(), 1);

    // A pin must name a declared output.
    let mut bad = step("fetch", &[], &["src.tar"]);
    bad.pins.insert("other.tar".into(), Digest::of(b"x"));
    assert!(matches!(
        Plan::new(vec![bad]),
        Err(EngineError::InvalidStep { .. })
    ));
}
