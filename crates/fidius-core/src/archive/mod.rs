//! `.fid` archives: a package directory as tar + gzip under one top directory `NAME-VERSION/`.
//!
//! [`pack_dir`] and [`write_archive`] write them deterministically (sorted entries, fixed
//! timestamps, owners and modes), so packing the same tree twice gives the same bytes and the
//! signed digest is reproducible.
//! [`unpack`] reads gzip and bzip2 archives (the original fidius tool wrote tar + bzip2), chosen
//! by magic bytes.
//!
//! # Security
//!
//! Unpacking treats the archive as hostile. It guarantees that:
//!
//! - nothing is written outside `DEST/NAME-VERSION/`: absolute paths, `..` components, entries
//!   outside the single top directory and a second top directory are each rejected with their
//!   own [`PackageError`] variant, never skipped;
//! - no link or special file is created: symlinks, hard links, devices and FIFOs are rejected;
//! - what is extracted is exactly what the digest covers: an entry under a `__pycache__`,
//!   `target` or `.git` directory, or a `*.sig` file other than the root `package.sig`, is
//!   rejected naming the entry ([`crate::tree::digest_excludes`] is the one rule);
//! - the compressed stream is read to its end, so the gzip CRC and length trailer (or the bzip2
//!   stream CRC) are checked and a truncated stream is rejected;
//! - resource use is bounded by [`UnpackLimits`]: entry count, unpacked bytes and compression
//!   ratio (against decompression bombs);
//! - a rejected archive leaves `DEST` as it was: entries go to a temporary directory inside
//!   `DEST` that is renamed into place only once the whole archive has been accepted.
//!
//! Out of scope: another process changing `DEST` while unpacking runs (time-of-check to
//! time-of-use races), and the trustworthiness of the contents, which is what the signature
//! ([`crate::signing`], [`verify_archive`]) is for. Unpacking verifies nothing by itself.

mod pack;
mod peek;
mod unpack;

use std::io::BufReader;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use tempfile::TempDir;

pub use pack::{pack_dir, write_archive, PackedArchive, SignaturePolicy, ARCHIVE_EXTENSION};
pub use peek::{read_archive_manifest, ArchiveSummary};
pub use unpack::{unpack, UnpackLimits, UnpackedPackage};

use crate::fs::open_archive_file;
use crate::manifest::Manifest;
use crate::signing::{verify_dir, VerifiedSignature};
use crate::PackageError;

/// A package unpacked into a private temporary directory, deleted on drop.
#[derive(Debug)]
pub struct ScratchPackage {
    /// The package directory (`TEMP/NAME-VERSION`).
    pub root: PathBuf,
    _dir: TempDir,
}

/// Checks an unpacked archive as a package: its `package.toml` validates (with the checks that need
/// the files) and its top directory is the manifest's `NAME-VERSION`. Run it before an unpacked
/// tree is kept anywhere, so an invalid package never enters a cache.
///
/// `root` is the unpacked `DEST/NAME-VERSION` ([`UnpackedPackage::root`]).
pub fn check_unpacked(root: &Path) -> Result<Manifest, PackageError> {
    let manifest = Manifest::load(root)?;
    let expected = manifest.archive_stem();
    let found = root
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if found != expected {
        return Err(PackageError::TopDirectoryMismatch { found, expected });
    }
    Ok(manifest)
}

/// Unpacks `archive` into a fresh temporary directory, for reading without a permanent copy; the
/// package is checked with [`check_unpacked`].
pub fn unpack_to_scratch(
    archive: &Path,
    limits: &UnpackLimits,
) -> Result<ScratchPackage, PackageError> {
    let (file, _) = open_archive_file(archive)?;
    let dir = tempfile::Builder::new()
        .prefix("fidius-")
        .tempdir()
        .map_err(PackageError::io(std::env::temp_dir()))?;
    let unpacked = unpack(BufReader::new(file), dir.path(), limits)?;
    check_unpacked(&unpacked.root)?;
    Ok(ScratchPackage {
        root: unpacked.root,
        _dir: dir,
    })
}

/// Verifies a `.fid` archive's `package.sig` against `trusted`, without keeping anything on disk.
pub fn verify_archive(
    archive: &Path,
    trusted: &[VerifyingKey],
    limits: &UnpackLimits,
) -> Result<VerifiedSignature, PackageError> {
    let scratch = unpack_to_scratch(archive, limits)?;
    verify_dir(&scratch.root, trusted)
}
