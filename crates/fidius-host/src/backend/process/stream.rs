//! A streamed result in the process tier. A thread of the host (one per open stream) holds the
//! worker for the stream's life: it reads the worker's items from the mailbox and hands them to the
//! stream's sink, granting the worker its window again each time the worker has used it up
//! (`STREAM_PULL`), so the worker is never more than a window ahead of this thread, nor this
//! thread more than a window ahead of the consumer. When the consumer drops the stream, the thread
//! sends `STREAM_CANCEL` and reads the rest until the worker confirms it closed the iterator. Past
//! an item or whole-stream deadline the worker is killed, as a call's is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fidius_core::CallError;

use crate::backend::process::child::{Failure, WorkerProcess};
use crate::backend::process::protocol;
use crate::backend::process::workers::{WorkerLauncher, WorkerSet};
use crate::stream::{Delivery, StreamMessage, StreamSink};
use crate::stream_input::InputFeed;

/// How long a worker gets, after the consumer dropped the stream, to finish the items it was
/// allowed and close the plugin's iterator (its `finally` blocks run) before it is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Starts the thread that serves one streamed call of method `index` on a worker of `set`.
pub(super) fn spawn(
    launcher: Arc<WorkerLauncher>,
    set: Arc<WorkerSet>,
    index: usize,
    payload: Vec<u8>,
    input: Option<Arc<InputFeed>>,
    sink: StreamSink,
) -> Result<(), CallError> {
    let unavailable = launcher.plugin.unavailable();
    std::thread::Builder::new()
        .name(format!("fidius:{}:stream", launcher.plugin.name))
        .spawn(move || {
            pump(&launcher, &set, index, &payload, input.as_ref(), &sink);
            if let Some(input) = input {
                input.finish();
            }
        })
        .map(drop)
        .map_err(|_| unavailable)
}

fn is_stream_reply(kind: u8) -> bool {
    matches!(
        kind,
        protocol::STREAM_ITEM | protocol::STREAM_END | protocol::STREAM_ERR
    )
}

fn pump(
    launcher: &Arc<WorkerLauncher>,
    set: &Arc<WorkerSet>,
    index: usize,
    payload: &[u8],
    input: Option<&Arc<InputFeed>>,
    sink: &StreamSink,
) {
    let (lease, mut slot) = match launcher.take(set, sink.step_deadline(), index) {
        Ok(taken) => taken,
        Err(error) => {
            sink.deliver(StreamMessage::Failed(error));
            return;
        }
    };
    let Some(worker) = slot.worker.as_mut() else {
        sink.deliver(StreamMessage::Failed(launcher.plugin.unavailable()));
        return;
    };
    worker.input = input.cloned();
    let outcome = run(
        launcher,
        worker,
        index,
        payload,
        input.map(|input| &**input),
        sink,
    );
    if let Some(worker) = slot.worker.as_mut() {
        worker.input = None;
    }
    match outcome {
        Ok(()) => slot.deaths = 0,
        Err((failure, after)) => {
            let error = launcher.settle(set, &mut slot, lease, failure, index, after);
            sink.deliver(StreamMessage::Failed(error));
        }
    }
}

/// Runs the stream on `worker` until it ended (`Ok`, the sink told how) or the worker failed.
fn run(
    launcher: &WorkerLauncher,
    worker: &mut WorkerProcess,
    index: usize,
    payload: &[u8],
    input: Option<&InputFeed>,
    sink: &StreamSink,
) -> Result<(), (Failure, Duration)> {
    let descriptor = &launcher.plugin.descriptor;
    // A refused item of the streamed argument ends the stream with its error, whatever the plugin
    // did with the exception it got.
    let input_failure = || input.and_then(InputFeed::failure);
    let cancel = |worker: &mut WorkerProcess| {
        if let Some(input) = input {
            // Pulls the worker makes while it closes get the end.
            input.finish();
        }
        cancel(worker, descriptor, index)
    };
    let window = u32::try_from(sink.window).unwrap_or(u32::MAX).max(1);
    let method = u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes();
    let mut step = sink.step_deadline();
    let after = |step: Option<crate::backend::Deadline>| step.map_or(Duration::ZERO, |d| d.after);
    let mut reply = worker.converse(
        Some((
            protocol::STREAM_OPEN,
            &[&method, &window.to_le_bytes(), payload],
        )),
        step.map(|deadline| deadline.at),
        None,
        is_stream_reply,
    );
    // Items the worker may still send before it waits for a pull.
    let mut owed = window;
    loop {
        let (kind, body) = reply.map_err(|failure| (failure, after(step)))?;
        if let Some(failure) = input_failure() {
            sink.deliver(StreamMessage::Failed(failure));
            return match kind {
                protocol::STREAM_ITEM => cancel(worker),
                _ => Ok(()),
            };
        }
        match kind {
            protocol::STREAM_ITEM => {
                if owed == 0 {
                    worker.kill();
                    return Err((
                        Failure::Protocol("a streamed item beyond the window".to_owned()),
                        after(step),
                    ));
                }
                owed -= 1;
                if sink.deliver(StreamMessage::Item(body)) == Delivery::Abandoned {
                    return cancel(worker);
                }
                if owed == 0 {
                    step = sink.step_deadline();
                    worker
                        .post(
                            protocol::STREAM_PULL,
                            &[&window.to_le_bytes()],
                            step.map(|deadline| deadline.at),
                        )
                        .map_err(|failure| (failure, after(step)))?;
                    owed = window;
                }
            }
            protocol::STREAM_END => {
                sink.deliver(StreamMessage::End);
                return Ok(());
            }
            _ => {
                return match protocol::decode_error(&body, descriptor, index) {
                    Ok(error) => {
                        sink.deliver(StreamMessage::Failed(error));
                        Ok(())
                    }
                    Err(reason) => {
                        worker.kill();
                        Err((Failure::Protocol(reason), after(step)))
                    }
                }
            }
        }
        step = sink.step_deadline();
        reply = worker.converse(
            None,
            step.map(|deadline| deadline.at),
            None,
            is_stream_reply,
        );
    }
}

/// The consumer is gone: asks the worker to close the iterator and reads what it still sends.
fn cancel(
    worker: &mut WorkerProcess,
    descriptor: &fidius_core::interface::OwnedInterfaceDescriptor,
    index: usize,
) -> Result<(), (Failure, Duration)> {
    let give_up = Instant::now() + CANCEL_GRACE;
    let failed = |failure| (failure, CANCEL_GRACE);
    worker
        .post(protocol::STREAM_CANCEL, &[], Some(give_up))
        .map_err(failed)?;
    loop {
        let (kind, body) = worker
            .converse(None, Some(give_up), None, is_stream_reply)
            .map_err(failed)?;
        match kind {
            protocol::STREAM_ITEM => {}
            protocol::STREAM_END => return Ok(()),
            _ => {
                // Closing raised in the plugin; the worker is fine. A reply it cannot have meant
                // is a protocol error as anywhere else.
                return match protocol::decode_error(&body, descriptor, index) {
                    Ok(_) => Ok(()),
                    Err(reason) => {
                        worker.kill();
                        Err(failed(Failure::Protocol(reason)))
                    }
                };
            }
        }
    }
}
