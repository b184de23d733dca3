//! Calling a method that takes a streamed argument (`items: Stream<T>`), in either tier: one-shot
//! (`-> R`) or bidirectional (`-> Stream<U>`).

use std::sync::Arc;

use fidius_core::interface::{OwnedMethodDescriptor, WireMode};
use fidius_core::CallError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::PythonPluginHandle;
use crate::backend::{Call, Deadline};
use crate::options::CallOptions;
use crate::stream::{PluginStream, RawPluginStream};
use crate::stream_input::{InputFeed, Items};

impl PythonPluginHandle {
    /// Calls method `method_index`, which takes a streamed argument and returns one result, with
    /// `args_json` (the JSON array of its *other* arguments, in declared order) and `input`, the
    /// streamed argument's items, each as its JSON.
    ///
    /// The plugin's function gets an iterator at the streamed argument's declared position; each
    /// `next()` on it takes the next item from `input`, on the host thread serving the call (so
    /// exactly one item is in flight, none is read ahead, nothing is buffered). Each item is checked
    /// against the argument's item type first. A refused item, or an `input` that panics, fails
    /// the call with [`CallError::InvalidArguments`] naming the item's number (the plugin's
    /// `next()` raises `fidius.HostError` meanwhile). The plugin may stop reading early; `input` is
    /// dropped when the call ends. The call's timeout (`CallOptions::timeout`,
    /// `LoadOptions::call_timeout`) covers the whole call, the pulls included.
    pub fn call_with_stream_raw<I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError>
    where
        I: IntoIterator<Item = Vec<u8>>,
        I::IntoIter: Send + 'static,
    {
        self.call_fed(method_index, args_json, raw(input), options)
    }

    /// [`call_with_stream_raw`](Self::call_with_stream_raw) with typed items, each encoded with
    /// serde as it is pulled (one that cannot be is refused as a bad item), and the result decoded
    /// as `R`.
    pub fn call_with_stream_typed_json<T, R, I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
        options: &CallOptions,
    ) -> Result<R, CallError>
    where
        T: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let result = self.call_fed(method_index, args_json, encoded(input), options)?;
        serde_json::from_slice(&result).map_err(|error| CallError::InvalidResult {
            method: self.method_name(method_index),
            reason: error.to_string(),
        })
    }

    /// Calls a bidirectional method (a streamed argument and `-> Stream<U>`): as
    /// [`call_with_stream_raw`](Self::call_with_stream_raw) for the argument, and as
    /// [`call_stream_raw`](Self::call_stream_raw) for the result (backpressure, timeouts, drop).
    /// Dropping the stream drops `input` too.
    pub fn call_stream_with_stream_raw<I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
        options: &CallOptions,
    ) -> Result<RawPluginStream, CallError>
    where
        I: IntoIterator<Item = Vec<u8>>,
        I::IntoIter: Send + 'static,
    {
        let feed = self.input_feed(method_index, args_json, raw(input), true)?;
        self.open_stream_with(method_index, args_json, Some(feed), options)
    }

    /// [`call_stream_with_stream_raw`](Self::call_stream_with_stream_raw) with typed items and
    /// each result item decoded as `U`.
    pub fn call_stream_with_stream_typed_json<T, U, I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
        options: &CallOptions,
    ) -> Result<PluginStream<U>, CallError>
    where
        T: Serialize,
        U: DeserializeOwned,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let feed = self.input_feed(method_index, args_json, encoded(input), true)?;
        let raw = self.open_stream_with(method_index, args_json, Some(feed), options)?;
        Ok(PluginStream::new(raw, self.method_name(method_index)))
    }

    fn call_fed(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: Items,
        options: &CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let feed = self.input_feed(method_index, args_json, input, false)?;
        let timeout = options.timeout.unwrap_or(self.plugin.call_timeout);
        let _serving = self.serving(method_index)?;
        let result = self.plugin.backend.call_with_input(
            Call {
                index: method_index,
                payload: args_json,
                deadline: Deadline::after(timeout),
            },
            Arc::clone(&feed),
        );
        // Not `settle`: after a timeout an instance thread may still be in the host's iterator.
        let result = feed.settle_now(result);
        self.count_timeout(&result);
        result
    }

    /// The checks of a call with a streamed argument, and its feed.
    fn input_feed(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: Items,
        streams_result: bool,
    ) -> Result<Arc<InputFeed>, CallError> {
        let method = self.check_call(method_index, WireMode::TypedJson, args_json)?;
        let refused = |reason: &str| CallError::InvalidArguments {
            method: method.name.clone(),
            reason: reason.to_owned(),
        };
        if method.streams_result != streams_result {
            return Err(refused(if streams_result {
                "the method does not stream its result; call it with `call_with_stream_raw`"
            } else {
                "the method streams its result; call it with `call_stream_with_stream_raw`"
            }));
        }
        InputFeed::new(method, input)
            .ok_or_else(|| refused("the method takes no streamed argument; call it without one"))
    }

    fn method_name(&self, method_index: usize) -> String {
        self.descriptor()
            .method(method_index)
            .map_or_else(String::new, |method: &OwnedMethodDescriptor| {
                method.name.clone()
            })
    }
}

/// Raw items (each already an item's JSON) as the feed takes them.
fn raw<I>(input: I) -> Items
where
    I: IntoIterator<Item = Vec<u8>>,
    I::IntoIter: Send + 'static,
{
    Box::new(input.into_iter().map(Ok))
}

/// Typed items as the feed takes them: each encoded when it is pulled.
fn encoded<T: Serialize, I>(input: I) -> Items
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
{
    Box::new(
        input
            .into_iter()
            .map(|item| serde_json::to_vec(&item).map_err(|error| error.to_string())),
    )
}

/// What the typed client's functions for methods with a streamed argument call.
impl fidius_core::StreamedArgumentCall for PythonPluginHandle {
    fn call_with_stream_typed<T, R, I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
    ) -> Result<R, CallError>
    where
        T: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        self.call_with_stream_typed_json(method_index, args_json, input, &CallOptions::default())
    }

    fn call_stream_with_stream_typed<T, U, I>(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: I,
    ) -> Result<PluginStream<U>, CallError>
    where
        T: Serialize,
        U: DeserializeOwned + 'static,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        self.call_stream_with_stream_typed_json(
            method_index,
            args_json,
            input,
            &CallOptions::default(),
        )
    }
}
