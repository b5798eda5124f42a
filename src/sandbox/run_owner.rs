//! Which kiln process owns a container, and whether that process is still alive.
//!
//! Every step container carries the label `kiln.owner` = `m=<machine-id>;b=<boot-id>;p=<pid>;
//! t=<process start time>`. A later kiln start removes containers whose owner is provably gone
//! (same machine, and either another boot or no process with that pid and start time); a
//! container owned by a live process, or by another machine sharing the engine, is never
//! touched. The start time guards against pid reuse.

/// The identity of one kiln process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunOwner {
    machine: String,
    boot: String,
    pid: u32,
    start: u64,
}

/// Whether a container's owner still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The owning process runs: leave its containers alone.
    Alive,
    /// The owning process is gone: its containers are orphans.
    Gone,
    /// Owned from another machine (or unreadable): not ours to judge.
    Unknown,
}

impl RunOwner {
    /// The current process.
    #[must_use]
    pub(crate) fn current() -> Self {
        let boot = read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let machine = read_trimmed("/etc/machine-id")
            .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
            // Without a machine id, the boot id stands in: a later boot then reads as another
            // machine (Unknown), which errs on the side of leaving containers alone.
            .unwrap_or_else(|| format!("boot-{boot}"));
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or(0);
        Self {
            machine,
            boot,
            pid,
            start,
        }
    }

    /// The `kiln.owner` label value.
    #[must_use]
    pub(crate) fn label_value(&self) -> String {
        format!(
            "m={};b={};p={};t={}",
            self.machine, self.boot, self.pid, self.start
        )
    }

    /// Parses a `kiln.owner` label value.
    #[must_use]
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut machine = None;
        let mut boot = None;
        let mut pid = None;
        let mut start = None;
        for part in text.split(';') {
            let (key, value) = part.split_once('=')?;
            match key {
                "m" => machine = Some(value.to_owned()),
                "b" => boot = Some(value.to_owned()),
                "p" => pid = value.parse().ok(),
                "t" => start = value.parse().ok(),
                _ => return None,
            }
        }
        Some(Self {
            machine: machine?,
            boot: boot?,
            pid: pid?,
            start: start?,
        })
    }

    /// Whether the process this identifies still runs, judged from `me`'s machine.
    pub(crate) fn liveness(&self, me: &Self) -> Liveness {
        self.liveness_with(me, process_start_time)
    }

    fn liveness_with(&self, me: &Self, start_of: impl Fn(u32) -> Option<u64>) -> Liveness {
        if self.machine != me.machine || self.machine.is_empty() {
            return Liveness::Unknown;
        }
        if self.boot != me.boot {
            return Liveness::Gone;
        }
        match start_of(self.pid) {
            Some(start) if start == self.start => Liveness::Alive,
            _ => Liveness::Gone,
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Field 22 of `/proc/<pid>/stat`: the process start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(machine: &str, boot: &str, pid: u32, start: u64) -> RunOwner {
        RunOwner {
            machine: machine.into(),
            boot: boot.into(),
            pid,
            start,
        }
    }

    #[test]
    fn label_round_trips() {
        let me = RunOwner::current();
        assert_eq!(RunOwner::parse(&me.label_value()), Some(me));
        assert_eq!(RunOwner::parse("m=a;b=b;p=x;t=1"), None);
        assert_eq!(RunOwner::parse("garbage"), None);
    }

    #[test]
    fn current_process_is_alive_and_has_a_start_time() {
        let me = RunOwner::current();
        assert!(me.start > 0);
        assert_eq!(me.liveness(&me), Liveness::Alive);
    }

    #[test]
    fn judges_by_machine_boot_pid_and_start_time() {
        let me = owner("m1", "b1", 10, 100);
        let start_of = |pid| (pid == 42).then_some(500);
        assert_eq!(
            owner("m2", "b1", 42, 500).liveness_with(&me, start_of),
            Liveness::Unknown
        );
        assert_eq!(
            owner("m1", "b0", 42, 500).liveness_with(&me, start_of),
            Liveness::Gone
        );
        assert_eq!(
            owner("m1", "b1", 42, 500).liveness_with(&me, start_of),
            Liveness::Alive
        );
        // Same pid, another start time: the pid was reused.
        assert_eq!(
            owner("m1", "b1", 42, 499).liveness_with(&me, start_of),
            Liveness::Gone
        );
        assert_eq!(
            owner("m1", "b1", 43, 500).liveness_with(&me, start_of),
            Liveness::Gone
        );
    }
}
