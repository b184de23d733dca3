//! Reading one archive's manifest without unpacking it (for discovery).

use std::io::{BufReader, Read};
use std::path::{Component, Path};

use crate::fs::{open_archive_file, FileError, MAX_MANIFEST_BYTES};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::tree::SIGNATURE_FILE;
use crate::PackageError;

use super::unpack::decompressor;

/// What [`read_archive_manifest`] learns about an archive.
#[derive(Debug, Clone)]
pub struct ArchiveSummary {
    pub manifest: Manifest,
    /// A `NAME-VERSION/package.sig` entry came before the manifest (always the case for archives
    /// fidius packs, whose entries are sorted). Whether it verifies is another matter.
    pub signed: bool,
}

/// Streams `archive` until `NAME-VERSION/package.toml` and parses it; nothing is written to disk.
///
/// Only the manifest's own rules are checked (an archive's files are not looked at), so a manifest
/// that passes here can still fail [`Manifest::load`] once unpacked.
pub fn read_archive_manifest(archive: &Path) -> Result<ArchiveSummary, PackageError> {
    let (file, _) = open_archive_file(archive)?;
    let mut tar = tar::Archive::new(decompressor(BufReader::new(file))?);
    let entries = tar
        .entries()
        .map_err(|source| PackageError::CorruptArchive { source })?;
    let mut signed = false;
    for entry in entries {
        let entry = entry.map_err(|source| PackageError::CorruptArchive { source })?;
        let path = entry
            .path()
            .map_err(|source| PackageError::CorruptArchive { source })?
            .into_owned();
        let parts: Vec<Component<'_>> = path.components().collect();
        let (top_dir, top_level_file) = match parts.as_slice() {
            [Component::Normal(top), Component::Normal(name)] => (Some(*top), Some(*name)),
            _ => (None, None),
        };
        if top_level_file.is_some_and(|name| name == SIGNATURE_FILE) {
            signed = true;
        }
        if top_level_file.is_none_or(|name| name != MANIFEST_FILE) {
            continue;
        }
        let label = archive.join(&path);
        if entry.size() > MAX_MANIFEST_BYTES {
            return Err(FileError::TooLarge {
                path: label,
                len: entry.size(),
                limit: MAX_MANIFEST_BYTES,
            }
            .into());
        }
        let mut text = String::new();
        entry
            .take(MAX_MANIFEST_BYTES)
            .read_to_string(&mut text)
            .map_err(|source| PackageError::CorruptArchive { source })?;
        let manifest = Manifest::parse(&text, label)?;
        let found = top_dir.map(|top| top.to_string_lossy().into_owned());
        let expected = manifest.archive_stem();
        if found.as_deref() != Some(expected.as_str()) {
            return Err(PackageError::TopDirectoryMismatch {
                found: found.unwrap_or_default(),
                expected,
            });
        }
        return Ok(ArchiveSummary { manifest, signed });
    }
    Err(PackageError::ManifestMissing {
        archive: archive.to_path_buf(),
    })
}
