//! The scheduler: runs a plan's misses in dependency order, at most `jobs` at a time.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use super::limits::{Limits, StepLimits};
use crate::hash::{Derivation, Digest, InputRef, StepKey};
use crate::sandbox::{BindMount, LentTrees, Sandbox, StepEvent, StepSpec, run_to_end};
use crate::store::{OutputRef, Record, Store};

use super::plan::cached_outputs;
use super::{EngineError, EngineEvent, Plan, Step, StepInput};

/// How to run a plan.
#[derive(Clone, Debug)]
pub(crate) struct RunOptions {
    /// Steps running at once.
    pub(crate) jobs: usize,
    /// Where steps get their work directories (`<key>.<id>/{in,out}`).
    pub(crate) work_dir: PathBuf,
    /// How long each step may run and how much memory it may use.
    pub(crate) limits: StepLimits,
}

/// Whether a step ran or came from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepOutcome {
    /// It ran in a container.
    Ran,
    /// Its record was in the store; nothing ran.
    Cached,
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct StepResult {
    /// The step.
    pub(crate) name: String,
    /// Its key.
    pub(crate) key: StepKey,
    /// Ran or cached.
    pub(crate) outcome: StepOutcome,
    /// Its outputs.
    pub(crate) outputs: BTreeMap<String, OutputRef>,
}

/// Every step's result, in plan order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RunReport {
    /// The results.
    pub(crate) steps: Vec<StepResult>,
}

/// Runs `plan`: each step whose key is in the store is restored from it without starting a
/// container; the others run through `sandbox`, in dependency order, and their outputs and
/// records are stored. The first failure cancels every running step (their containers are
/// removed) and is returned. Dropping the returned future cancels the same way.
///
/// # Panics
/// Re-raises a panic of a step task, after cancelling the others.
pub(crate) async fn run<S: Store, B: Sandbox + Clone + 'static>(
    plan: &Plan,
    store: &S,
    sandbox: &B,
    options: &RunOptions,
    events: &UnboundedSender<EngineEvent>,
) -> Result<RunReport, EngineError> {
    let mut done: BTreeMap<String, BTreeMap<String, OutputRef>> = BTreeMap::new();
    let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
    let mut started: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<Result<StepResult, EngineError>> = JoinSet::new();
    let jobs = options.jobs.max(1);
    loop {
        for step in plan.steps() {
            if tasks.len() >= jobs {
                break;
            }
            if started.contains(&step.name) || !step.parents().all(|p| done.contains_key(p)) {
                continue;
            }
            let derivation = step
                .derivation(&done)
                .expect("every parent is done, so every output is known");
            started.insert(step.name.clone());
            tasks.spawn(Tracked {
                step: Box::pin(execute(
                    step.clone(),
                    derivation,
                    done.clone(),
                    store.clone(),
                    sandbox.clone(),
                    (options.work_dir.clone(), options.limits.of(&step.name)),
                    events.clone(),
                )),
                _in_flight: InFlight::enter(),
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(result)) => {
                done.insert(result.name.clone(), result.outputs.clone());
                results.insert(result.name.clone(), result);
            }
            Ok(Err(error)) => {
                tasks.shutdown().await;
                return Err(error);
            }
            Err(join_error) => {
                tasks.shutdown().await;
                std::panic::resume_unwind(join_error.into_panic());
            }
        }
    }
    let steps = plan
        .steps()
        .iter()
        .map(|s| {
            results
                .remove(&s.name)
                .expect("every step of the plan finished")
        })
        .collect();
    Ok(RunReport { steps })
}

/// Step tasks whose futures have not been dropped yet, in this process.
static STEPS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one step task while it exists.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        STEPS_IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        STEPS_IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A step task: the step's future, then its count. Fields drop in order, so the count falls
/// only after everything the step held (its container guard, work directory, locks) is gone.
struct Tracked {
    step: std::pin::Pin<Box<dyn Future<Output = Result<StepResult, EngineError>> + Send>>,
    _in_flight: InFlight,
}

impl Future for Tracked {
    type Output = Result<StepResult, EngineError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.step.as_mut().poll(cx)
    }
}

/// Waits until every step task of this process has been dropped — aborted tasks are dropped
/// by the runtime after a run is cancelled, removing their containers as they go — or until
/// `limit`. Returns whether they all were.
pub(crate) async fn wait_for_steps(limit: std::time::Duration) -> bool {
    let started = Instant::now();
    while STEPS_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// Removes a step's work directory on every path out of the step.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), %error, "cannot remove a step's work directory");
        }
    }
}

/// Under a step's lock no other run of it is alive: any work directory of its key is a
/// killed (or force-quit) run's, and goes.
fn remove_leftover_work(work_root: &Path, key: &StepKey) {
    let Ok(entries) = std::fs::read_dir(work_root) else {
        return;
    };
    let prefix = format!("{}.", key.hex());
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a killed run's work directory");
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a killed run's work directory");
                }
            }
        }
    }
}

async fn execute<S: Store, B: Sandbox>(
    step: Step,
    derivation: Derivation,
    parents: BTreeMap<String, BTreeMap<String, OutputRef>>,
    store: S,
    sandbox: B,
    (work_root, limits): (PathBuf, Limits),
    events: UnboundedSender<EngineEvent>,
) -> Result<StepResult, EngineError> {
    let key = derivation.key();
    let deps: Vec<Digest> = derivation
        .inputs
        .values()
        .filter_map(|input| match input {
            InputRef::Blob { digest, .. } | InputRef::Output { digest, .. } => Some(*digest),
            InputRef::Value { .. } | InputRef::Git { .. } => None,
        })
        .collect();
    // One process runs a key at a time; a second waits here, then finds the record.
    let _lock = match store.try_lock_step(&key, &deps).await? {
        Some(lock) => lock,
        None => {
            let _ = events.send(EngineEvent::Waiting {
                step: step.name.clone(),
                key,
            });
            store.lock_step(&key, &deps).await?
        }
    };
    remove_leftover_work(&work_root, &key);
    if let Some(outputs) = cached_outputs(&store, &key).await? {
        // A record that contradicts a pin is never used (the pin may be newer than it).
        step.check_pins(&outputs)?;
        let _ = events.send(EngineEvent::Cached {
            step: step.name.clone(),
            key,
        });
        return Ok(StepResult {
            name: step.name,
            key,
            outcome: StepOutcome::Cached,
            outputs,
        });
    }

    let started = Instant::now();
    let _ = events.send(EngineEvent::Started {
        step: step.name.clone(),
        key,
    });
    let dir = work_root.join(format!("{}.{}", key.hex(), uuid::Uuid::new_v4().simple()));
    let work = WorkDir(dir.clone());
    let (input_dir, output_dir) = (dir.join("in"), dir.join("out"));
    for path in [&input_dir, &output_dir] {
        std::fs::create_dir_all(path).map_err(|source| EngineError::Work {
            action: "create",
            path: path.clone(),
            source,
        })?;
    }
    // A builtin runs on the host, where every repository is at hand.
    let reach = if step.host.is_some() {
        crate::git::Reach::Host
    } else if sandbox.binds_host_dirs() {
        crate::git::Reach::Bound
    } else {
        crate::git::Reach::Copied
    };
    let borrowed = materialize_inputs(&step, &parents, &store, &input_dir, reach).await?;

    if let Some(action) = &step.host {
        let (action, input, output) = (action.clone(), input_dir.clone(), output_dir.clone());
        tokio::task::spawn_blocking(move || (action.0)(&input, &output))
            .await
            .expect("a builtin step does not panic")
            .map_err(|source| EngineError::HostStep {
                step: step.name.clone(),
                source,
            })?;
    } else {
        let dirs = StepDirs {
            input: &input_dir,
            borrowed: &borrowed,
            output: &output_dir,
        };
        run_container(&step, &sandbox, &dirs, limits, &events).await?;
    }

    // From the first output blob to the record, gc must wait.
    let writing = store.writing().await?;
    let mut outputs = BTreeMap::new();
    for output in &step.outputs {
        let path = output_path(&step.name, &output_dir, output)?;
        let is_tree = output.ends_with('/');
        let meta = std::fs::symlink_metadata(&path);
        let stored = match meta {
            Ok(meta) if is_tree && meta.is_dir() => store.put_tree(&path).await?,
            Ok(meta) if !is_tree && meta.is_file() => store.put_file(&path).await?,
            _ => {
                return Err(EngineError::MissingOutput {
                    step: step.name.clone(),
                    output: output.clone(),
                });
            }
        };
        outputs.insert(
            output.clone(),
            OutputRef {
                digest: stored.0,
                size: stored.1,
                tree: is_tree,
            },
        );
    }
    // A fetch step's outputs are what was pinned, or nothing is recorded.
    step.check_pins(&outputs)?;
    for (output, found) in step.unpinned_fetches(&outputs) {
        tracing::warn!(
            step = %step.name,
            output = %output,
            digest = %found.digest,
            "a fetch step's output has no pin: trusted on first use; pin it to hold later \
             fetches to this content"
        );
    }
    let record = Record::new(&step.name, derivation, outputs.clone());
    crate::failpoint::hit("before-record");
    store.put_record(&record).await?;
    crate::failpoint::hit("after-record");
    drop(writing);
    drop(work);
    let _ = events.send(EngineEvent::Finished {
        step: step.name.clone(),
        key,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(StepResult {
        name: step.name,
        key,
        outcome: StepOutcome::Ran,
        outputs,
    })
}

/// The host path of the declared output `output` under `output_dir`, refused when any
/// directory on the way is a symlink: the step made `/out` and everything in it, so a link
/// there may point anywhere on the host (`/out/d -> /etc` with output `d/shadow`). The last
/// component is checked by the caller without following it; the container has exited, so
/// nothing changes the tree between this check and the read.
fn output_path(step: &str, output_dir: &Path, output: &str) -> Result<PathBuf, EngineError> {
    let relative = Path::new(output.trim_end_matches('/'));
    let mut at = output_dir.to_path_buf();
    let mut walked = PathBuf::new();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        walked.push(part);
        if parts.peek().is_some()
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(EngineError::OutputThroughLink {
                step: step.to_owned(),
                output: output.to_owned(),
                link: walked.display().to_string(),
            });
        }
    }
    Ok(at)
}

/// A container step's host directories.
struct StepDirs<'a> {
    /// Its `/in`.
    input: &'a Path,
    /// What its git inputs borrow, bound read-only.
    borrowed: &'a [crate::git::ObjectMount],
    /// Its `/out`.
    output: &'a Path,
}

/// Runs a container step with `/in` and `/out` bound, forwarding its log lines and what it
/// runs, within its `limits`.
async fn run_container<B: Sandbox>(
    step: &Step,
    sandbox: &B,
    dirs: &StepDirs<'_>,
    limits: Limits,
    events: &UnboundedSender<EngineEvent>,
) -> Result<(), EngineError> {
    let (input_dir, borrowed, output_dir) = (dirs.input, dirs.borrowed, dirs.output);
    let mut spec = StepSpec::new(
        step.name.clone(),
        step.image.reference.clone(),
        step.argv.clone(),
    );
    spec.env.extend(step.env.clone());
    spec.env.extend(step.impure_env.clone());
    spec.workdir = "/out".into();
    // The step's directories are this run's alone (removed afterwards): lent, never given back.
    let lent = LentTrees::lend(&[output_dir, input_dir])?;
    spec.user = Some(lent.user());
    spec.mounts.push(BindMount {
        source: input_dir.to_owned(),
        target: "/in".into(),
        read_only: !step.writable_inputs,
    });
    spec.mounts.push(BindMount {
        source: output_dir.to_owned(),
        target: "/out".into(),
        read_only: false,
    });
    // The object directories git inputs borrow, where their alternates name them.
    spec.mounts.extend(borrowed.iter().map(|mount| BindMount {
        source: mount.source.clone(),
        target: mount.target.clone(),
        read_only: true,
    }));
    spec.caches.clone_from(&step.caches);
    spec.memory_limit = limits.memory.or(step.memory_limit);
    spec.network = step.network.clone();
    // Only the outputs come back from an engine that gets its inputs as a copy.
    spec.collect = vec!["/out".into()];
    let name = step.name.clone();
    let last_command = std::sync::Mutex::new(None::<String>);
    let running = run_to_end(sandbox, spec, |event| match event {
        StepEvent::Log { stream, line } => {
            let _ = events.send(EngineEvent::Log {
                step: name.clone(),
                stream: *stream,
                line: line.clone(),
            });
        }
        StepEvent::Command { command } => {
            *last_command.lock().expect("never poisoned") = Some(command.clone());
            let _ = events.send(EngineEvent::Command {
                step: name.clone(),
                command: command.clone(),
            });
        }
        _ => {}
    });
    match limits.timeout {
        // Dropped at the deadline, the run removes its container.
        Some(timeout) => match tokio::time::timeout(timeout, running).await {
            Ok(ran) => ran.map(drop)?,
            Err(_) => {
                return Err(EngineError::TimedOut {
                    step: step.name.clone(),
                    timeout: super::limits::say_duration(timeout),
                    running: last_command
                        .lock()
                        .expect("never poisoned")
                        .take()
                        .map(|c| format!(" while running `{c}`"))
                        .unwrap_or_default(),
                });
            }
        },
        None => running.await.map(drop)?,
    }
    Ok(())
}

async fn materialize_inputs<S: Store>(
    step: &Step,
    parents: &BTreeMap<String, BTreeMap<String, OutputRef>>,
    store: &S,
    input_dir: &Path,
    reach: crate::git::Reach,
) -> Result<Vec<crate::git::ObjectMount>, EngineError> {
    let mut borrowed: Vec<crate::git::ObjectMount> = Vec::new();
    for (name, input) in &step.inputs {
        let dest = input_dir.join(name);
        let changed = |path: &Path| EngineError::InputChanged {
            step: step.name.clone(),
            input: name.clone(),
            path: path.to_owned(),
        };
        match input {
            StepInput::Value(_) => {}
            StepInput::File { path, digest } => {
                // Into the store first: the record's inputs stay available for rebuilds.
                let (stored, _) = store.put_file(path).await?;
                if stored != *digest {
                    return Err(changed(path));
                }
                store.export(digest, &dest).await?;
            }
            StepInput::Tree { path, digest } => {
                let (stored, _) = store.put_tree(path).await?;
                if stored != *digest {
                    return Err(changed(path));
                }
                create_dir(&dest)?;
                store.unpack(digest, &dest).await?;
            }
            StepInput::Git {
                repo,
                commit,
                history_from,
                worktree,
            } => {
                let (repo, commit, from) = (repo.clone(), commit.clone(), history_from.clone());
                let (dest, worktree) = (dest.clone(), *worktree);
                let dirs = tokio::task::spawn_blocking(move || {
                    crate::git::materialize(&repo, &commit, from.as_deref(), worktree, &dest, reach)
                })
                .await
                .expect("git checkout does not panic")?;
                for mount in dirs {
                    if !borrowed.iter().any(|m| m.target == mount.target) {
                        borrowed.push(mount);
                    }
                }
            }
            StepInput::Output {
                step: parent,
                output,
            } => {
                let found = parents[parent][output];
                let present = if found.tree {
                    create_dir(&dest)?;
                    store.unpack(&found.digest, &dest).await?
                } else {
                    store.export(&found.digest, &dest).await?
                };
                if !present {
                    return Err(crate::store::StoreError::MissingOutput {
                        key: format!("step `{parent}`"),
                        output: output.clone(),
                        digest: found.digest,
                    }
                    .into());
                }
            }
        }
    }
    Ok(borrowed)
}

fn create_dir(path: &Path) -> Result<(), EngineError> {
    std::fs::create_dir(path).map_err(|source| EngineError::Work {
        action: "create",
        path: path.to_owned(),
        source,
    })
}
