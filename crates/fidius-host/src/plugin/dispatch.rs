//! One call inside an attached interpreter: bytes in, one Python call, bytes out.

use std::borrow::Cow;

use fidius_core::interface::{OwnedMethodDescriptor, WireMode};
use fidius_core::{CallError, PluginError};
use fidius_ffi::{Interp, PyObj, Raised};

use crate::plugin::loader::LoadedInstance;

/// A call's arguments as they reach the instance.
pub(crate) enum Payload<'p, 'i> {
    /// A JSON array of the positional arguments, or a raw method's bytes.
    Encoded(&'p [u8]),
    /// A raw method's argument, already a `bytes` object (a worker builds it in place from shared
    /// memory).
    Bytes(PyObj<'i>),
}

/// Calls method `index` of the loaded plugin with `payload` (a JSON array of the positional
/// arguments, or the raw bytes), encodes what it returns and hands the encoding to `deliver`,
/// still attached: the raw bytes of a returned `bytes` object borrowed from it (a caller that only
/// copies them somewhere, like a worker's mailbox, copies once; a mutable buffer is copied first, see
/// `PyObj::with_bytes`), JSON as the `Vec` it was written into.
pub(crate) fn dispatch<R>(
    py: Interp<'_>,
    instance: &LoadedInstance<'_>,
    method: &OwnedMethodDescriptor,
    index: usize,
    payload: &[u8],
    deliver: impl FnOnce(Cow<'_, [u8]>) -> R,
) -> Result<R, CallError> {
    dispatch_payload(
        py,
        instance,
        method,
        index,
        Payload::Encoded(payload),
        deliver,
    )
}

/// [`dispatch`] for arguments that may already be a Python object.
pub(crate) fn dispatch_payload<'i, R>(
    py: Interp<'i>,
    instance: &LoadedInstance<'_>,
    method: &OwnedMethodDescriptor,
    index: usize,
    payload: Payload<'_, 'i>,
    deliver: impl FnOnce(Cow<'_, [u8]>) -> R,
) -> Result<R, CallError> {
    let Some(Some(function)) = instance.methods.get(index) else {
        return Err(CallError::NotImplemented {
            method: method.name.to_owned(),
        });
    };
    let function = function.bind(py);
    let invalid_result = |reason: String| CallError::InvalidResult {
        method: method.name.to_owned(),
        reason,
    };
    match method.wire {
        WireMode::Raw => {
            let input = match payload {
                Payload::Encoded(bytes) => py
                    .bytes(bytes)
                    .map_err(|error| invalid_arguments(method, &error))?,
                Payload::Bytes(input) => input,
            };
            let output = function
                .call(&[&input])
                .map_err(|raised| exception_to_error(instance, method, &raised))?;
            output
                .with_bytes(|bytes| deliver(Cow::Borrowed(bytes)))
                .map_err(|error| invalid_result(error.to_string()))
        }
        WireMode::TypedJson => {
            let args = match payload {
                Payload::Encoded(json) => typed_arguments(py, method, json)?,
                Payload::Bytes(json) => json
                    .with_bytes(|json| typed_arguments(py, method, json))
                    .map_err(|error| invalid_arguments(method, &error))??,
            };
            let args: Vec<&PyObj<'_>> = args.iter().collect();
            let output = function
                .call(&args)
                .map_err(|raised| exception_to_error(instance, method, &raised))?;
            output
                .to_json()
                .map(|json| deliver(Cow::Owned(json)))
                .map_err(|error| invalid_result(error.to_string()))
        }
    }
}

/// The error for arguments that could not be turned into Python objects.
pub(crate) fn invalid_arguments(
    method: &OwnedMethodDescriptor,
    reason: &dyn std::fmt::Display,
) -> CallError {
    CallError::InvalidArguments {
        method: method.name.to_owned(),
        reason: reason.to_string(),
    }
}

/// Parses the JSON array of positional arguments into Python objects, passed to the function as
/// they are (vectorcall: no list or tuple of them is built). The handle has checked them against the
/// method's argument types (`ArgumentShapes`) before the call was sent.
pub(crate) fn typed_arguments<'i>(
    py: Interp<'i>,
    method: &OwnedMethodDescriptor,
    payload: &[u8],
) -> Result<Vec<PyObj<'i>>, CallError> {
    py.json_to_arguments(payload)
        .map_err(|error| invalid_arguments(method, &error))
}

/// A raised exception as a call error: the SDK's `PluginError` keeps its code, message and details;
/// `NotImplementedError` from an optional method (the generated stub's body, left as it is) is
/// [`CallError::NotImplemented`], as if the function were absent; anything else (including
/// `SystemExit` and `KeyboardInterrupt`) becomes [`CallError::Python`].
pub(crate) fn exception_to_error(
    instance: &LoadedInstance<'_>,
    method: &OwnedMethodDescriptor,
    raised: &Raised<'_>,
) -> CallError {
    let exception = raised.object();
    let plugin_error_class = instance.plugin_error_class.bind(exception.interp());
    if exception.is_instance(&plugin_error_class) {
        if let Some(error) = plugin_error(exception) {
            return CallError::Plugin(error);
        }
    }
    if method.is_optional()
        && exception.is_instance(&instance.not_implemented_class.bind(exception.interp()))
    {
        return CallError::NotImplemented {
            method: method.name.to_owned(),
        };
    }
    let described = raised.describe();
    CallError::Python {
        method: method.name.to_owned(),
        exception_type: described.type_name,
        message: described.message,
        traceback: described.traceback,
    }
}

/// Reads `code`, `message` and `details` off a `PluginError`; `None` if code or message is missing.
///
/// Details that have no JSON form are replaced by a string saying why, so the code and message still
/// reach the host.
fn plugin_error(exception: &PyObj<'_>) -> Option<PluginError> {
    let code = exception.getattr("code").ok()?.to_str_lossy().ok()?;
    let message = exception.getattr("message").ok()?.to_str_lossy().ok()?;
    let details = exception.getattr("details").ok()?;
    let details = if details.is_none() {
        None
    } else {
        Some(match details.to_json() {
            Ok(json) => serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null),
            Err(error) => {
                serde_json::Value::String(format!("<details not JSON-serialisable: {error}>"))
            }
        })
    };
    let error = PluginError::new(code, message);
    Some(match details {
        Some(details) => error.with_details(details),
        None => error,
    })
}
