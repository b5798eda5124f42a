//! The command line: clap types, one file per subcommand, and all rendering. The only module
//! that prints: results go to stdout (`--json` for machines), logs and progress to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod cache;
mod channel;
mod demo;
mod doctor;
mod events;
mod image;
mod images;
mod kdm;
mod plan;
mod progress;
mod push;
mod release;
mod sandbox;
mod signals;
mod status;
mod store;
mod table;
mod tag;
mod verify;
mod versions;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln: reproducible, hermetic K3s patch releases.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
struct Cli {
    /// The store directory (default: `$KILN_STORE`, else `$XDG_CACHE_HOME/kiln`, else
    /// `~/.cache/kiln`).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the Docker engine, the toolchain images and the step sandbox's isolation.
    Doctor(doctor::DoctorArgs),
    /// The generated demo world: upstream, fork and k3s repositories shaped like the real ones.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
    /// Build and inspect the toolchain images steps run in.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run one command in the hermetic step sandbox (for debugging steps).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Show each step of a plan file: its key, and whether it is cached or will run, and why.
    Plan(plan::PlanArgs),
    /// Run a plan file: cached steps are restored, the others run in containers.
    Run(plan::RunArgs),
    /// The shared cache in an OCI registry: signing keys, pushing and pulling a release.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Check, clean and fill the content-addressed store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// The whole patch release: rebase, tag, modules, k3s update and build, cached and locked.
    Release(release::ReleaseCmdArgs),
    /// Publish a locked release: the fork's missing tags in one atomic push, the k3s branch;
    /// refuses if the remote has any of them elsewhere (there is no force).
    Push(push::PushArgs),
    /// Rebuild a locked release in a fresh store with fresh caches and compare every output
    /// with the lock (exit 3 on any difference).
    Verify(verify::VerifyArgs),
    /// Check a remote's tags against a lockfile: missing, extra and moved tags (exit 0/4/5).
    VerifyTags(push::VerifyTagsArgs),
    /// Every name of a patch release (fork tags, client versions, Go, RC/GA), derived.
    Versions(versions::VersionsArgs),
    /// The next RC name of a version, from the k3s repository's tags.
    Rc(tag::RcArgs),
    /// Create the RC or GA tag on the release branch head (never moving a tag).
    Tag(tag::TagArgs),
    /// Are the release's images published (rancher/k3s, -upgrade, system-agent-installer)?
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// KDM's channels.yaml (Rancher's k3s metadata): add a release's entry.
    #[command(subcommand)]
    Kdm(kdm::KdmCommand),
    /// k3s's channel.yaml: point stable at a GA release.
    #[command(subcommand)]
    Channel(channel::ChannelCommand),
    /// The runbook of one release as a checklist, every line measured: fork tags built, pushed
    /// and verified, the k3s branch, RC/GA tags, images, the KDM entry, the stable channel.
    Status(status::StatusArgs),
    /// The release's go.mod and Go-version edits, in place on a k3s checkout (no tidy).
    BumpK3s(versions::BumpArgs),
}

/// What a subcommand returns: an exit code, or a diagnostic.
type Outcome = miette::Result<ExitCode>;

/// Parses `args`, runs the command, prints any diagnostic, and returns the exit code.
///
/// Ctrl-C, SIGTERM and SIGHUP drop the running command: every step stream in it is dropped,
/// which stops and removes the step's container, and every lock and temporary directory it
/// held is released; then kiln exits 130, 143 or 129, as shells report those signals, without
/// waiting for blocking work that is only waiting (a step lock, say). A second signal while
/// that happens quits at once.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let mut work = Box::pin(dispatch(cli.command, cli.store));
    let signal = tokio::select! {
        outcome = &mut work => return match outcome {
            Ok(code) => code,
            Err(report) => {
                eprintln!("{report:?}");
                ExitCode::FAILURE
            }
        },
        signal = signals::first() => signal,
    };
    eprintln!(
        "kiln: {}; stopping step containers (again to quit at once)",
        signal.name
    );
    let force = tokio::spawn(async {
        let again = signals::first().await;
        eprintln!("kiln: {} again; quitting at once", again.name);
        std::process::exit(i32::from(again.exit_code));
    });
    // Containers, locks and temporary directories are released as the command is dropped:
    // at once for what it held itself, and as the runtime drops the step tasks it aborted.
    drop(work);
    let clean = crate::engine::wait_for_steps(std::time::Duration::from_secs(120)).await;
    force.abort();
    if clean {
        eprintln!("kiln: stopped; step containers were removed");
    } else {
        eprintln!("kiln: stopped; some step containers may remain (the next kiln removes them)");
    }
    // Blocking threads may still be waiting (for a lock another run holds): exit without
    // joining them, as the runtime's shutdown would.
    std::process::exit(i32::from(signal.exit_code));
}

async fn dispatch(command: Command, store: Option<std::path::PathBuf>) -> Outcome {
    let store = store.unwrap_or_else(crate::store::LocalStore::default_dir);
    // Step mounts need absolute paths: a relative --store or KILN_STORE is taken from the cwd.
    let store = std::path::absolute(&store).unwrap_or(store);
    match command {
        Command::Doctor(args) => doctor::run(args).await,
        Command::Demo(command) => demo::run(command).await,
        Command::Image(command) => image::run(command).await,
        Command::Sandbox(command) => sandbox::run(command).await,
        Command::Plan(args) => plan::run_plan(args, &store).await,
        Command::Run(args) => plan::run_run(args, &store).await,
        Command::Store(command) => store::run(command, &store).await,
        Command::Cache(command) => cache::run(command, &store).await,
        Command::Versions(args) => versions::run_versions(args, &store).await,
        Command::Release(args) => release::run_release(args, &store).await,
        Command::Push(args) => push::run(&args, &store),
        Command::Verify(args) => verify::run_verify(args, &store).await,
        Command::VerifyTags(args) => push::run_verify_tags(&args),
        Command::BumpK3s(args) => versions::run_bump(&args),
        Command::Rc(args) => tag::run_rc(&args),
        Command::Tag(args) => tag::run_tag(&args),
        Command::Channel(command) => channel::run(&command),
        Command::Kdm(command) => kdm::run(&command),
        Command::Status(args) => status::run(args, &store).await,
        Command::Images(command) => images::run(command).await,
    }
}

/// Starts logging to stderr, filtered by `KILN_LOG` (default: warnings), and sets up how
/// diagnostics are drawn: long lines are wrapped only on a terminal, so logs and tools that
/// read stderr see each message whole.
pub fn init_tracing() {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(terminal)
                .build(),
        )
    }));
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// kiln.toml's `[publish]` in the current directory (empty without one). Read only when a flag
/// it would default is missing, so a command given everything never trips over the file.
fn publish_config(needed: bool) -> miette::Result<crate::release::PublishConfig> {
    Ok(args::kiln_toml_if(needed)?
        .map(|toml| toml.publish)
        .unwrap_or_default())
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> miette::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| miette::miette!("cannot render JSON output: {e}; this is a bug in kiln"))?;
    println!("{text}");
    Ok(())
}
