//! One plugin instance: an own-GIL sub-interpreter owned by one dedicated instance thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use fidius_core::CallError;
use fidius_ffi::{Interp, InterpreterOptions, SubInterpreter};

use crate::backend::thread::spare;
use crate::backend::thread::threads::{InstanceStart, InstanceThreads};
use crate::backend::thread::watchdog::{Guarded, InstanceWatch};
use crate::backend::wait;
use crate::backend::{Deadline, DetachedReply};
use crate::callback::chain::{self, PluginId};
use crate::error::LoadError;
use crate::plugin::dispatch::dispatch;
use crate::plugin::loader::Accepted;
use crate::plugin::loader::{self, LoadedInstance, ReadyInterpreter};
use crate::plugin::output::{OutputRoute, OutputSink};
use crate::plugin::shared;
use crate::plugin::source::PluginSource;
use crate::stream::StreamSink;
use crate::stream_input::{self, InputFeed};

/// Instance threads run plugin code, whose C-level recursion (deep `repr`, `json`, regex) can go far
/// beyond what a 2 MiB default stack holds before CPython's own limit trips. Untouched stack pages
/// cost no memory.
pub(super) const INSTANCE_STACK_BYTES: usize = 16 << 20;

/// How long an instance that just answered keeps its GIL while polling for the next call.
const KEEP_GIL_WHILE_POLLING: Duration = Duration::from_micros(20);

/// A call on its way to an instance; the reply goes straight back to the waiting caller.
pub(crate) struct Request {
    pub(crate) method: usize,
    pub(crate) payload: Vec<u8>,
    pub(crate) reply: ReplyTo,
    /// Set only for calls with a timeout; calls without one never touch the deadline machinery.
    pub(crate) deadline: Option<Deadline>,
    /// The plugins the caller serves calls of (see `callback::chain`); empty without host
    /// functions.
    pub(crate) chain: Vec<PluginId>,
    /// Set for a call of a method that streams its result: the items go here, not to `reply`.
    pub(crate) stream: Option<StreamSink>,
    /// Set for a call of a method with a streamed argument: its items are pulled from here.
    pub(crate) input: Option<Arc<InputFeed>>,
}

/// An instance's answer to one [`Request`].
pub(crate) struct Reply {
    /// Echoed from the request, so a caller reusing its reply channel can tell replies apart.
    pub(crate) call_id: u64,
    /// `None` when the request was dropped unanswered (its instance went away).
    pub(crate) result: Option<Result<Vec<u8>, CallError>>,
}

/// Where a request's answer goes. Dropping it unanswered (an instance thread unwinding, a queue torn down)
/// still answers, with `None`, so no caller waits forever.
pub(crate) struct ReplyTo {
    target: ReplyTarget,
    answered: bool,
}

enum ReplyTarget {
    /// A blocking caller, waiting on its reply channel.
    Caller { sender: Sender<Reply>, call_id: u64 },
    /// An async call's future, completed from the instance thread.
    Detached(Arc<dyn DetachedReply>),
}

impl ReplyTo {
    /// For a request whose answer goes elsewhere (a stream's items go to its sink).
    pub(crate) fn nobody() -> Self {
        let (sender, _) = crossbeam_channel::bounded(1);
        Self::new(sender, 0)
    }

    pub(crate) fn new(sender: Sender<Reply>, call_id: u64) -> Self {
        Self {
            target: ReplyTarget::Caller { sender, call_id },
            answered: false,
        }
    }

    pub(crate) fn detached(reply: Arc<dyn DetachedReply>) -> Self {
        Self {
            target: ReplyTarget::Detached(reply),
            answered: false,
        }
    }

    /// Whether the call is still wanted (see [`DetachedReply::claim`]); a blocking caller's is.
    fn claim(&self) -> bool {
        match &self.target {
            ReplyTarget::Caller { .. } => true,
            ReplyTarget::Detached(reply) => reply.claim(),
        }
    }

    fn send(mut self, result: Result<Vec<u8>, CallError>) {
        self.answered = true;
        self.deliver(Some(result));
    }

    fn deliver(&self, result: Option<Result<Vec<u8>, CallError>>) {
        match &self.target {
            // The caller may have given up waiting; nothing else to do then.
            ReplyTarget::Caller { sender, call_id } => {
                let _ = sender.send(Reply {
                    call_id: *call_id,
                    result,
                });
            }
            ReplyTarget::Detached(reply) => reply.answer(result),
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.answered {
            self.deliver(None);
        }
    }
}

/// What an instance thread reports once its instance has loaded (or failed to).
pub(crate) type Started = Result<Accepted, LoadError>;

/// Starts instance `number` of the plugin on its own thread, named `fidius:<plugin>#<number>`.
///
/// The thread reports on `start.started` (when given) once the plugin is imported and checked, waits
/// for `start.go` (when given), then serves the plugin's queue until every sender is gone (draining
/// what is queued), its instance is retired, or a newer generation took over; then it ends its
/// interpreter.
pub(crate) fn spawn(
    threads: Arc<InstanceThreads>,
    number: usize,
    watch: Arc<InstanceWatch>,
    start: InstanceStart,
) -> Result<JoinHandle<()>, LoadError> {
    let plugin = threads.plugin.name.clone();
    let name = format!("fidius:{plugin}#{number}");
    // `spare`: the interpreter of a spare thread this runs on, or none (create one).
    let body = move |spare: Option<ReadyInterpreter<SubInterpreter>>| {
        let source = &*start.version.source;
        let span = tracing::info_span!(
            "plugin_instance",
            plugin = %source.name,
            version = %source.version,
            instance = number
        );
        let _entered = span.enter();
        let exit = ExitNotice {
            threads: &threads,
            watch: &watch,
            generation: start.generation,
            serving: std::cell::Cell::new(false),
        };
        let route = OutputRoute {
            plugin: &source.name,
            version: &source.version,
            instance: number,
            recent: &threads.plugin.recent_output,
        };
        run(
            &threads,
            &watch,
            source,
            &start,
            &route,
            spare,
            &exit.serving,
        );
    };
    let body = match spare::take(name.clone(), Box::new(body)) {
        Ok(thread) => {
            tracing::debug!(plugin = %plugin, instance = number, spare = true, "instance starts on a spare interpreter");
            return Ok(thread);
        }
        Err(body) => body,
    };
    thread::Builder::new()
        .name(name)
        .stack_size(INSTANCE_STACK_BYTES)
        .spawn(move || body(None))
        .map_err(|source| LoadError::Spawn { plugin, source })
}

/// Tells the roster the instance thread is gone, also when it unwinds; an instance of the serving
/// generation that unwinds while serving is replaced.
struct ExitNotice<'a> {
    threads: &'a Arc<InstanceThreads>,
    watch: &'a Arc<InstanceWatch>,
    generation: u64,
    /// Set once the instance loaded and serves its queue: one that panics while loading fails its
    /// load instead (replacing it could repeat the panic forever).
    serving: std::cell::Cell<bool>,
}

impl Drop for ExitNotice<'_> {
    fn drop(&mut self) {
        self.threads.instance_exited(self.watch);
        if thread::panicking() && self.serving.get() {
            // Caught: this runs while the thread unwinds, and a second panic escaping a destructor
            // then (the same `tracing` subscriber panicking on the error event, say) would abort
            // the host process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.threads.instance_panicked(self.generation);
            }));
        }
    }
}

fn run(
    threads: &InstanceThreads,
    watch: &InstanceWatch,
    source: &PluginSource,
    start: &InstanceStart,
    route: &OutputRoute<'_>,
    spare: Option<ReadyInterpreter<SubInterpreter>>,
    serving: &std::cell::Cell<bool>,
) {
    let started = start.started.as_ref();
    let report = |result: Started| started.is_none_or(|started| started.send(result).is_ok());
    let created = spare.map_or_else(
        || {
            let interp = SubInterpreter::new(InterpreterOptions::default()).map_err(|error| {
                LoadError::Interpreter {
                    plugin: source.name.clone(),
                    source: error.into(),
                }
            })?;
            ReadyInterpreter::prepare(interp).map_err(|error| LoadError::Bootstrap {
                plugin: source.name.clone(),
                source: error.into(),
            })
        },
        Ok,
    );
    let interp = match created {
        Ok(interp) => interp,
        Err(error) => {
            report(Err(error));
            return;
        }
    };
    watch.set_interrupt(interp.interrupt_handle());
    // Only the first instances have someone waiting to give up on them; replacements load as the
    // originals did.
    let load_timeout = threads.load_timeout.filter(|_| started.is_some());
    if let Some(deadline) = load_timeout.and_then(|timeout| Instant::now().checked_add(timeout)) {
        watch.begin(deadline, Guarded::Load);
    }
    let loaded = loader::load(
        &interp,
        source,
        &threads.plugin.descriptor,
        threads.plugin.config.as_ref(),
        route,
        threads.strict,
    );
    if let Some(timeout) = load_timeout {
        let finished = watch.finish();
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
    let host_functions = &threads.plugin.host_functions;
    let loaded = loaded.and_then(|instance| {
        crate::callback::bind(&*interp, &host_functions.names())
            .map(|()| instance)
            .map_err(|error| LoadError::Bootstrap {
                plugin: source.name.clone(),
                source: error.into(),
            })
    });
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
    serving.set(true);
    let generation = start.generation;
    let requests = &threads.queue;
    while let Ok(first) = wait::recv_unless(requests, &start.superseded, wait::SPIN_BEFORE_PARKING)
    {
        let attached = interp.with(|py| {
            let output_buffer = instance.output_buffer.bind(py);
            let take_output = instance.take_output.bind(py);
            // Serve back-to-back calls without giving up the GIL: taking and releasing it costs
            // more than a small call. It is released as soon as no call follows within the poll.
            let mut request = first;
            loop {
                if threads.generation.load(Ordering::Acquire) > generation {
                    // A reload brought in a newer generation: leave this call to it.
                    threads.requeue(request);
                    return Serving::Superseded;
                }
                if let Some(sink) = request.stream.take() {
                    let drain = || route.drain(&output_buffer, &take_output);
                    let retired = super::stream::serve(
                        py,
                        threads,
                        &instance,
                        watch,
                        request.method,
                        &request.payload,
                        request.input.as_deref(),
                        sink,
                        &drain,
                    );
                    route.drain(&output_buffer, &take_output);
                    drop(request);
                    if retired {
                        return Serving::Retired;
                    }
                    match wait::poll(requests, KEEP_GIL_WHILE_POLLING) {
                        wait::Polled::Ready(next) => request = next,
                        wait::Polled::Empty | wait::Polled::Disconnected => return Serving::Idle,
                    }
                    continue;
                }
                // An async call whose future went (or that timed out) while it was queued never
                // runs; dropping it unanswered is all there is to do.
                if request.reply.claim() {
                    let (result, retired) = match request.deadline {
                        None => (serve(py, threads, &instance, &request), false),
                        Some(deadline) => {
                            serve_guarded(py, threads, &instance, watch, &request, deadline)
                        }
                    };
                    route.drain(&output_buffer, &take_output);
                    request.reply.send(result);
                    if retired {
                        return Serving::Retired;
                    }
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

/// Why an instance thread let go of its GIL.
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
    threads: &InstanceThreads,
    instance: &LoadedInstance<'_>,
    request: &Request,
) -> Result<Vec<u8>, CallError> {
    let plugin = &threads.plugin;
    let method = shared::method(&plugin.descriptor, request.method)?;
    // Host functions run on this thread, with the caller's chain: calls they make back into a
    // plugin the caller is serving are refused.
    let _adopted = chain::adopt(&request.chain);
    let host_call = |name: &str, args: &[u8]| plugin.host_functions.invoke(name, args);
    if let Some(feed) = &request.input {
        let serving = stream_input::serving(feed, host_call);
        let result = fidius_ffi::serve_host_calls(&serving, || {
            crate::plugin::stream_input::dispatch(
                py,
                instance,
                method,
                request.method,
                &request.payload,
            )
        });
        return feed.settle(result);
    }
    fidius_ffi::serve_host_calls(&host_call, || {
        dispatch(
            py,
            instance,
            method,
            request.method,
            &request.payload,
            |reply| reply.into_owned(),
        )
    })
}

/// Serves a call that has a deadline: dropped unrun if the deadline already passed, otherwise run
/// under the watchdog. Returns whether the instance was retired meanwhile.
fn serve_guarded(
    py: Interp<'_>,
    threads: &InstanceThreads,
    instance: &LoadedInstance<'_>,
    watch: &InstanceWatch,
    request: &Request,
    deadline: Deadline,
) -> (Result<Vec<u8>, CallError>, bool) {
    let timed_out = || threads.plugin.timed_out(request.method, deadline.after);
    if Instant::now() >= deadline.at {
        // Still queued at its deadline: its caller has stopped waiting, so it never runs.
        return (Err(timed_out()), false);
    }
    watch.begin(deadline.at, Guarded::Call);
    let result = serve(py, threads, instance, request);
    let finished = watch.finish();
    if finished.interrupted {
        // The interrupt may have arrived after the Python code returned; it must not hit the next
        // call.
        py.discard_pending_interrupt();
        return (Err(timed_out()), finished.retired);
    }
    (result, finished.retired)
}
