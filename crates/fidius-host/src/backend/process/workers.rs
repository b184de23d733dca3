//! The process backend: a set of worker processes, each serving one call at a time. Callers talk
//! to a worker's mailbox directly (no thread in between). A worker that dies or is killed at a
//! deadline is replaced by a thread of its own, started as soon as the death is seen (with back-off
//! when it keeps dying), so no call waits for a restart past its own deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fidius_core::{CallError, WorkerExit};

use crate::backend::process::child::{Attribution, Failure, WorkerProcess};
use crate::backend::process::command::WorkerCommand;
use crate::backend::process::protocol::{self, StartSpec};
use crate::backend::process::template::{ForkRequest, Templates};
use crate::backend::{Backend, BackendStart, Call, Deadline, PoolStats};
use crate::error::LoadError;
use crate::plugin::loader::Accepted;
use crate::plugin::output;
use crate::plugin::shared::PluginShared;
use crate::plugin::version::Version;
use crate::stream::StreamSink;
use crate::stream_input::InputFeed;

/// First wait before restarting a worker that died again without answering a call in between;
/// doubled for each further death, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How process-tier workers are started.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSettings {
    pub(crate) command: WorkerCommand,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) load_timeout: Option<Duration>,
    /// Refuse what the original fidius accepted with a warning (see `LoadOptions::strict`).
    pub(crate) strict: bool,
    /// Start workers by forking a per-set template (see `LoadOptions::worker_template`).
    pub(crate) worker_template: bool,
}

/// Counters for [`PoolStats`](crate::PoolStats).
#[derive(Debug, Default)]
pub(crate) struct ProcessCounters {
    pub(crate) crashes: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// Workers forked from a template.
    pub(crate) forks: AtomicU64,
    /// Times a worker started cold because the template could not give one.
    pub(crate) template_fallbacks: AtomicU64,
}

pub(crate) struct ProcessBackend {
    launcher: Arc<WorkerLauncher>,
    /// The serving set (`None` once shut down); a reload swaps in a new one. Callers hold the set
    /// they took a worker from until they give it back, so an old set ends once its last call
    /// finished.
    current: Mutex<Option<Arc<WorkerSet>>>,
    instances: usize,
}

/// What starting a worker needs; shared with the threads that restart workers in the background.
pub(super) struct WorkerLauncher {
    pub(super) plugin: Arc<PluginShared>,
    settings: ProcessSettings,
    counters: ProcessCounters,
}

/// The workers of one loaded version.
pub(super) struct WorkerSet {
    /// Kept while the set serves (its cache slot, for one).
    _version: Arc<Version>,
    spec: StartSpec,
    slots: Vec<Mutex<WorkerSlot>>,
    /// The set's worker template (after `slots`: it ends after the workers it forked).
    templates: Arc<Templates>,
    /// Indexes of idle slots: taking one is the right to use that slot.
    idle_tx: Sender<usize>,
    idle_rx: Receiver<usize>,
}

/// One instance: its worker process, if running, and its crash history.
pub(super) struct WorkerSlot {
    number: usize,
    pub(super) worker: Option<WorkerProcess>,
    /// Deaths since the last answered call.
    pub(super) deaths: u32,
    /// No restart before this.
    restart_at: Option<Instant>,
    /// Why the last restart failed, for the next caller (who gets it as an error while a new
    /// attempt starts in the background).
    failure: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Gives a slot back to the idle list however the call ends.
pub(super) struct WorkerLease<'a> {
    set: &'a WorkerSet,
    index: usize,
}

impl WorkerLease<'_> {
    /// Hands the slot to a restart thread, which gives it back once the slot has a worker again
    /// (or the attempt failed): meanwhile no caller takes it.
    fn pass_to_restart(self) {
        std::mem::forget(self);
    }
}

impl Drop for WorkerLease<'_> {
    fn drop(&mut self) {
        let _ = self.set.idle_tx.send(self.index);
    }
}

impl ProcessBackend {
    /// Starts the options' number of worker processes (in parallel) and waits until each has
    /// loaded the version.
    pub(crate) fn start(start: BackendStart<'_>) -> Result<(Self, Accepted), LoadError> {
        let BackendStart {
            plugin,
            version,
            options,
        } = start;
        let command =
            options
                .resolved_worker_command()
                .map_err(|source| LoadError::WorkerNotFound {
                    plugin: plugin.name.clone(),
                    source,
                })?;
        let backend = Self {
            launcher: Arc::new(WorkerLauncher {
                plugin,
                settings: ProcessSettings {
                    command,
                    memory_limit: options.memory_limit,
                    load_timeout: options.load_timeout,
                    strict: options.strict,
                    worker_template: options.worker_template,
                },
                counters: ProcessCounters::default(),
            }),
            current: Mutex::new(None),
            instances: options.instances,
        };
        let (set, accepted) = backend.start_set(version)?;
        *backend.lock_current() = Some(Arc::new(set));
        Ok((backend, accepted))
    }

    /// Starts a set of workers of `version`; returns it once every worker loaded it.
    fn start_set(&self, version: &Arc<Version>) -> Result<(WorkerSet, Accepted), LoadError> {
        let launcher = &self.launcher;
        let instances = self.instances;
        let set = WorkerSet::empty(version, launcher);
        let started: Vec<Result<(WorkerProcess, Accepted), LoadError>> =
            std::thread::scope(|scope| {
                let starting: Vec<_> = (0..instances)
                    .map(|number| {
                        let set = &set;
                        scope.spawn(move || launcher.launch(&set.spec, &set.templates, number))
                    })
                    .collect();
                starting
                    .into_iter()
                    .map(|thread| {
                        thread.join().unwrap_or_else(|_| {
                            Err(LoadError::WorkerProtocol {
                                plugin: launcher.plugin.name.clone(),
                                reason: "the thread starting a worker panicked".to_owned(),
                            })
                        })
                    })
                    .collect()
            });
        let mut accepted = Accepted::default();
        let mut slots = Vec::with_capacity(instances);
        let mut first_error = None;
        for (number, started) in started.into_iter().enumerate() {
            match started {
                Ok((worker, this_worker)) => {
                    accepted = this_worker;
                    slots.push(Mutex::new(WorkerSlot {
                        number,
                        worker: Some(worker),
                        deaths: 0,
                        restart_at: None,
                        failure: None,
                    }));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            // The workers that did start are shut down as `slots` drops.
            return Err(error);
        }
        let mut set = set;
        set.slots = slots;
        for index in 0..set.slots.len() {
            let _ = set.idle_tx.send(index);
        }
        Ok((set, accepted))
    }

    /// The set serving calls now.
    fn serving_set(&self) -> Result<Arc<WorkerSet>, CallError> {
        self.lock_current()
            .clone()
            .ok_or_else(|| self.launcher.plugin.unavailable())
    }

    fn lock_current(&self) -> MutexGuard<'_, Option<Arc<WorkerSet>>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live worker processes of the serving set.
    fn running(&self) -> usize {
        let Some(set) = self.lock_current().clone() else {
            return 0;
        };
        set.slots
            .iter()
            .filter(|slot| match slot.try_lock() {
                Ok(slot) => slot.worker.is_some(),
                // In use by a call: it has a worker.
                Err(_) => true,
            })
            .count()
    }
}

impl Backend for ProcessBackend {
    /// Calls the method on the first idle worker.
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, CallError> {
        self.call_fed(call, None)
    }

    fn call_with_input(&self, call: Call<'_>, input: Arc<InputFeed>) -> Result<Vec<u8>, CallError> {
        let result = self.call_fed(call, Some(Arc::clone(&input)));
        input.settle(result)
    }

    fn open_stream_with_input(
        &self,
        call: Call<'_>,
        input: Arc<InputFeed>,
        sink: StreamSink,
    ) -> Result<(), CallError> {
        let set = self.serving_set()?;
        super::stream::spawn(
            Arc::clone(&self.launcher),
            set,
            call.index,
            call.payload.to_vec(),
            Some(input),
            sink,
        )
    }

    fn open_stream(&self, call: Call<'_>, sink: StreamSink) -> Result<(), CallError> {
        let set = self.serving_set()?;
        super::stream::spawn(
            Arc::clone(&self.launcher),
            set,
            call.index,
            call.payload.to_vec(),
            None,
            sink,
        )
    }

    fn reload(&self, version: &Arc<Version>) -> Result<Accepted, LoadError> {
        let (set, accepted) = self.start_set(version)?;
        // The new workers serve from the next call on; the old ones end once their calls did.
        *self.lock_current() = Some(Arc::new(set));
        Ok(accepted)
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            instances: self.running(),
            worker_crashes: self.launcher.counters.crashes.load(Ordering::Relaxed),
            worker_restarts: self.launcher.counters.restarts.load(Ordering::Relaxed),
            worker_forks: self.launcher.counters.forks.load(Ordering::Relaxed),
            worker_template_fallbacks: self
                .launcher
                .counters
                .template_fallbacks
                .load(Ordering::Relaxed),
            ..PoolStats::default()
        }
    }

    fn shutdown(&mut self) {
        // Callers still holding the set finish their calls first; its workers end as it drops.
        self.lock_current().take();
    }
}

impl ProcessBackend {
    /// Runs one call on a worker, serving its pulls of `input` (a streamed argument) meanwhile.
    fn call_fed(
        &self,
        call: Call<'_>,
        input: Option<Arc<InputFeed>>,
    ) -> Result<Vec<u8>, CallError> {
        let (index, deadline) = (call.index, call.deadline);
        let launcher = &self.launcher;
        let set = self.serving_set()?;
        let (lease, mut slot) = launcher.take(&set, deadline, index)?;
        let Some(worker) = slot.worker.as_mut() else {
            return Err(launcher.plugin.unavailable());
        };
        worker.input = input;
        let result = worker.call(
            index,
            call.payload,
            deadline.map(|deadline| deadline.at),
            &launcher.plugin.descriptor,
            &launcher.plugin.host_functions,
        );
        if let Some(worker) = slot.worker.as_mut() {
            worker.input = None;
        }
        match result {
            Ok(bytes) => {
                slot.deaths = 0;
                Ok(bytes)
            }
            Err(Failure::Call(error)) => {
                slot.deaths = 0;
                Err(error)
            }
            Err(failure) => {
                let after = deadline.map_or(Duration::ZERO, |deadline| deadline.after);
                Err(launcher.settle(&set, &mut slot, lease, failure, index, after))
            }
        }
    }
}

impl WorkerLauncher {
    /// Takes an idle slot of `set` that has a live worker, for a call of method `index`: waiting
    /// until one is idle (up to the deadline), replacing an idle worker found dead, and failing with
    /// why when the slot's last restart failed (another attempt starts meanwhile).
    pub(super) fn take<'s>(
        self: &Arc<Self>,
        set: &'s Arc<WorkerSet>,
        deadline: Option<Deadline>,
        index: usize,
    ) -> Result<(WorkerLease<'s>, MutexGuard<'s, WorkerSlot>), CallError> {
        let shared = &*self.plugin;
        let plugin = &shared.name;
        loop {
            let taken = match deadline {
                None => set.idle_rx.recv().ok(),
                Some(deadline) => match set.idle_rx.recv_deadline(deadline.at) {
                    Ok(index) => Some(index),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        return Err(shared.timed_out(index, deadline.after))
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                },
            };
            let lease = WorkerLease {
                set,
                index: taken.ok_or_else(|| shared.unavailable())?,
            };
            let mut slot = set.slots[lease.index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.worker.as_mut().is_some_and(WorkerProcess::has_exited) {
                if let Some(mut gone) = slot.worker.take() {
                    if let Failure::Died { status, .. } = gone.died() {
                        tracing::warn!(plugin = %plugin, instance = slot.number, %status, "idle worker process died; starting a new one");
                    }
                }
                self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                self.buried(&mut slot);
                self.restart(set, &mut slot, lease);
                // Another slot may have a worker; this one is back once its replacement is.
                continue;
            }
            if slot.worker.is_none() {
                // The last restart failed: say why, and try again in the background.
                let source = slot
                    .failure
                    .take()
                    .unwrap_or_else(|| "no worker process".into());
                self.restart(set, &mut slot, lease);
                return Err(CallError::WorkerUnavailable {
                    plugin: plugin.clone(),
                    source,
                });
            }
            return Ok((lease, slot));
        }
    }

    /// What a call (or stream) of method `index` that ended in `failure` (anything but the
    /// plugin's own error) returns; the worker is gone, and a restart begins.
    pub(super) fn settle(
        self: &Arc<Self>,
        set: &Arc<WorkerSet>,
        slot: &mut WorkerSlot,
        lease: WorkerLease<'_>,
        failure: Failure,
        index: usize,
        timeout: Duration,
    ) -> CallError {
        let shared = &*self.plugin;
        let plugin = &shared.name;
        let (status, stderr_tail) = match failure {
            Failure::Call(error) => return error,
            Failure::Deadline => {
                tracing::warn!(plugin = %plugin, instance = slot.number, "call timed out; worker process killed");
                self.buried(slot);
                self.restart(set, slot, lease);
                return shared.timed_out(index, timeout);
            }
            Failure::Died {
                status,
                stderr_tail,
            } => {
                tracing::warn!(plugin = %plugin, instance = slot.number, %status, "worker process died during a call");
                (status, stderr_tail)
            }
            Failure::Protocol(reason) => {
                tracing::error!(plugin = %plugin, instance = slot.number, %reason, "worker process broke the protocol; killed");
                (WorkerExit::ProtocolViolation { reason }, String::new())
            }
        };
        self.counters.crashes.fetch_add(1, Ordering::Relaxed);
        self.buried(slot);
        self.restart(set, slot, lease);
        CallError::WorkerCrashed {
            plugin: plugin.clone(),
            method: shared
                .descriptor
                .method(index)
                .map_or_else(String::new, |method| method.name.clone()),
            status,
            stderr_tail,
        }
    }

    fn launch(
        &self,
        spec: &StartSpec,
        templates: &Templates,
        number: usize,
    ) -> Result<(WorkerProcess, Accepted), LoadError> {
        let attribution = Attribution {
            plugin: spec.plugin.clone(),
            version: spec.version.clone(),
            instance: number,
            recent: Arc::clone(&self.plugin.recent_output),
        };
        let span = tracing::info_span!("plugin_instance", plugin = %spec.plugin, version = %spec.version, instance = number, tier = "process");
        let _entered = span.enter();
        let request = ForkRequest {
            command: &self.settings.command,
            spec,
            descriptor: &self.plugin.descriptor,
            load_timeout: self.settings.load_timeout,
            counters: &self.counters,
        };
        if let Some(forked) = templates.fork(&request, &attribution) {
            return Ok(forked);
        }
        WorkerProcess::start(
            &self.settings.command,
            spec,
            &self.plugin.descriptor,
            attribution,
            self.settings.load_timeout,
        )
    }

    /// Forgets a dead (or killed) worker and sets when it may be restarted: at once after a first
    /// death, later after each further one without an answered call in between.
    fn buried(&self, slot: &mut WorkerSlot) {
        slot.worker = None;
        slot.deaths += 1;
        slot.restart_at = (slot.deaths > 1).then(|| {
            let doublings = (slot.deaths - 2).min(16);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << doublings)
                .min(MAX_BACKOFF);
            Instant::now() + backoff
        });
    }

    /// Starts a replacement worker for `slot` on a thread of its own, after the slot's back-off;
    /// the thread gives the slot back to callers (`lease`) once it has a worker or the attempt
    /// failed. A set that ended meanwhile (the handle dropped, a reload) gets no worker.
    fn restart(
        self: &Arc<Self>,
        set: &Arc<WorkerSet>,
        slot: &mut WorkerSlot,
        lease: WorkerLease<'_>,
    ) {
        let launcher = Arc::clone(self);
        let weak: Weak<WorkerSet> = Arc::downgrade(set);
        let spec = set.spec.clone();
        let templates = Arc::clone(&set.templates);
        let (number, index, restart_at) = (slot.number, lease.index, slot.restart_at);
        let spawned = std::thread::Builder::new()
            .name(format!("fidius:{}#{number}:restart", launcher.plugin.name))
            .spawn(move || {
                if let Some(at) = restart_at {
                    tracing::info!(plugin = %launcher.plugin.name, instance = number, "backing off before restarting the worker process");
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                if weak.strong_count() == 0 {
                    return;
                }
                launcher.counters.restarts.fetch_add(1, Ordering::Relaxed);
                let started = launcher.launch(&spec, &templates, number);
                // Dropping an unwanted worker shuts it down.
                let Some(set) = weak.upgrade() else { return };
                {
                    let mut slot = set.slots[index]
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    match started {
                        Ok((worker, _)) => {
                            slot.worker = Some(worker);
                            slot.restart_at = None;
                            slot.failure = None;
                        }
                        Err(error) => {
                            tracing::warn!(plugin = %launcher.plugin.name, instance = number, %error, "restarting the worker process failed");
                            launcher.buried(&mut slot);
                            slot.failure = Some(Box::new(error));
                        }
                    }
                }
                let _ = set.idle_tx.send(index);
            });
        match spawned {
            Ok(_) => lease.pass_to_restart(),
            // The lease goes back to callers, who are told why there is no worker.
            Err(error) => {
                slot.failure = Some(Box::new(LoadError::Spawn {
                    plugin: self.plugin.name.clone(),
                    source: error,
                }))
            }
        }
    }
}

impl Drop for WorkerSet {
    /// Asks every worker to end before waiting for any, so their shutdown grace periods overlap.
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(worker) = slot.worker.as_mut() {
                worker.request_shutdown();
            }
        }
    }
}

impl WorkerSet {
    /// A set for `version` without workers yet.
    fn empty(version: &Arc<Version>, launcher: &WorkerLauncher) -> Self {
        let (idle_tx, idle_rx) = crossbeam_channel::unbounded();
        let source = &version.source;
        Self {
            _version: Arc::clone(version),
            spec: StartSpec {
                plugin: source.name.clone(),
                version: source.version.clone(),
                dir: source.dir.clone(),
                entry_module: source.entry_module.clone(),
                interface: (*launcher.plugin.descriptor).clone(),
                log_level: output::python_log_level(),
                memory_limit: launcher.settings.memory_limit,
                strict: launcher.settings.strict,
                config: launcher
                    .plugin
                    .config
                    .clone()
                    .map(|value| protocol::Configuration { value }),
                host_functions: launcher.plugin.host_functions.names(),
                bytecode_cache: source.bytecode_cache.clone(),
            },
            slots: Vec::new(),
            templates: Arc::new(Templates::new(launcher.settings.worker_template)),
            idle_tx,
            idle_rx,
        }
    }
}
