//! `PluginHost`: search paths, verification policy, and loading plugins by name.

mod bytecode;
mod cache;
mod discovery;
mod keys;
mod rust;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fidius_core::archive::{check_unpacked, UnpackLimits};
use fidius_core::digest::PackageDigest;
use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::manifest::Manifest;
use fidius_core::signing::{
    read_signature, verify_digest, verify_dir, VerifiedSignature, VerifyingKey,
};
use fidius_core::tree::SIGNATURE_FILE;
use fidius_core::PackageError;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bytecode::{PrunedBytecode, DEFAULT_BYTECODE_LIMIT};
pub(crate) use cache::SlotLease;
#[cfg(fidius_bench_unproven_cache)]
#[doc(hidden)]
pub use cache::SERVE_UNPROVEN_FOR_BENCHMARKS;
pub use cache::{CacheError, CachedPackage, PackageCache, PruneRule};
pub use discovery::{BrokenPackage, DiscoveredPlugin, Discovery};
pub use keys::PublicKey;

use crate::callback::{HostFunctionError, HostFunctions};
use crate::error::{admit, LoadError, LoadWarning};
use crate::handle::{PythonPluginHandle, Reloader, WeakPluginHandle};
use crate::options::LoadOptions;
use crate::plugin::descriptor::SharedDescriptor;
use crate::plugin::source::{absolute, PluginSource};
use crate::plugin::version::PluginInfo;
use bytecode::BytecodeCache;
use cache::{ArchiveCache, Fetch};

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// `require_signature(true)` without any `trusted_key`: nothing could ever load.
    #[error("require_signature(true) needs at least one trusted_key")]
    NoTrustedKeys,
    /// A search path could not be listed.
    #[error("cannot read search path")]
    SearchPath(#[source] PackageError),
    /// A host function was registered under a name that cannot be one, or twice.
    #[error("host function `{name}`: {reason}")]
    HostFunction { name: String, reason: String },
}

/// Finds, verifies and loads Python plugins. Cheap to clone (clones share one host); `Send + Sync`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # static GREETER: fidius_core::interface::PythonInterfaceDescriptor =
/// #     fidius_core::interface::PythonInterfaceDescriptor {
/// #         trait_name: "Greeter", version: 1, interface_hash: 0, schema_fingerprint: None,
/// #         methods: &[] };
/// use fidius_host::{PluginCall, PluginHost, PublicKey};
///
/// let host = PluginHost::builder()
///     .search_path("./plugins")
///     .require_signature(true)
///     .trusted_key(PublicKey::from_file("mykey.public")?)
///     .build()?;
/// for plugin in host.discover()? {
///     println!("{} {} implements {}", plugin.name(), plugin.version(), plugin.interface());
/// }
/// let greeter = host.load_python("my-greeter", &GREETER)?;
/// let reply = greeter.call_typed_json(0, br#"["World"]"#)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    search_paths: Vec<PathBuf>,
    require_signature: bool,
    trusted_keys: Vec<VerifyingKey>,
    cache: ArchiveCache,
    /// The bytecode cache (in the package cache folder), unless disabled.
    bytecode: Option<BytecodeCache>,
    /// Every handle this host loaded, by plugin name, for [`PluginHost::reload`]. Weak: the host
    /// keeps no plugin alive.
    loaded: Mutex<Vec<(String, WeakPluginHandle)>>,
    /// Offered to every plugin it loads as `fidius.host`.
    host_functions: HostFunctions,
}

/// Configures a [`PluginHost`]; validation happens once, in [`build`](Self::build).
#[derive(Debug, Default, Clone)]
pub struct PluginHostBuilder {
    search_paths: Vec<PathBuf>,
    require_signature: bool,
    trusted_keys: Vec<PublicKey>,
    cache_dir: Option<PathBuf>,
    cache_max_bytes: Option<u64>,
    unpack_limits: UnpackLimits,
    host_functions: HostFunctions,
    no_bytecode_cache: bool,
    spare_interpreters: usize,
}

impl PluginHostBuilder {
    /// Adds a folder holding plugin directories and/or `.fid` files. Repeatable; earlier paths are
    /// listed first. By default there are none. A relative path is resolved against the working
    /// directory now, once.
    pub fn search_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.search_paths.push(absolute(path.into()));
        self
    }

    /// Refuse packages without a valid signature from a trusted key. By default this is `false`:
    /// unsigned packages load, but a package whose signature does not verify against the trusted
    /// keys (when any are set) is refused as tampered.
    pub fn require_signature(mut self, required: bool) -> Self {
        self.require_signature = required;
        self
    }

    /// Trusts signatures made with this key. Repeatable. By default no key is trusted.
    pub fn trusted_key(mut self, key: PublicKey) -> Self {
        self.trusted_keys.push(key);
        self
    }

    /// Where `.fid` archives are unpacked (one folder per archive hash). By default
    /// `$XDG_CACHE_HOME/fidius/packages`, else `$HOME/.cache/fidius/packages`, else
    /// `fidius-<uid>/packages` in the temp folder (see [`PackageCache::default_location`]). The
    /// folder must belong to the current user and be writable by nobody else, or loads of archives
    /// fail with [`LoadError::Cache`].
    /// A relative path is resolved against the working directory now, once.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(absolute(dir.into()));
        self
    }

    /// After unpacking an archive, removes least recently used cache slots until the cache holds
    /// at most `bytes` (never a slot a running host has a plugin loaded from). By default the cache
    /// is not pruned; `fidius cache prune` does it by hand.
    pub fn cache_max_size(mut self, bytes: u64) -> Self {
        self.cache_max_bytes = Some(bytes);
        self
    }

    /// Keep compiled plugin and vendored modules in the host's private bytecode cache (the
    /// `bytecode` folder of the [`cache_dir`](Self::cache_dir)) so that later loads, reloads and
    /// worker restarts of a verified plugin skip compiling them. Default: on. Plugin trees stay
    /// source-only either way: no bytecode is ever read from or written into one. The cache counts
    /// towards [`cache_max_size`](Self::cache_max_size) (without one it is kept under
    /// [`DEFAULT_BYTECODE_LIMIT`](crate::DEFAULT_BYTECODE_LIMIT)) and `fidius cache prune`.
    pub fn bytecode_cache(mut self, enabled: bool) -> Self {
        self.no_bytecode_cache = !enabled;
        self
    }

    /// Keep `count` blank own-GIL sub-interpreters ready (made in the background, each on its own
    /// waiting instance thread), so that starting an instance in the sub-interpreter tier (a load, a
    /// reload, the replacement of a retired instance) skips creating an interpreter, most of a
    /// small plugin's start. Default: 0 (none). The pool is process-wide, shared by all hosts, and
    /// keeps the largest count any host asked for, at most [`MAX_SPARES`](crate::MAX_SPARES); each
    /// spare costs an idle interpreter's memory (about 1.5 MiB). See
    /// [`spare_interpreter_stats`](crate::spare_interpreter_stats).
    pub fn spare_interpreters(mut self, count: usize) -> Self {
        self.spare_interpreters = count;
        self
    }

    /// Limits for unpacking archives. By default 10,000 entries, 512 MiB, ratio 100:1.
    pub fn unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack_limits = limits;
        self
    }

    /// Registers a host function: plugin code calls it as `fidius.host.<name>(*args)`, in either
    /// tier, synchronously (only the calling plugin instance waits). `function` gets the
    /// positional arguments as a JSON array (`["key"]`) and returns its result as JSON; its
    /// [`HostFunctionError`] reaches the plugin as a `fidius.HostError` with the message.
    ///
    /// `name` must be an ASCII identifier starting with a letter, at most 64 bytes, registered
    /// once; [`build`](Self::build) refuses others. Every plugin this host loads gets every host
    /// function. The function runs on a host thread (the plugin's instance thread in the
    /// sub-interpreter tier, the calling thread in the process tier) and may call plugins, except
    /// one whose call it is serving, directly or through other plugins: that call fails with
    /// [`CallError::Reentrant`](crate::CallError::Reentrant) instead of waiting for itself (even
    /// when the plugin has idle instances). A panic is caught and reported to the plugin. Host
    /// functions can be called only while the plugin serves a call, from the thread running it
    /// (not at import time, not from threads the plugin started).
    pub fn host_function<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, HostFunctionError> + Send + Sync + 'static,
    {
        self.host_functions.register(name.into(), function);
        self
    }

    /// [`host_function`](Self::host_function) with serde: the arguments array deserialises into
    /// `A` (a tuple such as `(String,)` or `(i64, i64)`, or a struct read from an array), the
    /// result `R` serialises to JSON. Arguments that do not match are the plugin's `HostError`.
    ///
    /// ```no_run
    /// use fidius_host::{HostFunctionError, PluginHost};
    /// let host = PluginHost::builder()
    ///     .host_function_typed("add", |(a, b): (i64, i64)| Ok::<_, HostFunctionError>(a + b))
    ///     .build()?;
    /// // In the plugin: `fidius.host.add(2, 3)` returns 5.
    /// # Ok::<(), fidius_host::HostError>(())
    /// ```
    pub fn host_function_typed<A, R, F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> Result<R, HostFunctionError> + Send + Sync + 'static,
    {
        self.host_functions.register_typed(name.into(), function);
        self
    }

    /// The longest a host function call may take. Default: none (the function runs on the thread
    /// serving the call, without extra cost). With a timeout each call runs on a thread of its own
    /// and the plugin gets a `fidius.HostError` saying it timed out once `timeout` passes. A Rust
    /// closure cannot be stopped: the overrunning function keeps running in the host until it
    /// returns, and its result is dropped. (A call's own timeout still applies around it: in the
    /// sub-interpreter tier the plugin is interrupted when the function returns or times out, in
    /// the process tier the worker is killed once the function returns.)
    pub fn host_function_timeout(mut self, timeout: Duration) -> Self {
        self.host_functions.set_timeout(timeout);
        self
    }

    /// Checks the configuration and builds the host.
    pub fn build(self) -> Result<PluginHost, HostError> {
        if self.require_signature && self.trusted_keys.is_empty() {
            return Err(HostError::NoTrustedKeys);
        }
        if let Some((name, reason)) = self.host_functions.refused() {
            return Err(HostError::HostFunction {
                name: name.chars().take(100).collect(),
                reason: reason.clone(),
            });
        }
        let cache = match self.cache_dir {
            Some(dir) => PackageCache::at(dir),
            None => PackageCache::default_location(),
        };
        let bytecode = (!self.no_bytecode_cache)
            .then(|| BytecodeCache::new(cache.clone(), self.cache_max_bytes));
        if self.spare_interpreters > 0 {
            crate::backend::thread::spare::reserve(self.spare_interpreters);
        }
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                bytecode,
                search_paths: self.search_paths,
                require_signature: self.require_signature,
                trusted_keys: self
                    .trusted_keys
                    .iter()
                    .map(PublicKey::verifying_key)
                    .collect(),
                cache: ArchiveCache::new(cache, self.unpack_limits, self.cache_max_bytes),
                loaded: Mutex::new(Vec::new()),
                host_functions: self.host_functions,
            }),
        })
    }
}

impl PluginHost {
    /// A builder with the documented defaults.
    pub fn builder() -> PluginHostBuilder {
        PluginHostBuilder::default()
    }

    /// Lists the packages on the search paths by reading their manifests only (no unpacking, no
    /// Python). A package that cannot be read is listed in `broken` and hides nothing else.
    pub fn discover(&self) -> Result<Discovery, HostError> {
        discovery::discover(&self.inner.search_paths).map_err(HostError::SearchPath)
    }

    /// Loads the plugin `name` (or `name@version`) against `descriptor`, with one instance.
    pub fn load_python(
        &self,
        name: &str,
        descriptor: impl Into<SharedDescriptor>,
    ) -> Result<PythonPluginHandle, LoadError> {
        self.load_python_with(name, descriptor, LoadOptions::default())
    }

    /// Loads the plugin `name` (or `name@version`) as a configured instance, with one instance:
    /// the plugin module's `__fidius_configure__(config)` builds the object whose attributes are
    /// the methods. The same as [`load_python_with`](Self::load_python_with) with
    /// [`LoadOptions::config`], which says what happens in detail.
    pub fn load_python_configured(
        &self,
        name: &str,
        descriptor: impl Into<SharedDescriptor>,
        config: &impl serde::Serialize,
    ) -> Result<PythonPluginHandle, LoadError> {
        self.load_python_with(name, descriptor, LoadOptions::default().config(config))
    }

    /// Loads the plugin `name` (or `name@version`: otherwise the highest version wins).
    ///
    /// Everything that can be checked without running plugin code is checked first: the manifest's
    /// runtime, interface name and version against `descriptor`, and the signature policy (for
    /// archives, before the unpacked tree is accepted into the cache). Then each instance imports
    /// the plugin and checks it against the descriptor.
    pub fn load_python_with(
        &self,
        name: &str,
        descriptor: impl Into<SharedDescriptor>,
        options: LoadOptions,
    ) -> Result<PythonPluginHandle, LoadError> {
        let request = name.to_owned();
        self.load_found(descriptor.into(), options, move |host| host.find(&request))
    }

    /// Loads the package at `path` (a plugin directory or a `.fid` file, whether or not it is on a
    /// search path), with the same checks as [`load_python_with`](Self::load_python_with).
    pub fn load_python_path(
        &self,
        path: &Path,
        descriptor: impl Into<SharedDescriptor>,
        options: LoadOptions,
    ) -> Result<PythonPluginHandle, LoadError> {
        let path = absolute(path.to_path_buf());
        self.load_found(descriptor.into(), options, move |_| read_path(&path))
    }

    /// Verifies what `find` finds and starts it; a reload finds and verifies again the same way.
    fn load_found(
        &self,
        descriptor: SharedDescriptor,
        options: LoadOptions,
        find: impl Fn(&PluginHost) -> Result<DiscoveredPlugin, LoadError> + Send + Sync + 'static,
    ) -> Result<PythonPluginHandle, LoadError> {
        let strict = options.strict;
        let (source, info) = self.verify(find(self)?, &descriptor, strict)?;
        let host = self.clone();
        let checked = descriptor.clone();
        let reloader: Reloader = Box::new(move || host.verify(find(&host)?, &checked, strict));
        self.start(source, info, descriptor, &options, reloader)
    }

    /// Reloads every live handle this host loaded for the plugin `name` (see
    /// [`PythonPluginHandle::reload`]: verified like a load, no call fails, a failed reload leaves
    /// the old version serving). Returns how many handles were reloaded; stops at the first error.
    pub fn reload(&self, name: &str) -> Result<usize, LoadError> {
        let handles: Vec<PythonPluginHandle> = {
            let loaded = self.loaded();
            loaded
                .iter()
                .filter(|(loaded_name, _)| loaded_name == name)
                .filter_map(|(_, handle)| handle.upgrade())
                .collect()
        };
        if handles.is_empty() {
            return Err(LoadError::NotLoaded {
                name: name.to_owned(),
            });
        }
        for handle in &handles {
            handle.reload()?;
        }
        Ok(handles.len())
    }

    /// Starts the verified plugin's instances and remembers the handle for [`reload`](Self::reload).
    fn start(
        &self,
        source: PluginSource,
        info: PluginInfo,
        descriptor: SharedDescriptor,
        options: &LoadOptions,
        reloader: Reloader,
    ) -> Result<PythonPluginHandle, LoadError> {
        let options = &LoadOptions {
            host_functions: self.inner.host_functions.clone(),
            ..options.clone()
        };
        let handle =
            PythonPluginHandle::start_with_info(source, descriptor, options, info, Some(reloader))?;
        self.loaded()
            .push((handle.source().name.clone(), handle.downgrade()));
        Ok(handle)
    }

    /// The registry of loaded handles, with the dropped ones already forgotten.
    fn loaded(&self) -> std::sync::MutexGuard<'_, Vec<(String, WeakPluginHandle)>> {
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded.retain(|(_, handle)| handle.is_alive());
        loaded
    }

    /// Everything that can be checked without running plugin code (manifest, interface, signature
    /// policy; archives unpacked into the cache), for a load or a reload.
    fn verify(
        &self,
        found: DiscoveredPlugin,
        descriptor: &OwnedInterfaceDescriptor,
        strict: bool,
    ) -> Result<(PluginSource, PluginInfo), LoadError> {
        let plugin = found.name().to_owned();
        let manifest_warning = check_manifest(&found.manifest, descriptor, strict)?;
        if !found.archive && rust::is_library(&found.path) {
            let (source, signer) = self.verify_bare_library(&found)?;
            let info = PluginInfo {
                manifest: Some(found.manifest.clone()),
                path: found.path.clone(),
                signer,
                warnings: manifest_warning.into_iter().collect(),
                _cache_lease: None,
            };
            return Ok((source, info));
        }
        let mut cache_lease = None;
        let (root, signer) = if found.archive {
            let mut signer = None;
            let served = self
                .inner
                .cache
                .unpacked(&found.path, |root| {
                    // An invalid package, or one whose top directory is not its NAME-VERSION,
                    // never enters the cache.
                    check_unpacked(root).map_err(|source| LoadError::Package {
                        plugin: plugin.clone(),
                        path: found.path.clone(),
                        source: Box::new(source),
                    })?;
                    let verified = self.check_signature(&plugin, root, None)?;
                    signer = verified.as_ref().map(|verified| verified.key);
                    Ok::<_, LoadError>(verified.map(|verified| verified.digest))
                })
                .map_err(|error| match error {
                    Fetch::Package(source) => LoadError::Package {
                        plugin: plugin.clone(),
                        path: found.path.clone(),
                        source: Box::new(source),
                    },
                    Fetch::Cache(source) => LoadError::Cache {
                        plugin: plugin.clone(),
                        archive: found.path.clone(),
                        source: Box::new(source),
                    },
                    Fetch::Rejected(error) => error,
                })?;
            let root = served.root;
            cache_lease = Some(served.lease);
            // A slot admitted earlier (perhaps by a host with other keys) is checked against this
            // host's policy; its files were just proven, so a recorded digest needs no re-hash.
            let signer = match signer {
                Some(signer) => Some(signer),
                None => self
                    .check_signature(&plugin, &root, served.digest.as_ref())?
                    .map(|verified| verified.key),
            };
            (root, signer)
        } else {
            let signer = self
                .check_signature(&plugin, &found.path, None)?
                .map(|verified| verified.key);
            (found.path.clone(), signer)
        };
        let manifest = if found.archive {
            Manifest::load(&root).map_err(|source| LoadError::Package {
                plugin: plugin.clone(),
                path: found.path.clone(),
                source: Box::new(source.into()),
            })?
        } else {
            found.manifest.clone()
        };
        let mut source = match (&manifest.python, manifest.package.runtime) {
            (_, fidius_core::manifest::Runtime::Rust) => {
                rust::package_source(&plugin, &manifest, &root)?
            }
            (Some(python), _) => PluginSource::new(
                &plugin,
                manifest.package.version.to_string(),
                &root,
                &python.entry_module,
            ),
            (None, _) => unreachable!("a validated python manifest has a [python] table"),
        };
        source.bytecode_cache = self
            .inner
            .bytecode
            .as_ref()
            .and_then(BytecodeCache::dir_for_verified_tree);
        let info = PluginInfo {
            manifest: Some(manifest.clone()),
            path: found.path.clone(),
            signer,
            warnings: manifest_warning.into_iter().collect(),
            _cache_lease: cache_lease,
        };
        Ok((source, info))
    }

    fn find(&self, request: &str) -> Result<DiscoveredPlugin, LoadError> {
        let (name, version) = match request.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (request, None),
        };
        let discovery =
            discovery::discover(&self.inner.search_paths).map_err(|source| LoadError::Package {
                plugin: name.to_owned(),
                path: self.inner.search_paths.first().cloned().unwrap_or_default(),
                source: Box::new(source),
            })?;
        for broken in &discovery.broken {
            tracing::warn!(path = %broken.path.display(), error = %broken.error, "skipping unreadable package");
        }
        let available: Vec<String> = discovery
            .plugins
            .iter()
            .map(|plugin| format!("{}@{}", plugin.name(), plugin.version()))
            .collect();
        discovery
            .plugins
            .into_iter()
            .filter(|plugin| plugin.name() == name)
            .filter(|plugin| version.is_none_or(|version| plugin.version().to_string() == version))
            .max_by(|a, b| a.version().cmp(b.version()))
            .ok_or_else(|| LoadError::NotFound {
                name: request.to_owned(),
                available,
            })
    }

    /// Applies the signature policy to a package tree; returns who signed it and the digest, if
    /// verified. `digest`, when known, is the tree's digest (a proven cache slot's record).
    fn check_signature(
        &self,
        plugin: &str,
        root: &Path,
        digest: Option<&PackageDigest>,
    ) -> Result<Option<VerifiedSignature>, LoadError> {
        // Anything named package.sig counts as a signature to check, so a symlink or FIFO there is
        // refused by verification rather than taken for "unsigned".
        let signed = root.join(SIGNATURE_FILE).symlink_metadata().is_ok();
        if !signed {
            return if self.inner.require_signature {
                Err(LoadError::Unsigned {
                    plugin: plugin.to_owned(),
                    path: root.to_path_buf(),
                })
            } else {
                Ok(None)
            };
        }
        if self.inner.trusted_keys.is_empty() {
            // Not required and nothing to check it against.
            return Ok(None);
        }
        let verified = match digest {
            Some(digest) => read_signature(&root.join(SIGNATURE_FILE)).and_then(|signature| {
                let key = verify_digest(digest, &signature, &self.inner.trusted_keys)?;
                Ok(VerifiedSignature {
                    digest: *digest,
                    key,
                })
            }),
            None => verify_dir(root, &self.inner.trusted_keys),
        };
        match verified {
            Ok(verified) => Ok(Some(verified)),
            Err(source) => Err(LoadError::SignatureRejected {
                plugin: plugin.to_owned(),
                source: Box::new(source),
            }),
        }
    }
}

/// The checks a manifest allows before any file is unpacked or imported. An interface name that
/// differs from the trait's only in spelling passes with a warning unless `strict`, as the original
/// fidius never compared them.
fn check_manifest(
    manifest: &Manifest,
    descriptor: &OwnedInterfaceDescriptor,
    strict: bool,
) -> Result<Option<LoadWarning>, LoadError> {
    let plugin = manifest.package.name.clone();
    let mut warning = None;
    if manifest.package.interface != descriptor.trait_name {
        let found = LoadWarning::InterfaceName {
            found: manifest.package.interface.clone(),
            expected: descriptor.trait_name.to_owned(),
        };
        warning = Some(admit(found, &plugin, &descriptor.trait_name, strict)?);
    }
    if manifest.package.interface_version != descriptor.version {
        return Err(LoadError::InterfaceVersionMismatch {
            plugin,
            interface: descriptor.trait_name.to_owned(),
            expected: descriptor.version,
            found: manifest.package.interface_version.to_string(),
        });
    }
    Ok(warning)
}

/// The package at `path` (a plugin directory or a `.fid` file), manifest read.
fn read_path(path: &Path) -> Result<DiscoveredPlugin, LoadError> {
    discovery::read_candidate(path)
        .unwrap_or_else(|| {
            Err(PackageError::NotAPackage {
                path: path.to_path_buf(),
            })
        })
        .map_err(|source| LoadError::Package {
            plugin: path.display().to_string(),
            path: path.to_path_buf(),
            source: Box::new(source),
        })
}
