//! What can be wrong with a `package.toml`.

use std::path::PathBuf;

use crate::fs::FileError;
use crate::package_error::Joined;
use crate::toml_error::TomlSyntax;

/// A manifest that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read: missing, unreadable, not a regular file or too large.
    #[error(transparent)]
    Read(#[from] FileError),
    /// The file is not valid TOML. Shows the position and a short excerpt, never the whole input.
    #[error("{} is not valid TOML: {syntax}", path.display())]
    Syntax { path: PathBuf, syntax: TomlSyntax },
    /// The file is valid TOML but breaks one or more manifest rules; all of them are listed.
    #[error("{path} is invalid: {}", Joined(problems, "; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<ManifestProblem>,
    },
}

/// One broken rule in an otherwise well-formed `package.toml`. Fields are named `table.key`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestProblem {
    #[error("missing table [{table}]")]
    MissingTable { table: &'static str },
    #[error("missing field `{field}` (expected {expected})")]
    MissingField {
        field: String,
        expected: &'static str,
    },
    #[error("field `{field}` has the wrong type (expected {expected}, found {found})")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error("unknown key `{key}`")]
    UnknownKey { key: String },
    #[error("field `package.name` is {name:?} (expected lowercase ASCII letters, digits, `_` and `-`, starting with a letter or digit)")]
    InvalidName { name: String },
    #[error(
        "field `package.version` is {version:?} (expected a semantic version such as \"0.1.0\")"
    )]
    InvalidVersion {
        version: String,
        #[source]
        source: semver::Error,
    },
    #[error("field `package.interface` is empty (expected the interface trait name)")]
    EmptyInterface,
    #[error("field `package.runtime` is {runtime:?} (expected \"python\" or \"rust\")")]
    UnsupportedRuntime { runtime: String },
    #[error("`runtime = \"python\"` needs a [python] table with `entry_module`")]
    MissingPythonTable,
    #[error("`runtime = \"rust\"` needs a [rust] table with `library` (the built cdylib; `fidius package build` puts it there)")]
    MissingRustTable,
    #[error("field `rust.library` is {path:?} (expected a relative path inside the package)")]
    LibraryOutsidePackage { path: String },
    #[error("field `rust.library` names {}, which does not exist: run `fidius package build` first", .path.display())]
    LibraryNotFound { path: PathBuf },
    #[error("field `python.entry_module` is {module:?} (expected a dotted Python module name such as \"greeter\" or \"pkg.main\")")]
    InvalidEntryModule { module: String },
    #[error("field `python.entry_module` names {module:?}, but neither {} nor {} exists", .candidates[0].display(), .candidates[1].display())]
    EntryModuleNotFound {
        module: String,
        candidates: [PathBuf; 2],
    },
    #[error(
        "field `python.requirements` is {path:?} (expected a relative path inside the package)"
    )]
    RequirementsOutsidePackage { path: String },
    #[error(
        "field `python.requirements` names {}, which does not exist: create it (empty if the \
         plugin needs no packages) or remove the field",
        .path.display()
    )]
    RequirementsNotFound { path: PathBuf },
    #[error("field `python.isolation` is {value:?} (expected \"auto\", \"subinterpreter\" or \"process\")")]
    InvalidIsolation { value: String },
}
