//! `kiln sandbox run`: one command in the hermetic step sandbox, as a step would run it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::TryStreamExt as _;
use miette::{IntoDiagnostic as _, WrapErr as _, miette};

use crate::sandbox::{
    BindMount, CacheMount, DockerSandbox, LogStream, Sandbox as _, StepEvent, StepSpec, UserId,
};

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(super) enum SandboxCommand {
    /// Run a command in a step container: declared env only, network none, umask 022.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Image to run (engine id or tag), e.g. a `kiln image toolchain` result.
    #[arg(long)]
    image: String,
    /// Step name (labels, container name, messages).
    #[arg(long, default_value = "sandbox")]
    name: String,
    /// Declare an environment variable (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Bind a host directory: SRC:DST, or SRC:DST:ro for read-only (repeatable).
    #[arg(long = "mount", value_name = "SRC:DST[:ro]")]
    mounts: Vec<String>,
    /// Mount the named cache volume kiln-cache-NAME-u<uid> at DST (repeatable).
    #[arg(long = "cache", value_name = "NAME:DST")]
    caches: Vec<String>,
    /// Working directory in the container.
    #[arg(long, default_value = "/")]
    workdir: String,
    /// Run as the owner (uid:gid) of this host path, as steps on a worktree do.
    #[arg(long, value_name = "PATH")]
    user_of: Option<PathBuf>,
    /// Memory limit in bytes (swap included).
    #[arg(long, value_name = "BYTES")]
    memory: Option<u64>,
    /// Extra container label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

pub(super) async fn run(command: SandboxCommand) -> Outcome {
    match command {
        SandboxCommand::Run(args) => run_step(args).await,
    }
}

fn key_value(text: &str, what: &str) -> miette::Result<(String, String)> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| miette!("{what} `{text}` must look like KEY=VALUE"))
}

fn parse_mount(text: &str) -> miette::Result<BindMount> {
    let (rest, read_only) = match text.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (text.strip_suffix(":rw").unwrap_or(text), false),
    };
    let (source, target) = rest
        .rsplit_once(':')
        .ok_or_else(|| miette!("mount `{text}` must look like SRC:DST or SRC:DST:ro"))?;
    let source = std::fs::canonicalize(source)
        .into_diagnostic()
        .wrap_err_with(|| format!("mount source `{source}` cannot be resolved"))?;
    Ok(BindMount {
        source,
        target: target.to_owned(),
        read_only,
    })
}

async fn run_step(args: RunArgs) -> Outcome {
    let mut step = StepSpec::new(args.name, args.image, args.argv);
    for text in &args.env {
        let (key, value) = key_value(text, "--env")?;
        step.env.insert(key, value);
    }
    for text in &args.labels {
        let (key, value) = key_value(text, "--label")?;
        step.labels.insert(key, value);
    }
    for text in &args.mounts {
        step.mounts.push(parse_mount(text)?);
    }
    for text in &args.caches {
        let (name, target) = text
            .split_once(':')
            .ok_or_else(|| miette!("cache `{text}` must look like NAME:DST"))?;
        if crate::sandbox::is_reserved_cache_name(name) {
            return Err(miette!(
                "cache `{name}` could be one of kiln's own (names holding `{}` are reserved): \
                 name it otherwise",
                crate::sandbox::RESERVED_CACHE_PREFIX
            ));
        }
        step.caches.push(CacheMount {
            name: name.to_owned(),
            target: target.to_owned(),
        });
    }
    step.workdir = args.workdir;
    step.memory_limit = args.memory;
    if let Some(path) = &args.user_of {
        // The owner of PATH, unless that is root: then the build user (kiln never runs a step
        // as root, and never changes the owner of a path you name).
        let owner = UserId::owner_of(path)?;
        step.user = Some(if owner.is_root() {
            UserId::BUILD
        } else {
            owner
        });
    }

    let sandbox = DockerSandbox::connect().await?;
    let mut events = sandbox.run(step);
    while let Some(event) = events.try_next().await? {
        match event {
            StepEvent::Started { container } => tracing::info!(%container, "step started"),
            StepEvent::Command { command } => tracing::info!(%command, "running"),
            StepEvent::Log {
                stream: LogStream::Stdout,
                line,
            } => println!("{line}"),
            StepEvent::Log {
                stream: LogStream::Stderr,
                line,
            } => eprintln!("{line}"),
            StepEvent::Finished(exit) => {
                if exit.oom_killed {
                    eprintln!("kiln: the step was OOM-killed");
                }
                return Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(1)));
            }
        }
    }
    Err(miette!(
        "the step ended without reporting how; this is a bug in kiln"
    ))
}
