//! From the file's text and `--set key=value` overrides to [`PipelineFile`]: one path for both, so an error
//! names its key either way (`params.steps: invalid type ...`), and, for a key written in the file, its line.

use super::file::PipelineFile;
use super::message;

/// Parse `text`, apply the overrides in order, and deserialize.
pub fn read(text: &str, overrides: &[String]) -> Result<PipelineFile, String> {
    // Syntax errors carry toml's own line and column.
    let mut table: toml::Table = toml::from_str(text).map_err(|e| message(&e))?;
    for o in overrides {
        apply(&mut table, o).map_err(|e| format!("--set {o}: {e}"))?;
    }
    let deserializer = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, PipelineFile>(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = message(e.inner());
        let key = unknown_field(&inner).unwrap_or_else(|| path.rsplit('.').next().unwrap_or("").to_string());
        let place = if path == "." { String::new() } else { format!("{path}: ") };
        match line_of(text, &key) {
            Some(line) => format!("{place}{inner} (at line {line})"),
            None if !overrides.is_empty() => format!("{place}{inner} (after --set)"),
            None => format!("{place}{inner}"),
        }
    })
}

/// The key serde names in an "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    Some(message.split("unknown field `").nth(1)?.split('`').next()?.to_string())
}

/// The line (1-based) that assigns `key`, when exactly one does (`dir` in two tables points at neither).
fn line_of(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let assigns = |line: &str| {
        let rest = line.trim_start().strip_prefix(key);
        rest.is_some_and(|r| r.trim_start().starts_with('='))
    };
    let mut lines = text.lines().enumerate().filter(|(_, l)| assigns(l)).map(|(i, _)| i + 1);
    match (lines.next(), lines.next()) {
        (Some(line), None) => Some(line),
        _ => None,
    }
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
}
