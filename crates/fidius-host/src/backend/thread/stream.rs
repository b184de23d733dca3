//! A streamed result on an instance thread: the instance pulls the plugin's iterator and hands
//! each item to the stream's sink, waiting while the consumer's window is full. Each pull runs
//! under the watchdog when an item or whole-stream timeout applies, as a call with a deadline does.

use std::time::Instant;

use fidius_ffi::Interp;

use crate::backend::thread::threads::InstanceThreads;
use crate::backend::thread::watchdog::{Guarded, InstanceWatch};
use crate::plugin::loader::LoadedInstance;
use crate::plugin::shared;
use crate::plugin::stream::{self, OpenedStream, Pulled};
use crate::stream::{Delivery, StreamMessage, StreamSink};
use crate::stream_input::{self, InputFeed};

/// How many items go by between two drains of the plugin's output during a long stream.
const DRAIN_EVERY: u64 = 256;

/// Serves one streamed call until the iterator ends, fails, times out or the consumer drops the
/// stream. Returns whether the watchdog retired the instance meanwhile.
#[expect(
    clippy::too_many_arguments,
    reason = "the instance thread's serving context, passed as the other serving paths take it"
)]
pub(super) fn serve(
    py: Interp<'_>,
    threads: &InstanceThreads,
    instance: &LoadedInstance<'_>,
    watch: &InstanceWatch,
    index: usize,
    payload: &[u8],
    input: Option<&InputFeed>,
    sink: StreamSink,
    drain: &dyn Fn(),
) -> bool {
    let serve = |input| {
        serve_items(
            py, threads, instance, watch, index, payload, input, sink, drain,
        )
    };
    let Some(feed) = input else {
        return serve(None);
    };
    // A bidirectional method: the plugin pulls its streamed argument while it makes items.
    let serving = stream_input::serving(feed, stream_input::no_host_functions);
    let retired = fidius_ffi::serve_host_calls(&serving, || serve(Some(feed)));
    feed.finish();
    retired
}

#[expect(
    clippy::too_many_arguments,
    reason = "the instance thread's serving context, passed as the other serving paths take it"
)]
fn serve_items(
    py: Interp<'_>,
    threads: &InstanceThreads,
    instance: &LoadedInstance<'_>,
    watch: &InstanceWatch,
    index: usize,
    payload: &[u8],
    input: Option<&InputFeed>,
    sink: StreamSink,
    drain: &dyn Fn(),
) -> bool {
    // A refused item of the streamed argument ends the stream with its error, whatever the plugin
    // did with the exception it got.
    let input_failure = || input.and_then(InputFeed::failure);
    let method = match shared::method(&threads.plugin.descriptor, index) {
        Ok(method) => method,
        Err(error) => {
            sink.deliver(StreamMessage::Failed(error));
            return false;
        }
    };
    // One step: opening (the function's own body, up to a generator's first `yield` for a plain
    // iterator) or one pull, bounded like a call when a deadline applies.
    let guarded = |step: &mut dyn FnMut()| -> Result<(), (bool, std::time::Duration)> {
        let Some(deadline) = sink.step_deadline() else {
            step();
            return Ok(());
        };
        if Instant::now() >= deadline.at {
            return Err((false, deadline.after));
        }
        watch.begin(deadline.at, Guarded::Call);
        step();
        let finished = watch.finish();
        if finished.interrupted {
            py.discard_pending_interrupt();
            return Err((finished.retired, deadline.after));
        }
        if finished.retired {
            return Err((true, deadline.after));
        }
        Ok(())
    };
    let timed_out = |after| StreamMessage::Failed(threads.plugin.timed_out(index, after));

    let mut opened: Option<Result<OpenedStream<'_>, _>> = None;
    if let Err((retired, after)) = guarded(&mut || {
        opened = Some(stream::open(py, instance, method, index, payload));
    }) {
        if let Some(Ok(opened)) = opened {
            opened.close();
        }
        sink.deliver(timed_out(after));
        return retired;
    }
    let opened = match opened {
        Some(Ok(opened)) => opened,
        Some(Err(error)) => {
            sink.deliver(StreamMessage::Failed(input_failure().unwrap_or(error)));
            return false;
        }
        None => return false,
    };
    let mut delivered = 0u64;
    loop {
        let mut pulled = None;
        if let Err((retired, after)) = guarded(&mut || pulled = Some(opened.pull(instance, method)))
        {
            // The interrupt ended the generator; closing it is harmless.
            opened.close();
            sink.deliver(timed_out(after));
            return retired;
        }
        if let Some(failure) = input_failure() {
            opened.close();
            sink.deliver(StreamMessage::Failed(failure));
            return false;
        }
        let message = match pulled {
            Some(Pulled::Item(json)) => StreamMessage::Item(json),
            Some(Pulled::End) | None => {
                sink.deliver(StreamMessage::End);
                return false;
            }
            Some(Pulled::Failed(error)) => {
                sink.deliver(StreamMessage::Failed(error));
                return false;
            }
        };
        if sink.deliver(message) == Delivery::Abandoned {
            tracing::debug!(
                items = delivered,
                "stream dropped by its consumer; closing the plugin's iterator"
            );
            opened.close();
            return false;
        }
        delivered += 1;
        if delivered % DRAIN_EVERY == 0 {
            drain();
        }
    }
}
