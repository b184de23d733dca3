//! `template` mode, the worker side of warm worker templates (`backend/process/template.rs` is the
//! host's): after loading the plugin exactly as a cold worker does, the template waits on its
//! control channel and forks a worker for each request. The template never starts a thread: it
//! watches the host, the channel and its children in one `poll`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use fidius_ffi::{ForkSide, Interpreter, WorkerInterpreter};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags, WaitOptions};

use crate::backend::process::mailbox::Mailbox;
use crate::backend::process::template::{
    receive_message, send_message, EXITED, FORK, FORKED, MAILBOX, MAX_MESSAGE, MAX_REASON, REFUSED,
};

/// Run once in the template, after the load and before the first fork (nothing here starts a
/// thread): defines `_fidius_after_fork` in `__main__`, which [`AFTER_FORK`] calls in each forked
/// child before it serves. Everything that can be looked up before forking is, so a restart pays
/// only for the calls:
/// * the environment variables fidius set for the template only (named in
///   [`TEMPLATE_SET_ENV`]) are removed again, so the plugin and its subprocesses see the host's;
/// * OpenBLAS (numpy's BLAS, loaded with one thread in the template) gets the thread count a cold
///   worker's would have started with: `OMP_NUM_THREADS` / `GOTO_NUM_THREADS` if set, else the
///   CPUs this process may run on, through its `*set_num_threads*` function (as threadpoolctl
///   does; looked up here, with `ctypes`, only when an OpenBLAS library is mapped);
/// * numpy's legacy global generator (`numpy.random.rand()` and friends), seeded once at its
///   import, is reseeded: forked siblings would draw the same numbers. (`random` reseeds itself
///   in CPython's own at-fork hook.)
const PREPARE: &str = r#"
def _fidius_prepare():
    import os, sys
    set_by_fidius = [name for name in os.environ.pop('FIDIUS_TEMPLATE_SET', '').split(',') if name]
    for name in set_by_fidius:
        os.environ.pop(name, None)
    blas_setters = []
    want = 0
    try:
        with open('/proc/self/maps') as maps:
            blas = {line.split(None, 5)[5].strip() for line in maps
                    if 'openblas' in line and len(line.split(None, 5)) == 6}
        want = os.environ.get('OMP_NUM_THREADS') or os.environ.get('GOTO_NUM_THREADS')
        want = int(want) if want else len(os.sched_getaffinity(0))
        if blas and want > 1 and 'OPENBLAS_NUM_THREADS' not in os.environ:
            import ctypes
            for path in sorted(blas):
                library = ctypes.CDLL(path)
                for symbol in ('scipy_openblas_set_num_threads64_',
                               'scipy_openblas_set_num_threads',
                               'openblas_set_num_threads64_', 'openblas_set_num_threads'):
                    setter = getattr(library, symbol, None)
                    if setter is not None:
                        blas_setters.append(setter)
                        break
    except Exception as error:
        print(f'fidius: forked workers keep one BLAS thread: {error!r}', file=sys.stderr)

    def after_fork():
        for setter in blas_setters:
            setter(want)
        if 'numpy.random' in sys.modules:
            sys.modules['numpy.random'].seed()
    return after_fork
_fidius_after_fork = _fidius_prepare()
del _fidius_prepare
"#;

/// Run in each forked child before it serves (see [`PREPARE`]).
const AFTER_FORK: &str = "_fidius_after_fork()\n";

/// Names the variables fidius set in a template's environment (comma-separated), which each
/// forked child removes again.
pub(crate) const TEMPLATE_SET_ENV: &str = "FIDIUS_TEMPLATE_SET";

/// The template's own mailbox, the first message on its control channel.
pub(super) fn receive_mailbox(control: &OwnedFd) -> Result<OwnedFd, String> {
    let mut buffer = [0u8; MAX_MESSAGE];
    match receive_message(control.as_fd(), &mut buffer) {
        Ok(Some((1, fds))) if buffer[0] == MAILBOX && fds.len() == 1 => fds
            .into_iter()
            .next()
            .ok_or_else(|| "no mailbox".to_owned()),
        Ok(_) => Err("expected the template's mailbox on the control channel".to_owned()),
        Err(error) => Err(format!("cannot read the control channel: {error}")),
    }
}

/// Whether the process of `pidfd` has exited (without waiting).
pub(super) fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec::try_from(Duration::ZERO).ok();
    matches!(poll(&mut fds, now.as_ref()), Ok(ready) if ready > 0)
}

/// Serves fork requests until the host closes the control channel (`Ok(None)`: the template ends).
/// Returns `Some` only in a forked child: the mailbox it serves, its output already on fds 1 and 2.
pub(super) fn serve_forks(
    interp: &WorkerInterpreter,
    control: OwnedFd,
    host: &OwnedFd,
    load_mailbox: Mailbox,
) -> Result<Option<Mailbox>, String> {
    // The load is over; no child needs the template's mailbox.
    drop(load_mailbox);
    interp
        .with(|py| py.run(PREPARE))
        .and_then(|prepared| prepared)
        .map_err(|error| format!("cannot prepare the template: {error}"))?;
    let mut children: Vec<(Pid, OwnedFd)> = Vec::new();
    loop {
        let ready: Vec<bool> = {
            let mut fds = vec![
                PollFd::new(&control, PollFlags::IN),
                PollFd::new(host, PollFlags::IN),
            ];
            fds.extend(
                children
                    .iter()
                    .map(|(_, pidfd)| PollFd::new(pidfd, PollFlags::IN)),
            );
            match poll(&mut fds, None) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(format!("cannot wait for requests: {error}")),
                Ok(_) => fds.iter().map(|fd| !fd.revents().is_empty()).collect(),
            }
        };
        if ready[1] {
            return Err("the host went away".to_owned());
        }
        // Highest index first, so `swap_remove` only moves children already looked at.
        for index in (0..children.len()).rev() {
            if ready[2 + index] {
                let (pid, _pidfd) = children.swap_remove(index);
                report_exit(&control, pid)?;
            }
        }
        if !ready[0] {
            continue;
        }
        let mut buffer = [0u8; MAX_MESSAGE];
        let (len, fds) = match receive_message(control.as_fd(), &mut buffer) {
            Ok(None) => return Ok(None),
            Ok(Some(message)) => message,
            Err(error) => return Err(format!("cannot read the control channel: {error}")),
        };
        let mut fds = fds.into_iter();
        let (Some(mailbox), Some(output), None, 1, FORK) =
            (fds.next(), fds.next(), fds.next(), len, buffer[0])
        else {
            return Err("a malformed fork request".to_owned());
        };
        match interp.fork() {
            Err(error) => {
                let mut reason = error.to_string();
                truncate(&mut reason, MAX_REASON);
                send(&control, &[&[REFUSED], reason.as_bytes()].concat())?;
            }
            Ok(ForkSide::Parent { child }) => {
                let pid = Pid::from_raw(child).ok_or_else(|| "fork gave no pid".to_owned())?;
                // Without a pidfd the child is still served; only its exit goes unreported.
                if let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) {
                    children.push((pid, pidfd));
                }
                let pid = child.unsigned_abs();
                send(&control, &[&[FORKED][..], &pid.to_le_bytes()].concat())?;
                // `mailbox` and `output` close here: only the child holds them now.
            }
            Ok(ForkSide::Child) => {
                drop(control);
                drop(children);
                rustix::stdio::dup2_stdout(&output)
                    .and_then(|()| rustix::stdio::dup2_stderr(&output))
                    .map_err(|error| format!("cannot redirect the output: {error}"))?;
                drop(output);
                let mailbox = Mailbox::open(mailbox)
                    .map_err(|error| format!("no mailbox from the template: {error}"))?;
                interp
                    .with(|py| py.run(AFTER_FORK))
                    .and_then(|reseeded| reseeded)
                    .map_err(|error| format!("cannot prepare the forked worker: {error}"))?;
                return Ok(Some(mailbox));
            }
        }
    }
}

/// Reaps child `pid` (it has exited) and reports its raw wait status.
fn report_exit(control: &OwnedFd, pid: Pid) -> Result<(), String> {
    let status = loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(Some((_, status))) => break status.as_raw(),
            // Already reaped, or not ours: nothing to report.
            Ok(None) | Err(_) => return Ok(()),
        }
    };
    let pid = pid.as_raw_nonzero().get().unsigned_abs();
    send(
        control,
        &[&[EXITED][..], &pid.to_le_bytes(), &status.to_le_bytes()].concat(),
    )
}

fn send(control: &OwnedFd, message: &[u8]) -> Result<(), String> {
    send_message(control.as_fd(), message, &[])
        .map_err(|error| format!("cannot answer the host: {error}"))
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
