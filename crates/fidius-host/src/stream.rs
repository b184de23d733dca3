//! Streamed results as the host sees them, in both tiers: [`RawPluginStream`] (each item's JSON)
//! and [`PluginStream<T>`] (decoded), both an [`Iterator`] and a [`futures_core::Stream`].
//!
//! An open stream holds one instance of its plugin (a sub-interpreter's thread, or a worker
//! process) until it ends or is dropped: the instance runs the plugin's iterator and hands items
//! over a bounded channel, at most the stream's window ahead of the consumer (backpressure), so a
//! slow consumer keeps the plugin's memory bounded. Dropping the stream closes the plugin's
//! generator (its `finally` runs) once the instance notices: at once when it is waiting for room,
//! after the item in progress otherwise. A stream keeps its plugin loaded (as a handle clone
//! does) until it is dropped.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fidius_core::CallError;
use serde::de::DeserializeOwned;

use crate::backend::Deadline;
use crate::plugin::shared::PluginShared;
use crate::PythonPluginHandle;

/// Items a stream lets its plugin produce ahead of the consumer, unless configured
/// ([`LoadOptions::stream_window`](crate::LoadOptions::stream_window)).
pub(crate) const DEFAULT_WINDOW: usize = 16;

/// What a producer (an instance thread, or the thread reading a worker) hands the consumer.
pub(crate) enum StreamMessage {
    Item(Vec<u8>),
    /// The stream failed; nothing follows.
    Failed(CallError),
    /// The plugin's iterator is exhausted; nothing follows.
    End,
}

/// The producing end of one stream, given to a backend with the call.
pub(crate) struct StreamSink {
    items: flume::Sender<StreamMessage>,
    /// How many items the producer may have made that the consumer has not taken.
    pub(crate) window: usize,
    /// The longest one item may take (the plugin's call timeout, or the call's).
    pub(crate) item_timeout: Option<Duration>,
    /// When the whole stream must have ended.
    pub(crate) deadline: Option<Deadline>,
}

/// Whether the consumer took an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Taken,
    /// The stream was dropped (or its whole deadline passed while the consumer did not read): the
    /// producer closes the plugin's iterator and stops.
    Abandoned,
}

impl StreamSink {
    /// When the next item must be ready, counted from now, and the timeout that sets it.
    pub(crate) fn step_deadline(&self) -> Option<Deadline> {
        earliest(Deadline::after(self.item_timeout), self.deadline)
    }

    /// Hands `message` to the consumer, waiting while the window is full.
    pub(crate) fn deliver(&self, message: StreamMessage) -> Delivery {
        let sent = match self.deadline {
            None => self.items.send(message).is_ok(),
            Some(deadline) => self.items.send_deadline(message, deadline.at).is_ok(),
        };
        if sent {
            Delivery::Taken
        } else {
            Delivery::Abandoned
        }
    }
}

fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.at <= b.at { a } else { b }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// How a stream is to run, from the plugin's [`LoadOptions`](crate::LoadOptions) and the call's
/// [`CallOptions`](crate::CallOptions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamSettings {
    pub(crate) window: usize,
    pub(crate) item_timeout: Option<Duration>,
    pub(crate) stream_timeout: Option<Duration>,
    /// How long past a deadline the consumer waits for the producer's own timeout error before it
    /// gives up on its own (the producer may be stuck in C code).
    pub(crate) grace: Duration,
}

/// Opens the channel of one stream: the producer's end for the backend, the consumer's for the
/// caller.
pub(crate) fn channel(
    handle: &PythonPluginHandle,
    plugin: Arc<PluginShared>,
    index: usize,
    settings: StreamSettings,
) -> (StreamSink, RawPluginStream) {
    let window = settings.window.max(1);
    // The producer blocks once `window` items wait; one more is in its hands.
    let (items, receiver) = flume::bounded(window);
    let deadline = Deadline::after(settings.stream_timeout);
    let sink = StreamSink {
        items,
        window,
        item_timeout: settings.item_timeout,
        deadline,
    };
    let stream = RawPluginStream {
        _loaded: handle.clone(),
        items: receiver,
        polled: None,
        plugin,
        index,
        item_timeout: settings.item_timeout,
        deadline,
        grace: settings.grace,
        finished: false,
    };
    (sink, stream)
}

/// The items of a streamed result, each as the JSON the plugin's item encodes to. The last item
/// of a failed stream is its error (the plugin raised, a timeout, the instance went away); then
/// `None`.
///
/// While it is open, the stream holds one instance of its plugin (and keeps the plugin loaded).
/// The plugin runs at most the stream's window ahead of the consumer
/// ([`LoadOptions::stream_window`](crate::LoadOptions::stream_window)), then waits at its `yield`.
/// Dropping the stream closes the plugin's generator, so its `finally` blocks run: at once when
/// it is waiting for room, after the item in progress otherwise.
///
/// Timeouts: each item must arrive within the call's timeout
/// ([`LoadOptions::call_timeout`](crate::LoadOptions::call_timeout) or
/// [`CallOptions::timeout`](crate::CallOptions::timeout)), counted while the plugin produces it (not
/// while it waits for the consumer), and the whole stream within
/// [`LoadOptions::stream_timeout`](crate::LoadOptions::stream_timeout) /
/// [`CallOptions::stream_timeout`](crate::CallOptions::stream_timeout). Past one, the plugin is
/// interrupted (sub-interpreter) or its worker killed (process), as for a call, and the stream ends
/// with [`CallError::Timeout`]. Polled as a `futures_core::Stream`, the waits are the plugin side's
/// only (no timer is needed on the async side, so it runs on any executor).
pub struct RawPluginStream {
    /// Keeps the plugin loaded while the stream is open: shutting its instances down waits for
    /// the instance serving this stream, which may be waiting for this stream's consumer.
    _loaded: PythonPluginHandle,
    items: flume::Receiver<StreamMessage>,
    /// The async view of `items`, made on the first poll.
    polled: Option<Pin<Box<flume::r#async::RecvStream<'static, StreamMessage>>>>,
    plugin: Arc<PluginShared>,
    index: usize,
    item_timeout: Option<Duration>,
    deadline: Option<Deadline>,
    grace: Duration,
    finished: bool,
}

impl std::fmt::Debug for RawPluginStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPluginStream")
            .field("plugin", &self.plugin.name)
            .field("method", &self.index)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl RawPluginStream {
    /// The item (or end) a producer's message means for the consumer.
    fn settle(&mut self, message: Option<StreamMessage>) -> Option<Result<Vec<u8>, CallError>> {
        match message {
            Some(StreamMessage::Item(json)) => Some(Ok(json)),
            Some(StreamMessage::Failed(error)) => {
                self.finished = true;
                if matches!(error, CallError::Timeout { .. }) {
                    self.plugin.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(error))
            }
            Some(StreamMessage::End) => {
                self.finished = true;
                None
            }
            // The producer stopped without a word: it found no room before the whole-stream
            // deadline (the consumer was not reading), or its instance ended (shutdown, retired).
            None => {
                self.finished = true;
                match self.deadline {
                    Some(deadline) if Instant::now() >= deadline.at => {
                        self.plugin.timeouts.fetch_add(1, Ordering::Relaxed);
                        Some(Err(self.plugin.timed_out(self.index, deadline.after)))
                    }
                    _ => Some(Err(self.plugin.unavailable())),
                }
            }
        }
    }
}

impl Iterator for RawPluginStream {
    type Item = Result<Vec<u8>, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let step = earliest(Deadline::after(self.item_timeout), self.deadline);
        let message = match step {
            None => self.items.recv().ok(),
            Some(step) => {
                let give_up = step.at.checked_add(self.grace).unwrap_or(step.at);
                match self.items.recv_deadline(give_up) {
                    Ok(message) => Some(message),
                    Err(flume::RecvTimeoutError::Disconnected) => None,
                    Err(flume::RecvTimeoutError::Timeout) => Some(StreamMessage::Failed(
                        self.plugin.timed_out(self.index, step.after),
                    )),
                }
            }
        };
        self.settle(message)
    }
}

impl futures_core::Stream for RawPluginStream {
    type Item = Result<Vec<u8>, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let polled = this
            .polled
            .get_or_insert_with(|| Box::pin(this.items.clone().into_stream()));
        match polled.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(message) => Poll::Ready(this.settle(message)),
        }
    }
}

/// A streamed result decoded item by item as `T`: [`RawPluginStream`] plus serde. An item that is
/// not a `T` ends the stream with [`CallError::DecodeResult`].
pub struct PluginStream<T> {
    raw: RawPluginStream,
    method: String,
    item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for PluginStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStream")
            .field("method", &self.method)
            .field("raw", &self.raw)
            .finish()
    }
}

impl<T: DeserializeOwned> PluginStream<T> {
    pub(crate) fn new(raw: RawPluginStream, method: String) -> Self {
        Self {
            raw,
            method,
            item: PhantomData,
        }
    }

    /// The undecoded items.
    pub fn into_raw(self) -> RawPluginStream {
        self.raw
    }

    fn decode(&mut self, item: Result<Vec<u8>, CallError>) -> Result<T, CallError> {
        let decoded = item.and_then(|json| {
            serde_json::from_slice(&json).map_err(|source| CallError::DecodeResult {
                method: self.method.clone(),
                source,
            })
        });
        if decoded.is_err() {
            self.raw.finished = true;
        }
        decoded
    }
}

impl<T: DeserializeOwned> Iterator for PluginStream<T> {
    type Item = Result<T, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.raw.next()?;
        Some(self.decode(item))
    }
}

impl<T: DeserializeOwned> futures_core::Stream for PluginStream<T> {
    type Item = Result<T, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.raw).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(item)) => Poll::Ready(Some(this.decode(item))),
        }
    }
}

impl<T> Unpin for PluginStream<T> {}

/// How long a stream's consumer waits past a deadline for the producer's own error.
pub(crate) fn consumer_grace(retire_after: Duration) -> Duration {
    retire_after.saturating_add(Duration::from_secs(1))
}

const _: () = {
    const fn assert_send<S: Send>() {}
    assert_send::<RawPluginStream>();
    assert_send::<PluginStream<u64>>();
};
