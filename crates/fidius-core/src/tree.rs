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
    /// `/`-separated relative paths the digest does not cover: directories named in
    /// [`EXCLUDED_DIRS`] (not descended into) and `*.sig` files other than the root `package.sig`.
    pub uncovered: Vec<String>,
}

impl PackageTree {
    /// Walks `root` without following links; a symlink or special file is an error rather than
    /// something silently skipped. Entries the digest does not cover are listed in `uncovered`
    /// (an excluded directory once, not its contents).
    pub fn scan(root: &Path, selection: Selection) -> Result<Self, PackageError> {
        let mut files = Vec::new();
        let mut directories = Vec::new();
        let mut uncovered = Vec::new();
        let mut walker = WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .into_iter();
        while let Some(entry) = walker.next() {
            let entry = entry.map_err(|source| PackageError::Walk { source })?;
            let relative_path = relative_utf8_path(root, entry.path())?;
            let file_type = entry.file_type();
            if file_type.is_dir() {
                if digest_excludes(&relative_path, true).is_some() {
                    uncovered.push(relative_path);
                    walker.skip_current_dir();
                } else if selection == Selection::Archive {
                    directories.push(relative_path);
                }
                continue;
            }
            if !file_type.is_file() {
                return Err(PackageError::UnsupportedFileType {
                    path: entry.into_path(),
                });
            }
            if relative_path != SIGNATURE_FILE && digest_excludes(&relative_path, false).is_some() {
                uncovered.push(relative_path.clone());
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
        uncovered.sort();
        Ok(Self {
            root: root.to_path_buf(),
            files,
            directories,
            uncovered,
        })
    }

    /// Refuses a tree holding anything the digest does not cover (other than the root
    /// `package.sig`): a package checked against its signature must consist of signed files only.
    pub fn refuse_uncovered(&self) -> Result<(), PackageError> {
        match self.uncovered.first() {
            None => Ok(()),
            Some(path) => {
                let is_dir = self.root.join(path).is_dir();
                refuse_uncovered(path, is_dir, path)
            }
        }
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
        let covered = digest_excludes(relative_path, false).is_none();
        match self {
            Selection::Digest => covered,
            Selection::Archive => {
                relative_path == SIGNATURE_FILE || (covered && !relative_path.ends_with(".pyc"))
            }
        }
    }
}

/// The one rule for which package paths the digest covers (see `DIGEST.md`): why it leaves
/// `relative_path` (`/`-separated, relative to the package root) out, or `None` when it covers
/// it. `is_dir` says whether the path names a directory. The root `package.sig` is excluded like
/// every `*.sig` file, yet is the one excluded file a package may carry.
pub fn digest_excludes(relative_path: &str, is_dir: bool) -> Option<&'static str> {
    let components: Vec<&str> = relative_path.split('/').collect();
    let (name, parents) = components.split_last()?;
    let directories = if is_dir {
        components.as_slice()
    } else {
        parents
    };
    if let Some(directory) = directories
        .iter()
        .find(|directory| EXCLUDED_DIRS.contains(directory))
    {
        return Some(match *directory {
            "__pycache__" => "a `__pycache__` directory: bytecode is never part of a package",
            "target" => "a `target` directory: build output is never part of a package",
            _ => "a `.git` directory: version control data is never part of a package",
        });
    }
    if !is_dir && name.ends_with(".sig") {
        return Some("a `.sig` file: only the root package.sig belongs in a package");
    }
    None
}

/// Refuses the package path `relative_path` unless the digest covers it or it is the root
/// `package.sig`; `entry` names it in the error (an archive entry's full name, or the path).
pub fn refuse_uncovered(
    relative_path: &str,
    is_dir: bool,
    entry: &str,
) -> Result<(), PackageError> {
    if relative_path == SIGNATURE_FILE && !is_dir {
        return Ok(());
    }
    match digest_excludes(relative_path, is_dir) {
        None => Ok(()),
        Some(reason) => Err(PackageError::NotCovered {
            entry: entry.to_owned(),
            reason,
        }),
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
        assert_eq!(
            digest.uncovered,
            [".git", "a/__pycache__", "b/target", "other.sig", "target"]
        );
        assert!(matches!(
            digest.refuse_uncovered(),
            Err(PackageError::NotCovered { entry, .. }) if entry == ".git"
        ));
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

    #[test]
    fn one_rule_says_what_the_digest_covers() {
        for covered in ["a.py", "target", "vendor/x.pyc", "sig", "a/.git.txt"] {
            assert_eq!(digest_excludes(covered, false), None, "{covered}");
        }
        for (path, is_dir) in [
            ("package.sig", false),
            ("vendor/other.sig", false),
            ("__pycache__/greeter.cpython-313.pyc", false),
            ("vendor/pkg/__pycache__", true),
            ("target", true),
            (".git/HEAD", false),
        ] {
            assert!(digest_excludes(path, is_dir).is_some(), "{path}");
        }
        assert!(refuse_uncovered("package.sig", false, "p-1/package.sig").is_ok());
        assert!(refuse_uncovered("vendor/package.sig", false, "x").is_err());
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
