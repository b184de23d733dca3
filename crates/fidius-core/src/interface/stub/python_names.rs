//! Turning Rust names into valid Python identifiers.

/// Python's hard keywords: not usable as parameter or function names.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

pub fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

/// A parameter name: the Rust name, `_` suffixed when it is a Python keyword, `argN` for `_`.
pub fn parameter(name: Option<&str>, position: usize) -> String {
    match name {
        Some(name) if is_keyword(name) => format!("{name}_"),
        Some(name) if name != "_" => name.to_owned(),
        _ => format!("arg{position}"),
    }
}
