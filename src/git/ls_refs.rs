//! A remote's refs under a few name prefixes, asked for by git's protocol v2 `ls-refs` with
//! `ref-prefix` lines (gitprotocol-v2(5)), so the remote sends only those.
//!
//! `git ls-remote` cannot ask that: its patterns match name tails, so it sends no prefix
//! (or only `refs/heads/` and `refs/tags/`) and the remote sends every tag. The k3s-io fork
//! has thousands of them (every release also tags each staging module), and a release needs
//! the few of its own minor: reading the rest cost a cached release more than all else it
//! does, and over https it is hundreds of KB per release.
//!
//! kiln speaks the protocol itself over the two transports that carry the real release:
//! - a local repository: `git upload-pack --stateless-rpc`, one request, one answer (what
//!   git's own `git-http-backend` runs);
//! - http(s): git's own remote helper (`git remote-https`), through its `stateless-connect`
//!   command, so proxies, certificates and credentials are git's, configured as the captain
//!   configured them.
//!
//! Anything else (ssh, `git://`, `file://`, a bundle) and any failure here returns `None`,
//! and the caller lists with `git ls-remote`, whose error is then the one reported.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{Location, NEUTRAL_DIR, RefList, remote_git, run};

/// The refs of `location` whose names start with one of `prefixes` (each under `refs/heads/`
/// or `refs/tags/`), by protocol v2; `None` when kiln does not speak the location's transport
/// or the listing failed in any way (see the module's documentation).
pub(super) fn list(location: &Location, prefixes: &[&str]) -> Option<RefList> {
    if let Some(path) = location.local_path() {
        // A bundle or a missing path: git's own listing says what it is.
        return if path.is_dir() {
            local(path, prefixes)
        } else {
            None
        };
    }
    // The URL git would reach: the captain's `url.<base>.insteadOf` rules applied.
    let mut get_url = remote_git(Path::new(NEUTRAL_DIR));
    get_url.args([
        "ls-remote",
        "--get-url",
        "--end-of-options",
        location.as_str(),
    ]);
    let url = run(get_url, Path::new(NEUTRAL_DIR)).ok()?;
    let helper = if url.starts_with("https://") {
        "remote-https"
    } else if url.starts_with("http://") {
        "remote-http"
    } else {
        return None;
    };
    if url.chars().any(char::is_control) || url.starts_with('-') {
        return None;
    }
    over_helper(helper, &url, prefixes)
}

/// Lists the local repository at `path` by one stateless `git upload-pack`.
fn local(path: &Path, prefixes: &[&str]) -> Option<RefList> {
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    command
        .env("GIT_PROTOCOL", "version=2")
        .args(["upload-pack", "--stateless-rpc", "--end-of-options"])
        .arg(path);
    let mut child = Spawned::new(command)?;
    // The request is a few hundred bytes: it fits the pipe whole before anything is read.
    child.stdin()?.write_all(&request(prefixes, None)).ok()?;
    child.close_stdin();
    let refs = read_refs(&mut BufReader::new(child.stdout()?), prefixes, false)?;
    child.finish().then_some(refs)
}

/// Lists `url` through git's remote helper `helper` (`remote-http` or `remote-https`).
fn over_helper(helper: &str, url: &str, prefixes: &[&str]) -> Option<RefList> {
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    // The helper's first argument names the remote; an anonymous remote is named by its URL.
    command.arg(helper).arg(url).arg(url);
    let mut child = Spawned::new(command)?;
    child.stdin()?.write_all(b"capabilities\n").ok()?;
    let mut reader = BufReader::new(child.stdout.take()?);
    let mut stateless = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        match line.trim_end() {
            "" => break,
            capability => stateless |= capability == "stateless-connect",
        }
    }
    if !stateless {
        return None;
    }
    child
        .stdin()?
        .write_all(b"stateless-connect git-upload-pack\n")
        .ok()?;
    // An empty line: connected over protocol v2. `fallback` (a server speaking only the old
    // protocol) or nothing (the helper failed): git's own listing takes over.
    let mut reply = String::new();
    reader.read_line(&mut reply).ok()?;
    if reply != "\n" {
        return None;
    }
    let mut format = None;
    let mut ls_refs = false;
    loop {
        match read_packet(&mut reader)? {
            Packet::Data(line) => {
                let line = std::str::from_utf8(&line).ok()?.trim_end();
                ls_refs |= line == "ls-refs" || line.starts_with("ls-refs=");
                if let Some(f) = line.strip_prefix("object-format=") {
                    format = Some(f.to_owned());
                }
            }
            Packet::Flush => break,
            Packet::Delim | Packet::ResponseEnd => return None,
        }
    }
    if !ls_refs {
        return None;
    }
    child
        .stdin()?
        .write_all(&request(prefixes, format.as_deref()))
        .ok()?;
    let refs = read_refs(&mut reader, prefixes, true)?;
    child.close_stdin();
    // Whatever the helper still says (nothing, as it ends) is drained so it never blocks.
    std::io::copy(&mut reader, &mut std::io::sink()).ok()?;
    child.finish().then_some(refs)
}

/// An `ls-refs` request for `prefixes`, in the object format the server named (none: SHA-1,
/// the default, which a server without the capability assumes).
fn request(prefixes: &[&str], format: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    packet(&mut out, "command=ls-refs\n");
    packet(
        &mut out,
        &format!("agent=kiln/{}\n", env!("CARGO_PKG_VERSION")),
    );
    if let Some(format) = format {
        packet(&mut out, &format!("object-format={format}\n"));
    }
    out.extend_from_slice(b"0001");
    for prefix in prefixes {
        packet(&mut out, &format!("ref-prefix {prefix}\n"));
    }
    out.extend_from_slice(b"0000");
    out
}

/// Appends `line` as one pkt-line.
fn packet(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
    out.extend_from_slice(line.as_bytes());
}

/// One pkt-line as read.
enum Packet {
    Data(Vec<u8>),
    Flush,
    Delim,
    ResponseEnd,
}

/// Reads one pkt-line; `None` at the end of the stream or on anything not a pkt-line.
fn read_packet(reader: &mut impl Read) -> Option<Packet> {
    let mut head = [0_u8; 4];
    reader.read_exact(&mut head).ok()?;
    let length = usize::from_str_radix(std::str::from_utf8(&head).ok()?, 16).ok()?;
    Some(match length {
        0 => Packet::Flush,
        1 => Packet::Delim,
        2 => Packet::ResponseEnd,
        3 => return None,
        _ => {
            let mut data = vec![0_u8; length - 4];
            reader.read_exact(&mut data).ok()?;
            Packet::Data(data)
        }
    })
}

/// The refs of an `ls-refs` answer up to its flush (and, over a helper, the response end that
/// follows it); `None` on an error packet or a line that is not `OID SP NAME`. A ref outside
/// `prefixes` (a server that ignored them) is left out, as is one kiln does not mirror.
fn read_refs(reader: &mut impl Read, prefixes: &[&str], helper: bool) -> Option<RefList> {
    let mut refs = RefList::new();
    loop {
        match read_packet(reader)? {
            Packet::Data(line) => {
                let line = std::str::from_utf8(&line).ok()?;
                let line = line.strip_suffix('\n').unwrap_or(line);
                let (oid, rest) = line.split_once(' ')?;
                // Attributes (`symref-target:`, `peeled:`) follow the name: none was asked.
                let name = rest.split(' ').next()?;
                if !super::packed_refs::is_oid(oid) {
                    return None;
                }
                if super::mirrored(name) && prefixes.iter().any(|p| name.starts_with(p)) {
                    refs.insert(name.to_owned(), oid.to_owned());
                }
            }
            Packet::Flush => break,
            Packet::Delim | Packet::ResponseEnd => return None,
        }
    }
    if helper && !matches!(read_packet(reader)?, Packet::ResponseEnd) {
        return None;
    }
    Some(refs)
}

/// A child process talked to over its stdin and stdout, its stderr dropped (a failure here is
/// told by git's own listing, which runs next), waited for when dropped.
struct Spawned {
    child: Child,
    stdout: Option<std::process::ChildStdout>,
}

impl Spawned {
    fn new(mut command: Command) -> Option<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take();
        Some(Self { child, stdout })
    }

    fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.stdout.as_mut()
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Whether the child exited successfully.
    fn finish(mut self) -> bool {
        self.close_stdin();
        drop(self.stdout.take());
        self.child.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Reached on an early return: the child is told to end and reaped.
        drop(self.child.stdin.take());
        drop(self.stdout.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::git::tests::test_git;
    use crate::git::{ALL_REFS, remote_refs};

    /// A bare repository shaped like the fork: branches, version tags of two minors (one
    /// annotated), a staging module's tag and GitHub's pull refs.
    fn remote(dir: &Path) -> PathBuf {
        let work = dir.join("work");
        std::fs::create_dir(&work).unwrap();
        test_git(&work, &["init", "--quiet", "-b", "master"]);
        test_git(&work, &["commit", "--quiet", "--allow-empty", "-m", "one"]);
        for tag in ["v1.28.1", "v1.28.1-k3s1", "v1.28.10", "v1.29.0"] {
            test_git(&work, &["tag", tag]);
        }
        test_git(&work, &["tag", "-a", "-m", "annotated", "v1.28.2"]);
        test_git(&work, &["tag", "staging/src/k8s.io/api/v1.28.1-k3s1"]);
        test_git(&work, &["branch", "release-1.28"]);
        let bare = dir.join("remote.git");
        test_git(dir, &["clone", "--quiet", "--bare", "work", "remote.git"]);
        for pull in ["refs/pull/1/head", "refs/pull/1/merge"] {
            test_git(&bare, &["update-ref", pull, "refs/heads/master"]);
        }
        bare
    }

    /// What `git ls-remote` shows of `repo` under `prefixes`, branches and tags only.
    fn expected(repo: &Path, prefixes: &[&str]) -> RefList {
        test_git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, name)| super::super::mirrored(name))
            .filter(|(_, name)| prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(oid, name)| (name.to_owned(), oid.to_owned()))
            .collect()
    }

    const RELEASE: [&str; 2] = ["refs/tags/v1.28.1", "refs/tags/v1.28.2"];

    #[test]
    fn a_local_remote_sends_only_the_refs_under_the_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let bare = remote(dir.path());
        let location = Location::parse_in(&bare.to_string_lossy(), Path::new("/")).unwrap();
        let release = list(&location, &RELEASE).expect("spoken over upload-pack");
        assert_eq!(
            release.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "refs/tags/v1.28.1",
                "refs/tags/v1.28.1-k3s1",
                "refs/tags/v1.28.10",
                "refs/tags/v1.28.2"
            ]
        );
        assert_eq!(release, expected(&bare, &RELEASE));
        assert_eq!(
            release["refs/tags/v1.28.2"],
            test_git(&bare, &["rev-parse", "refs/tags/v1.28.2"]),
            "an annotated tag is listed by its tag object, as a mirror packs it"
        );
        let every = list(&location, &ALL_REFS).unwrap();
        assert_eq!(every, expected(&bare, &ALL_REFS));
        assert_eq!(every.len(), 8, "no pull ref: {every:?}");
        assert_eq!(
            remote_refs(&location, &RELEASE).unwrap().refs,
            release,
            "the listing a release takes"
        );

        // A transport kiln does not speak is listed by git, with the same answer.
        let url =
            Location::parse_in(&format!("file://{}", bare.display()), Path::new("/")).unwrap();
        assert_eq!(list(&url, &RELEASE), None);
        let by_git = remote_refs(&url, &RELEASE).unwrap();
        assert_eq!(by_git.refs, release);
        assert_eq!(by_git.prefixes, RELEASE.map(str::to_owned));

        // A missing repository: git's own error.
        let missing = Location::parse_in(
            &dir.path().join("nope.git").to_string_lossy(),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(list(&missing, &RELEASE), None);
        let error = remote_refs(&missing, &RELEASE).unwrap_err().to_string();
        assert!(error.contains("ls-remote"), "{error}");
    }

    #[test]
    fn an_http_remote_is_listed_through_git_s_own_helper_and_sends_only_the_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let bare = remote(dir.path());
        let server = GitHttp::start(dir.path(), true);
        let location =
            Location::parse_in(&format!("{}/remote.git", server.url), Path::new("/")).unwrap();
        let release = list(&location, &RELEASE).expect("spoken through remote-http");
        assert_eq!(release, expected(&bare, &RELEASE));
        let asked = server.posts.lock().unwrap().join("\n");
        assert!(
            asked.contains("command=ls-refs") && asked.contains("ref-prefix refs/tags/v1.28.2\n"),
            "the remote is asked for the prefixes: {asked}"
        );
        assert_eq!(
            list(&location, &ALL_REFS).unwrap(),
            expected(&bare, &ALL_REFS)
        );

        // A server speaking only the old protocol: git lists it, cut down to the prefixes.
        let old = GitHttp::start(dir.path(), false);
        let location =
            Location::parse_in(&format!("{}/remote.git", old.url), Path::new("/")).unwrap();
        assert_eq!(list(&location, &RELEASE), None);
        assert_eq!(remote_refs(&location, &RELEASE).unwrap().refs, release);

        // A repository the server does not have: git's own error.
        let missing =
            Location::parse_in(&format!("{}/nope.git", server.url), Path::new("/")).unwrap();
        assert_eq!(list(&missing, &RELEASE), None);
        let error = remote_refs(&missing, &RELEASE).unwrap_err().to_string();
        assert!(error.contains("ls-remote"), "{error}");
    }

    /// `git http-backend` as CGI over the repositories in a directory, one request per
    /// connection; `v2: false` drops the client's `Git-Protocol` header, as a server speaking
    /// only the old protocol would. Records each POST's body.
    struct GitHttp {
        url: String,
        posts: Arc<Mutex<Vec<String>>>,
    }

    impl GitHttp {
        fn start(root: &Path, v2: bool) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let posts = Arc::new(Mutex::new(Vec::new()));
            let (root, seen) = (root.to_owned(), posts.clone());
            // Ends with the test binary; serves loopback only.
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let _ = serve(&root, client, v2, &seen);
                }
            });
            Self { url, posts }
        }
    }

    fn serve(
        root: &Path,
        mut client: std::net::TcpStream,
        v2: bool,
        posts: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut start = String::new();
        reader.read_line(&mut start)?;
        let mut words = start.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0_u8; length];
        reader.read_exact(&mut body)?;
        if method == "POST" {
            posts
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
        }
        let mut command = Command::new("git");
        command
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_LENGTH", length.to_string())
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(encoding) = header("content-encoding") {
            command.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if let (true, Some(protocol)) = (v2, header("git-protocol")) {
            command.env("GIT_PROTOCOL", protocol);
        }
        let mut child = command.spawn()?;
        child.stdin.take().unwrap().write_all(&body)?;
        let out = child.wait_with_output()?.stdout;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(out.len());
        let head = String::from_utf8_lossy(&out[..split]);
        let rest = out.get(split + 4..).unwrap_or_default();
        let mut status = "200 OK".to_owned();
        let mut response = String::new();
        for line in head.lines() {
            match line.strip_prefix("Status: ") {
                Some(s) => status = s.to_owned(),
                None => {
                    response.push_str(line);
                    response.push_str("\r\n");
                }
            }
        }
        let head = format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            rest.len()
        );
        client.write_all(head.as_bytes())?;
        client.write_all(rest)
    }
}
