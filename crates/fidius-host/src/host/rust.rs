//! Rust cdylib plugins on the host's side of trust: bare libraries on the search paths (listed
//! from the file, never mapped), their detached signatures, and `runtime = "rust"` packages.

use std::path::Path;

use fidius_core::manifest::{Manifest, PackageInfo, Runtime, RustConfig};
use fidius_core::signing::{detached_signature_path, verify_file};
use fidius_core::PackageError;

use super::discovery::DiscoveredPlugin;
use super::PluginHost;
use crate::backend::rust::{LibraryBytes, LibraryProblem};
use crate::error::LoadError;
use crate::handle::PythonPluginHandle;
use crate::options::LoadOptions;
use crate::plugin::descriptor::SharedDescriptor;
use crate::plugin::source::PluginSource;

/// The file name extension of a bare plugin library.
const LIBRARY_EXTENSION: &str = "so";

/// Whether `path` names a bare library (a `.so` file).
pub(crate) fn is_library(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == LIBRARY_EXTENSION)
        && path.is_file()
}

/// The plugins a bare library exports, each as a package whose manifest is made from its
/// descriptor's header (read from the file; nothing is mapped). A library that is not a fidius
/// plugin library (no readable ELF, no exported plugin) lists nothing.
pub(crate) fn library_plugins(path: &Path) -> Vec<DiscoveredPlugin> {
    let exported = match LibraryBytes::read(path).and_then(|bytes| bytes.exported_plugins()) {
        Ok(exported) => exported,
        Err(problem) => {
            tracing::debug!(path = %path.display(), %problem, "not a plugin library");
            return Vec::new();
        }
    };
    let signed = detached_signature_path(path).symlink_metadata().is_ok();
    exported
        .into_iter()
        .filter_map(|plugin| {
            let header = plugin.header;
            let name = header.plugin_name?;
            let version = semver::Version::parse(header.plugin_version.as_deref()?).ok()?;
            Some(DiscoveredPlugin {
                path: path.to_path_buf(),
                archive: false,
                manifest: Manifest {
                    package: PackageInfo {
                        name: name.clone(),
                        version,
                        interface: header.interface_name?,
                        interface_version: header.interface_version,
                        runtime: Runtime::Rust,
                    },
                    metadata: Default::default(),
                    python: None,
                    rust: Some(RustConfig {
                        library: path.file_name().map(Into::into).unwrap_or_default(),
                        plugin: Some(name),
                    }),
                },
                signed,
            })
        })
        .collect()
}

impl PluginHost {
    /// Loads the plugin `name` (or `name@version`) against `descriptor`, Python or Rust, whichever
    /// the package (or bare library) found is; the same as [`load_python`](Self::load_python).
    pub fn load(
        &self,
        name: &str,
        descriptor: impl Into<SharedDescriptor>,
    ) -> Result<PythonPluginHandle, LoadError> {
        self.load_python(name, descriptor)
    }

    /// [`load`](Self::load) with options (the same as [`load_python_with`](Self::load_python_with)).
    pub fn load_with(
        &self,
        name: &str,
        descriptor: impl Into<SharedDescriptor>,
        options: LoadOptions,
    ) -> Result<PythonPluginHandle, LoadError> {
        self.load_python_with(name, descriptor, options)
    }

    /// Verifies a bare library under the signature policy (its detached `FILE.sig` over the
    /// file's bytes) and describes it for the Rust backend, which maps exactly these bytes.
    pub(super) fn verify_bare_library(
        &self,
        found: &DiscoveredPlugin,
    ) -> Result<(PluginSource, Option<fidius_core::signing::KeyFingerprint>), LoadError> {
        let plugin = found.name().to_owned();
        let bytes = LibraryBytes::read(&found.path).map_err(|problem| LoadError::RustLibrary {
            plugin: plugin.clone(),
            library: found.path.clone(),
            problem,
        })?;
        let signature = detached_signature_path(&found.path);
        let signer = if signature.symlink_metadata().is_err() {
            if self.inner.require_signature {
                return Err(LoadError::Unsigned {
                    plugin,
                    path: found.path.clone(),
                });
            }
            None
        } else if self.inner.trusted_keys.is_empty() {
            None
        } else {
            Some(
                verify_file(&found.path, &bytes.bytes, &self.inner.trusted_keys).map_err(
                    |source| LoadError::SignatureRejected {
                        plugin: plugin.clone(),
                        source: Box::new(source),
                    },
                )?,
            )
        };
        let wanted = found
            .manifest
            .rust
            .as_ref()
            .and_then(|rust| rust.plugin.clone());
        let mut source =
            PluginSource::rust(&plugin, found.version().to_string(), &found.path, wanted);
        mark_verified(&mut source, &bytes);
        Ok((source, signer))
    }
}

/// The source of a verified `runtime = "rust"` package at `root`: its library, whose bytes are
/// read now (after the package's digest was checked) and must be the bytes mapped.
pub(super) fn package_source(
    plugin: &str,
    manifest: &Manifest,
    root: &Path,
) -> Result<PluginSource, LoadError> {
    let rust = manifest.rust.as_ref().ok_or_else(|| LoadError::Package {
        plugin: plugin.to_owned(),
        path: root.to_path_buf(),
        source: Box::new(PackageError::NotAPackage {
            path: root.to_path_buf(),
        }),
    })?;
    let library = root.join(&rust.library);
    let bytes =
        LibraryBytes::read(&library).map_err(|problem: LibraryProblem| LoadError::RustLibrary {
            plugin: plugin.to_owned(),
            library: library.clone(),
            problem,
        })?;
    let mut source = PluginSource::rust(
        plugin,
        manifest.package.version.to_string(),
        &library,
        rust.plugin.clone(),
    );
    source.dir = root.to_path_buf();
    mark_verified(&mut source, &bytes);
    Ok(source)
}

fn mark_verified(source: &mut PluginSource, bytes: &LibraryBytes) {
    if let Some(rust) = source.rust.as_mut() {
        rust.verified_sha256 = Some(bytes.sha256());
    }
}
