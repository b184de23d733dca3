//! Spare interpreters: own-GIL sub-interpreters made and prepared ahead of time, so that starting
//! an instance (a load, a reload, the replacement of a retired instance) skips creating one and the
//! plugin-independent part of the load ([`ReadyInterpreter`]), which together are most of a small
//! plugin's start (~16 ms and ~7 ms of ~22 ms).
//!
//! A [`SubInterpreter`] belongs to the thread that created it, so the unit kept is a spare *instance
//! thread*: a thread (with an instance thread's stack) that created and prepared its interpreter
//! and waits for the instance to run on it. Taking one hands it the instance's body and renames the
//! thread; once the load that took it is over ([`replenish`]), the pool makes a replacement in the
//! background, on one maker thread, one at a time, never holding more than the target. The pool is
//! process-wide (a prepared interpreter is the same for every host and plugin) and empty unless a host asks for spares
//! ([`PluginHostBuilder::spare_interpreters`](crate::PluginHostBuilder::spare_interpreters)); the
//! target is the largest any host asked for, at most [`MAX_SPARES`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use fidius_ffi::{InterpreterOptions, SubInterpreter};

use crate::plugin::loader::ReadyInterpreter;

/// The most spares the pool keeps, whatever hosts ask for: each costs an idle interpreter's memory
/// (about 1.5 MiB) and a parked thread.
pub const MAX_SPARES: usize = 16;

/// What runs on an instance thread: an instance's body, given the spare's interpreter (or none, when
/// it runs on a fresh thread and creates its own).
pub(crate) type Job = Box<dyn FnOnce(Option<ReadyInterpreter<SubInterpreter>>) + Send>;

/// The pool's counters (process-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpareInterpreterStats {
    /// How many spares the pool keeps (the largest number any host asked for).
    pub target: usize,
    /// Spares ready now.
    pub ready: usize,
    /// Instances started on a spare so far.
    pub taken: u64,
    /// Spares made so far.
    pub made: u64,
}

/// One spare: its thread, and where to send the instance that will run on it.
struct Spare {
    thread: JoinHandle<()>,
    job: Sender<(String, Job)>,
}

#[derive(Default)]
struct State {
    target: usize,
    ready: Vec<Spare>,
    /// Whether the maker thread is running (it ends when the pool is full).
    making: bool,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    taken: AtomicU64,
    made: AtomicU64,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Pool::default)
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps at least `count` spares (at most [`MAX_SPARES`]) from now on, made in the background.
pub(crate) fn reserve(count: usize) {
    let mut state = pool().lock();
    state.target = state.target.max(count.min(MAX_SPARES));
    start_maker(&mut state);
}

/// The pool's counters now.
pub fn spare_interpreter_stats() -> SpareInterpreterStats {
    let pool = pool();
    let state = pool.lock();
    SpareInterpreterStats {
        target: state.target,
        ready: state.ready.len(),
        taken: pool.taken.load(Ordering::Relaxed),
        made: pool.made.load(Ordering::Relaxed),
    }
}

/// Runs `job` on a spare thread renamed `name`, returning that thread's handle; gives `job` back
/// when no spare is ready. The spare is not replaced until [`replenish`].
pub(crate) fn take(name: String, job: Job) -> Result<JoinHandle<()>, Job> {
    let pool = pool();
    let Some(spare) = pool.lock().ready.pop() else {
        return Err(job);
    };
    match spare.job.send((name, job)) {
        Ok(()) => {
            pool.taken.fetch_add(1, Ordering::Relaxed);
            Ok(spare.thread)
        }
        // The spare's thread is gone (it cannot be, short of a panic there): start cold.
        Err(crossbeam_channel::SendError((_, job))) => Err(job),
    }
}

/// Makes up for the spares taken, in the background. Called once the loads that took them are over:
/// making an interpreter is CPU-bound, and on a machine with few cores, made during a load, it held
/// up the loading thread's report to its caller (1.7 ms of a 4.2 ms load on two cores).
pub(crate) fn replenish() {
    start_maker(&mut pool().lock());
}

/// Starts the maker thread unless it runs or the pool is full.
fn start_maker(state: &mut State) {
    if state.making || state.ready.len() >= state.target {
        return;
    }
    state.making = true;
    let started = thread::Builder::new()
        .name("fidius:spare-maker".to_owned())
        .spawn(make_spares);
    if let Err(error) = started {
        state.making = false;
        tracing::warn!(%error, "cannot start the spare interpreter maker");
    }
}

/// The maker: one spare at a time until the pool is full.
fn make_spares() {
    let pool = pool();
    loop {
        {
            let mut state = pool.lock();
            if state.ready.len() >= state.target {
                state.making = false;
                return;
            }
        }
        match make_spare() {
            Ok(spare) => {
                pool.made.fetch_add(1, Ordering::Relaxed);
                pool.lock().ready.push(spare);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot make a spare interpreter; instances start cold");
                pool.lock().making = false;
                return;
            }
        }
    }
}

/// One spare thread, once its interpreter exists.
fn make_spare() -> Result<Spare, String> {
    let (job_sender, jobs) = crossbeam_channel::bounded::<(String, Job)>(1);
    let (created_sender, created) = crossbeam_channel::bounded(1);
    let thread = thread::Builder::new()
        .name("fidius:spare".to_owned())
        .stack_size(super::instance::INSTANCE_STACK_BYTES)
        .spawn(move || spare_thread(&created_sender, &jobs))
        .map_err(|error| error.to_string())?;
    match created.recv() {
        Ok(Ok(())) => Ok(Spare {
            thread,
            job: job_sender,
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("the spare thread ended".to_owned()),
    }
}

fn spare_thread(created: &Sender<Result<(), String>>, jobs: &Receiver<(String, Job)>) {
    let prepared =
        SubInterpreter::new(InterpreterOptions::default()).and_then(ReadyInterpreter::prepare);
    let interp = match prepared {
        Ok(interp) => interp,
        Err(error) => {
            let _ = created.send(Err(error.to_string()));
            return;
        }
    };
    if created.send(Ok(())).is_err() {
        return;
    }
    // The pool never drops its senders; should one go, the interpreter ends here.
    if let Ok((name, job)) = jobs.recv() {
        rename_current_thread(&name);
        job(Some(interp));
    }
}

/// The OS-level name (what `top -H` and `/proc` show) of the taken thread becomes the instance's;
/// Linux keeps 15 bytes of it.
fn rename_current_thread(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|&byte| byte != 0).take(15).collect();
    while std::str::from_utf8(&bytes).is_err() {
        bytes.pop();
    }
    if let Ok(name) = std::ffi::CString::new(bytes) {
        let _ = rustix::thread::set_name(&name);
    }
}
