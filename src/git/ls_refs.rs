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
//! - a local repository: `git upload-pack`, as git's local transport runs it;
//! - http(s): git's own remote helper (`git remote-https`), through its `stateless-connect`
//!   command, so proxies, certificates and credentials are git's, configured as the captain
//!   configured them.
//!
//! Anything else (ssh, `git://`, `file://`, a bundle), a server that does not speak protocol
//! v2 or `ls-refs`, or an answer not understood returns `Ok(None)`, and the caller lists with
//! `git ls-remote`. A remote that cannot be reached over http(s) at all (no such host or
//! repository, refused credentials) is an error here, with the helper's own words: listing
//! it again would only double the wait and ask the credential helpers twice.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{GitError, Location, NEUTRAL_DIR, RefList, remote_git, run};

/// The refs of `location` whose names start with one of `prefixes` (each under `refs/heads/`
/// or `refs/tags/`), by protocol v2; `Ok(None)` when git's own listing should answer instead
/// (see the module's documentation).
pub(super) fn list(location: &Location, prefixes: &[&str]) -> Result<Option<RefList>, GitError> {
    if let Some(path) = location.local_path() {
        // A bundle or a missing path: git's own listing says what it is. A local failure
        // costs nothing to ask again.
        return Ok(path.is_dir().then(|| local(path, prefixes)).flatten());
    }
    // The URL git would reach: the captain's `url.<base>.insteadOf` rules applied.
    let mut get_url = remote_git(Path::new(NEUTRAL_DIR));
    get_url.args([
        "ls-remote",
        "--get-url",
        "--end-of-options",
        location.as_str(),
    ]);
    let Ok(url) = run(get_url, Path::new(NEUTRAL_DIR)) else {
        return Ok(None);
    };
    let helper = if url.starts_with("https://") {
        "remote-https"
    } else if url.starts_with("http://") {
        "remote-http"
    } else {
        return Ok(None);
    };
    if url.chars().any(char::is_control) {
        return Ok(None);
    }
    over_helper(helper, &url, prefixes)
}

/// Lists the local repository at `path` through one `git upload-pack` speaking protocol v2:
/// its capabilities, one request, its answer, then the end of its input.
fn local(path: &Path, prefixes: &[&str]) -> Option<RefList> {
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    command
        .env("GIT_PROTOCOL", "version=2")
        .args(["upload-pack", "--end-of-options"])
        .arg(path);
    let mut child = Spawned::new(command)?;
    let mut reader = BufReader::new(child.stdout.take()?);
    let refs = ask(&mut reader, child.stdin()?, prefixes, false);
    child.close_stdin();
    std::io::copy(&mut reader, &mut std::io::sink()).ok()?;
    let succeeded = child.finish().is_ok();
    refs.filter(|_| succeeded)
}

/// Lists `url` through git's remote helper `helper` (`remote-http` or `remote-https`).
fn over_helper(helper: &str, url: &str, prefixes: &[&str]) -> Result<Option<RefList>, GitError> {
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    // The helper's first argument names the remote; an anonymous remote is named by its URL.
    command.arg(helper).arg(url).arg(url);
    let Some(mut child) = Spawned::new(command) else {
        return Ok(None);
    };
    let Some(mut reader) = child.stdout.take().map(BufReader::new) else {
        return Ok(None);
    };
    let connected = connect(&mut reader, &mut child);
    let refs = match connected {
        Connected::Yes => child
            .stdin()
            .and_then(|stdin| ask(&mut reader, stdin, prefixes, true)),
        Connected::NotSpoken => return Ok(None),
        // The helper ended before it answered: it could not reach the repository.
        Connected::Ended => None,
    };
    child.close_stdin();
    // Whatever the helper still says (nothing, as it ends) is drained so it never blocks.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    // A helper that failed before giving an answer could not reach the repository; one that
    // failed after it (on its way out) did give it.
    match (child.finish(), refs) {
        (Err(stderr), None) => Err(GitError::Failed {
            args: format!("{helper} {url} (listing its refs)"),
            dir: NEUTRAL_DIR.into(),
            stderr,
        }),
        (_, refs) => Ok(refs),
    }
}

/// How the helper answered `stateless-connect`.
enum Connected {
    /// Over protocol v2.
    Yes,
    /// It has no such command, or the server speaks only the old protocol (`fallback`).
    NotSpoken,
    /// It ended without an answer.
    Ended,
}

/// Asks the helper for its capabilities, then to connect to the server's upload-pack.
fn connect(reader: &mut impl BufRead, child: &mut Spawned) -> Connected {
    let mut stateless = false;
    let said = child
        .stdin()
        .is_some_and(|stdin| stdin.write_all(b"capabilities\n").is_ok());
    if !said {
        return Connected::Ended;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Connected::NotSpoken,
            Ok(_) => {}
        }
        match line.trim_end() {
            "" => break,
            capability => stateless |= capability == "stateless-connect",
        }
    }
    let asked = stateless
        && child.stdin().is_some_and(|stdin| {
            stdin
                .write_all(b"stateless-connect git-upload-pack\n")
                .is_ok()
        });
    if !asked {
        return Connected::NotSpoken;
    }
    // An empty line: connected over protocol v2; `fallback`: a server speaking only the old
    // protocol; nothing: the helper failed (no such host or repository, no credentials).
    let mut reply = String::new();
    match reader.read_line(&mut reply) {
        Ok(0) | Err(_) => Connected::Ended,
        Ok(_) if reply == "\n" => Connected::Yes,
        Ok(_) => Connected::NotSpoken,
    }
}

/// What a protocol v2 server advertised that a listing needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Advertised {
    ls_refs: bool,
    agent: bool,
    format: Option<String>,
}

/// Reads a protocol v2 capability advertisement up to its flush; `None` when it is not one.
fn read_advertisement(reader: &mut impl Read) -> Option<Advertised> {
    let mut advertised = Advertised::default();
    let mut first = true;
    loop {
        let line = match read_packet(reader)? {
            Packet::Data(line) => line,
            Packet::Flush if !first => return Some(advertised),
            _ => return None,
        };
        let line = std::str::from_utf8(&line).ok()?.trim_end();
        if std::mem::take(&mut first) {
            if line != "version 2" {
                return None;
            }
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match key {
            "ls-refs" => advertised.ls_refs = true,
            "agent" => advertised.agent = true,
            "object-format" => advertised.format = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// Reads the server's advertisement from `reader`, sends the `ls-refs` request for `prefixes`
/// on `writer` and reads the answer (see [`read_refs`]); `None` on anything not as asked.
fn ask(
    reader: &mut impl Read,
    writer: &mut impl Write,
    prefixes: &[&str],
    helper: bool,
) -> Option<RefList> {
    let advertised = read_advertisement(reader)?;
    if !advertised.ls_refs {
        return None;
    }
    writer.write_all(&request(prefixes, &advertised)).ok()?;
    writer.flush().ok()?;
    read_refs(reader, prefixes, helper)
}

/// An `ls-refs` request for `prefixes`: the object format the server named (none: SHA-1,
/// the default, which a server without the capability assumes), kiln's agent when the server
/// takes one.
fn request(prefixes: &[&str], advertised: &Advertised) -> Vec<u8> {
    let mut out = Vec::new();
    packet(&mut out, "command=ls-refs\n");
    if advertised.agent {
        packet(
            &mut out,
            &format!("agent=kiln/{}\n", env!("CARGO_PKG_VERSION")),
        );
    }
    if let Some(format) = &advertised.format {
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
#[derive(Debug, PartialEq, Eq)]
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
    if helper && read_packet(reader)? != Packet::ResponseEnd {
        return None;
    }
    Some(refs)
}

/// A child process talked to over its stdin and stdout; what it says on stderr is kept for
/// its error. Stopped and reaped when dropped early.
struct Spawned {
    child: Child,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Spawned {
    fn new(mut command: Command) -> Option<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take();
        // Read while it runs: a child blocked writing to a full pipe would never end.
        let stderr = child.stderr.take().and_then(|mut pipe| {
            std::thread::Builder::new()
                .name("kiln-git-stderr".into())
                .spawn(move || {
                    let mut text = String::new();
                    let _ = pipe.read_to_string(&mut text);
                    text
                })
                .ok()
        });
        Some(Self {
            child,
            stdout,
            stderr,
        })
    }

    fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits for the child; its stderr, trimmed, when it failed.
    fn finish(mut self) -> Result<(), String> {
        self.close_stdin();
        drop(self.stdout.take());
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(match stderr.trim() {
                "" => format!("it exited with {status}"),
                text => text.to_owned(),
            }),
            Err(error) => Err(error.to_string()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Reached early (an answer not understood): the child is told to end and reaped.
        // `git remote-https` runs the helper as its own child and stops it when it is itself
        // told to stop, which a SIGKILL would not let it do.
        drop(self.child.stdin.take());
        drop(self.stdout.take());
        if matches!(self.child.try_wait(), Ok(None))
            && let Ok(id) = i32::try_from(self.child.id())
            && let Some(pid) = rustix::process::Pid::from_raw(id)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
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
        let release = list(&location, &RELEASE)
            .unwrap()
            .expect("spoken over upload-pack");
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
        let every = list(&location, &ALL_REFS).unwrap().unwrap();
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
        assert_eq!(list(&url, &RELEASE).unwrap(), None);
        let by_git = remote_refs(&url, &RELEASE).unwrap();
        assert_eq!(by_git.refs, release);
        assert_eq!(by_git.prefixes, RELEASE.map(str::to_owned));

        // A missing repository: git's own error.
        let missing = Location::parse_in(
            &dir.path().join("nope.git").to_string_lossy(),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(list(&missing, &RELEASE).unwrap(), None);
        let error = remote_refs(&missing, &RELEASE).unwrap_err().to_string();
        assert!(error.contains("ls-remote"), "{error}");

        // A SHA-256 repository: the format its upload-pack names is asked for.
        let sha256 = dir.path().join("sha256.git");
        test_git(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "--object-format=sha256",
                "sha256.git",
            ],
        );
        let tree = test_git(&sha256, &["mktree"]);
        let commit = test_git(&sha256, &["commit-tree", "-m", "one", &tree]);
        test_git(&sha256, &["update-ref", "refs/tags/v1.28.2", &commit]);
        let location = Location::parse_in(&sha256.to_string_lossy(), Path::new("/")).unwrap();
        let listed = list(&location, &RELEASE)
            .unwrap()
            .expect("spoken in SHA-256");
        assert_eq!(listed["refs/tags/v1.28.2"], commit);
        assert_eq!(commit.len(), 64);
    }

    /// What is not an answer as asked is no listing (`None`, and git's own listing runs).
    #[test]
    fn answers_not_as_asked_are_no_listing() {
        let packets = |lines: &[&str]| -> Vec<u8> {
            let mut out = Vec::new();
            for line in lines {
                match *line {
                    "0000" | "0001" | "0002" => out.extend_from_slice(line.as_bytes()),
                    _ => packet(&mut out, line),
                }
            }
            out
        };
        let oid = "a".repeat(40);
        let tag = format!("{oid} refs/tags/v1.28.2\n");
        let advert = [
            "version 2\n",
            "agent=git/2.47\n",
            "ls-refs=unborn\n",
            "0000",
        ];
        let read = |bytes: Vec<u8>, helper| {
            let mut out = Vec::new();
            ask(&mut bytes.as_slice(), &mut out, &RELEASE, helper).map(|refs| (refs, out))
        };
        let good = [&advert[..], &[tag.as_str(), "0000", "0002"]].concat();
        let (refs, asked) = read(packets(&good), true).expect("an answer as asked");
        assert_eq!(refs.len(), 1);
        let asked = String::from_utf8(asked).unwrap();
        assert!(asked.starts_with("0014command=ls-refs\n"), "{asked}");
        assert!(asked.contains("agent=kiln/"), "{asked}");
        assert!(!asked.contains("object-format"), "none advertised: {asked}");
        assert!(
            asked.ends_with(
                "00010021ref-prefix refs/tags/v1.28.1\n0021ref-prefix refs/tags/v1.28.2\n0000"
            ),
            "{asked}"
        );
        // The response end a helper adds is required over a helper, and read as an error
        // where none is sent.
        assert!(read(packets(&good[..good.len() - 1]), true).is_none());
        assert!(read(packets(&good), false).is_some());
        let bad: [&[&str]; 6] = [
            // No ls-refs advertised.
            &[
                "version 2\n",
                "fetch=shallow\n",
                "0000",
                tag.as_str(),
                "0000",
            ],
            // Not protocol v2.
            &["version 1\n", "ls-refs\n", "0000", tag.as_str(), "0000"],
            // An error packet.
            &[&advert[..], &["ERR access denied\n", "0000"]].concat(),
            // A line that is not OID SP NAME.
            &[&advert[..], &["refs/tags/v1.28.2\n", "0000"]].concat(),
            // Cut short.
            &[&advert[..], &[tag.as_str()]].concat(),
            // A delimiter where the answer should end.
            &[&advert[..], &[tag.as_str(), "0001"]].concat(),
        ];
        for lines in bad {
            assert!(read(packets(lines), false).is_none(), "{lines:?}");
        }
        // A server that ignores the prefixes: only what was asked is kept.
        let other = format!("{oid} refs/tags/v1.29.0\n");
        let pull = format!("{oid} refs/pull/1/head\n");
        let wide = [
            &advert[..],
            &[tag.as_str(), other.as_str(), pull.as_str(), "0000"],
        ]
        .concat();
        let (refs, _) = read(packets(&wide), false).unwrap();
        assert_eq!(refs.keys().collect::<Vec<_>>(), ["refs/tags/v1.28.2"]);
    }

    #[test]
    fn an_http_remote_is_listed_through_git_s_own_helper_and_sends_only_the_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let bare = remote(dir.path());
        let server = GitHttp::start(dir.path(), true);
        let location =
            Location::parse_in(&format!("{}/remote.git", server.url), Path::new("/")).unwrap();
        let release = list(&location, &RELEASE)
            .unwrap()
            .expect("spoken through remote-http");
        assert_eq!(release, expected(&bare, &RELEASE));
        let asked = server.posts.lock().unwrap().join("\n");
        assert!(
            asked.contains("command=ls-refs") && asked.contains("ref-prefix refs/tags/v1.28.2\n"),
            "the remote is asked for the prefixes: {asked}"
        );
        assert_eq!(
            list(&location, &ALL_REFS).unwrap().unwrap(),
            expected(&bare, &ALL_REFS)
        );

        // A server speaking only the old protocol: git lists it, cut down to the prefixes.
        let old = GitHttp::start(dir.path(), false);
        let location =
            Location::parse_in(&format!("{}/remote.git", old.url), Path::new("/")).unwrap();
        assert_eq!(list(&location, &RELEASE).unwrap(), None);
        assert_eq!(remote_refs(&location, &RELEASE).unwrap().refs, release);

        // A repository the server does not have: the helper's own error, asked once (not
        // again by git's listing).
        let missing =
            Location::parse_in(&format!("{}/nope.git", server.url), Path::new("/")).unwrap();
        let error = remote_refs(&missing, &RELEASE).unwrap_err().to_string();
        assert!(error.contains("not found"), "{error}");
        assert!(error.contains("/nope.git"), "{error}");
        let asked = server.requests.lock().unwrap().clone();
        assert_eq!(
            asked.iter().filter(|r| r.contains("/nope.git")).count(),
            1,
            "{asked:?}"
        );
    }

    /// `git http-backend` as CGI over the repositories in a directory, one request per
    /// connection; `v2: false` drops the client's `Git-Protocol` header, as a server speaking
    /// only the old protocol would. Records each POST's body.
    struct GitHttp {
        url: String,
        posts: Arc<Mutex<Vec<String>>>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl GitHttp {
        fn start(root: &Path, v2: bool) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let posts = Arc::new(Mutex::new(Vec::new()));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (root, seen, asked) = (root.to_owned(), posts.clone(), requests.clone());
            // Ends with the test binary; serves loopback only.
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let _ = serve(&root, client, v2, &seen, &asked);
                }
            });
            Self {
                url,
                posts,
                requests,
            }
        }
    }

    fn serve(
        root: &Path,
        mut client: std::net::TcpStream,
        v2: bool,
        posts: &Mutex<Vec<String>>,
        requests: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut start = String::new();
        reader.read_line(&mut start)?;
        requests.lock().unwrap().push(start.trim_end().to_owned());
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
