//! A streamed argument inside an attached interpreter, in either tier: the `fidius._StreamedArgument`
//! iterator the plugin's function receives at the argument's declared position (its items are
//! pulled from the host: see `crate::stream_input`), and ending it once the call is over, so that
//! an iterator kept past its call raises a clear error instead of reading another call's items.

use fidius_core::interface::OwnedMethodDescriptor;
use fidius_core::CallError;
use fidius_ffi::{Interp, PyObj};

use crate::plugin::dispatch::{exception_to_error, invalid_arguments, typed_arguments};
use crate::plugin::loader::LoadedInstance;

/// A call's positional arguments, the streamed one among them.
pub(crate) struct StreamedCall<'i> {
    /// The other arguments, from the call's JSON array, in declared order.
    others: Vec<PyObj<'i>>,
    /// The iterator, and where it goes; `None` for a method without a streamed argument.
    streamed: Option<(usize, PyObj<'i>)>,
}

impl<'i> StreamedCall<'i> {
    /// Parses `payload` (the JSON array of the arguments other than the streamed one) and, when
    /// the method has a streamed argument, makes its iterator.
    pub(crate) fn new(
        py: Interp<'i>,
        method: &OwnedMethodDescriptor,
        payload: &[u8],
    ) -> Result<Self, CallError> {
        let others = typed_arguments(py, method, payload)?;
        let Some(position) = method.streamed_argument else {
            return Ok(Self {
                others,
                streamed: None,
            });
        };
        if position > others.len() {
            return Err(invalid_arguments(
                method,
                &format!(
                    "the streamed argument is argument {position}, but only {} others came",
                    others.len()
                ),
            ));
        }
        let argument = method
            .args
            .get(position)
            .map_or("_", |(name, _)| name.as_str());
        let what = format!("the streamed argument `{argument}` of `{}`", method.name);
        let iterator = (|| -> Result<PyObj<'i>, String> {
            let class = py
                .eval("__import__('sys').modules['fidius']._StreamedArgument")
                .map_err(|error| error.to_string())?;
            let builtin = py.host_call_builtin().map_err(|error| error.to_string())?;
            let what = py.str(&what).map_err(|error| error.to_string())?;
            class
                .call(&[&builtin, &what])
                .map_err(|raised| raised.describe().message)
        })()
        .map_err(|error| invalid_arguments(method, &error))?;
        Ok(Self {
            others,
            streamed: Some((position, iterator)),
        })
    }

    /// The arguments in declared order.
    pub(crate) fn arguments(&self) -> Vec<&PyObj<'i>> {
        let mut arguments: Vec<&PyObj<'i>> = self.others.iter().collect();
        if let Some((position, iterator)) = &self.streamed {
            arguments.insert(*position, iterator);
        }
        arguments
    }

    /// Ends the streamed argument: using it from now on raises `RuntimeError`.
    pub(crate) fn end(&self) {
        let Some((_, iterator)) = &self.streamed else {
            return;
        };
        if let Err(raised) = iterator
            .getattr("_fidius_end")
            .map_err(|error| error.to_string())
            .and_then(|end| end.call(&[]).map_err(|raised| raised.describe().message))
        {
            tracing::warn!(error = %raised, "ending a streamed argument failed");
        }
    }
}

/// Calls method `index` (typed, not streaming its result) with its streamed argument and encodes
/// the result as JSON.
pub(crate) fn dispatch(
    py: Interp<'_>,
    instance: &LoadedInstance<'_>,
    method: &OwnedMethodDescriptor,
    index: usize,
    payload: &[u8],
) -> Result<Vec<u8>, CallError> {
    let Some(Some(function)) = instance.methods.get(index) else {
        return Err(CallError::NotImplemented {
            method: method.name.clone(),
        });
    };
    let call = StreamedCall::new(py, method, payload)?;
    let returned = function.bind(py).call(&call.arguments());
    call.end();
    let returned = returned.map_err(|raised| exception_to_error(instance, method, &raised))?;
    returned
        .to_json()
        .map_err(|error| CallError::InvalidResult {
            method: method.name.clone(),
            reason: error.to_string(),
        })
}
