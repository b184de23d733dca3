//! Finding the compiled extension modules a package vendors.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::WalkDir;

use super::{ExtensionsError, PythonVersion};
use crate::dist_info::VENDOR_DIR;

/// One compiled extension module file under a package's `vendor/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionFile {
    /// The dotted module name it is imported as, e.g. `numpy._core._multiarray_umath`.
    pub module: String,
    /// `/`-separated path relative to the package root, e.g. `vendor/numpy/_core/x.cpython-313-x86_64-linux-gnu.so`.
    pub relative_path: String,
    pub absolute_path: PathBuf,
    pub len: u64,
    /// Last modification time, when the file system has one.
    pub modified: Option<SystemTime>,
}

/// The compiled extension modules under `root/vendor/` that CPython `python` would import, sorted
/// by relative path. A package without `vendor/` has none.
///
/// A file is an extension module when its name ends in one of CPython's extension suffixes for that
/// version on a POSIX system (`.cpython-XY-PLATFORM.so`, `.abi3.so`, `.so`), what precedes the suffix
/// is an identifier, and every directory between `vendor/` and the file is an identifier too (a
/// package). So shared libraries that wheels ship beside their modules (`numpy.libs/libopenblas….so`,
/// `libfoo.so.1`) and extensions built for another CPython (`.cpython-312-….so`) are not listed.
/// Links are not followed.
pub fn find_extension_modules(
    root: &Path,
    python: PythonVersion,
) -> Result<Vec<ExtensionFile>, ExtensionsError> {
    let vendor = root.join(VENDOR_DIR);
    if !vendor.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let walker = WalkDir::new(&vendor)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_entry(|entry| {
            !entry.file_type().is_dir() || entry.file_name().to_str().is_some_and(is_identifier)
        });
    for entry in walker {
        let entry = entry.map_err(|source| ExtensionsError::Walk {
            dir: vendor.clone(),
            source,
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Some(module_name) = entry
            .file_name()
            .to_str()
            .and_then(|name| module_name(name, python))
        else {
            continue;
        };
        let relative = entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(|relative| {
                relative
                    .components()
                    .map(|part| part.as_os_str().to_str())
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| ExtensionsError::NonUtf8Path {
                path: entry.path().to_path_buf(),
            })?;
        // vendor / package dirs… / file
        let packages = &relative[1..relative.len() - 1];
        let module = packages
            .iter()
            .copied()
            .chain([module_name])
            .collect::<Vec<_>>()
            .join(".");
        let metadata = entry.metadata().map_err(|source| ExtensionsError::Walk {
            dir: vendor.clone(),
            source,
        })?;
        found.push(ExtensionFile {
            module,
            relative_path: relative.join("/"),
            absolute_path: entry.into_path(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        });
    }
    found.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    Ok(found)
}

/// The module name a file name stands for, if it is an extension module for `python`.
fn module_name(file_name: &str, python: PythonVersion) -> Option<&str> {
    let stem = file_name.strip_suffix(".so")?;
    let name = match stem.rsplit_once('.') {
        None => stem,
        Some((name, "abi3")) => name,
        Some((name, tag)) => {
            let platform = tag.strip_prefix(&python.cpython_tag())?;
            // `cpython-313-x86_64-linux-gnu`, not `cpython-313t-…` (free-threaded) or `cpython-3130`.
            if !(platform.is_empty() || platform.starts_with('-')) {
                return None;
            }
            name
        }
    };
    is_identifier(name).then_some(name)
}

/// Whether `name` can be a Python module or package name.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY313: PythonVersion = PythonVersion {
        major: 3,
        minor: 13,
    };

    #[test]
    fn extension_suffixes() {
        let cases = [
            ("_core.cpython-313-x86_64-linux-gnu.so", Some("_core")),
            ("_speedups.cpython-313-darwin.so", Some("_speedups")),
            ("_rust.abi3.so", Some("_rust")),
            ("plain.so", Some("plain")),
            ("_core.cpython-312-x86_64-linux-gnu.so", None),
            ("_core.cpython-313t-x86_64-linux-gnu.so", None),
            ("libopenblas64_p-r0-0cb6e0a2.3.23.dev.so", None),
            ("libfoo.so.1", None),
            ("module.py", None),
            ("a.b.so", None),
        ];
        for (file, expected) in cases {
            assert_eq!(module_name(file, PY313), expected, "{file}");
        }
    }

    #[test]
    fn finds_modules_in_packages_only() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let files = [
            "vendor/top.abi3.so",
            "vendor/pkg/sub/_fast.cpython-313-x86_64-linux-gnu.so",
            "vendor/pkg/__init__.py",
            "vendor/pkg.libs/libopenblas.so",
            "vendor/pkg-1.0.dist-info/RECORD",
            "vendor/other/_old.cpython-311-x86_64-linux-gnu.so",
            "outside.so",
        ];
        for file in files {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
            std::fs::write(path, b"x")?;
        }
        let found = find_extension_modules(root.path(), PY313)?;
        let names: Vec<_> = found
            .iter()
            .map(|file| (file.module.as_str(), file.relative_path.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "pkg.sub._fast",
                    "vendor/pkg/sub/_fast.cpython-313-x86_64-linux-gnu.so"
                ),
                ("top", "vendor/top.abi3.so"),
            ]
        );
        Ok(())
    }
}
