//! The handle a host calls a loaded Python plugin through.

mod asynchronous;
mod reload;
mod stream;
mod stream_input;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use asynchronous::PendingCall;
pub(crate) use reload::Reloader;

use fidius_core::interface::{ArgumentShapes, OwnedInterfaceDescriptor, WireMode};
use fidius_core::{CallError, PluginCall};

use crate::backend::process::workers::ProcessBackend;
use crate::backend::rust::RustBackend;
use crate::backend::thread::ThreadBackend;
use crate::backend::{Backend, BackendStart, Call, Deadline, PoolStats};
use crate::callback::chain;
use crate::error::LoadError;
use crate::options::{CallOptions, LoadOptions};
use crate::plugin::descriptor::SharedDescriptor;
use crate::plugin::loader::Accepted;
use crate::plugin::output::OutputLine;
use crate::plugin::shared::{self, PluginShared};
use crate::plugin::source::PluginSource;
use crate::plugin::version::{PluginInfo, Version};
use crate::tier::{self, Tier, TierChoice};

/// A loaded plugin: its instances (sub-interpreters, or worker processes in the process tier), any
/// idle one taking the next call.
///
/// Cheap to clone (clones share the instances); `Send + Sync`, and every call takes `&self`, so any
/// number of host threads may call at once: each call goes to whichever instance is idle first. Dropping the
/// last clone lets the instances finish the calls already queued, ends their interpreters on their
/// own threads and joins the threads (an instance stuck past a call's timeout is retired and
/// detached instead; see [`LoadOptions::call_timeout`]).
#[derive(Clone)]
pub struct PythonPluginHandle {
    plugin: Arc<LoadedPlugin>,
}

/// A handle that does not keep its plugin loaded (for the host's registry of loaded plugins).
#[derive(Clone)]
pub(crate) struct WeakPluginHandle {
    plugin: std::sync::Weak<LoadedPlugin>,
}

impl WeakPluginHandle {
    pub(crate) fn upgrade(&self) -> Option<PythonPluginHandle> {
        self.plugin
            .upgrade()
            .map(|plugin| PythonPluginHandle { plugin })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.plugin.strong_count() > 0
    }
}

/// What the clones of one handle share: the tier-neutral state and the backend serving it.
struct LoadedPlugin {
    shared: Arc<PluginShared>,
    /// Where the instances run, and why.
    tier: TierChoice,
    backend: Box<dyn Backend>,
    /// The serving version; older ones live only as long as instances still serve them.
    serving: Mutex<Arc<Version>>,
    /// Which descriptor methods the serving version defines (optional ones may be absent).
    implemented: Box<[AtomicBool]>,
    /// Each method's argument types, parsed once from the descriptor: typed calls are checked
    /// against them before they reach the plugin.
    argument_shapes: Box<[ArgumentShapes]>,
    instances: usize,
    call_timeout: Option<Duration>,
    /// Streamed results: the default window and whole-stream timeout, and how long past a
    /// deadline a consumer waits for the instance's own timeout error.
    stream_window: usize,
    stream_timeout: Option<Duration>,
    stream_grace: Duration,
    /// How a reload finds and verifies the package again (set by `PluginHost`).
    reloader: Option<Reloader>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// The threads that hand async calls to the backend, started by the first one.
    async_calls: std::sync::OnceLock<asynchronous::AsyncCalls>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PythonPluginHandle>();
};

impl PythonPluginHandle {
    pub(crate) fn downgrade(&self) -> WeakPluginHandle {
        WeakPluginHandle {
            plugin: Arc::downgrade(&self.plugin),
        }
    }

    /// Starts `options`' number of instances of the plugin at `source` and waits until each has
    /// imported it and checked it against `descriptor` (the `&DESCRIPTOR` `#[plugin_interface]`
    /// generates, or a [`SharedDescriptor`] built at run time).
    ///
    /// The caller is responsible for what must happen before any plugin code runs (manifest and
    /// signature checks); `PluginHost` does that.
    pub fn start(
        source: PluginSource,
        descriptor: impl Into<SharedDescriptor>,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let info = PluginInfo::bare(source.dir.clone());
        Self::start_with_info(source, descriptor.into(), options, info, None)
    }

    pub(crate) fn start_with_info(
        source: PluginSource,
        descriptor: SharedDescriptor,
        options: &LoadOptions,
        info: PluginInfo,
        reloader: Option<Reloader>,
    ) -> Result<Self, LoadError> {
        if options.instances == 0 {
            return Err(LoadError::InvalidOptions {
                plugin: source.name,
                reason: "instances must be at least 1".to_owned(),
            });
        }
        if options.call_timeout == Some(Duration::ZERO)
            || options.load_timeout == Some(Duration::ZERO)
        {
            return Err(LoadError::InvalidOptions {
                plugin: source.name,
                reason: "a timeout must be longer than zero".to_owned(),
            });
        }
        let config = match &options.config {
            None => None,
            Some(Ok(config)) => Some(config.clone()),
            Some(Err(error)) => {
                return Err(LoadError::InvalidOptions {
                    plugin: source.name,
                    reason: format!("the configuration cannot be serialised to JSON: {error}"),
                })
            }
        };
        let manifest_isolation = info
            .manifest
            .as_ref()
            .and_then(|manifest| manifest.python.as_ref())
            .map(|python| python.isolation);
        let tier = match &source.rust {
            Some(_) => crate::backend::rust::tier(&source.name, options)?,
            None => tier::decide(&source, manifest_isolation, options)?,
        };
        let argument_shapes = descriptor
            .methods
            .iter()
            .map(|method| {
                // A streamed argument is not in the call's JSON array (its items are checked
                // one by one as they are pulled).
                ArgumentShapes::for_arguments(
                    method
                        .args
                        .iter()
                        .enumerate()
                        .filter(|(position, _)| Some(*position) != method.streamed_argument)
                        .map(|(_, (name, ty))| (name.as_str(), ty.as_str())),
                )
            })
            .collect();
        let shared = Arc::new(
            PluginShared::new(source.name.clone(), descriptor, options.recent_output_lines)
                .with_config(config)
                .with_host_functions(options.host_functions.clone()),
        );
        let version = Version::new(source, info);
        let start = BackendStart {
            plugin: Arc::clone(&shared),
            version: &version,
            options,
        };
        // Exhaustive: a new tier does not compile until it has a backend here.
        let (backend, accepted): (Box<dyn Backend>, Accepted) = match tier.tier {
            Tier::Subinterpreter => boxed(ThreadBackend::start(start)?),
            Tier::Process => boxed(ProcessBackend::start(start)?),
            Tier::Rust => boxed(RustBackend::start(start)?),
        };
        let implemented = accepted
            .implemented
            .iter()
            .map(|&on| AtomicBool::new(on))
            .collect();
        version.record_warnings(accepted.warnings);
        tracing::info!(plugin = %version.source.name, version = %version.source.version, instances = options.instances, "plugin loaded");
        Ok(Self {
            plugin: Arc::new(LoadedPlugin {
                shared,
                tier,
                backend,
                serving: Mutex::new(version),
                implemented,
                argument_shapes,
                instances: options.instances,
                call_timeout: options.call_timeout,
                stream_window: options.stream_window,
                stream_timeout: options.stream_timeout,
                stream_grace: crate::stream::consumer_grace(options.retire_after),
                reloader,
                reloading: Mutex::new(()),
                async_calls: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The interface this plugin was loaded against.
    pub fn descriptor(&self) -> &OwnedInterfaceDescriptor {
        &self.plugin.shared.descriptor
    }

    /// Where the serving version of the plugin was loaded from.
    pub fn source(&self) -> Arc<PluginSource> {
        Arc::clone(&self.plugin.serving().source)
    }

    /// Manifest, origin and signer of the serving version of the plugin.
    pub fn info(&self) -> Arc<PluginInfo> {
        self.plugin.serving().info()
    }

    /// How many instances serve this plugin (as loaded; a retired instance is replaced).
    pub fn instances(&self) -> usize {
        self.plugin.instances
    }

    /// Where this plugin's instances run (sub-interpreters or worker processes), and why.
    pub fn tier(&self) -> &TierChoice {
        &self.plugin.tier
    }

    /// Timeouts, retired instances, detached threads and worker crashes so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            timeouts: self.plugin.shared.timeouts.load(Ordering::Relaxed),
            ..self.plugin.backend.stats()
        }
    }

    /// [`call_typed_json`](PluginCall::call_typed_json) with per-call settings, e.g. a timeout.
    pub fn call_typed_json_with(
        &self,
        method_index: usize,
        args_json: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = options.timeout.unwrap_or(self.plugin.call_timeout);
        self.call(method_index, WireMode::TypedJson, args_json, timeout)
    }

    /// [`call_raw`](PluginCall::call_raw) with per-call settings, e.g. a timeout.
    pub fn call_raw_with(
        &self,
        method_index: usize,
        input: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = options.timeout.unwrap_or(self.plugin.call_timeout);
        self.call(method_index, WireMode::Raw, input, timeout)
    }

    /// The plugin's most recent output lines, oldest first, from all its instances:
    /// `print`, `sys.stdout`, `sys.stderr` and `logging` records (see [`LoadOptions::recent_output_lines`]).
    ///
    /// Every line also went to `tracing` (target `fidius::plugin`) with the fields `plugin`,
    /// `version`, `instance`, `stream` and `logger`. Output is collected when a call (or the load)
    /// finishes; text without a trailing newline waits for the newline or a `flush()`.
    pub fn recent_output(&self) -> Vec<OutputLine> {
        self.plugin.shared.recent_output.snapshot()
    }

    fn call(
        &self,
        index: usize,
        requested: WireMode,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.check(index, requested, payload)?;
        self.run(index, payload, Deadline::after(timeout))
    }

    /// The checks of a one-shot call (sync or async) before it leaves for an instance: those of
    /// every call ([`check_call`](Self::check_call)), and the method does not stream.
    fn check(&self, index: usize, requested: WireMode, payload: &[u8]) -> Result<(), CallError> {
        let method = self.check_call(index, requested, payload)?;
        if method.streams_result || method.streams_argument {
            return Err(CallError::InvalidArguments {
                method: method.name.clone(),
                reason: if method.streams_argument {
                    "the method takes a streamed argument; call it with `call_with_stream_raw` \
                     (or `call_stream_with_stream_raw` when it also streams its result)"
                } else {
                    "the method streams; call it with `call_stream_raw` or `call_stream_typed_json`"
                }
                .to_owned(),
            });
        }
        Ok(())
    }

    /// The checks every call passes before it leaves for an instance: the method exists, has the
    /// requested wire mode and is implemented, and a typed call's arguments fit its types.
    fn check_call(
        &self,
        index: usize,
        requested: WireMode,
        payload: &[u8],
    ) -> Result<&fidius_core::interface::OwnedMethodDescriptor, CallError> {
        let plugin = &*self.plugin;
        let method = shared::method(&plugin.shared.descriptor, index)?;
        if method.wire != requested {
            return Err(CallError::WireModeMismatch {
                method: method.name.clone(),
                actual: method.wire,
                requested,
            });
        }
        if !self.implements(index) {
            return Err(CallError::NotImplemented {
                method: method.name.clone(),
            });
        }
        if requested == WireMode::TypedJson {
            if let Some(shapes) = plugin.argument_shapes.get(index) {
                shapes
                    .check(payload)
                    .map_err(|mismatch| CallError::InvalidArguments {
                        method: method.name.clone(),
                        reason: mismatch.to_string(),
                    })?;
            }
        }
        Ok(method)
    }

    /// Runs a checked call on the backend and counts a timeout.
    fn run(
        &self,
        index: usize,
        payload: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<Vec<u8>, CallError> {
        let _serving = self.serving(index)?;
        let result = self.plugin.backend.call(Call {
            index,
            payload,
            deadline,
        });
        self.count_timeout(&result);
        result
    }

    /// A plugin with host functions may be called from one of them: refused when that would wait
    /// for a call of the same plugin this thread (or its caller) serves. Held while the call runs.
    #[inline]
    fn serving(&self, index: usize) -> Result<Option<chain::Serving>, CallError> {
        let shared = &*self.plugin.shared;
        if shared.host_functions.is_empty() {
            return Ok(None);
        }
        chain::enter(chain::plugin_id(&self.plugin.shared))
            .map(Some)
            .ok_or_else(|| CallError::Reentrant {
                plugin: shared.name.clone(),
                method: shared::method(&shared.descriptor, index)
                    .map_or_else(|_| String::new(), |method| method.name.clone()),
            })
    }

    /// Counts a call that ended with `Timeout`.
    #[inline]
    fn count_timeout<R>(&self, result: &Result<R, CallError>) {
        if matches!(result, Err(CallError::Timeout { .. })) {
            self.plugin.shared.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl LoadedPlugin {
    fn serving(&self) -> MutexGuard<'_, Arc<Version>> {
        // Replaced whole, so a poisoned lock still holds a consistent value.
        self.serving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl PluginCall for PythonPluginHandle {
    fn call_typed_json(&self, method_index: usize, args_json: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(
            method_index,
            WireMode::TypedJson,
            args_json,
            self.plugin.call_timeout,
        )
    }

    fn call_raw(&self, method_index: usize, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(method_index, WireMode::Raw, input, self.plugin.call_timeout)
    }

    fn implements(&self, method_index: usize) -> bool {
        self.plugin
            .implemented
            .get(method_index)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

fn boxed<B: Backend + 'static>((backend, accepted): (B, Accepted)) -> (Box<dyn Backend>, Accepted) {
    (Box::new(backend), accepted)
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        self.backend.shutdown();
    }
}
