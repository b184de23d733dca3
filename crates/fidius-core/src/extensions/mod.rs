//! `extensions.toml`: whether each compiled extension module a package vendors can be imported in an
//! own-GIL sub-interpreter, as probed by `fidius pack`.
//!
//! The file sits at the package root next to `package.toml`. It is an ordinary package file: the
//! digest and the signature cover it, and packages without it (for instance made by the original
//! fidius tool) are valid. A host reads it to choose the tier of `isolation = "auto"` plugins
//! without probing again; it only trusts it when it was probed with the host's Python `major.minor`
//! and lists exactly the extension files present (see [`ExtensionRecord::matches`]).
//!
//! ```toml
//! # Written by `fidius pack`: which compiled extension modules under vendor/ can be imported
//! # in an own-GIL sub-interpreter. isolation = "auto" runs the plugin in a worker process when one cannot.
//! python = "3.13"
//!
//! [[module]]
//! name = "_testmultiphase"
//! file = "vendor/_testmultiphase.cpython-313-x86_64-linux-gnu.so"
//! subinterpreter = true
//!
//! [[module]]
//! name = "_testsinglephase"
//! file = "vendor/_testsinglephase.cpython-313-x86_64-linux-gnu.so"
//! subinterpreter = false
//! reason = "ImportError: module _testsinglephase does not support loading in subinterpreters"
//! ```
//!
//! Fields: `python` is the `major.minor` of the CPython that probed; each `[[module]]` has the
//! dotted `name` it was imported by, its `file` relative to the package root (under `vendor/`),
//! `subinterpreter` (whether the import succeeded in a sub-interpreter) and, when it did not, a
//! one-line `reason` (the exception as `Type: message`, or how the probe process died).

mod scan;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use scan::{find_extension_modules, ExtensionFile};

use crate::fs::{read_regular_file, read_regular_text, FileError, MAX_EXTENSIONS_BYTES};
use crate::toml_error::TomlSyntax;

/// File name of the probe record at the package root.
pub const EXTENSIONS_FILE: &str = "extensions.toml";

const HEADER: &str = "\
# Written by `fidius pack`: which compiled extension modules under vendor/ can be imported
# in an own-GIL sub-interpreter. isolation = \"auto\" runs the plugin in a worker process when one cannot.
";

/// A CPython feature version, `major.minor` (extension modules are built per feature version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PythonVersion {
    pub major: u32,
    pub minor: u32,
}

impl PythonVersion {
    /// The tag in extension file names, e.g. `cpython-313`.
    pub fn cpython_tag(self) -> String {
        format!("cpython-{}{}", self.major, self.minor)
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `major.minor` was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Python version (expected MAJOR.MINOR, e.g. \"3.13\")")]
pub struct BadPythonVersion {
    pub text: String,
}

impl FromStr for PythonVersion {
    type Err = BadPythonVersion;

    /// Parses `3.13`, or a full version such as `3.13.5` (keeping `major.minor`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPythonVersion {
            text: text.to_owned(),
        };
        let mut parts = text.split('.');
        let mut number = || -> Result<u32, BadPythonVersion> {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let major = number()?;
        // Whatever follows `major.minor` (`.5`, `.0rc1`) is not looked at.
        let minor = number()?;
        Ok(Self { major, minor })
    }
}

impl TryFrom<String> for PythonVersion {
    type Error = BadPythonVersion;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PythonVersion> for String {
    fn from(version: PythonVersion) -> Self {
        version.to_string()
    }
}

/// The contents of `extensions.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionRecord {
    /// The CPython that probed.
    pub python: PythonVersion,
    /// One entry per extension module, sorted by file.
    #[serde(rename = "module", default)]
    pub modules: Vec<ExtensionProbe>,
}

/// Whether one extension module imports in an own-GIL sub-interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionProbe {
    /// Dotted module name, e.g. `numpy._core._multiarray_umath`.
    pub name: String,
    /// `/`-separated path relative to the package root, under `vendor/`.
    pub file: String,
    /// The import succeeded in a fresh own-GIL sub-interpreter.
    pub subinterpreter: bool,
    /// Why not, on one line (`ImportError: …`, `crashed: signal 6 (SIGABRT)`, `timed out …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `extensions.toml` could not be read, written or understood, or `vendor/` could not be scanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionsError {
    /// Reading or writing the file failed.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a regular file within the size bound, or not readable.
    #[error(transparent)]
    Read(#[from] FileError),
    /// The file is not valid TOML, or a field is missing, unknown or of the wrong type. Shows the
    /// position and a short excerpt, never the whole input.
    #[error("{} is invalid: {syntax}", path.display())]
    Parse { path: PathBuf, syntax: TomlSyntax },
    /// A field has a value that breaks the record's rules.
    #[error("{}: `{field}` {problem}", path.display())]
    Invalid {
        path: PathBuf,
        /// e.g. `module[2].file`.
        field: String,
        problem: String,
    },
    /// The record could not be turned into TOML (a fidius bug).
    #[error("cannot write {}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    /// Walking `vendor/` failed.
    #[error("cannot scan {} for extension modules", dir.display())]
    Walk {
        dir: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    /// A path under `vendor/` is not UTF-8.
    #[error("{path:?} is not valid UTF-8")]
    NonUtf8Path { path: PathBuf },
}

impl ExtensionRecord {
    /// Reads `root/extensions.toml`; `Ok(None)` when the package has none.
    pub fn load(root: &Path) -> Result<Option<Self>, ExtensionsError> {
        let path = root.join(EXTENSIONS_FILE);
        let text = match read_regular_text(&path, MAX_EXTENSIONS_BYTES) {
            Ok(text) => text,
            Err(FileError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        Self::parse(&text, &path).map(Some)
    }

    /// Parses and validates the text of an `extensions.toml`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ExtensionsError> {
        let record: Self = toml::from_str(text).map_err(|error| ExtensionsError::Parse {
            path: path.to_path_buf(),
            syntax: TomlSyntax::new(text, &error),
        })?;
        record.validate(path)?;
        Ok(record)
    }

    fn validate(&self, path: &Path) -> Result<(), ExtensionsError> {
        let invalid = |index: usize, field: &str, problem: String| ExtensionsError::Invalid {
            path: path.to_path_buf(),
            field: format!("module[{index}].{field}"),
            problem,
        };
        let mut files = BTreeSet::new();
        for (index, module) in self.modules.iter().enumerate() {
            if !module.name.split('.').all(scan::is_identifier) {
                return Err(invalid(
                    index,
                    "name",
                    format!("{:?} is not a dotted Python module name", module.name),
                ));
            }
            let safe_path = module
                .file
                .strip_prefix("vendor/")
                .is_some_and(|rest| rest.split('/').all(|part| !part.is_empty() && part != ".."));
            if !safe_path {
                return Err(invalid(
                    index,
                    "file",
                    format!(
                        "{:?} is not a relative path under vendor/ without `..`",
                        module.file
                    ),
                ));
            }
            if !files.insert(module.file.as_str()) {
                return Err(invalid(
                    index,
                    "file",
                    format!("{:?} is listed twice", module.file),
                ));
            }
            if module.subinterpreter && module.reason.is_some() {
                return Err(invalid(
                    index,
                    "reason",
                    "is only allowed with subinterpreter = false".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The record as written to `extensions.toml` (with a comment saying what it is).
    pub fn to_toml(&self) -> Result<String, ExtensionsError> {
        let body = toml::to_string(self).map_err(|source| ExtensionsError::Serialize {
            path: PathBuf::from(EXTENSIONS_FILE),
            source,
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Writes `root/extensions.toml`, leaving the file untouched when it already says the same
    /// (so a package signed after an earlier pack stays signed). Returns whether it wrote.
    pub fn write(&self, root: &Path) -> Result<bool, ExtensionsError> {
        let path = root.join(EXTENSIONS_FILE);
        let text = self.to_toml()?;
        if read_regular_file(&path, MAX_EXTENSIONS_BYTES)
            .is_ok_and(|existing| existing == text.as_bytes())
        {
            return Ok(false);
        }
        // A fresh file renamed into place: never half-written, and a symlink (or FIFO) at the path
        // is replaced rather than written through.
        let io_error = |source| ExtensionsError::Io {
            path: path.clone(),
            source,
        };
        let mut temp = tempfile::NamedTempFile::new_in(root).map_err(io_error)?;
        std::io::Write::write_all(&mut temp, text.as_bytes()).map_err(io_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io_error)?;
        }
        temp.persist(&path).map_err(|error| io_error(error.error))?;
        Ok(true)
    }

    /// The modules that cannot run in a sub-interpreter: the ones that decide the tier of an
    /// `isolation = "auto"` plugin.
    pub fn refused(&self) -> impl Iterator<Item = &ExtensionProbe> {
        self.modules.iter().filter(|module| !module.subinterpreter)
    }

    /// Replaces each `(path, placeholder)` path in the recorded reasons (longest path first), so
    /// that a record written into a package names no folder of the machine that probed it.
    pub fn replace_paths_in_reasons(&mut self, replacements: &[(String, &str)]) {
        let mut replacements: Vec<&(String, &str)> = replacements
            .iter()
            .filter(|(path, _)| !path.is_empty())
            .collect();
        replacements.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        for reason in self.modules.iter_mut().filter_map(|m| m.reason.as_mut()) {
            for (path, placeholder) in &replacements {
                if reason.contains(path.as_str()) {
                    *reason = reason.replace(path.as_str(), placeholder);
                }
            }
        }
    }

    /// Whether this record can stand for a package whose extension files are `present`, on a host
    /// running `python`: same `major.minor`, and exactly the same files.
    pub fn matches(&self, python: PythonVersion, present: &[ExtensionFile]) -> bool {
        let recorded: BTreeSet<&str> = self.modules.iter().map(|m| m.file.as_str()).collect();
        let present_files: BTreeSet<&str> =
            present.iter().map(|f| f.relative_path.as_str()).collect();
        self.python == python && recorded == present_files
    }
}

#[cfg(test)]
mod tests;
