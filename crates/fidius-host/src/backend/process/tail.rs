//! What a worker process writes to its stderr: read on its own thread, line by line, with the last
//! lines kept for error messages (a crash during a call or a load, a probe worker that failed).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::plugin::output::LINE_LIMIT;

/// Lines of a worker's stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// Bytes of a worker's stderr kept for error messages (older lines are dropped first; the newest
/// line is always kept, at most [`LINE_LIMIT`] bytes).
const TAIL_BYTES: usize = 64 * 1024;

/// The last lines of a stream, bounded by [`TAIL_LINES`] and [`TAIL_BYTES`].
#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Lines {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some(dropped) = self.lines.pop_front() {
                self.bytes -= dropped.len();
            }
        }
    }

    fn text(&self) -> String {
        self.lines.iter().map(|line| format!("{line}\n")).collect()
    }
}

/// Follows a worker's stderr pipe on a thread of its own, handing every line to a callback and
/// keeping the last ones.
pub(crate) struct StderrTail {
    lines: Arc<Mutex<Lines>>,
    done: Option<Receiver<()>>,
}

impl StderrTail {
    /// Reads `pipe` to its end on a thread named `thread_name`, calling `each` with every line.
    /// Without a thread (the system refused one), nothing is read and the tail stays empty.
    pub(crate) fn follow(
        pipe: impl Read + Send + 'static,
        thread_name: String,
        mut each: impl FnMut(String) + Send + 'static,
    ) -> Self {
        let lines = Arc::new(Mutex::new(Lines::default()));
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let kept = Arc::clone(&lines);
        let spawned = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                read_lines(pipe, |text| {
                    kept.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(text.clone());
                    each(text);
                });
                let _ = done_tx.send(());
            });
        Self {
            lines,
            done: spawned.ok().map(|_| done_rx),
        }
    }

    /// Waits up to `within` for the reader to reach the end of the pipe (a grandchild process may
    /// hold it open, and must not hang the host), then returns the last lines, each ending in `\n`.
    pub(crate) fn finish(&mut self, within: Duration) -> String {
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(within);
        }
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .text()
    }
}

/// Splits what a worker writes to its file descriptors into lines for `each`, keeping at most
/// [`LINE_LIMIT`] bytes of a line (the rest is counted and named in a marker), so a worker writing
/// gigabytes without a newline costs the host no more than that.
pub(crate) fn read_lines(pipe: impl Read, mut each: impl FnMut(String)) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::new();
    let mut dropped = 0usize;
    let finish = |line: &mut Vec<u8>, dropped: &mut usize| {
        let mut text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_owned();
        if *dropped > 0 {
            text.push_str(&format!(
                "... [fidius: {dropped} more bytes of this line dropped]"
            ));
        }
        line.clear();
        *dropped = 0;
        text
    };
    loop {
        let available = match reader.fill_buf() {
            Ok([]) => break,
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let newline = available.iter().position(|byte| *byte == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let kept = chunk.len().min(LINE_LIMIT - line.len());
        line.extend_from_slice(&chunk[..kept]);
        dropped += chunk.len() - kept;
        let consumed = newline.map_or(available.len(), |at| at + 1);
        reader.consume(consumed);
        if newline.is_some() {
            each(finish(&mut line, &mut dropped));
        }
    }
    if !line.is_empty() || dropped > 0 {
        each(finish(&mut line, &mut dropped));
    }
}
