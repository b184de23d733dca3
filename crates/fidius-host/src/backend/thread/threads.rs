//! The instance threads of one plugin, as its thread backend, the threads themselves and the
//! watchdog share them: which version a new instance loads, the live threads, and what happened to
//! instances that had to be given up on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::thread::instance::{self, Request, Started};
use crate::backend::thread::watchdog::InstanceWatch;
use crate::backend::PoolStats;
use crate::error::LoadError;
use crate::plugin::shared::PluginShared;
use crate::plugin::version::Version;

pub(crate) struct InstanceThreads {
    /// Name, interface and output ring of the plugin.
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) queue: Receiver<Request>,
    pub(crate) load_timeout: Option<Duration>,
    /// Refuse what the original fidius accepted with a warning (see `LoadOptions::strict`).
    pub(crate) strict: bool,
    pub(crate) retire_after: Duration,
    roster: Mutex<Roster>,
    /// Signalled whenever an instance thread exits or is detached.
    changed: Condvar,
    retired: AtomicU64,
    detached_running: AtomicU64,
    /// The generation that serves calls. A reload starts a newer one; an instance of an older
    /// generation hands the next request it takes back to the queue and ends.
    pub(crate) generation: AtomicU64,
    /// Puts a request back on the queue (an older instance stepping aside). `None` once the handle
    /// is being dropped, so the queue can disconnect.
    requeue: Mutex<Option<Sender<Request>>>,
}

/// The instance threads that were started and not yet joined or detached.
struct Roster {
    live: Vec<InstanceThread>,
    next_number: usize,
    /// The handle is being dropped: retired instances are not replaced any more.
    closing: bool,
    /// What a replacement for a retired instance loads: the serving generation's version.
    current: Arc<Version>,
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

struct InstanceThread {
    watch: Arc<InstanceWatch>,
    thread: JoinHandle<()>,
    exited: bool,
    generation: u64,
}

/// Which version a new instance thread loads, for which generation, and who waits for it.
pub(crate) struct InstanceStart {
    pub(crate) version: Arc<Version>,
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

/// How [`InstanceThreads::new`] is configured.
pub(crate) struct ThreadSettings {
    pub(crate) load_timeout: Option<Duration>,
    /// Refuse what the original fidius accepted with a warning (see `LoadOptions::strict`).
    pub(crate) strict: bool,
    pub(crate) retire_after: Duration,
}

impl InstanceThreads {
    pub(crate) fn new(
        plugin: Arc<PluginShared>,
        version: Arc<Version>,
        (requeue, queue): (Sender<Request>, Receiver<Request>),
        settings: ThreadSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            queue,
            load_timeout: settings.load_timeout,
            strict: settings.strict,
            retire_after: settings.retire_after,
            roster: Mutex::new(Roster {
                live: Vec::new(),
                next_number: 0,
                closing: false,
                current: version,
                serving: GenerationSignal::new(),
            }),
            changed: Condvar::new(),
            retired: AtomicU64::new(0),
            detached_running: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            requeue: Mutex::new(Some(requeue)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Roster> {
        // Each update leaves the list consistent, so a poisoned lock is still usable.
        self.roster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts one more instance.
    pub(crate) fn spawn_instance(self: &Arc<Self>, start: InstanceStart) -> Result<(), LoadError> {
        let mut roster = self.lock();
        let number = roster.next_number;
        roster.next_number += 1;
        let watch = InstanceWatch::new(Arc::downgrade(self), self.retire_after);
        let generation = start.generation;
        let thread = instance::spawn(Arc::clone(self), number, Arc::clone(&watch), start)?;
        roster.live.push(InstanceThread {
            watch,
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

    /// Makes `generation` (loaded from `version`, watching `signal`) the one that serves: from now
    /// on instances of older generations step aside (idle ones wake and end at once, busy ones
    /// when their call returns), and retired instances are replaced from `version`.
    pub(crate) fn promote(&self, version: Arc<Version>, generation: u64, signal: GenerationSignal) {
        let mut roster = self.lock();
        roster.current = version;
        self.generation.store(generation, Ordering::Release);
        // Dropping the old generation's last sender wakes its parked instances.
        roster.serving = signal;
        // Instances that ended since the last look (older generations, aborted reloads).
        let (exited, live): (Vec<InstanceThread>, Vec<InstanceThread>) =
            roster.live.drain(..).partition(|thread| thread.exited);
        roster.live = live;
        for thread in exited {
            let _ = thread.thread.join();
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

    /// The last thing an instance thread does.
    pub(crate) fn instance_exited(&self, watch: &Arc<InstanceWatch>) {
        let mut roster = self.lock();
        match roster
            .live
            .iter_mut()
            .find(|thread| Arc::ptr_eq(&thread.watch, watch))
        {
            Some(thread) => thread.exited = true,
            // Detached earlier: one stuck thread fewer.
            None => {
                self.detached_running.fetch_sub(1, Ordering::Relaxed);
            }
        }
        drop(roster);
        self.changed.notify_all();
    }

    /// Gives up on the instance behind `watch` (the watchdog decided it is stuck): detaches its
    /// thread and starts a replacement unless the plugin is closing.
    pub(crate) fn retire(self: &Arc<Self>, watch: &Arc<InstanceWatch>) {
        let closing = {
            let mut roster = self.lock();
            if !self.detach(&mut roster, watch) {
                return;
            }
            roster.closing
        };
        tracing::warn!(
            plugin = %self.plugin.name,
            grace = ?self.retire_after,
            "an instance did not come back from an interrupted call; retired (its thread is detached)"
        );
        if !closing {
            self.start_replacement();
        }
    }

    /// An instance of `generation` unwound while serving (a panic on its thread: a fidius bug, or
    /// host code run there such as a `tracing` subscriber). Its call was answered `Unavailable`
    /// when its reply dropped; a replacement serves the queue, unless the plugin is closing or a
    /// newer generation serves.
    pub(crate) fn instance_panicked(self: &Arc<Self>, generation: u64) {
        self.retired.fetch_add(1, Ordering::Relaxed);
        let replace = {
            let roster = self.lock();
            !roster.closing && self.generation.load(Ordering::Acquire) == generation
        };
        if replace {
            self.start_replacement();
        }
        // Last: the subscriber that panicked may panic again on this event.
        tracing::error!(plugin = %self.plugin.name, replaced = replace, "an instance thread panicked while serving");
    }

    /// Starts an instance of the serving generation in place of one given up on.
    fn start_replacement(self: &Arc<Self>) {
        let replacement = {
            let roster = self.lock();
            InstanceStart {
                version: Arc::clone(&roster.current),
                generation: self.generation.load(Ordering::Acquire),
                started: None,
                go: None,
                superseded: roster.serving.watch.clone(),
            }
        };
        if let Err(error) = self.spawn_instance(replacement) {
            tracing::error!(plugin = %self.plugin.name, %error, "could not start a replacement instance");
        }
        // Nobody waits for a replacement's load to be over.
        super::spare::replenish();
    }

    /// After a load timeout: detaches every instance of `generation` still stuck in its import.
    /// Instances that loaded stay and end with the pool (or the aborted reload).
    pub(crate) fn retire_loading(&self, generation: u64) {
        let mut roster = self.lock();
        let stuck: Vec<Arc<InstanceWatch>> = roster
            .live
            .iter()
            .filter(|thread| {
                thread.generation == generation
                    && !thread.exited
                    && thread.watch.retire_if_running()
            })
            .map(|thread| Arc::clone(&thread.watch))
            .collect();
        for watch in &stuck {
            self.detach(&mut roster, watch);
        }
    }

    /// Takes the instance thread off the roster; `false` if it was not on it.
    fn detach(&self, roster: &mut Roster, watch: &Arc<InstanceWatch>) -> bool {
        let Some(position) = roster
            .live
            .iter()
            .position(|thread| Arc::ptr_eq(&thread.watch, watch))
        else {
            return false;
        };
        let thread = roster.live.swap_remove(position);
        self.retired.fetch_add(1, Ordering::Relaxed);
        if thread.exited {
            // It came back just in time after all; nothing is left running.
            let _ = thread.thread.join();
        } else {
            // Dropping the JoinHandle detaches the thread; `instance_exited` counts it down.
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
            .filter(|thread| !thread.exited)
            .count();
        PoolStats {
            instances,
            retired_instances: self.retired.load(Ordering::Relaxed),
            detached_threads: self.detached_running.load(Ordering::Relaxed),
            ..PoolStats::default()
        }
    }

    /// Once the queue is closed: waits until every instance thread has exited (and joins it) or
    /// has been retired. A stuck instance is retired by the watchdog when its call had a timeout.
    pub(crate) fn wait_for_instances(&self) {
        self.requeue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut roster = self.lock();
        roster.closing = true;
        loop {
            let (exited, live): (Vec<InstanceThread>, Vec<InstanceThread>) =
                roster.live.drain(..).partition(|thread| thread.exited);
            roster.live = live;
            for thread in exited {
                if thread.thread.join().is_err() {
                    tracing::error!(plugin = %self.plugin.name, "an instance thread panicked");
                }
            }
            if roster.live.is_empty() {
                return;
            }
            roster = self
                .changed
                .wait(roster)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}
