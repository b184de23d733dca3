//! The process-tier worker: runs one plugin instance (or an extension probe) in its own process.
//! Started by `fidius-host`, never by hand.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    fidius_host::worker::main(std::env::args_os().skip(1).collect())
}
