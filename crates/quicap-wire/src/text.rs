//! Text that came from elsewhere (a peer's messages, a certificate, a CSR, a CRL),
//! made safe to put in a log line or on a terminal.
//!
//! [`Escaped`] writes such a string with every character that could end a log line,
//! move the cursor, recolour a terminal or reorder what is shown (control characters,
//! Unicode format characters such as bidirectional overrides) as a `\u{..}` escape, and
//! a backslash as `\\`, so that an escape in the output always comes from the escaping.
//! Everything else, non-ASCII letters included, is written as it is. [`Quoted`] also
//! puts it between double quotes (escaping those inside), for a string that must not
//! look like more than one field of a log line, such as a name nobody verified.

use std::fmt;

/// A string shown escaped (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, needs_escape)
    }
}

/// A string shown escaped and between double quotes (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        write_escaped(f, self.0, |c| c == '"' || needs_escape(c))?;
        f.write_str("\"")
    }
}

fn write_escaped(
    f: &mut fmt::Formatter<'_>,
    s: &str,
    escape: impl Fn(char) -> bool,
) -> fmt::Result {
    use fmt::Write;
    let mut rest = s;
    while let Some(at) = rest.find(&escape) {
        f.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or_default();
        if c == '\\' || c == '"' {
            f.write_char('\\')?;
            f.write_char(c)?;
        } else {
            for e in c.escape_unicode() {
                f.write_char(e)?;
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    f.write_str(rest)
}

/// The string escaped, as an owned `String`.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c,
            '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_become_escapes() {
        assert_eq!(
            escape("node-a\n2026-01-01 ERROR forged\u{1b}[2J"),
            "node-a\\u{a}2026-01-01 ERROR forged\\u{1b}[2J"
        );
        assert_eq!(
            escape("a\rb\tc\u{7f}\u{85}"),
            "a\\u{d}b\\u{9}c\\u{7f}\\u{85}"
        );
    }

    #[test]
    fn reordering_characters_and_backslashes_are_escaped() {
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("a\\u{a}"), "a\\\\u{a}");
    }

    #[test]
    fn quoted_text_keeps_its_quotes_inside() {
        assert_eq!(Quoted("a \"b\"\nc").to_string(), "\"a \\\"b\\\"\\u{a}c\"");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for s in ["node-a", "gw.site-2", "Zürich 東京", ""] {
            assert_eq!(escape(s), s);
        }
    }

    proptest! {
        #[test]
        fn output_has_no_character_that_needs_escaping(s in any::<String>()) {
            let out = escape(&s);
            prop_assert!(!out.chars().any(|c| c != '\\' && needs_escape(c)));
        }
    }
}
