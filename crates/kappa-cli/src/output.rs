//! Printing: human text, or one JSON value per line with `--json`.
//!
//! Keys, values and names can come from peers. Every human-readable line goes
//! through [`escape`] on its way out ([`Out::text`], errors and warnings on
//! standard error), so no control character reaches the terminal: an escape
//! sequence cannot recolour or rewrite the screen, a newline cannot forge a
//! row. JSON output is escaped by serde (control characters as `\uXXXX`).

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
        writeln!(out, "{}", escape(line.as_ref()))?;
        Ok(())
    }

    /// Prints a JSON value in JSON mode only.
    pub(crate) fn json_line(&self, value: &Value) -> Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", json_text(value))?;
        Ok(())
    }

    /// Whether progress bars may be drawn: a terminal, and not `--json`.
    pub(crate) fn bars(&self) -> bool {
        !self.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
    }
}

/// `s` with every character that could steer a terminal written as an escape:
/// C0 and C1 control characters and DEL (`\n`, `\r`, `\t`, `\0`, else
/// `\u{1b}`), and the Unicode characters that reorder or break lines (bidi
/// overrides and isolates, line and paragraph separators). Everything else,
/// including other non-ASCII text, is kept. Backslashes are kept as they are:
/// `--json` is the unambiguous form.
pub(crate) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes from a peer as text: valid UTF-8 as it is, invalid sequences as
/// `\xNN`; then [`escape`]d.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut text = String::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    escape(&text).into_owned()
}

/// `value` as compact JSON in which, beyond what JSON requires (serde escapes
/// C0 controls, `"` and `\\`), the characters [`escape`] guards against are
/// written as `\\uXXXX` too: the same value, and safe to print to a terminal.
pub(crate) fn json_text(value: &Value) -> String {
    struct Safe;
    impl serde_json::ser::Formatter for Safe {
        fn write_string_fragment<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            let mut start = 0;
            for (i, c) in fragment.char_indices() {
                if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
                {
                    w.write_all(&fragment.as_bytes()[start..i])?;
                    write!(w, "\\u{:04x}", c as u32)?;
                    start = i + c.len_utf8();
                }
            }
            w.write_all(&fragment.as_bytes()[start..])
        }
    }
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, Safe);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => {
            String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
        Err(_) => value.to_string(),
    }
}

/// A value as compact JSON (strings quoted), for tables and logs.
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
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain é …"), "plain é …");
        assert_eq!(escape("a\x1b[31mred\nrow\r\0\t"), "a\\u{1b}[31mred\\nrow\\r\\0\\t");
        assert_eq!(
            escape("\u{9b}2J \u{7f} \u{202e}abc \u{2028}"),
            "\\u{9b}2J \\u{7f} \\u{202e}abc \\u{2028}"
        );
        assert_eq!(escape_bytes(b"ok\xff\xc3(\x1b"), "ok\\xff\\xc3(\\u{1b}");
    }

    #[test]
    fn json_is_the_same_value_and_terminal_safe() {
        let v = serde_json::json!({"k\u{1b}": "a\nb\u{9b}c\u{202e}d é", "n": [1, null]});
        let text = json_text(&v);
        assert!(!text.chars().any(|c| c.is_control() || c == '\u{202e}'), "{text}");
        assert!(text.contains("\\u009b") && text.contains("\\u202e") && text.contains('é'), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(v));
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
