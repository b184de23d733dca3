//! fidius host: loads Python plugins into own-GIL CPython sub-interpreters and calls them.
//!
//! # Core concepts
//!
//! * A **plugin instance** is one own-GIL sub-interpreter (PEP 684) owned by one dedicated OS thread,
//!   named `fidius:<plugin>#<n>`, for its whole life. It imports the plugin once, checks it against
//!   the interface descriptor, then serves calls. While idle it holds no GIL.
//! * A **plugin** ([`PythonPluginHandle`]) is a pool of instances fed from one shared queue, so any
//!   idle instance takes the next call. Instances of different plugins (or of one plugin) run Python
//!   truly in parallel, and each has its own `sys.modules`: two plugins vendoring different versions
//!   of a library each see their own.
//! * Each plugin's `sys.path` is its `vendor/`, then its directory, then the standard library; the
//!   `fidius` SDK module is the host's embedded copy; no bytecode is written, and none is ever read
//!   from the plugin's folders (no `__pycache__`, no sourceless `.pyc`): the verified source runs.
//! * `.fid` archives are unpacked into a cache private to the user ([`PackageCache`]); a cached copy
//!   is proven against its admission record before it is served, and replaced if it fails.
//! * What a plugin writes (`print`, `sys.stdout`/`sys.stderr`, `logging`) goes to `tracing`
//!   (target [`OUTPUT_TARGET`], fields `plugin`, `version`, `instance`, `stream`, `logger`) and to
//!   [`PythonPluginHandle::recent_output`], never to the host's own streams.
//! * Calls can have a timeout ([`LoadOptions::call_timeout`], [`CallOptions::timeout`]): runaway
//!   Python is interrupted and its instance keeps serving; an instance stuck in C code is retired and
//!   replaced ([`PoolStats`]). [`LoadOptions::call_timeout`] documents exactly what can be interrupted.
//! * [`PythonPluginHandle::reload`] swaps in a re-verified, re-imported version of the plugin without
//!   failing a call.
//! * The **process tier** ([`LoadOptions::isolation`], `isolation = "process"` in the manifest, or
//!   chosen by `auto` when a vendored compiled extension cannot run in a sub-interpreter) runs each
//!   instance in a worker process ([`WorkerCommand`]) behind the same handle: the plugin runs in the
//!   worker's main interpreter, calls cross a shared-memory mailbox, and a worker that crashes, exits
//!   or overruns its timeout costs only the call it was serving
//!   ([`CallError::WorkerCrashed`], [`CallError::Timeout`]); the next call gets a fresh worker.
//!   [`PythonPluginHandle::tier`] says which tier a plugin got and why.
//! * **Host functions** ([`PluginHostBuilder::host_function`], `host_function_typed`): named Rust
//!   functions plugin code calls synchronously as `fidius.host.<name>(...)`, in both tiers (in the
//!   process tier over the worker's mailbox). Their errors are a `fidius.HostError` in the plugin; a
//!   host function calling back into a plugin whose call it serves gets
//!   [`CallError::Reentrant`] instead of a deadlock.
// `deny`, not `forbid`: `backend::rust` (dlopen and calls into Rust cdylib plugins) is the one
// module allowed `unsafe`; CPython's stays in fidius-ffi.
#![deny(unsafe_code)]

mod backend;
mod callback;
mod error;
mod handle;
mod host;
mod options;
mod plugin;
mod sdk;
mod stream;
mod stream_input;
mod tier;
pub mod worker;

pub use backend::process::command::{WorkerCommand, WorkerNotFound, WORKER_BINARY, WORKER_ENV};
pub use backend::process::probe::{host_python, probe_extensions, ProbeError, ProbeOptions};
pub use backend::rust::LibraryProblem;
pub use backend::thread::spare::{spare_interpreter_stats, SpareInterpreterStats, MAX_SPARES};
pub use backend::PoolStats;
pub use callback::HostFunctionError;
pub use error::{InterpreterError, LoadError, LoadWarning};
pub use fidius_core::{
    AsyncPluginCall, CallError, PluginCall, PluginError, PythonError, StreamedArgumentCall,
    StreamingCall, WorkerExit,
};
pub use handle::{PendingCall, PythonPluginHandle};
/// The handle of any loaded plugin, Python or Rust (the same type as [`PythonPluginHandle`]).
pub type PluginHandle = PythonPluginHandle;
#[cfg(fidius_bench_unproven_cache)]
#[doc(hidden)]
pub use host::SERVE_UNPROVEN_FOR_BENCHMARKS;
pub use host::{
    BrokenPackage, CacheError, CachedPackage, DiscoveredPlugin, Discovery, HostError, PackageCache,
    PluginHost, PluginHostBuilder, PruneRule, PrunedBytecode, PublicKey, DEFAULT_BYTECODE_LIMIT,
};
pub use options::{CallOptions, LoadOptions};
pub use plugin::descriptor::SharedDescriptor;
pub use plugin::output::{OutputLine, OutputStream, OUTPUT_TARGET};
pub use plugin::source::{PluginSource, RustLibrary};
pub use plugin::version::PluginInfo;
pub use sdk::SDK_SOURCE;
pub use stream::{PluginStream, RawPluginStream};
pub use tier::{
    choose_tier, subinterpreter_refusal, Evidence, ExtensionRefusal, IsolationOrigin,
    RefusedModules, Tier, TierChoice, TierReason,
};
