//! The worker side of the process tier: the code a `fidius-worker` (or `fidius worker`) process runs.
//!
//! Hosts start workers through [`WorkerCommand`](crate::WorkerCommand). The protocol between host and
//! worker is private and may change with any release, so both sides must come from one build: the
//! `fidius-worker` binary built with your host, or your host binary itself, when it hands its
//! arguments to [`main`] (as the `fidius` CLI does for `fidius worker`):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut args = std::env::args_os().skip(1);
//!     if args.next().as_deref() == Some(std::ffi::OsStr::new("fidius-worker")) {
//!         return fidius_host::worker::main(args.collect());
//!     }
//!     // ... the host, loading plugins with
//!     // LoadOptions::default().worker_command(WorkerCommand::new(std::env::current_exe()?).arg("fidius-worker"))
//!     std::process::ExitCode::SUCCESS
//! }
//! ```

pub(crate) mod probe;
mod serve;
mod stream;
mod template;

pub(crate) use template::TEMPLATE_SET_ENV;

use std::ffi::OsString;
use std::process::ExitCode;

/// Exit status of a worker that was started wrongly (not by a fidius host).
const USAGE: u8 = 64;

/// Environment variable by which a host hands an extension probe its bytecode cache folder (a
/// serving worker gets it in its start message).
pub(crate) const BYTECODE_CACHE_ENV: &str = "FIDIUS_BYTECODE_CACHE";

/// Runs a worker: `args` are what [`WorkerCommand`](crate::WorkerCommand) put after its leading
/// arguments (a mode, `serve` or `probe`, then that mode's arguments). Returns the process's exit
/// status; call it only in a process started by a fidius host.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args = args.into_iter();
    let mode = args.next();
    match mode.as_ref().and_then(|mode| mode.to_str()) {
        Some("serve") => serve::main(args.collect()),
        Some("probe") => probe::main(args.collect()),
        Some("template") => serve::template_main(args.collect()),
        _ => {
            eprintln!("fidius worker: started by hand? This program is run by fidius hosts (modes: serve, probe).");
            ExitCode::from(USAGE)
        }
    }
}
