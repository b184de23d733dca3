//! Starting one generation of a plugin's instances (at load, and again at each reload) and waiting
//! until every instance has imported and checked the plugin.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::backend::thread::spare;
use crate::backend::thread::threads::{GenerationSignal, InstanceStart, InstanceThreads};
use crate::error::LoadError;
use crate::plugin::loader::Accepted;
use crate::plugin::version::Version;

/// A generation whose instances all loaded.
pub(crate) struct Loaded {
    /// Which descriptor methods this version defines, and what it was accepted with.
    pub(crate) accepted: Accepted,
    /// Releases gated instances; dropping it unsent ends them unused.
    go: Option<Sender<()>>,
    instances: usize,
    /// The generation's signal, for [`InstanceThreads::promote`]; dropping it unused (an abandoned
    /// reload) ends the generation's instances.
    signal: GenerationSignal,
}

impl Loaded {
    /// Lets gated instances start serving; returns their generation's signal for `promote`.
    pub(crate) fn release(self) -> GenerationSignal {
        if let Some(go) = self.go {
            for _ in 0..self.instances {
                let _ = go.send(());
            }
        }
        self.signal
    }
}

/// Starts `instances` instances of `version` as `generation` and waits until each has loaded. With
/// `gated`, they wait for [`Loaded::release`] before serving. On error, the instances that did load
/// end unused (gated) or end with the plugin; instances stuck past the load timeout are detached.
pub(crate) fn start(
    threads: &Arc<InstanceThreads>,
    version: &Arc<Version>,
    generation: u64,
    instances: usize,
    gated: bool,
) -> Result<Loaded, LoadError> {
    // Spares the instances take are replaced once their loads are over, however they end.
    let _replenish = ReplenishSpares;
    let (started_tx, started_rx) = crossbeam_channel::bounded(instances);
    // A reload's generation gets its own signal; the first one watches the plugin's.
    let signal = if gated {
        GenerationSignal::new()
    } else {
        threads.serving_signal()
    };
    let (go_tx, go_rx) = if gated {
        let (go_tx, go_rx) = crossbeam_channel::bounded(instances);
        (Some(go_tx), Some(go_rx))
    } else {
        (None, None)
    };
    for _ in 0..instances {
        threads.spawn_instance(InstanceStart {
            version: Arc::clone(version),
            generation,
            started: Some(started_tx.clone()),
            go: go_rx.clone(),
            superseded: signal.watch.clone(),
        })?;
    }
    drop(started_tx);
    // Past this, instances still importing are given up on (the watchdog interrupted them at the
    // load timeout itself).
    let give_up_at = threads.load_timeout.and_then(|timeout| {
        Instant::now()
            .checked_add(timeout)?
            .checked_add(threads.retire_after)
    });
    let plugin = &threads.plugin.name;
    let mut accepted = Accepted::default();
    for _ in 0..instances {
        let started = match give_up_at {
            None => started_rx.recv().ok(),
            Some(at) => match started_rx.recv_deadline(at) {
                Ok(started) => Some(started),
                Err(RecvTimeoutError::Disconnected) => None,
                Err(RecvTimeoutError::Timeout) => {
                    threads.retire_loading(generation);
                    return Err(LoadError::LoadTimeout {
                        plugin: plugin.clone(),
                        after: threads.load_timeout.unwrap_or_default(),
                    });
                }
            },
        };
        let started = started.ok_or_else(|| LoadError::WorkerDied {
            plugin: plugin.clone(),
        })?;
        accepted = started?;
    }
    Ok(Loaded {
        accepted,
        go: go_tx,
        instances,
        signal,
    })
}

/// Replaces the spares a generation's instances took (see [`spare::replenish`]) when dropped.
struct ReplenishSpares;

impl Drop for ReplenishSpares {
    fn drop(&mut self) {
        spare::replenish();
    }
}
