//! `kiln verify-tags` and `kiln push` against bare remotes, on a real demo release.

use std::path::{Path, PathBuf};

use crate::common::{World, docker_or_skip, git, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// A released demo world and its lockfile, released by a captain with a real email (the
/// demo's `.invalid` placeholder is pushed only to local repositories).
fn released() -> (World, serde_json::Value) {
    let world = World::new();
    let lock = world.release(
        "v1.28.2",
        &[
            "--name",
            "K3s Release Captain",
            "--email",
            "captain@example.com",
        ],
    );
    (world, lock)
}

/// A bare copy of one of the world's repositories, as a remote.
fn remote(world: &World, repo: &str, name: &str) -> PathBuf {
    world.clone_repo(repo, name, true)
}

fn verify_tags(world: &World, remote: &Path) -> (Option<i32>, serde_json::Value) {
    let output = world.kiln(&[
        "verify-tags",
        LOCK,
        "--remote",
        remote.to_str().unwrap(),
        "--json",
    ]);
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output).1));
    (output.status.code(), json)
}

fn state_of(report: &serde_json::Value, tag: &str) -> Option<String> {
    report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tag)
        .map(|t| t["state"].as_str().unwrap().to_owned())
}

fn push(world: &World, fork: &Path, k3s: Option<&Path>) -> std::process::Output {
    let mut args = vec!["push", LOCK, "--remote", fork.to_str().unwrap()];
    if let Some(k3s) = k3s {
        args.extend(["--k3s-remote", k3s.to_str().unwrap()]);
    }
    world.kiln(&args)
}

fn tags_of(repo: &Path) -> String {
    git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

#[tokio::test]
async fn verify_tags_reports_missing_extra_moved_and_unsafe_names() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (world, lock) = released();
    let fork = remote(&world, "fork.git", "fork-remote.git");
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(report["counts"]["missing"], 7, "{report}");

    // A relative remote path means the same to push as to the captain's shell.
    let output = world.kiln(&["push", LOCK, "--remote", "../fork-remote.git"]);
    assert!(output.status.success(), "{}", text(&output).1);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["counts"]["present"], 7, "{report}");

    // Missing: one module tag deleted.
    let api = "staging/src/k8s.io/api/v1.28.2-k3s1";
    git(&fork, &["tag", "-d", api]);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(state_of(&report, api).as_deref(), Some("missing"));

    // Moved: back, at another commit (annotated, so peeling is exercised too).
    git(
        &fork,
        &[
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "tag",
            "-a",
            "-m",
            "moved",
            api,
            "v1.28.2^{commit}",
        ],
    );
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, api).as_deref(), Some("moved"));
    let other = git(&fork, &["rev-parse", "v1.28.2^{commit}"]);
    let moved = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == api)
        .unwrap();
    assert_eq!(moved["remote"], other.trim());
    assert_eq!(moved["locked"], lock["tags"][api]);
    git(&fork, &["tag", "-d", api]);
    git(&fork, &["tag", api, lock["tags"][api].as_str().unwrap()]);

    // Extra: a tag of the release the lock does not have.
    let extra = "staging/src/k8s.io/extra/v1.28.2-k3s1";
    git(&fork, &["tag", extra, "v1.28.2^{commit}"]);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, extra).as_deref(), Some("extra"));
    git(&fork, &["tag", "-d", extra]);

    // A remote tag whose name a shell would execute: reported, never run.
    let evil = "x$(touch${IFS}pwned)`touch${IFS}pwned2`/v1.28.2-k3s1";
    git(
        &fork,
        &[
            "update-ref",
            &format!("refs/tags/{evil}"),
            "v1.28.2^{commit}",
        ],
    );
    // And one a command would take for an option.
    let dashed = "-evil/v1.28.2-k3s1";
    git(
        &fork,
        &[
            "update-ref",
            &format!("refs/tags/{dashed}"),
            "v1.28.2^{commit}",
        ],
    );
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, evil).as_deref(), Some("unsafe"));
    assert_eq!(state_of(&report, dashed).as_deref(), Some("unsafe"));
    // Push refuses it too, and nothing anywhere ran it.
    let output = push(&world, &fork, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("never passes to a command"),
        "{}",
        text(&output).1
    );
    for dir in [world.path(), fork.clone(), world.dir.path().to_owned()] {
        assert!(!dir.join("pwned").exists() && !dir.join("pwned2").exists());
    }
    // The human table says what to do.
    let output = world.kiln(&["verify-tags", LOCK, "--remote", fork.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        text(&output).0.contains("UNSAFE NAME"),
        "{}",
        text(&output).0
    );
}

#[tokio::test]
async fn push_is_atomic_idempotent_and_never_moves_a_tag() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (world, lock) = released();

    // A remote with one of the release's tags already elsewhere: refused, nothing pushed to
    // either remote.
    let taken = remote(&world, "fork.git", "taken.git");
    let k3s_untouched = remote(&world, "k3s.git", "k3s-untouched.git");
    let kubectl = "staging/src/k8s.io/kubectl/v1.28.2-k3s1";
    git(&taken, &["tag", kubectl, "v1.28.2^{commit}"]);
    let (before, k3s_before) = (tags_of(&taken), tags_of(&k3s_untouched));
    let output = push(&world, &taken, Some(&k3s_untouched));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(stderr.contains("refusing to push"), "{stderr}");
    assert!(stderr.contains(kubectl), "{stderr}");
    assert_eq!(tags_of(&taken), before);
    assert_eq!(tags_of(&k3s_untouched), k3s_before);

    // A remote whose hook rejects one tag: the atomic push leaves it without any of them.
    let hooked = remote(&world, "fork.git", "hooked.git");
    let hook = hooked.join("hooks/update");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in refs/tags/staging/src/k8s.io/kubectl/*) echo 'kubectl tags are frozen' >&2; exit 1;; esac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = tags_of(&hooked);
    let output = push(&world, &hooked, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("kubectl tags are frozen"),
        "{}",
        text(&output).1
    );
    assert_eq!(tags_of(&hooked), before);

    // The k3s bundle gone from the store: refused before the fork's tags are pushed.
    let bundle = world.blob(
        lock["steps"]["k3s-tidy"]["outputs"]["k3s.bundle"]
            .as_str()
            .unwrap(),
    );
    let saved = std::fs::read(&bundle).unwrap();
    std::fs::remove_file(&bundle).unwrap();
    let (early, early_k3s) = (
        remote(&world, "fork.git", "early.git"),
        remote(&world, "k3s.git", "early-k3s.git"),
    );
    let (before, k3s_before) = (tags_of(&early), tags_of(&early_k3s));
    let output = push(&world, &early, Some(&early_k3s));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is not in the store"),
        "{}",
        text(&output).1
    );
    assert!(
        text(&output).1.contains("kiln release"),
        "{}",
        text(&output).1
    );
    assert_eq!((tags_of(&early), tags_of(&early_k3s)), (before, k3s_before));
    std::fs::write(&bundle, saved).unwrap();

    // A good remote: every tag lands at its locked commit, and the k3s branch.
    let fork = remote(&world, "fork.git", "fork-remote.git");
    let k3s = remote(&world, "k3s.git", "k3s-remote.git");
    let output = push(&world, &fork, Some(&k3s));
    assert!(output.status.success(), "{}", text(&output).1);
    for (tag, commit) in lock["tags"].as_object().unwrap() {
        assert_eq!(
            git(&fork, &["rev-parse", &format!("refs/tags/{tag}")]).trim(),
            commit.as_str().unwrap()
        );
    }
    assert_eq!(
        git(&k3s, &["rev-parse", "refs/heads/v1.28.2-k3s1"]).trim(),
        lock["k3s"]["commit"].as_str().unwrap()
    );
    // Again: a no-op.
    let (fork_refs, k3s_refs) = (tags_of(&fork), tags_of(&k3s));
    let output = world.kiln(&[
        "push",
        LOCK,
        "--remote",
        fork.to_str().unwrap(),
        "--k3s-remote",
        k3s.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let actions: Vec<&str> = report["fork"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["k3s"].as_array().unwrap())
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 8);
    assert!(actions.iter().all(|a| *a == "skipped"), "{actions:?}");
    assert_eq!((tags_of(&fork), tags_of(&k3s)), (fork_refs, k3s_refs));

    // The k3s branch moved on the remote: refused.
    git(
        &k3s,
        &["update-ref", "refs/heads/v1.28.2-k3s1", "refs/heads/main"],
    );
    let output = push(&world, &fork, Some(&k3s));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("branch v1.28.2-k3s1 is at"),
        "{}",
        text(&output).1
    );
}

/// What [`GitHttp`] does to the next `git-receive-pack` POST (then it serves normally again).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// The connection drops halfway through the pushed pack: receive-pack sees half of it.
    CutBody,
    /// The remote takes the whole push, then the connection drops before its answer.
    DropAnswer,
    /// The connection stalls: the request is read and never answered, nothing is reset.
    Stall,
}

/// Git's smart HTTP protocol on loopback: `git http-backend` as CGI over the bare repositories
/// in `root`, one request per connection, with one [`Fault`] armed at a time.
struct GitHttp {
    addr: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
}

impl GitHttp {
    fn start(root: &Path) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fault = std::sync::Arc::new(std::sync::Mutex::new(Fault::None));
        let armed = fault.clone();
        let root = root.to_owned();
        // The thread ends with the test binary; it only serves loopback connections.
        std::thread::spawn(move || {
            let mut stalled = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Some(request) = read_request(&client) else {
                    continue;
                };
                let fault = if request.path.ends_with("/git-receive-pack") {
                    std::mem::replace(&mut *armed.lock().unwrap(), Fault::None)
                } else {
                    Fault::None
                };
                match fault {
                    // Held open, never answered, never closed.
                    Fault::Stall => stalled.push(client),
                    fault => {
                        let root = root.clone();
                        std::thread::spawn(move || serve(&root, client, &request, fault));
                    }
                }
            }
        });
        Self { addr, fault }
    }

    fn arm(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(client: &std::net::TcpStream) -> Option<Request> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut reader = std::io::BufReader::new(client);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        (&*client)
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .ok()?;
    }
    if request
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.header("content-length") {
        request.body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut request.body).ok()?;
    }
    Some(request)
}

/// Runs `git http-backend` for `request` and answers with what it printed, as `fault` says.
fn serve(root: &Path, mut client: std::net::TcpStream, request: &Request, fault: Fault) {
    use std::io::Write as _;
    let mut body = request.body.clone();
    if fault == Fault::CutBody {
        body.truncate(body.len() / 2);
    }
    let mut command = std::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "captain")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(kind) = request.header("content-type") {
        command.env("CONTENT_TYPE", kind);
    }
    if let Some(encoding) = request.header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = request.header("git-protocol") {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output().unwrap();
    let _ = feeder.join();
    if matches!(fault, Fault::CutBody | Fault::DropAnswer) {
        // The connection is gone: the client reads an end with no answer.
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        })
        .unwrap_or((0, 0));
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for line in head.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                value.trim().clone_into(&mut status);
            }
            _ => {
                response.push_str(line);
                response.push_str("\r\n");
            }
        }
    }
    let answer = &out[split.1..];
    let head = format!(
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let _ = client.write_all(head.as_bytes());
    let _ = client.write_all(answer);
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// Row 30: the network drops mid-push over git's smart HTTP. Halfway through the pack, the
/// atomic push lands no tag, kiln exits 1 naming the remote, and a rerun completes. After the
/// remote took the whole push but before its answer arrived, kiln reads the remote back,
/// finds every tag at its locked commit and finishes (with a warning that says so). A stalled
/// connection that is never reset ends within git's low-speed limit instead of hanging.
#[tokio::test]
async fn a_push_cut_by_the_network_lands_no_tag_and_a_rerun_completes() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (world, lock) = released();
    let root = world.path().parent().unwrap().join("served");
    std::fs::create_dir(&root).unwrap();
    let server = GitHttp::start(&root);
    let remote_at = |name: &str| {
        let bare = remote(&world, "fork.git", name);
        let inside = root.join(name);
        std::fs::rename(&bare, &inside).unwrap();
        inside
    };
    let push_to = |name: &str, env: &[(&str, &str)]| {
        let mut command = crate::common::kiln();
        command
            .current_dir(world.path())
            .arg("--store")
            .arg(world.store())
            .args(["push", LOCK, "--remote", &server.url(name), "--json"]);
        for (key, value) in env {
            command.env(key, value);
        }
        crate::common::TimedOutput::timed_output(&mut command).unwrap()
    };
    let present = |repo: &Path| {
        lock["tags"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(tag, commit)| {
                git(repo, &["rev-parse", &format!("refs/tags/{tag}")]).trim() == commit
            })
    };

    // Cut halfway through the pack: nothing lands, the error names the remote.
    let cut = remote_at("cut.git");
    let before = tags_of(&cut);
    server.arm(Fault::CutBody);
    let output = push_to("cut.git", &[]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the push to {} failed", server.url("cut.git"))),
        "{stderr}"
    );
    assert!(
        stderr.contains("the remote lacks 7 of its 7 refs")
            && stderr.contains("Empty reply from server")
            && stderr.contains("run `kiln push` again"),
        "{stderr}"
    );
    assert_eq!(tags_of(&cut), before, "a cut push landed tags");
    // The rerun completes, and the remote is exact.
    let output = push_to("cut.git", &[]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(present(&cut));
    let (code, report) = verify_tags(&world, &cut);
    assert_eq!(code, Some(0), "{report}");

    // The answer lost after the remote took the push: read back, counted as done.
    let dropped = remote_at("dropped.git");
    server.arm(Fault::DropAnswer);
    let output = push_to("dropped.git", &[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(present(&dropped));
    assert!(
        stderr.contains("the push failed, but the remote holds every ref at its locked commit"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["fork"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["action"] == "skipped"),
        "{report}"
    );

    // A stall: no reset ever comes; git's low-speed limit (kiln's default, shortened here)
    // ends it, nothing lands, and the rerun completes.
    let stalled = remote_at("stalled.git");
    let before = tags_of(&stalled);
    server.arm(Fault::Stall);
    let started = std::time::Instant::now();
    let output = push_to("stalled.git", &[("GIT_HTTP_LOW_SPEED_TIME", "3")]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}: {stderr}",
        started.elapsed()
    );
    assert!(stderr.contains("Operation too slow"), "{stderr}");
    assert_eq!(tags_of(&stalled), before);
    let output = push_to("stalled.git", &[]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(present(&stalled));
}
