//! From the file's text and `--set key=value` overrides to [`PipelineFile`]: one path for both, so an error
//! names its key (`params.steps: invalid type ...`), and where the bad value came from: the file's line
//! (`(at line 23)`), or the override that set it (`(from --set params.steps=1.5)`).

use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};

use super::file::{PipelineFile, SourceFile};
use super::message;
use super::values::{SHOWN_CHARS, preview, show};

/// Parse `text`, apply the overrides in order, and deserialize.
pub fn read(text: &str, overrides: &[String]) -> Result<PipelineFile, String> {
    // Syntax errors carry toml's own line and column; a key given twice is named, with both lines.
    let table: toml::Table = toml::from_str(text).map_err(|e| duplicate(text, &e).unwrap_or_else(|| message(&e)))?;
    overridden(table, overrides, Some(text))
}

/// `latentcam run --whip`: the override that makes the file's source a WHIP source, keeping its width, height
/// and frame rate when it has them.
pub fn whip_source(path: &std::path::Path) -> crate::error::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::error::Error::Pipeline { path: path.to_path_buf(), problem: e.to_string() })?;
    let file =
        read(&text, &[]).map_err(|problem| crate::error::Error::Pipeline { path: path.to_path_buf(), problem })?;
    let (width, height, fps) = match file.source {
        SourceFile::Webcam { width, height, fps, .. } | SourceFile::TestPattern { width, height, fps, .. } => {
            (width, height, fps)
        }
        SourceFile::Whip { width, height, fps, .. } => (width, height, fps),
        SourceFile::Images { fps, .. } => (None, None, fps),
        SourceFile::Gstreamer { .. } => (None, None, None),
    };
    let mut table = toml::Table::new();
    table.insert("kind".into(), toml::Value::String("whip".into()));
    for (key, value) in [("width", width), ("height", height), ("fps", fps)] {
        if let Some(value) = value {
            table.insert(key.into(), value);
        }
    }
    Ok(format!("source={}", toml::Value::Table(table)))
}

/// `file` with the overrides applied in order: a pipeline made as a value (`bench`) takes `--set` as a file
/// does, with the same messages (less the file's line numbers: it has no text).
pub fn apply_to_file(file: PipelineFile, overrides: &[String]) -> Result<PipelineFile, String> {
    if overrides.is_empty() {
        return Ok(file);
    }
    let table = toml::Table::try_from(&file).map_err(|e| format!("the pipeline cannot be written as TOML: {e}"))?;
    overridden(table, overrides, None)
}

/// Apply the overrides to `table` and deserialize; `text`: the file's, to name the line of a bad value.
fn overridden(mut table: toml::Table, overrides: &[String], text: Option<&str>) -> Result<PipelineFile, String> {
    for o in overrides {
        apply(&mut table, o).map_err(|e| format!("--set {}: {e}", preview(o, SHOWN_CHARS)))?;
    }
    let deserializer = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, PipelineFile>(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = short_floats(&message(e.inner()));
        // The failing key as `--set` spells it (`sink.0.path`), with the field an unknown- or missing-field
        // message names.
        let mut key: Vec<String> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Seq { index } => Some(index.to_string()),
                Segment::Map { key } => Some(key.clone()),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let unknown = named_field(&inner, "unknown field `");
        if let Some(field) = unknown.clone().or_else(|| named_field(&inner, "missing field `"))
            && key.last() != Some(&field)
        {
            key.push(field);
        }
        let place = if path == "." { String::new() } else { format!("{path}: ") };
        if let Some(o) = set_by(overrides, &key) {
            return format!("{place}{inner} (from --set {})", preview(o, SHOWN_CHARS));
        }
        // A missing field has no line of its own.
        let missing = unknown.is_none() && named_field(&inner, "missing field `").is_some();
        match text.and_then(|text| line_in_file(text, &key)).filter(|_| !missing) {
            Some(line) => format!("{place}{inner} (at line {line})"),
            None if !overrides.is_empty() => format!("{place}{inner} (after --set)"),
            None => format!("{place}{inner}"),
        }
    })
}

/// Where the value of `key` (dotted as `--set` writes it: `params.steps`) came from, as messages say it:
/// ` (from --set params.steps=1.5)`, ` (at line 23)`, or nothing when neither can be told.
pub fn where_from(text: &str, overrides: &[String], key: &str) -> String {
    let key: Vec<String> = key.split('.').map(str::to_string).collect();
    if let Some(o) = set_by(overrides, &key) {
        return format!(" (from --set {})", preview(o, SHOWN_CHARS));
    }
    line_in_file(text, &key).map_or(String::new(), |line| format!(" (at line {line})"))
}

/// The override (the last one, as it wins) that set `key` or a table above it (`--set params={steps=1.5}`),
/// or a key below it that made it (`--set params.stepz.x=1` makes `params.stepz`).
fn set_by<'a>(overrides: &'a [String], key: &[String]) -> Option<&'a str> {
    if key.is_empty() {
        return None;
    }
    overrides.iter().rev().map(String::as_str).find(|o| {
        let Some((set, _)) = o.split_once('=') else { return false };
        let set: Vec<&str> = set.trim().split('.').collect();
        set.iter().zip(key).all(|(a, b)| a == b)
    })
}

/// The field a serde message names after `lead` (`unknown field `x``, `missing field `x``).
fn named_field(message: &str, lead: &str) -> Option<String> {
    Some(message.split(lead).nth(1)?.split('`').next()?.to_string())
}

/// serde shows a float in a message with all its digits (`floating point `0.000…0001``, 300 of them): each
/// `quoted` number that long is shown in its shortest form instead (`1e-300`). And a string it shows whole
/// (`invalid type: string "…", expected i64`) is cut to a preview.
fn short_floats(message: &str) -> String {
    let mut message = message.to_string();
    if let (Some(start), Some(end)) = (message.find("string \""), message.rfind("\", expected"))
        && start + 8 <= end
    {
        let text = preview(&message[start + 8..end], SHOWN_CHARS);
        message = format!("{}string \"{text}{}", &message[..start], &message[end..]);
    }
    let mut parts: Vec<String> = message.split('`').map(str::to_string).collect();
    for part in parts.iter_mut().skip(1).step_by(2) {
        if part.len() > 24
            && let Ok(x) = part.parse::<f64>()
        {
            *part = show(&toml::Value::Float(x));
        }
    }
    parts.join("`")
}

/// A "duplicate key" syntax error as a message naming the key and both lines: ``duplicate key `model.dir` at
/// line 9 (first set at line 7)``, ``duplicate table `[model]` at line 12 (first set at line 5)``. None for
/// other errors. (toml says only "duplicate key" and where the second one is.)
fn duplicate(text: &str, e: &toml::de::Error) -> Option<String> {
    let span = e.span().filter(|_| e.message().starts_with("duplicate key"))?;
    let raw = text.get(span.clone())?;
    let line = line_at(text, span.start);
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let header = text[line_start..span.start].trim_start().starts_with('[');
    // Where the second one goes: rename it and find it in the document (the path holds list indices).
    const MARK: &str = "__latentcam_duplicate__";
    let marked = format!("{}{MARK}{}", &text[..span.start], &text[span.end..]);
    let (marked_doc, _) = DeTable::parse_recoverable(&marked);
    let mut path = Vec::new();
    let parent = find_key(marked_doc.get_ref(), MARK, &mut path).then_some(path);
    // The key's own name (unquoted), from where it is in the document, else as written.
    let name = {
        let assignment = format!("{raw} = 0");
        let (doc, _) = DeTable::parse_recoverable(&assignment);
        doc.get_ref().iter().next().map_or_else(|| raw.to_string(), |(k, _)| k.get_ref().to_string())
    };
    // The first one: in the document up to the second (where nothing is yet given twice).
    let first = parent.as_ref().and_then(|parent| {
        let (before, _) = DeTable::parse_recoverable(&text[..span.start]);
        let table = follow(before.get_ref(), parent)?;
        let (key, _) = table.iter().find(|(k, _)| *k.get_ref() == name)?;
        (key.span().start < span.start).then(|| line_at(text, key.span().start))
    });
    let mut full: Vec<String> = parent.unwrap_or_default().iter().map(Step::to_string).collect();
    full.push(name);
    let full = full.join(".");
    let what = if header {
        let close = text[span.end..].find(']').map_or(span.end, |i| span.end + i + 1);
        let written = text[line_start..close].trim();
        let written = if text[close..].starts_with(']') { format!("{written}]") } else { written.to_string() };
        format!("duplicate table `{written}`")
    } else {
        format!("duplicate key `{full}`")
    };
    Some(match first {
        Some(first) => format!("{what} at line {line} (first set at line {first})"),
        None => format!("{what} at line {line}"),
    })
}

/// The line (1-based) of byte `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// One step from a table to a table in it: a key, or an entry of an array of tables.
enum Step {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Key(k) => f.write_str(k),
            Step::Index(i) => write!(f, "{i}"),
        }
    }
}

/// Whether `table` (or a table in it) holds `key`; `path` is then the way to the table that holds it.
fn find_key(table: &DeTable<'_>, key: &str, path: &mut Vec<Step>) -> bool {
    for (k, v) in table.iter() {
        if *k.get_ref() == key {
            return true;
        }
        path.push(Step::Key(k.get_ref().to_string()));
        if find_in_value(v.get_ref(), key, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, key: &str, path: &mut Vec<Step>) -> bool {
    match value {
        DeValue::Table(t) => find_key(t, key, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(Step::Index(i));
            let found = find_in_value(item.get_ref(), key, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// The table at `path` in `table`.
fn follow<'t, 'i>(mut table: &'t DeTable<'i>, path: &[Step]) -> Option<&'t DeTable<'i>> {
    let mut value: Option<&DeValue<'i>> = None;
    for step in path {
        let next = match (step, value) {
            (Step::Key(k), None) => table.iter().find(|(key, _)| *key.get_ref() == k.as_str())?.1.get_ref(),
            (Step::Key(k), Some(DeValue::Table(t))) => {
                t.iter().find(|(key, _)| *key.get_ref() == k.as_str())?.1.get_ref()
            }
            (Step::Index(i), Some(DeValue::Array(items))) => items.get(*i)?.get_ref(),
            _ => return None,
        };
        value = Some(next);
        if let DeValue::Table(t) = next {
            table = t;
        }
    }
    match value {
        None => Some(table),
        Some(DeValue::Table(t)) => Some(t),
        Some(_) => None,
    }
}

/// The line (1-based) where the file sets `key` (`sink.1.path`: the second `[[sink]]`'s `path`), if it does.
fn line_in_file(text: &str, key: &[String]) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut span = None;
    let mut parts = key.iter().peekable();
    while let Some(part) = parts.next() {
        let (k, mut value) = table.iter().find(|(k, _)| *k.get_ref() == part.as_str())?;
        span = Some(k.span());
        // Entries of a list: `sink.1`.
        while let DeValue::Array(items) = value.get_ref() {
            let Some(index) = parts.peek().and_then(|p| p.parse::<usize>().ok()) else { break };
            parts.next();
            value = items.get(index)?;
            span = Some(value.span());
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ if parts.peek().is_none() => break,
            _ => return None,
        }
    }
    span.map(|s| line_at(text, s.start))
}

/// `a.b.0.c=value` into a TOML table (list entries by index).
fn apply(table: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment.split_once('=').ok_or("expected KEY=VALUE, e.g. params.prompt=\"a cat\"")?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, &parts, parse_value(raw.trim()));
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_path(node: &mut toml::Value, parts: &[&str], value: toml::Value) -> Result<(), String> {
    let Some((head, rest)) = parts.split_first() else { return Err("empty key".into()) };
    let child = match node {
        toml::Value::Table(t) if rest.is_empty() => {
            t.insert(head.to_string(), value);
            return Ok(());
        }
        toml::Value::Table(t) => t.entry(head.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(items) => {
            let len = items.len();
            let index: usize = head.parse().map_err(|_| format!("`{head}`: this is a list, index it (0, 1, ...)"))?;
            let item = items.get_mut(index).ok_or_else(|| format!("the list has {len} entries, no index {index}"))?;
            if rest.is_empty() {
                *item = value;
                return Ok(());
            }
            item
        }
        _ => return Err(format!("`{head}`: the key above it is a value, not a table")),
    };
    set_path(child, rest, value)
}

/// A TOML value, or the text as a string when it is not one (`--set params.prompt=a cat`).
pub(crate) fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_nested_keys_and_list_entries() {
        let text = "[source]\nkind = \"test-pattern\"\n[[sink]]\nkind = \"null\"\n";
        let file =
            read(text, &["source.width=64".into(), "sink.0.kind=\"png\"".into(), "sink.0.dir=x".into()]).unwrap();
        assert!(matches!(
            file.source,
            super::super::file::SourceFile::TestPattern { width: Some(toml::Value::Integer(64)), .. }
        ));
        assert!(read(text, &["sink.3.dir=x".into()]).unwrap_err().contains("no index 3"));
        assert!(read(text, &["source.kind.x=1".into()]).unwrap_err().contains("not a table"));
        assert!(read(text, &["novalue".into()]).unwrap_err().contains("KEY=VALUE"));
        assert!(read(text, &["a..b=1".into()]).unwrap_err().contains("bad key"));
    }

    fn err(text: &str, overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        read(text, &overrides).expect_err("must fail")
    }

    #[test]
    fn a_key_given_twice_is_named_with_both_lines() {
        assert_eq!(
            err("mode = \"offline\"\nmode = \"live\"\n", &[]),
            "duplicate key `mode` at line 2 (first set at line 1)"
        );
        let text =
            "mode = \"live\"\n[model]\ndir = \"a\"\nsize = [64, 64]\n[source]\nkind = \"test-pattern\"\n[model]\n";
        assert_eq!(err(text, &[]), "duplicate table `[model]` at line 7 (first set at line 2)");
        let text = "[source]\nkind = \"test-pattern\"\n[model]\ndir = \"a\"\n# a comment\n  dir = \"b\"\n";
        assert_eq!(err(text, &[]), "duplicate key `model.dir` at line 6 (first set at line 4)");
        // In the second entry of a list of tables: the index, as --set spells it.
        let text = "[[sink]]\nkind = \"null\"\n[[sink]]\nkind = \"png\"\ndir = \"x\"\nkind = \"null\"\n";
        assert_eq!(err(text, &[]), "duplicate key `sink.1.kind` at line 6 (first set at line 4)");
        assert_eq!(
            err("params.steps = 1\nparams.steps = 2\n", &[]),
            "duplicate key `params.steps` at line 2 (first set at line 1)"
        );
        assert_eq!(err("\"mode\" = 1\nmode = 2\n", &[]), "duplicate key `mode` at line 2 (first set at line 1)");
        assert_eq!(
            err("[model]\nsize = 1\n[model.size]\n", &[]),
            "duplicate table `[model.size]` at line 3 (first set at line 2)"
        );
        // Other syntax errors keep toml's own words.
        assert!(err("[source\nkind=", &[]).contains("line 1"));
    }

    const FILE: &str = "[source]\nkind = \"test-pattern\"\n[params]\nsteps = 1\n[[sink]]\nkind = \"window\"\n[[sink]]\nkind = \"file\"\npath = \"x.mp4\"\n";

    #[test]
    fn a_bad_value_names_where_it_came_from() {
        // (A knob's value, `params.steps`, is checked after reading, by its declaration: config's tests; here the
        // keys serde types itself.)
        let e = err(FILE, &["stats-interval-s=\"soon\""]);
        assert!(e.ends_with("(from --set stats-interval-s=\"soon\")"), "{e}");
        assert!(!e.contains("line"), "{e}");
        let e = err(FILE, &["sink.0.path=1"]);
        assert!(e.starts_with("sink[0]: unknown field `path`") && e.ends_with("(from --set sink.0.path=1)"), "{e}");
        let e = err(FILE, &["control={http=1}"]);
        assert!(e.ends_with("(from --set control={http=1})"), "{e}");
        let e = err(FILE, &["params.stepz.x=1"]);
        assert!(e.contains("stepz") && e.ends_with("(from --set params.stepz.x=1)"), "{e}");
        let e = err(FILE, &["sink.1.kind=hologram"]);
        assert!(e.ends_with("(from --set sink.1.kind=hologram)"), "{e}");
        // The file's own bad value keeps its line, whatever else --set changed.
        let e = err(&FILE.replace("steps = 1", "steps = 1\n[control]\nhttp = 7860"), &["params.seed=3"]);
        assert!(e.starts_with("control.http: invalid type") && e.ends_with("(at line 6)"), "{e}");
        let e = err(&FILE.replace("kind = \"window\"", "kind = \"window\"\npath = \"z\""), &["params.steps=2"]);
        assert!(e.ends_with("(at line 7)"), "{e}");
        // A table made by --set without its `kind`: that override.
        let e = err(FILE, &["source={width=3}"]);
        assert!(e.contains("missing field `kind`") && e.ends_with("(from --set source={width=3})"), "{e}");
        let e = err(&FILE.replace("kind = \"test-pattern\"", "width = 3"), &["source.height=4"]);
        assert!(e.contains("missing field `kind`") && !e.contains("from --set"), "{e}");
    }

    #[test]
    fn overrides_on_a_value_are_those_on_its_text() {
        // The same pipeline as text and as a value: each `--set` makes the same file, or the same message.
        let value = read(FILE, &[]).unwrap();
        let cases: [&[&str]; 9] = [
            &[],
            &["params.steps=3", "params.prompt=a cat"],
            &["engine.stream-batch=2", "sink.1.quality=30", "mode=\"offline\""],
            &["stats-interval-s=\"soon\""],
            &["sink.0.path=1"],
            &["novalue"],
            &["params.stepz.x=1"],
            &["sink.1.kind=hologram"],
            &["source={width=3}"],
        ];
        for overrides in cases {
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            let from_text = read(FILE, &overrides).map(|f| format!("{f:?}"));
            let from_value = apply_to_file(value.clone(), &overrides).map(|f| format!("{f:?}"));
            assert_eq!(from_value, from_text, "{overrides:?}");
        }
    }

    #[test]
    fn floats_in_serde_messages_are_short() {
        let e = err(FILE, &["control.http=1e-300"]);
        assert!(e.contains("floating point `1e-300`") && e.len() < 200, "{e}");
        let e = err(FILE, &["control.http=2.0"]);
        assert!(e.contains("floating point `2.0`"), "{e}");
        let long = format!("stats-interval-s={}", "9".repeat(400));
        assert!(err(FILE, &[&long]).len() < 300);
    }
}
