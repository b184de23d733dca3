//! Probing a plugin's compiled extension modules in throwaway worker processes.
//!
//! An unknown extension is never imported inside the host: one that is not ready for
//! sub-interpreters may crash the process that tries. The worker ([`crate::worker`], `probe` mode)
//! imports each module in its own own-GIL sub-interpreter and reports one line per module; when it
//! crashes or hangs, the module it was on counts as "no" and a new worker takes the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use fidius_core::extensions::{
    find_extension_modules, BadPythonVersion, ExtensionFile, ExtensionProbe, ExtensionRecord,
    ExtensionsError, PythonVersion,
};
use fidius_core::WorkerExit;

use crate::backend::process::child::worker_exit;
use crate::backend::process::command::{WorkerCommand, WorkerNotFound};
use crate::backend::process::tail::StderrTail;
use crate::worker::probe::Report;

/// How probing runs. `ProbeOptions::default()` gives each module 30 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    module_timeout: Duration,
    /// The host's bytecode folder, for a tree the host verified (a load's probe, never `pack`'s).
    bytecode_cache: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            module_timeout: Duration::from_secs(30),
            bytecode_cache: None,
        }
    }
}

impl ProbeOptions {
    /// Lets the probe's interpreters use the host's bytecode cache folder (a verified tree only).
    pub(crate) fn bytecode_cache(mut self, dir: Option<&Path>) -> Self {
        self.bytecode_cache = dir.map(Path::to_path_buf);
        self
    }

    /// The longest one module's import may take (the first one's includes starting the worker)
    /// before its worker is killed and the module recorded as "no (timed out)". Default: 30 s.
    pub fn module_timeout(mut self, timeout: Duration) -> Self {
        self.module_timeout = timeout;
        self
    }
}

/// Why probing could not produce results (a module failing its probe is a result, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A probe was needed and no worker executable was found.
    #[error("a compiled extension must be probed in a worker process, and none is available")]
    WorkerNotFound(#[source] WorkerNotFound),
    /// `vendor/` could not be scanned, or the package's record could not be read.
    #[error("cannot look for compiled extensions")]
    Scan(#[source] ExtensionsError),
    /// The host's own CPython version string could not be read (a fidius bug).
    #[error("cannot tell this host's Python version")]
    HostVersion(#[source] BadPythonVersion),
    /// The worker could not be started.
    #[error("cannot start the probe worker {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The worker ended before it was ready to probe: it is broken or from another build.
    #[error("the probe worker {} ended before probing anything ({status}){}", program.display(), last_words(output))]
    WorkerFailed {
        program: PathBuf,
        status: WorkerExit,
        /// The end of what it wrote to stderr.
        output: String,
    },
    /// The worker wrote something that is not a probe report (it is from another fidius build).
    #[error("the probe worker {} sent {line:?}, not a probe report; is it from the same fidius build?", program.display())]
    Protocol { program: PathBuf, line: String },
    /// The worker runs another CPython feature version than the host, so its results do not apply.
    #[error("the probe worker {} runs Python {worker}, this host runs Python {host}; they must be built against the same CPython", program.display())]
    PythonMismatch {
        program: PathBuf,
        worker: String,
        host: PythonVersion,
    },
}

fn last_words(output: &str) -> String {
    match output.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

/// The CPython feature version this process embeds: the one whose compiled extensions its plugins
/// can load (what `fidius pack` probes and records for).
pub fn host_python() -> Result<PythonVersion, ProbeError> {
    fidius_ffi::python_version()
        .parse()
        .map_err(ProbeError::HostVersion)
}

/// Probes every compiled extension module under `root/vendor/` in worker processes started with
/// `worker`, and returns the results as an `extensions.toml` record (sorted by file; empty when the
/// plugin has no compiled extensions, in which case no worker starts).
///
/// Nothing is written into the plugin directory.
pub fn probe_extensions(
    root: &Path,
    worker: &WorkerCommand,
    options: &ProbeOptions,
) -> Result<ExtensionRecord, ProbeError> {
    let python = host_python()?;
    let files = find_extension_modules(root, python).map_err(ProbeError::Scan)?;
    Ok(probe_files(root, &files, worker, options, python)?.record)
}

/// What a probe found: the record, and which top-level packages fail to import in a
/// sub-interpreter (each refusing all its modules) with their import errors, as the probe saw them.
#[derive(Debug, Clone)]
pub(crate) struct ProbeOutcome {
    pub(crate) record: ExtensionRecord,
    /// Top-level package → its import error (`Type: message`).
    pub(crate) package_failures: BTreeMap<String, String>,
}

impl ProbeOutcome {
    /// The outcome behind a record read from `extensions.toml`, where the probe wrote a failing
    /// package's error into each of its modules' reasons (see [`package_failure`]).
    pub(crate) fn from_record(record: ExtensionRecord) -> Self {
        let package_failures = record
            .refused()
            .filter_map(|module| {
                let (package, error) = module
                    .reason
                    .as_deref()?
                    .strip_prefix(PACKAGE_FAILURE.0)?
                    .split_once(PACKAGE_FAILURE.1)?;
                Some((package.to_owned(), error.to_owned()))
            })
            .collect();
        Self {
            record,
            package_failures,
        }
    }
}

/// Probes `files` (found under `root` for `python`).
///
/// Top-level packages first: when importing `numpy` itself fails in a sub-interpreter, every
/// extension module under it fails the same way (importing one runs the package's `__init__`), so
/// one probe answers for all of them. Modules of packages that import are probed one by one.
pub(crate) fn probe_files(
    root: &Path,
    files: &[ExtensionFile],
    worker: &WorkerCommand,
    options: &ProbeOptions,
    python: PythonVersion,
) -> Result<ProbeOutcome, ProbeError> {
    let top_level =
        |file: &ExtensionFile| file.module.split('.').next().unwrap_or_default().to_owned();
    let packages: BTreeSet<String> = files
        .iter()
        .filter(|file| file.module.contains('.'))
        .map(top_level)
        .collect();
    let packages: Vec<String> = packages.into_iter().collect();
    let package_errors: BTreeMap<String, String> = packages
        .iter()
        .cloned()
        .zip(probe_names(root, &packages, worker, options, python)?)
        .filter_map(|(package, error)| Some((package, error?)))
        .collect();
    let modules: Vec<&ExtensionFile> = files
        .iter()
        .filter(|file| !package_errors.contains_key(&top_level(file)))
        .collect();
    let names: Vec<String> = modules.iter().map(|file| file.module.clone()).collect();
    let mut module_errors = probe_names(root, &names, worker, options, python)?.into_iter();
    let modules = files
        .iter()
        .map(|file| match package_errors.get(&top_level(file)) {
            Some(error) => refused(file, package_failure(&top_level(file), error)),
            None => match module_errors.next().flatten() {
                Some(error) => refused(file, error),
                None => ExtensionProbe {
                    name: file.module.clone(),
                    file: file.relative_path.clone(),
                    subinterpreter: true,
                    reason: None,
                },
            },
        })
        .collect::<Vec<_>>();
    tracing::debug!(
        plugin_dir = %root.display(),
        modules = modules.len(),
        refused = modules.iter().filter(|m| !m.subinterpreter).count(),
        "probed compiled extensions"
    );
    Ok(ProbeOutcome {
        record: ExtensionRecord { python, modules },
        package_failures: package_errors,
    })
}

/// The reason recorded for a module whose package fails to import in a sub-interpreter.
fn package_failure(package: &str, error: &str) -> String {
    format!("{}{package}{}{error}", PACKAGE_FAILURE.0, PACKAGE_FAILURE.1)
}

/// The words around the package and its error in [`package_failure`]'s reason, as written into
/// `extensions.toml` and recognised by [`ProbeOutcome::from_record`].
const PACKAGE_FAILURE: (&str, &str) = ("importing its package `", "` fails: ");

/// Imports each of `names` in its own sub-interpreter in throwaway workers; one entry per name:
/// `None` when it imported (and its interpreter ended cleanly), else why not.
fn probe_names(
    root: &Path,
    names: &[String],
    worker: &WorkerCommand,
    options: &ProbeOptions,
    python: PythonVersion,
) -> Result<Vec<Option<String>>, ProbeError> {
    let mut outcomes = Vec::with_capacity(names.len());
    while outcomes.len() < names.len() {
        let remaining = &names[outcomes.len()..];
        let mut run = ProbeRun::start(root, remaining, worker, options)?;
        run.collect(remaining, python, options, &mut outcomes)?;
    }
    Ok(outcomes)
}

/// One probe worker process and the threads that read its pipes.
struct ProbeRun {
    child: Child,
    program: PathBuf,
    lines: Receiver<std::io::Result<String>>,
    stderr: StderrTail,
    ready: bool,
}

impl ProbeRun {
    fn start(
        root: &Path,
        names: &[String],
        worker: &WorkerCommand,
        options: &ProbeOptions,
    ) -> Result<Self, ProbeError> {
        let program = worker.program().to_path_buf();
        let mut command = worker.command("probe");
        if let Some(dir) = &options.bytecode_cache {
            command.env(crate::worker::BYTECODE_CACHE_ENV, dir);
        }
        command
            .arg(root)
            .args(names)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| ProbeError::Spawn {
            program: program.clone(),
            source,
        })?;
        let (line_sender, lines) = crossbeam_channel::unbounded();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if line_sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = match child.stderr.take() {
            Some(pipe) => StderrTail::follow(pipe, "fidius:probe:stderr".to_owned(), drop),
            None => StderrTail::follow(std::io::empty(), "fidius:probe:stderr".to_owned(), drop),
        };
        Ok(Self {
            child,
            program,
            lines,
            stderr,
            ready: false,
        })
    }

    /// Reads reports until the worker is done, crashes or hangs, appending one outcome per name it
    /// got through (plus the one it crashed or hung on).
    fn collect(
        &mut self,
        names: &[String],
        python: PythonVersion,
        options: &ProbeOptions,
        outcomes: &mut Vec<Option<String>>,
    ) -> Result<(), ProbeError> {
        let mut next = 0;
        // The import outcome of `names[next]`, once reported, until its interpreter has ended.
        let mut imported: Option<Option<String>> = None;
        while next < names.len() {
            let name = &names[next];
            let line = match self.lines.recv_timeout(options.module_timeout) {
                Ok(Ok(line)) => line,
                // The pipe closed or broke: the worker ended.
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                    let status = self.reap();
                    let output = self.stderr_tail();
                    if !self.ready {
                        return Err(ProbeError::WorkerFailed {
                            program: self.program.clone(),
                            status: exit(status),
                            output,
                        });
                    }
                    let crash = format!("{}{}", exit(status), last_words(&output));
                    tracing::debug!(module = %name, output = %output, "probe worker crashed");
                    outcomes.push(Some(match imported {
                        None => format!("crashed: {crash}"),
                        Some(None) => {
                            format!("imports, but ending its interpreter crashed: {crash}")
                        }
                        Some(Some(error)) => {
                            format!("{error}; then ending its interpreter crashed: {crash}")
                        }
                    }));
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    outcomes.push(Some(format!(
                        "timed out: importing took over {:?}",
                        options.module_timeout
                    )));
                    return Ok(());
                }
            };
            let report: Report = serde_json::from_str(&line).map_err(|_| self.protocol(&line))?;
            match report {
                Report::Ready { python: worker } if !self.ready => {
                    if worker.parse::<PythonVersion>().ok() != Some(python) {
                        self.kill();
                        return Err(ProbeError::PythonMismatch {
                            program: self.program.clone(),
                            worker,
                            host: python,
                        });
                    }
                    self.ready = true;
                }
                Report::Imported { name: got, error }
                    if self.ready && imported.is_none() && got == *name =>
                {
                    imported = Some(error);
                }
                Report::Ended { name: got } if got == *name => match imported.take() {
                    Some(outcome) => {
                        outcomes.push(outcome);
                        next += 1;
                    }
                    None => return Err(self.protocol(&line)),
                },
                _ => return Err(self.protocol(&line)),
            }
        }
        self.reap();
        Ok(())
    }

    fn protocol(&mut self, line: &str) -> ProbeError {
        self.kill();
        ProbeError::Protocol {
            program: self.program.clone(),
            line: line.chars().take(200).collect(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        self.reap();
    }

    /// Waits for the worker to end (it has, or was killed).
    fn reap(&mut self) -> Option<ExitStatus> {
        self.child.wait().ok()
    }

    /// The end of the worker's stderr, once the pipe is closed. A grandchild process holding the
    /// pipe open must not hang the host, so this waits only briefly.
    fn stderr_tail(&mut self) -> String {
        self.stderr.finish(Duration::from_secs(1))
    }
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        // An error path left it running: it must not outlive the probe.
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn refused(file: &ExtensionFile, reason: String) -> ExtensionProbe {
    ExtensionProbe {
        name: file.module.clone(),
        file: file.relative_path.clone(),
        subinterpreter: false,
        reason: Some(reason),
    }
}

fn exit(status: Option<ExitStatus>) -> WorkerExit {
    status.map_or(WorkerExit::Unknown, worker_exit)
}
