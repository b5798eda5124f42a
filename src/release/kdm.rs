//! KDM's k3s `channels.yaml` (rancher/kontainer-driver-metadata): one `releases:` entry per
//! k3s version. kiln edits it as text, so every byte it does not add stays as it was
//! (comments, order, anchors, spacing): a new entry goes after the latest entry of its minor
//! and reuses that entry's anchored maps by alias. Then both files are parsed with a YAML
//! parser, anchors and `<<:` merge keys resolved, and the edit is kept only if every published
//! entry resolves exactly as before and the new one exactly as the entry it copies.

use std::fmt::Write as _;

use serde_yaml_ng::{Mapping, Value};

use crate::names::K3sVersion;

/// Why `channels.yaml` cannot be changed; nothing was written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum KdmError {
    /// The file is not YAML.
    #[error("{file} does not parse as YAML: {reason}")]
    #[diagnostic(
        code(kiln::kdm::parse),
        help("fix the file (or restore it from git) before adding entries")
    )]
    Parse {
        /// The file.
        file: String,
        /// The parser's message.
        reason: String,
    },
    /// A shape kiln does not edit.
    #[error("{file}: {reason}")]
    #[diagnostic(
        code(kiln::kdm::layout),
        help(
            "kiln edits a block-style `releases:` list of `- version: …` maps at the top level, \
             as KDM's channels.yaml has it"
        )
    )]
    Layout {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// `--after` names no entry.
    #[error("{file} has no entry {after}")]
    #[diagnostic(code(kiln::kdm::no_entry), help("entries of {minor}: {known}"))]
    NoEntry {
        /// The file.
        file: String,
        /// The version asked for.
        after: String,
        /// The minor.
        minor: String,
        /// The entries of that minor.
        known: String,
    },
    /// A new minor without its Rancher range.
    #[error(
        "{version} starts minor {minor}: {file} has no entry of it to copy the Rancher range from"
    )]
    #[diagnostic(
        code(kiln::kdm::new_minor),
        help(
            "give the range of Rancher versions that support it with --min and --max \
             ({latest}, whose args are copied, has --min {min} --max {max})"
        )
    )]
    NewMinor {
        /// The version.
        version: String,
        /// Its minor.
        minor: String,
        /// The file.
        file: String,
        /// The latest entry of an earlier minor.
        latest: String,
        /// Its minChannelServerVersion.
        min: String,
        /// Its maxChannelServerVersion.
        max: String,
    },
    /// Nothing earlier to copy.
    #[error("{file} has no entry before {version} to copy args from")]
    #[diagnostic(
        code(kiln::kdm::no_template),
        help("write the first entry of a minor by hand, or name one with --after")
    )]
    NoTemplate {
        /// The version.
        version: String,
        /// The file.
        file: String,
    },
    /// A GA entry while its RC entry is listed.
    #[error("{file} lists {rc}; the GA entry is made by promoting it")]
    #[diagnostic(
        code(kiln::kdm::rc_listed),
        help("run `kiln kdm add {version} --promote`: the RC entry becomes {version}")
    )]
    RcListed {
        /// The GA version.
        version: String,
        /// The RC entry.
        rc: String,
        /// The file.
        file: String,
    },
    /// An RC entry after its GA.
    #[error("{file} already lists the GA {ga}; an RC of it would never be offered")]
    #[diagnostic(code(kiln::kdm::ga_listed), help("a new RC needs a new -k3sN"))]
    GaListed {
        /// The GA version.
        ga: String,
        /// The file.
        file: String,
    },
    /// Nothing to promote.
    #[error("{file} has no RC entry of {version} to promote")]
    #[diagnostic(
        code(kiln::kdm::no_rc),
        help("add the entry without --promote: `kiln kdm add {version}`")
    )]
    NoRc {
        /// The GA version.
        version: String,
        /// The file.
        file: String,
    },
    /// A bad --min/--max.
    #[error("--{flag} `{given}` is not a Rancher version")]
    #[diagnostic(
        code(kiln::kdm::bad_range),
        help("Rancher versions look like v2.8.0-alpha1 or v2.8.99")
    )]
    BadRange {
        /// min or max.
        flag: &'static str,
        /// What was given.
        given: String,
    },
    /// The edit did not resolve as it must.
    #[error(
        "kiln's edit of {file} would change what the file means: {reason}; nothing was written"
    )]
    #[diagnostic(
        code(kiln::kdm::check),
        help("this is a bug in kiln or a layout it misreads; add the entry by hand")
    )]
    Check {
        /// The file.
        file: String,
        /// What differed.
        reason: String,
    },
}

/// What `add` or `promote` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum KdmAction {
    /// A new entry.
    Added,
    /// An RC entry became the GA one.
    Promoted,
    /// The entry was there already; the text is unchanged.
    AlreadyPresent,
}

/// The edited text and what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KdmEdit {
    /// The whole new file.
    pub(crate) text: String,
    /// What happened.
    pub(crate) action: KdmAction,
    /// The entry copied from (added) or promoted.
    pub(crate) from: Option<String>,
    /// The lines added or changed, without line ends.
    pub(crate) lines: Vec<String>,
}

impl KdmEdit {
    fn unchanged(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            action: KdmAction::AlreadyPresent,
            from: None,
            lines: Vec::new(),
        }
    }
}

/// Options of `add`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AddOptions<'a> {
    /// Copy from, and insert after, this entry instead of the latest of the same minor.
    pub(crate) after: Option<K3sVersion>,
    /// minChannelServerVersion of the new entry.
    pub(crate) min: Option<&'a str>,
    /// maxChannelServerVersion of the new entry.
    pub(crate) max: Option<&'a str>,
}

/// One line of the file.
struct Line<'a> {
    /// With its line end.
    text: &'a str,
    /// Without it.
    content: &'a str,
    indent: usize,
}

impl Line<'_> {
    fn is_filler(&self) -> bool {
        let t = self.content.trim_start();
        t.is_empty() || t.starts_with('#')
    }
}

/// One key of an entry: `name: value` and the lines below it.
struct Key {
    name: String,
    /// After `name:`, comment stripped, trimmed.
    value: String,
    first: usize,
    /// One past its last non-filler line.
    end: usize,
}

struct Entry {
    version: String,
    start: usize,
    /// One past its last non-filler line.
    end: usize,
    key_indent: usize,
    keys: Vec<Key>,
}

struct Layout<'a> {
    lines: Vec<Line<'a>>,
    item_indent: usize,
    entries: Vec<Entry>,
    eol: &'static str,
}

/// `s` without a trailing `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &s[..i],
            Some(_) | None => {}
        }
        previous = c;
    }
    s
}

/// `name: rest` at the start of `t`, for plain key names.
fn key_line(t: &str) -> Option<(&str, &str)> {
    let (name, rest) = t.split_once(':')?;
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (plain && (rest.is_empty() || rest.starts_with([' ', '\t']))).then_some((name, rest))
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

impl<'a> Layout<'a> {
    fn scan(text: &'a str, file: &str) -> Result<Self, KdmError> {
        let layout = |reason: String| KdmError::Layout {
            file: file.to_owned(),
            reason,
        };
        let lines: Vec<Line<'a>> = text
            .split_inclusive('\n')
            .map(|text| {
                let content = text.trim_end_matches('\n').trim_end_matches('\r');
                Line {
                    text,
                    content,
                    indent: content.len() - content.trim_start_matches(' ').len(),
                }
            })
            .collect();
        let eol = if lines.first().is_some_and(|l| l.text.ends_with("\r\n")) {
            "\r\n"
        } else {
            "\n"
        };
        let releases = lines
            .iter()
            .position(|l| {
                l.content
                    .strip_prefix("releases:")
                    .is_some_and(|rest| strip_comment(rest).trim().is_empty())
            })
            .ok_or_else(|| layout("no top-level `releases:` block".into()))?;
        let mut item_indent = None;
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in lines.iter().enumerate().skip(releases + 1) {
            if line.is_filler() {
                continue;
            }
            let t = &line.content[line.indent..];
            let is_item = t == "-" || t.starts_with("- ");
            let items = *item_indent.get_or_insert(line.indent);
            if line.indent < items || (line.indent == items && !is_item) {
                break;
            }
            if line.indent == items {
                let after = t[1..].trim_start_matches(' ');
                if after.is_empty() {
                    return Err(layout(format!(
                        "line {}: an entry whose first key is on the next line",
                        i + 1
                    )));
                }
                entries.push(Entry {
                    version: String::new(),
                    start: i,
                    end: i + 1,
                    key_indent: line.indent + (t.len() - after.len()),
                    keys: Vec::new(),
                });
            }
            let Some(entry) = entries.last_mut() else {
                return Err(layout(format!("line {}: `releases:` is not a list", i + 1)));
            };
            entry.end = i + 1;
            let key_text = if line.indent == entry.key_indent || i == entry.start {
                key_line(&line.content[entry.key_indent..])
            } else {
                None
            };
            match key_text {
                Some((name, rest)) => entry.keys.push(Key {
                    name: name.to_owned(),
                    value: strip_comment(rest).trim().to_owned(),
                    first: i,
                    end: i + 1,
                }),
                None if (line.indent > entry.key_indent || t.starts_with("- "))
                    && i != entry.start
                    && !entry.keys.is_empty() =>
                {
                    if let Some(key) = entry.keys.last_mut() {
                        key.end = i + 1;
                    }
                }
                None => {
                    return Err(layout(format!(
                        "line {}: `{}` is not a key of the entry",
                        i + 1,
                        line.content.trim()
                    )));
                }
            }
        }
        for entry in &mut entries {
            let version = entry
                .keys
                .iter()
                .find(|k| k.name == "version")
                .ok_or_else(|| {
                    layout(format!(
                        "the entry at line {} has no version",
                        entry.start + 1
                    ))
                })?;
            entry.version = unquote(&version.value).to_owned();
        }
        Ok(Self {
            item_indent: item_indent.unwrap_or(0),
            lines,
            entries,
            eol,
        })
    }

    fn versions(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.version.as_str()).collect()
    }

    fn index_of(&self, version: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.version == version)
    }

    /// The entries kiln can order, with their index.
    fn parsed(&self) -> Vec<(usize, K3sVersion)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.version.parse().ok().map(|v| (i, v)))
            .collect()
    }
}

/// The document, parsed, with every `<<:` merge resolved (aliases are resolved by the parser).
fn resolved(text: &str, file: &str) -> Result<Value, KdmError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| KdmError::Parse {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    merge_keys(value).map_err(|reason| KdmError::Parse {
        file: file.to_owned(),
        reason,
    })
}

/// Resolves `<<:` merge keys (yaml.org/type/merge.html) everywhere below `value`: explicit
/// keys win, then the merged maps in order; merged maps are resolved first, so chains work.
fn merge_keys(value: Value) -> Result<Value, String> {
    match value {
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            let mut merged = Vec::new();
            for (key, value) in map {
                let value = merge_keys(value)?;
                if key.as_str() == Some("<<") {
                    match value {
                        Value::Mapping(m) => merged.push(m),
                        Value::Sequence(list) => {
                            for item in list {
                                let Value::Mapping(m) = item else {
                                    return Err("a `<<:` list holds something not a map".into());
                                };
                                merged.push(m);
                            }
                        }
                        _ => return Err("a `<<:` key's value is not a map".into()),
                    }
                } else {
                    out.insert(key, value);
                }
            }
            for map in merged {
                for (key, value) in map {
                    out.entry(key).or_insert(value);
                }
            }
            Ok(Value::Mapping(out))
        }
        Value::Sequence(list) => list
            .into_iter()
            .map(merge_keys)
            .collect::<Result<_, _>>()
            .map(Value::Sequence),
        Value::Tagged(tagged) => merge_keys(tagged.value),
        other => Ok(other),
    }
}

fn releases_of(doc: &Value) -> Option<&Vec<Value>> {
    doc.get("releases")?.as_sequence()
}

/// Parses `text` both ways and checks they agree on the entries.
fn load<'a>(text: &'a str, file: &str) -> Result<(Layout<'a>, Value), KdmError> {
    let doc = resolved(text, file)?;
    let layout = Layout::scan(text, file)?;
    let parsed: Vec<Option<&str>> = releases_of(&doc)
        .ok_or_else(|| KdmError::Layout {
            file: file.to_owned(),
            reason: "`releases` is not a list".into(),
        })?
        .iter()
        .map(|e| e.get("version").and_then(Value::as_str))
        .collect();
    let scanned: Vec<Option<&str>> = layout.versions().into_iter().map(Some).collect();
    if parsed != scanned {
        return Err(KdmError::Layout {
            file: file.to_owned(),
            reason: format!(
                "kiln reads {} entries where the YAML parser reads {}",
                scanned.len(),
                parsed.len()
            ),
        });
    }
    Ok((layout, doc))
}

/// The versions `releases:` lists, in file order.
pub(crate) fn listed_versions(text: &str, file: &str) -> Result<Vec<String>, KdmError> {
    let (layout, _) = load(text, file)?;
    Ok(layout.versions().into_iter().map(str::to_owned).collect())
}

fn check_range(flag: &'static str, value: Option<&str>) -> Result<(), KdmError> {
    let Some(given) = value else { return Ok(()) };
    let bad = || KdmError::BadRange {
        flag,
        given: given.to_owned(),
    };
    let (core, pre) = given.split_once('-').unwrap_or((given, ""));
    let numbers: Vec<&str> = core.strip_prefix('v').ok_or_else(bad)?.split('.').collect();
    let numeric = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()));
    let pre_ok = given.len() <= 64 && pre.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if numeric && pre_ok && !(given.contains('-') && pre.is_empty()) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Adds the entry of `version`, or leaves the file as it is when the entry is there.
pub(crate) fn add_entry(
    text: &str,
    version: &K3sVersion,
    options: &AddOptions<'_>,
    file: &str,
) -> Result<KdmEdit, KdmError> {
    check_range("min", options.min)?;
    check_range("max", options.max)?;
    let (layout, old_doc) = load(text, file)?;
    let name = version.to_string();
    if layout.index_of(&name).is_some() {
        return Ok(KdmEdit::unchanged(text));
    }
    let listed = layout.parsed();
    match version.rc {
        None => {
            if let Some((_, rc)) = listed
                .iter()
                .filter(|(_, v)| v.rc.is_some() && v.ga() == *version)
                .max_by_key(|(_, v)| *v)
            {
                return Err(KdmError::RcListed {
                    version: name,
                    rc: rc.to_string(),
                    file: file.to_owned(),
                });
            }
        }
        Some(_) => {
            let ga = version.ga().to_string();
            if layout.index_of(&ga).is_some() {
                return Err(KdmError::GaListed {
                    ga,
                    file: file.to_owned(),
                });
            }
        }
    }
    let same_minor = || {
        listed
            .iter()
            .filter(|(_, v)| v.minor() == version.minor())
            .max_by_key(|(_, v)| *v)
            .map(|(i, _)| *i)
    };
    let template = match options.after {
        Some(after) => layout
            .index_of(&after.to_string())
            .ok_or_else(|| KdmError::NoEntry {
                file: file.to_owned(),
                after: after.to_string(),
                minor: format!("v{}.{}", after.k8s.major, after.k8s.minor),
                known: {
                    let known: Vec<String> = listed
                        .iter()
                        .filter(|(_, v)| v.minor() == after.minor())
                        .map(|(_, v)| v.to_string())
                        .collect();
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                },
            })?,
        None => match same_minor() {
            Some(i) => i,
            None => listed
                .iter()
                .filter(|(_, v)| v.minor() < version.minor())
                .max_by_key(|(_, v)| *v)
                .map(|(i, _)| *i)
                .ok_or_else(|| KdmError::NoTemplate {
                    version: name.clone(),
                    file: file.to_owned(),
                })?,
        },
    };
    // The first entry of a minor never inherits another minor's Rancher range silently.
    if same_minor().is_none() && (options.min.is_none() || options.max.is_none()) {
        let value = |key: &str| {
            layout.entries[template]
                .keys
                .iter()
                .find(|k| k.name == key)
                .map_or_else(|| "?".to_owned(), |k| unquote(&k.value).to_owned())
        };
        return Err(KdmError::NewMinor {
            version: name,
            minor: format!("v{}.{}", version.k8s.major, version.k8s.minor),
            file: file.to_owned(),
            latest: layout.entries[template].version.clone(),
            min: value("minChannelServerVersion"),
            max: value("maxChannelServerVersion"),
        });
    }
    let entry = &layout.entries[template];
    let block = new_entry(&layout, entry, &name, options);
    let at = entry.end;
    let mut inserted = String::new();
    if !layout.lines[at - 1].text.ends_with('\n') {
        inserted.push_str(layout.eol);
    }
    inserted.push_str(&block);
    let before: String = layout.lines[..at].iter().map(|l| l.text).collect();
    let after: String = layout.lines[at..].iter().map(|l| l.text).collect();
    let new_text = format!("{before}{inserted}{after}");

    // The safety net: the new file must mean the old one plus exactly the new entry.
    let check = |reason: String| KdmError::Check {
        file: file.to_owned(),
        reason,
    };
    let (new_layout, new_doc) = load(&new_text, file).map_err(|e| check(e.to_string()))?;
    if new_layout.index_of(&name) != Some(template + 1) {
        return Err(check(format!(
            "{name} is not right after {}",
            entry.version
        )));
    }
    let mut old_releases = releases_of(&old_doc).cloned().unwrap_or_default();
    let mut new_releases = releases_of(&new_doc).cloned().unwrap_or_default();
    let added = new_releases.remove(template + 1);
    if old_releases != new_releases {
        return Err(check("a published entry resolves differently".into()));
    }
    if without_releases(&old_doc) != without_releases(&new_doc) {
        return Err(check("something outside `releases:` changed".into()));
    }
    let mut expected = old_releases.remove(template);
    if let Some(map) = expected.as_mapping_mut() {
        map.insert("version".into(), name.clone().into());
        if let Some(min) = options.min {
            map.insert("minChannelServerVersion".into(), min.into());
        }
        if let Some(max) = options.max {
            map.insert("maxChannelServerVersion".into(), max.into());
        }
    }
    if added != expected {
        return Err(check(format!(
            "{name} does not resolve to {}'s args",
            entry.version
        )));
    }
    Ok(KdmEdit {
        text: new_text,
        action: KdmAction::Added,
        from: Some(entry.version.clone()),
        lines: inserted
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect(),
    })
}

fn without_releases(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(map) = doc.as_mapping_mut() {
        map.remove("releases");
    }
    doc
}

/// The text of the new entry: `version` first, then the template's keys in its order, anchored
/// maps by alias, aliases as they are, scalars copied (min/max overridden).
fn new_entry(
    layout: &Layout<'_>,
    template: &Entry,
    version: &str,
    options: &AddOptions<'_>,
) -> String {
    let eol = layout.eol;
    let key_pad = " ".repeat(template.key_indent);
    let mut out = format!(
        "{}-{}version: {version}{eol}",
        " ".repeat(layout.item_indent),
        " ".repeat(template.key_indent - layout.item_indent - 1)
    );
    let overrides = [
        ("minChannelServerVersion", options.min),
        ("maxChannelServerVersion", options.max),
    ];
    for (key, value) in overrides {
        if let Some(value) = value
            && !template.keys.iter().any(|k| k.name == key)
        {
            let _ = write!(out, "{key_pad}{key}: {value}{eol}");
        }
    }
    for key in template.keys.iter().filter(|k| k.name != "version") {
        let name = &key.name;
        if let Some((_, Some(value))) = overrides.iter().find(|(k, _)| *k == name) {
            let _ = write!(out, "{key_pad}{name}: {value}{eol}");
        } else if let Some(anchor) = key.value.strip_prefix('&') {
            let anchor = anchor.split_whitespace().next().unwrap_or(anchor);
            let _ = write!(out, "{key_pad}{name}: *{anchor}{eol}");
        } else if key.value.starts_with('*') || key.end == key.first + 1 {
            let _ = write!(out, "{key_pad}{name}: {}{eol}", key.value);
        } else {
            // A map without an anchor: copied whole (it resolves the same by construction).
            for line in &layout.lines[key.first..key.end] {
                out.push_str(line.content);
                out.push_str(eol);
            }
        }
    }
    out
}

/// Turns the RC entry of `version` (the highest RC, or the RC named) into the GA entry: only
/// the version on its `version:` line changes.
pub(crate) fn promote_entry(
    text: &str,
    version: &K3sVersion,
    file: &str,
) -> Result<KdmEdit, KdmError> {
    let (layout, old_doc) = load(text, file)?;
    let ga = version.ga();
    let ga_name = ga.to_string();
    if layout.index_of(&ga_name).is_some() {
        return Ok(KdmEdit::unchanged(text));
    }
    let rc = layout
        .parsed()
        .into_iter()
        .filter(|(_, v)| v.rc.is_some() && v.ga() == ga && (version.rc.is_none() || v == version))
        .max_by_key(|(_, v)| *v)
        .ok_or_else(|| KdmError::NoRc {
            version: ga_name.clone(),
            file: file.to_owned(),
        })?;
    let entry = &layout.entries[rc.0];
    let key = entry
        .keys
        .iter()
        .find(|k| k.name == "version")
        .ok_or_else(|| KdmError::Layout {
            file: file.to_owned(),
            reason: "an entry without a version".into(),
        })?;
    let line = &layout.lines[key.first];
    let from = rc.1.to_string();
    let at = line
        .text
        .find("version:")
        .map_or(0, |i| i + "version:".len());
    let changed = format!(
        "{}{}",
        &line.text[..at],
        line.text[at..].replacen(&from, &ga_name, 1)
    );
    let new_text: String = layout
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == key.first {
                changed.as_str()
            } else {
                l.text
            }
        })
        .collect();
    let check = |reason: String| KdmError::Check {
        file: file.to_owned(),
        reason,
    };
    let (_, new_doc) = load(&new_text, file).map_err(|e| check(e.to_string()))?;
    let mut expected = old_doc.clone();
    if let Some(entry) = expected
        .get_mut("releases")
        .and_then(|r| r.get_mut(rc.0))
        .and_then(Value::as_mapping_mut)
    {
        entry.insert("version".into(), ga_name.clone().into());
    }
    if expected != new_doc {
        return Err(check(format!(
            "promoting {from} changed more than its version"
        )));
    }
    Ok(KdmEdit {
        text: new_text,
        action: KdmAction::Promoted,
        from: Some(from),
        lines: vec![changed.trim_end_matches(['\n', '\r']).to_owned()],
    })
}

#[cfg(test)]
mod tests;
