//! One worker process as the host sees it: started, loaded, called, and killed when it misbehaves.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::{CallError, PythonError, WorkerExit};

use crate::backend::process::command::WorkerCommand;
use crate::backend::process::mailbox::{Interrupted, Mailbox, ReceiveError, Wait};
use crate::backend::process::protocol::{self, StartSpec, Started};
use crate::backend::process::tail::StderrTail;
use crate::backend::process::template::WorkerPid;
use crate::callback::HostFunctions;
use crate::error::{InterpreterError, LoadError};
use crate::plugin::loader::{self, Accepted};
use crate::plugin::output::{OutputRoute, RecentOutput, Taken};

/// The longest reply the host accepts from a worker (a bound on what a broken worker can make the
/// host allocate).
const MAX_REPLY: usize = 1 << 31;
/// How long a dead worker's stderr reader gets to reach the end of the pipe.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
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
    Died {
        status: WorkerExit,
        stderr_tail: String,
    },
    /// The deadline passed; the worker was killed.
    Deadline,
    /// The worker broke the protocol; it was killed.
    Protocol(String),
}

/// A running worker process with its plugin loaded.
pub(crate) struct WorkerProcess {
    child: WorkerPid,
    mailbox: Mailbox,
    attribution: Attribution,
    stderr: StderrTail,
    /// Set once the process has been reaped.
    exited: Option<WorkerExit>,
    /// Set once the process has exited (not reaped), by its [`watch_exit`] thread.
    exit_seen: Arc<AtomicBool>,
    /// Set once it was asked to end: when it is killed if it has not.
    shutdown_by: Option<Instant>,
    /// The streamed argument of the call (or stream) it serves, if any: its pulls are answered
    /// from here. A pull while this is `None` is a protocol error.
    pub(crate) input: Option<Arc<crate::stream_input::InputFeed>>,
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
        let stdin = mailbox.file().try_clone_to_owned().map_err(spawn_failed)?;
        let mut worker = Self::spawn(command.command("serve"), mailbox, stdin, attribution)
            .map_err(spawn_failed)?;
        let accepted = worker.load(spec, descriptor, load_timeout)?;
        tracing::debug!(pid = worker.child.id(), "worker process ready");
        Ok((worker, accepted))
    }

    /// Starts `process` with `stdin` and its stdout and stderr going to a pipe the host reads, to
    /// be talked to through `mailbox`.
    pub(crate) fn spawn(
        mut process: Command,
        mailbox: Mailbox,
        stdin: OwnedFd,
        attribution: Attribution,
    ) -> std::io::Result<Self> {
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        process
            .stdin(Stdio::from(stdin))
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let child = process.spawn()?;
        // The pipe's write ends now live only in the child, so the reader sees EOF when it exits.
        drop(process);
        Ok(Self::assemble(
            WorkerPid::Spawned(child),
            mailbox,
            reader,
            attribution,
        ))
    }

    /// A worker started by `fork` (a template's), handed a new mailbox and the write end of its
    /// output pipe. The outer error is the host's (no mailbox or pipe), the inner one `fork`'s.
    pub(crate) fn forked<E>(
        attribution: Attribution,
        fork: impl FnOnce(BorrowedFd<'_>, BorrowedFd<'_>) -> Result<WorkerPid, E>,
    ) -> std::io::Result<Result<Self, E>> {
        let mailbox = Mailbox::create()?;
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let child = match fork(mailbox.file(), writer.as_fd()) {
            Ok(child) => child,
            Err(error) => return Ok(Err(error)),
        };
        // Only the worker holds the write end now.
        drop(writer);
        Ok(Ok(Self::assemble(child, mailbox, reader, attribution)))
    }

    fn assemble(
        child: WorkerPid,
        mailbox: Mailbox,
        reader: OwnedFd,
        attribution: Attribution,
    ) -> Self {
        let stderr = {
            let attribution = attribution.clone();
            let name = format!(
                "fidius:{}#{}:stderr",
                attribution.plugin, attribution.instance
            );
            StderrTail::follow(std::fs::File::from(reader), name, move |text| {
                attribution.route().deliver(Taken::line("stderr", text));
            })
        };
        let exit_seen = watch_exit(&child);
        Self {
            child,
            mailbox,
            attribution,
            stderr,
            exited: None,
            exit_seen,
            shutdown_by: None,
            input: None,
        }
    }

    /// The worker's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's end of its mailbox.
    pub(crate) fn mailbox_file(&self) -> BorrowedFd<'_> {
        self.mailbox.file()
    }

    pub(crate) fn load(
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
        let outcome = self.exchange(protocol::START, &[&start], deadline, None, |kind| {
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
                source: InterpreterError::Python(PythonError::new(type_name, message, traceback)),
            }),
        }
    }

    /// Calls method `index` with `payload`, serving the worker's calls of `host_functions` meanwhile
    /// on this thread.
    pub(crate) fn call(
        &mut self,
        index: usize,
        payload: &[u8],
        deadline: Option<Instant>,
        descriptor: &OwnedInterfaceDescriptor,
        host_functions: &HostFunctions,
    ) -> Result<Vec<u8>, Failure> {
        let method = u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes();
        let (kind, body) = self.exchange(
            protocol::CALL,
            &[&method, payload],
            deadline,
            Some(host_functions),
            |kind| kind == protocol::REPLY_OK || kind == protocol::REPLY_ERR,
        )?;
        if kind == protocol::REPLY_OK {
            return Ok(body);
        }
        Err(match protocol::decode_error(&body, descriptor, index) {
            Ok(error) => Failure::Call(error),
            Err(reason) => {
                self.kill();
                Failure::Protocol(reason)
            }
        })
    }

    /// Sends one message and waits for the reply `is_reply` accepts, routing output on the way
    /// and, when `host_functions` is given, answering the worker's host function calls.
    fn exchange(
        &mut self,
        kind: u8,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        host_functions: Option<&HostFunctions>,
        is_reply: impl Fn(u8) -> bool,
    ) -> Result<(u8, Vec<u8>), Failure> {
        self.converse(Some((kind, parts)), deadline, host_functions, is_reply)
    }

    /// Sends `message` (none: only waits), then waits for the reply `is_reply` accepts, routing
    /// output on the way and, when `host_functions` is given, answering the worker's host function
    /// calls. A streamed result is many replies to one message.
    pub(crate) fn converse(
        &mut self,
        message: Option<(u8, &[&[u8]])>,
        deadline: Option<Instant>,
        host_functions: Option<&HostFunctions>,
        is_reply: impl Fn(u8) -> bool,
    ) -> Result<(u8, Vec<u8>), Failure> {
        let mut alive = reaping(&mut self.child, &mut self.exited);
        let mut wait = Wait {
            // Most small calls answer well within the spin.
            spin: crate::backend::wait::SPIN_BEFORE_PARKING,
            deadline,
            alive: &mut alive,
        };
        let sent = match message {
            Some((kind, parts)) => self.mailbox.send(kind, parts, &mut wait),
            None => Ok(()),
        };
        let outcome = match sent {
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
                    Ok((protocol::CALLBACK, body)) => {
                        let (name, args) = match protocol::decode_callback(&body) {
                            Ok(decoded) => decoded,
                            Err(reason) => break Err(ReceiveError::Protocol(reason)),
                        };
                        let answer = if name == crate::stream_input::PULL {
                            // The next item of the streamed argument: only while one is passed.
                            match &self.input {
                                Some(feed) => feed.pull(),
                                None => {
                                    break Err(ReceiveError::Protocol(
                                        "a pull of a streamed argument the call does not have"
                                            .to_owned(),
                                    ))
                                }
                            }
                        } else {
                            let Some(functions) = host_functions else {
                                break Err(ReceiveError::Protocol(
                                    "a host function call outside a call".to_owned(),
                                ));
                            };
                            functions.answer_worker(name, args)
                        };
                        let (kind, body) = match &answer {
                            Ok(result) => (protocol::CALLBACK_OK, result.as_slice()),
                            Err(message) => (protocol::CALLBACK_ERR, message.as_bytes()),
                        };
                        if let Err(interrupted) = self.mailbox.send(kind, &[body], &mut wait) {
                            break Err(ReceiveError::Interrupted(interrupted));
                        }
                    }
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

    /// Sends one message that has no reply (a stream's `STREAM_PULL` or `STREAM_CANCEL`).
    pub(crate) fn post(
        &mut self,
        kind: u8,
        parts: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<(), Failure> {
        let mut alive = reaping(&mut self.child, &mut self.exited);
        let mut wait = Wait {
            spin: crate::backend::wait::SPIN_BEFORE_PARKING,
            deadline,
            alive: &mut alive,
        };
        let sent = self.mailbox.send(kind, parts, &mut wait);
        drop(alive);
        sent.map_err(|interrupted| match interrupted {
            Interrupted::Deadline => {
                self.kill();
                Failure::Deadline
            }
            Interrupted::PeerGone => self.died(),
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
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        Failure::Died {
            status: self.exited.clone().unwrap_or(WorkerExit::Unknown),
            stderr_tail: self.stderr.finish(STDERR_DRAIN),
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
        let _ = self.stderr.finish(STDERR_DRAIN);
    }
}

/// A [`Wait`] liveness check for `child` that records its exit status in `exited` once it is gone.
fn reaping<'a>(
    child: &'a mut WorkerPid,
    exited: &'a mut Option<WorkerExit>,
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
fn watch_exit(child: &WorkerPid) -> Arc<AtomicBool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let exited = Arc::new(AtomicBool::new(false));
    let pidfd = child.pidfd();
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

/// How the worker with exit status `status` ended.
pub(crate) fn worker_exit(status: ExitStatus) -> WorkerExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerExit::Code(code),
        (None, Some(signal)) => WorkerExit::Signal(signal),
        (None, None) => WorkerExit::Unknown,
    }
}

#[cfg(test)]
mod tests {
    //! A fake worker: this test binary, re-run with [`FAKE_WORKER`] set, speaks the protocol to a
    //! real [`WorkerProcess`] and answers a call with whatever error body the test chose.

    use super::*;
    use crate::backend::process::protocol::tests::DESCRIPTOR;

    /// Prefixes the fake worker's argument that holds the `REPLY_ERR` body it sends (to libtest,
    /// one more test-name filter that matches nothing).
    const FAKE_REPLY: &str = "fidius-fake-reply=";
    const FAKE_WORKER_TEST: &str = "backend::process::child::tests::fake_worker";

    /// The fake worker itself; a no-op unless started by [`call_fake_worker`].
    #[test]
    fn fake_worker() {
        let callback = std::env::args()
            .find_map(|arg| arg.strip_prefix(FAKE_CALLBACK).map(str::to_owned))
            .map(|body| hex::decode(body).expect("a hex callback body"));
        let Some(reply) = std::env::args()
            .find_map(|arg| arg.strip_prefix(FAKE_REPLY).map(str::to_owned))
            .or_else(|| callback.as_ref().map(|_| String::new()))
        else {
            return;
        };
        let file = rustix::io::dup(std::io::stdin()).expect("a mailbox on stdin");
        let mut mailbox = Mailbox::open(file).expect("a mailbox");
        let mut alive = || true;
        let mut wait = Wait {
            spin: Duration::ZERO,
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            alive: &mut alive,
        };
        let (kind, _) = mailbox.receive(64 << 20, &mut wait).expect("start");
        assert_eq!(kind, protocol::START);
        let started = Started::Report {
            report: r#"{"ok": true}"#.to_owned(),
            implemented: vec![true],
        };
        let started = serde_json::to_vec(&started).expect("encodes");
        mailbox
            .send(protocol::STARTED, &[&started], &mut wait)
            .expect("started");
        let (kind, _) = mailbox.receive(64 << 20, &mut wait).expect("call");
        assert_eq!(kind, protocol::CALL);
        if let Some(callback) = callback {
            // Sends the callback body as it is, then returns the host's answer (its kind first).
            mailbox
                .send(protocol::CALLBACK, &[&callback], &mut wait)
                .expect("callback");
            let (kind, answer) = mailbox.receive(64 << 20, &mut wait).expect("an answer");
            mailbox
                .send(protocol::REPLY_OK, &[&[kind], &answer], &mut wait)
                .expect("reply");
        } else {
            mailbox
                .send(protocol::REPLY_ERR, &[reply.as_bytes()], &mut wait)
                .expect("reply");
        }
        // Stay until the host kills it (a protocol error) or asks it to end.
        let _ = mailbox.receive(64 << 20, &mut wait);
    }

    /// Prefixes the fake worker's argument that holds, in hex, the `CALLBACK` body it sends
    /// during the call (it then replies with the host's answer: its kind, then its body).
    const FAKE_CALLBACK: &str = "fidius-fake-callback=";

    /// Starts a fake worker that answers its one call with `reply`; the call's failure.
    fn call_fake_worker(reply: &[u8]) -> Failure {
        let reply = std::str::from_utf8(reply).expect("a UTF-8 reply");
        match fake_worker_call(&format!("{FAKE_REPLY}{reply}"), &HostFunctions::default()) {
            Ok(bytes) => panic!("the fake worker answered {bytes:?}"),
            Err(failure) => failure,
        }
    }

    /// Starts a fake worker whose call sends the `CALLBACK` `body`; the host's answer, or the
    /// call's failure.
    fn fake_callback(body: &[u8], host_functions: &HostFunctions) -> Result<Vec<u8>, Failure> {
        fake_worker_call(
            &format!("{FAKE_CALLBACK}{}", hex::encode(body)),
            host_functions,
        )
    }

    fn fake_worker_call(mode: &str, host_functions: &HostFunctions) -> Result<Vec<u8>, Failure> {
        let exe = std::env::current_exe().expect("the test binary");
        // libtest takes the mode `serve` the host appends as one more filter, matching nothing.
        let command = WorkerCommand::new(exe)
            .arg("--exact")
            .arg(FAKE_WORKER_TEST)
            .arg(mode);
        let spec = StartSpec {
            plugin: "fake".to_owned(),
            version: "1.0.0".to_owned(),
            dir: std::env::temp_dir(),
            entry_module: "fake".to_owned(),
            interface: (&DESCRIPTOR).into(),
            log_level: 0,
            memory_limit: None,
            strict: false,
            config: None,
            host_functions: Vec::new(),
            bytecode_cache: None,
        };
        let attribution = Attribution {
            plugin: "fake".to_owned(),
            version: "1.0.0".to_owned(),
            instance: 0,
            recent: Arc::new(RecentOutput::new(16)),
        };
        let descriptor = OwnedInterfaceDescriptor::from(&DESCRIPTOR);
        let started = WorkerProcess::start(
            &command,
            &spec,
            &descriptor,
            attribution,
            Some(Duration::from_secs(60)),
        );
        let (mut worker, accepted) = match started {
            Ok(started) => started,
            Err(error) => panic!("the fake worker did not start: {error}"),
        };
        assert_eq!(accepted.implemented, vec![true]);
        let deadline = Instant::now() + Duration::from_secs(60);
        worker.call(0, b"[]", Some(deadline), &descriptor, host_functions)
    }

    #[test]
    fn a_workers_host_function_calls_are_checked_before_anything_runs() {
        let mut functions = HostFunctions::default();
        functions.register("add".to_owned(), |args: &[u8]| {
            let (a, b): (i64, i64) = serde_json::from_slice(args)?;
            Ok(serde_json::to_vec(&(a + b))?)
        });
        let body = |name: &str, args: &[u8]| {
            let mut body = protocol::encode_callback(name).expect("a short name");
            body.extend_from_slice(args);
            body
        };
        let answer = |reply: Result<Vec<u8>, Failure>| match reply {
            Ok(reply) => (reply[0], String::from_utf8_lossy(&reply[1..]).into_owned()),
            Err(failure) => panic!("expected an answer, got {}", describe(&failure)),
        };
        assert_eq!(
            answer(fake_callback(&body("add", b"[40, 2]"), &functions)),
            (protocol::CALLBACK_OK, "42".to_owned())
        );
        // Refused, answered, and the worker lives on: an unknown name, arguments that are not a
        // JSON array.
        let (kind, message) = answer(fake_callback(&body("nope", b"[]"), &functions));
        assert_eq!(kind, protocol::CALLBACK_ERR);
        assert!(message.contains("no host function named `nope`") && message.contains("add"));
        let (kind, message) = answer(fake_callback(&body("add", b"{\"a\": 1}"), &functions));
        assert_eq!(kind, protocol::CALLBACK_ERR);
        assert!(message.contains("not a JSON array"), "{message}");
        // A malformed frame is a protocol error: the worker is killed.
        let long_name = [&[200u8, 0][..], &[b'a'; 200][..], b"[]"].concat();
        match fake_callback(&long_name, &functions) {
            Err(Failure::Protocol(reason)) => assert!(reason.contains("at most 64"), "{reason}"),
            Err(other) => panic!("expected a protocol error, got {}", describe(&other)),
            Ok(reply) => panic!("expected a protocol error, got {reply:?}"),
        }
    }

    #[test]
    fn a_pull_of_a_streamed_argument_the_call_does_not_have_kills_the_worker() {
        // A hostile (or broken) worker asking for input items during a plain call.
        let mut body = protocol::encode_callback(crate::stream_input::PULL).expect("a short name");
        body.extend_from_slice(b"[]");
        match fake_callback(&body, &HostFunctions::default()) {
            Err(Failure::Protocol(reason)) => {
                assert!(reason.contains("streamed argument"), "{reason}")
            }
            Err(other) => panic!("expected a protocol error, got {}", describe(&other)),
            Ok(reply) => panic!("expected a protocol error, got {reply:?}"),
        }
    }

    #[test]
    fn a_remote_error_crosses_in_call_errors_own_wire_form() {
        let error = CallError::Python {
            method: "shout".to_owned(),
            exception_type: "ValueError".to_owned(),
            message: "too quiet".to_owned(),
            traceback: Some("Traceback (most recent call last): ...".to_owned()),
        };
        match call_fake_worker(&protocol::encode_error(&error, "shout")) {
            Failure::Call(CallError::Python {
                method,
                exception_type,
                message,
                traceback,
            }) => {
                assert_eq!(
                    (method.as_str(), exception_type.as_str()),
                    ("shout", "ValueError")
                );
                assert_eq!(message, "too quiet");
                assert_eq!(
                    traceback.as_deref(),
                    Some("Traceback (most recent call last): ...")
                );
            }
            other => panic!("expected the Python error, got {}", describe(&other)),
        }
    }

    #[test]
    fn a_hostile_error_reply_is_a_protocol_error_and_the_worker_is_killed() {
        let claims_a_timeout =
            br#"{"Timeout":{"plugin":"other","method":"shout","after":{"secs":1,"nanos":0}}}"#;
        match call_fake_worker(claims_a_timeout) {
            Failure::Protocol(reason) => {
                assert!(reason.contains("unknown variant `Timeout`"), "{reason}")
            }
            other => panic!("expected a protocol error, got {}", describe(&other)),
        }
        match call_fake_worker(br#"{"Python":{"method":"shout","exception_type":1}}"#) {
            Failure::Protocol(reason) => assert!(reason.contains("invalid type"), "{reason}"),
            other => panic!("expected a protocol error, got {}", describe(&other)),
        }
        // The hand-kept mirror this replaced took these two as call errors.
        match call_fake_worker(br#"{"Other":{"message":"trust me"}}"#) {
            Failure::Protocol(reason) => {
                assert!(reason.contains("unknown variant `Other`"), "{reason}")
            }
            other => panic!("expected a protocol error, got {}", describe(&other)),
        }
        match call_fake_worker(br#"{"NotImplemented":{"method":"whisper"}}"#) {
            Failure::Protocol(reason) => assert!(
                reason.contains("`whisper`") && reason.contains("`shout`"),
                "{reason}"
            ),
            other => panic!("expected a protocol error, got {}", describe(&other)),
        }
    }

    fn describe(failure: &Failure) -> String {
        match failure {
            Failure::Call(error) => format!("call error {error:?}"),
            Failure::Died {
                status,
                stderr_tail,
            } => format!("death ({status}): {stderr_tail}"),
            Failure::Deadline => "the deadline".to_owned(),
            Failure::Protocol(reason) => format!("protocol error {reason}"),
        }
    }
}
