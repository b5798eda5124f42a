//! Third-party modules of the demo world (`kiln demo init --third-party`): what real k3s
//! requires from the public module proxy, in the shapes that trip tools up — a plain module, a
//! `/v3` module from a subdirectory of a multi-module repository, a pseudo-version and a
//! `+incompatible` version of a repository without go.mod. They are written as a GOPROXY
//! directory (`goproxy/` in the world) that a loopback HTTP server serves as the stand-in for
//! proxy.golang.org; there is no checksum-database stand-in, so the world's kiln.toml exempts
//! their paths from GOSUMDB (go.sum still pins what it lists).
//!
//! Upstream requires one of them too, as kubernetes' staging modules require hundreds: its
//! apimachinery imports `semver`, vendored under `vendor/` as kubernetes vendors, and the new
//! release raises it (v1.2.0 in v1.28.1, v1.3.0 in v1.28.2, v1.3.1 in v1.28.3), so k3s's
//! `go mod tidy` needs a version its old go.sum lacks.

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

/// The version of `semver` that upstream's v1.28.2 and later raise it to: served by the
/// stand-in, absent from the old k3s go.sum.
const RAISED: Module = Module {
    path: "github.com/kiln-demo/semver",
    version: "v1.3.0",
    package: "semver",
    legacy: false,
};

/// The version v1.28.3 raises `semver` to: a bump that moves one module only.
const RAISED_AGAIN: Module = Module {
    path: "github.com/kiln-demo/semver",
    version: "v1.3.1",
    package: "semver",
    legacy: false,
};

/// The `.info` time of every stand-in version (2023-08-01T12:00:00Z).
const TIME: i64 = 1_690_891_200;

/// A module version's files, as its zip holds them (go.mod unless legacy).
fn files(m: &Module) -> std::collections::BTreeMap<String, Vec<u8>> {
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
    files
}

fn versions() -> Vec<ModuleVersion> {
    MODULES
        .iter()
        .chain([&RAISED, &RAISED_AGAIN])
        .map(|m| ModuleVersion {
            module: m.path.to_owned(),
            version: m.version.to_owned(),
            time: TIME,
            files: files(m),
        })
        .collect()
}

/// A third-party module upstream vendors: path, version, package name and its vendored files
/// (the zip's minus go.mod, as `go mod vendor` copies packages only).
pub(crate) struct Vendored {
    pub(crate) path: &'static str,
    pub(crate) version: &'static str,
    pub(crate) package: &'static str,
    pub(crate) files: std::collections::BTreeMap<String, Vec<u8>>,
    /// Its go.sum lines (zip and go.mod), as kubernetes' go.sum files pin it.
    pub(crate) go_sum: String,
}

/// What upstream's apimachinery requires at release `tag`: `semver` v1.2.0 up to v1.28.1,
/// v1.3.0 in v1.28.2, v1.3.1 in v1.28.3.
pub(crate) fn upstream_requires(tag: &str) -> Vendored {
    let m = match tag {
        "v1.28.2" => &RAISED,
        "v1.28.3" => &RAISED_AGAIN,
        _ => &MODULES[0],
    };
    let mut files = files(m);
    let go_mod = files.remove("go.mod").unwrap_or_default();
    let zip = crate::gomod::zip_h1(m.path, m.version, &self::files(m));
    let go_sum = format!(
        "{p} {v} {zip}\n{p} {v}/go.mod {}\n",
        crate::gomod::go_mod_h1(&go_mod),
        p = m.path,
        v = m.version
    );
    Vendored {
        path: m.path,
        version: m.version,
        package: m.package,
        files,
        go_sum,
    }
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
    // Only what k3s requires: the version upstream raises to is not in the old go.sum.
    let required = requires();
    for m in served.iter().filter(|m| {
        required
            .iter()
            .any(|(p, v)| *p == m.module && *v == m.version)
    }) {
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
