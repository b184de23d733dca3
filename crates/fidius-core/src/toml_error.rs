//! TOML syntax errors that show where, not what: a line, a column and a short excerpt.
//!
//! `toml`'s own error display quotes the offending input, which for a file that is not what it
//! claims to be (a secrets file, a binary) would copy its contents into logs. [`TomlSyntax`] keeps
//! the position, the parser's message and at most [`EXCERPT_CHARS`] characters of that line.

use std::fmt;

/// Most characters of the offending line (and of the parser's message) kept for display.
pub const EXCERPT_CHARS: usize = 60;

/// Where and why TOML text failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlSyntax {
    /// 1-based line of the error (0 when the parser gave no position).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The parser's message, shortened.
    pub message: String,
    /// The start of the offending line, at most [`EXCERPT_CHARS`] characters, control characters
    /// replaced.
    pub excerpt: String,
}

impl TomlSyntax {
    /// Summarises `error`, which came from parsing `text`.
    pub fn new(text: &str, error: &toml::de::Error) -> Self {
        let message = shorten(error.message().lines().next().unwrap_or_default());
        let Some(span) = error.span() else {
            return Self {
                line: 0,
                column: 0,
                message,
                excerpt: String::new(),
            };
        };
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |index| index + 1);
        let line_end = text[start..]
            .find('\n')
            .map_or(text.len(), |index| start + index);
        Self {
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            message,
            excerpt: shorten(&text[line_start..line_end]),
        }
    }
}

impl fmt::Display for TomlSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.message);
        }
        write!(
            f,
            "line {}, column {}: {} (line starts `{}`)",
            self.line, self.column, self.message, self.excerpt
        )
    }
}

/// At most [`EXCERPT_CHARS`] characters of `text`, control characters shown as `?`, `…` when cut.
pub fn shorten(text: &str) -> String {
    let mut short: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        short.push('…');
    }
    short
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_position_and_keeps_only_an_excerpt() {
        let secret = "x".repeat(200);
        let text = format!("[package]\nname = \"a\"\nTOKEN={secret}\n");
        let error = toml::from_str::<toml::Table>(&text).expect_err("bare value");
        let syntax = TomlSyntax::new(&text, &error);
        assert_eq!(syntax.line, 3);
        let shown = syntax.to_string();
        assert!(shown.starts_with("line 3, column "), "{shown}");
        assert!(shown.contains("TOKEN=xxx"), "{shown}");
        assert!(!shown.contains(&"x".repeat(EXCERPT_CHARS)), "{shown}");
    }
}
