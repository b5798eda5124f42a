//! `kiln images check VERSION`: are the release's images published?

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::publish::images::{DOCKER_HUB, ImageCheck, ImageState, check};

use super::table::Table;
use super::{Outcome, print_json};

/// Exit code when an image is missing.
const EXIT_MISSING: u8 = 4;
/// Exit code when the registry could not be asked.
const EXIT_UNREACHABLE: u8 = 5;

#[derive(Debug, Subcommand)]
pub(super) enum ImagesCommand {
    /// HEAD each image manifest of a release: rancher/k3s, rancher/k3s-upgrade,
    /// rancher/system-agent-installer-k3s at the image tag (+ → -). Exit 0 all present, 4 some
    /// missing, 5 registry unreachable.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The k3s version, e.g. v1.28.2+k3s1 or v1.28.2-rc1+k3s1.
    version: String,
    /// The registry, host[:port] or http://host:port (default: kiln.toml's `[publish]
    /// registry`, else Docker Hub).
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// Poll with backoff until every image is present (or --timeout passes).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn all_present(rows: &[ImageCheck]) -> bool {
    rows.iter()
        .all(|r| matches!(r.state, ImageState::Present(_)))
}

pub(super) async fn run(command: ImagesCommand) -> Outcome {
    let ImagesCommand::Check(args) = command;
    // Checked before it names a registry path.
    let version: crate::names::K3sVersion = args.version.parse()?;
    let registry = args
        .registry
        .clone()
        .or(super::publish_config(args.registry.is_none())?.registry)
        .unwrap_or_else(|| DOCKER_HUB.to_owned());
    let started = Instant::now();
    let mut delay = Duration::from_secs(2);
    let mut rows = check(&registry, version).await;
    while args.wait && !all_present(&rows) && started.elapsed() < Duration::from_secs(args.timeout)
    {
        let missing: Vec<&str> = rows
            .iter()
            .filter(|r| !matches!(r.state, ImageState::Present(_)))
            .map(|r| r.image.as_str())
            .collect();
        eprintln!(
            "==> waiting for {} ({}s elapsed, next check in {}s)",
            missing.join(", "),
            started.elapsed().as_secs(),
            delay.as_secs()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
        rows = check(&registry, version).await;
    }
    if args.json {
        print_json(&rows)?;
    } else {
        let mut table = Table::new(&["image", "state"]);
        for row in &rows {
            let state = match &row.state {
                ImageState::Present(digest) => format!("present {digest}"),
                ImageState::Missing => "MISSING".into(),
                ImageState::Unreachable(why) => format!("UNREACHABLE: {why}"),
            };
            table.row(vec![row.image.clone(), state]);
        }
        print!("{}", table.render());
    }
    let code = if rows
        .iter()
        .any(|r| matches!(r.state, ImageState::Unreachable(_)))
    {
        EXIT_UNREACHABLE
    } else if all_present(&rows) {
        0
    } else {
        EXIT_MISSING
    };
    Ok(ExitCode::from(code))
}
