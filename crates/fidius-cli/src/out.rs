//! Writing to standard output so that a reader that stops early (`fidius package inspect DIR | head`)
//! ends the command quietly instead of a panic with a backtrace (`println!` panics on a closed pipe,
//! because Rust ignores SIGPIPE).
//!
//! Why not restore SIGPIPE's default action at startup instead: that needs `unsafe` (this crate
//! forbids it), would also end `fidius call` mid-way while it hosts plugins and their workers, and
//! exits by a signal, which `set -o pipefail` scripts read as a failure.

use std::fmt;
use std::io::{ErrorKind, Write as _};

/// Standard output was closed by its reader; `main` ends the command quietly and successfully.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `bytes` to standard output; see [`outln!`].
pub fn write(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(anyhow::Error::new(error).context("cannot write to standard output")),
    }
}

/// Writes one line; see [`outln!`].
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut text = args.to_string();
    text.push('\n');
    write(text.as_bytes())
}

/// `println!` that returns an error instead of panicking: `outln!("...")?`. A closed pipe gives
/// [`StdoutClosed`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
