//! k3s's `channel.yaml`: the `stable` channel's `latest:` line, changed as text so every other
//! byte of the file stays as it was.

use std::fmt::Write as _;

/// Why the stable channel cannot be set.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum ChannelError {
    /// Not a GA version.
    #[error("`{version}` is not a GA k3s version")]
    #[diagnostic(
        code(kiln::channel::not_ga),
        help("stable only ever points at a GA release: vX.Y.Z+k3sN (no -rcN)")
    )]
    NotGa {
        /// What was given.
        version: String,
    },
    /// The file has no stable channel with a `latest:` line.
    #[error("{file} has no `latest:` line in a channel named stable")]
    #[diagnostic(
        code(kiln::channel::no_stable),
        help("the file should hold `- name: stable` followed by `latest: vX.Y.Z+k3sN`")
    )]
    NoStable {
        /// The file.
        file: String,
    },
}

/// Whether `version` is `vX.Y.Z+k3sN`.
#[must_use]
pub(crate) fn is_ga(version: &str) -> bool {
    version
        .parse::<crate::names::K3sVersion>()
        .is_ok_and(|v| v.rc.is_none())
}

/// The line index of the stable channel's `latest:` and its value.
fn stable_line(lines: &[&str]) -> Option<(usize, String)> {
    let is_name = |line: &str| {
        let t = line.trim_start();
        t.strip_prefix("- ")
            .map_or(t, str::trim_start)
            .starts_with("name:")
    };
    let name_of = |line: &str| {
        let t = line.trim_start();
        let t = t.strip_prefix("- ").map_or(t, str::trim_start);
        t.strip_prefix("name:").map(|v| {
            v.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\''])
                .to_owned()
        })
    };
    let start = lines
        .iter()
        .position(|l| name_of(l).as_deref() == Some("stable"))?;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if line.trim_start().starts_with("- ") || (is_name(line) && i != start) {
            return None;
        }
        if let Some(rest) = line.trim_start().strip_prefix("latest:") {
            let value = rest.split_whitespace().next().unwrap_or("");
            return Some((i, value.trim_matches(['"', '\'']).to_owned()));
        }
    }
    None
}

/// What the stable channel's `latest:` holds.
pub(crate) fn stable_latest(text: &str, file: &str) -> Result<String, ChannelError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    stable_line(&lines)
        .map(|(_, value)| value)
        .ok_or_else(|| ChannelError::NoStable {
            file: file.to_owned(),
        })
}

/// `text` with the stable channel's `latest:` set to `version`, and the old value (`None`
/// when it already was `version`, and the text is unchanged).
pub(crate) fn set_stable(
    text: &str,
    version: &str,
    file: &str,
) -> Result<(String, Option<String>), ChannelError> {
    if !is_ga(version) {
        return Err(ChannelError::NotGa {
            version: version.to_owned(),
        });
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let (at, old) = stable_line(&lines).ok_or_else(|| ChannelError::NoStable {
        file: file.to_owned(),
    })?;
    let line = lines[at];
    let indent = &line[..line.len() - line.trim_start().len()];
    let rest = line.trim_start().strip_prefix("latest:").unwrap_or("");
    let value_part = rest.trim_start();
    let gap = &rest[..rest.len() - value_part.len()];
    let end = value_part
        .find(char::is_whitespace)
        .unwrap_or(value_part.len());
    if old == version {
        return Ok((text.to_owned(), None));
    }
    // Whatever followed the value (spacing, a comment, the newline) stays.
    let tail = &value_part[end..];
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        if i == at {
            let _ = write!(out, "{indent}latest:{gap}{version}{tail}");
        } else {
            out.push_str(l);
        }
    }
    Ok((out, Some(old)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNELS: &str = "# k3s release channels\nchannels:\n  - name: stable\n    latest: v1.28.1+k3s1   # bumped by the captain\n  - name: latest\n    latestRegexp: .*\n    latest: v1.29.0+k3s1\n  - name: v1.28\n    latestRegexp: v1\\.28\\..*\n";

    #[test]
    fn only_the_stable_latest_line_changes() {
        let (out, old) = set_stable(CHANNELS, "v1.28.2+k3s1", "channel.yaml").unwrap();
        assert_eq!(old.as_deref(), Some("v1.28.1+k3s1"));
        let changed: Vec<(&str, &str)> = CHANNELS
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed,
            [(
                "    latest: v1.28.1+k3s1   # bumped by the captain",
                "    latest: v1.28.2+k3s1   # bumped by the captain"
            )]
        );
        assert_eq!(CHANNELS.lines().count(), out.lines().count());
        // Again: nothing changes.
        let (again, old) = set_stable(&out, "v1.28.2+k3s1", "channel.yaml").unwrap();
        assert_eq!((again.as_str(), old), (out.as_str(), None));
    }

    #[test]
    fn the_demo_channel_file_with_unindented_items_changes_in_one_line() {
        let text = crate::demo::CHANNEL_YAML;
        let (out, old) = set_stable(text, "v1.28.2+k3s1", "channel.yaml").unwrap();
        assert_eq!(old.as_deref(), Some("v1.28.1+k3s1"));
        assert_eq!(
            out,
            text.replace("  latest: v1.28.1+k3s1\n", "  latest: v1.28.2+k3s1\n")
        );
        assert_eq!(text.matches("v1.28.1+k3s1").count(), 1);
    }

    #[test]
    fn non_ga_versions_and_files_without_stable_are_refused() {
        for bad in [
            "v1.28.2-rc1+k3s1",
            "v1.28.2",
            "1.28.2+k3s1",
            "v1.28+k3s1",
            "v1.28.2+k3s",
        ] {
            assert!(
                matches!(
                    set_stable(CHANNELS, bad, "f"),
                    Err(ChannelError::NotGa { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            set_stable(
                "channels:\n  - name: latest\n    latest: v1+k3s1\n",
                "v1.28.2+k3s1",
                "f"
            ),
            Err(ChannelError::NoStable { .. })
        ));
        // A stable channel without latest: the next channel's latest is not taken.
        assert!(matches!(
            set_stable(
                "channels:\n  - name: stable\n  - name: latest\n    latest: v1.29.0+k3s1\n",
                "v1.28.2+k3s1",
                "f"
            ),
            Err(ChannelError::NoStable { .. })
        ));
    }
}
