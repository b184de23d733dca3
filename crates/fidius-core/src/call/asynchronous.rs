//! Calling plugin methods from async code: [`AsyncPluginCall`], which a host handle implements,
//! and what the generated `<Trait>AsyncClient<H>` calls it with.

use std::future::Future;

use serde::de::DeserializeOwned;

use super::{CallError, PluginCall};

/// A loaded plugin that can be called without blocking the calling thread: each call returns a
/// future that completes when the plugin answered. The wire contract is [`PluginCall`]'s; the
/// arguments are owned because the call outlives the borrow of the caller's data.
///
/// Implementations must not tie their futures to an async runtime (they are polled by whatever
/// executor the host uses) and must not block the thread that polls them.
pub trait AsyncPluginCall: PluginCall {
    /// A call in flight. What dropping it does is the implementor's to document.
    type Pending: Future<Output = Result<Vec<u8>, CallError>> + Send + 'static;

    /// Calls a typed-JSON method; `args_json` is the JSON array of its arguments.
    fn call_typed_json_async(&self, method_index: usize, args_json: Vec<u8>) -> Self::Pending;

    /// Calls a `#[wire(raw)]` method.
    fn call_raw_async(&self, method_index: usize, input: Vec<u8>) -> Self::Pending;
}

impl<T: AsyncPluginCall + ?Sized> AsyncPluginCall for &T {
    type Pending = T::Pending;

    fn call_typed_json_async(&self, method_index: usize, args_json: Vec<u8>) -> Self::Pending {
        (**self).call_typed_json_async(method_index, args_json)
    }

    fn call_raw_async(&self, method_index: usize, input: Vec<u8>) -> Self::Pending {
        (**self).call_raw_async(method_index, input)
    }
}

/// What a generated async client method starts: the call's future, or the error found before it
/// could start (an optional method the plugin lacks, arguments that do not encode).
fn started<H: AsyncPluginCall>(
    handle: &H,
    method_index: usize,
    method: &str,
    optional: bool,
    start: impl FnOnce(&H) -> Result<H::Pending, CallError>,
) -> Result<H::Pending, CallError> {
    if optional {
        super::__private::ensure_implemented(handle, method_index, method)?;
    }
    start(handle)
}

/// Starts the call with `args_json` (the arguments as
/// [`encode_arguments`](super::__private::encode_arguments) encoded them, or why they did not
/// encode) now; the future decodes `R`. `optional`: the method is `#[optional]` (a missing one
/// fails at once). The arguments arrive encoded so that the future captures none of their
/// lifetimes (an argument may be a `&str`; the future is `'static`).
pub fn call_json_async<R: DeserializeOwned, H: AsyncPluginCall>(
    handle: &H,
    method_index: usize,
    method: &str,
    optional: bool,
    args_json: Result<Vec<u8>, CallError>,
) -> impl Future<Output = Result<R, CallError>> + Send + 'static {
    let method = method.to_owned();
    let pending = started(handle, method_index, &method, optional, |handle| {
        Ok(handle.call_typed_json_async(method_index, args_json?))
    });
    async move {
        let result = pending?.await?;
        serde_json::from_slice(&result).map_err(|source| CallError::DecodeResult { method, source })
    }
}

/// Starts a raw call with `input` now.
pub fn call_raw_async<H: AsyncPluginCall>(
    handle: &H,
    method_index: usize,
    method: &str,
    optional: bool,
    input: Vec<u8>,
) -> impl Future<Output = Result<Vec<u8>, CallError>> + Send + 'static {
    let pending = started(handle, method_index, method, optional, |handle| {
        Ok(handle.call_raw_async(method_index, input))
    });
    async move { pending?.await }
}
