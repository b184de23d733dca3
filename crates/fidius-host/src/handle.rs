//! The handle a host calls a loaded Python plugin through.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use fidius_core::interface::{PythonInterfaceDescriptor, WireMode};
use fidius_core::{CallError, PluginCall};

use crate::error::LoadError;
use crate::options::LoadOptions;
use crate::runtime::instance::{self, Reply, ReplyTo, Request};
use crate::runtime::source::PluginSource;
use crate::runtime::wait;

/// A loaded plugin: a pool of instances fed from one queue.
///
/// Cheap to clone (clones share the pool); `Send + Sync`, and every call takes `&self`, so any number
/// of host threads may call at once: each call goes to whichever instance is idle first. Dropping the
/// last clone lets the instances finish the calls already queued, ends their interpreters on their
/// own threads and joins the threads.
#[derive(Clone)]
pub struct PythonPluginHandle {
    pool: Arc<Pool>,
}

/// Where a loaded plugin came from.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The package manifest (absent when started from a bare [`PluginSource`]).
    pub manifest: Option<fidius_core::manifest::Manifest>,
    /// The plugin directory or `.fid` file it was loaded from.
    pub path: std::path::PathBuf,
    /// The trusted key whose signature verified, if any.
    pub signer: Option<fidius_core::signing::KeyFingerprint>,
}

struct Pool {
    source: Arc<PluginSource>,
    info: PluginInfo,
    descriptor: &'static PythonInterfaceDescriptor,
    /// Which descriptor methods the plugin defines (optional ones may be absent).
    implemented: Vec<bool>,
    /// `None` only while dropping.
    requests: Option<Sender<Request>>,
    workers: Vec<JoinHandle<()>>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PythonPluginHandle>();
};

impl PythonPluginHandle {
    /// Starts `options`' number of instances of the plugin at `source` and waits until each has
    /// imported it and checked it against `descriptor`.
    ///
    /// The caller is responsible for what must happen before any plugin code runs (manifest and
    /// signature checks); `PluginHost` does that.
    pub fn start(
        source: PluginSource,
        descriptor: &'static PythonInterfaceDescriptor,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let info = PluginInfo {
            manifest: None,
            path: source.dir.clone(),
            signer: None,
        };
        Self::start_with_info(source, descriptor, options, info)
    }

    pub(crate) fn start_with_info(
        source: PluginSource,
        descriptor: &'static PythonInterfaceDescriptor,
        options: &LoadOptions,
        info: PluginInfo,
    ) -> Result<Self, LoadError> {
        if options.instances == 0 {
            return Err(LoadError::InvalidOptions {
                plugin: source.name,
                reason: "instances must be at least 1".to_owned(),
            });
        }
        let source = Arc::new(source);
        let (requests, queue) = crossbeam_channel::unbounded();
        let (started_tx, started_rx) = crossbeam_channel::bounded(options.instances);
        let mut pool = Pool {
            source: Arc::clone(&source),
            info,
            descriptor,
            implemented: Vec::new(),
            requests: Some(requests),
            workers: Vec::with_capacity(options.instances),
        };
        for number in 0..options.instances {
            let worker = instance::spawn(
                Arc::clone(&source),
                descriptor,
                number,
                queue.clone(),
                started_tx.clone(),
            )?;
            pool.workers.push(worker);
        }
        drop(started_tx);
        for _ in 0..options.instances {
            // On error `pool` drops here, which stops and joins the instances that did start.
            let implemented = started_rx.recv().map_err(|_| LoadError::WorkerDied {
                plugin: source.name.clone(),
            })??;
            pool.implemented = implemented;
        }
        tracing::info!(plugin = %source.name, version = %source.version, instances = options.instances, "plugin loaded");
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// The interface this plugin was loaded against.
    pub fn descriptor(&self) -> &'static PythonInterfaceDescriptor {
        self.pool.descriptor
    }

    /// Where the plugin was loaded from.
    pub fn source(&self) -> &PluginSource {
        &self.pool.source
    }

    /// Manifest, origin and signer of the plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.pool.info
    }

    /// How many instances serve this plugin.
    pub fn instances(&self) -> usize {
        self.pool.workers.len()
    }

    fn call(
        &self,
        index: usize,
        requested: WireMode,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let pool = &*self.pool;
        let method = pool
            .descriptor
            .method(index)
            .ok_or(CallError::UnknownMethod {
                interface: pool.descriptor.trait_name,
                index,
            })?;
        if method.wire != requested {
            return Err(CallError::WireModeMismatch {
                method: method.name.to_owned(),
                actual: method.wire,
                requested,
            });
        }
        if !pool.implemented.get(index).copied().unwrap_or(false) {
            return Err(CallError::NotImplemented {
                method: method.name.to_owned(),
            });
        }
        let unavailable = || CallError::Unavailable {
            plugin: pool.source.name.clone(),
        };
        let requests = pool.requests.as_ref().ok_or_else(unavailable)?;
        REPLIES.with(|replies| {
            let call_id = replies.next_call_id();
            requests
                .send(Request {
                    method: index,
                    payload,
                    reply: ReplyTo::new(replies.sender.clone(), call_id),
                })
                .map_err(|_| unavailable())?;
            loop {
                // Never disconnected: this thread's own sender keeps the channel open, and an
                // instance that drops a request unanswered still replies (see `ReplyTo`).
                let reply = wait::recv(&replies.receiver, wait::SPIN_BEFORE_PARKING)
                    .map_err(|_| unavailable())?;
                if reply.call_id == call_id {
                    return reply.result.unwrap_or_else(|| Err(unavailable()));
                }
                // A reply to a call this thread stopped waiting for; drop it.
            }
        })
    }
}

/// Each calling thread's reply channel, reused for every call it makes (creating a channel per call
/// would cost an allocation on the fast path).
struct ReplyChannel {
    sender: Sender<Reply>,
    receiver: crossbeam_channel::Receiver<Reply>,
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

impl PluginCall for PythonPluginHandle {
    fn call_typed_json(&self, method_index: usize, args_json: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(method_index, WireMode::TypedJson, args_json.to_vec())
    }

    fn call_raw(&self, method_index: usize, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(method_index, WireMode::Raw, input.to_vec())
    }

    fn implements(&self, method_index: usize) -> bool {
        self.pool
            .implemented
            .get(method_index)
            .copied()
            .unwrap_or(false)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue lets each worker finish what is queued, then end its interpreter.
        self.requests = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!(plugin = %self.source.name, "a worker thread panicked");
            }
        }
    }
}
