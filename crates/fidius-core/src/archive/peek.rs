//! Reading one archive's manifest without unpacking it (for discovery).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::tree::SIGNATURE_FILE;
use crate::PackageError;

use super::unpack::decompressor;

/// Largest `package.toml` read from an archive; a manifest is a few hundred bytes.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

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
    let file = File::open(archive).map_err(PackageError::io(archive))?;
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
        let top_level_file = match parts.as_slice() {
            [Component::Normal(_), Component::Normal(name)] => Some(*name),
            _ => None,
        };
        if top_level_file.is_some_and(|name| name == SIGNATURE_FILE) {
            signed = true;
        }
        if top_level_file.is_none_or(|name| name != MANIFEST_FILE) {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_MANIFEST_BYTES)
            .read_to_string(&mut text)
            .map_err(|source| PackageError::CorruptArchive { source })?;
        return Ok(ArchiveSummary {
            manifest: Manifest::parse(&text, archive.join(&path))?,
            signed,
        });
    }
    Err(PackageError::ManifestMissing {
        archive: archive.to_path_buf(),
    })
}
