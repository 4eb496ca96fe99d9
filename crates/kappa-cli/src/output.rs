//! Printing: human text, or one JSON value per line with `--json`.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::error::Result;

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    /// Machine-readable output: one JSON value per line.
    pub(crate) json: bool,
}

impl Out {
    /// Prints `human` (text mode) or `json` (JSON mode) as one line.
    pub(crate) fn emit(&self, human: impl AsRef<str>, json: impl FnOnce() -> Value) -> Result<()> {
        if self.json {
            self.json_line(&json())
        } else {
            self.text(human)
        }
    }

    /// Prints text in text mode only.
    pub(crate) fn text(&self, line: impl AsRef<str>) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", line.as_ref())?;
        Ok(())
    }

    /// Prints a JSON value in JSON mode only.
    pub(crate) fn json_line(&self, value: &Value) -> Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{value}")?;
        Ok(())
    }

    /// Whether progress bars may be drawn: a terminal, and not `--json`.
    pub(crate) fn bars(&self) -> bool {
        !self.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
    }
}

/// A value as compact JSON (strings quoted), for tables and logs.
/// Text from a peer or from disk, safe to print to a terminal: control
/// characters (escape sequences, newlines that would forge rows) as `\u{..}`
/// escapes.
pub(crate) fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

pub(crate) fn compact(value: &Value) -> String {
    value.to_string()
}

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A feed key or `<feed>@<seq>` id shortened for tables: the first 8 hex digits.
pub(crate) fn short_id(id: &str) -> String {
    let (feed, seq) = match id.rsplit_once('@') {
        Some((feed, seq)) => (feed, Some(seq)),
        None => (id, None),
    };
    let feed = match feed.get(..8) {
        Some(p) if feed.len() > 8 => format!("{p}…"),
        _ => feed.to_owned(),
    };
    match seq {
        Some(seq) => format!("{feed}@{seq}"),
        None => feed,
    }
}

/// Lays out rows as columns separated by two spaces (the last column unpadded).
pub(crate) fn columns(rows: &[Vec<String>]) -> Vec<String> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        let feed = "ab".repeat(32);
        assert_eq!(short_id(&format!("{feed}@12")), "abababab…@12");
        assert_eq!(short_id(&feed), "abababab…");
        assert_eq!(short_id("tiny@1"), "tiny@1");
        assert_eq!(short_id("aéééééééé@3"), "aéééééééé@3");
    }

    #[test]
    fn columns_pad_all_but_the_last() {
        let rows =
            vec![vec!["a".into(), "bb".into(), "c".into()], vec!["dddd".into(), "e".into(), String::new()]];
        assert_eq!(columns(&rows), ["a     bb  c", "dddd  e"]);
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
    }
}
