//! [`FakeSandbox`]: a scripted sandbox for unit tests of code that drives steps (the
//! scheduler). It never stands in for the Docker tests of the hermetic contract.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream};

use super::{LogStream, Sandbox, SandboxError, StepEvent, StepExit, StepSpec};

/// What a scripted step prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FakeStep {
    /// Lines emitted, in order.
    pub(crate) lines: Vec<(LogStream, String)>,
    /// How the step ends.
    pub(crate) exit: StepExit,
    /// Files the step writes, by container path (resolved through the step's bind mounts).
    pub(crate) writes: Vec<(String, Vec<u8>)>,
}

impl FakeStep {
    /// A step that prints `stdout` lines and exits 0.
    #[must_use]
    pub(crate) fn succeeds(stdout: &[&str]) -> Self {
        Self {
            lines: stdout
                .iter()
                .map(|l| (LogStream::Stdout, (*l).to_owned()))
                .collect(),
            exit: StepExit {
                code: 0,
                oom_killed: false,
            },
            writes: Vec::new(),
        }
    }

    /// Also writes `bytes` at the container path `path` when it runs.
    #[must_use]
    pub(crate) fn writing(mut self, path: &str, bytes: &[u8]) -> Self {
        self.writes.push((path.to_owned(), bytes.to_vec()));
        self
    }

    /// A step that prints `stderr` lines and exits with `code`.
    #[must_use]
    pub(crate) fn fails(code: i64, stderr: &[&str]) -> Self {
        Self {
            lines: stderr
                .iter()
                .map(|l| (LogStream::Stderr, (*l).to_owned()))
                .collect(),
            exit: StepExit {
                code,
                oom_killed: false,
            },
            writes: Vec::new(),
        }
    }
}

/// Plays back [`FakeStep`]s by step name and records every [`StepSpec`] it was given.
/// A step without a script succeeds silently.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeSandbox {
    scripts: Arc<Mutex<HashMap<String, FakeStep>>>,
    ran: Arc<Mutex<Vec<StepSpec>>>,
}

impl FakeSandbox {
    /// A sandbox with no scripts.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Scripts the step named `name`.
    ///
    /// # Panics
    /// If another thread panicked while holding the script table.
    #[must_use]
    pub(crate) fn script(self, name: &str, step: FakeStep) -> Self {
        self.scripts
            .lock()
            .expect("fake sandbox lock poisoned")
            .insert(name.to_owned(), step);
        self
    }

    /// Every step run so far, in order.
    ///
    /// # Panics
    /// If another thread panicked while holding the record.
    #[must_use]
    pub(crate) fn ran(&self) -> Vec<StepSpec> {
        self.ran.lock().expect("fake sandbox lock poisoned").clone()
    }
}

impl Sandbox for FakeSandbox {
    fn run(&self, step: StepSpec) -> BoxStream<'static, Result<StepEvent, SandboxError>> {
        if let Err(error) = step.validate() {
            return Box::pin(stream::once(async { Err(error) }));
        }
        let script = self
            .scripts
            .lock()
            .expect("fake sandbox lock poisoned")
            .get(&step.name)
            .cloned()
            .unwrap_or_else(|| FakeStep::succeeds(&[]));
        for (path, bytes) in &script.writes {
            let host = step.mounts.iter().find_map(|m| {
                let rest = path.strip_prefix(&m.target)?.strip_prefix('/')?;
                (!m.read_only).then(|| m.source.join(rest))
            });
            let written = host.map(|host| {
                host.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(host, bytes))
            });
            if !matches!(written, Some(Ok(()))) {
                let error = SandboxError::InvalidSpec {
                    step: step.name.clone(),
                    reason: format!("fake step cannot write {path}: no writable mount"),
                };
                return Box::pin(stream::once(async { Err(error) }));
            }
        }
        let container = format!("fake-{}", step.name);
        self.ran
            .lock()
            .expect("fake sandbox lock poisoned")
            .push(step);
        let events = std::iter::once(StepEvent::Started { container })
            .chain(
                script
                    .lines
                    .into_iter()
                    .map(|(stream, line)| StepEvent::Log { stream, line }),
            )
            .chain(std::iter::once(StepEvent::Finished(script.exit)))
            .map(Ok);
        Box::pin(stream::iter(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::run_to_end;

    #[tokio::test]
    async fn scripted_failure_is_reported_with_its_stderr_tail() {
        let sandbox = FakeSandbox::new().script("rebase", FakeStep::fails(3, &["CONFLICT a.go"]));
        let err = run_to_end(&sandbox, StepSpec::new("rebase", "img", ["git"]), |_| {})
            .await
            .unwrap_err();
        match err {
            SandboxError::StepFailed {
                step,
                code,
                stderr_tail,
            } => {
                assert_eq!((step.as_str(), code), ("rebase", 3));
                assert_eq!(stderr_tail, vec!["CONFLICT a.go"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sandbox.ran().len(), 1);
    }

    #[tokio::test]
    async fn unscripted_step_succeeds_and_output_is_collected() {
        let sandbox = FakeSandbox::new().script("tag", FakeStep::succeeds(&["a", "b"]));
        let out = run_to_end(&sandbox, StepSpec::new("tag", "img", ["x"]), |_| {})
            .await
            .unwrap();
        assert_eq!(out.stdout, vec!["a", "b"]);
        run_to_end(&sandbox, StepSpec::new("other", "img", ["x"]), |_| {})
            .await
            .unwrap();
        assert_eq!(
            sandbox
                .ran()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["tag", "other"]
        );
    }
}
