//! Progress on stderr: a spinner on a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::image::ImageProgress;

/// Draws phases and tool output of one long operation.
pub(super) struct Progress {
    spinner: Option<ProgressBar>,
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub(super) fn new() -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {prefix} {wide_msg}")
                    .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { spinner }
    }

    /// Shows one event.
    pub(super) fn image(&self, event: ImageProgress) {
        match (&self.spinner, event) {
            (Some(bar), ImageProgress::Phase(phase)) => {
                bar.println(format!("==> {phase}"));
                bar.set_prefix(phase);
                bar.set_message("");
            }
            (Some(bar), ImageProgress::Line(line)) => bar.set_message(line),
            (None, ImageProgress::Phase(phase)) => eprintln!("==> {phase}"),
            (None, ImageProgress::Line(line)) => eprintln!("    {line}"),
        }
    }

    /// Removes the spinner.
    pub(super) fn finish(self) {
        if let Some(bar) = self.spinner {
            bar.finish_and_clear();
        }
    }
}
