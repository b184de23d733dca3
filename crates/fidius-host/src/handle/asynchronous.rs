//! Async calls: futures that complete when the plugin answered, for any executor.
//!
//! A call is checked at once (as a blocking call is), then, in the sub-interpreter tier, queued
//! straight on the plugin's own queue: the instance thread that serves it completes the call's
//! [`PendingCall`] and wakes its task (`Backend::call_detached`), one thread hop each way as for a
//! blocking call. Where a call needs a waiting thread to drive it (a worker process's mailbox,
//! or a plugin with host functions, whose reentrancy check holds for the call's duration on the
//! calling thread), it is queued for the handle's **async dispatch threads** instead:
//! `instances` threads named `fidius:<plugin>:async`, started by the first such call, that hand
//! queued calls to the backend one at a time each, exactly as a blocking caller would, and
//! complete the future with the result. Nothing of this runs on the executor: polling only looks
//! at the completion slot and stores the waker. One process-wide thread, `fidius:async-deadlines`,
//! completes a call at its deadline with the timeout: a call still queued then never runs, and a
//! call queued straight on the plugin's queue is timed out even if it runs (as a blocking caller
//! stops waiting), while the backend interrupts it (as it does a blocking call's).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::WireMode;
use fidius_core::{AsyncPluginCall, CallError};

use crate::backend::{wait, Deadline, DetachedCall, DetachedReply};
use crate::handle::PythonPluginHandle;
use crate::options::CallOptions;
use crate::plugin::shared::PluginShared;

/// A call made with [`AsyncPluginCall`] on a [`PythonPluginHandle`]: a future of the call's result,
/// which works under any executor (tokio, smol, async-std, `futures::executor`) and never blocks
/// the thread that polls it.
///
/// # What dropping it does
///
/// * A call still **queued** is cancelled: it never runs. In the sub-interpreter tier an async call
///   waits in the plugin's queue, in order with blocking calls, until an instance takes it; in the
///   process tier (and for plugins with host functions) it waits until one of the handle's
///   `instances` async dispatch threads hands it to the backend, so at most `instances` async
///   calls of one handle are handed over at a time, and one handed over may still wait there
///   behind blocking calls from other threads, and then runs.
/// * A call already **running** (or handed to the backend) runs to its end, and its result is
///   discarded. It is interrupted only if it has a timeout
///   ([`LoadOptions::call_timeout`](crate::LoadOptions::call_timeout) or
///   [`CallOptions::timeout`]), at its deadline, exactly as a blocking call would be; dropping the
///   future does not interrupt it sooner.
///
/// A deadline counts from the moment the call is made, time spent queued included: a call still
/// queued at its deadline completes with [`CallError::Timeout`] then and never runs.
#[must_use = "a call whose future is dropped before it is handed to the plugin never runs"]
pub struct PendingCall {
    state: State,
}

enum State {
    /// Failed before it was queued (a check, or no dispatch thread).
    Failed(Option<CallError>),
    Queued(Arc<Completion>),
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").finish_non_exhaustive()
    }
}

impl Future for PendingCall {
    type Output = Result<Vec<u8>, CallError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Failed(error) => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending, // polled after it completed
            },
            State::Queued(completion) => {
                let mut slot = completion.slot();
                match slot.result.take() {
                    Some(result) => Poll::Ready(result),
                    None => {
                        if !slot
                            .waker
                            .as_ref()
                            .is_some_and(|waker| waker.will_wake(context.waker()))
                        {
                            slot.waker = Some(context.waker().clone());
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let State::Queued(completion) = &self.state {
            completion.slot().abandoned = true;
        }
    }
}

/// Where an async call's result goes: written once (by a dispatch thread or the deadline thread),
/// taken by the future.
#[derive(Default)]
struct Completion {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    result: Option<Result<Vec<u8>, CallError>>,
    /// A result was written (it may since have been taken).
    finished: bool,
    /// A dispatch thread handed the call to the backend.
    started: bool,
    /// The future was dropped.
    abandoned: bool,
    waker: Option<Waker>,
}

impl Completion {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // Every write leaves the slot consistent, so a poisoned lock still holds a valid one.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the call started unless its future is gone or it already finished (timed out).
    fn start(&self) -> bool {
        let mut slot = self.slot();
        if slot.abandoned || slot.finished {
            return false;
        }
        slot.started = true;
        true
    }

    /// Completes the call with `result` (unless it already was) and wakes its task.
    fn finish(&self, result: Result<Vec<u8>, CallError>) {
        self.finish_if(result, false, || {});
    }

    /// Times out a call (unless it already finished; with `queued_only`, unless it started): counts
    /// the timeout in `timeouts` before its task can see it, then wakes the task.
    fn time_out(&self, error: CallError, timeouts: &AtomicU64, queued_only: bool) {
        self.finish_if(Err(error), queued_only, || {
            timeouts.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// `queued_only`: only if no dispatch thread has started the call. `won` runs once the call is
    /// known to be completed by this, before its task is woken.
    fn finish_if(&self, result: Result<Vec<u8>, CallError>, queued_only: bool, won: impl FnOnce()) {
        let waker = {
            let mut slot = self.slot();
            if slot.finished || (queued_only && slot.started) {
                return;
            }
            slot.finished = true;
            won();
            if !slot.abandoned {
                slot.result = Some(result);
            }
            slot.waker.take()
        };
        if let Some(waker) = waker {
            // The executor's code, run on the answering thread (an instance thread, in the
            // sub-interpreter tier): a waker that panics must not take that thread down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
        }
    }
}

/// One queued async call.
struct Job {
    /// Keeps the plugin loaded until the call is done (or cancelled).
    handle: PythonPluginHandle,
    index: usize,
    payload: Vec<u8>,
    deadline: Option<Deadline>,
    completion: Arc<Completion>,
}

impl Job {
    fn run(self) {
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline.at {
                // Past its deadline while queued (the deadline thread may already have said so).
                let shared = &self.handle.plugin.shared;
                let timed_out = shared.timed_out(self.index, deadline.after);
                self.completion.time_out(timed_out, &shared.timeouts, true);
                return;
            }
        }
        if !self.completion.start() {
            return; // cancelled: its future was dropped
        }
        let result = self.handle.run(self.index, &self.payload, self.deadline);
        self.completion.finish(result);
    }
}

/// An async call queued straight on a backend's own queue (`Backend::call_detached`): the instance
/// thread claims it just before running it and completes it, counting a timeout as the blocking
/// path does.
struct Detached {
    completion: Arc<Completion>,
    plugin: Arc<PluginShared>,
}

impl DetachedReply for Detached {
    fn claim(&self) -> bool {
        self.completion.start()
    }

    fn answer(&self, result: Option<Result<Vec<u8>, CallError>>) {
        let result = result.unwrap_or_else(|| Err(self.plugin.unavailable()));
        let timed_out = matches!(result, Err(CallError::Timeout { .. }));
        self.completion.finish_if(result, false, || {
            if timed_out {
                self.plugin.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// A handle's async dispatch threads and their queue.
pub(crate) struct AsyncCalls {
    jobs: Sender<Job>,
}

impl AsyncCalls {
    /// Starts `threads` dispatch threads for `plugin`. A thread that cannot be spawned is logged;
    /// with none, calls fail with `Unavailable`.
    fn start(plugin: &PluginShared, threads: usize) -> Self {
        let (jobs, queue) = crossbeam_channel::unbounded();
        for _ in 0..threads {
            let queue: Receiver<Job> = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fidius:{}:async", plugin.name))
                .spawn(move || {
                    // Spin briefly first, as blocking callers do: the next call of a task that
                    // just got its answer arrives within microseconds, and parking costs more.
                    while let Ok(job) = wait::recv(&queue, wait::SPIN_BEFORE_PARKING) {
                        job.run();
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(plugin = %plugin.name, %error, "cannot start an async dispatch thread");
            }
        }
        Self { jobs }
    }
}

impl PythonPluginHandle {
    /// [`call_typed_json_async`](AsyncPluginCall::call_typed_json_async) with per-call settings,
    /// e.g. a timeout.
    pub fn call_typed_json_async_with(
        &self,
        method_index: usize,
        args_json: Vec<u8>,
        options: &CallOptions,
    ) -> PendingCall {
        let timeout = options.timeout.unwrap_or(self.plugin.call_timeout);
        self.call_async(method_index, WireMode::TypedJson, args_json, timeout)
    }

    /// [`call_raw_async`](AsyncPluginCall::call_raw_async) with per-call settings, e.g. a timeout.
    pub fn call_raw_async_with(
        &self,
        method_index: usize,
        input: Vec<u8>,
        options: &CallOptions,
    ) -> PendingCall {
        let timeout = options.timeout.unwrap_or(self.plugin.call_timeout);
        self.call_async(method_index, WireMode::Raw, input, timeout)
    }

    fn call_async(
        &self,
        index: usize,
        requested: WireMode,
        payload: Vec<u8>,
        timeout: Option<std::time::Duration>,
    ) -> PendingCall {
        let failed = |error| PendingCall {
            state: State::Failed(Some(error)),
        };
        if let Err(error) = self.check(index, requested, &payload) {
            return failed(error);
        }
        let deadline = Deadline::after(timeout);
        let plugin = &*self.plugin;
        let completion = Arc::new(Completion::default());
        let call = DetachedCall {
            index,
            payload,
            deadline,
            reply: Arc::new(Detached {
                completion: Arc::clone(&completion),
                plugin: Arc::clone(&plugin.shared),
            }),
        };
        // With host functions, the call's reentrancy check must hold on a thread for its duration.
        let handed = if plugin.shared.host_functions.is_empty() {
            plugin.backend.call_detached(call)
        } else {
            Err(call)
        };
        let detached = match handed {
            Ok(()) => true,
            Err(call) => {
                let calls = plugin
                    .async_calls
                    .get_or_init(|| AsyncCalls::start(&plugin.shared, plugin.instances));
                let job = Job {
                    handle: self.clone(),
                    index,
                    payload: call.payload,
                    deadline,
                    completion: Arc::clone(&completion),
                };
                if calls.jobs.send(job).is_err() {
                    return failed(plugin.shared.unavailable());
                }
                false
            }
        };
        if let Some(deadline) = deadline {
            deadlines().watch(Expiry {
                at: deadline.at,
                completion: Arc::downgrade(&completion),
                plugin: Arc::clone(&plugin.shared),
                index,
                after: deadline.after,
                running_too: detached,
            });
        }
        PendingCall {
            state: State::Queued(completion),
        }
    }
}

impl AsyncPluginCall for PythonPluginHandle {
    type Pending = PendingCall;

    /// Checks the call now (an error is the future's result), queues it and returns its future;
    /// see [`PendingCall`] for what dropping it does.
    fn call_typed_json_async(&self, method_index: usize, args_json: Vec<u8>) -> PendingCall {
        self.call_async(
            method_index,
            WireMode::TypedJson,
            args_json,
            self.plugin.call_timeout,
        )
    }

    fn call_raw_async(&self, method_index: usize, input: Vec<u8>) -> PendingCall {
        self.call_async(method_index, WireMode::Raw, input, self.plugin.call_timeout)
    }
}

/// A queued async call's deadline, for the deadline thread.
struct Expiry {
    at: Instant,
    completion: Weak<Completion>,
    plugin: Arc<PluginShared>,
    index: usize,
    after: std::time::Duration,
    /// The call went straight to the plugin's queue: it is timed out at its deadline even if it
    /// runs, since no waiting thread gives up on it (a dispatch thread's backend call does).
    running_too: bool,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Expiry {}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// The deadlines of async calls with a timeout, earliest first, and the one thread that completes
/// those still queued at their deadline.
struct Deadlines {
    pending: Mutex<Watched>,
    changed: Condvar,
}

/// Below this many entries the deadlines are never purged.
const PURGE_FLOOR: usize = 1024;

struct Watched {
    expiries: BinaryHeap<Reverse<Expiry>>,
    /// When the heap reaches this size, the entries of calls that started or finished are dropped:
    /// with long timeouts they would otherwise pile up until their deadlines. Twice the size left
    /// after the last purge, so purging costs O(1) per call on average.
    purge_at: usize,
}

fn deadlines() -> &'static Arc<Deadlines> {
    static DEADLINES: OnceLock<Arc<Deadlines>> = OnceLock::new();
    DEADLINES.get_or_init(|| {
        let deadlines = Arc::new(Deadlines {
            pending: Mutex::new(Watched {
                expiries: BinaryHeap::new(),
                purge_at: PURGE_FLOOR,
            }),
            changed: Condvar::new(),
        });
        let watched = Arc::clone(&deadlines);
        let spawned = std::thread::Builder::new()
            .name("fidius:async-deadlines".to_owned())
            .spawn(move || watched.serve());
        if let Err(error) = spawned {
            // Calls still end at their deadline once a dispatch thread takes them.
            tracing::error!(%error, "cannot start the async deadline thread");
        }
        deadlines
    })
}

impl Deadlines {
    fn pending(&self) -> MutexGuard<'_, Watched> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn watch(&self, expiry: Expiry) {
        let mut pending = self.pending();
        if pending.expiries.len() >= pending.purge_at {
            pending
                .expiries
                .retain(|Reverse(expiry)| expiry.still_pending());
            pending.purge_at = (pending.expiries.len() * 2).max(PURGE_FLOOR);
        }
        pending.expiries.push(Reverse(expiry));
        drop(pending);
        self.changed.notify_one();
    }

    fn serve(&self) {
        let mut pending = self.pending();
        loop {
            let now = Instant::now();
            let wait = match pending.expiries.peek() {
                None => None,
                Some(Reverse(next)) if next.at <= now => {
                    if let Some(Reverse(expired)) = pending.expiries.pop() {
                        drop(pending);
                        expired.fire();
                        pending = self.pending();
                    }
                    continue;
                }
                Some(Reverse(next)) => Some(next.at - now),
            };
            pending = match wait {
                None => self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(wait) => {
                    self.changed
                        .wait_timeout(pending, wait)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }
}

impl Expiry {
    /// Whether the deadline can still time the call out (and its future waits for a result).
    fn still_pending(&self) -> bool {
        self.completion.upgrade().is_some_and(|completion| {
            let slot = completion.slot();
            !(slot.finished || slot.abandoned || (slot.started && !self.running_too))
        })
    }

    /// Times the call out if it is still queued (or, `running_too`, unfinished).
    fn fire(self) {
        let Some(completion) = self.completion.upgrade() else {
            return; // finished and taken
        };
        let timed_out = self.plugin.timed_out(self.index, self.after);
        completion.time_out(timed_out, &self.plugin.timeouts, !self.running_too);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::process::protocol::tests::DESCRIPTOR;

    #[test]
    fn deadlines_of_calls_that_ended_do_not_pile_up() {
        let deadlines = Deadlines {
            pending: Mutex::new(Watched {
                expiries: BinaryHeap::new(),
                purge_at: PURGE_FLOOR,
            }),
            changed: Condvar::new(),
        };
        let plugin = Arc::new(PluginShared::new("p".to_owned(), (&DESCRIPTOR).into(), 0));
        let (mut queued, mut answered) = (Vec::new(), Vec::new());
        for n in 0..20_000 {
            let completion = Arc::new(Completion::default());
            deadlines.watch(Expiry {
                at: Instant::now() + Duration::from_secs(3600),
                completion: Arc::downgrade(&completion),
                plugin: Arc::clone(&plugin),
                index: 0,
                after: Duration::from_secs(3600),
                running_too: false,
            });
            match n % 100 {
                0 => queued.push(completion),
                1..=49 => {
                    // Answered, its future not yet polled: still alive, no longer queued.
                    completion.finish(Ok(Vec::new()));
                    answered.push(completion);
                }
                _ => {} // answered and gone
            }
        }
        let watched = deadlines.pending().expiries.len();
        assert!(
            watched <= 2 * PURGE_FLOOR + queued.len(),
            "{watched} deadlines watched for {} queued calls",
            queued.len()
        );
        // The queued ones are all still watched.
        let still = deadlines
            .pending()
            .expiries
            .iter()
            .filter(|Reverse(expiry)| expiry.still_pending())
            .count();
        assert_eq!(still, queued.len());
    }
}
