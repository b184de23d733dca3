//! The part of a plugin's pool that its workers and the watchdog share: where the plugin comes from,
//! the live worker threads, and what happened to instances that had to be given up on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::PythonInterfaceDescriptor;

use crate::error::LoadError;
use crate::runtime::instance::{self, Request, Started};
use crate::runtime::output::RecentOutput;
use crate::runtime::source::PluginSource;
use crate::runtime::watchdog::CallSlot;

/// Counters of a plugin's pool, from [`PythonPluginHandle::stats`](crate::PythonPluginHandle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Instances serving calls now.
    pub instances: usize,
    /// Calls that ended with [`CallError::Timeout`](crate::CallError::Timeout).
    pub timeouts: u64,
    /// Instances given up on because they did not come back from an interrupted call (or load)
    /// within the grace period; each was replaced by a fresh instance.
    pub retired_instances: u64,
    /// Threads of retired instances that are still running (stuck in C code), detached from the
    /// pool. Each holds its interpreter's memory until the code it is stuck in returns.
    pub detached_threads: u64,
    /// Process tier: worker processes that died (crashed, exited, were killed for memory) or
    /// broke the protocol. Workers killed at a call's timeout count under `timeouts` instead.
    pub worker_crashes: u64,
    /// Process tier: worker processes started to replace one that died, timed out or was killed.
    pub worker_restarts: u64,
}

pub(crate) struct PoolShared {
    /// The plugin's name (the same for every version a reload brings in).
    pub(crate) name: String,
    pub(crate) descriptor: &'static PythonInterfaceDescriptor,
    pub(crate) recent_output: Arc<RecentOutput>,
    pub(crate) queue: Receiver<Request>,
    pub(crate) load_timeout: Option<Duration>,
    /// Refuse what the original fidius accepted with a warning (see `LoadOptions::strict`).
    pub(crate) strict: bool,
    pub(crate) retire_after: Duration,
    workers: Mutex<Workers>,
    /// Signalled whenever a worker exits or is detached.
    changed: Condvar,
    pub(crate) timeouts: AtomicU64,
    retired: AtomicU64,
    detached_running: AtomicU64,
    /// The generation that serves calls. A reload starts a newer one; an instance of an older
    /// generation hands the next request it takes back to the queue and ends.
    pub(crate) generation: AtomicU64,
    /// Puts a request back on the queue (an older instance stepping aside). `None` once the handle
    /// is being dropped, so the queue can disconnect.
    requeue: Mutex<Option<Sender<Request>>>,
}

struct Workers {
    live: Vec<Worker>,
    next_number: usize,
    /// The handle is being dropped: retired instances are not replaced any more.
    closing: bool,
    /// What a replacement for a retired instance loads: the serving generation's package.
    current: Arc<PluginSource>,
    /// The serving generation's signal; replaced (which disconnects it) when a newer one serves.
    serving: GenerationSignal,
}

/// Tells a generation's instances when a newer generation serves: nothing is ever sent; the
/// channel disconnects when the pool drops `_keep`, which wakes every instance parked on `watch`
/// at once (a request on the shared queue would reach only one, maybe of the new generation).
#[derive(Clone)]
pub(crate) struct GenerationSignal {
    _keep: Sender<()>,
    pub(crate) watch: Receiver<()>,
}

impl GenerationSignal {
    pub(crate) fn new() -> Self {
        let (keep, watch) = crossbeam_channel::bounded(0);
        Self { _keep: keep, watch }
    }
}

struct Worker {
    slot: Arc<CallSlot>,
    thread: JoinHandle<()>,
    exited: bool,
    generation: u64,
}

/// Which package a new worker loads, for which generation, and who waits for it.
pub(crate) struct WorkerStart {
    pub(crate) source: Arc<PluginSource>,
    pub(crate) generation: u64,
    /// Hears once the instance has loaded (initial and reloaded instances); replacements for retired
    /// instances have nobody waiting.
    pub(crate) started: Option<Sender<Started>>,
    /// When given, the loaded instance waits for a message here before serving (a reload releases
    /// its instances only once all loaded); a disconnect ends it unused.
    pub(crate) go: Option<Receiver<()>>,
    /// Disconnects once a newer generation serves (or this one's reload was abandoned).
    pub(crate) superseded: Receiver<()>,
}

/// How [`PoolShared::new`] is configured.
pub(crate) struct PoolSettings {
    pub(crate) recent_output_lines: usize,
    pub(crate) load_timeout: Option<Duration>,
    /// Refuse what the original fidius accepted with a warning (see `LoadOptions::strict`).
    pub(crate) strict: bool,
    pub(crate) retire_after: Duration,
}

impl PoolShared {
    pub(crate) fn new(
        source: Arc<PluginSource>,
        descriptor: &'static PythonInterfaceDescriptor,
        (requeue, queue): (Sender<Request>, Receiver<Request>),
        settings: PoolSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: source.name.clone(),
            descriptor,
            recent_output: Arc::new(RecentOutput::new(settings.recent_output_lines)),
            queue,
            load_timeout: settings.load_timeout,
            strict: settings.strict,
            retire_after: settings.retire_after,
            workers: Mutex::new(Workers {
                live: Vec::new(),
                next_number: 0,
                closing: false,
                current: source,
                serving: GenerationSignal::new(),
            }),
            changed: Condvar::new(),
            timeouts: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            detached_running: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            requeue: Mutex::new(Some(requeue)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Workers> {
        // Each update leaves the list consistent, so a poisoned lock is still usable.
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts one more instance.
    pub(crate) fn spawn_worker(self: &Arc<Self>, start: WorkerStart) -> Result<(), LoadError> {
        let mut workers = self.lock();
        let number = workers.next_number;
        workers.next_number += 1;
        let slot = CallSlot::new(Arc::downgrade(self), self.retire_after);
        let generation = start.generation;
        let thread = instance::spawn(Arc::clone(self), number, Arc::clone(&slot), start)?;
        workers.live.push(Worker {
            slot,
            thread,
            exited: false,
            generation,
        });
        Ok(())
    }

    /// The signal of the serving generation, for instances started for it.
    pub(crate) fn serving_signal(&self) -> GenerationSignal {
        self.lock().serving.clone()
    }

    /// Makes `generation` (loaded from `source`, watching `signal`) the one that serves: from now
    /// on instances of older generations step aside (idle ones wake and end at once, busy ones
    /// when their call returns), and retired instances are replaced from `source`.
    pub(crate) fn promote(
        &self,
        source: Arc<PluginSource>,
        generation: u64,
        signal: GenerationSignal,
    ) {
        let mut workers = self.lock();
        workers.current = source;
        self.generation.store(generation, Ordering::Release);
        // Dropping the old generation's last sender wakes its parked instances.
        workers.serving = signal;
        // Instances that ended since the last look (older generations, aborted reloads).
        let (exited, live): (Vec<Worker>, Vec<Worker>) =
            workers.live.drain(..).partition(|worker| worker.exited);
        workers.live = live;
        for worker in exited {
            let _ = worker.thread.join();
        }
    }

    /// Hands a request an older instance took back to the queue; if the handle is being dropped
    /// the request is dropped, which answers its caller with `Unavailable`.
    pub(crate) fn requeue(&self, request: Request) {
        let requeue = self
            .requeue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(requeue) = requeue.as_ref() {
            let _ = requeue.send(request);
        }
    }

    /// The last thing a worker thread does.
    pub(crate) fn worker_exited(&self, slot: &Arc<CallSlot>) {
        let mut workers = self.lock();
        match workers
            .live
            .iter_mut()
            .find(|worker| Arc::ptr_eq(&worker.slot, slot))
        {
            Some(worker) => worker.exited = true,
            // Detached earlier: one stuck thread fewer.
            None => {
                self.detached_running.fetch_sub(1, Ordering::Relaxed);
            }
        }
        drop(workers);
        self.changed.notify_all();
    }

    /// Gives up on the instance behind `slot` (the watchdog decided it is stuck): detaches its thread
    /// and starts a replacement unless the pool is closing.
    pub(crate) fn retire(self: &Arc<Self>, slot: &Arc<CallSlot>) {
        let closing = {
            let mut workers = self.lock();
            if !self.detach(&mut workers, slot) {
                return;
            }
            workers.closing
        };
        tracing::warn!(
            plugin = %self.name,
            grace = ?self.retire_after,
            "an instance did not come back from an interrupted call; retired (its thread is detached)"
        );
        if !closing {
            let replacement = {
                let workers = self.lock();
                WorkerStart {
                    source: Arc::clone(&workers.current),
                    generation: self.generation.load(Ordering::Acquire),
                    started: None,
                    go: None,
                    superseded: workers.serving.watch.clone(),
                }
            };
            if let Err(error) = self.spawn_worker(replacement) {
                tracing::error!(plugin = %self.name, %error, "could not start a replacement instance");
            }
        }
    }

    /// After a load timeout: detaches every instance of `generation` still stuck in its import.
    /// Instances that loaded stay and end with the pool (or the aborted reload).
    pub(crate) fn retire_loading(&self, generation: u64) {
        let mut workers = self.lock();
        let stuck: Vec<Arc<CallSlot>> = workers
            .live
            .iter()
            .filter(|worker| {
                worker.generation == generation && !worker.exited && worker.slot.retire_if_running()
            })
            .map(|worker| Arc::clone(&worker.slot))
            .collect();
        for slot in &stuck {
            self.detach(&mut workers, slot);
        }
    }

    /// Takes the worker out of the pool; `false` if it was not in it.
    fn detach(&self, workers: &mut Workers, slot: &Arc<CallSlot>) -> bool {
        let Some(position) = workers
            .live
            .iter()
            .position(|worker| Arc::ptr_eq(&worker.slot, slot))
        else {
            return false;
        };
        let worker = workers.live.swap_remove(position);
        self.retired.fetch_add(1, Ordering::Relaxed);
        if worker.exited {
            // It came back just in time after all; nothing is left running.
            let _ = worker.thread.join();
        } else {
            // Dropping the JoinHandle detaches the thread; `worker_exited` counts it down.
            self.detached_running.fetch_add(1, Ordering::Relaxed);
        }
        self.changed.notify_all();
        true
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let instances = self
            .lock()
            .live
            .iter()
            .filter(|worker| !worker.exited)
            .count();
        PoolStats {
            instances,
            timeouts: self.timeouts.load(Ordering::Relaxed),
            retired_instances: self.retired.load(Ordering::Relaxed),
            detached_threads: self.detached_running.load(Ordering::Relaxed),
            worker_crashes: 0,
            worker_restarts: 0,
        }
    }

    /// Once the queue is closed: waits until every worker has exited (and joins it) or has been
    /// retired. A stuck instance is retired by the watchdog when its call had a timeout.
    pub(crate) fn wait_for_workers(&self) {
        self.requeue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut workers = self.lock();
        workers.closing = true;
        loop {
            let (exited, live): (Vec<Worker>, Vec<Worker>) =
                workers.live.drain(..).partition(|worker| worker.exited);
            workers.live = live;
            for worker in exited {
                if worker.thread.join().is_err() {
                    tracing::error!(plugin = %self.name, "a worker thread panicked");
                }
            }
            if workers.live.is_empty() {
                return;
            }
            workers = self
                .changed
                .wait(workers)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}
