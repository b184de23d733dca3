//! Which files make up a package directory, in the one order that the digest and archives use.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::PackageError;

/// File name of the detached signature at the package root.
pub const SIGNATURE_FILE: &str = "package.sig";

/// Directories never part of a package, at any depth.
pub const EXCLUDED_DIRS: [&str; 3] = ["target", ".git", "__pycache__"];

/// Which files a scan keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selection {
    /// The files the package digest covers: every regular file except `*.sig` (see `DIGEST.md`).
    Digest,
    /// The files a `.fid` archive holds: the digest's files minus `*.pyc`, plus the root
    /// `package.sig`. Other `*.sig` files are left out because no signature covers them.
    Archive,
}

/// One regular file of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// `/`-separated path relative to the package root.
    pub relative_path: String,
    pub absolute_path: PathBuf,
    pub len: u64,
    pub executable: bool,
}

/// The files and directories of a package, sorted by relative path bytes.
#[derive(Debug, Clone)]
pub struct PackageTree {
    pub root: PathBuf,
    pub files: Vec<PackageFile>,
    /// `/`-separated relative paths of every directory kept (so empty directories survive
    /// packing); empty for [`Selection::Digest`].
    pub directories: Vec<String>,
}

impl PackageTree {
    /// Walks `root` without following links; a symlink or special file is an error rather than
    /// something silently skipped.
    pub fn scan(root: &Path, selection: Selection) -> Result<Self, PackageError> {
        let mut files = Vec::new();
        let mut directories = Vec::new();
        let walker = WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|entry| {
                !(entry.file_type().is_dir()
                    && entry
                        .file_name()
                        .to_str()
                        .is_some_and(|name| EXCLUDED_DIRS.contains(&name)))
            });
        for entry in walker {
            let entry = entry.map_err(|source| PackageError::Walk { source })?;
            let relative_path = relative_utf8_path(root, entry.path())?;
            let file_type = entry.file_type();
            if file_type.is_dir() {
                if selection == Selection::Archive {
                    directories.push(relative_path);
                }
                continue;
            }
            if !file_type.is_file() {
                return Err(PackageError::UnsupportedFileType {
                    path: entry.into_path(),
                });
            }
            if !selection.keeps(&relative_path) {
                continue;
            }
            let metadata = entry
                .metadata()
                .map_err(|source| PackageError::Walk { source })?;
            files.push(PackageFile {
                relative_path,
                absolute_path: entry.into_path(),
                len: metadata.len(),
                executable: is_executable(&metadata),
            });
        }
        files.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
        directories.sort();
        Ok(Self {
            root: root.to_path_buf(),
            files,
            directories,
        })
    }

    /// The files the digest covers, in digest order.
    pub fn digest_files(&self) -> impl Iterator<Item = &PackageFile> {
        self.files
            .iter()
            .filter(|file| Selection::Digest.keeps(&file.relative_path))
    }

    /// The root `package.sig`, when the scan kept it.
    pub fn signature_file(&self) -> Option<&PackageFile> {
        self.files
            .iter()
            .find(|file| file.relative_path == SIGNATURE_FILE)
    }

    /// Sum of all file sizes.
    pub fn total_len(&self) -> u64 {
        self.files.iter().map(|file| file.len).sum()
    }
}

impl Selection {
    fn keeps(self, relative_path: &str) -> bool {
        let is_signature = relative_path.ends_with(".sig");
        match self {
            Selection::Digest => !is_signature,
            Selection::Archive => {
                if is_signature {
                    relative_path == SIGNATURE_FILE
                } else {
                    !relative_path.ends_with(".pyc")
                }
            }
        }
    }
}

fn relative_utf8_path(root: &Path, path: &Path) -> Result<String, PackageError> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for component in relative.components() {
        match component.as_os_str().to_str() {
            Some(part) => parts.push(part),
            None => {
                return Err(PackageError::NonUtf8Path {
                    path: path.to_path_buf(),
                })
            }
        }
    }
    Ok(parts.join("/"))
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_metadata: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_differ_only_in_sig_and_pyc_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        for dir in ["a/__pycache__", "target/debug", ".git", "b/target", "empty"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        for file in [
            "package.sig",
            "other.sig",
            "a/x.py",
            "a/stray.pyc",
            "a/__pycache__/x.cpython-313.pyc",
            "target/debug/out",
            ".git/HEAD",
            "b/target/junk",
            "B.txt",
        ] {
            std::fs::write(root.join(file), file)?;
        }
        let names = |tree: &PackageTree| -> Vec<String> {
            tree.files.iter().map(|f| f.relative_path.clone()).collect()
        };
        let digest = PackageTree::scan(root, Selection::Digest)?;
        assert_eq!(names(&digest), ["B.txt", "a/stray.pyc", "a/x.py"]);
        assert!(digest.directories.is_empty());
        let archive = PackageTree::scan(root, Selection::Archive)?;
        assert_eq!(names(&archive), ["B.txt", "a/x.py", "package.sig"]);
        assert_eq!(archive.directories, ["a", "b", "empty"]);
        let digested: Vec<&str> = archive
            .digest_files()
            .map(|f| f.relative_path.as_str())
            .collect();
        assert_eq!(digested, ["B.txt", "a/x.py"]);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link"))?;
        let error = PackageTree::scan(dir.path(), Selection::Digest).expect_err("symlink");
        assert!(matches!(error, PackageError::UnsupportedFileType { .. }));
        Ok(())
    }
}
