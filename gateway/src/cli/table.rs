//! Human output: a small aligned-table formatter and helpers to turn JSON fields into cells.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Columns separated by two spaces, each padded to its widest cell; the header is upper-cased.
/// Cells are sanitized (no control characters), and lines carry no trailing spaces.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.rows
            .push(cells.into_iter().map(|c| sanitize(c.as_ref())).collect());
    }

    pub fn render(&self) -> String {
        let ncols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain(std::iter::once(self.headers.len()))
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < ncols {
                    let pad = width.saturating_sub(cell.chars().count());
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The events of a model, a service or a batch service (the seed's catalogues) as a table:
/// time, type, text.
pub fn events(items: &[Value]) -> String {
    let mut t = Table::new(&["TIME", "TYPE", "EVENT"]);
    for e in items {
        t.row(vec![
            short_time(e, "time"),
            cell(e, "type"),
            cell(e, "text"),
        ]);
    }
    t.render()
}

/// `label  value` lines for the fields of `v` that are there and not null, labels padded to
/// `width`, each line made safe for a terminal.
pub fn fields(v: &Value, width: usize, fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (label, key) in fields {
        if v.get(*key).is_some_and(|x| !x.is_null()) {
            out.push_str(&sanitize(&format!("{label:<width$} {}", cell(v, key))));
            out.push('\n');
        }
    }
    out
}

/// Replaces control characters (newlines, tabs, terminal escapes) so that server-provided text
/// can neither break the alignment nor drive the terminal.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// Shortens text to at most `max` characters, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A JSON field as a cell: strings as they are, numbers and booleans printed, null, missing and
/// empty strings as `-`, anything else as compact JSON.
pub fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(other) => other.to_string(),
    }
}

/// The string value of a field, or "" when missing or not a string.
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An RFC 3339 time shortened to minutes, in UTC: `2026-11-27 18:43`. Null/missing: `-`;
/// something that does not parse is shown as it is.
pub fn short_time(v: &Value, key: &str) -> String {
    format_time(v, key, false)
}

/// Like [`short_time`] with seconds: `2026-11-27 18:43:23`.
pub fn time_secs(v: &Value, key: &str) -> String {
    format_time(v, key, true)
}

fn format_time(v: &Value, key: &str, seconds: bool) -> String {
    let Some(raw) = v.get(key).and_then(Value::as_str) else {
        return cell(v, key);
    };
    let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) else {
        return raw.to_string();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    let formatted = if seconds {
        t.format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
    } else {
        t.format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
    };
    formatted.unwrap_or_else(|_| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligned_columns_no_trailing_spaces() {
        let mut t = Table::new(&["id", "name", "status"]);
        t.row(["1", "notebook-long-name", "RUNNING"]);
        t.row(["22", "nb", "STOPPED"]);
        assert_eq!(
            t.render(),
            "ID  NAME                STATUS\n\
             1   notebook-long-name  RUNNING\n\
             22  nb                  STOPPED\n"
        );
    }

    #[test]
    fn empty_last_column_and_short_rows() {
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(["x", "y", ""]);
        t.row(["long-x"]);
        assert_eq!(t.render(), "A       B  C\nx       y\nlong-x\n");
    }

    #[test]
    fn header_only() {
        let t = Table::new(&["ID", "NAME"]);
        assert_eq!(t.render(), "ID  NAME\n");
    }

    #[test]
    fn unicode_width_by_chars_and_sanitized() {
        let mut t = Table::new(&["N", "D"]);
        t.row(["héllo", "a\nb\tc\x1b[2J"]);
        t.row(["x", "y"]);
        assert_eq!(t.render(), "N      D\nhéllo  a b c?[2J\nx      y\n");
    }

    #[test]
    fn cells_and_times() {
        let v = json!({
            "s": "x", "e": "", "n": null, "b": true, "i": 3,
            "t": "2026-11-27T18:43:23.123456Z",
            "o": "2026-11-27T20:43:23+02:00",
            "bad": "yesterday"
        });
        assert_eq!(cell(&v, "s"), "x");
        assert_eq!(cell(&v, "e"), "-");
        assert_eq!(cell(&v, "n"), "-");
        assert_eq!(cell(&v, "missing"), "-");
        assert_eq!(cell(&v, "b"), "yes");
        assert_eq!(cell(&v, "i"), "3");
        assert_eq!(short_time(&v, "t"), "2026-11-27 18:43");
        assert_eq!(time_secs(&v, "t"), "2026-11-27 18:43:23");
        assert_eq!(short_time(&v, "o"), "2026-11-27 18:43");
        assert_eq!(short_time(&v, "n"), "-");
        assert_eq!(short_time(&v, "bad"), "yesterday");
        assert_eq!(text(&v, "s"), "x");
        assert_eq!(text(&v, "i"), "");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }
}
