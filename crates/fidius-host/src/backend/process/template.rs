//! Warm worker templates (Linux): a process per worker set that has initialised CPython, run the
//! bootstrap and imported the plugin once, and then forks each new worker of the set on request, so
//! a restart after a crash (or a pool's further workers) skips exec, interpreter start and import,
//! and the workers share the template's pages copy-on-write.
//!
//! The template is started like a cold worker (`fidius-worker template`), loads the plugin over a
//! mailbox exactly as one does, and the host checks its start report the same way. Its stdin is one
//! end of a `SOCK_SEQPACKET` socket pair, the control channel: the host sends [`FORK`] with the new
//! worker's mailbox and output pipe (`SCM_RIGHTS`); the template forks (refusing when it has more
//! than one thread, see [`fidius_ffi::WorkerInterpreter::fork`]) and answers [`FORKED`] with the
//! child's pid or [`REFUSED`] with why; it reaps its children and reports each exit status
//! ([`EXITED`]). The forked worker then serves its mailbox with the same serve loop as a cold one.
//!
//! Template and forked workers are as untrusted as any worker: a reported pid is accepted only when
//! it is a live child of the template (checked through a pidfd and `/proc`, so a template can make
//! the host signal nothing but its own children), messages are bounded and checked, and a template
//! that misbehaves or dies is dropped: the next worker starts cold, and the one after that restarts
//! the template (up to [`MAX_TEMPLATE_DEATHS`] times).

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::WorkerExit;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::backend::process::child::{worker_exit, Attribution, WorkerProcess};
use crate::backend::process::command::WorkerCommand;
use crate::backend::process::mailbox::Mailbox;
use crate::backend::process::protocol::StartSpec;
use crate::backend::process::workers::ProcessCounters;
use crate::error::LoadError;
use crate::plugin::loader::Accepted;

/// Host → template: fork a worker; carries its mailbox and its output pipe's write end.
pub(crate) const FORK: u8 = 1;
/// Host → template, once at start: the template's own mailbox (for the load).
pub(crate) const MAILBOX: u8 = 2;
/// Template → host: forked; the child's pid follows (`u32`, little endian).
pub(crate) const FORKED: u8 = 3;
/// Template → host: did not fork; why follows (UTF-8, at most [`MAX_REASON`] bytes).
pub(crate) const REFUSED: u8 = 4;
/// Template → host: a forked child exited; its pid and raw wait status follow (`u32`, `i32`).
pub(crate) const EXITED: u8 = 5;
/// The longest control message either side sends.
pub(crate) const MAX_MESSAGE: usize = 1 + MAX_REASON;
/// The longest refusal reason.
pub(crate) const MAX_REASON: usize = 1024;

/// How long a fork request may take before the template counts as unresponsive.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forked worker's exit status may take to arrive from its template once the worker is
/// seen gone (the template reaps it at once; only a dead or stuck template is slower).
const EXIT_REPORT_WAIT: Duration = Duration::from_millis(500);
/// Template deaths after which a set starts its workers cold for good.
const MAX_TEMPLATE_DEATHS: u32 = 3;

/// Environment a template starts with, unless the host's environment sets the variable itself:
/// OpenBLAS (numpy's BLAS) starts a thread pool when loaded, which would make the template refuse
/// to fork; with one BLAS thread it starts none. Each forked worker removes the variables fidius
/// set and gives OpenBLAS back the thread count a cold worker gets (see `worker/template.rs`).
const TEMPLATE_ENV: &[(&str, &str)] = &[("OPENBLAS_NUM_THREADS", "1")];

/// Sends `message` on a control socket, with `fds` attached (`SCM_RIGHTS`).
pub(crate) fn send_message(
    socket: BorrowedFd<'_>,
    message: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "too many descriptors for one control message",
        ));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[io::IoSlice::new(message)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one control message into `buffer` with up to two descriptors; `Ok(None)` when the peer
/// closed its end. A message longer than `buffer` is an error.
pub(crate) fn receive_message(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [io::IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if received.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if received
        .flags
        .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::other("control message too long"));
    }
    Ok(Some((received.bytes, fds)))
}

/// Whether `pidfd`'s process has exited (it is readable then), waiting at most `timeout` (`None`:
/// until it does).
fn exited(pidfd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let timeout = timeout.map(|timeout| {
        Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Err(rustix::io::Errno::INTR) => continue,
            // Cannot tell: count it as gone, so nobody waits on it forever.
            Err(_) => return true,
            Ok(ready) => return ready > 0,
        }
    }
}

/// A worker process as the host holds it: its own child, or a child of a template.
pub(crate) enum WorkerPid {
    Spawned(std::process::Child),
    Forked(ForkedWorker),
}

impl WorkerPid {
    pub(crate) fn id(&self) -> u32 {
        match self {
            Self::Spawned(child) => child.id(),
            Self::Forked(forked) => forked.pid,
        }
    }

    /// How it ended, if it has exited (`Unknown` for a forked worker whose template cannot say).
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<WorkerExit>> {
        match self {
            Self::Spawned(child) => Ok(child.try_wait()?.map(worker_exit)),
            Self::Forked(forked) => Ok(forked.try_wait().map(exit_of)),
        }
    }

    /// SIGKILL (nothing if it has already exited).
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match self {
            Self::Spawned(child) => child.kill(),
            Self::Forked(forked) => forked.kill(),
        }
    }

    /// Waits for it to exit.
    pub(crate) fn wait(&mut self) -> io::Result<WorkerExit> {
        match self {
            Self::Spawned(child) => Ok(worker_exit(child.wait()?)),
            Self::Forked(forked) => Ok(exit_of(forked.wait())),
        }
    }

    /// A pidfd for watching it exit.
    pub(crate) fn pidfd(&self) -> Option<OwnedFd> {
        match self {
            Self::Spawned(child) => i32::try_from(child.id())
                .ok()
                .and_then(Pid::from_raw)
                .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok()),
            Self::Forked(forked) => forked.pidfd.try_clone().ok(),
        }
    }
}

/// A worker forked by a template: watched and signalled through a pidfd (it is not the host's
/// child), its exit status reported by the template, which reaps it.
pub(crate) struct ForkedWorker {
    pid: u32,
    pidfd: OwnedFd,
    link: Arc<TemplateLink>,
    /// Seen exited, and its status asked for.
    reaped: bool,
    status: Option<ExitStatus>,
}

/// How a forked worker ended, from its template's report (if any).
fn exit_of(status: Option<ExitStatus>) -> WorkerExit {
    status.map_or(WorkerExit::Unknown, worker_exit)
}

impl ForkedWorker {
    /// `None` while it runs; then its status, itself `None` when the template did not report it.
    fn try_wait(&mut self) -> Option<Option<ExitStatus>> {
        if self.reaped {
            return Some(self.status);
        }
        if !exited(&self.pidfd, Some(Duration::ZERO)) {
            return None;
        }
        Some(self.collect())
    }

    fn collect(&mut self) -> Option<ExitStatus> {
        if !self.reaped {
            self.status = self
                .link
                .exit_status(self.pid, EXIT_REPORT_WAIT)
                .map(ExitStatus::from_raw);
            self.reaped = true;
        }
        self.status
    }

    fn kill(&mut self) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        match pidfd_send_signal(&self.pidfd, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    fn wait(&mut self) -> Option<ExitStatus> {
        if !self.reaped {
            exited(&self.pidfd, None);
        }
        self.collect()
    }
}

/// What the template answered a fork request with.
enum Reply {
    Forked(u32),
    Refused(String),
    Gone,
}

/// Exit statuses reported by a template, and which pids it may report.
#[derive(Default)]
struct Exits {
    /// Children the host accepted and has not collected the status of.
    forked: HashSet<u32>,
    statuses: HashMap<u32, i32>,
    /// The template closed its end (exited) or broke the protocol.
    gone: bool,
}

/// The host's end of a template's control channel, shared by the template and its forked workers
/// (for their exit statuses).
pub(crate) struct TemplateLink {
    /// The template process's pid (the host's child, not reaped while the link is used).
    pid: u32,
    control: OwnedFd,
    /// One fork request at a time.
    requests: Mutex<()>,
    replies_tx: Sender<Reply>,
    replies_rx: Receiver<Reply>,
    exits: Mutex<Exits>,
    exit_reported: Condvar,
}

impl TemplateLink {
    fn lock_exits(&self) -> MutexGuard<'_, Exits> {
        self.exits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_gone(&self) -> bool {
        self.lock_exits().gone
    }

    fn mark_gone(&self) {
        self.lock_exits().gone = true;
        self.exit_reported.notify_all();
        let _ = self.replies_tx.try_send(Reply::Gone);
        // Ends the template, which reads EOF, if it is still there.
        let _ = rustix::net::shutdown(&self.control, rustix::net::Shutdown::Both);
    }

    /// The exit status the template reported for `pid`, waiting up to `wait` for it.
    fn exit_status(&self, pid: u32, wait: Duration) -> Option<i32> {
        let give_up = Instant::now() + wait;
        let mut exits = self.lock_exits();
        loop {
            if let Some(raw) = exits.statuses.remove(&pid) {
                return Some(raw);
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if exits.gone || left.is_zero() {
                exits.forked.remove(&pid);
                return None;
            }
            exits = self
                .exit_reported
                .wait_timeout(exits, left)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(exits, _)| exits);
        }
    }

    /// Reads the template's messages until it closes its end or breaks the protocol.
    fn read_messages(&self) {
        let mut buffer = [0u8; MAX_MESSAGE];
        loop {
            let received = receive_message(self.control.as_fd(), &mut buffer);
            let reason = match received {
                Ok(None) => None,
                Err(error) => Some(format!("unreadable control message: {error}")),
                Ok(Some((len, fds))) => match self.take_message(&buffer[..len], fds.len()) {
                    Ok(()) => continue,
                    Err(reason) => Some(reason),
                },
            };
            if let Some(reason) = reason {
                tracing::error!(target: "fidius::worker_template", template = self.pid, %reason, "worker template broke the protocol; dropped");
            }
            self.mark_gone();
            return;
        }
    }

    /// Passes a fork request's answer on; more answers than requests break the protocol (and
    /// would otherwise pile up).
    fn reply(&self, reply: Reply) -> Result<(), String> {
        self.replies_tx
            .try_send(reply)
            .map_err(|_| "answers nobody asked for".to_owned())
    }

    fn take_message(&self, message: &[u8], fds: usize) -> Result<(), String> {
        if fds != 0 {
            return Err("a template sent file descriptors".to_owned());
        }
        match message {
            [FORKED, pid @ ..] => {
                let pid = <[u8; 4]>::try_from(pid)
                    .map(u32::from_le_bytes)
                    .map_err(|_| "a malformed fork report".to_owned())?;
                self.reply(Reply::Forked(pid))?;
            }
            [REFUSED, reason @ ..] => {
                let reason = String::from_utf8_lossy(reason).into_owned();
                self.reply(Reply::Refused(reason))?;
            }
            [EXITED, rest @ ..] => {
                let (pid, raw) = rest
                    .split_first_chunk::<4>()
                    .and_then(|(pid, raw)| Some((*pid, <[u8; 4]>::try_from(raw).ok()?)))
                    .ok_or_else(|| "a malformed exit report".to_owned())?;
                let (pid, raw) = (u32::from_le_bytes(pid), i32::from_le_bytes(raw));
                let mut exits = self.lock_exits();
                // Only for workers the host accepted; a report about anything else is ignored
                // (a child that failed the host's check, or one it already gave up on).
                if exits.forked.remove(&pid) {
                    exits.statuses.insert(pid, raw);
                    self.exit_reported.notify_all();
                }
            }
            _ => return Err("an unknown control message".to_owned()),
        }
        Ok(())
    }

    /// Asks the template to fork a worker serving `mailbox` with its output on `output`.
    fn fork(
        self: &Arc<Self>,
        mailbox: BorrowedFd<'_>,
        output: BorrowedFd<'_>,
    ) -> Result<ForkedWorker, ForkFailure> {
        let _one_at_a_time = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while self.replies_rx.try_recv().is_ok() {}
        if self.is_gone() {
            return Err(ForkFailure::Gone("it had exited".to_owned()));
        }
        send_message(self.control.as_fd(), &[FORK], &[mailbox, output])
            .map_err(|error| ForkFailure::Gone(format!("cannot send it a request: {error}")))?;
        let pid = match self.replies_rx.recv_timeout(FORK_TIMEOUT) {
            Ok(Reply::Forked(pid)) => pid,
            Ok(Reply::Refused(reason)) => return Err(ForkFailure::Refused(reason)),
            Ok(Reply::Gone) => return Err(ForkFailure::Gone("it exited".to_owned())),
            Err(_) => {
                self.mark_gone();
                return Err(ForkFailure::Gone(format!(
                    "it did not answer within {FORK_TIMEOUT:?}"
                )));
            }
        };
        let pidfd = self.check_child(pid).map_err(|reason| {
            self.mark_gone();
            ForkFailure::Gone(reason)
        })?;
        self.lock_exits().forked.insert(pid);
        Ok(ForkedWorker {
            pid,
            pidfd,
            link: Arc::clone(self),
            reaped: false,
            status: None,
        })
    }

    /// A pidfd for `pid` if it is a live child of the template, else why not. The pidfd pins the
    /// process; it is checked alive after `/proc` named its parent, so both describe the same one.
    fn check_child(&self, pid: u32) -> Result<OwnedFd, String> {
        let not_a_child = || format!("it reported pid {pid}, which is not a child of it");
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok())
            .ok_or_else(not_a_child)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let parent = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|parent| parent.trim().parse::<u32>().ok());
        if parent != Some(self.pid) || exited(&pidfd, Some(Duration::ZERO)) {
            return Err(not_a_child());
        }
        Ok(pidfd)
    }
}

/// Why a template did not give a worker.
enum ForkFailure {
    /// It refused (threads): forking this plugin is not safe; it stays off.
    Refused(String),
    /// It is gone, hung or broke the protocol.
    Gone(String),
}

/// A running template: the process (as a worker that loaded the plugin) and its control channel.
struct Template {
    link: Arc<TemplateLink>,
    accepted: Accepted,
    /// Its output, exit watch and end, as for any worker (dropped after the link is shut down).
    _process: WorkerProcess,
}

impl Template {
    fn start(
        command: &WorkerCommand,
        spec: &StartSpec,
        descriptor: &OwnedInterfaceDescriptor,
        attribution: Attribution,
        load_timeout: Option<Duration>,
    ) -> Result<Self, LoadError> {
        let plugin = &spec.plugin;
        let spawn_failed = |source: io::Error| LoadError::WorkerSpawn {
            plugin: plugin.clone(),
            program: command.program().to_path_buf(),
            source,
        };
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|errno| spawn_failed(errno.into()))?;
        let mut process = command.command("template");
        let mut set = Vec::new();
        for (variable, value) in TEMPLATE_ENV {
            if std::env::var_os(variable).is_none() {
                process.env(variable, value);
                set.push(*variable);
            }
        }
        process.env(crate::worker::TEMPLATE_SET_ENV, set.join(","));
        let mailbox = Mailbox::create().map_err(spawn_failed)?;
        let mut worker =
            WorkerProcess::spawn(process, mailbox, theirs, attribution).map_err(spawn_failed)?;
        send_message(ours.as_fd(), &[MAILBOX], &[worker.mailbox_file()]).map_err(spawn_failed)?;
        let accepted = worker.load(spec, descriptor, load_timeout)?;
        // One answer per request (and room for a `Gone`): a template cannot make the host queue more.
        let (replies_tx, replies_rx) = crossbeam_channel::bounded(2);
        let link = Arc::new(TemplateLink {
            pid: worker.pid(),
            control: ours,
            requests: Mutex::new(()),
            replies_tx,
            replies_rx,
            exits: Mutex::default(),
            exit_reported: Condvar::new(),
        });
        let reader = Arc::clone(&link);
        std::thread::Builder::new()
            .name(format!("fidius:{plugin}:template"))
            .spawn(move || reader.read_messages())
            .map_err(spawn_failed)?;
        Ok(Self {
            link,
            accepted,
            _process: worker,
        })
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // The template ends when its control channel closes; its forked workers live on.
        self.link.mark_gone();
    }
}

/// A worker set's template, if templates are on: started with the set's first worker, dropped for
/// good when it refuses to fork, restarted (a few times) when it dies.
pub(crate) struct Templates {
    state: Mutex<State>,
}

enum State {
    /// Templates are off for this set (the option, a refusal, too many deaths).
    Off,
    /// None running; the next worker start starts one.
    Idle { deaths: u32 },
    Ready {
        template: Box<Template>,
        deaths: u32,
    },
}

/// What starting a worker through [`Templates::fork`] needs.
pub(crate) struct ForkRequest<'a> {
    pub(crate) command: &'a WorkerCommand,
    pub(crate) spec: &'a StartSpec,
    pub(crate) descriptor: &'a OwnedInterfaceDescriptor,
    pub(crate) load_timeout: Option<Duration>,
    pub(crate) counters: &'a ProcessCounters,
}

impl Templates {
    pub(crate) fn new(enabled: bool) -> Self {
        let state = if enabled {
            State::Idle { deaths: 0 }
        } else {
            State::Off
        };
        Self {
            state: Mutex::new(state),
        }
    }

    /// A worker forked from the template (started first if there is none), or `None`: start it
    /// cold (templates are off, or the template could not give one; the reason is logged).
    pub(crate) fn fork(
        &self,
        request: &ForkRequest<'_>,
        attribution: &Attribution,
    ) -> Option<(WorkerProcess, Accepted)> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let plugin = &request.spec.plugin;
        // Counted each time this returns `None` for a reason other than templates being off.
        let fallbacks = &request.counters.template_fallbacks;
        if let State::Idle { deaths } = *state {
            // What the template writes (its import's output) is attributed to the instance whose
            // start started it.
            match Template::start(
                request.command,
                request.spec,
                request.descriptor,
                attribution.clone(),
                request.load_timeout,
            ) {
                Ok(template) => {
                    *state = State::Ready {
                        template: Box::new(template),
                        deaths,
                    }
                }
                Err(error) => {
                    fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "fidius::worker_template", plugin = %plugin, reason = %error, "the worker template did not start; starting workers cold");
                    *state = State::Off;
                    return None;
                }
            }
        }
        let State::Ready { template, deaths } = &*state else {
            return None;
        };
        let deaths = *deaths;
        let forked = WorkerProcess::forked(attribution.clone(), |mailbox, output| {
            template.link.fork(mailbox, output).map(WorkerPid::Forked)
        });
        match forked {
            Ok(Ok(worker)) => {
                request.counters.forks.fetch_add(1, Ordering::Relaxed);
                let accepted = template.accepted.clone();
                tracing::debug!(
                    pid = worker.pid(),
                    "worker process forked from the template"
                );
                Some((worker, accepted))
            }
            Ok(Err(ForkFailure::Refused(reason))) => {
                fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "fidius::worker_template", plugin = %plugin, %reason, "the worker template refused to fork; starting workers cold");
                *state = State::Off;
                None
            }
            Ok(Err(ForkFailure::Gone(reason))) => {
                fallbacks.fetch_add(1, Ordering::Relaxed);
                let deaths = deaths + 1;
                tracing::warn!(target: "fidius::worker_template", plugin = %plugin, %reason, deaths, "the worker template is gone; starting this worker cold");
                *state = if deaths >= MAX_TEMPLATE_DEATHS {
                    State::Off
                } else {
                    State::Idle { deaths }
                };
                None
            }
            Err(error) => {
                fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "fidius::worker_template", plugin = %plugin, %error, "could not prepare a forked worker; starting it cold");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! What a hostile template can make the host do: this test process plays the template.

    use super::*;

    fn link_as_template(pid: u32) -> (Arc<TemplateLink>, OwnedFd) {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("a socket pair");
        let (replies_tx, replies_rx) = crossbeam_channel::bounded(2);
        let link = Arc::new(TemplateLink {
            pid,
            control: ours,
            requests: Mutex::new(()),
            replies_tx,
            replies_rx,
            exits: Mutex::default(),
            exit_reported: Condvar::new(),
        });
        (link, theirs)
    }

    #[test]
    fn a_reported_pid_is_accepted_only_for_a_live_child_of_the_template() {
        let (link, _theirs) = link_as_template(std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert!(link.check_child(child.id()).is_ok());
        // The host itself, init, and a pid nobody has: refused, so never signalled.
        for pid in [std::process::id(), 1, u32::MAX] {
            let refused = link.check_child(pid).expect_err("not a child");
            assert!(refused.contains("not a child"), "{refused}");
        }
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(link.check_child(child.id()).is_err(), "gone");
    }

    #[test]
    fn a_template_may_answer_only_what_it_was_asked_and_only_about_its_workers() {
        let (link, _theirs) = link_as_template(std::process::id());
        let forked = [&[FORKED][..], &7u32.to_le_bytes()].concat();
        assert!(link.take_message(&forked, 0).is_ok());
        assert!(link.take_message(&forked, 0).is_ok());
        // Nobody drained those two: a third is refused instead of queued.
        assert!(link.take_message(&forked, 0).is_err());
        assert!(link.take_message(&[FORKED, 1, 2], 0).is_err(), "short");
        assert!(link.take_message(&[99], 0).is_err(), "unknown kind");
        assert!(link.take_message(&[REFUSED], 1).is_err(), "descriptors");
        // An exit report about a pid the host did not accept is ignored.
        let exited = [&[EXITED][..], &42u32.to_le_bytes(), &9i32.to_le_bytes()].concat();
        assert!(link.take_message(&exited, 0).is_ok());
        assert_eq!(link.exit_status(42, Duration::ZERO), None);
        link.lock_exits().forked.insert(42);
        assert!(link.take_message(&exited, 0).is_ok());
        assert_eq!(link.exit_status(42, Duration::ZERO), Some(9));
    }
}
