//! `ssh://[user@]host[:port][/socket]` engines: kiln runs the user's own `ssh` (their config,
//! keys and agent, `known_hosts` checked, no prompts) to forward the engine's socket to a
//! private unix socket here, and talks to that. The engine's filesystem is not this machine's,
//! so steps get their mounts copied in (see `copy.rs`). The forwarder is kiln's child and is
//! stopped when the last handle to the engine goes.
//!
//! `KILN_SSH_COMMAND` replaces `ssh` (split on whitespace, never through a shell), as
//! `GIT_SSH_COMMAND` does for git: e.g. `ssh -F /path/to/config`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::SandboxError;

/// The engine socket on the far side when the URL names none.
const REMOTE_SOCKET: &str = "/var/run/docker.sock";

/// How long the forwarder gets to bring the socket up.
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(20);

/// What an `ssh://` address names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SshTarget {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    socket: String,
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port][/socket]`; every part is checked against an
    /// allowlist, since each becomes an argument of `ssh`.
    pub(super) fn parse(url: &str) -> Result<Self, SandboxError> {
        let bad = |reason: &str| SandboxError::BadSshHost {
            host: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("not an ssh:// address"))?;
        let (authority, socket) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, REMOTE_SOCKET),
        };
        let (user, host_port) = match authority.split_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, authority),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
                ),
            ),
            None => (host_port, None),
        };
        if let Some(user) = user
            && !plain(user)
        {
            return Err(bad(
                "the user name may hold only letters, digits, `.`, `_` and `-`",
            ));
        }
        if !plain(host) {
            return Err(bad(
                "the host may hold only letters, digits, `.`, `_` and `-`",
            ));
        }
        let socket_ok = socket.starts_with('/')
            && !socket.contains("/../")
            && socket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !socket_ok {
            return Err(bad(
                "the socket path must be absolute, of letters, digits, `._-/`",
            ));
        }
        Ok(Self {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            socket: socket.to_owned(),
        })
    }
}

/// A running forwarder: the local socket, and the `ssh` child serving it.
#[derive(Debug)]
pub(super) struct Tunnel {
    child: Child,
    dir: tempfile::TempDir,
}

impl Tunnel {
    /// The local socket, as a `unix://` address.
    pub(super) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// Starts `ssh` forwarding `target`'s engine socket and waits until it is up.
    pub(super) async fn open(url: &str, target: &SshTarget) -> Result<Self, SandboxError> {
        let failed = |reason: String| SandboxError::SshTunnel {
            host: url.to_owned(),
            reason,
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir()
            .map_err(|e| failed(format!("cannot make a private directory: {e}")))?;
        let socket = dir.path().join("docker.sock");
        let log_path = dir.path().join("ssh.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| failed(format!("cannot write {}: {e}", log_path.display())))?;
        let command = std::env::var("KILN_SSH_COMMAND")
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "ssh".to_owned());
        let mut words = command.split_whitespace();
        let program = words.next().unwrap_or("ssh");
        let mut ssh = Command::new(program);
        ssh.args(words)
            .args([
                "-nNT",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "BatchMode=yes",
            ])
            .arg("-L")
            .arg(format!("{}:{}", socket.display(), target.socket));
        if let Some(port) = target.port {
            ssh.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &target.user {
            ssh.arg("-l").arg(user);
        }
        ssh.arg("--")
            .arg(&target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = ssh
            .spawn()
            .map_err(|e| failed(format!("cannot run `{program}`: {e}")))?;
        let mut tunnel = Self { child, dir };
        let started = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(tunnel);
            }
            let exited = tunnel
                .child
                .try_wait()
                .map_err(|e| failed(format!("cannot watch ssh: {e}")))?;
            if exited.is_some() || started.elapsed() > TUNNEL_TIMEOUT {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let said = said.trim();
                return Err(failed(match exited {
                    Some(status) => format!("ssh exited ({status}): {said}"),
                    None => format!(
                        "the forwarded socket did not come up in {} s: {said}",
                        TUNNEL_TIMEOUT.as_secs()
                    ),
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_hostile_parts_are_refused() {
        assert_eq!(
            SshTarget::parse("ssh://builder@build-1.example.com:2222/run/user/1000/docker.sock")
                .unwrap(),
            SshTarget {
                user: Some("builder".into()),
                host: "build-1.example.com".into(),
                port: Some(2222),
                socket: "/run/user/1000/docker.sock".into(),
            }
        );
        assert_eq!(
            SshTarget::parse("ssh://host").unwrap(),
            SshTarget {
                user: None,
                host: "host".into(),
                port: None,
                socket: REMOTE_SOCKET.into(),
            }
        );
        for bad in [
            "ssh://-oProxyCommand=x",
            "ssh://user@-host",
            "ssh://us er@host",
            "ssh://host:0",
            "ssh://host:99999",
            "ssh://host:22/relative/../x",
            "ssh://host/sock;rm",
            "ssh://",
            "ssh://@host",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
