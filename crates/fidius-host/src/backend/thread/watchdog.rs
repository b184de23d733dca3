//! Deadlines of running calls: one watchdog thread for the whole process interrupts calls that run
//! past their deadline and retires instances that do not come back.
//!
//! Each instance has an [`InstanceWatch`] saying which call (if any) it runs under a deadline. Its
//! instance thread fills and clears it while holding its interpreter's GIL; the watchdog sleeps until the earliest
//! deadline it knows of and is woken only when a call starts with an earlier one. When a deadline
//! passes it spawns a short-lived thread that takes the interpreter's GIL and raises
//! `KeyboardInterrupt` in the instance thread (taking the GIL may block while C code holds it, and the
//! watchdog itself must never block). If the call is still running `retire_after` later, the
//! instance is retired: its plugin's `InstanceThreads` detaches the thread and starts a replacement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use fidius_ffi::{InterruptHandle, InterruptOutcome};

use crate::backend::thread::threads::InstanceThreads;

/// What a deadline guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// A call: past its deadline it is interrupted, past the grace period the instance is retired.
    Call,
    /// Importing the plugin: interrupted past its deadline; the loading thread decides the rest.
    Load,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    seq: u64,
    deadline: Instant,
    guarded: Guarded,
}

#[derive(Debug, Default)]
struct WatchState {
    running: Option<Running>,
    last_seq: u64,
    /// Set (holding the interpreter's GIL) when an interrupt was raised into the running call.
    interrupted: bool,
    /// Set when the instance was given up on; its thread stops after the current call.
    retired: bool,
    /// The call an interrupt was sent to, and when to give up on it.
    interrupt_sent: Option<(u64, Instant)>,
}

/// How a guarded call ended, as seen by its instance thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    /// An interrupt was raised into it: its result is a timeout, whatever it returned.
    pub(crate) interrupted: bool,
    /// The instance was retired while the call ran: its thread must stop now.
    pub(crate) retired: bool,
}

/// One instance's deadline bookkeeping, shared by its thread, its plugin's `InstanceThreads` and
/// the watchdog.
pub(crate) struct InstanceWatch {
    state: Mutex<WatchState>,
    interrupt: OnceLock<InterruptHandle>,
    retire_after: Duration,
    threads: Weak<InstanceThreads>,
}

impl InstanceWatch {
    /// The watch of a new instance of `threads`, registered with the watchdog.
    pub(crate) fn new(threads: Weak<InstanceThreads>, retire_after: Duration) -> Arc<Self> {
        let watch = Arc::new(Self {
            state: Mutex::new(WatchState::default()),
            interrupt: OnceLock::new(),
            retire_after,
            threads,
        });
        watchdog().register(&watch);
        watch
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by the instance thread once its interpreter exists.
    pub(crate) fn set_interrupt(&self, handle: InterruptHandle) {
        let _ = self.interrupt.set(handle);
    }

    /// Marks the start of guarded work; the instance thread must hold its interpreter's GIL (or not have
    /// started Python yet), so an interrupter that holds the GIL sees either before or after.
    pub(crate) fn begin(&self, deadline: Instant, guarded: Guarded) {
        {
            let mut state = self.lock();
            state.last_seq += 1;
            state.running = Some(Running {
                seq: state.last_seq,
                deadline,
                guarded,
            });
            state.interrupted = false;
        }
        watchdog().deadline_added(deadline);
    }

    /// Marks the end of the guarded work begun last; same GIL rule as [`begin`](Self::begin).
    pub(crate) fn finish(&self) -> Finished {
        let mut state = self.lock();
        state.running = None;
        state.interrupt_sent = None;
        Finished {
            interrupted: std::mem::take(&mut state.interrupted),
            retired: state.retired,
        }
    }

    /// Retires the instance if it is still inside guarded work (the caller stopped waiting for it).
    /// Returns `false` when the work already finished: then its thread carries on normally.
    pub(crate) fn retire_if_running(&self) -> bool {
        let mut state = self.lock();
        if state.running.is_some() {
            state.retired = true;
        }
        state.retired
    }

    /// Raises `KeyboardInterrupt` into guarded work `seq` if it is still running. Blocks while C code
    /// holds the interpreter's GIL, so the watchdog runs it on a thread of its own.
    fn interrupt(&self, seq: u64) {
        let Some(handle) = self.interrupt.get() else {
            return; // the interpreter does not exist yet (or failed to start): nothing runs
        };
        let outcome = handle.interrupt_if(|| {
            // Holding the interpreter's GIL: the instance thread cannot begin or finish work meanwhile.
            let mut state = self.lock();
            let wanted = state.running.is_some_and(|running| running.seq == seq);
            if wanted {
                state.interrupted = true;
            }
            wanted
        });
        match outcome {
            Ok(InterruptOutcome::Raised) => tracing::debug!("interrupted a call past its deadline"),
            Ok(InterruptOutcome::NotWanted | InterruptOutcome::Gone) => {}
            Err(error) => tracing::error!(%error, "could not interrupt a call past its deadline"),
        }
    }
}

/// What the watchdog decided for one slot, carried out after it let go of the registry.
enum Action {
    Interrupt(Arc<InstanceWatch>, u64),
    Retire(Arc<InstanceWatch>),
}

struct Watchdog {
    thread: Thread,
    slots: Mutex<Vec<Weak<InstanceWatch>>>,
    /// When the watchdog will next look, in nanoseconds since `epoch`; `u64::MAX` while it scans or
    /// sleeps without a deadline. A call whose deadline is earlier wakes it.
    next_wake: AtomicU64,
    epoch: Instant,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let thread = thread::Builder::new()
            .name("fidius:watchdog".to_owned())
            .spawn(|| watchdog().run())
            .expect("the OS refused to start fidius's watchdog thread");
        Watchdog {
            thread: thread.thread().clone(),
            slots: Mutex::new(Vec::new()),
            next_wake: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    })
}

impl Watchdog {
    fn register(&self, slot: &Arc<InstanceWatch>) {
        self.lock_slots().push(Arc::downgrade(slot));
    }

    fn lock_slots(&self) -> MutexGuard<'_, Vec<Weak<InstanceWatch>>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn deadline_added(&self, deadline: Instant) {
        // SeqCst pairs with the watchdog's own stores: either its scan sees the new deadline, or
        // this load sees the value stored before or after that scan and wakes it when needed.
        if self.nanos(deadline) < self.next_wake.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
    }

    fn run(&self) {
        loop {
            self.next_wake.store(u64::MAX, Ordering::SeqCst);
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut actions = Vec::new();
            self.lock_slots().retain(|slot| {
                let Some(slot) = slot.upgrade() else {
                    return false;
                };
                if let Some(wake) = Self::examine(&slot, now, &mut actions) {
                    next = Some(next.map_or(wake, |next| next.min(wake)));
                }
                true
            });
            for action in actions {
                match action {
                    Action::Interrupt(slot, seq) => {
                        let spawned = thread::Builder::new()
                            .name("fidius:interrupt".to_owned())
                            .spawn(move || slot.interrupt(seq));
                        if let Err(error) = spawned {
                            tracing::error!(%error, "could not start a thread to interrupt a call");
                        }
                    }
                    Action::Retire(slot) => {
                        if let Some(threads) = slot.threads.upgrade() {
                            threads.retire(&slot);
                        }
                    }
                }
            }
            match next {
                None => thread::park(),
                Some(wake) => {
                    self.next_wake.store(self.nanos(wake), Ordering::SeqCst);
                    thread::park_timeout(wake.saturating_duration_since(Instant::now()));
                }
            }
        }
    }

    /// Decides what to do about one slot now; returns when it next needs a look.
    fn examine(
        slot: &Arc<InstanceWatch>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<Instant> {
        let mut state = slot.lock();
        let running = state.running?;
        match state.interrupt_sent {
            Some((seq, retire_at)) if seq == running.seq => {
                if running.guarded == Guarded::Load || state.retired {
                    return None;
                }
                if now < retire_at {
                    return Some(retire_at);
                }
                state.retired = true;
                actions.push(Action::Retire(Arc::clone(slot)));
                None
            }
            _ if now >= running.deadline => {
                // A grace period too long to represent means "never retire" in practice.
                let retire_at = now
                    .checked_add(slot.retire_after)
                    .unwrap_or(now + Duration::from_secs(86_400 * 365));
                state.interrupt_sent = Some((running.seq, retire_at));
                actions.push(Action::Interrupt(Arc::clone(slot), running.seq));
                Some(retire_at)
            }
            _ => Some(running.deadline),
        }
    }
}
