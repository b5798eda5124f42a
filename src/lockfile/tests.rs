use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn hex(seed: u8, len: usize) -> String {
    (0..len)
        .map(|i| char::from(b"0123456789abcdef"[(usize::from(seed) * 7 + i * 3) % 16]))
        .collect()
}

fn digest(seed: u8) -> Digest {
    format!("sha256:{}", hex(seed, 64)).parse().unwrap()
}

/// A lockfile shaped like the demo release's.
pub(crate) fn sample() -> Lockfile {
    let release = ReleaseNames::new(
        "v1.28.1-k3s1".parse().unwrap(),
        "v1.28.2-k3s1".parse().unwrap(),
        "1.22.10".parse().unwrap(),
        1,
    );
    let tags = [
        "",
        "staging/src/k8s.io/api/",
        "staging/src/k8s.io/client-go/",
    ]
    .iter()
    .map(|prefix| (format!("{prefix}v1.28.2-k3s1"), hex(1, 40)))
    .collect();
    let step = |seed: u8, outputs: &[&str]| LockedStep {
        key: StepKey::from_digest(digest(seed)),
        outputs: outputs
            .iter()
            .enumerate()
            .map(|(i, o)| ((*o).to_owned(), digest(seed + u8::try_from(i).unwrap() + 1)))
            .collect(),
    };
    Lockfile {
        version: LOCKFILE_VERSION,
        release,
        inputs: Inputs {
            old_k8s_commit: hex(2, 40),
            new_k8s_commit: hex(3, 40),
            old_fork_commit: hex(4, 40),
            patches: vec![hex(5, 40), hex(6, 40)],
            go_versions: BTreeMap::from([
                ("v1.28.1".into(), "1.21.13".into()),
                ("v1.28.2".into(), "1.22.10".into()),
            ]),
            k3s_release_branch_commit: hex(7, 40),
            k3s_branch: "release-1.28".into(),
            toolchain: Toolchain {
                image: digest(8),
                go: "1.22.10".into(),
                archive: digest(9),
                go_version: "go version go1.22.10 linux/amd64".into(),
            },
            identity: Identity {
                name: "K3s Release Captain".into(),
                email: "captain@kiln-demo.invalid".into(),
            },
            source_date_epoch: 1_694_606_400,
            extra_modules: BTreeMap::from([(
                "github.com/k3s-io/helper".into(),
                BTreeMap::from([("v0.28.1".into(), hex(9, 40))]),
            )]),
        },
        steps: BTreeMap::from([
            ("rebase".into(), step(10, &["head", "rebase.bundle"])),
            ("build".into(), step(20, &["artifacts/"])),
        ]),
        tags,
        tag_objects: BTreeMap::new(),
        downloads: BTreeMap::new(),
        clones: BTreeMap::new(),
        modules: vec![ProxyModule {
            module: "github.com/k3s-io/helper".into(),
            version: "v0.28.1".into(),
            h1: "h1:Iyb5TBAXokHVGL6DfXSDEAAC3kUtLdpzzug1zJcTiZs=".into(),
            go_mod_h1: "h1:zjwmzb4UooXRXVTq/4HfhV2DUE/YmwW+tYBVNh/mT7A=".into(),
        }],
        third_party: vec![ProxyModule {
            module: "github.com/kiln-demo/legacy".into(),
            version: "v2.1.0+incompatible".into(),
            h1: String::new(),
            go_mod_h1: format!("h1:{}=", "B".repeat(43)),
        }],
        fetched: BTreeMap::from([(
            "github.com/kiln-demo/legacy/@v/v2.1.0+incompatible.mod".into(),
            digest(31),
        )]),
        k3s: K3sResult {
            branch: "v1.28.2-k3s1".into(),
            commit: hex(11, 40),
        },
        artifacts: BTreeMap::from([(
            "k3s".into(),
            Artifact {
                sha256: digest(30),
                size: 1_400_984,
            },
        )]),
    }
}

fn parse(text: &str) -> Result<Lockfile, LockfileError> {
    Lockfile::parse(text, "test.lock.json")
}

/// The error text of `parse` after `edit` of the sample lockfile's JSON value.
fn refusal(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value = serde_json::to_value(sample()).unwrap();
    edit(&mut value);
    let text = serde_json::to_string_pretty(&value).unwrap();
    match parse(&text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_sample_is_accepted_and_round_trips() {
    let lock = sample();
    assert_eq!(parse(&lock.to_canonical()).unwrap(), lock);
}

#[test]
fn syntax_errors_give_line_and_column() {
    let text = sample()
        .to_canonical()
        .replacen("\"size\": ", "\"size\": -", 1);
    let error = parse(&text).unwrap_err();
    let LockfileError::Syntax { reason, at, .. } = &error else {
        panic!("{error}");
    };
    let line = text
        .lines()
        .position(|l| l.contains("\"size\": -"))
        .unwrap()
        + 1;
    assert!(reason.contains(&format!("line {line}")), "{reason}");
    assert!(at.is_some());
}

#[test]
fn a_key_twice_in_one_object_is_refused_with_its_line() {
    let text = sample().to_canonical();
    let tag = sample().tags.keys().next().unwrap().clone();
    // The same tag again, at another commit, right after the first.
    let line = format!("    \"{tag}\": \"{}\",\n", hex(1, 40));
    let at = text.find(&format!("    \"{tag}\"")).unwrap();
    let mut doubled = text.clone();
    doubled.insert_str(at, &line.replace(&hex(1, 40), &"e".repeat(40)));
    let error = parse(&doubled).unwrap_err();
    let LockfileError::Syntax { reason, .. } = &error else {
        panic!("{error}");
    };
    assert!(
        reason.contains(&format!("`{tag}` appears twice")),
        "{reason}"
    );
    assert!(reason.contains("line"), "{reason}");
}

#[test]
fn other_versions_are_refused_by_version_before_their_shape() {
    // A newer format, and the older one (a toolchain of a Debian Go line, without the
    // distribution's digest), are each named by version.
    for version in [LOCKFILE_VERSION + 1, 1] {
        let text = format!(r#"{{"version": {version}, "something": "new"}}"#);
        let error = parse(&text).unwrap_err();
        assert!(matches!(error, LockfileError::Version { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("format version {version}")),
            "{error}"
        );
    }
}

#[test]
fn unknown_fields_and_bad_digests_are_refused() {
    let unknown = refusal(|v| {
        v["inputs"]["extra"] = "x".into();
    });
    assert!(unknown.contains("unknown field `extra`"), "{unknown}");
    let other_go = refusal(|v| {
        v["inputs"]["toolchain"]["go_version"] = "go version go1.22.9 linux/amd64".into();
    });
    assert!(
        other_go.contains("inputs.toolchain.go_version"),
        "{other_go}"
    );
    let bad = refusal(|v| {
        v["artifacts"]["k3s"]["sha256"] = "sha256:abc".into();
    });
    assert!(bad.contains("sha256:abc"), "{bad}");
    let upper = refusal(|v| {
        v["steps"]["build"]["key"] = format!("sha256:{}", "A".repeat(64)).into();
    });
    assert!(upper.contains("line"), "{upper}");
}

#[test]
fn unsafe_names_and_paths_are_refused_naming_the_field() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "artifacts: `/etc/passwd`",
            Box::new(|v| v["artifacts"]["/etc/passwd"] = v["artifacts"]["k3s"].clone()),
        ),
        (
            "artifacts: `../k3s`",
            Box::new(|v| v["artifacts"]["../k3s"] = v["artifacts"]["k3s"].clone()),
        ),
        (
            "steps.build.outputs: `a/../../b`",
            Box::new(|v| {
                v["steps"]["build"]["outputs"]["a/../../b/"] =
                    v["artifacts"]["k3s"]["sha256"].clone();
            }),
        ),
        (
            "clones: `file:///etc#v1` is not a repository URL#ref",
            Box::new(|v| v["clones"]["file:///etc#v1"] = v["k3s"]["commit"].clone()),
        ),
        (
            "clones: `https://example.com/../x#v1`",
            Box::new(|v| v["clones"]["https://example.com/../x#v1"] = v["k3s"]["commit"].clone()),
        ),
        (
            "clones.https://example.com/r.git#v1",
            Box::new(|v| v["clones"]["https://example.com/r.git#v1"] = "HEAD".into()),
        ),
        (
            "tags: `v1.28.2-k3s1;touch x`",
            Box::new(|v| v["tags"]["v1.28.2-k3s1;touch x"] = v["k3s"]["commit"].clone()),
        ),
        (
            "tags: `-v1.28.2-k3s1`",
            Box::new(|v| v["tags"]["-v1.28.2-k3s1"] = v["k3s"]["commit"].clone()),
        ),
        (
            "tags: `v1.27.9-k3s1` is not a tag of the release",
            Box::new(|v| v["tags"]["v1.27.9-k3s1"] = v["k3s"]["commit"].clone()),
        ),
        (
            "k3s.branch: `$(reboot)`",
            Box::new(|v| v["k3s"]["branch"] = "$(reboot)".into()),
        ),
        (
            "k3s.branch: `main` is not the release's branch",
            Box::new(|v| v["k3s"]["branch"] = "main".into()),
        ),
        (
            "k3s.commit: `HEAD`",
            Box::new(|v| v["k3s"]["commit"] = "HEAD".into()),
        ),
        (
            "release.old_fork_tag: `--upload-pack=x`",
            Box::new(|v| v["release"]["old_fork_tag"] = "--upload-pack=x".into()),
        ),
        (
            "inputs.patches: `1234`",
            Box::new(|v| v["inputs"]["patches"][0] = "1234".into()),
        ),
        (
            "inputs.extra_modules: `../helper`",
            Box::new(|v| {
                v["inputs"]["extra_modules"]["../helper"] =
                    v["inputs"]["extra_modules"]["github.com/k3s-io/helper"].clone();
            }),
        ),
        (
            "go_mod_h1: `h1:nope`",
            Box::new(|v| v["modules"][0]["go_mod_h1"] = "h1:nope".into()),
        ),
        (
            "inputs.identity.email: `a>b`",
            Box::new(|v| v["inputs"]["identity"]["email"] = "a>b".into()),
        ),
        (
            "steps: `Build!` is not a step name",
            Box::new(|v| v["steps"]["Build!"] = v["steps"]["build"].clone()),
        ),
        (
            "inputs.toolchain.go: `1.23; rm`",
            Box::new(|v| v["inputs"]["toolchain"]["go"] = "1.23; rm".into()),
        ),
    ];
    for (expected, edit) in cases {
        let error = refusal(edit);
        assert!(
            error.contains(expected),
            "expected `{expected}` in: {error}"
        );
    }
}

fn commit() -> impl Strategy<Value = String> {
    "[0-9a-f]{40}"
}

fn a_digest() -> impl Strategy<Value = Digest> {
    "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}").parse().unwrap())
}

fn lockfiles() -> impl Strategy<Value = Lockfile> {
    let tags = prop::collection::btree_map(
        "[a-z][a-z0-9-]{0,8}(/[a-z][a-z0-9-]{0,8}){0,2}",
        commit(),
        0..6,
    );
    let artifacts = prop::collection::btree_map(
        "[a-z0-9_][a-zA-Z0-9_.+-]{0,12}(/[a-z0-9_][a-zA-Z0-9_.+-]{0,12}){0,2}",
        (a_digest(), any::<u64>()).prop_map(|(sha256, size)| Artifact { sha256, size }),
        0..5,
    );
    let outputs = prop::collection::btree_map("[a-z][a-z.]{0,8}/?", a_digest(), 0..4);
    let steps = prop::collection::btree_map(
        "[a-z][a-z0-9-]{0,10}",
        (a_digest(), outputs).prop_map(|(key, outputs)| LockedStep {
            key: StepKey::from_digest(key),
            outputs,
        }),
        0..6,
    );
    let patches = prop::collection::vec(commit(), 0..4);
    let identity = (
        "[A-Za-z][A-Za-z .'-]{0,20}",
        "[a-z0-9.+-]{1,10}@[a-z0-9.-]{1,10}",
    )
        .prop_map(|(name, email)| Identity { name, email });
    (
        tags,
        artifacts,
        steps,
        patches,
        identity,
        0..i64::from(u32::MAX),
        commit(),
        a_digest(),
    )
        .prop_map(
            |(tags, artifacts, steps, patches, identity, epoch, k3s, image)| {
                let mut lock = sample();
                let fork_tag = lock.release.new_fork_tag().to_string();
                lock.tags = tags
                    .into_iter()
                    .map(|(prefix, c)| (format!("{prefix}/{fork_tag}"), c))
                    .collect();
                lock.tags.insert(fork_tag, k3s.clone());
                lock.artifacts = artifacts;
                lock.steps = steps;
                lock.inputs.patches = patches;
                lock.inputs.identity = identity;
                lock.inputs.source_date_epoch = epoch;
                lock.inputs.toolchain.image = image;
                lock.k3s.commit = k3s;
                lock
            },
        )
}

proptest! {
    #[test]
    fn parse_of_write_is_identity(lock in lockfiles()) {
        let text = lock.to_canonical();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &lock);
        // And the canonical text is a fixed point.
        prop_assert_eq!(parsed.to_canonical(), text);
    }

    #[test]
    fn mutated_lockfiles_never_panic_and_what_passes_is_checked(
        at in 0usize..4000,
        byte in any::<u8>(),
    ) {
        let mut text = sample().to_canonical().into_bytes();
        let at = at % text.len();
        text[at] = byte;
        if let Ok(text) = String::from_utf8(text)
            && let Ok(lock) = parse(&text)
        {
            // Whatever a mutation left acceptable still passes every check.
            prop_assert!(check::check(&lock).is_ok());
        }
    }
}

#[test]
fn a_huge_or_binary_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.lock.json");
    // 100 MB, sparse: a reader that reads it all would take its time and memory.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let error = Lockfile::read(&huge).unwrap_err();
    assert!(matches!(error, LockfileError::Invalid { .. }), "{error:?}");
    assert!(
        error.to_string().contains("larger than 8.00 MiB"),
        "{error}"
    );
    // /dev/zero never ends: the bound ends the read.
    let error = Lockfile::read(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
    let binary = dir.path().join("binary.lock.json");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let error = Lockfile::read(&binary).unwrap_err();
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

#[test]
fn drift_names_every_differing_value_by_its_path() {
    let held = sample();
    assert!(held.drift(&held.clone()).is_empty());
    let mut now = held.clone();
    now.artifacts.get_mut("k3s").unwrap().size += 1;
    now.steps
        .get_mut("build")
        .unwrap()
        .outputs
        .insert("artifacts/".into(), digest(31));
    now.tags.insert("v9.9.9-k3s1".into(), hex(12, 40));
    now.modules.clear();
    let mut drift = held.drift(&now);
    // A long value is cut short.
    let modules = drift.remove(1);
    assert!(
        modules.starts_with("modules: [{\"") && modules.ends_with("… → []"),
        "{modules}"
    );
    assert_eq!(
        drift,
        vec![
            "artifacts.k3s.size: 1400984 → 1400985".to_owned(),
            format!(
                "steps.build.outputs.artifacts/: \"{}\" → \"{}\"",
                digest(21),
                digest(31)
            ),
            format!("tags.v9.9.9-k3s1: (absent) → \"{}\"", hex(12, 40)),
        ],
    );
}
