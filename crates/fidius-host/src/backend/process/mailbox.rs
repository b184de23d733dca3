//! Messages between a host and one worker process, through shared memory.
//!
//! Each direction has [`SLOTS`] chunk buffers used in turn, a published-chunk counter (`seq`) and a
//! consumed-chunk counter (`ack`). The protocol is strictly request/response, so a direction only
//! ever has one producer and one consumer, and small messages (one chunk) cost two atomic stores
//! and no system call when the other side is polling. Both sides poll for a bounded time, then
//! sleep on a futex in the shared header (a cross-process futex, hence no `FUTEX_PRIVATE`).
//! Messages larger than a chunk stream through the slots: the producer fills one while the consumer
//! empties the other. Each byte is copied once per direction (from the sender's slice into a slot,
//! from the slot into the receiver's buffer, which may be a Python `bytes` built in place: see
//! [`Mailbox::receive_header`]). Every value read from the other process is validated: a broken or
//! hostile worker can make the host give up on it, never read out of bounds or allocate without
//! limit.

use std::io;
use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fidius_ffi::{AppendTarget, SharedMemory};
use rustix::thread::futex;

use crate::backend::wait::spin_until;

/// Bytes of one chunk. Small calls touch only the first page of it.
const CHUNK: usize = 256 << 10;
/// Chunk buffers per direction: with two, sender and receiver copy at the same time.
const SLOTS: u32 = 2;
/// The data region: each direction's slots.
const DATA_LEN: usize = 2 * SLOTS as usize * CHUNK;
/// Identifies the layout (and its version): header words 0 and 1.
const MAGIC: [u32; 2] = [
    u32::from_le_bytes(*b"fidi"),
    u32::from_le_bytes(*b"us\x02\x00"),
];
/// A message starts with its body length (u64) and its kind (u8).
const MESSAGE_HEADER: usize = 9;

/// The longest a waiting side sleeps before checking that its peer is still there.
const SLEEP_SLICE: Duration = Duration::from_millis(5);

/// Header words per cache line (128 bytes, two lines on CPUs that fetch pairs).
const LINE_WORDS: usize = 32;
/// Header words in all: the magic's line, then each direction's four lines.
const HEADER_WORDS: usize = LINE_WORDS * (1 + 2 * 4);

/// Which end of the mailbox this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Host,
    Worker,
}

/// Where one direction's counters (header words) and chunk buffers (data offset) are. The words
/// the producer writes and those the consumer writes sit on different cache lines.
#[derive(Debug, Clone, Copy)]
struct Direction {
    /// Chunks published (producer).
    seq: usize,
    /// Bytes in each slot's chunk (producer): `SLOTS` words from here.
    len: usize,
    /// Chunks consumed (consumer).
    ack: usize,
    consumer_sleeping: usize,
    producer_sleeping: usize,
    data: usize,
}

impl Direction {
    const fn new(index: usize) -> Self {
        let base = LINE_WORDS * (1 + index * 4);
        Self {
            seq: base,
            len: base + 1,
            ack: base + LINE_WORDS,
            consumer_sleeping: base + 2 * LINE_WORDS,
            producer_sleeping: base + 3 * LINE_WORDS,
            data: index * SLOTS as usize * CHUNK,
        }
    }

    /// The header word holding the length of chunk number `chunk`, and where its bytes are.
    fn slot(self, chunk: u32) -> (usize, usize) {
        let slot = (chunk % SLOTS) as usize;
        (self.len + slot, self.data + slot * CHUNK)
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
    /// Asked only when a sleep slice passed without news: is the other side still there?
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
    /// The message being received, between its header and the end of its body.
    partial: Option<Partial>,
}

/// What is left of a message being received.
struct Partial {
    /// Body bytes not read yet.
    unread: usize,
    /// The unread part of the current chunk (data-region offsets); empty once it was released.
    chunk: Range<usize>,
}

impl Mailbox {
    /// The host's end: a new shared memory file, to hand to the worker with [`file`](Self::file).
    pub(crate) fn create() -> io::Result<Self> {
        let memory = SharedMemory::create(HEADER_WORDS, DATA_LEN)?;
        for (word, value) in memory.header().iter().zip(MAGIC) {
            word.store(value, Ordering::Release);
        }
        Ok(Self::with_end(memory, End::Host))
    }

    /// The worker's end, over the memory file its host created.
    pub(crate) fn open(file: OwnedFd) -> io::Result<Self> {
        let not_ours = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a fidius mailbox (host and worker from different builds?)",
            )
        };
        let memory = SharedMemory::open(file, HEADER_WORDS, DATA_LEN).map_err(|_| not_ours())?;
        let magic = memory
            .header()
            .iter()
            .map(|word| word.load(Ordering::Acquire));
        if !magic.take(MAGIC.len()).eq(MAGIC) {
            return Err(not_ours());
        }
        Ok(Self::with_end(memory, End::Worker))
    }

    fn with_end(memory: SharedMemory, end: End) -> Self {
        let (outgoing, incoming) = match end {
            End::Host => (TO_WORKER, TO_HOST),
            End::Worker => (TO_HOST, TO_WORKER),
        };
        let header = memory.header();
        Self {
            sent: header[outgoing.seq].load(Ordering::Acquire),
            received: header[incoming.ack].load(Ordering::Acquire),
            memory,
            outgoing,
            incoming,
            partial: None,
        }
    }

    /// The shared memory file, for the worker's stdin.
    pub(crate) fn file(&self) -> BorrowedFd<'_> {
        self.memory.file()
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        &self.memory.header()[index]
    }

    /// Sends one message: `kind`, then the concatenation of `parts`. Each byte is copied once,
    /// from its part straight into the shared chunk.
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
            // The chunk that last used this slot must have been consumed before it is reused.
            let out = self.outgoing;
            loop {
                let ack = self.word(out.ack).load(Ordering::Acquire);
                if self.sent.wrapping_sub(ack) < SLOTS {
                    break;
                }
                wait_for_change(
                    self.word(out.ack),
                    self.word(out.producer_sleeping),
                    ack,
                    wait,
                )?;
            }
            let (len_word, data) = out.slot(self.sent);
            let mut filled = 0;
            while let Some(piece) = current {
                let take = (piece.len() - offset_in_piece).min(CHUNK - filled);
                self.memory.write(
                    data + filled,
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
            self.word(len_word).store(filled as u32, Ordering::Relaxed);
            self.sent = self.sent.wrapping_add(1);
            publish(
                self.word(out.seq),
                self.word(out.consumer_sleeping),
                self.sent,
            );
        }
        Ok(())
    }

    /// Receives one message: its kind and body. A body longer than `max_body` is a protocol error.
    /// Each byte is copied once, from the shared chunk straight into the returned body.
    pub(crate) fn receive(
        &mut self,
        max_body: usize,
        wait: &mut Wait<'_>,
    ) -> Result<(u8, Vec<u8>), ReceiveError> {
        let (kind, _) = self.receive_header(max_body, wait)?;
        Ok((kind, self.receive_rest(wait)?))
    }

    /// Reads what is left of the current message into a new `Vec`, reserved once (the header
    /// bounded the length, and its first chunk proved consistent with it).
    pub(crate) fn receive_rest(&mut self, wait: &mut Wait<'_>) -> Result<Vec<u8>, ReceiveError> {
        let len = self.body_left();
        let mut body = Vec::with_capacity(len);
        self.receive_body(len, &mut body, wait)?;
        Ok(body)
    }

    /// Receives the start of one message: its kind and body length. The body must then be read to
    /// its end with [`receive_body`](Self::receive_body) (in as many pieces and into as many
    /// targets as the receiver likes, e.g. a `bytes` object built in place) or
    /// [`skip_body`](Self::skip_body) before the next message.
    pub(crate) fn receive_header(
        &mut self,
        max_body: usize,
        wait: &mut Wait<'_>,
    ) -> Result<(u8, usize), ReceiveError> {
        if let Some(partial) = &self.partial {
            return Err(ReceiveError::Protocol(format!(
                "{} bytes of the last message were left unread",
                partial.unread
            )));
        }
        let (data, first) = self.next_chunk(wait)?;
        if first < MESSAGE_HEADER {
            return Err(ReceiveError::Protocol(format!(
                "message header cut short ({first} bytes)"
            )));
        }
        let mut header = [0u8; MESSAGE_HEADER];
        self.memory.read(data, &mut header);
        let mut length = [0u8; 8];
        length.copy_from_slice(&header[..8]);
        let body_len = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
        if body_len > max_body {
            return Err(ReceiveError::Protocol(format!(
                "message of {body_len} bytes exceeds the limit of {max_body}"
            )));
        }
        let chunk = data + MESSAGE_HEADER..data + first;
        if chunk.len() > body_len {
            return Err(ReceiveError::Protocol(format!(
                "message body of more than {body_len} announced bytes"
            )));
        }
        if chunk.is_empty() {
            self.consumed();
        }
        if body_len > 0 {
            self.partial = Some(Partial {
                unread: body_len,
                chunk,
            });
        }
        Ok((header[8], body_len))
    }

    /// Body bytes of the current message not read yet.
    pub(crate) fn body_left(&self) -> usize {
        self.partial.as_ref().map_or(0, |partial| partial.unread)
    }

    /// Reads the next `len` bytes of the message whose header [`receive_header`] returned (at
    /// most what is left of it) and appends them to `into`.
    ///
    /// [`receive_header`]: Self::receive_header
    pub(crate) fn receive_body(
        &mut self,
        len: usize,
        into: &mut impl AppendTarget,
        wait: &mut Wait<'_>,
    ) -> Result<(), ReceiveError> {
        self.take_body(len, wait, |memory, chunk| {
            memory.append_to(chunk.start, chunk.len(), into);
        })
    }

    /// Reads the next `N` bytes of the current message into an array (a protocol error if the
    /// message has fewer left).
    pub(crate) fn receive_array<const N: usize>(
        &mut self,
        wait: &mut Wait<'_>,
    ) -> Result<[u8; N], ReceiveError> {
        let left = self.body_left();
        if left < N {
            return Err(ReceiveError::Protocol(format!(
                "{left} bytes left of a message where {N} were due"
            )));
        }
        let mut array = [0u8; N];
        let mut filled = 0;
        self.take_body(N, wait, |memory, chunk| {
            let len = chunk.len();
            memory.read(chunk.start, &mut array[filled..filled + len]);
            filled += len;
        })?;
        Ok(array)
    }

    /// Reads what is left of the current message without keeping it.
    pub(crate) fn skip_body(&mut self, wait: &mut Wait<'_>) -> Result<(), ReceiveError> {
        self.take_body(usize::MAX, wait, |_, _| {})
    }

    /// Hands the next `len` body bytes (at most what is left) to `copy`, one chunk's worth at a
    /// time, waiting for chunks as they are published and releasing each once it was copied.
    fn take_body(
        &mut self,
        len: usize,
        wait: &mut Wait<'_>,
        mut copy: impl FnMut(&mut SharedMemory, Range<usize>),
    ) -> Result<(), ReceiveError> {
        let Some(mut partial) = self.partial.take() else {
            return Ok(());
        };
        let mut len = len.min(partial.unread);
        while len > 0 {
            if partial.chunk.is_empty() {
                let (data, chunk_len) = self.next_chunk(wait)?;
                if chunk_len == 0 || chunk_len > partial.unread {
                    return Err(ReceiveError::Protocol(format!(
                        "a chunk of {chunk_len} bytes where {} were left of the message",
                        partial.unread
                    )));
                }
                partial.chunk = data..data + chunk_len;
            }
            let take = len.min(partial.chunk.len());
            let start = partial.chunk.start;
            copy(&mut self.memory, start..start + take);
            partial.chunk.start += take;
            partial.unread -= take;
            len -= take;
            if partial.chunk.is_empty() {
                self.consumed();
            }
        }
        if partial.unread > 0 {
            self.partial = Some(partial);
        }
        Ok(())
    }

    /// Waits for the next chunk and returns where it starts in the data region and its length,
    /// validated against the buffer.
    fn next_chunk(&mut self, wait: &mut Wait<'_>) -> Result<(usize, usize), ReceiveError> {
        let incoming = self.incoming;
        if self.word(incoming.seq).load(Ordering::Acquire) == self.received {
            wait_for_change(
                self.word(incoming.seq),
                self.word(incoming.consumer_sleeping),
                self.received,
                wait,
            )?;
        }
        let published = self.word(incoming.seq).load(Ordering::Acquire);
        let ahead = published.wrapping_sub(self.received);
        if ahead == 0 || ahead > SLOTS {
            return Err(ReceiveError::Protocol(format!(
                "chunk counter jumped from {} to {published}",
                self.received
            )));
        }
        let (len_word, data) = incoming.slot(self.received);
        let len = self.word(len_word).load(Ordering::Relaxed) as usize;
        if len > CHUNK {
            return Err(ReceiveError::Protocol(format!(
                "chunk of {len} bytes in a {CHUNK}-byte buffer"
            )));
        }
        Ok((data, len))
    }

    /// Hands the chunk just read back to the producer.
    fn consumed(&mut self) {
        self.received = self.received.wrapping_add(1);
        publish(
            self.word(self.incoming.ack),
            self.word(self.incoming.producer_sleeping),
            self.received,
        );
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
/// slices, checking the deadline between them and the peer after a slice that brought nothing.
fn wait_for_change(
    word: &AtomicU32,
    sleeping: &AtomicU32,
    seen: u32,
    wait: &mut Wait<'_>,
) -> Result<(), Interrupted> {
    let changed = || (word.load(Ordering::Acquire) != seen).then_some(());
    if spin_until(wait.spin, changed).is_some() {
        return Ok(());
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
    fn a_body_can_be_read_in_pieces_into_different_targets_or_skipped() {
        let mut host = Mailbox::create().expect("memfd");
        let file = host.file().try_clone_to_owned().expect("dup");
        let mut worker = Mailbox::open(file).expect("open");
        let body: Vec<u8> = (0..2 * CHUNK + 99).map(|byte| (byte % 251) as u8).collect();
        let sender = std::thread::spawn(move || {
            host.send(7, &[&body], &mut forever()).expect("send");
            host.send(8, &[&body], &mut forever()).expect("send");
            host.send(9, &[b"after"], &mut forever()).expect("send");
            body
        });
        let (kind, len) = worker
            .receive_header(usize::MAX, &mut forever())
            .expect("header");
        assert_eq!((kind, len), (7, 2 * CHUNK + 99));
        // A piece ending inside a chunk, one spanning the chunk boundary, then the rest.
        let mut first = worker
            .receive_array::<4>(&mut forever())
            .expect("piece")
            .to_vec();
        let mut rest = Vec::new();
        worker
            .receive_body(CHUNK, &mut rest, &mut forever())
            .expect("piece");
        assert_eq!(worker.body_left(), len - 4 - CHUNK);
        worker
            .receive_body(usize::MAX, &mut rest, &mut forever())
            .expect("rest");
        assert_eq!(worker.body_left(), 0);
        let (kind, _) = worker
            .receive_header(usize::MAX, &mut forever())
            .expect("header");
        assert_eq!(kind, 8);
        worker.skip_body(&mut forever()).expect("skip");
        let (kind, after) = worker.receive(16, &mut forever()).expect("after");
        assert_eq!((kind, &after[..]), (9, &b"after"[..]));
        let body = sender.join().expect("sender");
        first.extend_from_slice(&rest);
        assert_eq!(first, body);
    }

    #[test]
    fn a_message_left_half_read_is_not_mistaken_for_the_next() {
        let mut host = Mailbox::create().expect("memfd");
        let file = host.file().try_clone_to_owned().expect("dup");
        let mut worker = Mailbox::open(file).expect("open");
        host.send(1, &[&[5u8; 64]], &mut forever()).expect("send");
        worker
            .receive_header(usize::MAX, &mut forever())
            .expect("header");
        let mut piece = Vec::new();
        worker
            .receive_body(10, &mut piece, &mut forever())
            .expect("piece");
        assert!(matches!(
            worker.receive_header(usize::MAX, &mut forever()),
            Err(ReceiveError::Protocol(reason)) if reason.contains("54 bytes")
        ));
        assert!(matches!(
            worker.receive_array::<55>(&mut forever()),
            Err(ReceiveError::Protocol(reason)) if reason.contains("54 bytes left")
        ));
    }

    #[test]
    fn a_continuation_chunk_that_is_empty_or_too_long_is_a_protocol_error() {
        for forged_len in [0, 100] {
            let mut host = Mailbox::create().expect("memfd");
            let file = host.file().try_clone_to_owned().expect("dup");
            let mut worker = Mailbox::open(file).expect("open");
            // A message announcing one byte more than its first chunk holds, then a forged chunk.
            let mut first = [0u8; CHUNK];
            first[..8].copy_from_slice(&((CHUNK - MESSAGE_HEADER + 1) as u64).to_le_bytes());
            worker.memory.write(TO_HOST.data, &first);
            let (len_word, _) = TO_HOST.slot(0);
            worker.word(len_word).store(CHUNK as u32, Ordering::Relaxed);
            let (len_word, _) = TO_HOST.slot(1);
            worker.word(len_word).store(forged_len, Ordering::Relaxed);
            worker.word(TO_HOST.seq).store(2, Ordering::SeqCst);
            assert!(
                matches!(
                    host.receive(usize::MAX, &mut forever()),
                    Err(ReceiveError::Protocol(reason)) if reason.contains("left of the message")
                ),
                "a {forged_len}-byte continuation chunk"
            );
        }
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
        for chunk in 0..SLOTS {
            let (len_word, _) = TO_HOST.slot(chunk);
            worker.word(len_word).store(u32::MAX, Ordering::Relaxed);
        }
        worker.word(TO_HOST.seq).fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            host.receive(usize::MAX, &mut forever()),
            Err(ReceiveError::Protocol(_))
        ));
    }
}
