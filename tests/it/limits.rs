//! kiln.toml's `[steps]`: a step past its timeout is stopped, names the setting, and its
//! progress says what it was running; a bad `[steps]` is refused before anything runs.

use crate::common::{World, docker_or_skip, text};

/// A download server that takes connections and never answers: a hung download.
fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn a_step_past_its_timeout_is_stopped_and_shows_what_it_ran() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let toml = world.path().join("kiln.toml");
    let mut text_toml = std::fs::read_to_string(&toml).unwrap();
    text_toml.push_str(
        "\n[steps]\ntimeout = \"10m\"\nmemory = \"1GiB\"\n\n[steps.k3s-download]\ntimeout = \"8s\"\nmemory = \"301MiB\"\n",
    );
    std::fs::write(&toml, text_toml).unwrap();
    let (listener, url) = silent_server();
    // Connections are accepted by the kernel's backlog and held open, unanswered.
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for client in listener.incoming().take(8) {
            open.push(client);
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    let started = std::time::Instant::now();
    let kiln = crate::common::kiln()
        .current_dir(world.path())
        .arg("--store")
        .arg(world.store())
        .env("KILN_DOWNLOAD_MIRROR", &url)
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it hangs, the step's container carries its own memory limit.
    let engine = docker.sandbox.engine().docker().clone();
    let filters = std::collections::HashMap::from([("label", vec!["kiln.step=k3s-download"])]);
    let mut limited = false;
    while !limited && started.elapsed() < std::time::Duration::from_secs(90) {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        for container in engine.list_containers(Some(options)).await.unwrap() {
            let id = container.id.unwrap();
            if let Ok(inspected) = engine.inspect_container(&id, None).await {
                let memory = inspected.host_config.and_then(|h| h.memory);
                limited |= memory == Some(301 << 20);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let output = kiln.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        limited,
        "no k3s-download container with its 301 MiB limit was seen"
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("step `k3s-download` ran past its timeout of 8s"),
        "{stderr}"
    );
    assert!(stderr.contains("[steps.k3s-download]"), "{stderr}");
    // The error and the progress name the hung command: kiln's curl, asking the silent
    // mirror (the first sample may have caught the script before it).
    let said = stderr
        .lines()
        .find(|l| l.contains("ran past its timeout"))
        .unwrap();
    assert!(
        said.contains("while running `") && said.contains("curl"),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("    k3s-download $ ")),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(120), "{took:?}");
    drop(held);
}

#[test]
fn a_bad_steps_table_is_refused_naming_the_setting() {
    let world = World::new();
    let toml = world.path().join("kiln.toml");
    let original = std::fs::read_to_string(&toml).unwrap();
    for (extra, says) in [
        (
            "[steps.tidy]\ntimeout = \"1h\"\n",
            "no release step is named `tidy`; the steps are rebase, tag",
        ),
        (
            "[steps]\ntimeout = \"1 hour\"\n",
            "[steps] timeout: `1 hour` is not a duration",
        ),
        (
            "[steps.build]\nmemory = \"1MiB\"\n",
            "[steps.build] memory: `1MiB` is below the 6 MiB",
        ),
        ("[steps.tag]\ncpus = 2\n", "unknown field `cpus`"),
    ] {
        std::fs::write(&toml, format!("{original}\n{extra}")).unwrap();
        let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
        let (_, stderr) = text(&output);
        assert!(!output.status.success(), "{extra}: {stderr}");
        assert!(stderr.contains(says), "{extra}: {stderr}");
        assert_eq!(world.records(), 0, "{extra}: a step ran");
    }
}
