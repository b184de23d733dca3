//! Where a plugin's instances run. A [`PythonPluginHandle`](crate::PythonPluginHandle) owns one
//! [`Backend`] and does everything that does not depend on the tier itself: the method, wire-mode,
//! "implemented" and argument checks, the call's deadline, the timeout count, the loaded versions
//! and the reload protocol. A backend runs calls on its instances and swaps in new versions.
//!
//! * `thread`: own-GIL sub-interpreters, each on an instance thread of the host, fed from one queue.
//! * `process`: one worker process per instance, each behind a shared-memory mailbox.
//!
//! A new backend (a Rust cdylib, say) implements [`Backend`], gets a [`Tier`](crate::Tier), and one
//! arm in `PythonPluginHandle::start_with_info`, whose `match` on the tier is exhaustive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fidius_core::CallError;

use crate::error::LoadError;
use crate::options::LoadOptions;
use crate::plugin::loader::Accepted;
use crate::plugin::shared::PluginShared;
use crate::plugin::version::Version;
use crate::stream::StreamSink;
use crate::stream_input::InputFeed;

pub(crate) mod process;
pub(crate) mod rust;
pub(crate) mod thread;
pub(crate) mod wait;

/// When a call must have finished, and the timeout it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) after: Duration,
}

impl Deadline {
    /// The deadline of a call starting now; `None` for no timeout, or one too large to represent.
    /// Calls without a timeout never read the clock.
    pub(crate) fn after(timeout: Option<Duration>) -> Option<Self> {
        let after = timeout?;
        let at = Instant::now().checked_add(after)?;
        Some(Self { at, after })
    }
}

/// One call, as the handle hands it to its backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// The method's index in the descriptor.
    pub(crate) index: usize,
    /// The JSON array of arguments, or a raw method's bytes.
    pub(crate) payload: &'a [u8],
    /// Set only for calls with a timeout.
    pub(crate) deadline: Option<Deadline>,
}

/// Where the answer to a [`DetachedCall`] goes: no thread waits for it.
pub(crate) trait DetachedReply: Send + Sync {
    /// Whether the call is still wanted, asked once just before it runs; `false` (its future was
    /// dropped, or it timed out while queued): it is dropped unrun.
    fn claim(&self) -> bool;

    /// The call's result; `None` when it was dropped unanswered (its instance went away).
    fn answer(&self, result: Option<Result<Vec<u8>, CallError>>);
}

/// A call handed to a backend without a thread waiting for its answer (an async call), checked as
/// a [`Call`] is.
pub(crate) struct DetachedCall {
    pub(crate) index: usize,
    pub(crate) payload: Vec<u8>,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) reply: Arc<dyn DetachedReply>,
}

/// What a backend starts from: the plugin's shared state, the version its first instances load, and
/// the load options (`instances`, timeouts, `strict`, ...). Each backend's `start(BackendStart) ->
/// Result<(Self, Accepted), LoadError>` starts them all and waits until each has loaded.
pub(crate) struct BackendStart<'a> {
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) version: &'a Arc<Version>,
    pub(crate) options: &'a LoadOptions,
}

/// One tier's way of running a plugin's instances. Dropping a backend shuts it down as
/// [`shutdown`](Self::shutdown) does.
pub(crate) trait Backend: Send + Sync {
    /// Runs the call on an idle instance. The handle has checked the method (it exists, has this
    /// wire mode, is implemented) and a typed call's arguments.
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, CallError>;

    /// Starts a call of a method that streams its result (checked like [`call`](Self::call)); the
    /// items, or the error that ends them, go to `sink`. The stream holds one instance until the
    /// plugin's iterator ends or the consumer drops its end (then the iterator is closed). `call`'s
    /// deadline is unused: the sink carries the item and whole-stream timeouts.
    fn open_stream(&self, call: Call<'_>, sink: StreamSink) -> Result<(), CallError>;

    /// [`call`](Self::call) for a method with a streamed argument: the plugin pulls `input`'s
    /// items while it runs (one in flight); the feed's failure, if any, is the call's error.
    fn call_with_input(&self, call: Call<'_>, input: Arc<InputFeed>) -> Result<Vec<u8>, CallError>;

    /// [`open_stream`](Self::open_stream) for a bidirectional method (a streamed argument and a
    /// streamed result): the plugin pulls `input`'s items while it makes its own.
    fn open_stream_with_input(
        &self,
        call: Call<'_>,
        input: Arc<InputFeed>,
        sink: StreamSink,
    ) -> Result<(), CallError>;

    /// Queues `call` and returns at once; the instance that runs it answers through `call.reply`
    /// from its own thread. A backend whose calls need a waiting thread to drive them (a worker's
    /// mailbox) gives the call back, and the caller lends it one.
    fn call_detached(&self, call: DetachedCall) -> Result<(), DetachedCall> {
        Err(call)
    }

    /// Starts a new set of instances of `version` and, once every one of them has loaded, serves
    /// from it; the old instances end once their calls finished, releasing their version. On error
    /// the old instances keep serving.
    fn reload(&self, version: &Arc<Version>) -> Result<Accepted, LoadError>;

    /// The backend's counters: instances, retired instances, detached threads, worker crashes and
    /// restarts (the handle adds the timeouts).
    fn stats(&self) -> PoolStats;

    /// Stops taking calls, lets the ones already taken finish and ends the instances. Idempotent.
    fn shutdown(&mut self);
}

/// Counters of a plugin's pool, from [`PythonPluginHandle::stats`](crate::PythonPluginHandle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Instances serving calls now.
    pub instances: usize,
    /// Calls that ended with [`CallError::Timeout`](crate::CallError::Timeout).
    pub timeouts: u64,
    /// Instances given up on because they did not come back from an interrupted call (or load)
    /// within the grace period, or whose thread panicked while serving; each was replaced by a
    /// fresh instance.
    pub retired_instances: u64,
    /// Threads of retired instances that are still running (stuck in C code), detached from the
    /// pool. Each holds its interpreter's memory until the code it is stuck in returns.
    pub detached_threads: u64,
    /// Process tier: worker processes that died (crashed, exited, were killed for memory) or
    /// broke the protocol. Workers killed at a call's timeout count under `timeouts` instead.
    pub worker_crashes: u64,
    /// Process tier: worker processes started to replace one that died, timed out or was killed.
    pub worker_restarts: u64,
    /// Process tier: worker processes started by forking the plugin's warm template (see
    /// [`LoadOptions::worker_template`](crate::LoadOptions::worker_template)).
    pub worker_forks: u64,
    /// Process tier: times a worker started cold although templates are on, because the template
    /// did not start, refused to fork (it had threads) or was gone; the reason is logged (target
    /// `fidius::worker_template`).
    pub worker_template_fallbacks: u64,
}
