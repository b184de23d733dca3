//! What plugins write (`print`, `sys.stdout`/`sys.stderr`, `logging`), routed to `tracing` and kept
//! in a small per-plugin ring the host can read.
//!
//! The bootstrap replaces the interpreter's streams with writers that append complete lines to a
//! Python list and attaches a `logging` handler when the plugin imports `logging`. The instance drains
//! that list after the load and after every call, while it still holds the GIL; when nothing was
//! written, draining costs one length check.

use std::collections::VecDeque;
use std::sync::Mutex;

use fidius_ffi::{Interp, PyObj};
use serde::{Deserialize, Serialize};
use tracing::Level;

/// The `tracing` target of every event that carries plugin output.
pub const OUTPUT_TARGET: &str = "fidius::plugin";

/// Where a line of plugin output came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputStream {
    /// `print()` or `sys.stdout.write()`.
    Stdout,
    /// `sys.stderr.write()` (tracebacks printed by the plugin included).
    Stderr,
    /// A record of Python's `logging` module.
    Log {
        /// The logger's name, e.g. `root` or `mypkg.parser`.
        logger: String,
    },
}

/// One line a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputLine {
    /// The instance (0-based, as in its instance thread's or worker process's name) that wrote it.
    pub instance: usize,
    /// stdout, stderr or a `logging` record.
    pub stream: OutputStream,
    /// The level the line was logged at: stdout is `INFO`, stderr `WARN`, a `logging` record keeps
    /// its own (`DEBUG`, `INFO`, `WARNING`→`WARN`, `ERROR` and `CRITICAL`→`ERROR`).
    pub level: Level,
    /// The line without its newline (a `logging` record formatted by its handler's formatter, so a
    /// logged exception's traceback is part of it).
    pub text: String,
}

/// The most a line of plugin output keeps, in bytes (the bootstrap caps lines at 64 Ki characters;
/// this bounds what a worker process sends, or writes to its file descriptors, whatever it is).
pub(crate) const LINE_LIMIT: usize = 256 * 1024;
/// The most lines one drain delivers (the bootstrap's `_FIDIUS_OUTPUT_LIMIT`).
const LINES_PER_DRAIN: usize = 10_000;
/// The most text [`RecentOutput`] holds, in bytes, whatever its line capacity.
pub(crate) const RECENT_BYTES: usize = 1024 * 1024;

/// Cuts `text` to at most [`LINE_LIMIT`] bytes (on a character boundary), saying how much was cut.
pub(crate) fn cap_line(mut text: String) -> String {
    if text.len() <= LINE_LIMIT {
        return text;
    }
    let mut cut = LINE_LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(
        "... [fidius: {dropped} more bytes of this line dropped]"
    ));
    text
}

/// A plugin's most recent output lines, shared by its instances: at most `capacity` lines and
/// [`RECENT_BYTES`] of text.
#[derive(Debug)]
pub(crate) struct RecentOutput {
    kept: Mutex<Kept>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Kept {
    lines: VecDeque<OutputLine>,
    /// Bytes of text in `lines`.
    bytes: usize,
}

impl RecentOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            kept: Mutex::new(Kept {
                lines: VecDeque::with_capacity(capacity.min(1024)),
                bytes: 0,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Vec<OutputLine> {
        self.lock().lines.iter().cloned().collect()
    }

    fn extend(&self, new: impl IntoIterator<Item = OutputLine>) {
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.lock();
        for line in new {
            kept.bytes += line.text.len();
            kept.lines.push_back(line);
            while kept.lines.len() > self.capacity || kept.bytes > RECENT_BYTES {
                match kept.lines.pop_front() {
                    Some(old) => kept.bytes -= old.text.len(),
                    None => break,
                }
            }
        }
    }
}

/// Who an instance's output is attributed to.
pub(crate) struct OutputRoute<'a> {
    pub(crate) plugin: &'a str,
    pub(crate) version: &'a str,
    pub(crate) instance: usize,
    pub(crate) recent: &'a RecentOutput,
}

/// What `_fidius_take_output()` returns: the lines (stream, logging level, logger, text), and how
/// many were dropped over the limit. Process-tier workers send it to their host as it is.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Taken(Vec<(String, Option<u32>, Option<String>, String)>, u64);

impl Taken {
    /// One line the host itself read for the plugin (a worker process's stdout/stderr file
    /// descriptors, written by C code or `os.write`).
    pub(crate) fn line(stream: &str, text: String) -> Self {
        Self(vec![(stream.to_owned(), None, None, text)], 0)
    }
}

/// Where an attached interpreter's output goes once drained.
pub(crate) trait OutputSink {
    /// Takes whatever the plugin wrote since the last drain out of the interpreter. `buffer` is
    /// the bootstrap's `_fidius_output` list and `take` its `_fidius_take_output` function.
    fn drain(&self, buffer: &PyObj<'_>, take: &PyObj<'_>);
}

/// Takes the plugin's pending output; `Ok(None)` when it wrote nothing (one length check).
pub(crate) fn take(buffer: &PyObj<'_>, take: &PyObj<'_>) -> Result<Option<Taken>, String> {
    if buffer.is_empty().unwrap_or(true) {
        return Ok(None);
    }
    take.call(&[])
        .map_err(|raised| raised.describe().to_string())
        .and_then(|taken| taken.to_json().map_err(|error| error.to_string()))
        .and_then(|json| serde_json::from_slice::<Taken>(&json).map_err(|error| error.to_string()))
        .map(Some)
}

/// Python's `logging` level for the most verbose `tracing` level any subscriber enables, so records
/// the host would discard anyway are not even formatted.
pub(crate) fn python_log_level() -> u32 {
    match tracing::level_filters::LevelFilter::current().into_level() {
        None => 100,
        Some(Level::ERROR) => 40,
        Some(Level::WARN) => 30,
        Some(Level::INFO) => 20,
        Some(_) => 10,
    }
}

impl OutputSink for OutputRoute<'_> {
    fn drain(&self, buffer: &PyObj<'_>, take_output: &PyObj<'_>) {
        match take(buffer, take_output) {
            Ok(Some(taken)) => self.deliver(taken),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(plugin = self.plugin, %error, "could not read the plugin's output");
            }
        }
    }
}

impl OutputRoute<'_> {
    /// Emits and keeps lines the plugin wrote.
    pub(crate) fn deliver(&self, Taken(mut lines, mut dropped): Taken) {
        // The bootstrap keeps no more than this; a worker process that sends more is not trusted.
        if lines.len() > LINES_PER_DRAIN {
            dropped += (lines.len() - LINES_PER_DRAIN) as u64;
            lines.truncate(LINES_PER_DRAIN);
        }
        if dropped > 0 {
            tracing::warn!(
                target: OUTPUT_TARGET,
                plugin = self.plugin,
                version = self.version,
                instance = self.instance,
                dropped,
                "plugin output lines dropped (more than 10,000 lines or 4 Mi characters in one call)"
            );
        }
        let lines: Vec<OutputLine> = lines
            .into_iter()
            .map(|(stream, level, logger, text)| self.line(&stream, level, logger, cap_line(text)))
            .collect();
        for line in &lines {
            self.emit(line);
        }
        self.recent.extend(lines);
    }

    fn line(
        &self,
        stream: &str,
        level: Option<u32>,
        logger: Option<String>,
        text: String,
    ) -> OutputLine {
        let (stream, level) = match (stream, level) {
            ("stdout", _) => (OutputStream::Stdout, Level::INFO),
            ("stderr", _) => (OutputStream::Stderr, Level::WARN),
            (_, level) => (
                OutputStream::Log {
                    logger: logger.unwrap_or_default(),
                },
                match level.unwrap_or(0) {
                    0..=10 => Level::DEBUG,
                    11..=20 => Level::INFO,
                    21..=30 => Level::WARN,
                    _ => Level::ERROR,
                },
            ),
        };
        OutputLine {
            instance: self.instance,
            stream,
            level,
            text,
        }
    }

    fn emit(&self, line: &OutputLine) {
        let (stream, logger) = match &line.stream {
            OutputStream::Stdout => ("stdout", ""),
            OutputStream::Stderr => ("stderr", ""),
            OutputStream::Log { logger } => ("log", logger.as_str()),
        };
        // `tracing` needs the level at compile time, hence one arm per level.
        macro_rules! emit_at {
            ($level:expr) => {
                tracing::event!(
                    target: OUTPUT_TARGET,
                    $level,
                    plugin = self.plugin,
                    version = self.version,
                    instance = self.instance,
                    stream,
                    logger,
                    "{}",
                    line.text
                )
            };
        }
        match line.level {
            Level::ERROR => emit_at!(Level::ERROR),
            Level::WARN => emit_at!(Level::WARN),
            Level::INFO => emit_at!(Level::INFO),
            Level::DEBUG => emit_at!(Level::DEBUG),
            _ => emit_at!(Level::TRACE),
        }
    }
}

/// Reads the bootstrap's output buffer and drain function from `__main__`.
pub(crate) fn buffer_and_take<'i>(
    py: Interp<'i>,
) -> Result<(PyObj<'i>, PyObj<'i>), fidius_ffi::FfiError> {
    Ok((py.eval("_fidius_output")?, py.eval("_fidius_take_output")?))
}
