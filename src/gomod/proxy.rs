//! Writing a `file://` GOPROXY tree.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::{GoModError, ModuleFiles, go_mod_h1, zip_h1};

/// One module version to serve.
#[derive(Clone, Debug)]
pub struct ModuleVersion {
    /// The module path it is served under (e.g. the fork's staging path).
    pub module: String,
    /// The version (`v1.28.2-k3s1`).
    pub version: String,
    /// The commit time of the tag, in seconds since the epoch (the `.info` time).
    pub(crate) time: i64,
    /// Its files.
    pub files: ModuleFiles,
}

/// What the proxy serves for one module version, with the sums go.sum will hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyModule {
    /// Module path.
    pub module: String,
    /// Version.
    pub version: String,
    /// `h1:` of the zip.
    pub h1: String,
    /// `h1:` of the go.mod.
    pub go_mod_h1: String,
}

/// The module, version and file kind a GOPROXY-layout path names
/// (`github.com/!foo/bar/@v/v1.2.0.zip` → `github.com/Foo/bar`, `v1.2.0`, `zip`), or `None`
/// for any other path (`list` files included: they name no version).
pub(crate) fn proxy_path_module(path: &str) -> Option<(String, String, &'static str)> {
    let (module, file) = path.rsplit_once("/@v/")?;
    let (version, kind) = ["info", "mod", "zip"]
        .into_iter()
        .find_map(|kind| Some((file.strip_suffix(kind)?.strip_suffix('.')?, kind)))?;
    Some((unescape_path(module), unescape_path(version), kind))
}

/// The inverse of [`escape_path`]: `!x` back to `X`.
fn unescape_path(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if bang {
            out.push(c.to_ascii_uppercase());
            bang = false;
        } else if c == '!' {
            bang = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Go's case-encoding of module paths for proxies: `A` → `!a`.
#[must_use]
pub(crate) fn escape_path(module: &str) -> String {
    let mut out = String::with_capacity(module.len());
    for c in module.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `2023-09-13T12:00:00Z` from seconds since the epoch (UTC, proleptic Gregorian).
fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn zip_bytes(version: &ModuleVersion) -> Result<Vec<u8>, GoModError> {
    let invalid = |reason: String| GoModError::Invalid {
        module: version.module.clone(),
        version: version.version.clone(),
        reason,
    };
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, content) in &version.files {
        writer
            .start_file(
                format!("{}@{}/{path}", version.module, version.version),
                options,
            )
            .map_err(|e| invalid(format!("cannot zip {path}: {e}")))?;
        writer
            .write_all(content)
            .map_err(|e| invalid(format!("cannot zip {path}: {e}")))?;
    }
    let cursor = writer
        .finish()
        .map_err(|e| invalid(format!("cannot finish the zip: {e}")))?;
    Ok(cursor.into_inner())
}

/// Writes every module version into the proxy tree at `dir` and returns what it serves.
pub fn write_proxy(dir: &Path, versions: &[ModuleVersion]) -> Result<Vec<ProxyModule>, GoModError> {
    let write = |path: &Path, bytes: &[u8]| -> Result<(), GoModError> {
        let io = |source| GoModError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, bytes).map_err(io)
    };
    let mut served = Vec::with_capacity(versions.len());
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for version in versions {
        let at = dir.join(escape_path(&version.module)).join("@v");
        // A module without a go.mod (a `+incompatible` version of a pre-modules repository) is
        // served with the go.mod Go synthesizes for it.
        let synthesized = format!("module {}\n", version.module).into_bytes();
        let go_mod = version.files.get("go.mod").unwrap_or(&synthesized);
        let info = format!(
            "{{\"Version\":\"{}\",\"Time\":\"{}\"}}\n",
            version.version,
            rfc3339(version.time)
        );
        write(
            &at.join(format!("{}.info", version.version)),
            info.as_bytes(),
        )?;
        write(&at.join(format!("{}.mod", version.version)), go_mod)?;
        write(
            &at.join(format!("{}.zip", version.version)),
            &zip_bytes(version)?,
        )?;
        lists
            .entry(version.module.clone())
            .or_default()
            .push(version.version.clone());
        served.push(ProxyModule {
            module: version.module.clone(),
            version: version.version.clone(),
            h1: zip_h1(&version.module, &version.version, &version.files),
            go_mod_h1: go_mod_h1(go_mod),
        });
    }
    for (module, mut list) in lists {
        list.sort();
        list.dedup();
        let text: String = list.iter().flat_map(|v| [v.as_str(), "\n"]).collect();
        write(
            &dir.join(escape_path(&module)).join("@v/list"),
            text.as_bytes(),
        )?;
    }
    served.sort_by(|a, b| (&a.module, &a.version).cmp(&(&b.module, &b.version)));
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_upper_case() {
        assert_eq!(
            escape_path("github.com/BurntSushi/toml"),
            "github.com/!burnt!sushi/toml"
        );
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_694_606_400), "2023-09-13T12:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn zips_are_deterministic() {
        let version = ModuleVersion {
            module: "example.com/m".into(),
            version: "v1.0.0".into(),
            time: 0,
            files: ModuleFiles::from([
                ("go.mod".into(), b"module example.com/m\n".to_vec()),
                ("a.go".into(), b"package m\n".to_vec()),
            ]),
        };
        assert_eq!(zip_bytes(&version).unwrap(), zip_bytes(&version).unwrap());
    }
}
