//! A streamed argument (`items: Stream<T>` in the trait), host side: the caller's iterator, pulled
//! one item at a time as the plugin's Python iterator asks for the next one.
//!
//! The plugin's function gets a `fidius._StreamedArgument` at the argument's declared position.
//! Each `next()` on it calls the host through the same builtin as `fidius.host.<name>()`, under the
//! reserved name [`PULL`]: in the sub-interpreter tier the instance thread answers it from the
//! [`InputFeed`] directly; in the process tier the worker sends it as a `CALLBACK` and the host
//! thread waiting for the worker answers it (a pull while no streamed argument is being passed is
//! a protocol error: the worker is killed). So exactly one item is in flight: the host never reads
//! its iterator ahead of the plugin, and never buffers it.
//!
//! Each item's JSON is checked against `T` before it crosses. A bad item, or a host iterator that
//! panics, makes that `next()` raise `fidius.HostError` in the plugin and the call fail with
//! [`CallError::InvalidArguments`] naming the item, whatever the plugin does with the exception.
//! When the call ends (also early, the plugin not having read everything) the iterator is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use fidius_core::interface::{ArgumentShapes, OwnedMethodDescriptor};
use fidius_core::CallError;

/// The name a pull travels under (it cannot be a host function's: those are identifiers). The
/// SDK's `_StreamedArgument` uses the same string.
pub(crate) const PULL: &str = "\u{0}fidius:next";

/// The caller's items: each one's JSON, or why it has none (a typed item serde could not encode).
pub(crate) type Items = Box<dyn Iterator<Item = Result<Vec<u8>, String>> + Send>;

/// One call's streamed argument.
pub(crate) struct InputFeed {
    state: Mutex<FeedState>,
}

struct FeedState {
    /// `None` once the call ended, the items ran out, or one failed.
    items: Option<Items>,
    /// Items handed to the plugin so far.
    taken: u64,
    /// Why the call fails, once an item was refused or the iterator panicked.
    failure: Option<CallError>,
    /// `T`'s shape, checked on `[item]`.
    shape: ArgumentShapes,
    method: String,
    argument: String,
}

impl InputFeed {
    /// The feed for `method`'s streamed argument, `None` if the method has none.
    pub(crate) fn new(method: &OwnedMethodDescriptor, items: Items) -> Option<Arc<Self>> {
        let position = method.streamed_argument?;
        let (argument, ty) = method.args.get(position)?;
        Some(Arc::new(Self {
            state: Mutex::new(FeedState {
                items: Some(items),
                taken: 0,
                failure: None,
                shape: ArgumentShapes::for_arguments([(argument.as_str(), ty.as_str())]),
                method: method.name.clone(),
                argument: argument.clone(),
            }),
        }))
    }

    fn state(&self) -> MutexGuard<'_, FeedState> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers one pull: `[item]` (a JSON array of the next item), `[]` once there are no more, or
    /// the message the plugin's `fidius.HostError` carries.
    pub(crate) fn pull(&self) -> Result<Vec<u8>, String> {
        let mut state = self.state();
        if let Some(failure) = &state.failure {
            return Err(failure.to_string());
        }
        let Some(items) = state.items.as_mut() else {
            return Ok(b"[]".to_vec());
        };
        let next = catch_unwind(AssertUnwindSafe(|| items.next()));
        let number = state.taken + 1;
        let refused = |state: &mut FeedState, reason: String| {
            let error = CallError::InvalidArguments {
                method: state.method.clone(),
                reason: format!(
                    "streamed argument `{}`, item {number}: {reason}",
                    state.argument
                ),
            };
            let message = error.to_string();
            state.failure = Some(error);
            state.items = None;
            Err(message)
        };
        match next {
            Err(_) => refused(&mut state, "the host's iterator panicked".to_owned()),
            Ok(None) => {
                state.items = None;
                Ok(b"[]".to_vec())
            }
            Ok(Some(Err(reason))) => refused(&mut state, format!("cannot be encoded: {reason}")),
            Ok(Some(Ok(item))) => {
                let mut wrapped = Vec::with_capacity(item.len() + 2);
                wrapped.push(b'[');
                wrapped.extend_from_slice(&item);
                wrapped.push(b']');
                if let Err(mismatch) = state.shape.check(&wrapped) {
                    return refused(&mut state, item_problem(&mismatch));
                }
                state.taken = number;
                Ok(wrapped)
            }
        }
    }

    /// Ends the feed: the caller's iterator is dropped; later pulls get the end.
    pub(crate) fn finish(&self) {
        let items = self.state().items.take();
        drop(items);
    }

    /// The error the call ends with because of its streamed argument, if any (taken: the one who
    /// reports it takes it).
    pub(crate) fn failure(&self) -> Option<CallError> {
        self.state().failure.take()
    }

    /// The call's outcome, the feed's failure taking precedence; ends the feed.
    pub(crate) fn settle<R>(&self, result: Result<R, CallError>) -> Result<R, CallError> {
        self.finish();
        match self.failure() {
            Some(failure) => Err(failure),
            None => result,
        }
    }

    /// [`settle`](Self::settle) for a caller that must not wait: when a pull is still running (the
    /// call timed out while the host's iterator was producing, on an instance thread), the result
    /// stands and whoever serves the pull ends the feed.
    pub(crate) fn settle_now<R>(&self, result: Result<R, CallError>) -> Result<R, CallError> {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return result,
        };
        let items = state.items.take();
        let failure = state.failure.take();
        drop(state);
        drop(items);
        match failure {
            Some(failure) => Err(failure),
            None => result,
        }
    }
}

/// An item's mismatch, said about the item (the check ran on a one-element array).
fn item_problem(mismatch: &fidius_core::interface::ArgumentMismatch) -> String {
    use fidius_core::interface::ArgumentMismatch;
    match mismatch {
        ArgumentMismatch::Type {
            at,
            expected,
            found,
            ..
        } if at.is_empty() => format!("expected {expected}, found {found}"),
        ArgumentMismatch::Type {
            at,
            expected,
            found,
            ..
        } => format!("at {at}: expected {expected}, found {found}"),
        ArgumentMismatch::Syntax(_) | ArgumentMismatch::Count { .. } => {
            "not one JSON value".to_owned()
        }
        ArgumentMismatch::NotAnArray => "not JSON".to_owned(),
    }
}

/// Serves the host calls of a plugin call with a streamed argument: pulls from `feed`, anything
/// else goes to `others` (the host functions, or [`no_host_functions`] in a stream).
pub(crate) fn serving<'a>(
    feed: &'a InputFeed,
    others: impl Fn(&str, &[u8]) -> Result<Vec<u8>, String> + 'a,
) -> impl Fn(&str, &[u8]) -> Result<Vec<u8>, String> + 'a {
    move |name, args| {
        if name == PULL {
            feed.pull()
        } else {
            others(name, args)
        }
    }
}

/// What a bidirectional method's generator gets for a host function: as in any streaming method,
/// host functions are served only to one-shot calls.
pub(crate) fn no_host_functions(name: &str, _args: &[u8]) -> Result<Vec<u8>, String> {
    Err(format!(
        "fidius.host.{}: host functions cannot be called from a streaming method",
        name.chars()
            .take(crate::callback::MAX_NAME)
            .collect::<String>()
    ))
}
