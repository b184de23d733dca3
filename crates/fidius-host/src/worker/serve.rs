//! `serve` mode: one plugin instance in this process's main interpreter, answering its host through
//! the mailbox it was handed as stdin.

use std::cell::RefCell;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use fidius_core::interface::{OwnedInterfaceDescriptor, WireMode};
use fidius_core::CallError;
use fidius_ffi::{FfiError, Interp, Interpreter, PyObj, WorkerInterpreter};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{getppid, pidfd_open, Pid, PidfdFlags, Resource, Rlimit};

use crate::backend::process::mailbox::{Interrupted, Mailbox, ReceiveError, Wait};
use crate::backend::process::protocol::{self, StartSpec, Started};
use crate::plugin::dispatch::{dispatch_payload, invalid_arguments, Payload};
use crate::plugin::loader::{self, LoadedInstance, ReadyInterpreter};
use crate::plugin::output::{self, OutputSink, Taken};
use crate::plugin::shared;

/// How long the worker polls for the next call after answering one before it sleeps (a host making
/// back-to-back calls never waits for a wake-up).
const KEEP_POLLING: Duration = Duration::from_micros(100);

/// Run when the host asks the worker to end (see the `SHUTDOWN` arm of [`serve`]).
const FINALIZE: &str = "import sys\n\
    threading = sys.modules.get('threading')\n\
    if threading is not None:\n    threading._shutdown()\n\
    atexit = sys.modules.get('atexit')\n\
    if atexit is not None:\n    atexit._run_exitfuncs()\n";

/// Address space a worker with a `memory_limit` has beyond what Python may allocate: the mapped
/// interpreter and libraries, thread stacks, and the worker's own allocations.
const RUNTIME_HEADROOM: u64 = 256 << 20;

/// Freed heap a worker keeps for reuse (see [`fidius_ffi::retain_freed_heap`]): enough for a call
/// with a 16 MiB argument and result to reuse the same pages the next time.
const RETAINED_HEAP: usize = 64 << 20;

/// Exit status when the host broke the protocol or went away.
const HOST_GONE: u8 = 70;

pub(super) fn main(_args: Vec<OsString>) -> ExitCode {
    exit_code(serve(Start::Cold))
}

/// `template` mode: load the plugin, then fork workers on the host's request (see
/// `backend/process/template.rs`); each forked child serves like a cold worker.
pub(super) fn template_main(_args: Vec<OsString>) -> ExitCode {
    exit_code(serve(Start::Template))
}

/// How a worker got its mailbox: on stdin (cold), or through its template's control channel.
enum Start {
    Cold,
    Template,
}

fn exit_code(served: Result<(), String>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("fidius worker: {reason}");
            ExitCode::from(HOST_GONE)
        }
    }
}

fn serve(start: Start) -> Result<(), String> {
    let host = getppid().ok_or_else(|| "started without a host process".to_owned())?;
    fidius_ffi::retain_freed_heap(RETAINED_HEAP);
    let host_fd = host_pidfd(host)?;
    let stdin = rustix::io::dup(std::io::stdin())
        .map_err(|error| format!("no mailbox on stdin: {error}"))?;
    // A template stays single-threaded (it forks): it watches its host in its own wait loop.
    let (file, control) = match start {
        Start::Cold => {
            exit_with_host(host_fd.try_clone().map_err(|error| error.to_string())?)?;
            (stdin, None)
        }
        Start::Template => (super::template::receive_mailbox(&stdin)?, Some(stdin)),
    };
    let mut mailbox =
        Mailbox::open(file).map_err(|error| format!("no mailbox on stdin: {error}"))?;
    // The plugin reads no input; its stdout and stderr already go to the host's pipe.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    // A forked worker's parent is its template: it asks the host's pidfd instead.
    let forked = std::cell::Cell::new(false);
    let mut host_alive = || {
        if forked.get() {
            !super::template::has_exited(&host_fd)
        } else {
            getppid() == Some(host)
        }
    };
    let mut wait = Wait {
        spin: KEEP_POLLING,
        deadline: None,
        alive: &mut host_alive,
    };
    let (kind, body) = mailbox
        .receive(64 << 20, &mut wait)
        .map_err(|error| describe(&error))?;
    if kind != protocol::START {
        return Err(format!("expected a start message, got kind {kind}"));
    }
    let spec: StartSpec =
        serde_json::from_slice(&body).map_err(|error| format!("bad start message: {error}"))?;
    if let Some(limit) = spec.memory_limit {
        // Python gets `limit`; the address space has room beyond it for the runtime itself (the
        // interpreter's code and stacks, this worker's Rust code), so running out in Python is a
        // `MemoryError` the worker can report, not an abort in whatever allocates next.
        let address_space = limit
            .saturating_add(fidius_ffi::MEMORY_LIMIT_GRACE as u64)
            .saturating_add(RUNTIME_HEADROOM);
        rustix::process::setrlimit(
            Resource::As,
            Rlimit {
                current: Some(address_space),
                maximum: Some(address_space),
            },
        )
        .map_err(|error| format!("cannot set the memory limit: {error}"))?;
    }
    let descriptor = &spec.interface;
    let claimed = WorkerInterpreter::claim().and_then(|interp| {
        if let Some(limit) = spec.memory_limit {
            interp.limit_memory(usize::try_from(limit).unwrap_or(usize::MAX))?;
        }
        ReadyInterpreter::prepare(interp)
    });
    let interp = match claimed {
        Ok(interp) => interp,
        Err(error) => {
            send_json(&mut mailbox, protocol::STARTED, &failed(&error), &mut wait)?;
            return Ok(());
        }
    };
    let collected = Collected::default();
    let Some(instance) = load(
        &interp,
        &spec,
        descriptor,
        &collected,
        &mut mailbox,
        &mut wait,
    )?
    else {
        return Ok(());
    };
    if let Some(control) = control {
        // Returns only in a forked child, with the mailbox it serves.
        let Some(forked_mailbox) =
            super::template::serve_forks(&interp, control, &host_fd, mailbox)?
        else {
            return Ok(());
        };
        mailbox = forked_mailbox;
        forked.set(true);
        exit_with_host(host_fd.try_clone().map_err(|error| error.to_string())?)?;
    }
    loop {
        let (kind, _) = match mailbox.receive_header(usize::MAX, &mut wait) {
            Ok(header) => header,
            Err(ReceiveError::Interrupted(Interrupted::PeerGone)) => return Ok(()),
            Err(error) => return Err(describe(&error)),
        };
        match kind {
            protocol::CALL => {
                let index = receive_index(&mut mailbox, &mut wait)?;
                let method_name = descriptor
                    .method(index)
                    .map_or("", |method| method.name.as_str());
                // Shared by the reply and the plugin's host function calls (which happen while
                // the plugin runs, before the reply).
                let link = RefCell::new((&mut mailbox, &mut wait));
                let host_call = |name: &str, args: &[u8]| {
                    let (mailbox, wait) = &mut *link.borrow_mut();
                    call_host(mailbox, wait, name, args, None)
                };
                interp
                    .with(|py| {
                        let input = {
                            let (mailbox, wait) = &mut *link.borrow_mut();
                            receive_input(py, mailbox, descriptor, index, wait)?
                        };
                        // Every reply goes out after the call's output, still attached: a raw
                        // result is sent from its own buffer (no copy into a `Vec` first).
                        let send_reply = |kind, body: &[u8]| {
                            let (mailbox, wait) = &mut *link.borrow_mut();
                            collected.drain(
                                &instance.output_buffer.bind(py),
                                &instance.take_output.bind(py),
                            );
                            send_output(&collected, mailbox, wait)?;
                            mailbox
                                .send(kind, &[body], wait)
                                .map_err(|_| "the host went away".to_owned())
                        };
                        let replied = input.and_then(|input| {
                            let method = shared::method(descriptor, index)?;
                            if method.streamed_argument.is_some() {
                                // Its items are pulled from the host as `call_host`s.
                                let CallInput::Encoded(body) = input else {
                                    return Err(CallError::InvalidArguments {
                                        method: method.name.clone(),
                                        reason: "a streamed argument's call must be typed"
                                            .to_owned(),
                                    });
                                };
                                let result = fidius_ffi::serve_host_calls(&host_call, || {
                                    crate::plugin::stream_input::dispatch(
                                        py, &instance, method, index, &body,
                                    )
                                })?;
                                return Ok(send_reply(protocol::REPLY_OK, &result));
                            }
                            let call = |payload| {
                                fidius_ffi::serve_host_calls(&host_call, || {
                                    dispatch_payload(
                                        py,
                                        &instance,
                                        method,
                                        index,
                                        payload,
                                        |reply| send_reply(protocol::REPLY_OK, &reply),
                                    )
                                })
                            };
                            match input {
                                CallInput::Encoded(body) => call(Payload::Encoded(&body)),
                                CallInput::Bytes(bytes) => call(Payload::Bytes(bytes)),
                            }
                        });
                        match replied {
                            Ok(sent) => sent,
                            Err(error) => send_reply(
                                protocol::REPLY_ERR,
                                &protocol::encode_error(&error, method_name),
                            ),
                        }
                    })
                    .map_err(|error| format!("cannot enter the interpreter: {error}"))??;
            }
            protocol::STREAM_OPEN => {
                let body = mailbox
                    .receive_rest(&mut wait)
                    .map_err(|error| describe(&error))?;
                interp
                    .with(|py| {
                        super::stream::serve(
                            py,
                            &instance,
                            descriptor,
                            &body,
                            &collected,
                            &mut mailbox,
                            &mut wait,
                        )
                    })
                    .map_err(|error| format!("cannot enter the interpreter: {error}"))??;
            }
            // Meant for a stream that had already ended when it arrived.
            protocol::STREAM_PULL | protocol::STREAM_CANCEL => {
                mailbox
                    .skip_body(&mut wait)
                    .map_err(|error| describe(&error))?;
            }
            protocol::SHUTDOWN => {
                // What `Py_FinalizeEx` does first, and ending a sub-interpreter does too: wait for
                // the plugin's (non-daemon) threads, then run its `atexit` functions. The host
                // kills the worker if this outlasts its grace period.
                let _ = interp.with(|py| {
                    if let Err(error) = py.run(FINALIZE) {
                        tracing::warn!(%error, "finalising the plugin's interpreter failed");
                    }
                    collected.drain(
                        &instance.output_buffer.bind(py),
                        &instance.take_output.bind(py),
                    );
                });
                send_output(&collected, &mut mailbox, &mut wait)?;
                return Ok(());
            }
            other => return Err(format!("unexpected message kind {other}")),
        }
    }
}

/// A pidfd of the host process `host` (checked to still be this worker's parent after opening it,
/// so it is the host's and not a later process's with the same pid).
fn host_pidfd(host: Pid) -> Result<rustix::fd::OwnedFd, String> {
    let host_fd = pidfd_open(host, PidfdFlags::empty())
        .map_err(|error| format!("cannot watch the host process: {error}"))?;
    if getppid() != Some(host) {
        return Err("the host exited before the worker started".to_owned());
    }
    Ok(host_fd)
}

/// Ends this worker as soon as its host process (`host_fd`) ends, whatever the plugin is doing
/// (also stuck in C code). Not `PR_SET_PDEATHSIG`: that fires when the host *thread* that started
/// the worker ends.
fn exit_with_host(host_fd: rustix::fd::OwnedFd) -> Result<(), String> {
    std::thread::Builder::new()
        .name("fidius:host-watch".to_owned())
        .spawn(move || {
            let mut fds = [PollFd::new(&host_fd, PollFlags::IN)];
            // Readable once the host has exited; an error means we cannot tell, so keep serving.
            while poll(&mut fds, None).is_err() {}
            std::process::exit(i32::from(HOST_GONE));
        })
        .map(drop)
        .map_err(|error| format!("cannot watch the host process: {error}"))
}

/// Loads the plugin and reports the outcome; `None` when it was rejected (the host has the reason).
fn load<'s>(
    interp: &'s ReadyInterpreter<WorkerInterpreter>,
    spec: &StartSpec,
    descriptor: &OwnedInterfaceDescriptor,
    collected: &Collected,
    mailbox: &mut Mailbox,
    wait: &mut Wait<'_>,
) -> Result<Option<LoadedInstance<'s>>, String> {
    let source = spec.source();
    // Lenient here: the host checks the same report with its own `strict` setting.
    let imported = loader::import(
        interp,
        &source,
        descriptor,
        spec.config.as_ref().map(|config| &config.value),
        spec.log_level,
        collected,
        false,
    );
    send_output(collected, mailbox, wait)?;
    let imported = match imported {
        Ok(imported) => imported,
        Err(error) => {
            send_json(mailbox, protocol::STARTED, &failed(&error), wait)?;
            return Ok(None);
        }
    };
    let instance = imported.checked.ok();
    if instance.is_some() {
        if let Err(error) = crate::callback::bind(&**interp, &spec.host_functions) {
            send_json(mailbox, protocol::STARTED, &failed(&error), wait)?;
            return Ok(None);
        }
    }
    let started = Started::Report {
        report: String::from_utf8_lossy(&imported.report).into_owned(),
        implemented: instance
            .as_ref()
            .map(LoadedInstance::implemented)
            .unwrap_or_default(),
    };
    send_json(mailbox, protocol::STARTED, &started, wait)?;
    Ok(instance)
}

fn failed(error: &FfiError) -> Started {
    match error {
        FfiError::Python(exception) => Started::Failed {
            type_name: exception.type_name.clone(),
            message: exception.message.clone(),
            traceback: exception.traceback.clone(),
        },
        other => Started::Failed {
            type_name: "fidius.WorkerError".to_owned(),
            message: other.to_string(),
            traceback: None,
        },
    }
}

/// Reads the method index that starts a call message's body.
fn receive_index(mailbox: &mut Mailbox, wait: &mut Wait<'_>) -> Result<usize, String> {
    let index = mailbox
        .receive_array::<4>(wait)
        .map_err(|error| describe(&error))?;
    Ok(u32::from_le_bytes(index) as usize)
}

/// A call's arguments as read from the mailbox.
enum CallInput<'i> {
    /// A JSON array of arguments (or the body of a call the dispatch will refuse).
    Encoded(Vec<u8>),
    /// A raw method's argument, copied from shared memory straight into a new `bytes`.
    Bytes(PyObj<'i>),
}

/// Reads the rest of a call message (attached, so that a raw method's argument is built in place).
/// The inner error is the call's (no memory for the argument), the outer one the worker's.
fn receive_input<'i>(
    py: Interp<'i>,
    mailbox: &mut Mailbox,
    descriptor: &OwnedInterfaceDescriptor,
    index: usize,
    wait: &mut Wait<'_>,
) -> Result<Result<CallInput<'i>, CallError>, String> {
    let raw_method = descriptor
        .method(index)
        .filter(|method| method.wire == WireMode::Raw);
    let len = mailbox.body_left();
    let received = match raw_method {
        Some(method) => match py.bytes_builder(len) {
            Ok(mut bytes) => mailbox
                .receive_body(len, &mut bytes, wait)
                .map(|()| Ok(CallInput::Bytes(bytes.finish()))),
            Err(error) => mailbox
                .skip_body(wait)
                .map(|()| Err(invalid_arguments(method, &error))),
        },
        None => mailbox
            .receive_rest(wait)
            .map(|body| Ok(CallInput::Encoded(body))),
    };
    received.map_err(|error| describe(&error))
}

/// Runs host function `name` in the host, which answers over the mailbox before the call's reply.
/// In a stream (`cancelled` given), the host's `STREAM_CANCEL` may cross the call: it is noted
/// there, and the answer still comes.
pub(super) fn call_host(
    mailbox: &mut Mailbox,
    wait: &mut Wait<'_>,
    name: &str,
    args: &[u8],
    cancelled: Option<&std::cell::Cell<bool>>,
) -> Result<Vec<u8>, String> {
    let header = protocol::encode_callback(name)?;
    mailbox
        .send(protocol::CALLBACK, &[&header, args], wait)
        .map_err(|_| "the host went away".to_owned())?;
    loop {
        return match mailbox.receive(usize::MAX, wait) {
            Ok((protocol::CALLBACK_OK, result)) => Ok(result),
            Ok((protocol::CALLBACK_ERR, message)) => {
                Err(String::from_utf8_lossy(&message).into_owned())
            }
            Ok((protocol::STREAM_CANCEL, _)) if cancelled.is_some() => {
                if let Some(cancelled) = cancelled {
                    cancelled.set(true);
                }
                continue;
            }
            Ok((kind, _)) => Err(format!(
                "fidius worker: the host answered a host function call with message kind {kind}"
            )),
            Err(error) => Err(describe(&error)),
        };
    }
}

/// The method index and payload of a call-like message body (a stream's opening).
pub(super) fn split_call(body: &[u8]) -> Result<(usize, &[u8]), String> {
    let (index, payload) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| "call message without a method index".to_owned())?;
    Ok((u32::from_le_bytes(*index) as usize, payload))
}

fn send_json(
    mailbox: &mut Mailbox,
    kind: u8,
    value: &impl serde::Serialize,
    wait: &mut Wait<'_>,
) -> Result<(), String> {
    let json = serde_json::to_vec(value).map_err(|error| format!("cannot encode: {error}"))?;
    mailbox
        .send(kind, &[&json], wait)
        .map_err(|_| "the host went away".to_owned())
}

pub(super) fn send_output(
    collected: &Collected,
    mailbox: &mut Mailbox,
    wait: &mut Wait<'_>,
) -> Result<(), String> {
    for taken in collected.0.take() {
        send_json(mailbox, protocol::OUTPUT, &taken, wait)?;
    }
    Ok(())
}

fn describe(error: &ReceiveError) -> String {
    match error {
        ReceiveError::Interrupted(_) => "the host went away".to_owned(),
        ReceiveError::Protocol(reason) => format!("protocol error: {reason}"),
    }
}

/// Output drained from the interpreter, waiting to be sent to the host.
#[derive(Default)]
pub(super) struct Collected(RefCell<Vec<Taken>>);

impl OutputSink for Collected {
    fn drain(&self, buffer: &PyObj<'_>, take: &PyObj<'_>) {
        match output::take(buffer, take) {
            Ok(Some(taken)) => self.0.borrow_mut().push(taken),
            Ok(None) => {}
            Err(error) => self.0.borrow_mut().push(Taken::line(
                "stderr",
                format!("fidius: could not read output: {error}"),
            )),
        }
    }
}
