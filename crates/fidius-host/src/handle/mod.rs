//! The handle a host calls a loaded Python plugin through.

mod reload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) use reload::Reloader;
use reload::Version;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use fidius_core::interface::{ArgumentShapes, PythonInterfaceDescriptor, WireMode};
use fidius_core::{CallError, PluginCall};

use crate::error::LoadError;
use crate::options::{CallOptions, LoadOptions};
use crate::process::pool::{ProcessPool, ProcessSettings};
use crate::runtime::generation;
use crate::runtime::instance::{Deadline, Reply, ReplyTo, Request};
use crate::runtime::output::OutputLine;
use crate::runtime::pool::{PoolSettings, PoolShared, PoolStats};
use crate::runtime::source::PluginSource;
use crate::runtime::wait;
use crate::tier::{self, Tier, TierChoice};

/// A loaded plugin: a pool of instances fed from one queue.
///
/// Cheap to clone (clones share the pool); `Send + Sync`, and every call takes `&self`, so any number
/// of host threads may call at once: each call goes to whichever instance is idle first. Dropping the
/// last clone lets the instances finish the calls already queued, ends their interpreters on their
/// own threads and joins the threads (an instance stuck past a call's timeout is retired and
/// detached instead; see [`LoadOptions::call_timeout`]).
#[derive(Clone)]
pub struct PythonPluginHandle {
    pool: Arc<Pool>,
}

/// A handle that does not keep its plugin loaded (for the host's registry of loaded plugins).
#[derive(Clone)]
pub(crate) struct WeakPluginHandle {
    pool: std::sync::Weak<Pool>,
}

impl WeakPluginHandle {
    pub(crate) fn upgrade(&self) -> Option<PythonPluginHandle> {
        self.pool.upgrade().map(|pool| PythonPluginHandle { pool })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.pool.strong_count() > 0
    }
}

/// Where a loaded plugin came from.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The package manifest (absent when started from a bare [`PluginSource`]).
    pub manifest: Option<fidius_core::manifest::Manifest>,
    /// The plugin directory or `.fid` file it was loaded from.
    pub path: std::path::PathBuf,
    /// The trusted key whose signature verified, if any.
    pub signer: Option<fidius_core::signing::KeyFingerprint>,
    /// What the original fidius tool accepted and this version was loaded with (each also logged
    /// as a warning); empty for a plugin written for fidius. [`LoadOptions::strict`] refuses them.
    pub warnings: Vec<crate::LoadWarning>,
    /// Keeps the cache slot an archive was unpacked into from being pruned while this version runs.
    pub(crate) _cache_lease: Option<std::sync::Arc<crate::host::SlotLease>>,
}

struct Pool {
    shared: Arc<PoolShared>,
    /// Where the instances run, and why.
    tier: TierChoice,
    /// The worker processes, in the process tier (the thread pool in `shared` then has no
    /// instances).
    processes: Option<ProcessPool>,
    /// The loaded version and every version reloads brought in since, newest last.
    versions: Version,
    /// Which descriptor methods the serving version defines (optional ones may be absent).
    implemented: Box<[AtomicBool]>,
    /// Each method's argument types, parsed once from the descriptor: typed calls are checked
    /// against them before they reach the plugin.
    argument_shapes: Box<[ArgumentShapes]>,
    instances: usize,
    call_timeout: Option<Duration>,
    /// How a reload finds and verifies the package again (set by `PluginHost`).
    reloader: Option<Reloader>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// `None` only while dropping.
    requests: Option<Sender<Request>>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PythonPluginHandle>();
};

impl PythonPluginHandle {
    pub(crate) fn downgrade(&self) -> WeakPluginHandle {
        WeakPluginHandle {
            pool: Arc::downgrade(&self.pool),
        }
    }

    /// Starts `options`' number of instances of the plugin at `source` and waits until each has
    /// imported it and checked it against `descriptor`.
    ///
    /// The caller is responsible for what must happen before any plugin code runs (manifest and
    /// signature checks); `PluginHost` does that.
    pub fn start(
        source: PluginSource,
        descriptor: &'static PythonInterfaceDescriptor,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let info = PluginInfo {
            manifest: None,
            path: source.dir.clone(),
            signer: None,
            warnings: Vec::new(),
            _cache_lease: None,
        };
        Self::start_with_info(source, descriptor, options, info, None)
    }

    pub(crate) fn start_with_info(
        source: PluginSource,
        descriptor: &'static PythonInterfaceDescriptor,
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
        let manifest_isolation = info
            .manifest
            .as_ref()
            .and_then(|manifest| manifest.python.as_ref())
            .map(|python| python.isolation);
        let tier = tier::decide(&source, manifest_isolation, options)?;
        let (requests, queue) = crossbeam_channel::unbounded();
        let serving = Arc::new(source.clone());
        let shared = PoolShared::new(
            Arc::clone(&serving),
            descriptor,
            (requests.clone(), queue),
            PoolSettings {
                recent_output_lines: options.recent_output_lines,
                load_timeout: options.load_timeout,
                strict: options.strict,
                retire_after: options.retire_after,
            },
        );
        let mut pool = Pool {
            shared: Arc::clone(&shared),
            tier: tier.clone(),
            processes: None,
            versions: Version {
                source,
                info,
                next: OnceLock::new(),
            },
            implemented: Box::default(),
            argument_shapes: descriptor
                .methods
                .iter()
                .map(ArgumentShapes::for_method)
                .collect(),
            instances: options.instances,
            call_timeout: options.call_timeout,
            reloader,
            reloading: Mutex::new(()),
            requests: Some(requests),
        };
        let accepted = match tier.tier {
            Tier::Process => {
                let command = options.resolved_worker_command().map_err(|source| {
                    LoadError::WorkerNotFound {
                        plugin: serving.name.clone(),
                        source,
                    }
                })?;
                let settings = ProcessSettings {
                    command,
                    memory_limit: options.memory_limit,
                    load_timeout: options.load_timeout,
                    strict: options.strict,
                };
                let (processes, accepted) = ProcessPool::start(
                    &serving,
                    descriptor,
                    options.instances,
                    Arc::clone(&shared.recent_output),
                    settings,
                )?;
                pool.processes = Some(processes);
                accepted
            }
            // On error `pool` drops here, which stops and joins the instances that did start.
            _ => generation::start(&shared, &serving, 0, options.instances, false)?.accepted,
        };
        pool.implemented = accepted
            .implemented
            .iter()
            .map(|&on| AtomicBool::new(on))
            .collect();
        record_warnings(&serving, &mut pool.versions.info, accepted.warnings);
        tracing::info!(plugin = %serving.name, version = %serving.version, instances = options.instances, "plugin loaded");
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// The interface this plugin was loaded against.
    pub fn descriptor(&self) -> &'static PythonInterfaceDescriptor {
        self.pool.shared.descriptor
    }

    /// Where the serving version of the plugin was loaded from.
    pub fn source(&self) -> &PluginSource {
        &self.pool.versions.latest().source
    }

    /// Manifest, origin and signer of the serving version of the plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.pool.versions.latest().info
    }

    /// How many instances serve this plugin (as loaded; a retired instance is replaced).
    pub fn instances(&self) -> usize {
        self.pool.instances
    }

    /// Where this plugin's instances run (sub-interpreters or worker processes), and why.
    pub fn tier(&self) -> &TierChoice {
        &self.pool.tier
    }

    /// Timeouts, retired instances, detached threads and worker crashes so far.
    pub fn stats(&self) -> PoolStats {
        let mut stats = self.pool.shared.stats();
        if let Some(processes) = &self.pool.processes {
            stats.instances = processes.running();
            stats.worker_crashes = processes.counters.crashes.load(Ordering::Relaxed);
            stats.worker_restarts = processes.counters.restarts.load(Ordering::Relaxed);
        }
        stats
    }

    /// [`call_typed_json`](PluginCall::call_typed_json) with per-call settings, e.g. a timeout.
    pub fn call_typed_json_with(
        &self,
        method_index: usize,
        args_json: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = options.timeout.unwrap_or(self.pool.call_timeout);
        self.call(method_index, WireMode::TypedJson, args_json, timeout)
    }

    /// [`call_raw`](PluginCall::call_raw) with per-call settings, e.g. a timeout.
    pub fn call_raw_with(
        &self,
        method_index: usize,
        input: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = options.timeout.unwrap_or(self.pool.call_timeout);
        self.call(method_index, WireMode::Raw, input, timeout)
    }

    /// The plugin's most recent output lines, oldest first, from all its instances:
    /// `print`, `sys.stdout`, `sys.stderr` and `logging` records (see [`LoadOptions::recent_output_lines`]).
    ///
    /// Every line also went to `tracing` (target `fidius::plugin`) with the fields `plugin`,
    /// `version`, `instance`, `stream` and `logger`. Output is collected when a call (or the load)
    /// finishes; text without a trailing newline waits for the newline or a `flush()`.
    pub fn recent_output(&self) -> Vec<OutputLine> {
        self.pool.shared.recent_output.snapshot()
    }

    fn call(
        &self,
        index: usize,
        requested: WireMode,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let pool = &*self.pool;
        let method = pool
            .shared
            .descriptor
            .method(index)
            .ok_or(CallError::UnknownMethod {
                interface: pool.shared.descriptor.trait_name,
                index,
            })?;
        if method.wire != requested {
            return Err(CallError::WireModeMismatch {
                method: method.name.to_owned(),
                actual: method.wire,
                requested,
            });
        }
        if !pool
            .implemented
            .get(index)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            return Err(CallError::NotImplemented {
                method: method.name.to_owned(),
            });
        }
        if requested == WireMode::TypedJson {
            if let Some(shapes) = pool.argument_shapes.get(index) {
                shapes
                    .check(payload)
                    .map_err(|mismatch| CallError::InvalidArguments {
                        method: method.name.to_owned(),
                        reason: mismatch.to_string(),
                    })?;
            }
        }
        let unavailable = || CallError::Unavailable {
            plugin: pool.shared.name.clone(),
        };
        // Calls without a timeout never read the clock. A timeout too large to represent is none.
        let deadline = timeout.and_then(|after| {
            let at = Instant::now().checked_add(after)?;
            Some(Deadline { at, after })
        });
        if let Some(processes) = &pool.processes {
            let result = processes.call(index, payload, deadline);
            if matches!(result, Err(CallError::Timeout { .. })) {
                pool.shared.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            return result;
        }
        let requests = pool.requests.as_ref().ok_or_else(unavailable)?;
        REPLIES.with(|replies| {
            let call_id = replies.next_call_id();
            requests
                .send(Request {
                    method: index,
                    payload: payload.to_vec(),
                    reply: ReplyTo::new(replies.sender.clone(), call_id),
                    deadline,
                })
                .map_err(|_| unavailable())?;
            loop {
                // Never disconnected: this thread's own sender keeps the channel open, and an
                // instance that drops a request unanswered still replies (see `ReplyTo`).
                let reply = match deadline {
                    None => wait::recv(&replies.receiver, wait::SPIN_BEFORE_PARKING)
                        .map_err(|_| unavailable())?,
                    Some(deadline) => {
                        match wait::recv_deadline(
                            &replies.receiver,
                            wait::SPIN_BEFORE_PARKING,
                            deadline.at,
                        ) {
                            Ok(reply) => reply,
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                                pool.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                                return Err(CallError::Timeout {
                                    plugin: pool.shared.name.clone(),
                                    method: method.name.to_owned(),
                                    after: deadline.after,
                                });
                            }
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                                return Err(unavailable())
                            }
                        }
                    }
                };
                if reply.call_id == call_id {
                    let result = reply.result.unwrap_or_else(|| Err(unavailable()));
                    if matches!(result, Err(CallError::Timeout { .. })) {
                        pool.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    return result;
                }
                // A reply to a call this thread stopped waiting for; drop it.
            }
        })
    }
}

/// Each calling thread's reply channel, reused for every call it makes (creating a channel per call
/// would cost an allocation on the fast path).
struct ReplyChannel {
    sender: Sender<Reply>,
    receiver: crossbeam_channel::Receiver<Reply>,
    last_call_id: std::cell::Cell<u64>,
}

impl ReplyChannel {
    fn next_call_id(&self) -> u64 {
        let id = self.last_call_id.get().wrapping_add(1);
        self.last_call_id.set(id);
        id
    }
}

thread_local! {
    static REPLIES: ReplyChannel = {
        let (sender, receiver) = crossbeam_channel::unbounded();
        ReplyChannel { sender, receiver, last_call_id: std::cell::Cell::new(0) }
    };
}

impl PluginCall for PythonPluginHandle {
    fn call_typed_json(&self, method_index: usize, args_json: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(
            method_index,
            WireMode::TypedJson,
            args_json,
            self.pool.call_timeout,
        )
    }

    fn call_raw(&self, method_index: usize, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(method_index, WireMode::Raw, input, self.pool.call_timeout)
    }

    fn implements(&self, method_index: usize) -> bool {
        self.pool
            .implemented
            .get(method_index)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue lets each worker finish what is queued, then end its interpreter.
        self.requests = None;
        self.shared.wait_for_workers();
    }
}

/// Logs, once per load, what a plugin was accepted with, and keeps it in its [`PluginInfo`].
pub(crate) fn record_warnings(
    source: &PluginSource,
    info: &mut PluginInfo,
    warnings: Vec<crate::LoadWarning>,
) {
    for warning in warnings {
        tracing::warn!(plugin = %source.name, version = %source.version, %warning, "loaded as the original fidius would (LoadOptions::strict refuses this)");
        if !info.warnings.contains(&warning) {
            info.warnings.push(warning);
        }
    }
}
