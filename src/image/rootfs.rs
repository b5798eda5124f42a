//! Reads a rootfs tar once: its digest, size and installed Debian packages.

use std::collections::BTreeMap;
use std::io::Read;

use crate::hash::{Digest, Sha256Reader};

/// What one pass over a rootfs tar found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RootfsScan {
    /// SHA-256 of the whole tar, as the engine's layer diff id will be.
    pub(crate) digest: Digest,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Installed packages (`dpkg` status "install ok installed"): name → version.
    pub(crate) packages: BTreeMap<String, String>,
}

/// Hashes the tar and reads `var/lib/dpkg/status` from it, in a single pass.
pub(crate) fn scan_rootfs(tar: impl Read) -> std::io::Result<RootfsScan> {
    let mut reader = Sha256Reader::new(tar);
    let mut packages = BTreeMap::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?;
            let path = path.to_string_lossy();
            if path.trim_start_matches("./") == "var/lib/dpkg/status" {
                let mut status = String::new();
                entry.read_to_string(&mut status)?;
                packages = parse_dpkg_status(&status);
            }
        }
    }
    let (digest, size) = reader.finish()?;
    Ok(RootfsScan {
        digest,
        size,
        packages,
    })
}

/// Installed packages from a dpkg status file.
fn parse_dpkg_status(status: &str) -> BTreeMap<String, String> {
    let mut packages = BTreeMap::new();
    for paragraph in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in paragraph.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim() == "install ok installed";
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            packages.insert(name.to_owned(), version.to_owned());
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn finds_installed_packages_and_hashes_the_whole_tar() {
        let status = b"Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: golang-1.23-go\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.23.5-1~bpo12+1\n";
        let tar = tar_with(&[
            ("./etc/hostname", b"x\n"),
            ("./var/lib/dpkg/status", status),
        ]);
        let scan = scan_rootfs(&tar[..]).unwrap();
        assert_eq!(scan.digest, Digest::of(&tar));
        assert_eq!(scan.size, tar.len() as u64);
        assert_eq!(
            scan.packages.into_iter().collect::<Vec<_>>(),
            vec![
                ("bash".to_owned(), "5.2.15-2+b7".to_owned()),
                ("golang-1.23-go".to_owned(), "1.23.5-1~bpo12+1".to_owned())
            ]
        );
    }
}
