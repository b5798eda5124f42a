//! How long a step may run and how much memory it may use: kiln.toml's `[steps]` (a default
//! for every step, and `[steps.<name>]` for one). Limits are not inputs: they never change a
//! step's key, only whether a run of it is allowed to finish.

use std::collections::BTreeMap;
use std::time::Duration;

/// One step's limits; `None` is no limit of kiln's own (the engine's default memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Wall time of the step's run: its container's life, inputs sent and outputs taken back
    /// included.
    pub(crate) timeout: Option<Duration>,
    /// Memory, swap included, in bytes.
    pub(crate) memory: Option<u64>,
}

/// The limits of every step of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StepLimits {
    /// For any step without its own.
    pub(crate) default: Limits,
    /// By step name; each field set overrides the default's.
    pub(crate) steps: BTreeMap<String, Limits>,
}

impl StepLimits {
    /// `step`'s limits.
    pub(crate) fn of(&self, step: &str) -> Limits {
        let own = self.steps.get(step).copied().unwrap_or_default();
        Limits {
            timeout: own.timeout.or(self.default.timeout),
            memory: own.memory.or(self.default.memory),
        }
    }
}

/// A duration as kiln.toml writes it: `90s`, `45m`, `3h`, `1h30m`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration: write it as `90s`, `45m`, `3h` or `1h30m`");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return (seconds > 0)
            .then(|| Duration::from_secs(seconds))
            .ok_or_else(bad);
    }
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A memory size as kiln.toml writes it: `512MiB`, `16GiB` (or `M`, `G`, `MB`, `GB`, all
/// binary), or plain bytes; at least 6 MiB, what the engine accepts.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a memory size: write it as `512MiB` or `16GiB`");
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = number.checked_mul(scale).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(format!("`{text}` is below the 6 MiB the engine accepts"));
    }
    Ok(bytes)
}

/// How a duration is said in messages: `1h30m`, `45m`, `90s`.
pub(crate) fn say_duration(duration: Duration) -> String {
    let s = duration.as_secs();
    let parts = [(s / 3600, "h"), (s / 60 % 60, "m"), (s % 60, "s")];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .concat();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_kiln_toml_writes_them() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("45m"), Ok(2700));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("3600"), Ok(3600));
        for bad in ["", "0", "0s", "1d", "h", "5m3", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("16GiB"), Ok(16 << 30));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        for bad in ["", "1MiB", "12TB", "GiB", "1.5GiB", "99999999999999999GiB"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(say_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(say_duration(Duration::from_secs(1)), "1s");
    }

    #[test]
    fn a_step_s_own_limits_override_the_default_field_by_field() {
        let limits = StepLimits {
            default: Limits {
                timeout: Some(Duration::from_secs(3600)),
                memory: Some(8 << 30),
            },
            steps: BTreeMap::from([(
                "tag".to_owned(),
                Limits {
                    timeout: Some(Duration::from_secs(7200)),
                    memory: None,
                },
            )]),
        };
        assert_eq!(
            limits.of("tag"),
            Limits {
                timeout: Some(Duration::from_secs(7200)),
                memory: Some(8 << 30)
            }
        );
        assert_eq!(limits.of("build"), limits.default);
    }
}
