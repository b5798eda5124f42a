//! `kiln kdm add VERSION --file channels.yaml`: KDM's entry for a k3s release.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::names::K3sVersion;
use crate::release::{AddOptions, KdmAction, add_entry, promote_entry};

use super::{Outcome, print_json};

#[derive(Debug, Subcommand)]
pub(super) enum KdmCommand {
    /// Add the `releases:` entry of a k3s version after the latest entry of its minor, reusing
    /// that entry's Rancher range and anchored args; every other byte of the file is kept.
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// The k3s version: vX.Y.Z+k3sN, or vX.Y.Z-rcN+k3sN.
    version: String,
    /// KDM's channels.yaml (default: kiln.toml's `[publish] kdm`, else ./channels.yaml).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Copy from, and insert after, this entry instead of the latest of the same minor.
    #[arg(long, value_name = "VERSION")]
    after: Option<String>,
    /// Turn the version's RC entry into its GA entry (only its version changes).
    #[arg(long, conflicts_with_all = ["after", "min", "max"])]
    promote: bool,
    /// minChannelServerVersion (required for the first entry of a minor).
    #[arg(long, value_name = "RANCHER_VERSION")]
    min: Option<String>,
    /// maxChannelServerVersion (required for the first entry of a minor).
    #[arg(long, value_name = "RANCHER_VERSION")]
    max: Option<String>,
    /// Print the lines that would be added, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(command: &KdmCommand) -> Outcome {
    let KdmCommand::Add(args) = command;
    let version: K3sVersion = args.version.parse()?;
    let after = args
        .after
        .as_deref()
        .map(str::parse::<K3sVersion>)
        .transpose()?;
    let path = match &args.file {
        Some(file) => file.clone(),
        None => super::publish_config(true)?
            .kdm
            .unwrap_or_else(|| PathBuf::from("channels.yaml")),
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {file}"))?;
    let edit = if args.promote {
        promote_entry(&text, &version, &file)?
    } else {
        let options = AddOptions {
            after,
            min: args.min.as_deref(),
            max: args.max.as_deref(),
        };
        add_entry(&text, &version, &options, &file)?
    };
    let target = if args.promote { version.ga() } else { version };
    if edit.action != KdmAction::AlreadyPresent && !args.dry_run {
        crate::durable::write(
            &path,
            edit.text.as_bytes(),
            crate::durable::Placement::Beside,
        )?;
    }
    if args.json {
        print_json(&serde_json::json!({
            "version": target.to_string(),
            "file": file,
            "action": edit.action,
            "from": edit.from,
            "lines": edit.lines,
            "written": edit.action != KdmAction::AlreadyPresent && !args.dry_run,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let sign = if edit.action == KdmAction::Promoted {
        "~"
    } else {
        "+"
    };
    for line in &edit.lines {
        println!("{sign} {line}");
    }
    let done = |what: &str| {
        if args.dry_run {
            format!("would be {what} (--dry-run: nothing written)")
        } else {
            what.to_owned()
        }
    };
    match (edit.action, &edit.from) {
        (KdmAction::AlreadyPresent, _) => {
            println!("{file} already lists {target}; nothing changed");
        }
        (KdmAction::Added, Some(from)) => println!(
            "{target} {} to {file} after {from}, with its Rancher range and args \
             (anchors resolve; every published entry unchanged)",
            done("added")
        ),
        (KdmAction::Promoted, Some(from)) => {
            println!("{from} {} to {target} in {file}", done("promoted"));
        }
        (_, None) => println!("{target}: {file} changed"),
    }
    Ok(ExitCode::SUCCESS)
}
