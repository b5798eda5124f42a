use std::fmt;
use std::str::FromStr;

use super::ImageError;

/// A Go release line kiln can bootstrap offline from Debian packages (bookworm-backports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GoLine {
    /// Go 1.21 (`golang-1.21-go`, 1.21.13).
    Go121,
    /// Go 1.22 (`golang-1.22-go`, 1.22.12).
    Go122,
    /// Go 1.23 (`golang-1.23-go`, 1.23.5).
    Go123,
}

impl GoLine {
    /// Every line, oldest first.
    pub(crate) const ALL: [Self; 3] = [Self::Go121, Self::Go122, Self::Go123];

    /// `1.23`.
    #[must_use]
    pub(crate) const fn minor(self) -> &'static str {
        match self {
            Self::Go121 => "1.21",
            Self::Go122 => "1.22",
            Self::Go123 => "1.23",
        }
    }

    /// The Debian package holding the toolchain.
    #[must_use]
    pub(crate) fn package(self) -> String {
        format!("golang-{}-go", self.minor())
    }

    /// Where Debian installs it.
    #[must_use]
    pub(crate) fn goroot(self) -> String {
        format!("/usr/lib/go-{}", self.minor())
    }

    /// Name of the bootstrapped base (also its lock file's stem and its image tag).
    #[must_use]
    pub(crate) fn base_name(self) -> String {
        format!("bookworm-go{}", self.minor())
    }

    /// The engine tag of the bootstrapped base.
    #[must_use]
    pub(crate) fn base_tag(self) -> String {
        BaseKind::Debian(self).tag()
    }
}

/// Which offline base to bootstrap: the plain Debian base exact Go distributions are unpacked
/// on, or a legacy base carrying a Debian Go line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaseKind {
    /// `kiln/base:bookworm`: no Go; toolchain images add an exact Go distribution.
    Plain,
    /// `kiln/base:bookworm-go1.X`: Debian's `golang-1.X-go` package.
    Debian(GoLine),
}

impl BaseKind {
    /// Every base, the plain one first.
    pub(crate) const ALL: [Self; 4] = [
        Self::Plain,
        Self::Debian(GoLine::Go121),
        Self::Debian(GoLine::Go122),
        Self::Debian(GoLine::Go123),
    ];

    /// Name of the base (also its lock file's stem and its image tag).
    #[must_use]
    pub(crate) fn name(self) -> String {
        match self {
            Self::Plain => "bookworm".into(),
            Self::Debian(go) => go.base_name(),
        }
    }

    /// The engine tag.
    #[must_use]
    pub(crate) fn tag(self) -> String {
        format!("kiln/base:{}", self.name())
    }

    /// The Go line inside, if any.
    #[must_use]
    pub(crate) const fn go(self) -> Option<GoLine> {
        match self {
            Self::Plain => None,
            Self::Debian(go) => Some(go),
        }
    }

    /// The command that bootstraps it.
    #[must_use]
    pub(crate) fn command(self) -> String {
        match self {
            Self::Plain => "kiln image bootstrap".into(),
            Self::Debian(go) => format!("kiln image bootstrap --go {}", go.minor()),
        }
    }
}

impl From<GoLine> for BaseKind {
    fn from(go: GoLine) -> Self {
        Self::Debian(go)
    }
}

impl fmt::Display for GoLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.minor())
    }
}

impl FromStr for GoLine {
    type Err = ImageError;

    /// Accepts `1.23`, `1.23.5`, `go1.23`: the line is what counts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let version = s.trim().trim_start_matches("go");
        let mut parts = version.split('.');
        let minor = match (parts.next(), parts.next()) {
            (Some("1"), Some(minor)) => minor,
            _ => "",
        };
        Self::ALL
            .into_iter()
            .find(|line| line.minor().strip_prefix("1.") == Some(minor))
            .filter(|_| parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
            .ok_or_else(|| ImageError::UnsupportedGo {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_full_versions() {
        assert_eq!("1.23".parse::<GoLine>().unwrap(), GoLine::Go123);
        assert_eq!("1.22.12".parse::<GoLine>().unwrap(), GoLine::Go122);
        assert_eq!("go1.21".parse::<GoLine>().unwrap(), GoLine::Go121);
        for bad in ["1.20", "2.23", "1.23.x", "", "1.2"] {
            assert!(bad.parse::<GoLine>().is_err(), "{bad}");
        }
        assert_eq!(GoLine::Go123.package(), "golang-1.23-go");
        assert_eq!(GoLine::Go123.base_tag(), "kiln/base:bookworm-go1.23");
    }
}
