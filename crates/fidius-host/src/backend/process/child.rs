//! One worker process as the host sees it: started, loaded, called, and killed when it misbehaves.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::CallError;

use crate::backend::process::command::WorkerCommand;
use crate::backend::process::mailbox::{Interrupted, Mailbox, ReceiveError, Wait};
use crate::backend::process::protocol::{self, RemoteError, StartSpec, Started};
use crate::error::LoadError;
use crate::plugin::loader::{self, Accepted};
use crate::plugin::output::{OutputRoute, RecentOutput, Taken, LINE_LIMIT};

/// The longest reply the host accepts from a worker (a bound on what a broken worker can make the
/// host allocate).
const MAX_REPLY: usize = 1 << 31;
/// Lines of a worker's stderr kept for crash reports.
const STDERR_TAIL_LINES: usize = 20;
/// How long a worker gets to exit after being asked to: its interpreter finalises first, joining
/// the threads the plugin started (as ending a sub-interpreter does), then it is killed.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Who the worker's output is attributed to; owned, because the stderr reader is its own thread.
#[derive(Clone)]
pub(crate) struct Attribution {
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) instance: usize,
    pub(crate) recent: Arc<RecentOutput>,
}

impl Attribution {
    fn route(&self) -> OutputRoute<'_> {
        OutputRoute {
            plugin: &self.plugin,
            version: &self.version,
            instance: self.instance,
            recent: &self.recent,
        }
    }
}

/// Why a call to a worker did not produce a result.
pub(crate) enum Failure {
    /// The plugin answered with an error; the worker is fine.
    Call(CallError),
    /// The worker died; it is reaped.
    Died { status: String, stderr_tail: String },
    /// The deadline passed; the worker was killed.
    Deadline,
    /// The worker broke the protocol; it was killed.
    Protocol(String),
}

/// A running worker process with its plugin loaded.
pub(crate) struct WorkerProcess {
    child: Child,
    mailbox: Mailbox,
    attribution: Attribution,
    stderr: StderrTail,
    /// Set once the process has been reaped.
    exited: Option<ExitStatus>,
    /// Set once the process has exited (not reaped), by its [`watch_exit`] thread.
    exit_seen: Arc<AtomicBool>,
    /// Set once it was asked to end: when it is killed if it has not.
    shutdown_by: Option<Instant>,
}

impl WorkerProcess {
    /// Starts a worker, loads the plugin in it and waits until the plugin is checked. Returns which
    /// descriptor methods it implements.
    pub(crate) fn start(
        command: &WorkerCommand,
        spec: &StartSpec,
        descriptor: &OwnedInterfaceDescriptor,
        attribution: Attribution,
        load_timeout: Option<Duration>,
    ) -> Result<(Self, Accepted), LoadError> {
        let plugin = &spec.plugin;
        let spawn_failed = |source: std::io::Error| LoadError::WorkerSpawn {
            plugin: plugin.clone(),
            program: command.program().to_path_buf(),
            source,
        };
        let mailbox = Mailbox::create().map_err(spawn_failed)?;
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|errno| spawn_failed(errno.into()))?;
        let mut process = command.command("serve");
        process
            .stdin(Stdio::from(
                mailbox.file().try_clone_to_owned().map_err(spawn_failed)?,
            ))
            .stdout(writer.try_clone().map_err(spawn_failed)?)
            .stderr(writer);
        let child = process.spawn().map_err(spawn_failed)?;
        // The pipe's write ends now live only in the child, so the reader sees EOF when it exits.
        drop(process);
        let stderr = StderrTail::follow(std::fs::File::from(reader), attribution.clone());
        let exit_seen = watch_exit(&child);
        let mut worker = Self {
            child,
            mailbox,
            attribution,
            stderr,
            exited: None,
            exit_seen,
            shutdown_by: None,
        };
        let accepted = worker.load(spec, descriptor, load_timeout)?;
        tracing::debug!(pid = worker.child.id(), "worker process ready");
        Ok((worker, accepted))
    }

    fn load(
        &mut self,
        spec: &StartSpec,
        descriptor: &OwnedInterfaceDescriptor,
        load_timeout: Option<Duration>,
    ) -> Result<Accepted, LoadError> {
        let plugin = spec.plugin.clone();
        let deadline = load_timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let start = serde_json::to_vec(spec).map_err(|error| LoadError::WorkerProtocol {
            plugin: plugin.clone(),
            reason: error.to_string(),
        })?;
        let outcome = self.exchange(protocol::START, &[&start], deadline, |kind| {
            kind == protocol::STARTED
        });
        let body = match outcome {
            Ok((_, body)) => body,
            Err(Failure::Died {
                status,
                stderr_tail,
            }) => {
                return Err(LoadError::WorkerExited {
                    plugin,
                    status,
                    stderr_tail,
                })
            }
            Err(Failure::Deadline) => {
                return Err(LoadError::LoadTimeout {
                    plugin,
                    after: load_timeout.unwrap_or_default(),
                })
            }
            Err(Failure::Protocol(reason)) => {
                return Err(LoadError::WorkerProtocol { plugin, reason })
            }
            Err(Failure::Call(error)) => {
                return Err(LoadError::WorkerProtocol {
                    plugin,
                    reason: error.to_string(),
                })
            }
        };
        let started: Started =
            serde_json::from_slice(&body).map_err(|error| LoadError::WorkerProtocol {
                plugin: plugin.clone(),
                reason: format!("unreadable start report: {error}"),
            })?;
        match started {
            Started::Report {
                report,
                implemented,
            } => {
                let warnings = loader::check_report(
                    report.as_bytes(),
                    &spec.source(),
                    descriptor,
                    spec.strict,
                )?;
                if implemented.len() != descriptor.methods.len() {
                    return Err(LoadError::WorkerProtocol {
                        plugin,
                        reason: "method table does not match the interface".to_owned(),
                    });
                }
                Ok(Accepted {
                    implemented,
                    warnings,
                })
            }
            Started::Failed {
                type_name,
                message,
                traceback,
            } => Err(LoadError::Bootstrap {
                plugin,
                source: fidius_ffi::FfiError::Python(fidius_ffi::PythonException {
                    type_name,
                    message,
                    traceback,
                }),
            }),
        }
    }

    /// Calls method `index` with `payload`.
    pub(crate) fn call(
        &mut self,
        index: usize,
        payload: &[u8],
        deadline: Option<Instant>,
        descriptor: &OwnedInterfaceDescriptor,
    ) -> Result<Vec<u8>, Failure> {
        let method = u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes();
        let (kind, body) =
            self.exchange(protocol::CALL, &[&method, payload], deadline, |kind| {
                kind == protocol::REPLY_OK || kind == protocol::REPLY_ERR
            })?;
        if kind == protocol::REPLY_OK {
            return Ok(body);
        }
        Err(match serde_json::from_slice::<RemoteError>(&body) {
            Ok(error) => Failure::Call(error.into_call_error(descriptor)),
            Err(error) => {
                self.kill();
                Failure::Protocol(format!("unreadable error reply: {error}"))
            }
        })
    }

    /// Sends one message and waits for the reply `is_reply` accepts, routing output on the way.
    fn exchange(
        &mut self,
        kind: u8,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        is_reply: impl Fn(u8) -> bool,
    ) -> Result<(u8, Vec<u8>), Failure> {
        let mut alive = reaping(&mut self.child, &mut self.exited);
        let mut wait = Wait {
            // Most small calls answer well within the spin.
            spin: crate::backend::wait::SPIN_BEFORE_PARKING,
            deadline,
            alive: &mut alive,
        };
        let outcome = match self.mailbox.send(kind, parts, &mut wait) {
            Err(interrupted) => Err(ReceiveError::Interrupted(interrupted)),
            Ok(()) => loop {
                match self.mailbox.receive(MAX_REPLY, &mut wait) {
                    Ok((protocol::OUTPUT, body)) => match serde_json::from_slice::<Taken>(&body) {
                        Ok(taken) => self.attribution.route().deliver(taken),
                        Err(error) => {
                            break Err(ReceiveError::Protocol(format!(
                                "unreadable output: {error}"
                            )))
                        }
                    },
                    Ok((kind, body)) if is_reply(kind) => break Ok((kind, body)),
                    Ok((kind, _)) => {
                        break Err(ReceiveError::Protocol(format!(
                            "unexpected message kind {kind}"
                        )))
                    }
                    Err(error) => break Err(error),
                }
            },
        };
        // The liveness check borrows the child; `kill` and `died` below need it back.
        drop(alive);
        outcome.map_err(|error| match error {
            ReceiveError::Interrupted(Interrupted::Deadline) => {
                self.kill();
                Failure::Deadline
            }
            ReceiveError::Interrupted(Interrupted::PeerGone) => self.died(),
            ReceiveError::Protocol(reason) => {
                self.kill();
                Failure::Protocol(reason)
            }
        })
    }

    /// Whether the process has exited (checked without blocking, and without a system call while
    /// it runs: asked before every call).
    pub(crate) fn has_exited(&mut self) -> bool {
        if self.exited.is_none() && self.exit_seen.load(Ordering::Acquire) {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited.is_some()
    }

    /// Describes the death of a worker that has exited (reaping it if needed).
    pub(crate) fn died(&mut self) -> Failure {
        let status = match self.exited {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                match self.child.wait() {
                    Ok(status) => status,
                    Err(_) => ExitStatus::from_raw(0),
                }
            }
        };
        self.exited = Some(status);
        Failure::Died {
            status: describe_status(status),
            stderr_tail: self.stderr.finish(),
        }
    }

    /// Kills the worker now (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl WorkerProcess {
    /// Asks the worker to end (it finalises its interpreter: joins the plugin's threads, runs its
    /// `atexit` functions) and starts its grace period; `Drop` waits for the end. Asking every
    /// worker of a set first lets their grace periods run at once.
    pub(crate) fn request_shutdown(&mut self) {
        if self.exited.is_some() || self.shutdown_by.is_some() {
            return;
        }
        let give_up = Instant::now() + SHUTDOWN_GRACE;
        self.shutdown_by = Some(give_up);
        let child = &mut self.child;
        let mut alive = || matches!(child.try_wait(), Ok(None));
        let mut wait = Wait {
            spin: Duration::ZERO,
            deadline: Some(give_up),
            alive: &mut alive,
        };
        let _ = self.mailbox.send(protocol::SHUTDOWN, &[], &mut wait);
    }

    /// Waits (routing what the plugin still writes) until the worker exits or its grace period
    /// ends, then kills it if needed.
    fn finish_shutdown(&mut self) {
        self.request_shutdown();
        let give_up = self.shutdown_by.unwrap_or_else(Instant::now);
        let mut alive = reaping(&mut self.child, &mut self.exited);
        let mut wait = Wait {
            spin: Duration::ZERO,
            deadline: Some(give_up),
            alive: &mut alive,
        };
        loop {
            match self.mailbox.receive(MAX_REPLY, &mut wait) {
                Ok((protocol::OUTPUT, body)) => {
                    if let Ok(taken) = serde_json::from_slice::<Taken>(&body) {
                        self.attribution.route().deliver(taken);
                    }
                }
                // Exited, or anything else: a worker that is ending owes no more messages.
                Err(ReceiveError::Interrupted(Interrupted::PeerGone)) => break,
                Ok(_) | Err(_) => {
                    if Instant::now() >= give_up {
                        tracing::warn!(
                            plugin = %self.attribution.plugin,
                            instance = self.attribution.instance,
                            grace = ?SHUTDOWN_GRACE,
                            "worker process did not end within its shutdown grace; killed"
                        );
                    }
                    break;
                }
            }
        }
        drop(alive);
        // Reaped by `alive` when it exited; otherwise killed now.
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.finish_shutdown();
        }
        let _ = self.stderr.finish();
    }
}

/// A [`Wait`] liveness check for `child` that records its exit status in `exited` once it is gone.
fn reaping<'a>(
    child: &'a mut Child,
    exited: &'a mut Option<ExitStatus>,
) -> impl FnMut() -> bool + 'a {
    move || match child.try_wait() {
        Ok(Some(status)) => {
            *exited = Some(status);
            false
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Starts a thread that waits for `child` to exit (through a pidfd, without reaping it) and then
/// sets the returned flag. Where the process cannot be watched, the flag starts set, so
/// [`WorkerProcess::has_exited`] asks `waitpid` every time instead.
fn watch_exit(child: &Child) -> Arc<AtomicBool> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let exited = Arc::new(AtomicBool::new(false));
    let pidfd = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
    let flag = Arc::clone(&exited);
    let watching = pidfd.and_then(|pidfd| {
        std::thread::Builder::new()
            .name("fidius:worker-watch".to_owned())
            .spawn(move || {
                let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
                // Readable once the process has exited; any other error ends the watch too, and
                // `has_exited` then asks `waitpid`.
                while poll(&mut fds, None) == Err(rustix::io::Errno::INTR) {}
                flag.store(true, Ordering::Release);
            })
            .ok()
    });
    if watching.is_none() {
        exited.store(true, Ordering::Release);
    }
    exited
}

/// `exit status 3`, or `killed by signal 11 (SIGSEGV)`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL; out of memory, or killed)",
                11 => " (SIGSEGV)",
                13 => " (SIGPIPE)",
                15 => " (SIGTERM)",
                24 => " (SIGXCPU)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        None => status.to_string(),
    }
}

/// Reads a worker's stderr (and stdout: one pipe) on its own thread: every line is routed as the
/// plugin's stderr output, and the last ones are kept for crash reports.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Option<Receiver<()>>,
}

impl StderrTail {
    fn follow(pipe: std::fs::File, attribution: Attribution) -> Self {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let kept = Arc::clone(&lines);
        let name = format!(
            "fidius:{}#{}:stderr",
            attribution.plugin, attribution.instance
        );
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let route = attribution.route();
            read_lines(pipe, |text| {
                {
                    let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if kept.len() == STDERR_TAIL_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(text.clone());
                }
                route.deliver(Taken::line("stderr", text));
            });
            let _ = done_tx.send(());
        });
        Self {
            lines,
            done: spawned.ok().map(|_| done_rx),
        }
    }

    /// Waits briefly for the reader to reach the end of the pipe (a grandchild may hold it open),
    /// then returns the last lines.
    fn finish(&mut self) -> String {
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().map(|line| format!("{line}\n")).collect()
    }
}

/// Splits what a worker writes to its file descriptors into lines for `each`, keeping at most
/// [`LINE_LIMIT`] bytes of a line (the rest is counted and named in a marker), so a worker writing
/// gigabytes without a newline costs the host no more than that.
fn read_lines(pipe: impl Read, mut each: impl FnMut(String)) {
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
