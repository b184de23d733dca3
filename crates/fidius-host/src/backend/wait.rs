//! Waiting on a channel (or, in the process tier, on shared memory): spin briefly, then park.
//!
//! A thread parked on a channel takes ~10 µs to wake on this class of machine, which would dominate
//! a sub-microsecond Python call. Both sides of a call therefore poll for a short, bounded time
//! first, then block without using CPU: a few microseconds of pure spinning (the answer to a small
//! call usually arrives within them), then polling that yields the core to anything else runnable.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, TryRecvError};

/// How long a waiting thread polls before it parks.
pub(crate) const SPIN_BEFORE_PARKING: Duration = Duration::from_micros(50);

/// How long it polls without yielding the core first.
const PURE_SPIN: Duration = Duration::from_micros(3);

/// Spin-loop hints between two polls.
const SPINS_PER_POLL: u32 = 16;

/// `receiver.recv()`, polling for up to `spin` before parking.
pub(crate) fn recv<T>(receiver: &Receiver<T>, spin: Duration) -> Result<T, RecvError> {
    match poll(receiver, spin) {
        Polled::Ready(value) => Ok(value),
        Polled::Disconnected => Err(RecvError),
        Polled::Empty => receiver.recv(),
    }
}

/// `receiver.recv()` that also gives up when `unless` disconnects (a channel that never carries a
/// message), polling for up to `spin` before parking on both.
pub(crate) fn recv_unless<T>(
    receiver: &Receiver<T>,
    unless: &Receiver<()>,
    spin: Duration,
) -> Result<T, RecvError> {
    match poll(receiver, spin) {
        Polled::Ready(value) => Ok(value),
        Polled::Disconnected => Err(RecvError),
        Polled::Empty => crossbeam_channel::select! {
            recv(receiver) -> value => value,
            recv(unless) -> _ => Err(RecvError),
        },
    }
}

/// `receiver.recv_deadline(deadline)`, polling for up to `spin` before parking.
pub(crate) fn recv_deadline<T>(
    receiver: &Receiver<T>,
    spin: Duration,
    deadline: Instant,
) -> Result<T, RecvTimeoutError> {
    match poll(receiver, spin) {
        Polled::Ready(value) => Ok(value),
        Polled::Disconnected => Err(RecvTimeoutError::Disconnected),
        Polled::Empty => receiver.recv_deadline(deadline),
    }
}

/// What [`poll`] found.
pub(crate) enum Polled<T> {
    Ready(T),
    /// Nothing arrived within the time given.
    Empty,
    Disconnected,
}

/// Polls `receiver` for up to `spin`, never parking.
pub(crate) fn poll<T>(receiver: &Receiver<T>, spin: Duration) -> Polled<T> {
    let polled = spin_until(spin, || match receiver.try_recv() {
        Ok(value) => Some(Polled::Ready(value)),
        Err(TryRecvError::Disconnected) => Some(Polled::Disconnected),
        Err(TryRecvError::Empty) => None,
    });
    polled.unwrap_or(Polled::Empty)
}

/// Asks `ready` until it answers `Some`, for up to `spin`, never parking: the spinning half of
/// spin-then-park, shared by the channels here and the process tier's shared-memory mailbox (which
/// parks on a futex instead). `None` when nothing was ready in time.
pub(crate) fn spin_until<T>(spin: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        let waited = started.elapsed();
        if waited >= spin {
            return None;
        }
        for _ in 0..SPINS_PER_POLL {
            std::hint::spin_loop();
        }
        if waited >= PURE_SPIN {
            std::thread::yield_now();
        }
    }
}
