use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{ClientVersion, Docker};

use super::SandboxError;

/// Docker's usual socket: the engine kiln names when `DOCKER_HOST` is unset and no engine
/// socket it knows of exists.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Oldest engine API kiln uses (Docker Engine 20.10, as Debian 12 ships it).
const MIN_API: (usize, usize) = (1, 41);

/// How long kiln waits for an engine to answer its first request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-request timeout of the client, in seconds, unless `KILN_ENGINE_REQUEST_TIMEOUT` says
/// otherwise. It bounds how long one request waits for the engine's answer to begin (an image
/// import, a tar of inputs to a remote engine), never a step: a step's output and exit are read
/// from streams whose answer began when the step started, so an hour-long tag.sh is never cut.
const REQUEST_TIMEOUT_SECS: u64 = 3600;

/// The per-request timeout: `KILN_ENGINE_REQUEST_TIMEOUT` (whole seconds, at least 1) or
/// [`REQUEST_TIMEOUT_SECS`].
fn request_timeout() -> Result<u64, SandboxError> {
    match std::env::var("KILN_ENGINE_REQUEST_TIMEOUT") {
        Ok(value) if !value.is_empty() => value
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or(SandboxError::BadRequestTimeout { value }),
        _ => Ok(REQUEST_TIMEOUT_SECS),
    }
}

/// A connection to a Docker-compatible engine whose API version was negotiated.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
    host: String,
    /// What the client connects to: `host`, or the local end of an ssh forwarder.
    endpoint: String,
    /// The forwarder of an `ssh://` engine, stopped when the last clone goes.
    tunnel: Option<std::sync::Arc<super::ssh::Tunnel>>,
    version: (usize, usize),
    /// The per-request timeout, in seconds.
    timeout: u64,
    info: EngineInfo,
    /// Who owns the engine's unix socket: a rootless engine's is its user's.
    socket_owner: Option<u32>,
}

/// What the engine said about itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct EngineInfo {
    /// The address kiln used (`unix://…`, `tcp://…`, `ssh://…`).
    pub(crate) host: String,
    /// The negotiated API version, e.g. `1.41`.
    pub(crate) api_version: String,
    /// The engine's product version, e.g. `20.10.24+dfsg1`.
    pub(crate) server_version: String,
    /// Which engine answered.
    pub(crate) kind: EngineKind,
    /// The engine's product name (`Docker Engine - Community`, `Podman Engine`, …).
    pub(crate) product: String,
    /// Operating system and architecture of the engine host.
    pub(crate) platform: String,
}

/// The engines kiln knows apart: both serve the Docker API, and differ where kiln must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EngineKind {
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

impl EngineKind {
    /// The kind named by the components an engine's `/version` lists: Podman lists
    /// `Podman Engine`, Docker `Engine`.
    fn of(components: &[String]) -> Self {
        if components.iter().any(|n| n.contains("Podman")) {
            Self::Podman
        } else {
            Self::Docker
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Docker => "Docker",
            Self::Podman => "Podman",
        })
    }
}

/// The engine to use when `DOCKER_HOST` is unset: the first of these sockets that `exists`,
/// else Docker's usual one (whose absence the connection error then names).
fn default_host(runtime_dir: Option<&Path>, exists: impl Fn(&Path) -> bool) -> String {
    let mut candidates = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(dir) = runtime_dir {
        candidates.push(dir.join("podman/podman.sock"));
    }
    candidates.push(PathBuf::from("/run/podman/podman.sock"));
    candidates.into_iter().find(|p| exists(p)).map_or_else(
        || DEFAULT_HOST.to_owned(),
        |p| format!("unix://{}", p.display()),
    )
}

/// How an engine runs containers (its `/info`), and the limits kiln knows of for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct HostFacts {
    /// Whether the engine runs without root (`name=rootless` among its security options).
    pub(crate) rootless: bool,
    /// `1` or `2` (empty when the engine does not say).
    pub(crate) cgroup_version: String,
    /// The OCI runtime containers start with (`runc`, `crun`).
    pub(crate) runtime: String,
    /// The storage driver (`overlay2`, `overlay`, `vfs`).
    pub(crate) storage: String,
    /// What this engine does differently from the contract kiln's steps expect, each with
    /// what to do about it.
    pub(crate) limits: Vec<String>,
}

impl HostFacts {
    /// What doctor reports when the engine's `/info` cannot be read (or parsed: a newer
    /// engine may say what this client does not know).
    pub(crate) fn unknown(why: &SandboxError) -> Self {
        Self {
            rootless: false,
            cgroup_version: String::new(),
            runtime: "?".into(),
            storage: "?".into(),
            limits: vec![format!("the engine's /info could not be read: {why}")],
        }
    }

    /// The known limit that explains a failed isolation check named `check`, if one does.
    pub(crate) fn limit_for(&self, check: &str) -> Option<&str> {
        let prefix = match check {
            "pids" | "rlimits" => ROOTLESS_V1,
            _ => return None,
        };
        self.limits
            .iter()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
    }
}

/// How the limit of a rootless engine on cgroup v1 begins.
const ROOTLESS_V1: &str = "rootless on cgroup v1";

/// The limits kiln knows of for an engine of `kind` running as `facts` say.
fn known_limits(kind: EngineKind, facts: &HostFacts) -> Vec<String> {
    let mut limits = Vec::new();
    if facts.rootless && facts.cgroup_version == "1" {
        limits.push(format!(
            "{ROOTLESS_V1}: the engine drops a step's resource limits (memory, processes, \
             open files), so `[steps] memory` and the pids and rlimits checks do not hold; \
             boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) or run the engine as root"
        ));
    }
    if facts.runtime == "crun" && facts.cgroup_version == "1" {
        limits.push(
            "crun on cgroup v1: crun refuses a host that mounts cgroup v2 beside v1 (\"cgroups \
             in hybrid mode not supported\"); if steps fail so, set `runtime = \"runc\"` in \
             containers.conf's [engine]"
                .to_owned(),
        );
    }
    if facts.rootless && kind == EngineKind::Docker {
        limits.push(
            "rootless Docker: a step runs as a uid the engine maps to one of your sub-uids, \
             so it cannot write the trees kiln lends it; use rootless Podman (steps keep your \
             id) or a rootful engine"
                .to_owned(),
        );
    }
    if facts.rootless && kind == EngineKind::Podman {
        limits.push(
            "rootless Podman 4.3: two containers created at once with `keep-id` can find no \
             sub-ids or crash the service (libsubid is not thread-safe); one kiln takes turns, \
             so run one kiln at a time against a rootless service"
                .to_owned(),
        );
    }
    if kind == EngineKind::Podman {
        limits.push(
            "Podman: a container's default open-file and process limits (containers.conf \
             `default_ulimits`, else a million) may exceed the engine's own hard limits on a \
             sandboxed machine, and every container then fails in `runc create` (\"error \
             setting rlimit\"); set `default_ulimits` lower there (kiln names no limit \
             itself, which would make Podman ignore that setting)"
                .to_owned(),
        );
        limits.push(
            "Podman: a service started without `--time=0` exits after 5 s idle, between \
             steps; start it as `podman system service --time=0 unix://…`"
                .to_owned(),
        );
        limits.push(
            "Podman: short image names are qualified (`localhost/…`, `docker.io/…`); kiln finds \
             its images by full name and labels, other tools may not"
                .to_owned(),
        );
    }
    limits
}

impl Engine {
    /// Connects to `DOCKER_HOST` (or, without it, the first engine socket that exists of
    /// Docker's, a rootless Podman's and the system Podman's; else
    /// [`DEFAULT_HOST`]) and negotiates the API version.
    pub async fn connect() -> Result<Self, SandboxError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| {
                let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
                default_host(runtime_dir.as_deref(), Path::exists)
            });
        Self::connect_to(&host).await
    }

    /// Connects to `host` and negotiates the API version.
    pub(crate) async fn connect_to(host: &str) -> Result<Self, SandboxError> {
        let tunnel = if host.starts_with("ssh://") {
            let target = super::ssh::SshTarget::parse(host)?;
            Some(std::sync::Arc::new(
                super::ssh::Tunnel::open(host, &target).await?,
            ))
        } else {
            None
        };
        let endpoint = tunnel
            .as_ref()
            .map_or_else(|| host.to_owned(), |t| t.endpoint());
        let timeout = request_timeout()?;
        let client =
            raw_client(&endpoint, timeout, bollard::API_DEFAULT_VERSION).map_err(|source| {
                if matches!(source, bollard::errors::Error::SocketNotFoundError(_)) {
                    SandboxError::NoEngine {
                        host: host.to_owned(),
                        source,
                    }
                } else {
                    SandboxError::BadHost {
                        host: host.to_owned(),
                        source,
                    }
                }
            })?;
        // One `/version` both negotiates and describes the engine: Docker answers it by
        // running `runc --version` and `docker-init --version`, some 15 ms each time.
        let reported = tokio::time::timeout(CONNECT_TIMEOUT, client.version())
            .await
            .map_err(|_| SandboxError::EngineTimeout {
                host: host.to_owned(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            })?
            .map_err(|source| SandboxError::NoEngine {
                host: host.to_owned(),
                source,
            })?;
        let server = reported
            .api_version
            .as_deref()
            .and_then(api_version)
            .ok_or_else(|| SandboxError::NoEngine {
                host: host.to_owned(),
                source: bollard::errors::Error::APIVersionParseError {},
            })?;
        let ours = bollard::API_DEFAULT_VERSION;
        let version = server.min((ours.major_version, ours.minor_version));
        if version < MIN_API {
            return Err(SandboxError::EngineTooOld {
                host: host.to_owned(),
                version: format!("{}.{}", version.0, version.1),
            });
        }
        let negotiated = if version == (ours.major_version, ours.minor_version) {
            client
        } else {
            let agreed = ClientVersion {
                major_version: version.0,
                minor_version: version.1,
            };
            raw_client(&endpoint, timeout, &agreed).map_err(|source| SandboxError::BadHost {
                host: host.to_owned(),
                source,
            })?
        };
        let components: Vec<String> = reported
            .components
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let kind = EngineKind::of(&components);
        // Docker names its product in the platform (`Docker Engine - Community`); Podman puts
        // its OS there (`linux/amd64/debian-12`) and its name in a component.
        let product = match kind {
            EngineKind::Podman => components
                .iter()
                .find(|n| n.contains("Podman"))
                .cloned()
                .unwrap_or_else(|| "Podman Engine".to_owned()),
            EngineKind::Docker => reported
                .platform
                .map(|p| p.name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "Docker Engine".to_owned()),
        };
        let info = EngineInfo {
            host: host.to_owned(),
            kind,
            api_version: format!("{}.{}", version.0, version.1),
            server_version: reported.version.unwrap_or_default(),
            product,
            platform: format!(
                "{}/{}",
                reported.os.unwrap_or_default(),
                reported.arch.unwrap_or_default()
            ),
        };
        let socket_owner = host
            .strip_prefix("unix://")
            .and_then(|path| std::fs::metadata(path).ok())
            .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta));
        Ok(Self {
            docker: negotiated,
            host: host.to_owned(),
            endpoint,
            tunnel,
            version,
            timeout,
            info,
            socket_owner,
        })
    }

    /// The client, speaking the negotiated version.
    #[must_use]
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// What the engine said about itself.
    #[must_use]
    pub(crate) fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// How the engine runs containers, from its `/info`, and what kiln knows that this
    /// means for steps.
    pub(crate) async fn host_facts(&self) -> Result<HostFacts, SandboxError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|source| SandboxError::Engine {
                step: "-".to_owned(),
                action: "asking the engine how it runs containers",
                source,
            })?;
        // Docker says so among its security options; Podman (4.3) only in a field of its
        // own, but its socket is then its user's.
        let rootless = self.socket_owner.is_some_and(|uid| uid != 0)
            || info
                .security_options
                .unwrap_or_default()
                .iter()
                .any(|o| o.split(',').any(|kv| kv == "name=rootless"));
        let cgroup_version = info
            .cgroup_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut facts = HostFacts {
            rootless,
            cgroup_version,
            runtime: info.default_runtime.unwrap_or_default(),
            storage: info.driver.unwrap_or_default(),
            limits: Vec::new(),
        };
        facts.limits = known_limits(self.info.kind, &facts);
        Ok(facts)
    }

    /// Whether this is a rootless Podman on this machine: its containers see the user who
    /// runs it as root, unless they keep that user's id (`keep-id`), which steps do so that
    /// a tree the user lends is the step's own.
    #[must_use]
    pub(crate) fn is_rootless_podman(&self) -> bool {
        self.info.kind == EngineKind::Podman && self.socket_owner.is_some_and(|uid| uid != 0)
    }

    /// Whether the engine shares this machine's filesystem (a unix socket): only then are
    /// host directories bind-mounted into steps; any other engine gets inputs as a tar stream
    /// and gives outputs back the same way.
    #[must_use]
    pub(crate) fn is_local(&self) -> bool {
        self.tunnel.is_none()
            && self.host.starts_with("unix://")
            && std::env::var_os("KILN_COPY_MOUNTS").is_none()
    }

    /// A fresh client to the same engine at the negotiated version, usable from another
    /// runtime (cleanup on drop runs on its own thread and runtime).
    pub(crate) fn fresh_client(&self) -> Result<Docker, bollard::errors::Error> {
        let version = ClientVersion {
            major_version: self.version.0,
            minor_version: self.version.1,
        };
        raw_client(&self.endpoint, self.timeout, &version)
    }
}

/// The directory of the TLS client certificate for a `tcp://` engine: `DOCKER_CERT_PATH`
/// (holding `ca.pem`, `cert.pem`, `key.pem`) when `DOCKER_TLS_VERIFY` is set, as the docker CLI
/// reads them.
fn tls_dir() -> Option<std::path::PathBuf> {
    let verify = std::env::var("DOCKER_TLS_VERIFY")
        .ok()
        .filter(|v| !v.is_empty())?;
    if verify == "0" {
        return None;
    }
    Some(
        std::env::var_os("DOCKER_CERT_PATH")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
            .unwrap_or_default(),
    )
}

/// An API version as the engine reports it (`1.41`): (major, minor).
fn api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A client for `host` speaking `version`; connects lazily (nothing is sent yet).
fn raw_client(
    host: &str,
    timeout: u64,
    version: &ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, timeout, version)
    } else if let (true, Some(dir)) = (host.starts_with("tcp://"), tls_dir()) {
        Docker::connect_with_ssl(
            host,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            timeout,
            version,
        )
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, timeout, version)
    } else {
        // Anything else (ssh://, npipe://, garbage) gets the client's own verdict.
        Docker::connect_with_host(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(rootless: bool, cgroup: &str) -> HostFacts {
        HostFacts {
            rootless,
            cgroup_version: cgroup.to_owned(),
            runtime: "runc".into(),
            storage: "overlay".into(),
            limits: Vec::new(),
        }
    }

    #[test]
    fn the_engine_s_api_version_is_read_as_two_numbers() {
        assert_eq!(api_version("1.41"), Some((1, 41)));
        assert_eq!(api_version("1.5"), Some((1, 5)));
        assert!((1, 5) < MIN_API, "compared as numbers, not text");
        for bad in ["", "1", "1.", ".41", "v1.41", "1.41.0", "one.two"] {
            assert_eq!(api_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_engine_kind_comes_from_its_components() {
        // What Podman 4.3 and Docker 20.10 list in `/version`.
        let podman = ["Podman Engine", "Conmon", "OCI Runtime (crun)"].map(String::from);
        let docker = ["Engine", "containerd", "runc", "docker-init"].map(String::from);
        assert_eq!(EngineKind::of(&podman), EngineKind::Podman);
        assert_eq!(EngineKind::of(&docker), EngineKind::Docker);
        assert_eq!(EngineKind::of(&[]), EngineKind::Docker);
    }

    #[test]
    fn without_docker_host_the_first_engine_socket_that_exists_is_used() {
        let run = Path::new("/run/user/1001");
        let only = |want: &'static str| move |p: &Path| p == Path::new(want);
        assert_eq!(
            default_host(Some(run), only("/run/user/1001/podman/podman.sock")),
            "unix:///run/user/1001/podman/podman.sock"
        );
        assert_eq!(
            default_host(Some(run), only("/run/podman/podman.sock")),
            "unix:///run/podman/podman.sock"
        );
        // A rootless Docker's socket is not taken: its steps cannot write lent trees.
        assert_eq!(
            default_host(Some(run), only("/run/user/1001/docker.sock")),
            DEFAULT_HOST
        );
        assert_eq!(default_host(None, |_| true), "unix:///var/run/docker.sock");
        assert_eq!(default_host(Some(run), |_| false), DEFAULT_HOST);
    }

    #[test]
    fn known_limits_follow_the_engine_and_its_cgroups() {
        assert!(known_limits(EngineKind::Docker, &facts(false, "1")).is_empty());
        assert!(
            known_limits(EngineKind::Docker, &facts(true, "2"))
                .iter()
                .all(|l| l.starts_with("rootless Docker"))
        );
        let mut rootless_v1 = facts(true, "1");
        rootless_v1.limits = known_limits(EngineKind::Docker, &rootless_v1);
        assert_eq!(rootless_v1.limits.len(), 2);
        assert!(
            rootless_v1.limits[0].contains("[steps] memory"),
            "{rootless_v1:?}"
        );
        // The failed checks it explains point at it; others do not.
        assert_eq!(
            rootless_v1.limit_for("pids"),
            Some(rootless_v1.limits[0].as_str())
        );
        assert!(rootless_v1.limit_for("rlimits").is_some());
        assert!(rootless_v1.limit_for("network").is_none());
        assert!(facts(false, "1").limit_for("pids").is_none());
        // crun on cgroup v1 is a limit of its own, on v2 none.
        let mut crun = facts(false, "1");
        crun.runtime = "crun".into();
        assert!(
            known_limits(EngineKind::Podman, &crun)
                .iter()
                .any(|l| l.contains("runtime = \"runc\""))
        );
        crun.cgroup_version = "2".into();
        assert!(
            !known_limits(EngineKind::Podman, &crun)
                .iter()
                .any(|l| l.contains("runtime = \"runc\""))
        );
        let podman = known_limits(EngineKind::Podman, &facts(false, "2"));
        assert!(podman.iter().any(|l| l.contains("--time=0")), "{podman:?}");
        assert_eq!(
            known_limits(EngineKind::Podman, &facts(true, "1")).len(),
            podman.len() + 2
        );
    }
}
