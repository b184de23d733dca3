//! The thread backend: each instance an own-GIL sub-interpreter on an instance thread of the host,
//! all of a plugin's instances fed from one queue, so any idle instance takes the next call.

pub(crate) mod generation;
pub(crate) mod instance;
pub(crate) mod spare;
mod stream;
pub(crate) mod threads;
mod watchdog;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fidius_core::CallError;

use crate::backend::{wait, Backend, BackendStart, Call, DetachedCall, PoolStats};
use crate::error::LoadError;
use crate::plugin::loader::Accepted;
use crate::plugin::version::Version;
use crate::stream::StreamSink;
use crate::stream_input::InputFeed;
use instance::{Reply, ReplyTo, Request};
use threads::{InstanceThreads, ThreadSettings};

/// A plugin's instance threads and the queue that feeds them.
pub(crate) struct ThreadBackend {
    threads: Arc<InstanceThreads>,
    instances: usize,
    /// `None` once shut down: closing the queue lets each instance finish what is queued, then end
    /// its interpreter.
    requests: Option<Sender<Request>>,
}

impl ThreadBackend {
    /// Starts the options' number of instance threads and waits until each has loaded the version.
    pub(crate) fn start(start: BackendStart<'_>) -> Result<(Self, Accepted), LoadError> {
        let (version, options) = (start.version, start.options);
        let (requests, queue) = crossbeam_channel::unbounded();
        let threads = InstanceThreads::new(
            start.plugin,
            Arc::clone(version),
            (requests.clone(), queue),
            ThreadSettings {
                load_timeout: options.load_timeout,
                strict: options.strict,
                retire_after: options.retire_after,
            },
        );
        let backend = Self {
            threads,
            instances: options.instances,
            requests: Some(requests),
        };
        // On error `backend` drops here, which stops and joins the instances that did start.
        let loaded = generation::start(&backend.threads, version, 0, options.instances, false)?;
        Ok((backend, loaded.accepted))
    }
}

impl ThreadBackend {
    /// Sends a one-shot call (with its streamed argument's feed, if any) and waits for its reply.
    fn send_call(
        &self,
        call: Call<'_>,
        input: Option<Arc<InputFeed>>,
    ) -> Result<Vec<u8>, CallError> {
        let Call {
            index,
            payload,
            deadline,
        } = call;
        let plugin = &self.threads.plugin;
        let requests = self.requests.as_ref().ok_or_else(|| plugin.unavailable())?;
        REPLIES.with(|replies| {
            let call_id = replies.next_call_id();
            requests
                .send(Request {
                    method: index,
                    payload: payload.to_vec(),
                    reply: ReplyTo::new(replies.sender.clone(), call_id),
                    deadline,
                    chain: if plugin.host_functions.is_empty() {
                        Vec::new()
                    } else {
                        crate::callback::chain::snapshot()
                    },
                    stream: None,
                    input,
                })
                .map_err(|_| plugin.unavailable())?;
            loop {
                // Never disconnected: this thread's own sender keeps the channel open, and an
                // instance that drops a request unanswered still replies (see `ReplyTo`).
                let reply = match deadline {
                    None => wait::recv(&replies.receiver, wait::SPIN_BEFORE_PARKING)
                        .map_err(|_| plugin.unavailable())?,
                    Some(deadline) => match wait::recv_deadline(
                        &replies.receiver,
                        wait::SPIN_BEFORE_PARKING,
                        deadline.at,
                    ) {
                        Ok(reply) => reply,
                        Err(RecvTimeoutError::Timeout) => {
                            return Err(plugin.timed_out(index, deadline.after))
                        }
                        Err(RecvTimeoutError::Disconnected) => return Err(plugin.unavailable()),
                    },
                };
                if reply.call_id == call_id {
                    return reply.result.unwrap_or_else(|| Err(plugin.unavailable()));
                }
                // A reply to a call this thread stopped waiting for; drop it.
            }
        })
    }

    /// Sends a streamed call (with its streamed argument's feed, if any).
    fn send_stream(
        &self,
        call: Call<'_>,
        input: Option<Arc<InputFeed>>,
        sink: StreamSink,
    ) -> Result<(), CallError> {
        let plugin = &self.threads.plugin;
        let requests = self.requests.as_ref().ok_or_else(|| plugin.unavailable())?;
        requests
            .send(Request {
                method: call.index,
                payload: call.payload.to_vec(),
                reply: ReplyTo::nobody(),
                deadline: None,
                chain: Vec::new(),
                stream: Some(sink),
                input,
            })
            .map_err(|_| plugin.unavailable())
    }
}

impl Backend for ThreadBackend {
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, CallError> {
        self.send_call(call, None)
    }

    fn call_with_input(&self, call: Call<'_>, input: Arc<InputFeed>) -> Result<Vec<u8>, CallError> {
        self.send_call(call, Some(input))
    }

    fn open_stream(&self, call: Call<'_>, sink: StreamSink) -> Result<(), CallError> {
        self.send_stream(call, None, sink)
    }

    fn open_stream_with_input(
        &self,
        call: Call<'_>,
        input: Arc<InputFeed>,
        sink: StreamSink,
    ) -> Result<(), CallError> {
        self.send_stream(call, Some(input), sink)
    }

    fn call_detached(&self, call: DetachedCall) -> Result<(), DetachedCall> {
        let request = Request {
            method: call.index,
            payload: call.payload,
            reply: ReplyTo::detached(call.reply),
            deadline: call.deadline,
            // The async path detaches only calls of plugins without host functions.
            chain: Vec::new(),
            stream: None,
            input: None,
        };
        // Shut down: the request's reply, dropped unanswered, completes the call as unavailable.
        if let Some(requests) = &self.requests {
            let _ = requests.send(request);
        }
        Ok(())
    }

    fn reload(&self, version: &Arc<Version>) -> Result<Accepted, LoadError> {
        let threads = &self.threads;
        let generation = threads.generation.load(Ordering::Acquire) + 1;
        let loaded = generation::start(threads, version, generation, self.instances, true)?;
        let accepted = loaded.accepted.clone();
        // New instances serve from here on, next to the old ones until those take their next
        // request, hand it back, and end.
        let signal = loaded.release();
        threads.promote(Arc::clone(version), generation, signal);
        Ok(accepted)
    }

    fn stats(&self) -> PoolStats {
        self.threads.stats()
    }

    fn shutdown(&mut self) {
        self.requests = None;
        self.threads.wait_for_instances();
    }
}

impl Drop for ThreadBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Each calling thread's reply channel, reused for every call it makes (creating a channel per call
/// would cost an allocation on the fast path).
struct ReplyChannel {
    sender: Sender<Reply>,
    receiver: Receiver<Reply>,
    last_call_id: std::cell::Cell<u64>,
}

impl ReplyChannel {
    fn next_call_id(&self) -> u64 {
        let id = self.last_call_id.get().wrapping_add(1);
        self.last_call_id.set(id);
        id
    }
}

thread_local! {
    static REPLIES: ReplyChannel = {
        let (sender, receiver) = crossbeam_channel::unbounded();
        ReplyChannel { sender, receiver, last_call_id: std::cell::Cell::new(0) }
    };
}
