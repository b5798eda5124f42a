//! Third-party modules of the demo world (`kiln demo init --third-party`): what real k3s
//! requires from the public module proxy, in the shapes that trip tools up — a plain module, a
//! `/v3` module from a subdirectory of a multi-module repository, a pseudo-version and a
//! `+incompatible` version of a repository without go.mod. They are written as a GOPROXY
//! directory (`goproxy/` in the world) that a loopback HTTP server serves as the stand-in for
//! proxy.golang.org; there is no checksum-database stand-in, so the world's kiln.toml exempts
//! their paths from GOSUMDB (go.sum still pins what it lists).

use std::fmt::Write as _;
use std::path::Path;

use crate::gomod::{GoModError, ModuleVersion, ProxyModule, write_proxy};

/// The path prefix of every stand-in module (what kiln.toml exempts from GOSUMDB).
pub(crate) const PREFIX: &str = "github.com/kiln-demo";

/// One third-party module version k3s requires: path, version, package name, Go source.
struct Module {
    path: &'static str,
    version: &'static str,
    package: &'static str,
    /// Without go.mod (a `+incompatible` version).
    legacy: bool,
}

const MODULES: [Module; 4] = [
    Module {
        path: "github.com/kiln-demo/semver",
        version: "v1.2.0",
        package: "semver",
        legacy: false,
    },
    Module {
        path: "github.com/kiln-demo/store/api/v3",
        version: "v3.5.9",
        package: "api",
        legacy: false,
    },
    Module {
        path: "github.com/kiln-demo/pseudo",
        version: "v0.0.0-20230801120000-0123456789ab",
        package: "pseudo",
        legacy: false,
    },
    Module {
        path: "github.com/kiln-demo/legacy",
        version: "v2.1.0+incompatible",
        package: "legacy",
        legacy: true,
    },
];

/// The `.info` time of every stand-in version (2023-08-01T12:00:00Z).
const TIME: i64 = 1_690_891_200;

fn versions() -> Vec<ModuleVersion> {
    MODULES
        .iter()
        .map(|m| {
            let mut files = std::collections::BTreeMap::new();
            if !m.legacy {
                files.insert(
                    "go.mod".to_owned(),
                    format!("module {}\n\ngo 1.20\n", m.path).into_bytes(),
                );
            }
            files.insert(
                format!("{}.go", m.package),
                format!(
                    "// Package {p} is a third-party module of the kiln demo world.\npackage {p}\n\n\
                     // Version is the version this copy was published as.\nconst Version = \"{v}\"\n",
                    p = m.package,
                    v = m.version
                )
                .into_bytes(),
            );
            ModuleVersion {
                module: m.path.to_owned(),
                version: m.version.to_owned(),
                time: TIME,
                files,
            }
        })
        .collect()
}

/// Writes the stand-in proxy's tree into `dir`; returns what it serves, with its sums.
pub(crate) fn write_goproxy(dir: &Path) -> Result<Vec<ProxyModule>, GoModError> {
    write_proxy(dir, &versions())
}

/// The `require` lines k3s's go.mod gains.
pub(crate) fn requires() -> Vec<(String, String)> {
    MODULES
        .iter()
        .map(|m| (m.path.to_owned(), m.version.to_owned()))
        .collect()
}

/// k3s's go.sum lines for them (what a real go.sum pins: the zip and the go.mod).
pub(crate) fn go_sum(served: &[ProxyModule]) -> String {
    let mut out = String::new();
    for m in served {
        let _ = writeln!(out, "{} {} {}", m.module, m.version, m.h1);
        let _ = writeln!(out, "{} {}/go.mod {}", m.module, m.version, m.go_mod_h1);
    }
    out
}

/// A k3s package that uses every one of them, so the build needs each module's zip.
pub(crate) fn k3s_package() -> String {
    let mut out = String::from(
        "// Package thirdparty records the third-party modules k3s builds on.\npackage thirdparty\n\nimport (\n",
    );
    let mut paths: Vec<&str> = MODULES.iter().map(|m| m.path).collect();
    paths.sort_unstable();
    for path in paths {
        let _ = writeln!(out, "\t\"{path}\"");
    }
    out.push_str(")\n\n// Versions lists the version of each.\nfunc Versions() []string {\n\treturn []string{\n");
    for m in &MODULES {
        let _ = writeln!(out, "\t\t{}.Version,", m.package);
    }
    out.push_str("\t}\n}\n");
    out
}
