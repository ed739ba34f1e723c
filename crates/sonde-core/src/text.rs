//! Showing text that someone else chose.
//!
//! Plugins choose their names, versions, descriptions, units, label values
//! and log lines; endpoints choose directive reasons. Printed raw, a carriage
//! return, a line feed, an ANSI escape sequence or a Unicode bidi override in
//! such a string can rewrite what an operator sees on a terminal or in a log:
//! turn a `REFUSED` line into an `ok` one, or forge a log line.
//! [`escape_control`] is the one function every text output (the CLI's
//! tables, log lines, host-made reasons that quote plugin text) runs such
//! strings through. Machine-readable output (JSON) carries the exact strings
//! instead: its own escaping is exact and reversible.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`escape_control`]: a C0 control (U+0000 to
/// U+001F, tab and line feed included), DEL (U+007F), a C1 control (U+0080 to
/// U+009F), or an invisible formatting character that can reorder or hide
/// text on a terminal: the Arabic letter mark (U+061C), zero-width spaces and
/// joiners and the left-to-right / right-to-left marks (U+200B to U+200F),
/// the line and paragraph separators and the bidi embeddings and overrides
/// (U+2028 to U+202E), the word joiner, invisible operators and bidi isolates
/// (U+2060 to U+2069), and the byte order mark (U+FEFF).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `s` fit to be shown on a terminal or in a log line: every character for
/// which [`needs_escape`] holds is replaced by a visible escape, `\r`, `\n`
/// and `\t` for those three, `\u{XX}` (lower-case hex, as Rust writes it)
/// for the others, e.g. `\u{1b}` for ESC and `\u{202e}` for a right-to-left
/// override. Everything else is kept as it is, so `s` comes back borrowed
/// when it needs no escape (the common case).
///
/// Backslashes are kept too: the result is for display, not to be parsed
/// back, and escaping is idempotent (`escape_control(&escape_control(s))`
/// is `escape_control(s)`), so a host-made reason that already quotes plugin
/// text escaped can be escaped again when printed without changing.
///
/// ```
/// use sonde_core::text::escape_control;
/// assert_eq!(escape_control("ok"), "ok");
/// assert_eq!(escape_control("a\r\u{1b}[2K ok\n"), "a\\r\\u{1b}[2K ok\\n");
/// ```
pub fn escape_control(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        for s in ["", "http-status", "Requests by status class; µs, ≤10 ✓", r"C:\path\n"] {
            assert!(matches!(escape_control(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn controls_and_bidi_overrides_become_visible_escapes() {
        let cases = [
            ("a\rb", r"a\rb"),
            ("a\nb", r"a\nb"),
            ("a\tb", r"a\tb"),
            ("\u{1b}[2K ok", r"\u{1b}[2K ok"),
            ("\0\u{7}\u{8}\u{7f}", r"\u{0}\u{7}\u{8}\u{7f}"),
            ("\u{85}\u{9b}31m", r"\u{85}\u{9b}31m"),
            ("abc\u{202e}fed", r"abc\u{202e}fed"),
            ("\u{202a}\u{202b}\u{202c}\u{202d}", r"\u{202a}\u{202b}\u{202c}\u{202d}"),
            ("\u{2066}x\u{2067}\u{2068}\u{2069}", r"\u{2066}x\u{2067}\u{2068}\u{2069}"),
            ("\u{200f}\u{2028}\u{feff}\u{61c}", r"\u{200f}\u{2028}\u{feff}\u{61c}"),
            ("µs\n✓", r"µs\n✓"),
        ];
        for (raw, shown) in cases {
            let escaped = escape_control(raw);
            assert_eq!(escaped, shown, "{raw:?}");
            assert!(!escaped.chars().any(needs_escape), "{escaped}");
        }
    }

    #[test]
    fn escaping_is_idempotent_and_never_leaves_a_control() {
        let mut all = String::new();
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            all.push(c);
        }
        all.push('\u{feff}');
        let once = escape_control(&all).into_owned();
        assert!(!once.chars().any(needs_escape));
        assert_eq!(escape_control(&once), once.as_str());
    }
}
