//! The signals that stop kiln: Ctrl-C (SIGINT), SIGTERM (a CI runner or `kill`) and SIGHUP (a
//! closed terminal), each with the exit code shells report for it (128 + its number).

use tokio::signal::unix::{SignalKind, signal};

/// A stopping signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stop {
    /// Its name, for the message.
    pub(super) name: &'static str,
    /// 128 + its number.
    pub(super) exit_code: u8,
}

/// Waits for the first of SIGINT, SIGTERM and SIGHUP. A handler that cannot be installed
/// (it always can on Linux) never fires rather than failing the command.
pub(super) async fn first() -> Stop {
    let wait = |kind: SignalKind, stop: Stop| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                stop
            }
            Err(error) => {
                tracing::warn!(%error, signal = stop.name, "cannot listen for a signal");
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        stop = wait(SignalKind::interrupt(), Stop { name: "interrupted", exit_code: 130 }) => stop,
        stop = wait(SignalKind::terminate(), Stop { name: "terminated", exit_code: 143 }) => stop,
        stop = wait(SignalKind::hangup(), Stop { name: "hung up", exit_code: 129 }) => stop,
    }
}
