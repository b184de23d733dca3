//! Checking an existing plugin module against the interface (`python-stub --check`).
//!
//! The module is scanned as text, not imported: top-level `__interface__`, `__interface_hash__`
//! and `__interface_schema__` assignments, and top-level `def`s with their decorators and parameter
//! counts. That is enough to catch drift without running plugin code.

use std::fmt;

use crate::interface::InterfaceSpec;

/// One way a plugin module no longer matches its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// `__interface_hash__` is missing or differs.
    Hash { expected: u64, found: Option<u64> },
    /// `__interface_schema__` is present and differs: a struct the methods use changed since the
    /// stub was generated. (A module without it, as the original fidius wrote them, is not drift.)
    Schema { expected: u64, found: String },
    /// `__interface__` is missing or names another trait.
    InterfaceName {
        expected: String,
        found: Option<String>,
    },
    /// A required method has no function.
    MissingMethod { method: String },
    /// The function exists but is not decorated with `@method`.
    NotDecorated { method: String, line: usize },
    /// The function takes a different number of parameters than the trait method.
    Arity {
        method: String,
        expected: usize,
        found: usize,
        line: usize,
    },
    /// A `@method` function the interface does not have.
    UnknownMethod { method: String, line: usize },
    /// The interface itself cannot be served by a Python plugin (the macro refuses it too).
    Unservable { reason: String },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hash {
                expected,
                found: Some(found),
            } => write!(
                f,
                "__interface_hash__ is {found:#018x}, but the interface's hash is {expected:#018x}"
            ),
            Self::Hash {
                expected,
                found: None,
            } => write!(
                f,
                "no `__interface_hash__ = 0x…` assignment; expected {expected:#018x}"
            ),
            Self::Schema { expected, found } => write!(
                f,
                "__interface_schema__ is {found}, but the interface's schema fingerprint is \
                 {expected:#018x}: a struct the methods use changed; regenerate the stub"
            ),
            Self::InterfaceName {
                expected,
                found: Some(found),
            } => {
                write!(
                    f,
                    "__interface__ is \"{found}\", but the trait is \"{expected}\""
                )
            }
            Self::InterfaceName {
                expected,
                found: None,
            } => {
                write!(f, "no `__interface__ = \"{expected}\"` assignment")
            }
            Self::MissingMethod { method } => write!(f, "method `{method}` is missing"),
            Self::NotDecorated { method, line } => {
                write!(f, "line {line}: `{method}` is not decorated with @method")
            }
            Self::Arity {
                method,
                expected,
                found,
                line,
            } => write!(
                f,
                "line {line}: `{method}` takes {found} parameter(s), the interface has {expected}"
            ),
            Self::UnknownMethod { method, line } => write!(
                f,
                "line {line}: @method `{method}` is not a method of the interface"
            ),
            Self::Unservable { reason } => {
                write!(
                    f,
                    "the interface cannot be served by a Python plugin: {reason}"
                )
            }
        }
    }
}

/// Every drift between the plugin module text `python` and `spec`; empty when it matches.
pub fn check_module(spec: &InterfaceSpec, python: &str) -> Vec<Drift> {
    let module = scan(python);
    let mut drifts: Vec<Drift> = spec
        .python_wire_problems()
        .iter()
        .map(|problem| Drift::Unservable {
            reason: problem.to_string(),
        })
        .collect();
    if module.hash != Some(spec.hash) {
        drifts.push(Drift::Hash {
            expected: spec.hash,
            found: module.hash,
        });
    }
    if let (Some(expected), Some(found)) = (spec.schema_fingerprint, &module.schema) {
        if parse_python_int(found) != Some(expected) {
            drifts.push(Drift::Schema {
                expected,
                found: found.clone(),
            });
        }
    }
    if module.interface.as_deref() != Some(spec.trait_name.as_str()) {
        drifts.push(Drift::InterfaceName {
            expected: spec.trait_name.clone(),
            found: module.interface.clone(),
        });
    }
    for method in &spec.methods {
        match module.functions.iter().find(|f| f.name == method.name) {
            None if method.optional_since.is_none() => drifts.push(Drift::MissingMethod {
                method: method.name.clone(),
            }),
            None => {}
            Some(function) if !function.decorated => drifts.push(Drift::NotDecorated {
                method: method.name.clone(),
                line: function.line,
            }),
            Some(function) if function.arity != method.args.len() => drifts.push(Drift::Arity {
                method: method.name.clone(),
                expected: method.args.len(),
                found: function.arity,
                line: function.line,
            }),
            Some(_) => {}
        }
    }
    for function in module.functions.iter().filter(|f| f.decorated) {
        if !spec
            .methods
            .iter()
            .any(|method| method.name == function.name)
        {
            drifts.push(Drift::UnknownMethod {
                method: function.name.clone(),
                line: function.line,
            });
        }
    }
    drifts
}

#[derive(Default)]
struct ScannedModule {
    interface: Option<String>,
    hash: Option<u64>,
    /// The `__interface_schema__` value as written.
    schema: Option<String>,
    functions: Vec<ScannedFunction>,
}

struct ScannedFunction {
    name: String,
    arity: usize,
    decorated: bool,
    line: usize,
}

fn scan(python: &str) -> ScannedModule {
    let mut module = ScannedModule::default();
    let lines: Vec<&str> = python.lines().collect();
    let mut decorated = false;
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        index += 1;
        if line.starts_with(char::is_whitespace) || line.trim().is_empty() || line.starts_with('#')
        {
            continue;
        }
        if let Some(decorator) = line.strip_prefix('@') {
            let decorator = decorator.split('#').next().unwrap_or_default().trim();
            decorated |= decorator == "method" || decorator == "fidius.method";
            continue;
        }
        let header = line.strip_prefix("async ").unwrap_or(line);
        if let Some(rest) = header.strip_prefix("def ") {
            let line_number = index;
            let mut signature = rest.to_owned();
            while paren_depth(&signature) > 0 && index < lines.len() {
                signature.push('\n');
                signature.push_str(lines[index]);
                index += 1;
            }
            if let Some((name, params)) = signature.split_once('(') {
                module.functions.push(ScannedFunction {
                    name: name.trim().to_owned(),
                    arity: count_parameters(params),
                    decorated,
                    line: line_number,
                });
            }
        } else if let Some(value) = assignment(line, "__interface_hash__") {
            module.hash = parse_python_int(value);
        } else if let Some(value) = assignment(line, "__interface_schema__") {
            // Kept for the message only: a short excerpt of what the module says.
            module.schema = Some(value.chars().take(40).collect());
        } else if let Some(value) = assignment(line, "__interface__") {
            module.interface = parse_python_str(value);
        }
        decorated = false;
    }
    module
}

/// `value` in `name = value  # comment` (also `name: int = value`).
fn assignment<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.trim_start();
    let rest = match rest.strip_prefix(':') {
        Some(annotated) => annotated.split_once('=')?.1,
        None => rest.strip_prefix('=')?,
    };
    Some(rest.split('#').next().unwrap_or_default().trim())
}

fn parse_python_int(text: &str) -> Option<u64> {
    let digits = text.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else if let Some(octal) = lower.strip_prefix("0o") {
        u64::from_str_radix(octal, 8).ok()
    } else if let Some(binary) = lower.strip_prefix("0b") {
        u64::from_str_radix(binary, 2).ok()
    } else {
        lower.parse().ok()
    }
}

fn parse_python_str(text: &str) -> Option<String> {
    ['"', '\''].into_iter().find_map(|quote| {
        text.strip_prefix(quote)?
            .strip_suffix(quote)
            .map(str::to_owned)
    })
}

/// Follows bracket nesting through Python source, skipping string literals.
#[derive(Default)]
struct Brackets {
    depth: i32,
    quote: Option<char>,
}

impl Brackets {
    /// Feeds one character; returns it when it is outside any string literal.
    fn step(&mut self, ch: char) -> Option<char> {
        match (self.quote, ch) {
            (Some(open), c) if c == open => self.quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => self.quote = Some(ch),
            (None, '(' | '[' | '{') => self.depth += 1,
            (None, ')' | ']' | '}') => self.depth -= 1,
            (None, _) => return Some(ch),
        }
        None
    }
}

/// Open brackets minus closed ones, ignoring brackets inside string literals.
fn paren_depth(text: &str) -> i32 {
    let mut brackets = Brackets::default();
    text.chars().for_each(|ch| {
        brackets.step(ch);
    });
    brackets.depth
}

/// The number of parameters in `a: int, b: list[int] = [1, 2]) -> None:` (text after `(`).
/// Bare `*` and `/` markers are not parameters.
fn count_parameters(after_open_paren: &str) -> usize {
    let mut brackets = Brackets::default();
    let mut current = String::new();
    let mut params = Vec::new();
    for ch in after_open_paren.chars() {
        let top_level = brackets.depth == 0;
        let plain = brackets.step(ch);
        if brackets.depth < 0 {
            break;
        }
        if top_level && plain == Some(',') {
            params.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    params.push(current);
    params
        .iter()
        .map(|param| param.trim())
        .filter(|param| !param.is_empty() && *param != "*" && *param != "/")
        .count()
}

#[cfg(test)]
mod tests {
    use super::{count_parameters, scan};

    #[test]
    fn counts_parameters_through_defaults_annotations_and_markers() {
        assert_eq!(count_parameters(") -> None:"), 0);
        assert_eq!(
            count_parameters("a: int, b: dict[str, int] = {'x': 1}) -> int:"),
            2
        );
        assert_eq!(count_parameters("a, /, b, *, c=\"(,)\") -> None:"), 3);
        assert_eq!(
            count_parameters("a: tuple[int, int],\n    b: str,\n) -> None:"),
            2
        );
    }

    #[test]
    fn scans_headers_decorators_and_multi_line_defs() {
        let module = scan(
            "__interface__ = 'Greeter'\n\
             __interface_hash__: int = 0xB02E_B410_4846_FFE7  # keep\n\
             @method\n\
             # a comment between decorator and def\n\
             def greet(\n    name: str,\n) -> str:\n    def inner(a, b): pass\n    return name\n\
             async def helper(x): ...\n\
             @fidius.method\n\
             def echo(data: bytes) -> bytes: return data\n",
        );
        assert_eq!(module.interface.as_deref(), Some("Greeter"));
        assert_eq!(module.hash, Some(0xb02e_b410_4846_ffe7));
        let found: Vec<(&str, usize, bool, usize)> = module
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.arity, f.decorated, f.line))
            .collect();
        assert_eq!(
            found,
            [
                ("greet", 1, true, 5),
                ("helper", 1, false, 10),
                ("echo", 1, true, 12)
            ]
        );
    }
}
