//! The package digest: one SHA-256 over a package's files, specified in `DIGEST.md` so that
//! signatures made by the original fidius tool verify here.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::tree::{PackageFile, PackageTree, Selection};
use crate::PackageError;

/// SHA-256 over a package's files (see `crates/fidius-core/DIGEST.md`). Signatures sign its 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackageDigest(pub [u8; 32]);

impl PackageDigest {
    /// Digest of the package directory `root`.
    pub fn of_dir(root: &Path) -> Result<Self, PackageError> {
        let tree = PackageTree::scan(root, Selection::Digest)?;
        Self::of_files(tree.digest_files())
    }

    /// Digest of `files`, which must already be in digest order (as [`PackageTree`] yields them).
    pub fn of_files<'a>(
        files: impl IntoIterator<Item = &'a PackageFile>,
    ) -> Result<Self, PackageError> {
        let mut hasher = Sha256::new();
        for file in files {
            let path = file.relative_path.as_bytes();
            hasher.update(len_prefix(path.len() as u64));
            hasher.update(path);
            let mut content =
                File::open(&file.absolute_path).map_err(PackageError::io(&file.absolute_path))?;
            let len = content
                .metadata()
                .map_err(PackageError::io(&file.absolute_path))?
                .len();
            hasher.update(len_prefix(len));
            // io::copy streams through a fixed-size buffer, so huge files never sit in memory.
            let copied = io::copy(&mut content, &mut hasher)
                .map_err(PackageError::io(&file.absolute_path))?;
            if copied != len {
                return Err(PackageError::Io {
                    path: file.absolute_path.clone(),
                    source: io::Error::other("file changed size while it was being hashed"),
                });
            }
        }
        Ok(Self(hasher.finalize().into()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn len_prefix(len: u64) -> [u8; 8] {
    len.to_le_bytes()
}

impl fmt::Display for PackageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector written down in `DIGEST.md`.
    #[test]
    fn matches_the_documented_test_vector() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("vendor/__pycache__"))?;
        std::fs::write(root.join("package.toml"), "[package]\nname = \"demo\"\n")?;
        std::fs::write(root.join("greeter.py"), "print('hi')\n")?;
        std::fs::write(root.join("vendor/empty.txt"), "")?;
        std::fs::write(root.join("vendor/__pycache__/x.pyc"), "ignored")?;
        std::fs::write(root.join("package.sig"), [0u8; 64])?;
        let digest = PackageDigest::of_dir(root)?;
        assert_eq!(
            digest.to_string(),
            include_str!("../DIGEST.md")
                .lines()
                .find_map(|line| line.strip_prefix("    digest = "))
                .ok_or("DIGEST.md has no `    digest = ` line")?
        );
        Ok(())
    }

    #[test]
    fn every_byte_of_path_and_content_matters() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ab"), "c")?;
        let first = PackageDigest::of_dir(dir.path())?;
        std::fs::remove_file(dir.path().join("ab"))?;
        // Same concatenated bytes, different split between path and content.
        std::fs::write(dir.path().join("a"), "bc")?;
        assert_ne!(first, PackageDigest::of_dir(dir.path())?);
        Ok(())
    }
}
