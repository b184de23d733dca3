//! One plugin instance: an own-GIL sub-interpreter owned by one dedicated worker thread.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::PythonInterfaceDescriptor;
use fidius_core::CallError;
use fidius_ffi::{InterpreterOptions, SubInterpreter};

use crate::error::LoadError;
use crate::runtime::dispatch::dispatch;
use crate::runtime::loader;
use crate::runtime::source::PluginSource;
use crate::runtime::wait;

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
pub(crate) type Started = Result<Vec<bool>, LoadError>;

/// Starts instance `number` of the plugin on its own thread, named `fidius:<plugin>#<number>`.
///
/// The thread reports on `started` once the plugin is imported and checked, then serves `requests`
/// until every sender is gone (draining what is queued) and ends its interpreter.
pub(crate) fn spawn(
    source: Arc<PluginSource>,
    descriptor: &'static PythonInterfaceDescriptor,
    number: usize,
    requests: Receiver<Request>,
    started: Sender<Started>,
) -> Result<JoinHandle<()>, LoadError> {
    let plugin = source.name.clone();
    thread::Builder::new()
        .name(format!("fidius:{}#{number}", source.name))
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || {
            let span = tracing::info_span!(
                "plugin_instance",
                plugin = %source.name,
                version = %source.version,
                instance = number
            );
            let _entered = span.enter();
            run(&source, descriptor, &requests, &started);
        })
        .map_err(|source| LoadError::Spawn { plugin, source })
}

fn run(
    source: &PluginSource,
    descriptor: &'static PythonInterfaceDescriptor,
    requests: &Receiver<Request>,
    started: &Sender<Started>,
) {
    let interp = match SubInterpreter::new(InterpreterOptions::default()) {
        Ok(interp) => interp,
        Err(error) => {
            let _ = started.send(Err(LoadError::Interpreter {
                plugin: source.name.clone(),
                source: error,
            }));
            return;
        }
    };
    let instance = match loader::load(&interp, source, descriptor) {
        Ok(instance) => instance,
        Err(error) => {
            tracing::debug!(%error, "plugin rejected");
            let _ = started.send(Err(error));
            return;
        }
    };
    if started.send(Ok(instance.implemented())).is_err() {
        return;
    }
    tracing::debug!("instance ready");
    while let Ok(first) = wait::recv(requests, wait::SPIN_BEFORE_PARKING) {
        let attached = interp.with(|py| {
            // Serve back-to-back calls without giving up the GIL: taking and releasing it costs
            // more than a small call. It is released as soon as no call follows within the poll.
            let mut request = first;
            loop {
                let result = match descriptor.methods.get(request.method) {
                    Some(method) => {
                        dispatch(py, &instance, method, request.method, &request.payload)
                    }
                    None => Err(CallError::UnknownMethod {
                        interface: descriptor.trait_name,
                        index: request.method,
                    }),
                };
                request.reply.send(result);
                match wait::poll(requests, KEEP_GIL_WHILE_POLLING) {
                    wait::Polled::Ready(next) => request = next,
                    wait::Polled::Empty | wait::Polled::Disconnected => break,
                }
            }
        });
        if attached.is_err() {
            // Unreachable in practice (nothing else attaches on this thread); stop serving rather
            // than spin on an interpreter we cannot enter.
            tracing::error!("cannot attach to the instance's interpreter");
            break;
        }
    }
    tracing::debug!("instance shutting down");
}
