//! What an instance needs to know to load a plugin: where it is and what to import.

use std::path::{Path, PathBuf};

/// A plugin on disk, already verified by the caller (manifest read, signature checked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginSource {
    /// The plugin's name, used in thread names, logs and errors.
    pub name: String,
    /// The plugin's version, for logs.
    pub version: String,
    /// The plugin directory (holding the entry module and, optionally, `vendor/`).
    pub dir: PathBuf,
    /// Dotted name of the module to import, e.g. `greeter` (empty for a Rust library).
    pub entry_module: String,
    /// The host's private bytecode folder for this tree: set only by a [`PluginHost`](crate::PluginHost)
    /// for a tree it verified, so a bare source never reads or writes cached bytecode.
    pub(crate) bytecode_cache: Option<PathBuf>,
    /// Set for a Rust cdylib plugin: the library and which of its plugins.
    pub rust: Option<RustLibrary>,
}

/// A Rust cdylib plugin's library (see [`PluginSource::rust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RustLibrary {
    /// The `.so` file.
    pub library: PathBuf,
    /// Which plugin the library exports (its name); `None` takes the one plugin of the interface.
    pub plugin: Option<String>,
    /// SHA-256 of the bytes the host verified (signature, digest): the bytes mapped must be these.
    pub(crate) verified_sha256: Option<[u8; 32]>,
}

impl PluginSource {
    /// A plugin in `dir` whose code starts at `entry_module`. A relative `dir` is resolved against the
    /// working directory now, once, so a later change of it (process-wide) cannot redirect reloads.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        dir: impl Into<PathBuf>,
        entry_module: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            dir: absolute(dir.into()),
            entry_module: entry_module.into(),
            bytecode_cache: None,
            rust: None,
        }
    }

    /// The Rust cdylib plugin `plugin` of `library` (`None`: the library's one plugin of the
    /// interface it is loaded against). Its name is `name`; `version` is for logs.
    pub fn rust(
        name: impl Into<String>,
        version: impl Into<String>,
        library: impl Into<PathBuf>,
        plugin: Option<String>,
    ) -> Self {
        let library = absolute(library.into());
        let dir = library.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            name: name.into(),
            version: version.into(),
            dir,
            entry_module: String::new(),
            bytecode_cache: None,
            rust: Some(RustLibrary {
                library,
                plugin,
                verified_sha256: None,
            }),
        }
    }

    /// Where vendored dependencies live; first on the plugin's `sys.path`.
    pub fn vendor_dir(&self) -> PathBuf {
        self.dir.join("vendor")
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `path` made absolute against the working directory of this moment, so that a later change of the
/// working directory (which is process-wide) cannot redirect discovery, loads or reloads. Left as it
/// is only when it cannot be (an empty path, an unreadable working directory), where any later use
/// fails anyway.
pub(crate) fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
