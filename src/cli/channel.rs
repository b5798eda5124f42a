//! `kiln channel set-stable VERSION --file channel.yaml`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::release::set_stable;

use super::Outcome;

#[derive(Debug, Subcommand)]
pub(super) enum ChannelCommand {
    /// Point the stable channel at a GA version: its single `latest:` line changes, nothing
    /// else in the file.
    SetStable {
        /// The GA version, vX.Y.Z+k3sN.
        version: String,
        /// k3s's channel.yaml (default: kiln.toml's `[publish] channel`, else ./channel.yaml).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub(super) fn run(command: &ChannelCommand) -> Outcome {
    let ChannelCommand::SetStable { version, file } = command;
    let file = &match file {
        Some(file) => file.clone(),
        None => super::publish_config(true)?
            .channel
            .unwrap_or_else(|| PathBuf::from("channel.yaml")),
    };
    let text = std::fs::read_to_string(file)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", file.display()))?;
    let (new, old) = set_stable(&text, version, &file.display().to_string())?;
    match old {
        None => println!("stable is already {version} in {}", file.display()),
        Some(old) => {
            crate::durable::write(file, new.as_bytes(), crate::durable::Placement::Beside)?;
            println!("stable: {old} -> {version} in {}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
