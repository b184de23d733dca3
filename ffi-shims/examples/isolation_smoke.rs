//! Two own-GIL sub-interpreters on two threads, each reporting what it sees.
//!
//! Run with `cargo run -p fidius-ffi --example isolation_smoke`.

use std::sync::{Arc, Barrier};
use std::thread;

use fidius_ffi::{FfiError, Interpreter, InterpreterOptions, SubInterpreter, WorkerInterpreter};

const REPORT: &str =
    "f'Python {sys.version.split()[0]}, id(sys.modules)={id(sys.modules):#x}, json.owner={json.owner!r}'";

fn report(name: &str, both_ready: &Barrier) -> Result<String, FfiError> {
    let interp = SubInterpreter::new(InterpreterOptions::default())?;
    interp.with(|py| py.run(&format!("import sys, json\njson.owner = {name:?}")))??;
    both_ready.wait();
    let line = interp.with(|py| py.eval_to_string(REPORT))??;
    both_ready.wait();
    // Plugin sub-interpreters may not import `_interpreters`: ask the main interpreter about this one.
    let id = interp.id();
    let gil = WorkerInterpreter::claim()?.with(|py| {
        py.eval_to_string(&format!("__import__('_interpreters').get_config({id}).gil"))
    })??;
    Ok(format!("[{name}] interpreter {id}: {line}, gil={gil}"))
}

fn main() -> Result<(), FfiError> {
    println!(
        "fidius smoke: CPython {} embedded; two own-GIL sub-interpreters, one thread each",
        fidius_ffi::python_version()
    );
    let both_ready = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let both_ready = Arc::clone(&both_ready);
            thread::Builder::new()
                .name(format!("fidius:{name}#0"))
                .spawn(move || report(name, &both_ready))
                .expect("spawning a thread")
        })
        .collect();
    for handle in threads {
        let line = handle.join().expect("worker thread panicked")?;
        println!("{line}");
    }
    println!("each interpreter set json.owner on its own copy of the json module: the values did not mix");
    Ok(())
}
