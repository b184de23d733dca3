//! A process-tier plugin: a set of worker processes, each serving one call at a time. Callers talk
//! to a worker's mailbox directly (no thread in between). A worker that dies or is killed at a
//! deadline is replaced by a thread of its own, started as soon as the death is seen (with back-off
//! when it keeps dying), so no call waits for a restart past its own deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::PythonInterfaceDescriptor;
use fidius_core::{CallError, WorkerExit};

use crate::error::LoadError;
use crate::process::child::{Attribution, Failure, WorkerProcess};
use crate::process::command::WorkerCommand;
use crate::process::protocol::StartSpec;
use crate::runtime::loader::Accepted;
use crate::runtime::output::{self, RecentOutput};
use crate::runtime::source::PluginSource;

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
}

/// Counters for [`PoolStats`](crate::PoolStats).
#[derive(Debug, Default)]
pub(crate) struct ProcessCounters {
    pub(crate) crashes: AtomicU64,
    pub(crate) restarts: AtomicU64,
}

pub(crate) struct ProcessPool {
    launcher: Arc<Launcher>,
    /// The serving set; a reload swaps in a new one. Callers hold the set they took a worker from
    /// until they give it back, so an old set ends once its last call finished.
    current: Mutex<Arc<WorkerSet>>,
    pub(crate) counters: Arc<ProcessCounters>,
}

/// What starting a worker needs; shared with the threads that restart workers in the background.
struct Launcher {
    plugin: String,
    descriptor: &'static PythonInterfaceDescriptor,
    recent: Arc<RecentOutput>,
    settings: ProcessSettings,
    counters: Arc<ProcessCounters>,
}

/// The workers of one loaded version.
struct WorkerSet {
    spec: StartSpec,
    slots: Vec<Mutex<Slot>>,
    /// Indexes of idle slots: taking one is the right to use that slot.
    idle_tx: Sender<usize>,
    idle_rx: Receiver<usize>,
}

/// One instance: its worker process, if running, and its crash history.
struct Slot {
    number: usize,
    worker: Option<WorkerProcess>,
    /// Deaths since the last answered call.
    deaths: u32,
    /// No restart before this.
    restart_at: Option<Instant>,
    /// Why the last restart failed, for the next caller (who gets it as an error while a new
    /// attempt starts in the background).
    failure: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Gives a slot back to the idle list however the call ends.
struct SlotLease<'a> {
    set: &'a WorkerSet,
    index: usize,
}

impl SlotLease<'_> {
    /// Hands the slot to a restart thread, which gives it back once the slot has a worker again
    /// (or the attempt failed): meanwhile no caller takes it.
    fn pass_to_restart(self) {
        std::mem::forget(self);
    }
}

impl Drop for SlotLease<'_> {
    fn drop(&mut self) {
        let _ = self.set.idle_tx.send(self.index);
    }
}

impl ProcessPool {
    /// Starts `instances` workers of `source` (in parallel) and waits until each loaded it.
    /// Returns the pool and which methods the plugin implements.
    pub(crate) fn start(
        source: &PluginSource,
        descriptor: &'static PythonInterfaceDescriptor,
        instances: usize,
        recent: Arc<RecentOutput>,
        settings: ProcessSettings,
    ) -> Result<(Self, Accepted), LoadError> {
        let counters = Arc::new(ProcessCounters::default());
        let pool = Self {
            launcher: Arc::new(Launcher {
                plugin: source.name.clone(),
                descriptor,
                recent,
                settings,
                counters: Arc::clone(&counters),
            }),
            current: Mutex::new(Arc::new(WorkerSet::empty(source, descriptor, None, false))),
            counters,
        };
        let (set, accepted) = pool.start_set(source, instances)?;
        *pool.lock_current() = Arc::new(set);
        Ok((pool, accepted))
    }

    /// Starts a new set of workers for `source` and, once all loaded, makes it the serving one.
    pub(crate) fn reload(
        &self,
        source: &PluginSource,
        instances: usize,
    ) -> Result<Accepted, LoadError> {
        let (set, accepted) = self.start_set(source, instances)?;
        *self.lock_current() = Arc::new(set);
        Ok(accepted)
    }

    fn start_set(
        &self,
        source: &PluginSource,
        instances: usize,
    ) -> Result<(WorkerSet, Accepted), LoadError> {
        let launcher = &self.launcher;
        let settings = &launcher.settings;
        let set = WorkerSet::empty(
            source,
            launcher.descriptor,
            settings.memory_limit,
            settings.strict,
        );
        let started: Vec<Result<(WorkerProcess, Accepted), LoadError>> =
            std::thread::scope(|scope| {
                let starting: Vec<_> = (0..instances)
                    .map(|number| {
                        let set = &set;
                        scope.spawn(move || launcher.launch(&set.spec, number))
                    })
                    .collect();
                starting
                    .into_iter()
                    .map(|thread| {
                        thread.join().unwrap_or_else(|_| {
                            Err(LoadError::WorkerProtocol {
                                plugin: launcher.plugin.clone(),
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
                    slots.push(Mutex::new(Slot {
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

    fn lock_current(&self) -> MutexGuard<'_, Arc<WorkerSet>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live worker processes of the serving set.
    pub(crate) fn running(&self) -> usize {
        let set = Arc::clone(&self.lock_current());
        set.slots
            .iter()
            .filter(|slot| match slot.try_lock() {
                Ok(slot) => slot.worker.is_some(),
                // In use by a call: it has a worker.
                Err(_) => true,
            })
            .count()
    }

    /// Calls method `index` on the first idle worker.
    pub(crate) fn call(
        &self,
        index: usize,
        payload: &[u8],
        deadline: Option<crate::runtime::instance::Deadline>,
    ) -> Result<Vec<u8>, CallError> {
        let launcher = &self.launcher;
        let plugin = &launcher.plugin;
        let set = Arc::clone(&self.lock_current());
        let method_name = || {
            launcher
                .descriptor
                .method(index)
                .map_or_else(String::new, |method| method.name.to_owned())
        };
        let timed_out = || CallError::Timeout {
            plugin: plugin.clone(),
            method: method_name(),
            after: deadline.map_or(Duration::ZERO, |deadline| deadline.after),
        };
        loop {
            let taken = match deadline {
                None => set.idle_rx.recv().ok(),
                Some(deadline) => match set.idle_rx.recv_deadline(deadline.at) {
                    Ok(index) => Some(index),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Err(timed_out()),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                },
            };
            let lease = SlotLease {
                set: &set,
                index: taken.ok_or_else(|| CallError::Unavailable {
                    plugin: plugin.clone(),
                })?,
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
                launcher.counters.crashes.fetch_add(1, Ordering::Relaxed);
                launcher.buried(&mut slot);
                launcher.restart(&set, &mut slot, lease);
                // Another slot may have a worker; this one is back once its replacement is.
                continue;
            }
            let Some(worker) = slot.worker.as_mut() else {
                // The last restart failed: say why, and try again in the background.
                let source = slot
                    .failure
                    .take()
                    .unwrap_or_else(|| "no worker process".into());
                launcher.restart(&set, &mut slot, lease);
                return Err(CallError::WorkerUnavailable {
                    plugin: plugin.clone(),
                    source,
                });
            };
            let result = worker.call(
                index,
                payload,
                deadline.map(|deadline| deadline.at),
                launcher.descriptor,
            );
            return match result {
                Ok(bytes) => {
                    slot.deaths = 0;
                    Ok(bytes)
                }
                Err(Failure::Call(error)) => {
                    slot.deaths = 0;
                    Err(error)
                }
                Err(Failure::Deadline) => {
                    tracing::warn!(plugin = %plugin, instance = slot.number, "call timed out; worker process killed");
                    launcher.buried(&mut slot);
                    launcher.restart(&set, &mut slot, lease);
                    Err(timed_out())
                }
                Err(Failure::Died {
                    status,
                    stderr_tail,
                }) => {
                    launcher.counters.crashes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin = %plugin, instance = slot.number, %status, "worker process died during a call");
                    launcher.buried(&mut slot);
                    launcher.restart(&set, &mut slot, lease);
                    Err(CallError::WorkerCrashed {
                        plugin: plugin.clone(),
                        method: method_name(),
                        status,
                        stderr_tail,
                    })
                }
                Err(Failure::Protocol(reason)) => {
                    launcher.counters.crashes.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(plugin = %plugin, instance = slot.number, %reason, "worker process broke the protocol; killed");
                    launcher.buried(&mut slot);
                    launcher.restart(&set, &mut slot, lease);
                    Err(CallError::WorkerCrashed {
                        plugin: plugin.clone(),
                        method: method_name(),
                        status: WorkerExit::ProtocolViolation { reason },
                        stderr_tail: String::new(),
                    })
                }
            };
        }
    }
}

impl Launcher {
    fn launch(
        &self,
        spec: &StartSpec,
        number: usize,
    ) -> Result<(WorkerProcess, Accepted), LoadError> {
        let attribution = Attribution {
            plugin: spec.plugin.clone(),
            version: spec.version.clone(),
            instance: number,
            recent: Arc::clone(&self.recent),
        };
        let span = tracing::info_span!("plugin_instance", plugin = %spec.plugin, version = %spec.version, instance = number, tier = "process");
        let _entered = span.enter();
        WorkerProcess::start(
            &self.settings.command,
            spec,
            self.descriptor,
            attribution,
            self.settings.load_timeout,
        )
    }

    /// Forgets a dead (or killed) worker and sets when it may be restarted: at once after a first
    /// death, later after each further one without an answered call in between.
    fn buried(&self, slot: &mut Slot) {
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
    fn restart(self: &Arc<Self>, set: &Arc<WorkerSet>, slot: &mut Slot, lease: SlotLease<'_>) {
        let launcher = Arc::clone(self);
        let weak: Weak<WorkerSet> = Arc::downgrade(set);
        let spec = set.spec.clone();
        let (number, index, restart_at) = (slot.number, lease.index, slot.restart_at);
        let spawned = std::thread::Builder::new()
            .name(format!("fidius:{}#{number}:restart", launcher.plugin))
            .spawn(move || {
                if let Some(at) = restart_at {
                    tracing::info!(plugin = %launcher.plugin, instance = number, "backing off before restarting the worker process");
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                if weak.strong_count() == 0 {
                    return;
                }
                launcher.counters.restarts.fetch_add(1, Ordering::Relaxed);
                let started = launcher.launch(&spec, number);
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
                            tracing::warn!(plugin = %launcher.plugin, instance = number, %error, "restarting the worker process failed");
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
                    plugin: self.plugin.clone(),
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
    fn empty(
        source: &PluginSource,
        descriptor: &PythonInterfaceDescriptor,
        memory_limit: Option<u64>,
        strict: bool,
    ) -> Self {
        let (idle_tx, idle_rx) = crossbeam_channel::unbounded();
        Self {
            spec: StartSpec {
                plugin: source.name.clone(),
                version: source.version.clone(),
                dir: source.dir.clone(),
                entry_module: source.entry_module.clone(),
                interface: descriptor.into(),
                log_level: output::python_log_level(),
                memory_limit,
                strict,
            },
            slots: Vec::new(),
            idle_tx,
            idle_rx,
        }
    }
}
