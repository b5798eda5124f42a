//! Steps on a remote engine: a second `dockerd` listening on 127.0.0.1 over TCP with TLS
//! (certificates made here with openssl), reached only through `DOCKER_HOST`,
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`. Inputs go in as tar streams and outputs come
//! back the same way: no host directory is bind-mounted, and the lockfile is the local one.

use crate::common::TimedOutput as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use futures::TryStreamExt as _;

use crate::common::{self, World, docker_or_skip, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .timed_output()
        .expect("openssl is installed (scripts/setup)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`; the client's
/// files are `ca.pem`, `cert.pem`, `key.pem` (what `DOCKER_CERT_PATH` names).
fn make_certs(dir: &Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=kiln-test-ca",
            days[0],
            days[1],
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject, ext) in [
        ("server", "/CN=127.0.0.1", "server.ext"),
        ("client", "/CN=kiln-test-client", "client.ext"),
    ] {
        let (key, cert) = if name == "server" {
            ("server-key.pem", "server-cert.pem")
        } else {
            ("key.pem", "cert.pem")
        };
        let csr = format!("{name}.csr");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", &csr, "-subj",
                subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                cert,
                "-extfile",
                ext,
                days[0],
                days[1],
            ],
        );
    }
}

/// A second dockerd with its own roots, on TLS TCP; stopped by its pid on drop.
struct RemoteEngine {
    child: Option<Child>,
    data: tempfile::TempDir,
    exec_root: PathBuf,
    certs: tempfile::TempDir,
    host: String,
}

impl RemoteEngine {
    fn start() -> Self {
        let certs = tempfile::tempdir().unwrap();
        make_certs(certs.path());
        let data = tempfile::Builder::new()
            .prefix("kiln-remote-engine-")
            .tempdir_in("/var/tmp")
            .unwrap();
        // Socket paths under the exec root must stay short.
        let exec_root = PathBuf::from(format!("/run/kiln-rt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&exec_root);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("tcp://127.0.0.1:{port}");
        let c = certs.path();
        let log = std::fs::File::create(data.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&host)
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(c.join("ca.pem"))
            .arg("--tlscert")
            .arg(c.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(c.join("server-key.pem"))
            .arg("--data-root")
            .arg(data.path().join("root"))
            .arg("--exec-root")
            .arg(&exec_root)
            .arg("--pidfile")
            .arg(data.path().join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed (scripts/setup)");
        let engine = Self {
            child: Some(child),
            data,
            exec_root,
            certs,
            host,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(engine.host.trim_start_matches("tcp://")).is_ok() {
                return engine;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the TLS dockerd did not start: {}",
            std::fs::read_to_string(engine.data.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    /// `kiln` pointed at this engine, and only this one.
    fn kiln(&self) -> Command {
        let mut command = common::kiln();
        command
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", self.certs.path());
        command
    }
}

impl Drop for RemoteEngine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: dockerd stops its containers and unmounts its layers.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..300 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

#[tokio::test]
async fn the_demo_release_runs_on_a_tls_tcp_engine_without_bind_mounts() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let remote = RemoteEngine::start();
    let client = tempfile::tempdir().unwrap();
    // A client without the engine's certificate is refused.
    let output = common::kiln()
        .env("DOCKER_HOST", &remote.host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", client.path())
        .args(["doctor", "--json"])
        .timed_output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output).0);

    // The toolchain image of the release's Go (v1.28.2's .go-version) and its base move to the
    // remote engine the way a team would seed a build host.
    let output = common::kiln()
        .args(["image", "toolchain", "--go", "1.22.10", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let toolchain: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Toolchain images are found by their recipe label, not a tag: export by id.
    let tag = toolchain["id"].as_str().unwrap().to_owned();
    let local = docker.sandbox.engine().docker().clone();
    let exported: Vec<bytes::Bytes> = local
        .export_images(&[tag.as_str(), "kiln/base:bookworm"])
        .try_collect()
        .await
        .unwrap();
    let remote_docker = bollard::Docker::connect_with_ssl(
        &remote.host,
        &remote.certs.path().join("key.pem"),
        &remote.certs.path().join("cert.pem"),
        &remote.certs.path().join("ca.pem"),
        600,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap()
    .negotiate_version()
    .await
    .unwrap();
    let body = bollard::body_full(exported.concat().into());
    let _: Vec<_> = remote_docker
        .import_image(
            bollard::query_parameters::ImportImageOptionsBuilder::default().build(),
            body,
            None,
        )
        .try_collect()
        .await
        .unwrap();

    // Record every container the remote engine creates, with its labels.
    let events = remote_docker.clone();
    let since = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let world = World::new();
    let output = remote
        .kiln()
        .current_dir(world.path())
        .arg("--store")
        .arg(world.store())
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let until = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1
    );
    let filters =
        std::collections::HashMap::from([("type", vec!["container"]), ("event", vec!["create"])]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&since)
        .until(&until)
        .filters(&filters)
        .build();
    let created: Vec<_> = events.events(Some(options)).try_collect().await.unwrap();
    let mounts: Vec<String> = created
        .iter()
        .filter_map(|e| {
            e.actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get(kiln::sandbox::LABEL_MOUNTS))
                .cloned()
        })
        .collect();
    assert_eq!(mounts, ["copied"; 6], "{created:?}");

    // The same lockfile as a release on the local engine.
    let local_world = World::new();
    local_world.release("v1.28.2", &[]);
    assert_eq!(
        std::fs::read_to_string(world.path().join(LOCK)).unwrap(),
        std::fs::read_to_string(local_world.path().join(LOCK)).unwrap()
    );
}
