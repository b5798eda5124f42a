//! Go's `h1:` hashes (golang.org/x/mod/sumdb/dirhash `Hash1`): the SHA-256 of the lines
//! `"<sha256 hex>  <name>\n"` of every file, sorted by name, base64-encoded.

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::ModuleFiles;

fn hash1<'a>(files: impl Iterator<Item = (String, &'a [u8])>) -> String {
    let mut named: Vec<(String, &[u8])> = files.collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut summary = String::new();
    for (name, content) in named {
        let _ = writeln!(summary, "{}  {name}", hex::encode(Sha256::digest(content)));
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(summary.as_bytes()))
    )
}

/// The `h1:` of a module version's zip: its files named `<module>@<version>/<path>`.
#[must_use]
pub(crate) fn zip_h1(module: &str, version: &str, files: &ModuleFiles) -> String {
    hash1(
        files
            .iter()
            .map(|(path, content)| (format!("{module}@{version}/{path}"), content.as_slice())),
    )
}

/// The `h1:` of a go.mod (go.sum's `/go.mod` line): one file named `go.mod`.
#[must_use]
pub(crate) fn go_mod_h1(go_mod: &[u8]) -> String {
    hash1(std::iter::once(("go.mod".to_owned(), go_mod)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_computation() {
        // Computed with Python's hashlib/base64 from the documented algorithm:
        //   lines = "%s  %s\n" % (sha256(b"module m\n").hexdigest(), "go.mod")
        //   "h1:" + b64encode(sha256(lines.encode()).digest())
        assert_eq!(
            go_mod_h1(b"module m\n"),
            "h1:ctOyyZcdkNeS11Bx/Hh8c9pcGuH4+y+pgNNtQl7rlJc="
        );
    }
}
