use super::*;

const DEMO: &str = include_str!("../../demo/kdm.yaml");
const EXPECTED: &str = include_str!("expected-v1.28.2.yaml");

fn v(s: &str) -> K3sVersion {
    s.parse().unwrap()
}

fn add(text: &str, version: &str) -> Result<KdmEdit, KdmError> {
    add_entry(text, &v(version), &AddOptions::default(), "channels.yaml")
}

/// The lines of `new` that are not in `old`, when `new` is `old` with lines inserted (and
/// nothing else changed); panics otherwise.
fn inserted_lines<'a>(old: &str, new: &'a str) -> Vec<&'a str> {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        head + tail,
        old.len(),
        "lines other than inserted ones changed"
    );
    new[head..new.len() - tail].to_vec()
}

fn entry<'a>(doc: &'a Value, version: &str) -> &'a Value {
    releases_of(doc)
        .unwrap()
        .iter()
        .find(|e| e["version"].as_str() == Some(version))
        .unwrap_or_else(|| panic!("no entry {version}"))
}

#[test]
fn versions_parse_print_and_order() {
    for s in ["v1.28.2+k3s1", "v1.28.2-rc1+k3s1", "v1.29.10-rc12+k3s3"] {
        assert_eq!(v(s).to_string(), s);
    }
    for bad in [
        "v1.28.2",
        "1.28.2+k3s1",
        "v1.28.2-rc+k3s1",
        "v1.28.2-rc01+k3s1",
        "v1.28.2-beta1+k3s1",
        "v1.28.2+k3s",
        "v1.28+k3s1",
    ] {
        assert!(
            matches!(
                bad.parse::<K3sVersion>(),
                Err(crate::names::NameError::NotK3sVersion { .. })
            ),
            "{bad}"
        );
    }
    let mut list = [
        v("v1.28.2+k3s2"),
        v("v1.28.2+k3s1"),
        v("v1.28.2-rc2+k3s1"),
        v("v1.28.10-rc1+k3s1"),
        v("v1.28.2-rc10+k3s1"),
        v("v1.28.2-rc1+k3s2"),
    ];
    list.sort();
    let names: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "v1.28.2-rc2+k3s1",
            "v1.28.2-rc10+k3s1",
            "v1.28.2+k3s1",
            "v1.28.2-rc1+k3s2",
            "v1.28.2+k3s2",
            "v1.28.10-rc1+k3s1"
        ]
    );
}

#[test]
fn the_new_entry_matches_the_expected_file_byte_for_byte_and_a_second_run_changes_nothing() {
    let edit = add(DEMO, "v1.28.2+k3s1").unwrap();
    assert_eq!(edit.action, KdmAction::Added);
    assert_eq!(edit.from.as_deref(), Some("v1.28.1+k3s1"));
    assert_eq!(edit.text, EXPECTED);
    // The diff is exactly the added lines, which are the ones reported.
    assert_eq!(inserted_lines(DEMO, &edit.text), edit.lines);
    assert_eq!(edit.lines.len(), 6);
    let again = add(&edit.text, "v1.28.2+k3s1").unwrap();
    assert_eq!(again.action, KdmAction::AlreadyPresent);
    assert_eq!(again.text, edit.text);
    assert!(again.lines.is_empty());
}

#[test]
fn anchors_and_merge_chains_resolve_and_published_entries_are_untouched() {
    let edit = add(DEMO, "v1.28.2+k3s1").unwrap();
    let old = resolved(DEMO, "old").unwrap();
    let new = resolved(&edit.text, "new").unwrap();
    let added = entry(&new, "v1.28.2+k3s1");
    // serverArgs-v7 <- v6 <- v5: a key of v5 arrives through two merges; v7's own
    // flannel-backend wins over v5's; v6's own key is there.
    let server = &added["serverArgs"];
    assert_eq!(
        server["cluster-cidr"]["default"].as_str(),
        Some("10.42.0.0/16")
    );
    assert_eq!(
        server["egress-selector-mode"]["default"].as_str(),
        Some("agent")
    );
    let options = server["flannel-backend"]["options"].as_sequence().unwrap();
    assert!(options.iter().any(|o| o.as_str() == Some("ipsec")));
    assert!(server.get("<<").is_none());
    assert_eq!(
        added["agentArgs"]["vpn-auth"]["type"].as_str(),
        Some("string")
    );
    assert_eq!(
        added["agentArgs"]["node-label"]["type"].as_str(),
        Some("array")
    );
    assert_eq!(
        added["featureVersions"]["encryption-key-rotation"].as_str(),
        Some("2.0.0")
    );
    // Same args as the entry it copies; the range too (its comment is not copied).
    let copied = entry(&new, "v1.28.1+k3s1");
    for key in [
        "serverArgs",
        "agentArgs",
        "featureVersions",
        "minChannelServerVersion",
        "maxChannelServerVersion",
    ] {
        assert_eq!(added[key], copied[key], "{key}");
    }
    // Every published entry resolves exactly as before.
    let before = releases_of(&old).unwrap();
    let after: Vec<&Value> = releases_of(&new)
        .unwrap()
        .iter()
        .filter(|e| e["version"].as_str() != Some("v1.28.2+k3s1"))
        .collect();
    assert_eq!(before.iter().collect::<Vec<_>>(), after);
    // And the file lists it right after the latest 1.28 entry, before the 1.29 group.
    assert_eq!(
        listed_versions(&edit.text, "f").unwrap(),
        [
            "v1.26.7+k3s1",
            "v1.26.8+k3s1",
            "v1.27.4+k3s1",
            "v1.27.5+k3s1",
            "v1.28.1+k3s1",
            "v1.28.2+k3s1",
            "v1.29.0-rc1+k3s1"
        ]
    );
}

#[test]
fn an_rc_entry_is_promoted_by_changing_only_its_version() {
    let rc = add(DEMO, "v1.28.2-rc1+k3s1").unwrap();
    assert_eq!(rc.action, KdmAction::Added);
    // The GA is not added beside its RC…
    assert!(matches!(
        add(&rc.text, "v1.28.2+k3s1"),
        Err(KdmError::RcListed { rc, .. }) if rc == "v1.28.2-rc1+k3s1"
    ));
    // …it replaces it: one line changes, and the file is then what adding the GA gives.
    let ga = promote_entry(&rc.text, &v("v1.28.2+k3s1"), "f").unwrap();
    assert_eq!(ga.action, KdmAction::Promoted);
    assert_eq!(ga.from.as_deref(), Some("v1.28.2-rc1+k3s1"));
    let changed: Vec<(&str, &str)> = rc
        .text
        .lines()
        .zip(ga.text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [("  - version: v1.28.2-rc1+k3s1", "  - version: v1.28.2+k3s1")]
    );
    assert_eq!(ga.lines, ["  - version: v1.28.2+k3s1"]);
    assert_eq!(ga.text, EXPECTED);
    let again = promote_entry(&ga.text, &v("v1.28.2+k3s1"), "f").unwrap();
    assert_eq!(again.action, KdmAction::AlreadyPresent);
    assert_eq!(again.text, ga.text);
    // Nothing to promote; an RC after its GA is refused.
    assert!(matches!(
        promote_entry(DEMO, &v("v1.28.2+k3s1"), "f"),
        Err(KdmError::NoRc { .. })
    ));
    assert!(matches!(
        add(&ga.text, "v1.28.2-rc2+k3s1"),
        Err(KdmError::GaListed { .. })
    ));
}

#[test]
fn the_highest_rc_is_promoted() {
    let one = add(DEMO, "v1.28.2-rc1+k3s1").unwrap();
    let two = add(&one.text, "v1.28.2-rc2+k3s1").unwrap();
    assert_eq!(two.from.as_deref(), Some("v1.28.2-rc1+k3s1"));
    let ga = promote_entry(&two.text, &v("v1.28.2+k3s1"), "f").unwrap();
    assert_eq!(ga.from.as_deref(), Some("v1.28.2-rc2+k3s1"));
    assert_eq!(
        listed_versions(&ga.text, "f").unwrap()[5..7],
        ["v1.28.2-rc1+k3s1", "v1.28.2+k3s1"]
    );
}

#[test]
fn a_new_minor_needs_its_rancher_range() {
    let err = add(DEMO, "v1.30.0+k3s1").unwrap_err();
    let KdmError::NewMinor {
        latest, min, max, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (latest.as_str(), min.as_str(), max.as_str()),
        ("v1.29.0-rc1+k3s1", "v2.9.0-alpha1", "v2.9.99")
    );
    let options = AddOptions {
        min: Some("v2.10.0-alpha1"),
        max: Some("v2.10.99"),
        ..AddOptions::default()
    };
    let edit = add_entry(DEMO, &v("v1.30.0+k3s1"), &options, "f").unwrap();
    assert_eq!(edit.from.as_deref(), Some("v1.29.0-rc1+k3s1"));
    assert_eq!(
        edit.lines,
        [
            "  - version: v1.30.0+k3s1",
            "    minChannelServerVersion: v2.10.0-alpha1",
            "    maxChannelServerVersion: v2.10.99",
            "    serverArgs: *serverArgs-v7",
            "    agentArgs: *agentArgs-v4",
            "    featureVersions: *featureVersions-v1",
        ]
    );
    assert!(edit.text.starts_with(DEMO));
    for bad in [
        "2.10.0",
        "v2.10",
        "v2.10.0-",
        "v2.10.0-al pha",
        "v2.10.0;rm",
    ] {
        let options = AddOptions {
            min: Some(bad),
            max: Some("v2.10.99"),
            ..AddOptions::default()
        };
        assert!(
            matches!(
                add_entry(DEMO, &v("v1.30.0+k3s1"), &options, "f"),
                Err(KdmError::BadRange { flag: "min", .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn after_names_the_entry_to_copy_and_follow() {
    let options = AddOptions {
        after: Some(v("v1.27.4+k3s1")),
        ..AddOptions::default()
    };
    let edit = add_entry(DEMO, &v("v1.27.4+k3s2"), &options, "f").unwrap();
    assert_eq!(
        edit.lines,
        [
            "  - version: v1.27.4+k3s2",
            "    minChannelServerVersion: v2.7.5-alpha1",
            "    maxChannelServerVersion: v2.7.99",
            "    serverArgs: *serverArgs-v6",
            "    agentArgs: *agentArgs-v3",
            "    featureVersions: *featureVersions-v1",
        ]
    );
    assert_eq!(
        listed_versions(&edit.text, "f").unwrap()[2..5],
        ["v1.27.4+k3s1", "v1.27.4+k3s2", "v1.27.5+k3s1"]
    );
    // Copying across minors still needs the new minor's range.
    let across = AddOptions {
        after: Some(v("v1.28.1+k3s1")),
        ..AddOptions::default()
    };
    assert!(matches!(
        add_entry(DEMO, &v("v1.30.0+k3s1"), &across, "f"),
        Err(KdmError::NewMinor { latest, .. }) if latest == "v1.28.1+k3s1"
    ));
    let missing = AddOptions {
        after: Some(v("v1.27.9+k3s1")),
        ..AddOptions::default()
    };
    let err = add_entry(DEMO, &v("v1.27.10+k3s1"), &missing, "f").unwrap_err();
    assert!(
        matches!(&err, KdmError::NoEntry { known, .. } if known == "v1.27.4+k3s1, v1.27.5+k3s1"),
        "{err:?}"
    );
}

#[test]
fn other_layouts_unanchored_maps_crlf_and_unindented_lists() {
    let text = "releases:\n- version: v1.2.3+k3s1\n  minChannelServerVersion: v2.0.0\n  maxChannelServerVersion: v2.0.99\n  serverArgs:\n    a:\n      type: string\n    b:\n    - x\n# trailing comment\n";
    let edit = add(text, "v1.2.4+k3s1").unwrap();
    assert_eq!(
        edit.text,
        "releases:\n- version: v1.2.3+k3s1\n  minChannelServerVersion: v2.0.0\n  maxChannelServerVersion: v2.0.99\n  serverArgs:\n    a:\n      type: string\n    b:\n    - x\n\
         - version: v1.2.4+k3s1\n  minChannelServerVersion: v2.0.0\n  maxChannelServerVersion: v2.0.99\n  serverArgs:\n    a:\n      type: string\n    b:\n    - x\n# trailing comment\n"
    );
    let crlf = text.replace('\n', "\r\n");
    let edit = add(&crlf, "v1.2.4+k3s1").unwrap();
    assert!(
        !edit.text.replace("\r\n", "").contains('\n'),
        "{:?}",
        edit.text
    );
    assert_eq!(listed_versions(&edit.text, "f").unwrap().len(), 2);
    // No newline at the end of the file.
    let bare = "releases:\n  - version: v1.2.3+k3s1\n    serverArgs: &s\n      a: 1";
    let edit = add(bare, "v1.2.4+k3s1").unwrap();
    assert_eq!(
        edit.text,
        "releases:\n  - version: v1.2.3+k3s1\n    serverArgs: &s\n      a: 1\n  - version: v1.2.4+k3s1\n    serverArgs: *s\n"
    );
}

#[test]
fn files_kiln_cannot_edit_safely_are_refused_with_nothing_changed() {
    for (text, want) in [
        ("releases: [", "parse"),
        ("other: 1\n", "layout"),
        ("releases: []\n", "layout"),
        ("releases:\n  - {version: v1.2.3+k3s1}\n", "layout"),
        ("releases:\n  -\n    version: v1.2.3+k3s1\n", "layout"),
        ("releases:\n  - version: v1.2.3+k3s1\n   odd: 1\n", "parse"),
        ("releases:\n  - minChannelServerVersion: v2.0.0\n", "layout"),
        (
            "a: &x 1\nreleases:\n  - version: v1.2.3+k3s1\n    b: {<<: *x}\n",
            "parse",
        ),
    ] {
        let got = add(text, "v1.2.4+k3s1").unwrap_err();
        let kind = match got {
            KdmError::Parse { .. } => "parse",
            KdmError::Layout { .. } => "layout",
            KdmError::NoTemplate { .. } => "no-template",
            ref other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(kind, want, "{text:?}: {got}");
    }
    assert!(matches!(
        add("releases:\n  - version: v1.3.0+k3s1\n", "v1.2.4+k3s1"),
        Err(KdmError::NoTemplate { .. })
    ));
}

#[test]
fn merge_keys_follow_the_spec() {
    let doc = resolved(
        "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc: &c\n  <<: [*a, *b]\n  x: 0\nd:\n  <<: *c\n  w: 3\n",
        "f",
    )
    .unwrap();
    // Explicit keys win; earlier maps in a list win over later ones; chains resolve.
    assert_eq!(doc["c"], resolved("{x: 0, y: 1, z: 2}", "f").unwrap());
    assert_eq!(doc["d"], resolved("{x: 0, y: 1, z: 2, w: 3}", "f").unwrap());
}
