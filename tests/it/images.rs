//! `kiln images check` against Debian's docker-registry on loopback.

use crate::common::TimedOutput as _;
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
        .timed_output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_default();
    (output.status.code(), json, text(&output).1)
}

/// Each row's state: present, missing, or unreachable.
fn states(rows: &serde_json::Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = &r["state"];
            match s.as_object().and_then(|o| o.keys().next()) {
                Some(key) => key.clone(),
                None => s.as_str().unwrap_or("?").to_owned(),
            }
        })
        .collect()
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
    assert_eq!(states(&rows), ["present", "present", "missing"], "{rows}");
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

/// A registry that, like Docker Hub, answers nothing without a bearer token: `/v2/` and every
/// manifest request without one get a 401 challenge naming the token realm; the realm hands
/// out a token per repository scope; a manifest HEAD with the right token gets its digest.
/// (Docker Hub itself is out of reach offline; docker-registry's token mode needs a JWT
/// issuer, which this stands in for at the HTTP level.)
async fn token_registry(
    present: &'static [&'static str],
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (realm, log) = (format!("http://{addr}/token"), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (realm, log) = (realm.clone(), log.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let bearer = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().strip_prefix("Bearer ").map(str::to_owned))?
                });
                log.lock().unwrap().push(format!(
                    "{method} {target} {}",
                    bearer.as_deref().unwrap_or("-")
                ));
                let challenge =
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"kiln-test\"\r\n");
                let (status, headers, body) = if let Some(query) = target.strip_prefix("/token?") {
                    // scope=repository:<repo>:pull&service=kiln-test
                    let scope = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("scope="))
                        .unwrap_or("")
                        .replace("%3A", ":")
                        .replace("%2F", "/");
                    let repo = scope
                        .strip_prefix("repository:")
                        .and_then(|s| s.strip_suffix(":pull"));
                    match repo {
                        Some(repo) if query.contains("service=kiln-test") => (
                            "200 OK",
                            "Content-Type: application/json\r\n".to_owned(),
                            format!("{{\"token\":\"t-{}\"}}", repo.replace('/', "_")),
                        ),
                        _ => ("400 Bad Request", String::new(), "bad scope".to_owned()),
                    }
                } else if let Some(path) = target.strip_prefix("/v2/") {
                    let wanted = path
                        .split_once("/manifests/")
                        .map(|(repo, tag)| (repo.to_owned(), tag.to_owned()));
                    match (wanted, bearer) {
                        (Some((repo, tag)), Some(token))
                            if token == format!("t-{}", repo.replace('/', "_")) =>
                        {
                            if present.contains(&format!("{repo}:{tag}").as_str()) {
                                (
                                    "200 OK",
                                    format!(
                                        "Docker-Content-Digest: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                                        kiln::hash::Digest::of(repo.as_bytes())
                                    ),
                                    String::new(),
                                )
                            } else {
                                (
                                    "404 Not Found",
                                    "Content-Type: application/json\r\n".to_owned(),
                                    "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}".to_owned(),
                                )
                            }
                        }
                        _ => (
                            "401 Unauthorized",
                            challenge,
                            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}".to_owned(),
                        ),
                    }
                } else {
                    ("404 Not Found", String::new(), String::new())
                };
                let body = if method == "HEAD" { "" } else { body.as_str() };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_hub_style_token_challenge_is_answered_per_repository() {
    let (addr, seen) = token_registry(&[
        "rancher/k3s:v1.28.2-k3s1",
        "rancher/k3s-upgrade:v1.28.2-k3s1",
    ])
    .await;
    let (code, rows, stderr) = tokio::task::spawn_blocking(move || check(&addr, &[]))
        .await
        .unwrap();
    assert_eq!(code, Some(4), "{rows} {stderr}");
    assert_eq!(states(&rows), ["present", "present", "missing"], "{rows}");
    // Every manifest request that was answered carried its own repository's token, fetched
    // from the realm with that repository's pull scope.
    let seen = seen.lock().unwrap().clone();
    for repo in [
        "rancher/k3s",
        "rancher/k3s-upgrade",
        "rancher/system-agent-installer-k3s",
    ] {
        let token = format!("t-{}", repo.replace('/', "_"));
        assert!(
            seen.iter()
                .any(|r| r.starts_with("GET /token?") && r.contains(&repo.replace('/', "%2F"))),
            "no token request for {repo}: {seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|r| r.starts_with(&format!("HEAD /v2/{repo}/manifests/v1.28.2-k3s1 {token}"))),
            "no authorized HEAD for {repo}: {seen:#?}"
        );
    }
}

/// kiln.toml is read only for a flag left out: a broken one stops `images check` without
/// `--registry` with an error naming the file, and never one given everything.
#[test]
fn kiln_toml_is_read_only_for_missing_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kiln.toml"), "[publish]\nregistry = \n").unwrap();
    let run = |extra: &[&str]| {
        common::kiln()
            .current_dir(dir.path())
            .args(["images", "check", "v1.28.2+k3s1", "--json"])
            .args(extra)
            .timed_output()
            .unwrap()
    };
    let given = run(&["--registry", "127.0.0.1:1"]);
    assert_eq!(given.status.code(), Some(5), "{}", text(&given).1);
    let missing = run(&[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).1.contains("kiln.toml"),
        "{}",
        text(&missing).1
    );
    let bad = common::kiln()
        .args(["images", "check", "v1.28.2", "--registry", "127.0.0.1:1"])
        .timed_output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).1.contains("is not a k3s version"),
        "{}",
        text(&bad).1
    );
}
