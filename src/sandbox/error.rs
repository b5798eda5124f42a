use std::path::PathBuf;

/// What went wrong moving a step's files to or from a remote engine.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A file or directory could not be read or written.
    #[error("{path}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The archive could not be written.
    #[error("cannot write the archive")]
    Archive(#[source] std::io::Error),
    /// A name kiln cannot put in an archive.
    #[error("{0} is not UTF-8")]
    NotUtf8(std::path::PathBuf),
    /// A special file among the inputs.
    #[error("{0} is neither a file, a directory nor a symlink")]
    Special(std::path::PathBuf),
    /// The engine's archive lacks the mount it should hold.
    #[error("the engine's archive has no {0}")]
    Missing(String),
    /// What the engine sent back was refused by the store's unpacker.
    #[error(transparent)]
    Unpack(#[from] crate::store::StoreError),
    /// The engine sent more than any step's outputs may hold.
    #[error("the engine's archive is larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The engine stopped reading the archive (its own error says why).
    #[error("the engine stopped reading the step's inputs")]
    EngineGone,
}

/// Why a step could not be run, or how it failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SandboxError {
    /// `DOCKER_HOST` is not an address kiln can use.
    #[error("DOCKER_HOST `{host}` is not a Docker engine address")]
    #[diagnostic(
        code(kiln::sandbox::bad_host),
        help(
            "use unix:///path/to/docker.sock or tcp://host:port, or unset DOCKER_HOST to use \
             unix:///var/run/docker.sock"
        )
    )]
    BadHost {
        /// The address as given.
        host: String,
        /// What the client said about it.
        #[source]
        source: bollard::errors::Error,
    },

    /// An `ssh://` address kiln will not pass to ssh.
    #[error("`{host}` is not an engine address kiln can use: {reason}")]
    #[diagnostic(
        code(kiln::sandbox::bad_ssh_host),
        help("write it as ssh://[user@]host[:port][/path/to/docker.sock]")
    )]
    BadSshHost {
        /// The address as given.
        host: String,
        /// What is wrong.
        reason: String,
    },

    /// The ssh forwarder to an `ssh://` engine did not come up.
    #[error("cannot reach the engine at {host} over ssh: {reason}")]
    #[diagnostic(
        code(kiln::sandbox::ssh_tunnel),
        help(
            "kiln runs `ssh -N -L <local socket>:<engine socket> host` with your ssh config and \
             agent, without prompts: check that `ssh host true` works without a password prompt \
             and that the host's sshd allows stream-local forwarding; KILN_SSH_COMMAND replaces \
             `ssh` (e.g. `ssh -F config`)"
        )
    )]
    SshTunnel {
        /// The address.
        host: String,
        /// What ssh said.
        reason: String,
    },

    /// Nothing answered at the engine address.
    #[error("no Docker engine answers at {host}")]
    #[diagnostic(
        code(kiln::sandbox::no_engine),
        help(
            "start one: as root, `scripts/engine start` from the kiln checkout starts a private \
             dockerd and prints the DOCKER_HOST to export (or start Docker/Podman as usual); \
             if an engine runs elsewhere, set DOCKER_HOST to its socket or tcp:// address"
        )
    )]
    NoEngine {
        /// The address tried.
        host: String,
        /// The connection error.
        #[source]
        source: bollard::errors::Error,
    },

    /// `KILN_ENGINE_REQUEST_TIMEOUT` is not a number of seconds.
    #[error("KILN_ENGINE_REQUEST_TIMEOUT=`{value}` is not a whole number of seconds (1 or more)")]
    #[diagnostic(
        code(kiln::sandbox::bad_request_timeout),
        help(
            "set it to how long one engine request may wait for its answer, e.g. 3600, or unset it"
        )
    )]
    BadRequestTimeout {
        /// The value as given.
        value: String,
    },

    /// The engine accepted the connection but did not answer in time.
    #[error("the Docker engine at {host} did not answer within {seconds} s")]
    #[diagnostic(
        code(kiln::sandbox::engine_timeout),
        help("check that the engine is healthy (`docker version` against the same DOCKER_HOST)")
    )]
    EngineTimeout {
        /// The address tried.
        host: String,
        /// How long kiln waited.
        seconds: u64,
    },

    /// The engine speaks an API older than kiln needs.
    #[error("the Docker engine at {host} speaks API {version}; kiln needs 1.41 or newer")]
    #[diagnostic(
        code(kiln::sandbox::engine_too_old),
        help("upgrade to Docker Engine 20.10 or newer (Debian 12's docker.io works)")
    )]
    EngineTooOld {
        /// The address tried.
        host: String,
        /// The API version it reported.
        version: String,
    },

    /// Moving a step's files to or from a remote engine failed, or what came back was
    /// refused (an unsafe archive).
    #[error("step `{step}`: cannot {action}")]
    #[diagnostic(code(kiln::sandbox::copy))]
    Copy {
        /// The step.
        step: String,
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: CopyError,
    },

    /// The step description is unusable.
    #[error("step `{step}` is not valid: {reason}")]
    #[diagnostic(code(kiln::sandbox::invalid_spec), help("this is a bug in kiln"))]
    InvalidSpec {
        /// The step.
        step: String,
        /// What is wrong.
        reason: String,
    },

    /// The worktree to run the step on cannot be read.
    #[error("cannot read the worktree {path}")]
    Worktree {
        /// The worktree.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The step's image is not on the engine.
    #[error("image `{image}` for step `{step}` is not on the Docker engine")]
    #[diagnostic(
        code(kiln::sandbox::image_missing),
        help(
            "build the toolchain images first: `kiln image bootstrap --go <1.21|1.22|1.23>` then \
             `kiln image toolchain --go <…>`; `kiln doctor` lists what exists"
        )
    )]
    ImageMissing {
        /// The step.
        step: String,
        /// The image reference.
        image: String,
    },

    /// The named network a step is given does not exist on the engine.
    #[error("step `{step}`: the engine has no network `{network}`")]
    #[diagnostic(
        code(kiln::sandbox::network_missing),
        help(
            "create it on the engine (`docker network create {network}`), or change [go] \
             fetch-network in kiln.toml (`host`, the default, is the engine host's network)"
        )
    )]
    NetworkMissing {
        /// The step.
        step: String,
        /// The network's name.
        network: String,
    },

    /// An engine call failed.
    #[error("Docker engine call failed for step `{step}` while {action}")]
    #[diagnostic(code(kiln::sandbox::engine))]
    Engine {
        /// The step (or `-` outside a step).
        step: String,
        /// What kiln was doing.
        action: &'static str,
        /// The engine's error.
        #[source]
        source: bollard::errors::Error,
    },

    /// The connection to the engine broke while a step ran (the daemon stopped or restarted).
    #[error("the Docker daemon connection was lost while {action} (step `{step}`)")]
    #[diagnostic(
        code(kiln::sandbox::engine_lost),
        help(
            "check the engine (`kiln doctor`); nothing of the step was recorded, and the next kiln \
             run removes the container it left behind"
        )
    )]
    EngineLost {
        /// The step.
        step: String,
        /// What kiln was doing.
        action: &'static str,
        /// The engine's error.
        #[source]
        source: bollard::errors::Error,
    },

    /// Something outside the step killed it with a signal (exit code 128 + the signal).
    #[error("step `{step}` was killed by {signal} (exit code {code}){}", tail_suffix(.stderr_tail))]
    #[diagnostic(
        code(kiln::sandbox::killed),
        help(
            "something outside the step stopped it: `docker kill`/`docker stop`, the engine \
             shutting down, or the kernel (SIGKILL without the OOM flag is often memory \
             pressure); run again"
        )
    )]
    Killed {
        /// The step.
        step: String,
        /// The signal's name.
        signal: &'static str,
        /// The exit code.
        code: i64,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },

    /// The step's command exited non-zero.
    #[error("step `{step}` failed with exit code {code}{}", tail_suffix(.stderr_tail))]
    #[diagnostic(code(kiln::sandbox::step_failed))]
    StepFailed {
        /// The step.
        step: String,
        /// Its exit code.
        code: i64,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },

    /// The kernel killed the step for exceeding its memory limit.
    #[error("step `{step}` was OOM-killed{}{}",
        .memory_limit.map(|m| format!(" (memory limit {} MiB)", m / (1024 * 1024))).unwrap_or_default(),
        tail_suffix(.stderr_tail))]
    #[diagnostic(
        code(kiln::sandbox::oom_killed),
        help(
            "raise the step's limit (kiln.toml: `[steps.{step}]` `memory = \"16GiB\"`, or \
             `[steps]` for every step) or give the engine more memory"
        )
    )]
    OomKilled {
        /// The step.
        step: String,
        /// Its memory limit, if one was set.
        memory_limit: Option<u64>,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },

    /// The event stream ended without a `Finished` event.
    #[error("step `{step}` ended without reporting how; this is a bug in kiln")]
    Truncated {
        /// The step.
        step: String,
    },
}

fn tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of stderr:\n  {}", tail.join("\n  "))
    }
}

impl SandboxError {
    /// An engine call's failure: [`SandboxError::EngineLost`] when the connection itself
    /// broke (the daemon stopped, restarted or vanished), [`SandboxError::Engine`] otherwise.
    pub(crate) fn engine(step: &str, action: &'static str, source: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        let lost = matches!(
            source,
            E::IOError { .. }
                | E::HyperResponseError { .. }
                | E::HyperLegacyError { .. }
                | E::SocketNotFoundError(_)
                | E::RequestTimeoutError
        );
        if lost {
            Self::EngineLost {
                step: step.to_owned(),
                action,
                source,
            }
        } else {
            Self::Engine {
                step: step.to_owned(),
                action,
                source,
            }
        }
    }
}

/// The name of the signal behind a container's exit code, for the signals something outside a
/// step sends it (128 + the signal's number).
pub(crate) fn signal_of(code: i64) -> Option<&'static str> {
    match code {
        129 => Some("SIGHUP"),
        130 => Some("SIGINT"),
        137 => Some("SIGKILL"),
        143 => Some("SIGTERM"),
        _ => None,
    }
}
