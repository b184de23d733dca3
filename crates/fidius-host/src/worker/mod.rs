//! The worker side of the process tier: the code a `fidius-worker` (or `fidius worker`) process runs.
//!
//! Not an API: hosts start workers through [`WorkerCommand`](crate::WorkerCommand), and the protocol
//! between host and worker may change with any release (both sides always come from one build).

pub(crate) mod probe;
mod serve;

use std::ffi::OsString;
use std::process::ExitCode;

/// Exit status of a worker that was started wrongly (not by a fidius host).
const USAGE: u8 = 64;

/// Runs the worker subcommand in `args` (`serve` or `probe`, then its arguments).
#[doc(hidden)]
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args = args.into_iter();
    let mode = args.next();
    match mode.as_ref().and_then(|mode| mode.to_str()) {
        Some("serve") => serve::main(args.collect()),
        Some("probe") => probe::main(args.collect()),
        _ => {
            eprintln!("fidius worker: started by hand? This program is run by fidius hosts (modes: serve, probe).");
            ExitCode::from(USAGE)
        }
    }
}
