//! `RustBackend`: a Rust cdylib plugin (`#[plugin_impl]`, see `fidius_core::abi`), called in the
//! host process.
//!
//! Load: the library's bytes are read once; they must be the bytes the host verified (their
//! SHA-256 is compared), are checked as an ELF shared library of this host's architecture, and the
//! chosen plugin's descriptor header (magic, ABI version, interface name, version and hash) is
//! read from them, all before the library is mapped. Those same bytes are then copied into a
//! sealed memfd and `dlopen`ed from there, so no later change of the file can swap the code. The
//! mapped descriptor is checked again and its method table copied.
//!
//! A call is a direct function call on the calling thread: no queue, no copy of the input; the
//! result is copied out of the plugin's buffer, which the plugin frees. There is no isolation:
//! a crash, an abort or an endless loop in the plugin is one in the host, and timeouts do not
//! apply (a call cannot be interrupted). Libraries are never unloaded (`dlclose` of Rust code
//! with thread-local destructors is not safe): a reload maps the new bytes beside the old.
#![allow(
    unsafe_code,
    reason = "dlopen/dlsym and calls through the plugin's exported function pointers"
)]

mod library;

use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use fidius_core::abi::{
    CallInput, CallOutput, DescriptorHeader, FreeFn, MethodFn, RustPluginDescriptor, STATUS_ERROR,
    STATUS_OK,
};
use fidius_core::CallError;

use crate::backend::process::protocol::decode_error;
use crate::backend::{Backend, BackendStart, Call, PoolStats};
use crate::error::LoadError;
use crate::options::LoadOptions;
use crate::plugin::loader::Accepted;
use crate::plugin::shared::PluginShared;
use crate::plugin::source::RustLibrary;
use crate::plugin::version::Version;
use crate::stream::StreamSink;
use crate::tier::{Tier, TierChoice, TierReason};

pub(crate) use library::{ExportedPlugin, LibraryBytes};

/// Why a Rust plugin's library was refused (part of [`LoadError::RustLibrary`], which names the
/// plugin and the library).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryProblem {
    #[error("cannot be read: {reason}")]
    Unreadable { reason: String },
    #[error("changed since it was verified")]
    ChangedSinceVerified,
    #[error("is not a shared library: {reason}")]
    NotALibrary { reason: String },
    #[error("is built for {found}, this host is {expected}")]
    WrongArchitecture { found: String, expected: String },
    #[error("exports no {wanted}; it exports {}", if available.is_empty() { "no fidius plugin".to_owned() } else { available.join(", ") })]
    NoSuchPlugin {
        wanted: String,
        available: Vec<String>,
    },
    #[error("exports several plugins of `{interface}` ({}); name one (`[rust] plugin` in package.toml)", available.join(", "))]
    AmbiguousPlugin {
        interface: String,
        available: Vec<String>,
    },
    #[error("the descriptor at `{symbol}` cannot be read")]
    UnreadableDescriptor { symbol: String },
    #[error("is not a fidius plugin library (wrong magic number)")]
    BadMagic,
    #[error("uses plugin ABI version {found}, this host speaks version {expected}")]
    AbiVersion { found: u32, expected: u32 },
    #[error("implements interface `{found}`, the host expects `{expected}`")]
    InterfaceName { found: String, expected: String },
    #[error("implements version {found} of `{interface}`, the host expects version {expected}")]
    InterfaceVersion {
        interface: String,
        found: u32,
        expected: u32,
    },
    #[error("interface hash mismatch for `{interface}`: the host expects {expected:#018x}, the library has {found:#018x}")]
    InterfaceHash {
        interface: String,
        found: u64,
        expected: u64,
    },
    #[error(
        "its method table has {found} entries, interface `{interface}` has {expected} methods"
    )]
    MethodCount {
        interface: String,
        found: usize,
        expected: usize,
    },
    #[error("has no entry for required method `{method}`")]
    MissingMethod { method: String },
    #[error("cannot be mapped: {reason}")]
    Open { reason: String },
}

/// The tier of a Rust plugin; the load options that need another tier are refused.
pub(crate) fn tier(plugin: &str, options: &LoadOptions) -> Result<TierChoice, LoadError> {
    let refuse = |what: &str| LoadError::InvalidOptions {
        plugin: plugin.to_owned(),
        reason: format!("{what}: a Rust library runs in the host process"),
    };
    if options.memory_limit.is_some() {
        return Err(refuse("memory_limit needs the process tier"));
    }
    if options
        .isolation
        .is_some_and(|isolation| isolation != fidius_core::manifest::Isolation::Auto)
    {
        return Err(refuse("isolation cannot be chosen"));
    }
    Ok(TierChoice::new(Tier::Rust, TierReason::RustLibrary))
}

/// One mapped version of the library.
struct Mapped {
    methods: Box<[Option<MethodFn>]>,
    free_output: FreeFn,
    /// Held while this version serves, releasing it (and its cache lease) after a reload.
    _version: Arc<Version>,
}

/// Calls into a Rust cdylib plugin on the calling thread.
pub(crate) struct RustBackend {
    plugin: Arc<PluginShared>,
    serving: RwLock<Arc<Mapped>>,
    shut_down: AtomicBool,
}

impl RustBackend {
    /// Rust plugins stream neither results nor arguments.
    fn no_streams<R>(&self, call: Call<'_>) -> Result<R, CallError> {
        let method = crate::plugin::shared::method(&self.plugin.descriptor, call.index)?;
        Err(CallError::NotImplemented {
            method: method.name.clone(),
        })
    }

    pub(crate) fn start(start: BackendStart<'_>) -> Result<(Self, Accepted), LoadError> {
        let (mapped, accepted) = map(&start.plugin, start.version)?;
        Ok((
            Self {
                plugin: start.plugin,
                serving: RwLock::new(Arc::new(mapped)),
                shut_down: AtomicBool::new(false),
            },
            accepted,
        ))
    }

    fn serving(&self) -> Arc<Mapped> {
        // Replaced whole, so a poisoned lock still holds a consistent value.
        Arc::clone(
            &self
                .serving
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Backend for RustBackend {
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, CallError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(self.plugin.unavailable());
        }
        let mapped = self.serving();
        let descriptor = &self.plugin.descriptor;
        let method = crate::plugin::shared::method(descriptor, call.index)?;
        let Some(Some(entry)) = mapped.methods.get(call.index).copied() else {
            return Err(CallError::NotImplemented {
                method: method.name.clone(),
            });
        };
        let mut output = CallOutput::empty();
        // The entry catches the plugin's panics: nothing unwinds out of it.
        let status = entry(CallInput::new(call.payload), &mut output);
        // SAFETY: `output` was filled by this library's entry just now and is freed only below.
        let bytes = unsafe { output.as_slice() }.to_vec();
        (mapped.free_output)(&mut output);
        match status {
            STATUS_OK => Ok(bytes),
            STATUS_ERROR => Err(decode_error(&bytes, descriptor, call.index).unwrap_or_else(
                |reason| CallError::InvalidResult {
                    method: method.name.clone(),
                    reason,
                },
            )),
            other => Err(CallError::InvalidResult {
                method: method.name.clone(),
                reason: format!("the library returned unknown status {other}"),
            }),
        }
    }

    /// Rust plugins do not stream yet: the ABI has no item entries (the `sink` is dropped, so a
    /// stream already handed out would end at once).
    fn open_stream(&self, call: Call<'_>, _sink: StreamSink) -> Result<(), CallError> {
        self.no_streams(call)
    }

    /// Rust plugins take no streamed arguments (as they stream no results).
    fn call_with_input(
        &self,
        call: Call<'_>,
        _input: Arc<crate::stream_input::InputFeed>,
    ) -> Result<Vec<u8>, CallError> {
        self.no_streams(call)
    }

    fn open_stream_with_input(
        &self,
        call: Call<'_>,
        _input: Arc<crate::stream_input::InputFeed>,
        _sink: StreamSink,
    ) -> Result<(), CallError> {
        self.no_streams(call)
    }

    fn reload(&self, version: &Arc<Version>) -> Result<Accepted, LoadError> {
        let (mapped, accepted) = map(&self.plugin, version)?;
        *self
            .serving
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(mapped);
        Ok(accepted)
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            instances: usize::from(!self.shut_down.load(Ordering::Acquire)),
            ..PoolStats::default()
        }
    }

    fn shutdown(&mut self) {
        self.shut_down.store(true, Ordering::Release);
    }
}

/// Reads, checks and maps `version`'s library; copies the chosen plugin's method table.
fn map(plugin: &PluginShared, version: &Arc<Version>) -> Result<(Mapped, Accepted), LoadError> {
    let source = &version.source;
    let Some(rust) = source.rust.as_ref() else {
        return Err(LoadError::InvalidOptions {
            plugin: plugin.name.clone(),
            reason: "not a Rust plugin".to_owned(),
        });
    };
    let refused = |problem| LoadError::RustLibrary {
        plugin: plugin.name.clone(),
        library: rust.library.clone(),
        problem,
    };
    let bytes = LibraryBytes::read(&rust.library).map_err(refused)?;
    if rust
        .verified_sha256
        .is_some_and(|verified| verified != bytes.sha256())
    {
        return Err(refused(LibraryProblem::ChangedSinceVerified));
    }
    let exported = bytes.exported_plugins().map_err(refused)?;
    let chosen =
        library::choose(&exported, rust.plugin.as_deref(), &plugin.descriptor).map_err(refused)?;
    let descriptor = open(&bytes, rust, chosen).map_err(refused)?;
    // The mapped header must say what the file said (it is the same bytes).
    library::check_header(&DescriptorHeader::of(descriptor), &plugin.descriptor)
        .map_err(refused)?;
    // SAFETY: `descriptor` is a checked descriptor (magic, ABI version) of a library that stays
    // mapped for the life of the process (`open` never unloads it).
    let table = unsafe { descriptor.methods() };
    let methods = &plugin.descriptor.methods;
    if table.len() != methods.len() {
        return Err(refused(LibraryProblem::MethodCount {
            interface: plugin.descriptor.trait_name.clone(),
            found: table.len(),
            expected: methods.len(),
        }));
    }
    if let Some(missing) = methods
        .iter()
        .zip(table)
        .find(|(method, entry)| !method.is_optional() && entry.is_none())
    {
        return Err(refused(LibraryProblem::MissingMethod {
            method: missing.0.name.clone(),
        }));
    }
    let accepted = Accepted {
        implemented: table.iter().map(Option::is_some).collect(),
        warnings: Vec::new(),
    };
    tracing::info!(plugin = %plugin.name, library = %rust.library.display(), symbol = %chosen.symbol, "Rust plugin mapped");
    Ok((
        Mapped {
            methods: table.into(),
            free_output: descriptor.free_output,
            _version: Arc::clone(version),
        },
        accepted,
    ))
}

/// Maps `bytes` (the checked library) from a sealed memfd and finds `chosen`'s descriptor.
fn open(
    bytes: &LibraryBytes,
    rust: &RustLibrary,
    chosen: &ExportedPlugin,
) -> Result<&'static RustPluginDescriptor, LibraryProblem> {
    let failed = |reason: String| LibraryProblem::Open { reason };
    let memfd = sealed_copy(&bytes.bytes).map_err(|error| failed(error.to_string()))?;
    let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    // SAFETY: this runs the library's initialisers. The bytes are the verified, checked ones;
    // running them is what loading a Rust plugin means (it is trusted like the host's own code).
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(&path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|error| failed(format!("{} ({error})", rust.library.display())))?;
    // Never unloaded (see the module docs): the descriptor is valid for the life of the process.
    // The memfd stays open too: glibc knows a library by its path, so a later load (a reload)
    // must never reuse this `/proc/self/fd/N`.
    let (library, _memfd) = Box::leak(Box::new((library, memfd)));
    let library: &'static libloading::os::unix::Library = library;
    let mut symbol = chosen.symbol.clone().into_bytes();
    symbol.push(0);
    // SAFETY: the symbol is a `RustPluginDescriptor` static: the file's header at this symbol
    // was read and checked (magic, ABI version) before mapping, and these are the same bytes.
    let pointer = unsafe { library.get::<*const RustPluginDescriptor>(&symbol) }
        .map_err(|error| failed(error.to_string()))?;
    let pointer: *const RustPluginDescriptor = *pointer;
    // SAFETY: non-null (checked), aligned and initialised: it is the library's static, mapped
    // for the rest of the process.
    unsafe { pointer.as_ref() }.ok_or_else(|| failed("the descriptor symbol is null".to_owned()))
}

/// `bytes` in an anonymous file that can no longer change (`F_SEAL_WRITE`, shrink, grow, seal).
fn sealed_copy(bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    use std::io::Write as _;
    let fd = memfd_create(
        "fidius-rust-plugin",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    Ok(file.into())
}
