//! Draws engine events on stderr: one spinner per running step on a terminal, plain lines
//! otherwise (CI logs).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::EngineEvent;
use crate::sandbox::LogStream;

/// Renders events until the sender is dropped.
pub(super) async fn render(mut events: UnboundedReceiver<EngineEvent>, show_logs: bool) {
    let terminal = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    // Without a terminal, when each running step last said what it runs.
    let mut said: HashMap<String, Instant> = HashMap::new();
    while let Some(event) = events.recv().await {
        if !terminal {
            match event {
                EngineEvent::Command { step, command } => {
                    // A long step's first command at once, then one line a while at most.
                    if said
                        .get(&step)
                        .is_none_or(|at| at.elapsed() >= COMMAND_LINE_EVERY)
                    {
                        eprintln!("    {step} $ {}", shorten(&command));
                        said.insert(step, Instant::now());
                    }
                }
                EngineEvent::Cached { step, key } => {
                    eprintln!("==> {step}: cached ({})", key.short());
                }
                EngineEvent::Waiting { step, key } => {
                    eprintln!(
                        "==> {step}: waiting for the lock on {} (another kiln run is running this step)",
                        key.short()
                    );
                }
                EngineEvent::Started { step, key } => {
                    eprintln!("==> {step}: running ({})", key.short());
                }
                EngineEvent::Log { step, stream, line } => {
                    if show_logs || stream == LogStream::Stderr {
                        eprintln!("    {step} | {line}");
                    }
                }
                EngineEvent::Finished { step, seconds, .. } => {
                    eprintln!("==> {step}: done in {seconds:.1} s");
                }
            }
            continue;
        }
        match event {
            EngineEvent::Cached { step, key } => {
                let _ = multi.println(format!("✓ {step} cached ({})", key.short()));
            }
            EngineEvent::Waiting { step, key } => {
                let _ = multi.println(format!(
                    "… {step} waiting for the lock on {} (another kiln run is running this step)",
                    key.short()
                ));
            }
            EngineEvent::Started { step, key } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed}] {prefix}: {wide_msg}")
                        .expect("the template is valid"),
                );
                bar.set_prefix(step.clone());
                bar.set_message(format!("running ({})", key.short()));
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(step, bar);
            }
            EngineEvent::Log { step, line, .. } => {
                // --logs: every line stays on screen above the spinners; without it, the
                // latest line is the spinner's message.
                if show_logs {
                    let _ = multi.println(format!("    {step} | {line}"));
                }
                if let Some(bar) = bars.get(&step) {
                    bar.set_message(line);
                }
            }
            EngineEvent::Command { step, command } => {
                if let Some(bar) = bars.get(&step) {
                    bar.set_prefix(format!("{step} $ {}", shorten(&command)));
                }
            }
            EngineEvent::Finished { step, seconds, .. } => {
                if let Some(bar) = bars.remove(&step) {
                    bar.finish_and_clear();
                }
                let _ = multi.println(format!("✓ {step} done in {seconds:.1} s"));
            }
        }
    }
    for bar in bars.into_values() {
        bar.finish_and_clear();
    }
}

/// Without a terminal, how often at most a running step's current command is printed.
const COMMAND_LINE_EVERY: Duration = Duration::from_secs(30);

/// A command line cut to what fits a progress line.
fn shorten(command: &str) -> String {
    const MAX: usize = 72;
    if command.chars().count() <= MAX {
        return command.to_owned();
    }
    let mut cut: String = command.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

/// Runs `work` with a sender of engine events while drawing them on stderr; returns what
/// `work` returns once both are done (`work` drops the sender when it finishes).
pub(super) async fn drawn<T, F: std::future::Future<Output = T>>(
    show_logs: bool,
    work: impl FnOnce(tokio::sync::mpsc::UnboundedSender<EngineEvent>) -> F,
) -> T {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (result, ()) = tokio::join!(work(tx), render(rx, show_logs));
    result
}
