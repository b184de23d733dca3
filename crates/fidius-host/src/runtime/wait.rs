//! Waiting on a channel: spin briefly, then park.
//!
//! A thread parked on a channel takes ~10 µs to wake on this class of machine, which would dominate
//! a sub-microsecond Python call. Both sides of a call therefore poll for a short, bounded time
//! first (yielding the core to anything else runnable), then block without using CPU.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, TryRecvError};

/// How long a waiting thread polls before it parks.
pub(crate) const SPIN_BEFORE_PARKING: Duration = Duration::from_micros(50);

/// Pure spin iterations between clock reads and yields.
const SPINS_PER_ROUND: u32 = 32;

/// `receiver.recv()`, polling for up to `spin` before parking.
pub(crate) fn recv<T>(receiver: &Receiver<T>, spin: Duration) -> Result<T, RecvError> {
    let started = Instant::now();
    loop {
        match receiver.try_recv() {
            Ok(value) => return Ok(value),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) => {}
        }
        if started.elapsed() >= spin {
            return receiver.recv();
        }
        for _ in 0..SPINS_PER_ROUND {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}
