//! The isolation probe `kiln doctor` runs: one step that reports what it can see, checked
//! against the hermetic contract.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{BindMount, DockerSandbox, SandboxError, StepSpec, run_to_end};

/// `SOURCE_DATE_EPOCH` the probe declares (2023-11-14T22:13:20Z); `date` must report it.
const PROBE_EPOCH: &str = "1700000000";

/// Variables the engine or the shell prologue add with fixed values; they carry nothing from
/// the host.
const ENGINE_VARS: [&str; 1] = ["HOSTNAME"];

/// The probe: `key=value` lines. It reads the step's own environment from PID 1, the step
/// process as the engine started it.
const PROBE_SCRIPT: &str = r#"
echo "uid=$(id -u):$(id -g)"
echo "umask=$(umask)"
echo "tz=$(date +%Z)"
echo "lc_all=${LC_ALL-}"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "clock=$(date -u +%s)"
echo "interfaces=$(ls /sys/class/net | tr '\n' ' ')"
if command -v bash >/dev/null 2>&1; then
  if timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80' 2>/dev/null; then
    echo "connect=succeeded"
  else
    echo "connect=failed"
  fi
else
  echo "connect=untested"
fi
touch /probe/written && echo "file_owner=$(stat -c %u:%g /probe/written)"
echo "cap_eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)"
echo "no_new_privs=$(awk '/^NoNewPrivs:/ { print $2 }' /proc/self/status)"
if touch /kiln-rootfs-probe 2>/dev/null; then echo "rootfs=writable"; else echo "rootfs=read-only"; fi
if touch /tmp/kiln-tmp-probe 2>/dev/null; then echo "tmp=writable"; else echo "tmp=read-only"; fi
pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo unknown)
echo "pids_max=$pids"
echo "rlimits=$(awk '/^Max open files/ { f = $4 ":" $5 } /^Max processes/ { p = $3 ":" $4 } END { print "nofile " f ", nproc " p }' /proc/self/limits)"
found=
for sock in /var/run/docker.sock /run/docker.sock /run/kiln-engine/docker.sock /run/podman/podman.sock; do
  [ -e "$sock" ] && found="$found $sock"
done
echo "engine_socket=${found:-none}"
echo "env=$(tr '\0' '\n' < /proc/1/environ | cut -d= -f1 | sort | tr '\n' ' ')"
"#;

/// One property of the sandbox, as expected and as observed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct IsolationCheck {
    /// What is checked (`network`, `user`, …).
    pub(crate) name: &'static str,
    /// What the hermetic contract requires.
    pub(crate) expected: String,
    /// What the probe saw.
    pub(crate) observed: String,
    /// Whether they agree.
    pub(crate) ok: bool,
}

/// Runs the probe in `image` with `probe_dir` bound at `/probe` (the step runs as its owner),
/// and checks what it reports. `image_env` are the variable names the image's own `ENV`
/// declares (they are part of the image's identity, so they may appear).
pub(crate) async fn probe_isolation(
    sandbox: &DockerSandbox,
    image: &str,
    image_env: &BTreeSet<String>,
    probe_dir: &Path,
) -> Result<Vec<IsolationCheck>, SandboxError> {
    let lent = super::LentTrees::lend(&[probe_dir])?;
    let owner = lent.user();
    let mut step = StepSpec::new("doctor-probe", image, ["/bin/sh", "-c", PROBE_SCRIPT])
        .env("SOURCE_DATE_EPOCH", PROBE_EPOCH)
        .env("KILN_PROBE", "declared");
    step.user = Some(owner);
    step.mounts.push(BindMount {
        source: probe_dir.to_owned(),
        target: "/probe".into(),
        read_only: false,
    });
    let declared: BTreeSet<String> = step.env.keys().cloned().collect();
    let output = run_to_end(sandbox, step, |_| {}).await;
    lent.give_back()?;
    let output = output?;
    let seen: BTreeMap<&str, &str> = output
        .stdout
        .iter()
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| {
        seen.get(key)
            .copied()
            .unwrap_or("(not reported)")
            .trim()
            .to_owned()
    };

    let owner_text = format!("{}:{}", owner.uid, owner.gid);
    let interfaces = get("interfaces");
    let connect = get("connect");
    let observed_rlimits = get("rlimits");
    let rlimits_hold = open_files_suffice(&observed_rlimits);
    let leaked: Vec<String> = get("env")
        .split_whitespace()
        .filter(|k| !declared.contains(*k) && !image_env.contains(*k) && !ENGINE_VARS.contains(k))
        .map(str::to_owned)
        .collect();
    let check = |name, expected: String, observed: String, ok| IsolationCheck {
        name,
        expected,
        observed,
        ok,
    };
    Ok(vec![
        check(
            "network",
            "none: loopback only, connects fail".into(),
            format!("interfaces: {interfaces}; connect {connect}"),
            interfaces == "lo" && connect == "failed",
        ),
        check(
            "user",
            format!("{owner_text}, not root (the worktree's owner, or the build user)"),
            format!(
                "process {}, files written {}",
                get("uid"),
                get("file_owner")
            ),
            get("uid") == owner_text && get("file_owner") == owner_text && !owner.is_root(),
        ),
        check(
            "capabilities",
            "none (CapEff 0), no new privileges".into(),
            format!(
                "CapEff {}, NoNewPrivs {}",
                get("cap_eff"),
                get("no_new_privs")
            ),
            get("cap_eff").trim_start_matches('0').is_empty()
                && !get("cap_eff").is_empty()
                && get("no_new_privs") == "1",
        ),
        check(
            "rootfs",
            "read-only image, writable /tmp".into(),
            format!("image {}, /tmp {}", get("rootfs"), get("tmp")),
            get("rootfs") == "read-only" && get("tmp") == "writable",
        ),
        check(
            "pids",
            format!("at most {} processes", super::STEP_PIDS_LIMIT),
            get("pids_max"),
            get("pids_max") == super::STEP_PIDS_LIMIT.to_string(),
        ),
        check(
            "rlimits",
            format!(
                "open files: hard limit at least {}",
                super::STEP_MIN_OPEN_FILES
            ),
            observed_rlimits,
            rlimits_hold,
        ),
        check(
            "engine socket",
            "none reachable".into(),
            get("engine_socket"),
            get("engine_socket") == "none",
        ),
        check(
            "env",
            "declared and image variables only".into(),
            if leaked.is_empty() {
                "nothing else".into()
            } else {
                format!("also: {}", leaked.join(" "))
            },
            leaked.is_empty(),
        ),
        check(
            "clock",
            format!("date -u +%s = {PROBE_EPOCH} (SOURCE_DATE_EPOCH)"),
            get("clock"),
            get("clock") == PROBE_EPOCH,
        ),
        check("umask", "0022".into(), get("umask"), get("umask") == "0022"),
        check(
            "timezone",
            "UTC, LC_ALL=C".into(),
            format!("{}, LC_ALL={}", get("tz"), get("lc_all")),
            get("tz") == "UTC" && get("lc_all") == "C",
        ),
        check(
            "hostname",
            super::STEP_HOSTNAME.into(),
            get("hostname"),
            get("hostname") == super::STEP_HOSTNAME,
        ),
    ])
}

/// Whether the probe's `rlimits` line (`nofile SOFT:HARD, nproc SOFT:HARD`) lets a step open
/// enough files: the hard limit is what a step can raise itself to (Go does so at start).
fn open_files_suffice(observed: &str) -> bool {
    observed
        .split(", ")
        .find_map(|part| part.strip_prefix("nofile "))
        .and_then(|limits| limits.split(':').nth(1))
        .is_some_and(|hard| {
            hard == "unlimited"
                || hard
                    .parse::<u64>()
                    .is_ok_and(|n| n >= super::STEP_MIN_OPEN_FILES)
        })
}

#[cfg(test)]
mod tests {
    use super::open_files_suffice;

    #[test]
    fn the_open_file_limit_is_judged_by_its_hard_value() {
        assert!(open_files_suffice("nofile 1024:1048576, nproc 96367:96367"));
        assert!(open_files_suffice("nofile 4096:4096, nproc 4096:4096"));
        assert!(open_files_suffice("nofile unlimited:unlimited, nproc 1:1"));
        assert!(!open_files_suffice("nofile 1024:1024, nproc 96367:96367"));
        assert!(!open_files_suffice("nofile 4096:4095, nproc 4096:4096"));
        assert!(!open_files_suffice("(not reported)"));
    }
}
