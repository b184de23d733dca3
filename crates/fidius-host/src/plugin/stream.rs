//! A streamed result inside an attached interpreter, in either tier: the method is called once,
//! what it returns (a generator, or any iterable) is opened with `iter()`, then pulled one item at a
//! time, each item encoded as JSON; closing it runs a generator's `finally` blocks.

use fidius_core::interface::{OwnedMethodDescriptor, WireMode};
use fidius_core::CallError;
use fidius_ffi::{Interp, PyObj};

use crate::plugin::dispatch::exception_to_error;
use crate::plugin::loader::LoadedInstance;
use crate::plugin::stream_input::StreamedCall;

/// The plugin's iterator for one streamed call.
pub(crate) struct OpenedStream<'i> {
    /// The call's arguments, kept for its streamed argument (ended with the stream).
    call: StreamedCall<'i>,
    iterator: PyObj<'i>,
    next: PyObj<'i>,
    stop_iteration: PyObj<'i>,
}

impl Drop for OpenedStream<'_> {
    /// However the stream ends, its streamed argument (if any) cannot be read any more.
    fn drop(&mut self) {
        self.call.end();
    }
}

/// What one pull gave.
pub(crate) enum Pulled {
    /// The next item's JSON.
    Item(Vec<u8>),
    /// The iterator is exhausted.
    End,
    /// It raised, or yielded something without a JSON form; the stream ends here.
    Failed(CallError),
}

/// Calls streaming method `index` with `payload` (the JSON array of its arguments) and opens what
/// it returns as an iterator.
pub(crate) fn open<'i>(
    py: Interp<'i>,
    instance: &LoadedInstance<'_>,
    method: &OwnedMethodDescriptor,
    index: usize,
    payload: &[u8],
) -> Result<OpenedStream<'i>, CallError> {
    let Some(Some(function)) = instance.methods.get(index) else {
        return Err(CallError::NotImplemented {
            method: method.name.clone(),
        });
    };
    if method.wire != WireMode::TypedJson || !method.streams_result {
        return Err(CallError::InvalidArguments {
            method: method.name.clone(),
            reason: "the method does not stream its result".to_owned(),
        });
    }
    let invalid_result = |reason: String| CallError::InvalidResult {
        method: method.name.clone(),
        reason,
    };
    let builtins = py
        .import("builtins")
        .map_err(|error| invalid_result(error.to_string()))?;
    let iter = builtins
        .getattr("iter")
        .map_err(|error| invalid_result(error.to_string()))?;
    let stop_iteration = builtins
        .getattr("StopIteration")
        .map_err(|error| invalid_result(error.to_string()))?;
    // A streamed argument (a bidirectional method) is in `call`, read as the stream is.
    let call = StreamedCall::new(py, method, payload)?;
    let returned = function
        .bind(py)
        .call(&call.arguments())
        .map_err(|raised| {
            call.end();
            exception_to_error(instance, method, &raised)
        })?;
    let iterator = iter.call(&[&returned]).map_err(|_| {
        call.end();
        invalid_result(format!(
            "a streaming method must return an iterable (a generator, say), not {}",
            returned.type_name()
        ))
    })?;
    let next = iterator
        .getattr("__next__")
        .map_err(|error| invalid_result(error.to_string()))?;
    Ok(OpenedStream {
        call,
        iterator,
        next,
        stop_iteration,
    })
}

impl OpenedStream<'_> {
    /// Pulls the next item.
    pub(crate) fn pull(
        &self,
        instance: &LoadedInstance<'_>,
        method: &OwnedMethodDescriptor,
    ) -> Pulled {
        match self.next.call(&[]) {
            Ok(item) => match item.to_json() {
                Ok(json) => Pulled::Item(json),
                Err(error) => Pulled::Failed(CallError::InvalidResult {
                    method: method.name.clone(),
                    reason: format!("a streamed item: {error}"),
                }),
            },
            Err(raised) if raised.object().is_instance(&self.stop_iteration) => Pulled::End,
            Err(raised) => Pulled::Failed(exception_to_error(instance, method, &raised)),
        }
    }

    /// Ends the stream early: a generator's `close()` raises `GeneratorExit` at its `yield`, so its
    /// `finally` blocks and `with` exits run. An iterator without `close` is just let go.
    pub(crate) fn close(self) {
        let Ok(close) = self.iterator.getattr("close") else {
            return;
        };
        if let Err(raised) = close.call(&[]) {
            let described = raised.describe();
            tracing::warn!(exception = %described.type_name, message = %described.message, "closing a plugin's stream raised");
        }
    }
}
