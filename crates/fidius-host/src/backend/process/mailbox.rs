//! Messages between a host and one worker process, through shared memory.
//!
//! Each direction has one chunk buffer, a published-chunk counter (`seq`) and a consumed-chunk
//! counter (`ack`). The protocol is strictly request/response, so a direction only ever has one
//! producer and one consumer, and small messages (one chunk) cost two atomic stores and no system
//! call when the other side is polling. Both sides poll for a bounded time, then sleep on a futex
//! in the shared page (a cross-process futex, hence no `FUTEX_PRIVATE`). Messages larger than a
//! chunk stream through it. Every value read from the other process is validated: a broken or
//! hostile worker can make the host give up on it, never read out of bounds or allocate without
//! limit.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fidius_ffi::SharedMemory;
use rustix::thread::futex;

/// Bytes of one chunk. Small calls touch only the first page of it.
const CHUNK: usize = 256 << 10;
/// Where the chunk buffers start; the page before holds the counters.
const DATA: usize = 4096;
/// Identifies the layout (and its version) at offset 0.
const MAGIC: u64 = u64::from_le_bytes(*b"fidius\x01\x00");
/// A message starts with its body length (u64) and its kind (u8).
const MESSAGE_HEADER: usize = 9;

/// The longest a waiting side sleeps before checking that its peer is still there.
const SLEEP_SLICE: Duration = Duration::from_millis(5);
/// How long a waiting side spins without yielding the core.
const PURE_SPIN: Duration = Duration::from_micros(3);

/// Which end of the mailbox this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Host,
    Worker,
}

/// Offsets of one direction's counters. Each sits on its own cache line.
#[derive(Debug, Clone, Copy)]
struct Direction {
    seq: usize,
    len: usize,
    ack: usize,
    consumer_sleeping: usize,
    producer_sleeping: usize,
    data: usize,
}

impl Direction {
    const fn new(index: usize) -> Self {
        let base = 256 + index * 1024;
        Self {
            seq: base,
            len: base + 4,
            ack: base + 128,
            consumer_sleeping: base + 256,
            producer_sleeping: base + 384,
            data: DATA + index * CHUNK,
        }
    }
}

const TO_WORKER: Direction = Direction::new(0);
const TO_HOST: Direction = Direction::new(1);

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    /// The deadline passed.
    Deadline,
    /// The peer went away (its `alive` check said so).
    PeerGone,
}

/// Why a message could not be received.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    Interrupted(Interrupted),
    /// The peer broke the protocol (a chunk or message length out of bounds).
    Protocol(String),
}

impl From<Interrupted> for ReceiveError {
    fn from(interrupted: Interrupted) -> Self {
        Self::Interrupted(interrupted)
    }
}

/// How one send or receive waits for the other side.
pub(crate) struct Wait<'a> {
    /// Poll this long before sleeping.
    pub(crate) spin: Duration,
    pub(crate) deadline: Option<Instant>,
    /// Asked between sleeps: is the other side still there?
    pub(crate) alive: &'a mut dyn FnMut() -> bool,
}

/// One end of a host/worker mailbox.
pub(crate) struct Mailbox {
    memory: SharedMemory,
    outgoing: Direction,
    incoming: Direction,
    /// Chunks this end has published / consumed so far (wrapping).
    sent: u32,
    received: u32,
}

impl Mailbox {
    /// The host's end: a new shared memory file, to hand to the worker with [`file`](Self::file).
    pub(crate) fn create() -> io::Result<Self> {
        let memory = SharedMemory::create(DATA + 2 * CHUNK)?;
        memory.atomic_u64(0).store(MAGIC, Ordering::Release);
        Ok(Self::with_end(memory, End::Host))
    }

    /// The worker's end, over the memory file its host created.
    pub(crate) fn open(file: OwnedFd) -> io::Result<Self> {
        let memory = SharedMemory::open(file)?;
        if memory.len() != DATA + 2 * CHUNK || memory.atomic_u64(0).load(Ordering::Acquire) != MAGIC
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a fidius mailbox (host and worker from different builds?)",
            ));
        }
        Ok(Self::with_end(memory, End::Worker))
    }

    fn with_end(memory: SharedMemory, end: End) -> Self {
        let (outgoing, incoming) = match end {
            End::Host => (TO_WORKER, TO_HOST),
            End::Worker => (TO_HOST, TO_WORKER),
        };
        Self {
            sent: memory.atomic_u32(outgoing.seq).load(Ordering::Acquire),
            received: memory.atomic_u32(incoming.ack).load(Ordering::Acquire),
            memory,
            outgoing,
            incoming,
        }
    }

    /// The shared memory file, for the worker's stdin.
    pub(crate) fn file(&self) -> BorrowedFd<'_> {
        self.memory.file()
    }

    /// Sends one message: `kind`, then the concatenation of `parts`.
    pub(crate) fn send(
        &mut self,
        kind: u8,
        parts: &[&[u8]],
        wait: &mut Wait<'_>,
    ) -> Result<(), Interrupted> {
        let body_len: usize = parts.iter().map(|part| part.len()).sum();
        let mut header = [0u8; MESSAGE_HEADER];
        header[..8].copy_from_slice(&(body_len as u64).to_le_bytes());
        header[8] = kind;
        let mut pieces = std::iter::once(&header[..])
            .chain(parts.iter().copied())
            .filter(|piece| !piece.is_empty());
        let mut current = pieces.next();
        let mut offset_in_piece = 0;
        while current.is_some() {
            // The previous chunk must have been consumed before its buffer is reused.
            let ack = self.memory.atomic_u32(self.outgoing.ack);
            if ack.load(Ordering::Acquire) != self.sent {
                let sleeping = self.memory.atomic_u32(self.outgoing.producer_sleeping);
                wait_for_change(ack, sleeping, self.sent.wrapping_sub(1), wait)?;
            }
            let mut filled = 0;
            while let Some(piece) = current {
                let take = (piece.len() - offset_in_piece).min(CHUNK - filled);
                self.memory.write(
                    self.outgoing.data + filled,
                    &piece[offset_in_piece..offset_in_piece + take],
                );
                filled += take;
                offset_in_piece += take;
                if offset_in_piece == piece.len() {
                    current = pieces.next();
                    offset_in_piece = 0;
                }
                if filled == CHUNK {
                    break;
                }
            }
            self.memory
                .atomic_u32(self.outgoing.len)
                .store(filled as u32, Ordering::Relaxed);
            self.sent = self.sent.wrapping_add(1);
            publish(
                self.memory.atomic_u32(self.outgoing.seq),
                self.memory.atomic_u32(self.outgoing.consumer_sleeping),
                self.sent,
            );
        }
        Ok(())
    }

    /// Receives one message: its kind and body. A body longer than `max_body` is a protocol error.
    pub(crate) fn receive(
        &mut self,
        max_body: usize,
        wait: &mut Wait<'_>,
    ) -> Result<(u8, Vec<u8>), ReceiveError> {
        let first = self.receive_chunk(wait)?;
        if first.len() < MESSAGE_HEADER {
            return Err(ReceiveError::Protocol(format!(
                "message header cut short ({} bytes)",
                first.len()
            )));
        }
        let mut length = [0u8; 8];
        length.copy_from_slice(&first[..8]);
        let body_len = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
        if body_len > max_body {
            return Err(ReceiveError::Protocol(format!(
                "message of {body_len} bytes exceeds the limit of {max_body}"
            )));
        }
        let kind = first[8];
        let mut body = Vec::with_capacity(body_len);
        body.extend_from_slice(&first[MESSAGE_HEADER..]);
        while body.len() < body_len {
            let chunk = self.receive_chunk(wait)?;
            body.extend_from_slice(&chunk);
        }
        if body.len() != body_len {
            return Err(ReceiveError::Protocol(format!(
                "message body of {} bytes announced as {body_len}",
                body.len()
            )));
        }
        Ok((kind, body))
    }

    fn receive_chunk(&mut self, wait: &mut Wait<'_>) -> Result<Vec<u8>, ReceiveError> {
        let seq = self.memory.atomic_u32(self.incoming.seq);
        if seq.load(Ordering::Acquire) == self.received {
            let sleeping = self.memory.atomic_u32(self.incoming.consumer_sleeping);
            wait_for_change(seq, sleeping, self.received, wait)?;
        }
        let published = seq.load(Ordering::Acquire);
        if published != self.received.wrapping_add(1) {
            return Err(ReceiveError::Protocol(format!(
                "chunk counter jumped from {} to {published}",
                self.received
            )));
        }
        let len = self
            .memory
            .atomic_u32(self.incoming.len)
            .load(Ordering::Relaxed) as usize;
        if len > CHUNK {
            return Err(ReceiveError::Protocol(format!(
                "chunk of {len} bytes in a {CHUNK}-byte buffer"
            )));
        }
        let mut chunk = vec![0u8; len];
        self.memory.read(self.incoming.data, &mut chunk);
        self.received = published;
        publish(
            self.memory.atomic_u32(self.incoming.ack),
            self.memory.atomic_u32(self.incoming.producer_sleeping),
            self.received,
        );
        Ok(chunk)
    }
}

/// Stores `value` and wakes the other side if it went to sleep on `word`.
fn publish(word: &AtomicU32, sleeping: &AtomicU32, value: u32) {
    // SeqCst on both sides (here and in `wait_for_change`): either the sleeper sees the new value
    // before it sleeps, or this side sees its flag and wakes it.
    word.store(value, Ordering::SeqCst);
    if sleeping.load(Ordering::SeqCst) != 0 {
        let _ = futex::wake(word, futex::Flags::empty(), 1);
    }
}

/// Waits until `word` no longer holds `seen`: polls for `wait.spin`, then sleeps on the futex in
/// slices, checking the deadline and the peer between them.
fn wait_for_change(
    word: &AtomicU32,
    sleeping: &AtomicU32,
    seen: u32,
    wait: &mut Wait<'_>,
) -> Result<(), Interrupted> {
    let started = Instant::now();
    loop {
        for _ in 0..16 {
            if word.load(Ordering::Acquire) != seen {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        let waited = started.elapsed();
        if waited >= wait.spin {
            break;
        }
        if waited >= PURE_SPIN {
            std::thread::yield_now();
        }
    }
    loop {
        sleeping.store(1, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) != seen {
            sleeping.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let mut slice = SLEEP_SLICE;
        if let Some(deadline) = wait.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                sleeping.store(0, Ordering::Relaxed);
                return Err(Interrupted::Deadline);
            }
            slice = slice.min(left);
        }
        let timeout = futex::Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(slice.subsec_nanos()),
        };
        // Woken, timed out, or the value already changed: all end up re-checking below.
        let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&timeout));
        sleeping.store(0, Ordering::Relaxed);
        if word.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        if !(wait.alive)() {
            return Err(Interrupted::PeerGone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> Wait<'static> {
        Wait {
            spin: Duration::from_micros(50),
            deadline: None,
            alive: Box::leak(Box::new(|| true)),
        }
    }

    #[test]
    fn messages_of_every_size_cross_in_order() {
        let mut host = Mailbox::create().expect("memfd");
        let file = host.file().try_clone_to_owned().expect("dup");
        let sizes = [0, 1, 100, CHUNK - MESSAGE_HEADER, CHUNK, 3 * CHUNK + 17];
        let worker = std::thread::spawn(move || {
            let mut worker = Mailbox::open(file).expect("open");
            for _ in sizes {
                let (kind, body) = worker.receive(usize::MAX, &mut forever()).expect("receive");
                let reply: Vec<u8> = body.iter().map(|byte| byte.wrapping_add(1)).collect();
                worker
                    .send(kind + 1, &[&reply], &mut forever())
                    .expect("send");
            }
        });
        for (index, size) in sizes.into_iter().enumerate() {
            let body: Vec<u8> = (0..size).map(|byte| (byte * 7 + index) as u8).collect();
            let (head, tail) = body.split_at(size / 3);
            host.send(index as u8, &[head, tail], &mut forever())
                .expect("send");
            let (kind, reply) = host.receive(usize::MAX, &mut forever()).expect("receive");
            assert_eq!(kind, index as u8 + 1);
            let expected: Vec<u8> = body.iter().map(|byte| byte.wrapping_add(1)).collect();
            assert_eq!(reply, expected, "size {size}");
        }
        worker.join().expect("worker thread");
    }

    #[test]
    fn a_silent_peer_ends_the_wait_at_the_deadline_or_when_it_is_gone() {
        let mut host = Mailbox::create().expect("memfd");
        let mut wait = Wait {
            spin: Duration::from_micros(10),
            deadline: Some(Instant::now() + Duration::from_millis(20)),
            alive: &mut || true,
        };
        assert!(matches!(
            host.receive(16, &mut wait),
            Err(ReceiveError::Interrupted(Interrupted::Deadline))
        ));
        let mut checks = 0;
        let mut alive = || {
            checks += 1;
            checks < 3
        };
        let mut wait = Wait {
            spin: Duration::ZERO,
            deadline: None,
            alive: &mut alive,
        };
        assert!(matches!(
            host.receive(16, &mut wait),
            Err(ReceiveError::Interrupted(Interrupted::PeerGone))
        ));
    }

    #[test]
    fn an_oversized_or_forged_message_is_a_protocol_error() {
        let mut host = Mailbox::create().expect("memfd");
        let file = host.file().try_clone_to_owned().expect("dup");
        let mut worker = Mailbox::open(file).expect("open");
        worker.send(1, &[&[0u8; 64]], &mut forever()).expect("send");
        assert!(matches!(
            host.receive(63, &mut forever()),
            Err(ReceiveError::Protocol(_))
        ));
        // A worker that scribbles on the counters is caught too.
        worker
            .memory
            .atomic_u32(TO_HOST.len)
            .store(u32::MAX, Ordering::Relaxed);
        worker
            .memory
            .atomic_u32(TO_HOST.seq)
            .fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            host.receive(usize::MAX, &mut forever()),
            Err(ReceiveError::Protocol(_))
        ));
    }
}
