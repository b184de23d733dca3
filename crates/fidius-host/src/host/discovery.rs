//! Finding packages on the search paths by reading their manifests only.

use std::path::{Path, PathBuf};

use fidius_core::archive::{read_archive_manifest, ARCHIVE_EXTENSION};
use fidius_core::manifest::{Manifest, MANIFEST_FILE};
use fidius_core::tree::SIGNATURE_FILE;
use fidius_core::PackageError;

/// A package found on a search path.
#[derive(Debug, Clone)]
pub struct DiscoveredPlugin {
    /// The plugin directory or `.fid` file.
    pub path: PathBuf,
    /// Whether `path` is a `.fid` archive (else a plugin directory).
    pub archive: bool,
    /// The package's manifest.
    pub manifest: Manifest,
    /// Whether the package carries a `package.sig` (verified against the trusted keys at load).
    pub signed: bool,
}

impl DiscoveredPlugin {
    /// `package.name`.
    pub fn name(&self) -> &str {
        &self.manifest.package.name
    }

    /// `package.version`.
    pub fn version(&self) -> &semver::Version {
        &self.manifest.package.version
    }

    /// `package.interface`.
    pub fn interface(&self) -> &str {
        &self.manifest.package.interface
    }

    /// `package.interface_version`.
    pub fn interface_version(&self) -> u32 {
        self.manifest.package.interface_version
    }
}

/// Something on a search path that looked like a package but could not be read.
#[derive(Debug)]
pub struct BrokenPackage {
    pub path: PathBuf,
    pub error: PackageError,
}

/// Everything found on the search paths: iterate it for the good packages, read `broken` for the rest.
#[derive(Debug, Default)]
pub struct Discovery {
    pub plugins: Vec<DiscoveredPlugin>,
    pub broken: Vec<BrokenPackage>,
}

impl IntoIterator for Discovery {
    type Item = DiscoveredPlugin;
    type IntoIter = std::vec::IntoIter<DiscoveredPlugin>;

    fn into_iter(self) -> Self::IntoIter {
        self.plugins.into_iter()
    }
}

/// Lists plugin directories (holding `package.toml`) and `.fid` files directly inside each search
/// path, in a stable order. A search path that does not exist is skipped.
pub(crate) fn discover(search_paths: &[PathBuf]) -> Result<Discovery, PackageError> {
    let mut discovery = Discovery::default();
    for search_path in search_paths {
        let entries = match std::fs::read_dir(search_path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(PackageError::io(search_path)(error)),
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .map_err(PackageError::io(search_path))?;
        paths.sort();
        for path in paths {
            if super::rust::is_library(&path) {
                discovery
                    .plugins
                    .extend(super::rust::library_plugins(&path));
                continue;
            }
            if let Some(found) = read_candidate(&path) {
                match found {
                    Ok(plugin) => discovery.plugins.push(plugin),
                    Err(error) => discovery.broken.push(BrokenPackage { path, error }),
                }
            }
        }
    }
    Ok(discovery)
}

/// Reads `path` as a package (`None` when it is neither a plugin directory nor a `.fid` file).
pub(crate) fn read_candidate(path: &Path) -> Option<Result<DiscoveredPlugin, PackageError>> {
    if super::rust::is_library(path) {
        // A library given by path: its one plugin (one of several is loaded by name instead).
        let mut plugins = super::rust::library_plugins(path);
        return (plugins.len() == 1).then(|| Ok(plugins.remove(0)));
    }
    if path.is_dir() {
        // Whatever sits at package.toml makes this a candidate: a symlink, FIFO or oversized file
        // there is listed as broken, not silently skipped (and never opened for reading).
        if path.join(MANIFEST_FILE).symlink_metadata().is_err() {
            return None;
        }
        return Some(
            Manifest::load(path)
                .map_err(PackageError::from)
                .map(|manifest| DiscoveredPlugin {
                    path: path.to_path_buf(),
                    archive: false,
                    manifest,
                    signed: path.join(SIGNATURE_FILE).symlink_metadata().is_ok(),
                }),
        );
    }
    if path
        .extension()
        .is_none_or(|extension| extension != ARCHIVE_EXTENSION)
    {
        return None;
    }
    Some(read_archive_manifest(path).map(|summary| DiscoveredPlugin {
        path: path.to_path_buf(),
        archive: true,
        manifest: summary.manifest,
        signed: summary.signed,
    }))
}
