//! Crash points for tests of crash safety: when `KILN_FAILPOINT` names a point, the process
//! kills itself there with SIGKILL — no destructor, no flush — exactly as `kill -9` would.
//! Compiled in only with the `failpoints` feature (the test command's build); without it a
//! point is nothing at all, so no environment variable can make a captain's kiln kill itself.

/// Dies with SIGKILL if `KILN_FAILPOINT` is `name` (with the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    if std::env::var_os("KILN_FAILPOINT").is_some_and(|v| v == name) {
        tracing::warn!(failpoint = name, "KILN_FAILPOINT: killing this process");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; the process is gone before this line.
        std::process::abort();
    }
}

/// A crash point of a build without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline]
pub(crate) fn hit(_name: &str) {}

/// The error a call at point `name` fails with when `KILN_FAILPOINT` is `<name>=<ERRNO>`
/// (`flock=ENOLCK`, say), with the `failpoints` feature; `None` otherwise. For faults a test
/// cannot provoke with a real file system on this machine (a file system without locks).
#[cfg(feature = "failpoints")]
#[must_use]
pub(crate) fn error(name: &str) -> Option<std::io::Error> {
    let value = std::env::var("KILN_FAILPOINT").ok()?;
    let (point, errno) = value.split_once('=')?;
    if point != name {
        return None;
    }
    let code = match errno {
        "EIO" => 5,
        "ENOSPC" => 28,
        "ENOLCK" => 37,
        "ENOTSUP" | "EOPNOTSUPP" => 95,
        _ => return None,
    };
    Some(std::io::Error::from_raw_os_error(code))
}

/// An injected error of a build without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline]
#[must_use]
pub(crate) fn error(_name: &str) -> Option<std::io::Error> {
    None
}
