//! Which program runs process-tier workers (and extension probes).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the worker executable, overriding the search.
pub const WORKER_ENV: &str = "FIDIUS_WORKER";

/// The file name of the stand-alone worker binary (built from `fidius-host`).
pub const WORKER_BINARY: &str = "fidius-worker";

/// How to start a process-tier worker: a program and the arguments that come before the worker's
/// own (`fidius-worker`, or `fidius worker` for the CLI, which carries the worker inside itself).
///
/// The worker must be built against the same CPython as the host: it runs the same runtime code in
/// its main interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    program: PathBuf,
    leading_args: Vec<OsString>,
}

/// No worker executable could be found.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no `{WORKER_BINARY}` executable found (looked in: {}); build it with `cargo build -p fidius-host --bins`, \
     set {WORKER_ENV}, or configure one with `worker_command`",
    searched.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct WorkerNotFound {
    /// Every place that was looked at, in order.
    pub searched: Vec<PathBuf>,
}

impl WorkerCommand {
    /// Runs `program` with no leading arguments. A bare name is looked up on `PATH` when started; a
    /// relative path (`./bin/worker`) is resolved against the working directory now, once.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let program = if program.components().count() > 1 {
            crate::plugin::source::absolute(program)
        } else {
            program
        };
        Self {
            program,
            leading_args: Vec::new(),
        }
    }

    /// Adds an argument placed before the worker's own (e.g. `worker` for `fidius worker`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.leading_args.push(arg.into());
        self
    }

    /// The program this command starts.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The default: `$FIDIUS_WORKER`, else `fidius-worker` next to the running executable (or one
    /// folder up, where Cargo puts binaries beside `deps/` test executables), else on `PATH`.
    pub fn find() -> Result<Self, WorkerNotFound> {
        if let Some(program) = std::env::var_os(WORKER_ENV) {
            return Ok(Self::new(program));
        }
        let mut searched = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            let beside = exe.parent().map(Path::to_path_buf);
            let above = beside
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf);
            for dir in [beside, above].into_iter().flatten() {
                let candidate = dir.join(WORKER_BINARY);
                if candidate.is_file() {
                    return Ok(Self::new(candidate));
                }
                searched.push(candidate);
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join(WORKER_BINARY);
                if candidate.is_file() {
                    return Ok(Self::new(candidate));
                }
            }
            searched.push(PathBuf::from(format!("$PATH/{WORKER_BINARY}")));
        }
        Err(WorkerNotFound { searched })
    }

    /// A `Command` for the worker subcommand `mode` (`serve` or `probe`), without its own arguments.
    pub(crate) fn command(&self, mode: &str) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.leading_args).arg(mode);
        // The worker inherits nothing it could mistake for configuration.
        command.env_remove("PYTHONPATH").env_remove("PYTHONHOME");
        command
    }
}
