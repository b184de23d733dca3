//! Builders for package trees and for comparing directories. fidius-cli's tests include this
//! file too (`#[path]`), so both suites build packages the same way.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The example manifest from the packaging docs, without requirements.
pub const MANIFEST: &str = include_str!("../fixtures/package.toml");

/// A minimal valid package in `DIR/my-greeter-py`, plus the extra files given.
pub fn write_package(dir: &Path, extra: &[(&str, &[u8])]) -> std::io::Result<PathBuf> {
    let root = dir.join("my-greeter-py");
    fs::create_dir_all(&root)?;
    fs::write(root.join("package.toml"), MANIFEST)?;
    fs::write(
        root.join("greeter.py"),
        "def greet(name):\n    return f'hi {name}'\n",
    )?;
    for (path, content) in extra {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
    }
    Ok(root)
}

/// What a directory holds: file contents and exec bits, and directories (as `None`).
pub fn snapshot(root: &Path) -> BTreeMap<String, Option<(Vec<u8>, bool)>> {
    let mut entries = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk test directory");
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("inside root")
            .to_string_lossy()
            .into_owned();
        let value = if entry.file_type().is_dir() {
            None
        } else {
            Some((
                fs::read(entry.path()).expect("read test file"),
                is_executable(entry.path()),
            ))
        };
        entries.insert(relative, value);
    }
    entries
}

#[cfg(unix)]
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
pub fn is_executable(_path: &Path) -> bool {
    false
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let target = to.join(
            entry
                .path()
                .strip_prefix(from)
                .map_err(std::io::Error::other)?,
        );
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
