//! Steps on an `ssh://` engine: a private `sshd` on loopback (its own host key, one authorized
//! client key, `known_hosts` pre-filled, no passwords) forwards this machine's engine socket.
//! kiln is given only `DOCKER_HOST=ssh://root@127.0.0.1:PORT/<socket>` and
//! `KILN_SSH_COMMAND="ssh -F <config>"`: the demo release runs with every mount copied, gives
//! the local lockfile, and leaves no forwarder behind.

use crate::common::TimedOutput as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{self, World, containers_created_by, docker_or_skip, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen is installed (scripts/test installs openssh-client)");
    assert!(status.success());
}

impl Sshd {
    /// Starts one and checks that root can log in with the client key. Without PAM, sshd
    /// refuses a root account whose password is locked (`!` in /etc/shadow, as some images
    /// have it): then it is started again with PAM, which does not.
    fn start() -> Option<Self> {
        if !Path::new("/usr/sbin/sshd").is_file() {
            common::skip("sshd is not installed (scripts/test installs openssh-server)");
            return None;
        }
        let sshd = Self::spawn(false);
        if sshd.root_can_log_in() {
            return Some(sshd);
        }
        let log = sshd.log();
        drop(sshd);
        assert!(
            log.contains("locked"),
            "root cannot log in to the test sshd: {log}"
        );
        let sshd = Self::spawn(true);
        assert!(
            sshd.root_can_log_in(),
            "root cannot log in to the test sshd, even with PAM: {}",
            sshd.log()
        );
        Some(sshd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn root_can_log_in(&self) -> bool {
        Command::new("ssh")
            .args(["-F"])
            .arg(self.dir.path().join("ssh_config"))
            .args([
                "-p",
                &self.port.to_string(),
                "-o",
                "BatchMode=yes",
                "-l",
                "root",
                "--",
            ])
            .args(["127.0.0.1", "true"])
            .stdin(Stdio::null())
            .timed_output()
            .is_ok_and(|o| o.status.success())
    }

    fn spawn(pam: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\n\
                 AuthorizedKeysFile {0}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nAllowStreamLocalForwarding yes\nUsePAM {1}\n",
                d.display(),
                if pam { "yes" } else { "no" }
            ),
        )
        .unwrap();
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {0}/client_key\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {0}/known_hosts\n  StrictHostKeyChecking yes\n  \
                 GlobalKnownHostsFile /dev/null\n",
                d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sshd = Self { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sshd;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not start: {}", sshd.log());
    }

    fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.path().join("ssh_config").display())
    }
}

/// The forwarders kiln started: `ssh` processes whose command line names this sshd's config.
fn forwarders(sshd: &Sshd) -> usize {
    let config = sshd.dir.path().join("ssh_config");
    let needle = config.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            words.first().is_some_and(|w| w.ends_with(b"ssh")) && words.contains(&needle.as_bytes())
        })
        .count()
}

#[tokio::test]
async fn the_demo_release_runs_on_an_ssh_engine_with_copied_mounts() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let local =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let socket = local
        .strip_prefix("unix://")
        .expect("the test engine is a unix socket");
    let host = format!("ssh://root@127.0.0.1:{}{socket}", sshd.port);

    // An unknown host key is refused, not accepted.
    let known = sshd.dir.path().join("known_hosts");
    let saved = std::fs::read(&known).unwrap();
    std::fs::write(&known, "").unwrap();
    let output = crate::common::kiln()
        .env("DOCKER_HOST", &host)
        .env("KILN_SSH_COMMAND", sshd.ssh_command())
        .args(["doctor", "--json"])
        .timed_output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output).1;
    assert!(stderr.contains("over ssh"), "{stderr}");
    std::fs::write(&known, saved).unwrap();
    assert_eq!(forwarders(&sshd), 0, "a failed forwarder was left running");

    let world = World::new();
    let mut command = crate::common::kiln();
    command
        .current_dir(world.path())
        .env("DOCKER_HOST", &host)
        .env("KILN_SSH_COMMAND", sshd.ssh_command())
        .arg("--store")
        .arg(world.store())
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
    let (output, created) = containers_created_by(&docker, command).await;
    assert!(output.status.success(), "{}", text(&output).1);
    // Every step container of this run (the engine behind ssh is this machine's) got its
    // mounts copied, none bind-mounted.
    let mounts: Vec<&str> = created
        .iter()
        .filter_map(|labels| labels.get(kiln::sandbox::LABEL_MOUNTS).map(String::as_str))
        .collect();
    assert!(mounts.iter().all(|m| *m == "copied"), "{created:?}");
    common::assert_created(mounts.len(), 6, 8, &output);
    // sshd saw kiln's forwarder log in and forward the socket.
    let log = sshd.log();
    assert!(log.contains("Accepted publickey for root"), "{log}");
    assert_eq!(forwarders(&sshd), 0, "kiln left its ssh forwarder running");

    // The same lockfile as the committed demo lockfile's rebuild on the local engine.
    let local_world = World::new();
    local_world.release("v1.28.2", &[]);
    assert_eq!(
        std::fs::read_to_string(world.path().join(LOCK)).unwrap(),
        std::fs::read_to_string(local_world.path().join(LOCK)).unwrap()
    );
}
