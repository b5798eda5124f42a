//! Crash points for tests of crash safety: when `KILN_FAILPOINT` names a point, the process
//! kills itself there with SIGKILL — no destructor, no flush — exactly as `kill -9` would.
//! Unset (always, outside those tests), a point costs one environment lookup.

/// Dies with SIGKILL if `KILN_FAILPOINT` is `name`.
pub fn hit(name: &str) {
    if std::env::var_os("KILN_FAILPOINT").is_some_and(|v| v == name) {
        tracing::warn!(failpoint = name, "KILN_FAILPOINT: killing this process");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; the process is gone before this line.
        std::process::abort();
    }
}
