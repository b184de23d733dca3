//! Calling a method that streams its result (`-> Stream<T>`), in either tier.

use std::sync::Arc;

use fidius_core::interface::WireMode;
use fidius_core::{CallError, StreamingCall};
use serde::de::DeserializeOwned;

use super::PythonPluginHandle;
use crate::backend::Call;
use crate::options::CallOptions;
use crate::stream::{self, PluginStream, RawPluginStream, StreamSettings};
use crate::stream_input::InputFeed;

impl PythonPluginHandle {
    /// Calls method `method_index`, which streams its result, with `args_json` (the JSON array of
    /// its arguments, as for [`call_typed_json`](fidius_core::PluginCall::call_typed_json)); each
    /// item comes as its JSON. The plugin's function returns a generator (or any iterable), run
    /// lazily as the stream is read. See [`RawPluginStream`] for backpressure, timeouts and drop.
    ///
    /// The stream holds one of the plugin's instances while it is open: with one instance, other
    /// calls wait until it ends or is dropped.
    pub fn call_stream_raw(
        &self,
        method_index: usize,
        args_json: &[u8],
        options: &CallOptions,
    ) -> Result<RawPluginStream, CallError> {
        let method = self.check_call(method_index, WireMode::TypedJson, args_json)?;
        if !method.streams_result {
            return Err(CallError::InvalidArguments {
                method: method.name.clone(),
                reason: "the method does not stream its result; call it with `call_typed_json`"
                    .to_owned(),
            });
        }
        if method.streams_argument {
            return Err(CallError::InvalidArguments {
                method: method.name.clone(),
                reason: "the method takes a streamed argument; call it with \
                         `call_stream_with_stream_raw`"
                    .to_owned(),
            });
        }
        self.open_stream_with(method_index, args_json, None, options)
    }

    /// Opens a checked streamed call, with its streamed argument's feed for a bidirectional one.
    pub(super) fn open_stream_with(
        &self,
        method_index: usize,
        args_json: &[u8],
        input: Option<Arc<InputFeed>>,
        options: &CallOptions,
    ) -> Result<RawPluginStream, CallError> {
        let plugin = &*self.plugin;
        let settings = StreamSettings {
            window: options.stream_window.unwrap_or(plugin.stream_window),
            item_timeout: options.timeout.unwrap_or(plugin.call_timeout),
            stream_timeout: options.stream_timeout.or(plugin.stream_timeout),
            grace: plugin.stream_grace,
        };
        let (sink, items) =
            stream::channel(self, Arc::clone(&plugin.shared), method_index, settings);
        let call = Call {
            index: method_index,
            payload: args_json,
            deadline: None,
        };
        match input {
            None => plugin.backend.open_stream(call, sink)?,
            Some(input) => plugin.backend.open_stream_with_input(call, input, sink)?,
        }
        Ok(items)
    }

    /// [`call_stream_raw`](Self::call_stream_raw) with each item decoded as `T`.
    pub fn call_stream_typed_json<T: DeserializeOwned>(
        &self,
        method_index: usize,
        args_json: &[u8],
        options: &CallOptions,
    ) -> Result<PluginStream<T>, CallError> {
        let raw = self.call_stream_raw(method_index, args_json, options)?;
        let method = self
            .descriptor()
            .method(method_index)
            .map_or_else(String::new, |method| method.name.clone());
        Ok(PluginStream::new(raw, method))
    }
}

/// What the typed client's streaming methods call.
impl StreamingCall for PythonPluginHandle {
    type Items<T: DeserializeOwned + 'static> = PluginStream<T>;

    fn call_stream_typed<T: DeserializeOwned + 'static>(
        &self,
        method_index: usize,
        args_json: &[u8],
    ) -> Result<PluginStream<T>, CallError> {
        self.call_stream_typed_json(method_index, args_json, &CallOptions::default())
    }
}
