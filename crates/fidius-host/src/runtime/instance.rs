//! One plugin instance: an own-GIL sub-interpreter owned by one dedicated worker thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use fidius_core::CallError;
use fidius_ffi::{Interp, InterpreterOptions, SubInterpreter};

use crate::error::LoadError;
use crate::runtime::dispatch::dispatch;
use crate::runtime::loader::Accepted;
use crate::runtime::loader::{self, LoadedInstance};
use crate::runtime::output::{OutputRoute, OutputSink};
use crate::runtime::pool::{PoolShared, WorkerStart};
use crate::runtime::source::PluginSource;
use crate::runtime::wait;
use crate::runtime::watchdog::{CallSlot, Guarded};

/// Worker threads run plugin code, whose C-level recursion (deep `repr`, `json`, regex) can go far
/// beyond what a 2 MiB default stack holds before CPython's own limit trips. Untouched stack pages
/// cost no memory.
const WORKER_STACK_BYTES: usize = 16 << 20;

/// How long a worker that just answered keeps its GIL while polling for the next call.
const KEEP_GIL_WHILE_POLLING: Duration = Duration::from_micros(20);

/// A call on its way to an instance; the reply goes straight back to the waiting caller.
pub(crate) struct Request {
    pub(crate) method: usize,
    pub(crate) payload: Vec<u8>,
    pub(crate) reply: ReplyTo,
    /// Set only for calls with a timeout; calls without one never touch the deadline machinery.
    pub(crate) deadline: Option<Deadline>,
}

/// When a call must have finished, and the timeout it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) after: Duration,
}

/// An instance's answer to one [`Request`].
pub(crate) struct Reply {
    /// Echoed from the request, so a caller reusing its reply channel can tell replies apart.
    pub(crate) call_id: u64,
    /// `None` when the request was dropped unanswered (its instance went away).
    pub(crate) result: Option<Result<Vec<u8>, CallError>>,
}

/// Where a request's answer goes. Dropping it unanswered (a worker unwinding, a queue torn down)
/// still answers, with `None`, so no caller waits forever.
pub(crate) struct ReplyTo {
    sender: Sender<Reply>,
    call_id: u64,
    answered: bool,
}

impl ReplyTo {
    pub(crate) fn new(sender: Sender<Reply>, call_id: u64) -> Self {
        Self {
            sender,
            call_id,
            answered: false,
        }
    }

    fn send(mut self, result: Result<Vec<u8>, CallError>) {
        self.answered = true;
        // The caller may have given up waiting; nothing else to do then.
        let _ = self.sender.send(Reply {
            call_id: self.call_id,
            result: Some(result),
        });
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.sender.send(Reply {
                call_id: self.call_id,
                result: None,
            });
        }
    }
}

/// What a worker reports once its instance has loaded (or failed to).
pub(crate) type Started = Result<Accepted, LoadError>;

/// Starts instance `number` of the pool's plugin on its own thread, named `fidius:<plugin>#<number>`.
///
/// The thread reports on `start.started` (when given) once the plugin is imported and checked, waits
/// for `start.go` (when given), then serves the pool's queue until every sender is gone (draining
/// what is queued), its instance is retired, or a newer generation took over; then it ends its
/// interpreter.
pub(crate) fn spawn(
    pool: Arc<PoolShared>,
    number: usize,
    slot: Arc<CallSlot>,
    start: WorkerStart,
) -> Result<JoinHandle<()>, LoadError> {
    let plugin = pool.name.clone();
    thread::Builder::new()
        .name(format!("fidius:{plugin}#{number}"))
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || {
            let source = &*start.source;
            let span = tracing::info_span!(
                "plugin_instance",
                plugin = %source.name,
                version = %source.version,
                instance = number
            );
            let _entered = span.enter();
            let _exited = ExitNotice {
                pool: &pool,
                slot: &slot,
            };
            let route = OutputRoute {
                plugin: &source.name,
                version: &source.version,
                instance: number,
                recent: &pool.recent_output,
            };
            run(&pool, &slot, source, &start, &route);
        })
        .map_err(|source| LoadError::Spawn { plugin, source })
}

/// Tells the pool the worker is gone, also when it unwinds.
struct ExitNotice<'a> {
    pool: &'a PoolShared,
    slot: &'a Arc<CallSlot>,
}

impl Drop for ExitNotice<'_> {
    fn drop(&mut self) {
        self.pool.worker_exited(self.slot);
    }
}

fn run(
    pool: &PoolShared,
    slot: &CallSlot,
    source: &PluginSource,
    start: &WorkerStart,
    route: &OutputRoute<'_>,
) {
    let started = start.started.as_ref();
    let report = |result: Started| started.is_none_or(|started| started.send(result).is_ok());
    let interp = match SubInterpreter::new(InterpreterOptions::default()) {
        Ok(interp) => interp,
        Err(error) => {
            report(Err(LoadError::Interpreter {
                plugin: source.name.clone(),
                source: error.into(),
            }));
            return;
        }
    };
    slot.set_interrupt(interp.interrupt_handle());
    // Only the first instances have someone waiting to give up on them; replacements load as the
    // originals did.
    let load_timeout = pool.load_timeout.filter(|_| started.is_some());
    if let Some(deadline) = load_timeout.and_then(|timeout| Instant::now().checked_add(timeout)) {
        slot.begin(deadline, Guarded::Load);
    }
    let loaded = loader::load(&interp, source, pool.descriptor, route, pool.strict);
    if let Some(timeout) = load_timeout {
        let finished = slot.finish();
        if finished.interrupted {
            let _ = interp.with(|py| py.discard_pending_interrupt());
            tracing::debug!("plugin load interrupted");
            report(Err(LoadError::LoadTimeout {
                plugin: source.name.clone(),
                after: timeout,
            }));
            return;
        }
        if finished.retired {
            return;
        }
    }
    let instance = match loaded {
        Ok(instance) => instance,
        Err(error) => {
            tracing::debug!(%error, "plugin rejected");
            report(Err(error));
            return;
        }
    };
    let accepted = Accepted {
        implemented: instance.implemented(),
        warnings: instance.warnings.clone(),
    };
    if !report(Ok(accepted)) {
        return;
    }
    if let Some(go) = &start.go {
        if go.recv().is_err() {
            tracing::debug!("reload abandoned; instance not used");
            return;
        }
    }
    tracing::debug!("instance ready");
    let generation = start.generation;
    let requests = &pool.queue;
    while let Ok(first) = wait::recv_unless(requests, &start.superseded, wait::SPIN_BEFORE_PARKING)
    {
        let attached = interp.with(|py| {
            let output_buffer = instance.output_buffer.bind(py);
            let take_output = instance.take_output.bind(py);
            // Serve back-to-back calls without giving up the GIL: taking and releasing it costs
            // more than a small call. It is released as soon as no call follows within the poll.
            let mut request = first;
            loop {
                if pool.generation.load(Ordering::Acquire) > generation {
                    // A reload brought in a newer generation: leave this call to it.
                    pool.requeue(request);
                    return Serving::Superseded;
                }
                let (result, retired) = match request.deadline {
                    None => (serve(py, pool, &instance, &request), false),
                    Some(deadline) => serve_guarded(py, pool, &instance, slot, &request, deadline),
                };
                route.drain(&output_buffer, &take_output);
                request.reply.send(result);
                if retired {
                    return Serving::Retired;
                }
                match wait::poll(requests, KEEP_GIL_WHILE_POLLING) {
                    wait::Polled::Ready(next) => request = next,
                    wait::Polled::Empty | wait::Polled::Disconnected => return Serving::Idle,
                }
            }
        });
        match attached {
            Ok(Serving::Idle) => {}
            Ok(Serving::Retired) => {
                tracing::warn!("retired instance came back; ending it");
                break;
            }
            Ok(Serving::Superseded) => {
                tracing::debug!("a newer version took over; ending this instance");
                break;
            }
            Err(_) => {
                // Unreachable in practice (nothing else attaches on this thread); stop serving
                // rather than spin on an interpreter we cannot enter.
                tracing::error!("cannot attach to the instance's interpreter");
                break;
            }
        }
    }
    tracing::debug!("instance shutting down");
}

/// Why a worker let go of its GIL.
enum Serving {
    /// No call followed within the poll.
    Idle,
    /// The watchdog gave up on this instance during the last call.
    Retired,
    /// A reload made a newer generation the serving one.
    Superseded,
}

fn serve(
    py: Interp<'_>,
    pool: &PoolShared,
    instance: &LoadedInstance<'_>,
    request: &Request,
) -> Result<Vec<u8>, CallError> {
    match pool.descriptor.methods.get(request.method) {
        Some(method) => dispatch(py, instance, method, request.method, &request.payload),
        None => Err(CallError::UnknownMethod {
            interface: pool.descriptor.trait_name,
            index: request.method,
        }),
    }
}

/// Serves a call that has a deadline: dropped unrun if the deadline already passed, otherwise run
/// under the watchdog. Returns whether the instance was retired meanwhile.
fn serve_guarded(
    py: Interp<'_>,
    pool: &PoolShared,
    instance: &LoadedInstance<'_>,
    slot: &CallSlot,
    request: &Request,
    deadline: Deadline,
) -> (Result<Vec<u8>, CallError>, bool) {
    let timed_out = || CallError::Timeout {
        plugin: pool.name.clone(),
        method: pool
            .descriptor
            .method(request.method)
            .map_or_else(String::new, |method| method.name.to_owned()),
        after: deadline.after,
    };
    if Instant::now() >= deadline.at {
        // Still queued at its deadline: its caller has stopped waiting, so it never runs.
        return (Err(timed_out()), false);
    }
    slot.begin(deadline.at, Guarded::Call);
    let result = serve(py, pool, instance, request);
    let finished = slot.finish();
    if finished.interrupted {
        // The interrupt may have arrived after the Python code returned; it must not hit the next
        // call.
        py.discard_pending_interrupt();
        return (Err(timed_out()), finished.retired);
    }
    (result, finished.retired)
}
