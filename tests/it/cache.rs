//! The shared cache in a real registry (Debian's `docker-registry`): captains sharing a
//! release, and everything a reader must refuse.

use crate::common::TimedOutput as _;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::Path;

use kiln::cache::{Lookup, PublicKey, RemoteCache, SecretKey, SignedRecord, keygen};
use kiln::hash::{Derivation, Digest, InputRef};
use kiln::store::{LocalStore, OutputRef, Record};

use crate::common::{self, Registry, World, docker_or_skip, kiln_counting_containers, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

fn new_key(dir: &Path, name: &str) -> (SecretKey, PublicKey) {
    let path = dir.join(name);
    let public = keygen(&path).unwrap();
    (SecretKey::read(&path).unwrap(), public)
}

/// A record of a made-up step whose outputs are `contents`, stored in `store`.
fn record(store: &LocalStore, name: &str, contents: &[&[u8]]) -> Record {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = BTreeMap::new();
    for (i, bytes) in contents.iter().enumerate() {
        let path = dir.path().join(format!("o{i}"));
        std::fs::write(&path, bytes).unwrap();
        let (digest, size) = store.put_file_sync(&path).unwrap();
        outputs.insert(
            format!("out{i}"),
            OutputRef {
                digest,
                size,
                tree: false,
            },
        );
    }
    let derivation = Derivation {
        kind: "exec".into(),
        schema: 1,
        image: Digest::of(b"test image"),
        argv: vec!["true".into()],
        env: BTreeMap::new(),
        inputs: BTreeMap::from([("name".into(), InputRef::Value { value: name.into() })]),
        outputs: outputs.keys().cloned().collect(),
        network: None,
    };
    let record = Record::new(name, derivation, outputs);
    store.put_record_sync(&record).unwrap();
    record
}

/// A fresh store: whether it ends up holding anything tells what a lookup stored.
fn fresh() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    (dir, store)
}

fn stored_anything(store: &LocalStore) -> bool {
    let count = |sub: &str| walk(&store.root().join(sub));
    count("records") + count("blobs") > 0
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

async fn rejected(reader: &RemoteCache, key: &kiln::hash::StepKey) -> String {
    let (_dir, store) = fresh();
    let lookup = reader.fetch(key, &store).await.unwrap();
    assert!(
        !stored_anything(&store),
        "a rejected lookup stored something"
    );
    match lookup {
        Lookup::Rejected(why) => why,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reader_refuses_tampered_unsigned_untrusted_and_replayed_records() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (secret_a, public_a) = new_key(keys.path(), "a.key");
    let (secret_b, public_b) = new_key(keys.path(), "b.key");
    let (_dir, local) = fresh();
    let repo = "kiln/cache";
    let url = registry.url(repo);
    let writer = RemoteCache::new(&url, vec![], Some(secret_a)).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r1 = record(&local, "one", &[&big, b"second output"]);
    writer.publish(&r1, &local).await.unwrap();
    let reader = RemoteCache::new(&url, vec![public_a], None).unwrap();

    // The positive control: a trusted, intact record arrives with its outputs.
    let (_d, store) = fresh();
    match reader.fetch(&r1.key, &store).await.unwrap() {
        Lookup::Hit(record) => assert_eq!(*record, r1),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.record_sync(&r1.key).unwrap(), Some(r1.clone()));
    for output in r1.outputs.values() {
        assert_eq!(
            store.read_sync(&output.digest).unwrap().unwrap().len() as u64,
            output.size
        );
    }
    // A key nobody published is a plain miss.
    let (_d, store) = fresh();
    let nobody = record(&store, "nobody", &[b"x"]).key;
    let (_d, store) = fresh();
    assert!(matches!(
        reader.fetch(&nobody, &store).await.unwrap(),
        Lookup::Miss
    ));

    // A truncated blob download.
    let out0 = r1.outputs["out0"].digest.to_string();
    let file = registry.blob_file(&out0);
    let original = std::fs::read(&file).unwrap();
    std::fs::write(&file, &original[..original.len() / 2]).unwrap();
    let why = rejected(&reader, &r1.key).await;
    assert!(why.contains("out0"), "{why}");
    // Wrong bytes of the right length.
    let mut flipped = original.clone();
    flipped[1234] ^= 0xff;
    std::fs::write(&file, &flipped).unwrap();
    let why = rejected(&reader, &r1.key).await;
    assert!(why.contains("out0"), "{why}");
    std::fs::write(&file, &original).unwrap();
    // A manifest whose layer for out0 names another blob.
    let tag = r1.key.hex();
    let manifest_digest = registry.tag_target(repo, &tag);
    let manifest = std::fs::read_to_string(registry.blob_file(&manifest_digest)).unwrap();
    let out1 = r1.outputs["out1"].digest.to_string();
    let forged = manifest.replacen(&out0, &out1, 1);
    assert_ne!(forged, manifest);
    registry.put_manifest(repo, &tag, forged.as_bytes());
    let why = rejected(&reader, &r1.key).await;
    assert!(why.contains("out0") && why.contains(&out1), "{why}");
    registry.put_manifest(repo, &tag, manifest.as_bytes());
    let (_d, store) = fresh();
    assert!(matches!(
        reader.fetch(&r1.key, &store).await.unwrap(),
        Lookup::Hit(_)
    ));

    // An unsigned record.
    let r2 = record(&local, "two", &[b"two"]);
    writer
        .publish_signed(SignedRecord::new(r2.clone(), None), &local)
        .await
        .unwrap();
    let why = rejected(&reader, &r2.key).await;
    assert!(why.contains("unsigned"), "{why}");
    // A record signed by a key the reader does not trust, naming the key.
    let r3 = record(&local, "three", &[b"three"]);
    writer
        .publish_signed(SignedRecord::new(r3.clone(), Some(&secret_b)), &local)
        .await
        .unwrap();
    let why = rejected(&reader, &r3.key).await;
    assert!(why.contains(&format!("untrusted key {public_b}")), "{why}");
    // A valid record replayed under another step's key.
    let r4 = record(&local, "four", &[b"four"]);
    Registry::copy_dir(
        &registry.tag_dir(repo, &tag),
        &registry.tag_dir(repo, &r4.key.hex()),
    );
    let why = rejected(&reader, &r4.key).await;
    assert!(why.contains("is the record of step"), "{why}");

    // The registry gone: an error the layered store turns into a local build, and no more
    // calls for the rest of the run.
    registry.stop();
    let (_d, store) = fresh();
    let error = reader.fetch(&r1.key, &store).await.unwrap_err();
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert!(reader.is_down());
    assert!(matches!(
        reader.fetch(&r1.key, &store).await.unwrap(),
        Lookup::Miss
    ));
}

#[tokio::test]
async fn captain_b_reuses_captain_a_s_signed_release_without_running_a_step() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let url = registry.url("k3s/kiln-cache");
    let a = World::new();
    let key = a.dir.path().join("captain-a.key");
    let output = common::kiln()
        .args(["cache", "keygen"])
        .arg(&key)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let public = text(&output).0.trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");

    let output = a.kiln(&[
        "release",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--cache",
        &url,
        "--signing-key",
        key.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output).1);
    let lock_a = std::fs::read(a.path().join(LOCK)).unwrap();
    // Only a run with a signing key writes to the shared cache: B, C and D have none.
    let written_by_a = registry.storage();
    assert!(!written_by_a.is_empty());

    // Captain B: a fresh store, trusting A: nothing runs, the same lockfile.
    let b = World::new();
    let (output, created) = kiln_counting_containers(
        &docker,
        &b,
        &[
            "release", "--old", "v1.28.1", "--new", "v1.28.2", "--cache", &url, "--trust", &public,
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(created, 0, "a step ran although the cache had it");
    assert_eq!(
        text(&output)
            .0
            .lines()
            .filter(|l| l.contains(" cached "))
            .count(),
        8,
        "{}",
        text(&output).0
    );
    assert_eq!(std::fs::read(b.path().join(LOCK)).unwrap(), lock_a);

    // Captain D names the cache and A's key in kiln.toml instead of flags.
    let d = World::new();
    let toml = d.path().join("kiln.toml");
    let mut config = std::fs::read_to_string(&toml).unwrap();
    let _ = write!(
        config,
        "\n[cache]\nurl = \"{url}\"\ntrusted-keys = [\"{public}\"]\n"
    );
    std::fs::write(&toml, config).unwrap();
    let (output, created) = kiln_counting_containers(
        &docker,
        &d,
        &["release", "--old", "v1.28.1", "--new", "v1.28.2"],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(created, 0, "kiln.toml's [cache] was not used");
    assert_eq!(std::fs::read(d.path().join(LOCK)).unwrap(), lock_a);

    // Captain C trusts nobody: every record is ignored with a warning naming A's key, and C
    // builds the same release locally.
    let c = World::new();
    let (output, created) = kiln_counting_containers(
        &docker,
        &c,
        &[
            "release", "--old", "v1.28.1", "--new", "v1.28.2", "--cache", &url,
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(created, 6);
    assert!(
        text(&output).1.contains(&format!("untrusted key {public}")),
        "{}",
        text(&output).1
    );
    assert_eq!(std::fs::read(c.path().join(LOCK)).unwrap(), lock_a);
    assert_eq!(
        registry.storage(),
        written_by_a,
        "a run without a signing key wrote to the shared cache"
    );
}

#[tokio::test]
async fn a_registry_stopped_mid_run_leaves_a_complete_local_release() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let world = World::new();
    let key = world.dir.path().join("ci.key");
    keygen(&key).unwrap();
    let mut child = common::kiln()
        .current_dir(world.path())
        .arg("--store")
        .arg(world.store())
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .arg("--cache")
        .arg(registry.url("kiln-cache"))
        .arg("--signing-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut stopped = false;
    for line in stderr.lines() {
        let line = line.unwrap();
        if !stopped && line.contains("rebase: done") {
            registry.stop();
            stopped = true;
        }
        said.push_str(&line);
        said.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(stopped, "{said}");
    assert!(status.success(), "{said}");
    assert!(said.contains("shared cache"), "{said}");
    // The same lockfile as a release that never saw a cache.
    let plain = World::new();
    plain.release("v1.28.2", &[]);
    assert_eq!(
        std::fs::read_to_string(world.path().join(LOCK)).unwrap(),
        std::fs::read_to_string(plain.path().join(LOCK)).unwrap()
    );
}

/// A loopback proxy in front of a registry that closes every blob download after `cut` body
/// bytes (one request per connection), counting the blob requests it cut.
struct CuttingProxy {
    addr: String,
    cut_blobs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: &str, cut: usize) -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut_blobs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = cut_blobs.clone();
        let upstream = upstream.to_owned();
        // The thread ends with the test binary; it only ever serves loopback connections.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let upstream = upstream.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    // The request head (GET and HEAD have no body), with `Connection: close`
                    // so that each connection carries one request.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut lines: Vec<&str> = text
                        .split("\r\n")
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .filter(|l| !l.is_empty())
                        .collect();
                    lines.push("Connection: close");
                    let request = format!("{}\r\n\r\n", lines.join("\r\n"));
                    let is_blob = text.starts_with("GET ") && text.contains("/blobs/");
                    let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    if server.write_all(request.as_bytes()).is_err() {
                        return;
                    }
                    let mut response = Vec::new();
                    let _ = server.read_to_end(&mut response);
                    if is_blob {
                        let body = response
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(response.len(), |p| p + 4);
                        if response.len() > body + cut {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            response.truncate(body + cut);
                        }
                    }
                    let _ = client.write_all(&response);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { addr, cut_blobs }
    }
}

/// Row 8: the connection closes in the middle of an output's body. The reader tries a bounded
/// number of times with a pause, then rejects the record naming the output; nothing reaches
/// the store (no record, no blob, nothing left in `tmp/`). The same record read directly is a
/// hit: it was the transfer, not the record.
#[tokio::test]
async fn a_download_cut_mid_body_is_retried_a_bounded_number_of_times_then_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = new_key(keys.path(), "ci.key");
    let (_dir, local) = fresh();
    let repo = "kiln/cut";
    let writer = RemoteCache::new(&registry.url(repo), vec![], Some(secret)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let published = record(&local, "cut", &[&big]);
    writer.publish(&published, &local).await.unwrap();

    let proxy = CuttingProxy::start(&registry.addr, 100_000);
    let reader =
        RemoteCache::new(&format!("oci://{}/{repo}", proxy.addr), vec![public], None).unwrap();
    let (dir, store) = fresh();
    let started = std::time::Instant::now();
    let why = match reader.fetch(&published.key, &store).await.unwrap() {
        Lookup::Rejected(why) => why,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(why.contains("output out0"), "{why}");
    assert!(why.contains("3 attempts"), "{why}");
    // The small record layer passes; the 300 kB output is cut on each of the three attempts.
    assert_eq!(
        proxy.cut_blobs.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "{why}"
    );
    // With pauses between attempts (0.2 s, then 0.8 s).
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(!stored_anything(&store), "a cut download stored something");
    assert_eq!(walk(&store.root().join("tmp")), 0, "tmp/ holds leftovers");
    drop(dir);

    // The control: read without the proxy, the same record is a hit.
    let direct = RemoteCache::new(&registry.url(repo), vec![public], None).unwrap();
    let (_d, store) = fresh();
    assert!(matches!(
        direct.fetch(&published.key, &store).await.unwrap(),
        Lookup::Hit(_)
    ));
}

/// A tar whose one regular entry is named `name` as given: raw in the ustar header when it
/// fits (tar's own `set_path` refuses `..` and absolute names), else in a PAX `path` record.
fn hostile_tar(name: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    if name.len() < 100 && !name.contains(&0) {
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
    } else {
        builder.append_pax_extensions([("path", name)]).unwrap();
        header.set_path("placeholder").unwrap();
    }
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    builder.into_inner().unwrap()
}

/// Row 20: hostile archives that reach a captain through the shared cache — a signed record
/// (a trusted key: the signer was compromised) whose tree output is an archive with `../x`,
/// `/abs/x`, a NUL byte or an over-long name. The blob matches its digest, so the download
/// stores it; `kiln run --out` then refuses it before writing any entry, naming the entry, and
/// nothing appears outside the export directory.
#[tokio::test]
async fn hostile_archives_in_signed_cache_records_are_refused_naming_the_entry() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let id = common::unique();
    let ws = common::Workspace::new();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "t-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "mkdir -p tree && echo ok > tree/a"]
outputs = ["tree/"]
"#
    ));
    // The step once, for real: its record gives the derivation the forged records sign.
    let report = ws.run_json();
    let key: kiln::hash::StepKey = report["steps"][0]["key"].as_str().unwrap().parse().unwrap();
    let honest = LocalStore::open(&ws.store()).unwrap();
    let honest = honest.record_sync(&key).unwrap().unwrap();
    let (_, public) = new_key(ws.path(), "signer.key");

    let abs_dir = std::env::temp_dir().join(format!("kiln-row20-{id}"));
    let abs_target = abs_dir.join("x");
    let long_name = "n".repeat(300);
    let cases: [(Vec<u8>, String); 4] = [
        (hostile_tar(b"../row20-escape"), "row20-escape".into()),
        (
            hostile_tar(abs_target.to_str().unwrap().as_bytes()),
            format!("kiln-row20-{id}"),
        ),
        (hostile_tar(b"a\0b"), "NUL byte".into()),
        (hostile_tar(long_name.as_bytes()), "300 bytes".into()),
    ];
    for (i, (archive, said)) in cases.iter().enumerate() {
        // The forger's store: the hostile blob and a record naming it, signed and published.
        let (_forger_dir, forging_store) = fresh();
        let blob = ws.path().join(format!("hostile-{i}.tar"));
        std::fs::write(&blob, archive).unwrap();
        let (digest, size) = forging_store.put_file_sync(&blob).unwrap();
        let mut outputs = honest.outputs.clone();
        outputs.insert(
            "tree/".into(),
            OutputRef {
                digest,
                size,
                tree: true,
            },
        );
        let forged = Record::new(&honest.name, honest.derivation.clone(), outputs);
        forging_store.put_record_sync(&forged).unwrap();
        let url = registry.url(&format!("k3s/row20-{i}"));
        let secret = SecretKey::read(&ws.path().join("signer.key")).unwrap();
        let writer = RemoteCache::new(&url, vec![], Some(secret)).unwrap();
        writer.publish(&forged, &forging_store).await.unwrap();

        // A captain with a fresh store who trusts that key.
        let captain = tempfile::tempdir().unwrap();
        let out = captain.path().join("out");
        let marker = std::time::SystemTime::now();
        let output = common::kiln()
            .current_dir(ws.path())
            .arg("--store")
            .arg(captain.path().join("store"))
            .args(["run", "--file", "plan.toml", "--out"])
            .arg(&out)
            .args(["--cache", &url, "--trust", &public.to_string()])
            .timed_output()
            .unwrap();
        let stderr = text(&output).1;
        assert!(!output.status.success(), "case {i} was unpacked:\n{stderr}");
        assert!(
            stderr.contains(said.as_str()),
            "case {i}: the error does not name the entry ({said}):\n{stderr}"
        );
        // Nothing of the archive was written: not in the export directory, not beside it, not
        // at the absolute path.
        let exported = out.join(format!("t-{id}")).join("tree");
        assert_eq!(
            std::fs::read_dir(&exported).map_or(0, Iterator::count),
            0,
            "case {i} wrote into the export directory"
        );
        assert!(!captain.path().join("row20-escape").exists());
        assert!(!out.join(format!("t-{id}")).join("row20-escape").exists());
        assert!(!abs_dir.exists(), "case {i} wrote {}", abs_target.display());
        let newer: Vec<_> = walk_files(ws.path())
            .into_iter()
            .filter(|p| {
                std::fs::symlink_metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > marker)
            })
            .collect();
        assert!(newer.is_empty(), "case {i} wrote {newer:?}");
    }
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .flatten()
                .flat_map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk_files(&e.path())
                    } else {
                        vec![e.path()]
                    }
                })
                .collect()
        },
    )
}
