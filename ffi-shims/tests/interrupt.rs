//! Interrupting a sub-interpreter's busy Python code from another thread.

use std::sync::mpsc;
use std::thread;

use fidius_ffi::{InterpreterOptions, InterruptOutcome, SubInterpreter};

#[test]
fn a_busy_loop_is_interrupted_from_another_thread_and_the_interpreter_serves_on() {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (looping_tx, looping_rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
        handle_tx.send(interp.interrupt_handle()).unwrap();
        let mut seen = Vec::new();
        for round in 0..3 {
            // `n` exists before the interrupt can be sent: one landing before the loop's first
            // bytecode must not leave `n` undefined for the check below.
            interp.with(|py| py.run("n = 0")).unwrap().unwrap();
            looping_tx.send(round).unwrap();
            let stopped = interp
                .with(|py| py.run("while True:\n    n += 1"))
                .unwrap()
                .unwrap_err();
            // The interpreter is healthy afterwards: it runs more code, with its state intact.
            let alive = interp
                .with(|py| py.eval_to_string("str(n >= 0) + ':' + str(2 + 2)"))
                .unwrap()
                .unwrap();
            seen.push((stopped.to_string(), alive));
        }
        seen
    });
    let handle = handle_rx.recv().unwrap();
    // A condition that says no leaves the code alone (here: nothing runs yet, and nothing may be
    // left pending for the loop below).
    assert_eq!(
        handle.interrupt_if(|| false).unwrap(),
        InterruptOutcome::NotWanted
    );
    for _round in looping_rx.iter().take(3) {
        // Even if this lands before the loop starts, the exception waits for the loop's first
        // bytecode, so each round ends with exactly this interrupt.
        assert_eq!(
            handle.interrupt_if(|| true).unwrap(),
            InterruptOutcome::Raised
        );
    }
    let seen = worker.join().unwrap();
    assert_eq!(seen.len(), 3);
    for (stopped, alive) in seen {
        assert!(stopped.starts_with("KeyboardInterrupt"), "{stopped}");
        assert_eq!(alive, "True:4");
    }
    // The interpreter has ended: the handle says so instead of touching freed memory.
    assert_eq!(
        handle.interrupt_if(|| true).unwrap(),
        InterruptOutcome::Gone
    );
}

#[test]
fn a_pending_interrupt_can_be_discarded_before_it_hits_unrelated_code() {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (armed_tx, armed_rx) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
        handle_tx.send(interp.interrupt_handle()).unwrap();
        armed_rx.recv().unwrap();
        interp
            .with(|py| {
                py.discard_pending_interrupt();
                py.eval_to_string("sum(range(1000))")
            })
            .unwrap()
    });
    let handle = handle_rx.recv().unwrap();
    // The worker is parked outside Python: the interrupt stays pending on its thread state.
    assert_eq!(
        handle.interrupt_if(|| true).unwrap(),
        InterruptOutcome::Raised
    );
    armed_tx.send(()).unwrap();
    assert_eq!(worker.join().unwrap().unwrap(), "499500");
}
