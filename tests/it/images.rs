//! `kiln images check` against Debian's docker-registry on loopback.

use crate::common::{self, Registry, text};

fn put_image(registry: &Registry, repo: &str, tag: &str) {
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":2}},\"layers\":[],\"annotations\":{{\"repo\":\"{repo}\"}}}}",
        kiln::hash::Digest::of(b"{}")
    );
    registry.put_manifest(repo, tag, manifest.as_bytes());
}

fn check(registry: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let output = common::kiln()
        .args([
            "images",
            "check",
            "v1.28.2+k3s1",
            "--registry",
            registry,
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_default();
    (output.status.code(), json, text(&output).1)
}

#[test]
fn present_missing_and_down_are_each_reported() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    put_image(&registry, "rancher/k3s", "v1.28.2-k3s1");
    put_image(&registry, "rancher/k3s-upgrade", "v1.28.2-k3s1");
    // Another tag of the installer image: not the release's.
    put_image(
        &registry,
        "rancher/system-agent-installer-k3s",
        "v1.28.1-k3s1",
    );
    let (code, rows, stderr) = check(&registry.addr, &[]);
    assert_eq!(code, Some(4), "{rows} {stderr}");
    let states: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = &r["state"];
            if s.get("present").is_some() {
                "present".into()
            } else {
                s.as_str().unwrap_or("?").to_owned()
            }
        })
        .collect();
    assert_eq!(states, ["present", "present", "missing"], "{rows}");
    assert_eq!(
        rows[0]["image"],
        format!("{}/rancher/k3s:v1.28.2-k3s1", registry.addr)
    );

    // --wait: the missing image appears while kiln polls.
    let waiter = std::thread::spawn({
        let addr = registry.addr.clone();
        move || check(&addr, &["--wait", "--timeout", "60"])
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    put_image(
        &registry,
        "rancher/system-agent-installer-k3s",
        "v1.28.2-k3s1",
    );
    let (code, rows, stderr) = waiter.join().unwrap();
    assert_eq!(code, Some(0), "{rows} {stderr}");
    assert!(stderr.contains("waiting for"), "{stderr}");

    // The registry down: reported as such, not as missing.
    registry.stop();
    let (code, rows, _) = check(&registry.addr, &[]);
    assert_eq!(code, Some(5), "{rows}");
    assert!(rows[0]["state"].get("unreachable").is_some(), "{rows}");
}
