//! [`DockerSandbox`]: steps as containers on a Docker-compatible engine, through bollard.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures::TryStreamExt as _;
use futures::stream::BoxStream;

use super::engine::EngineKind;
use super::guard::{ContainerGuard, remove_container};
use super::lines::LineSplitter;
use super::run_owner::{Liveness, RunOwner};
use super::step_spec::STEP_HOSTNAME;
use super::{
    Engine, LogStream, Network, Sandbox, SandboxError, StepEvent, StepExit, StepSpec, UserId,
};

/// Label naming the kiln run (one process) a container belongs to.
pub(crate) const LABEL_RUN: &str = "kiln.run";
/// Label saying how a step's directories reach it: `bound` (bind mounts of host directories,
/// local engines) or `copied` (tar streams in and out, any other engine).
pub const LABEL_MOUNTS: &str = "kiln.mounts";
/// Label naming the step a container runs.
pub(crate) const LABEL_STEP: &str = "kiln.step";
/// Label identifying the owning process; see [`RunOwner`].
pub const LABEL_OWNER: &str = "kiln.owner";

/// Variables an engine adds to every container on its own: Podman sets `container=podman`
/// and `TERM=xterm` (Docker neither). A step sees them only when it declares them, so it sees
/// the same environment on every engine.
const ENGINE_ADDED_VARS: [&str; 2] = ["TERM", "container"];

/// The shell prologue every step runs through: it fixes the umask, then `exec`s the step's
/// argv unchanged (`"$0" "$@"`), so no argument is ever interpreted by the shell. The shell
/// exports `PWD` on start, and the engine may add [`ENGINE_ADDED_VARS`]; they are unset (those
/// the step does not declare) so the step sees only its declared environment.
fn step_entrypoint(step: &StepSpec) -> Vec<String> {
    let mut unset = vec!["PWD", "OLDPWD"];
    unset.extend(
        ENGINE_ADDED_VARS
            .iter()
            .filter(|var| !step.env.contains_key(**var)),
    );
    vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!(
            "umask 022 && unset {} && exec \"$0\" \"$@\"",
            unset.join(" ")
        ),
    ]
}

/// Held while a container is created on a rootless Podman (see `DockerSandbox::run`).
static ROOTLESS_PODMAN_CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Label on a fresh cache volume naming the run it belongs to.
const LABEL_CACHE_NAMESPACE: &str = "kiln.cache.namespace";

/// The most processes (threads included) one step may run: a fork bomb stops here, a Go
/// build (one thread per core, plus the compilers it starts) stays far below it.
pub(super) const STEP_PIDS_LIMIT: i64 = 4096;

/// What a step's open-file limit must reach: a Go build of k3s (cgo objects, thousands of
/// packages) can hold thousands of files at once. kiln sets no rlimit itself: Docker hands a
/// container its daemon's limits, Podman containers.conf's `default_ulimits` (a million
/// without it), and naming any limit in the create request makes Podman ignore that file and
/// set its own process limit, which a machine with lower hard limits refuses in `runc create`.
/// The probe's `rlimits` row checks what the engine gives against this.
pub(super) const STEP_MIN_OPEN_FILES: u64 = 4096;

/// The build user's home in kiln's toolchain image: writable scratch, like `/tmp`.
const STEP_HOME: &str = "/home/kiln";

/// How `/tmp`, the home and `/cache` are mounted: writable, executable (`go run` and `go test`
/// execute what they build in `/tmp`; the engine's default is `noexec`), nothing set-id,
/// writable by anyone (the step's user may be any uid).
const STEP_TMPFS: &str = "rw,exec,nosuid,nodev,mode=1777";

/// What Podman needs besides: it fills a tmpfs with the image's files under that path
/// (owned as in the image, modes narrowed), where Docker's starts empty; `notmpcopyup` keeps
/// it empty, so a step sees the same `/cache` on both (Docker refuses the option).
const PODMAN_TMPFS_EXTRA: &str = ",notmpcopyup";

/// Runs steps as containers. Cheap to clone; clones share the run identity.
#[derive(Clone, Debug)]
pub struct DockerSandbox {
    engine: Engine,
    owner: Arc<RunOwner>,
    run_id: Arc<str>,
    /// When set, cache volumes are this run's own (`kiln-cache-<ns>-<name>-u<uid>`).
    cache_namespace: Option<Arc<str>>,
    /// The engine does not share this machine's filesystem: mounts are copied, not bound.
    copy_mounts: bool,
}

impl DockerSandbox {
    /// Connects to the engine `DOCKER_HOST` names and removes containers left by kiln
    /// processes that are gone.
    pub async fn connect() -> Result<Self, SandboxError> {
        Self::with_engine(Engine::connect().await?).await
    }

    /// Uses an existing connection; removes orphaned containers first. With
    /// `KILN_CACHE_NAMESPACE` set, this process's cache volumes are its namespace's own
    /// (`kiln-cache-<ns>-<name>-u<uid>`, labelled), not the engine's shared ones: CI jobs (and
    /// kiln's own tests) that must not see each other's caches set it.
    pub async fn with_engine(engine: Engine) -> Result<Self, SandboxError> {
        let cache_namespace = match std::env::var("KILN_CACHE_NAMESPACE") {
            Ok(ns) if !ns.is_empty() => {
                let ok = ns.len() <= 32
                    && ns
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    return Err(SandboxError::InvalidSpec {
                        step: "-".into(),
                        reason: format!(
                            "KILN_CACHE_NAMESPACE `{}` must be 1-32 of a-z, 0-9 and -",
                            ns.escape_debug()
                        ),
                    });
                }
                Some(ns.into())
            }
            _ => None,
        };
        let sandbox = Self {
            owner: Arc::new(RunOwner::current()),
            run_id: uuid::Uuid::new_v4().simple().to_string().into(),
            cache_namespace,
            copy_mounts: !engine.is_local(),
            engine,
        };
        let reaped = sandbox.reap_orphans().await?;
        if !reaped.is_empty() {
            tracing::info!(
                count = reaped.len(),
                "removed containers left by killed kiln runs"
            );
        }
        Ok(sandbox)
    }

    /// The same sandbox with fresh cache volumes of its own: every cache starts empty and is
    /// never shared with other runs (for `kiln verify`). Remove them with
    /// [`DockerSandbox::remove_cache_volumes`].
    #[must_use]
    pub(crate) fn with_fresh_caches(mut self) -> Self {
        let namespace = uuid::Uuid::new_v4().simple().to_string();
        self.cache_namespace = Some(namespace[..16].into());
        self
    }

    fn volume_name(&self, cache: &super::CacheMount, user: UserId) -> String {
        match &self.cache_namespace {
            Some(ns) => format!("kiln-cache-{ns}-{}-u{}", cache.name, user.uid),
            None => cache.volume_name(user),
        }
    }

    /// Removes this sandbox's own cache volumes (see [`DockerSandbox::with_fresh_caches`]);
    /// shared caches are never removed. Returns how many were removed.
    pub(crate) async fn remove_cache_volumes(&self) -> Result<usize, SandboxError> {
        let Some(ns) = &self.cache_namespace else {
            return Ok(0);
        };
        let docker = self.engine.docker();
        let mut removed = 0;
        for volume in self
            .volumes_labelled(&format!("{LABEL_CACHE_NAMESPACE}={ns}"))
            .await?
        {
            docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|source| SandboxError::Engine {
                    step: String::new(),
                    action: "removing a cache volume",
                    source,
                })?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The engine's volumes carrying `label` (`key=value`).
    async fn volumes_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::Volume>, SandboxError> {
        let filters = HashMap::from([("label", vec![label])]);
        let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .engine
            .docker()
            .list_volumes(Some(options))
            .await
            .map_err(|source| SandboxError::Engine {
                step: String::new(),
                action: "listing cache volumes",
                source,
            })?;
        Ok(listed.volumes.unwrap_or_default())
    }

    /// Removes the cache volumes named `name` that this sandbox's steps use (its namespace's,
    /// or the engine's shared ones, every uid): what they held is never read again. A volume
    /// a running step still uses stays (the engine refuses); returns how many were removed.
    pub(crate) async fn forget_cache(&self, name: &str) -> Result<usize, SandboxError> {
        let docker = self.engine.docker();
        let listed = self.volumes_labelled(&format!("kiln.cache={name}")).await?;
        let ours = |volume: &bollard::models::Volume| {
            let namespace = volume.labels.get(LABEL_CACHE_NAMESPACE);
            namespace.map(String::as_str) == self.cache_namespace.as_deref()
        };
        let mut removed = 0;
        for volume in listed.iter().filter(|v| ours(v)) {
            match docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
            {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!(
                    volume = %volume.name,
                    %error,
                    "a cache volume to drop stays (a running step uses it?): remove it with \
                     `docker volume rm` once nothing runs"
                ),
            }
        }
        Ok(removed)
    }

    /// The engine connection.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Removes every kiln container whose owning process is provably gone; returns their ids.
    /// Containers of live kiln processes, and of other machines sharing the engine, stay.
    pub async fn reap_orphans(&self) -> Result<Vec<String>, SandboxError> {
        let docker = self.engine.docker();
        let filters = HashMap::from([("label", vec![LABEL_OWNER])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        // Podman (4.3) lists a container it is stopping as `stopped`, a state the Docker API
        // does not have and the client refuses; the state lasts as long as the stop, so the
        // list is asked again.
        let mut attempt = 0;
        let containers = loop {
            match docker.list_containers(Some(options.clone())).await {
                Err(bollard::errors::Error::JsonDataError { message, .. })
                    if message.contains("unknown variant") && attempt < 25 =>
                {
                    attempt += 1;
                    tracing::debug!(%message, "the engine listed a state of its own; asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                listed => {
                    break listed.map_err(|source| SandboxError::Engine {
                        step: "-".into(),
                        action: "listing kiln containers",
                        source,
                    })?;
                }
            }
        };
        let mut reaped = Vec::new();
        for container in containers {
            let (Some(id), Some(labels)) = (container.id, container.labels) else {
                continue;
            };
            let Some(owner) = labels.get(LABEL_OWNER).and_then(|v| RunOwner::parse(v)) else {
                continue;
            };
            if owner.liveness(&self.owner) == Liveness::Gone {
                tracing::debug!(container = %id, "removing orphaned step container");
                remove_container(docker, &id)
                    .await
                    .map_err(|source| SandboxError::Engine {
                        step: labels
                            .get(LABEL_STEP)
                            .cloned()
                            .unwrap_or_else(|| "-".into()),
                        action: "removing an orphaned container",
                        source,
                    })?;
                reaped.push(id);
            }
        }
        Ok(reaped)
    }

    fn container_config(&self, step: &StepSpec) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> = step
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_RUN.into(), self.run_id.to_string());
        labels.insert(LABEL_STEP.into(), step.name.clone());
        labels.insert(LABEL_OWNER.into(), self.owner.label_value());
        labels.insert(
            LABEL_MOUNTS.into(),
            if self.copy_mounts { "copied" } else { "bound" }.into(),
        );

        // A remote engine gets copies (see `copy.rs`) into anonymous volumes (removed with
        // the container), never host paths; the image stays read-only either way.
        let mut mounts: Vec<Mount> = step
            .mounts
            .iter()
            .map(|m| {
                if self.copy_mounts {
                    Mount {
                        target: Some(m.target.clone()),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(false),
                        ..Mount::default()
                    }
                } else {
                    Mount {
                        source: Some(m.source.to_string_lossy().into_owned()),
                        target: Some(m.target.clone()),
                        typ: Some(MountType::BIND),
                        read_only: Some(m.read_only),
                        ..Mount::default()
                    }
                }
            })
            .collect();
        mounts.extend(step.caches.iter().map(|c| Mount {
            source: Some(self.volume_name(c, step.user.unwrap_or(UserId::BUILD))),
            target: Some(c.target.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Mount::default()
        }));
        let memory = step
            .memory_limit
            .map(|m| i64::try_from(m).unwrap_or(i64::MAX));

        let tmpfs = if self.engine.info().kind == EngineKind::Podman {
            format!("{STEP_TMPFS}{PODMAN_TMPFS_EXTRA}")
        } else {
            STEP_TMPFS.to_owned()
        };
        ContainerCreateBody {
            image: Some(step.image.clone()),
            entrypoint: Some(step_entrypoint(step)),
            cmd: Some(step.argv.clone()),
            env: Some(step.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(step.workdir.clone()),
            // Never root: a step without a user runs as the image's build user.
            user: Some({
                let user = step.user.unwrap_or(UserId::BUILD);
                format!("{}:{}", user.uid, user.gid)
            }),
            // The engine refuses a host name of its own on the host's network.
            hostname: (step.network != Network::Host).then(|| STEP_HOSTNAME.into()),
            domainname: (step.network != Network::Host).then(String::new),
            labels: Some(labels),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            tty: Some(false),
            network_disabled: Some(step.network == Network::None),
            host_config: Some(HostConfig {
                network_mode: Some(step.network.as_engine_mode().into()),
                mounts: Some(mounts),
                memory,
                memory_swap: memory,
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                // Writable: the declared mounts and caches, and scratch space that dies with
                // the container; the image itself is read-only.
                readonly_rootfs: Some(true),
                // `/cache`: a step without a declared cache still gets a writable GOCACHE and
                // GOMODCACHE (the declared cache volumes are mounted over it).
                tmpfs: Some(
                    ["/tmp", STEP_HOME, "/cache"]
                        .into_iter()
                        .map(|path| (path.to_owned(), tmpfs.clone()))
                        .collect(),
                ),
                pids_limit: Some(STEP_PIDS_LIMIT),
                // A rootless Podman maps its user to the container's root; the step keeps the
                // user's own id, so the trees it is lent are its own (see LentTrees).
                userns_mode: self
                    .engine
                    .is_rootless_podman()
                    .then(|| "keep-id".to_owned()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}

impl Sandbox for DockerSandbox {
    fn binds_host_dirs(&self) -> bool {
        !self.copy_mounts
    }

    fn run(&self, step: StepSpec) -> BoxStream<'static, Result<StepEvent, SandboxError>> {
        let this = self.clone();
        Box::pin(async_stream::try_stream! {
            step.validate()?;
            let docker = this.engine.docker().clone();
            let engine_err = |action: &'static str| {
                let step = step.name.clone();
                move |source| SandboxError::engine(&step, action, source)
            };

            for cache in &step.caches {
                let mut labels = HashMap::from([("kiln.cache".to_owned(), cache.name.clone())]);
                if let Some(ns) = &this.cache_namespace {
                    labels.insert(LABEL_CACHE_NAMESPACE.to_owned(), ns.to_string());
                }
                let request = VolumeCreateRequest {
                    name: Some(this.volume_name(cache, step.user.unwrap_or(UserId::BUILD))),
                    labels: Some(labels),
                    ..VolumeCreateRequest::default()
                };
                // Creating an existing volume returns it unchanged.
                docker.create_volume(request).await.map_err(engine_err("creating a cache volume"))?;
            }

            let unique = uuid::Uuid::new_v4().simple().to_string();
            let name = format!("kiln-{}-{}", step.name, &unique[..12]);
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            // Dropped while the engine creates it (Ctrl-C), the container is removed by name
            // once it appears: a signal never leaves a created container behind.
            let creating = ContainerGuard::creating(this.engine.clone(), name.clone());
            // Rootless Podman (4.3) reads the user's sub-ids through libsubid for every keep-id
            // container, and libsubid is not safe to call from two threads: two creates at
            // once may find no sub-ids ("keep-id requires additional UIDs…") or crash the
            // service. This kiln's creates on such an engine take turns; a refusal is asked
            // again.
            let one_at_a_time = if this.engine.is_rootless_podman() {
                Some(ROOTLESS_PODMAN_CREATE.lock().await)
            } else {
                None
            };
            let mut attempt: u64 = 0;
            let created = loop {
                let created = docker
                    .create_container(Some(options.clone()), this.container_config(&step))
                    .await;
                match &created {
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 500, message })
                        if message.contains("keep-id requires additional") && attempt < 5 =>
                    {
                        attempt += 1;
                        tracing::debug!(%message, attempt, "the engine refused keep-id; asking again");
                        tokio::time::sleep(std::time::Duration::from_millis(250 * attempt)).await;
                    }
                    _ => break created,
                }
            };
            drop(one_at_a_time);
            // The engine's answer says whether the container exists; a broken connection or a
            // timeout does not, and the guard then removes it by name if it appears.
            if matches!(
                created,
                Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { .. })
            ) {
                creating.created();
            } else {
                drop(creating);
            }
            let created = created
                .map_err(|source| match source {
                    source if network_missing(&step, &source) => SandboxError::NetworkMissing {
                        step: step.name.clone(),
                        network: step.network.as_engine_mode().to_owned(),
                    },
                    bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                        SandboxError::ImageMissing { step: step.name.clone(), image: step.image.clone() }
                    }
                    source => SandboxError::Engine {
                        step: step.name.clone(),
                        action: "creating the container",
                        source,
                    },
                })?;
            let id = created.id;
            let guard = ContainerGuard::new(this.engine.clone(), id.clone());
            if this.copy_mounts {
                super::copy::upload(&docker, &id, &step).await?;
            }

            // Attach before starting so no output is lost.
            let attach_options =
                AttachContainerOptionsBuilder::default().stdout(true).stderr(true).stream(true).build();
            let attached = docker
                .attach_container(&id, Some(attach_options))
                .await
                .map_err(engine_err("attaching to the container"))?;
            docker.start_container(&id, None).await.map_err(|source| {
                if network_missing(&step, &source) {
                    SandboxError::NetworkMissing {
                        step: step.name.clone(),
                        network: step.network.as_engine_mode().to_owned(),
                    }
                } else {
                    engine_err("starting the container")(source)
                }
            })?;
            yield StepEvent::Started { container: id.clone() };

            let mut output = attached.output;
            let mut stdout = LineSplitter::default();
            let mut stderr = LineSplitter::default();
            let mut sample = tokio::time::interval_at(
                tokio::time::Instant::now() + COMMAND_SAMPLE_FIRST,
                COMMAND_SAMPLE_EVERY,
            );
            sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_command = String::new();
            let top = if this.engine.info().kind == EngineKind::Podman {
                podman_top_client(&docker, &this.engine.info().server_version)
            } else {
                docker.clone()
            };
            loop {
                let next = tokio::select! {
                    chunk = output.try_next() => Some(chunk),
                    _ = sample.tick() => None,
                };
                let Some(chunk) = next else {
                    if let Some(command) = newest_command(&top, &id).await
                        && command != last_command
                    {
                        last_command.clone_from(&command);
                        yield StepEvent::Command { command };
                    }
                    continue;
                };
                let Some(chunk) = chunk.map_err(engine_err("reading output"))? else { break };
                let (stream, lines) = match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (LogStream::Stdout, stdout.push(&message))
                    }
                    LogOutput::StdErr { message } => (LogStream::Stderr, stderr.push(&message)),
                    LogOutput::StdIn { .. } => continue,
                };
                for line in lines {
                    yield StepEvent::Log { stream, line };
                }
            }
            if let Some(line) = stdout.finish() {
                yield StepEvent::Log { stream: LogStream::Stdout, line };
            }
            if let Some(line) = stderr.finish() {
                yield StepEvent::Log { stream: LogStream::Stderr, line };
            }

            // The output ends when the process does; wait for the engine to record the exit.
            match docker.wait_container(&id, None).try_next().await {
                Ok(_) | Err(bollard::errors::Error::DockerContainerWaitError { .. }) => {}
                Err(source) => Err(engine_err("waiting for the container")(source))?,
            }
            let inspected = docker
                .inspect_container(&id, None)
                .await
                .map_err(engine_err("inspecting the finished container"))?;
            let state = inspected.state.unwrap_or_default();
            let code = state.exit_code.unwrap_or(-1);
            // Podman (4.3, cgroup v1) does not always record an OOM kill in the container's
            // state; a step under a memory limit that died of SIGKILL there is taken for one
            // (kiln's own stop of a step past its timeout never reaches this point).
            let podman_oom = this.engine.info().kind == EngineKind::Podman
                && code == 128 + 9
                && step.memory_limit.is_some();
            let exit = StepExit {
                code,
                oom_killed: state.oom_killed.unwrap_or(false) || podman_oom,
            };
            if this.copy_mounts {
                let podman = this.engine.info().kind == EngineKind::Podman;
                super::copy::download(&docker, &id, &step, podman).await?;
            }
            guard.remove().await.map_err(engine_err("removing the container"))?;
            yield StepEvent::Finished(exit);
        })
    }
}

/// When a running step's processes are first looked at, and how often after that.
const COMMAND_SAMPLE_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const COMMAND_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The command line of the newest process (highest pid) of the running container `id`, as
/// the engine's `top` lists them (Docker's `CMD` column, Podman's `COMMAND`); `None` when it
/// cannot say (the container just exited).
async fn newest_command(docker: &bollard::Docker, id: &str) -> Option<String> {
    // Bounded: the step's output is read between samples, and a slow answer must not stall it.
    let top = tokio::time::timeout(COMMAND_SAMPLE_EVERY, docker.top_processes(id, None))
        .await
        .ok()?
        .ok()?;
    let titles = top.titles?;
    let column = |names: &[&str]| titles.iter().position(|t| names.contains(&t.as_str()));
    let (pid, command) = (column(&["PID"])?, column(&["CMD", "COMMAND"])?);
    top.processes?
        .into_iter()
        .filter_map(|p| Some((p.get(pid)?.parse::<u64>().ok()?, p.get(command)?.clone())))
        .max_by_key(|(pid, _)| *pid)
        .map(|(_, command)| command)
}

/// A client whose containers' `top` goes to Podman's own endpoint
/// (`/v<version>/libpod/containers/<id>/top?stream=false`): Podman 4.3's Docker-compatible
/// `top` answers 200 with an empty body. Every other request is left as it is.
fn podman_top_client(docker: &bollard::Docker, version: &str) -> bollard::Docker {
    let version = version.to_owned();
    docker.clone().with_request_modifier(move |mut request| {
        let mut parts = request.uri().clone().into_parts();
        let id = parts.path_and_query.as_ref().and_then(|pq| {
            let (_, rest) = pq.path().split_once("/containers/")?;
            let id = rest.strip_suffix("/top")?;
            (!id.contains('/')).then(|| id.to_owned())
        });
        let libpod = id.and_then(|id| {
            format!("/v{version}/libpod/containers/{id}/top?stream=false")
                .parse()
                .ok()
        });
        if let Some(path) = libpod {
            parts.path_and_query = Some(path);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        request
    })
}

/// Whether the engine refused `step`'s container for lacking the named network it is given
/// (Docker says so when creating or when starting it).
fn network_missing(step: &StepSpec, error: &bollard::errors::Error) -> bool {
    matches!(
        (&step.network, error),
        (
            Network::Named(name),
            bollard::errors::Error::DockerResponseServerError { status_code: 404, message },
        ) if message.contains(&format!("network {name} not found"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prologue_unsets_what_the_engine_added_unless_declared() {
        let plain = StepSpec::new("s", "img", ["true"]);
        let script = &step_entrypoint(&plain)[2];
        assert!(
            script.contains("unset PWD OLDPWD TERM container &&"),
            "{script}"
        );
        let declared = StepSpec::new("s", "img", ["true"]).env("TERM", "dumb");
        let script = &step_entrypoint(&declared)[2];
        assert!(script.contains("unset PWD OLDPWD container &&"), "{script}");
        assert!(script.ends_with("exec \"$0\" \"$@\""), "{script}");
    }
}
