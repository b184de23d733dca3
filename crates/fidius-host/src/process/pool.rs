//! A process-tier plugin: a set of worker processes, each serving one call at a time. Callers talk
//! to a worker's mailbox directly (no thread in between); a worker that dies or times out is
//! replaced at the next call, with back-off when it keeps dying.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::PythonInterfaceDescriptor;
use fidius_core::CallError;

use crate::error::LoadError;
use crate::process::child::{Attribution, Failure, WorkerProcess};
use crate::process::command::WorkerCommand;
use crate::process::protocol::StartSpec;
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
}

/// Counters for [`PoolStats`](crate::PoolStats).
#[derive(Debug, Default)]
pub(crate) struct ProcessCounters {
    pub(crate) crashes: AtomicU64,
    pub(crate) restarts: AtomicU64,
}

pub(crate) struct ProcessPool {
    plugin: String,
    descriptor: &'static PythonInterfaceDescriptor,
    recent: Arc<RecentOutput>,
    settings: ProcessSettings,
    /// The serving set; a reload swaps in a new one. Callers hold the set they took a worker from
    /// until they give it back, so an old set ends once its last call finished.
    current: Mutex<Arc<WorkerSet>>,
    pub(crate) counters: ProcessCounters,
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
}

/// Gives a slot back to the idle list however the call ends.
struct SlotLease<'a> {
    set: &'a WorkerSet,
    index: usize,
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
    ) -> Result<(Self, Vec<bool>), LoadError> {
        let pool = Self {
            plugin: source.name.clone(),
            descriptor,
            recent,
            settings,
            current: Mutex::new(Arc::new(WorkerSet::empty(source, descriptor, None))),
            counters: ProcessCounters::default(),
        };
        let (set, implemented) = pool.start_set(source, instances)?;
        *pool.lock_current() = Arc::new(set);
        Ok((pool, implemented))
    }

    /// Starts a new set of workers for `source` and, once all loaded, makes it the serving one.
    pub(crate) fn reload(
        &self,
        source: &PluginSource,
        instances: usize,
    ) -> Result<Vec<bool>, LoadError> {
        let (set, implemented) = self.start_set(source, instances)?;
        *self.lock_current() = Arc::new(set);
        Ok(implemented)
    }

    fn start_set(
        &self,
        source: &PluginSource,
        instances: usize,
    ) -> Result<(WorkerSet, Vec<bool>), LoadError> {
        let set = WorkerSet::empty(source, self.descriptor, self.settings.memory_limit);
        let started: Vec<Result<(WorkerProcess, Vec<bool>), LoadError>> =
            std::thread::scope(|scope| {
                let starting: Vec<_> = (0..instances)
                    .map(|number| {
                        let set = &set;
                        scope.spawn(move || self.launch(set, number))
                    })
                    .collect();
                starting
                    .into_iter()
                    .map(|thread| {
                        thread.join().unwrap_or_else(|_| {
                            Err(LoadError::WorkerProtocol {
                                plugin: self.plugin.clone(),
                                reason: "the thread starting a worker panicked".to_owned(),
                            })
                        })
                    })
                    .collect()
            });
        let mut implemented = Vec::new();
        let mut slots = Vec::with_capacity(instances);
        let mut first_error = None;
        for (number, started) in started.into_iter().enumerate() {
            match started {
                Ok((worker, methods)) => {
                    implemented = methods;
                    slots.push(Mutex::new(Slot {
                        number,
                        worker: Some(worker),
                        deaths: 0,
                        restart_at: None,
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
        Ok((set, implemented))
    }

    fn launch(
        &self,
        set: &WorkerSet,
        number: usize,
    ) -> Result<(WorkerProcess, Vec<bool>), LoadError> {
        let attribution = Attribution {
            plugin: set.spec.plugin.clone(),
            version: set.spec.version.clone(),
            instance: number,
            recent: Arc::clone(&self.recent),
        };
        let span = tracing::info_span!("plugin_instance", plugin = %set.spec.plugin, version = %set.spec.version, instance = number, tier = "process");
        let _entered = span.enter();
        WorkerProcess::start(
            &self.settings.command,
            &set.spec,
            self.descriptor,
            attribution,
            self.settings.load_timeout,
        )
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
        let set = Arc::clone(&self.lock_current());
        let method_name = || {
            self.descriptor
                .method(index)
                .map_or_else(String::new, |method| method.name.to_owned())
        };
        let timed_out = || CallError::Timeout {
            plugin: self.plugin.clone(),
            method: method_name(),
            after: deadline.map_or(Duration::ZERO, |deadline| deadline.after),
        };
        let taken = match deadline {
            None => set.idle_rx.recv().ok(),
            Some(deadline) => match set.idle_rx.recv_deadline(deadline.at) {
                Ok(index) => Some(index),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Err(timed_out()),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
            },
        };
        let taken = SlotLease {
            set: &set,
            index: taken.ok_or_else(|| CallError::Unavailable {
                plugin: self.plugin.clone(),
            })?,
        };
        let mut slot = set.slots[taken.index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let worker = match self.ready_worker(&set, &mut slot, deadline.map(|deadline| deadline.at))
        {
            Ok(worker) => worker,
            Err(Unready::Timeout) => return Err(timed_out()),
            Err(Unready::Failed(reason)) => {
                return Err(CallError::WorkerUnavailable {
                    plugin: self.plugin.clone(),
                    reason,
                })
            }
        };
        let result = worker.call(
            index,
            payload,
            deadline.map(|deadline| deadline.at),
            self.descriptor,
        );
        match result {
            Ok(bytes) => {
                slot.deaths = 0;
                Ok(bytes)
            }
            Err(Failure::Call(error)) => {
                slot.deaths = 0;
                Err(error)
            }
            Err(Failure::Deadline) => {
                tracing::warn!(plugin = %self.plugin, instance = slot.number, "call timed out; worker process killed");
                slot.worker = None;
                Err(timed_out())
            }
            Err(Failure::Died {
                status,
                stderr_tail,
            }) => {
                self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %self.plugin, instance = slot.number, %status, "worker process died during a call");
                self.buried(&mut slot);
                Err(CallError::WorkerCrashed {
                    plugin: self.plugin.clone(),
                    method: method_name(),
                    status,
                    stderr_tail,
                })
            }
            Err(Failure::Protocol(reason)) => {
                self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(plugin = %self.plugin, instance = slot.number, %reason, "worker process broke the protocol; killed");
                self.buried(&mut slot);
                Err(CallError::WorkerCrashed {
                    plugin: self.plugin.clone(),
                    method: method_name(),
                    status: format!("killed after a protocol error: {reason}"),
                    stderr_tail: String::new(),
                })
            }
        }
    }

    /// Forgets a dead worker and schedules its restart: at once after a first death, later after
    /// each further one without an answered call in between.
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

    /// The slot's worker, started first if it has none (or it died while idle).
    fn ready_worker<'s>(
        &self,
        set: &WorkerSet,
        slot: &'s mut Slot,
        deadline: Option<Instant>,
    ) -> Result<&'s mut WorkerProcess, Unready> {
        if slot.worker.as_mut().is_some_and(WorkerProcess::has_exited) {
            if let Some(mut gone) = slot.worker.take() {
                if let Failure::Died { status, .. } = gone.died() {
                    tracing::warn!(plugin = %self.plugin, instance = slot.number, %status, "idle worker process died; starting a new one");
                }
            }
            self.counters.crashes.fetch_add(1, Ordering::Relaxed);
            self.buried(slot);
        }
        if slot.worker.is_none() {
            if let Some(at) = slot.restart_at {
                if let Some(deadline) = deadline.filter(|deadline| *deadline < at) {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    return Err(Unready::Timeout);
                }
                tracing::info!(plugin = %self.plugin, instance = slot.number, deaths = slot.deaths, "backing off before restarting the worker process");
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
            self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            match self.launch(set, slot.number) {
                Ok((worker, _)) => {
                    slot.restart_at = None;
                    slot.worker = Some(worker);
                }
                Err(error) => {
                    self.buried(slot);
                    return Err(Unready::Failed(error.to_string()));
                }
            }
        }
        slot.worker
            .as_mut()
            .ok_or(Unready::Failed("no worker".to_owned()))
    }
}

/// Why a slot has no worker to call.
enum Unready {
    /// Backing off past the call's deadline.
    Timeout,
    /// Starting one failed.
    Failed(String),
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
            },
            slots: Vec::new(),
            idle_tx,
            idle_rx,
        }
    }
}
