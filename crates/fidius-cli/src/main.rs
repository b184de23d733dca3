//! `fidius`: pack, sign, verify, inspect, stub and call Python plugin packages.
#![forbid(unsafe_code)]

mod commands;
mod out;
mod python;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::cache::CacheCommand;
use commands::call::CallCommand;
use commands::init::{InitHostCommand, InitInterfaceCommand, InitPluginCommand};
use commands::keygen::KeygenCommand;
use commands::pack::PackCommand;
use commands::package::PackageCommand;
use commands::python_stub::PythonStubCommand;
use commands::rust_plugin::{SignFileCommand, VerifyFileCommand};
use commands::test::{TestCommand, TestsNotRun, TESTS_NOT_RUN};

/// Rust plugin host tooling for Python plugins.
#[derive(Debug, Parser)]
#[command(name = "fidius", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Pack(PackCommand),
    /// Work with package directories and .fid archives.
    #[command(subcommand)]
    Package(PackageCommand),
    Keygen(KeygenCommand),
    Sign(SignFileCommand),
    Verify(VerifyFileCommand),
    PythonStub(PythonStubCommand),
    Call(CallCommand),
    Test(TestCommand),
    InitInterface(InitInterfaceCommand),
    InitPlugin(InitPluginCommand),
    InitHost(InitHostCommand),
    /// List or prune the package cache where hosts unpack .fid archives.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Runs a process-tier worker (started by fidius hosts, never by hand).
    #[command(hide = true)]
    Worker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

impl Command {
    fn execute(self) -> anyhow::Result<()> {
        match self {
            Command::Pack(command) => command.execute(),
            Command::Package(command) => command.execute(),
            Command::Keygen(command) => command.execute(),
            Command::Sign(command) => command.execute(),
            Command::Verify(command) => command.execute(),
            Command::PythonStub(command) => command.execute(),
            Command::Call(command) => command.execute(),
            Command::Test(command) => command.execute(),
            Command::InitInterface(command) => command.execute(),
            Command::InitPlugin(command) => command.execute(),
            Command::InitHost(command) => command.execute(),
            Command::Cache(command) => command.execute(),
            // Handled in `main`, before logging starts.
            Command::Worker { .. } => anyhow::bail!("`fidius worker` is run by fidius hosts"),
        }
    }
}

/// Log filter variable, e.g. `FIDIUS_LOG=debug`; warnings only by default.
const LOG_ENV: &str = "FIDIUS_LOG";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Worker { args } = cli.command {
        // A worker's stdout and stderr belong to its plugin; it reports through its host.
        return fidius_host::worker::main(args);
    }
    init_logging();
    match cli.command.execute() {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): what it wanted, it has.
        Err(error) if error.chain().any(|cause| cause.is::<out::StdoutClosed>()) => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            // Not `eprintln!`: it panics when stderr is closed too.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            if error.chain().any(|cause| cause.is::<TestsNotRun>()) {
                ExitCode::from(TESTS_NOT_RUN)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
