//! `package.toml`: the manifest at the root of every plugin package.
//!
//! ```toml
//! [package]
//! name = "my-greeter"          # [a-z0-9][a-z0-9_-]*
//! version = "0.1.0"            # semver
//! interface = "Greeter"        # trait name
//! interface_version = 1
//! runtime = "python"
//! [metadata]                   # optional, free-form strings
//! description = "A friendly greeting service."
//! [python]
//! entry_module = "greeter"
//! requirements = "requirements.txt"   # optional
//! isolation = "auto"                  # optional: auto | subinterpreter | process
//! ```
//!
//! Validation reports every problem at once, each naming its field, so an author fixes a manifest
//! in one round trip.

mod error;
mod fields;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

pub use error::{ManifestError, ManifestProblem};
use fields::TableReader;

use crate::fs::{read_regular_text, MAX_MANIFEST_BYTES};
use crate::toml_error::TomlSyntax;

/// File name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "package.toml";

/// A validated `package.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub package: PackageInfo,
    /// The free-form `[metadata]` table.
    pub metadata: BTreeMap<String, String>,
    /// The `[python]` table; always present when `package.runtime` is [`Runtime::Python`].
    pub python: Option<PythonConfig>,
    /// The `[rust]` table; always present when `package.runtime` is [`Runtime::Rust`].
    pub rust: Option<RustConfig>,
}

/// The `[rust]` table of a Rust cdylib plugin package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustConfig {
    /// Relative path of the built library inside the package (`fidius package build` puts it there).
    pub library: PathBuf,
    /// Which plugin the library exports (its `#[plugin_impl]` name), when it exports several.
    pub plugin: Option<String>,
}

/// The `[package]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: semver::Version,
    /// Name of the interface trait the plugin implements.
    pub interface: String,
    pub interface_version: u32,
    pub runtime: Runtime,
}

/// The language a plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Runtime {
    Python,
    /// A Rust cdylib (`#[plugin_impl]`), run in the host process.
    Rust,
}

/// The `[python]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonConfig {
    /// Dotted module name imported when the plugin loads.
    pub entry_module: String,
    /// Relative path of a pip requirements file that `fidius pack` vendors into `vendor/`.
    pub requirements: Option<PathBuf>,
    pub isolation: Isolation,
}

/// How a plugin is separated from the host and from other plugins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// Let the host choose (sub-interpreter where the vendored extensions allow it).
    #[default]
    Auto,
    /// A CPython sub-interpreter with its own GIL.
    Subinterpreter,
    /// A separate process.
    Process,
}

impl Manifest {
    /// Reads and validates `DIR/package.toml`, including the checks that need the package's
    /// files (entry module and requirements file exist).
    pub fn load(package_dir: &Path) -> Result<Self, ManifestError> {
        let path = package_dir.join(MANIFEST_FILE);
        let text = read_regular_text(&path, MAX_MANIFEST_BYTES)?;
        Self::validate(&text, path, Some(package_dir))
    }

    /// Parses and validates manifest text without looking at any other file; `path` only
    /// labels errors.
    pub fn parse(text: &str, path: impl Into<PathBuf>) -> Result<Self, ManifestError> {
        Self::validate(text, path.into(), None)
    }

    /// `NAME-VERSION`: the archive's top directory and the stem of its file name.
    pub fn archive_stem(&self) -> String {
        format!("{}-{}", self.package.name, self.package.version)
    }

    fn validate(
        text: &str,
        path: PathBuf,
        package_dir: Option<&Path>,
    ) -> Result<Self, ManifestError> {
        let root: toml::Table = match toml::from_str(text) {
            Ok(root) => root,
            Err(error) => {
                return Err(ManifestError::Syntax {
                    path,
                    syntax: TomlSyntax::new(text, &error),
                })
            }
        };
        let mut problems = Vec::new();
        let manifest = read_manifest(root, package_dir, &mut problems);
        match manifest {
            Some(manifest) if problems.is_empty() => Ok(manifest),
            _ => Err(ManifestError::Invalid { path, problems }),
        }
    }
}

fn read_manifest(
    root: toml::Table,
    package_dir: Option<&Path>,
    problems: &mut Vec<ManifestProblem>,
) -> Option<Manifest> {
    let mut top = TableReader::new("", root, problems);
    let package_table: Option<toml::Table> = top.required("package", "a table");
    let metadata: Option<BTreeMap<String, toml::Value>> = top.optional("metadata", "a table");
    let python_table: Option<toml::Table> = top.optional("python", "a table");
    let rust_table: Option<toml::Table> = top.optional("rust", "a table");
    top.finish();
    let python_missing = python_table.is_none();
    let rust_missing = rust_table.is_none();

    let package = read_package(package_table?, problems);
    let metadata = read_metadata(metadata.unwrap_or_default(), problems);
    let python = python_table.and_then(|table| read_python(table, package_dir, problems));
    let rust = rust_table.and_then(|table| read_rust(table, package_dir, problems));
    let package = package?;
    if package.runtime == Runtime::Python && python_missing {
        problems.push(ManifestProblem::MissingPythonTable);
    }
    if package.runtime == Runtime::Rust && rust_missing {
        problems.push(ManifestProblem::MissingRustTable);
    }
    Some(Manifest {
        package,
        metadata,
        python,
        rust,
    })
}

fn read_package(table: toml::Table, problems: &mut Vec<ManifestProblem>) -> Option<PackageInfo> {
    let mut reader = TableReader::new("package", table, problems);
    let name: Option<String> = reader.required("name", "a string");
    let version: Option<String> = reader.required("version", "a semantic version string");
    let interface: Option<String> = reader.required("interface", "a string");
    let interface_version: Option<u32> =
        reader.required("interface_version", "a non-negative integer");
    let runtime: Option<String> = reader.required("runtime", "a string");
    reader.finish();

    let name = name.filter(|name| {
        let valid = is_valid_package_name(name);
        if !valid {
            problems.push(ManifestProblem::InvalidName { name: name.clone() });
        }
        valid
    });
    let version = version.and_then(|version| match semver::Version::parse(&version) {
        Ok(parsed) => Some(parsed),
        Err(source) => {
            problems.push(ManifestProblem::InvalidVersion { version, source });
            None
        }
    });
    let interface = interface.filter(|interface| {
        let valid = !interface.trim().is_empty();
        if !valid {
            problems.push(ManifestProblem::EmptyInterface);
        }
        valid
    });
    let runtime = runtime.and_then(|runtime| match runtime.as_str() {
        "python" => Some(Runtime::Python),
        "rust" => Some(Runtime::Rust),
        _ => {
            problems.push(ManifestProblem::UnsupportedRuntime { runtime });
            None
        }
    });
    Some(PackageInfo {
        name: name?,
        version: version?,
        interface: interface?,
        interface_version: interface_version?,
        runtime: runtime?,
    })
}

fn read_metadata(
    table: BTreeMap<String, toml::Value>,
    problems: &mut Vec<ManifestProblem>,
) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    for (key, value) in table {
        match value {
            toml::Value::String(text) => {
                metadata.insert(key, text);
            }
            other => problems.push(ManifestProblem::WrongType {
                field: format!("metadata.{key}"),
                expected: "a string",
                found: fields::describe(&other),
            }),
        }
    }
    metadata
}

fn read_python(
    table: toml::Table,
    package_dir: Option<&Path>,
    problems: &mut Vec<ManifestProblem>,
) -> Option<PythonConfig> {
    let mut reader = TableReader::new("python", table, problems);
    let entry_module: Option<String> = reader.required("entry_module", "a dotted module name");
    let requirements: Option<String> = reader.optional("requirements", "a relative path");
    let isolation: Option<String> = reader.optional("isolation", "a string");
    reader.finish();

    let entry_module = entry_module.filter(|module| {
        let problem = check_entry_module(module, package_dir);
        let valid = problem.is_none();
        problems.extend(problem);
        valid
    });
    let requirements = match requirements {
        None => Some(None),
        Some(path) => match check_requirements(&path, package_dir) {
            Ok(()) => Some(Some(PathBuf::from(path))),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
    };
    let isolation = match isolation.as_deref().map(str::parse::<Isolation>) {
        None => Some(Isolation::Auto),
        Some(Ok(isolation)) => Some(isolation),
        Some(Err(unknown)) => {
            problems.push(ManifestProblem::InvalidIsolation {
                value: unknown.value,
            });
            None
        }
    };
    Some(PythonConfig {
        entry_module: entry_module?,
        requirements: requirements?,
        isolation: isolation?,
    })
}

fn read_rust(
    table: toml::Table,
    package_dir: Option<&Path>,
    problems: &mut Vec<ManifestProblem>,
) -> Option<RustConfig> {
    let mut reader = TableReader::new("rust", table, problems);
    let library: Option<String> = reader.required("library", "a relative path");
    let plugin: Option<String> = reader.optional("plugin", "a string");
    reader.finish();
    let library = library?;
    let relative = Path::new(&library);
    let inside_package = !library.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if !inside_package {
        problems.push(ManifestProblem::LibraryOutsidePackage { path: library });
        return None;
    }
    if let Some(dir) = package_dir {
        if !dir.join(relative).is_file() {
            problems.push(ManifestProblem::LibraryNotFound {
                path: dir.join(relative),
            });
            return None;
        }
    }
    Some(RustConfig {
        library: PathBuf::from(library),
        plugin,
    })
}

fn is_valid_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_python_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_entry_module(module: &str, package_dir: Option<&Path>) -> Option<ManifestProblem> {
    if !module.split('.').all(is_python_identifier) {
        return Some(ManifestProblem::InvalidEntryModule {
            module: module.to_owned(),
        });
    }
    let package_dir = package_dir?;
    let relative: PathBuf = module.split('.').collect();
    let candidates = [
        package_dir.join(relative.with_extension("py")),
        package_dir.join(&relative).join("__init__.py"),
    ];
    if candidates.iter().any(|candidate| candidate.is_file()) {
        None
    } else {
        Some(ManifestProblem::EntryModuleNotFound {
            module: module.to_owned(),
            candidates,
        })
    }
}

fn check_requirements(path: &str, package_dir: Option<&Path>) -> Result<(), ManifestProblem> {
    let relative = Path::new(path);
    let inside_package = !path.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if !inside_package {
        return Err(ManifestProblem::RequirementsOutsidePackage {
            path: path.to_owned(),
        });
    }
    match package_dir {
        Some(dir) if !dir.join(relative).is_file() => Err(ManifestProblem::RequirementsNotFound {
            path: dir.join(relative),
        }),
        _ => Ok(()),
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Python => "python",
            Runtime::Rust => "rust",
        })
    }
}

impl Isolation {
    /// Every isolation, in the order they are documented.
    pub const ALL: [Isolation; 3] = [
        Isolation::Auto,
        Isolation::Subinterpreter,
        Isolation::Process,
    ];

    /// How `package.toml`, `fidius call --isolation` and every message spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::Auto => "auto",
            Isolation::Subinterpreter => "subinterpreter",
            Isolation::Process => "process",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of [`Isolation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}`: isolation is one of auto, subinterpreter, process")]
pub struct UnknownIsolation {
    pub value: String,
}

impl std::str::FromStr for Isolation {
    type Err = UnknownIsolation;

    /// `auto`, `subinterpreter` or `process`, exactly.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Isolation::ALL
            .into_iter()
            .find(|isolation| isolation.as_str() == text)
            .ok_or_else(|| UnknownIsolation {
                value: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests;
