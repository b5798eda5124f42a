//! `kiln doctor`: which engine kiln reached, which images exist, and whether the step sandbox
//! is hermetic, measured by a probe step.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::Args;
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::image::{BaseImage, BaseKind, ToolchainImage, find_base, list_toolchains};
use crate::sandbox::{
    DockerSandbox, Engine, EngineInfo, HostFacts, IsolationCheck, probe_isolation,
};

use super::table::Table;
use super::{Outcome, print_json};

#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Everything doctor found.
#[derive(serde::Serialize)]
struct DoctorReport {
    engine: EngineInfo,
    /// How the engine runs containers, and the limits kiln knows of for it.
    host: HostFacts,
    orphans_removed: usize,
    bases: Vec<BaseImage>,
    toolchains: Vec<ToolchainImage>,
    probe_image: Option<String>,
    checks: Vec<IsolationCheck>,
    problems: Vec<Problem>,
    ok: bool,
}

#[derive(serde::Serialize)]
struct Problem {
    problem: String,
    fix: String,
}

pub(super) async fn run(args: DoctorArgs) -> Outcome {
    let engine = Engine::connect().await?;
    let sandbox = DockerSandbox::with_engine(engine.clone()).await?;
    let orphans_removed = sandbox.reap_orphans().await?.len();
    let host = engine
        .host_facts()
        .await
        .unwrap_or_else(|why| HostFacts::unknown(&why));

    let mut bases = Vec::new();
    let mut problems = Vec::new();
    for kind in BaseKind::ALL {
        match find_base(&engine, kind).await {
            Ok(Some(base)) => bases.push(base),
            Ok(None) => {}
            Err(moved @ crate::image::ImageError::BaseMoved { .. }) => problems.push(Problem {
                problem: moved.to_string(),
                fix: kind.command(),
            }),
            Err(other) => return Err(other.into()),
        }
    }
    let toolchains = list_toolchains(&engine).await?;
    if bases.is_empty() {
        problems.push(Problem {
            problem: "no bootstrapped base image".into(),
            fix: "kiln image bootstrap".into(),
        });
    }
    // The newest toolchain runs the probe: it is what release steps will use.
    let probe_image = toolchains
        .iter()
        .max_by(|a, b| a.go_version.cmp(&b.go_version))
        .cloned();
    let mut checks = Vec::new();
    if let Some(image) = &probe_image {
        checks = run_probe(&sandbox, &engine, &image.id).await?;
        for check in checks.iter().filter(|c| !c.ok) {
            problems.push(Problem {
                problem: format!(
                    "sandbox {} is not hermetic: expected {}, observed {}",
                    check.name, check.expected, check.observed
                ),
                fix: match host.limit_for(check.name) {
                    Some(limit) => format!("a known limit of this engine: {limit}"),
                    None => "rebuild the toolchain image (`kiln image toolchain --go …`) and \
                             check the engine's configuration (userns, default network)"
                        .into(),
                },
            });
        }
    } else {
        problems.push(Problem {
            problem: "no toolchain image, so the sandbox probe could not run".into(),
            fix: "kiln image toolchain --go $(cat .go-version) (after `kiln image bootstrap`), \
                  or any release: it builds the toolchain of its Go"
                .into(),
        });
    }

    let report = DoctorReport {
        engine: engine.info().clone(),
        host,
        orphans_removed,
        bases,
        toolchains,
        probe_image: probe_image.map(|t| t.tag),
        checks,
        ok: problems.is_empty(),
        problems,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_probe(
    sandbox: &DockerSandbox,
    engine: &Engine,
    image: &str,
) -> miette::Result<Vec<IsolationCheck>> {
    let inspected = engine
        .docker()
        .inspect_image(image)
        .await
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot inspect the toolchain image {image}"))?;
    let image_env: BTreeSet<String> = inspected
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    let dir = tempfile::Builder::new()
        .prefix("kiln-doctor-")
        .tempdir()
        .into_diagnostic()
        .wrap_err("cannot create a temporary directory for the probe")?;
    // Run as root, hand the probe dir to an unprivileged uid, so the check shows that a step
    // runs as the worktree's owner and not as whoever started kiln.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(dir.path(), Some(4242), Some(4242))
            .into_diagnostic()
            .wrap_err("cannot hand the probe directory to uid 4242")?;
    }
    Ok(probe_isolation(sandbox, image, &image_env, dir.path()).await?)
}

fn print_report(report: &DoctorReport) {
    let engine = &report.engine;
    println!(
        "engine     {} {} (API {}, {})",
        engine.product, engine.server_version, engine.api_version, engine.platform
    );
    println!("address    {}", engine.host);
    let host = &report.host;
    println!(
        "kind       {} ({}, cgroup v{}, runtime {}, storage {})",
        engine.kind,
        if host.rootless { "rootless" } else { "rootful" },
        if host.cgroup_version.is_empty() {
            "?"
        } else {
            &host.cgroup_version
        },
        host.runtime,
        host.storage
    );
    for limit in &host.limits {
        println!("limit      {limit}");
    }
    if report.orphans_removed > 0 {
        println!(
            "orphans    removed {} container(s) left by killed kiln runs",
            report.orphans_removed
        );
    }
    for base in &report.bases {
        let go = if base.go_version.is_empty() {
            "no Go".to_owned()
        } else {
            format!("go {}", base.go_version)
        };
        println!("base       {}  {go}  rootfs {}", base.tag, base.rootfs);
    }
    let pins = crate::image::GoPins::load(None)
        .map(|(p, _)| p)
        .unwrap_or_default();
    for toolchain in &report.toolchains {
        println!(
            "toolchain  {}  go {}  recipe {}",
            toolchain.tag, toolchain.go_version, toolchain.recipe
        );
        if let Some(archive) = &toolchain.go_archive {
            let pin = crate::image::ExactGo::parse(&toolchain.go_version)
                .ok()
                .and_then(|v| {
                    pins.of(&v, &crate::image::platform())
                        .into_iter()
                        .find(|p| p.digest == *archive)
                        .map(|p| p.file.clone())
                });
            match pin {
                Some(file) => println!("           archive {archive} (pinned: {file})"),
                None => println!("           archive {archive} (not pinned in this kiln)"),
            }
        }
    }
    if let Some(image) = &report.probe_image {
        println!("\nsandbox isolation (probe step in {image}):");
        let mut table = Table::new(&["check", "expected", "observed", "ok"]);
        for check in &report.checks {
            table.row(vec![
                check.name.into(),
                check.expected.clone(),
                check.observed.clone(),
                if check.ok { "ok" } else { "FAIL" }.into(),
            ]);
        }
        print!("{}", table.render());
    }
    if report.problems.is_empty() {
        println!("\nall good");
    } else {
        println!();
        for problem in &report.problems {
            println!("problem: {}\n    fix: {}", problem.problem, problem.fix);
        }
    }
}
