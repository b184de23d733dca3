//! The host's own Python (the bootstrap, the source-only imports, the `fidius` SDK), compiled once
//! per process and kept as `marshal` data in host memory: every later interpreter unmarshals it
//! (about 0.1 ms) instead of compiling it again (5–10 ms per instance start, and the compiler's
//! garbage in the interpreter's arenas, which CPython keeps after the interpreter ends).
//!
//! Only host code goes through here: the data comes from the host's own sources, compiled in a fresh
//! interpreter before any plugin code ran in it, and lives where no plugin can write.

use std::sync::OnceLock;

use fidius_ffi::{FfiError, Interp, PyObj};

/// One of the host's Python sources and, once compiled, its marshalled code.
pub(crate) struct Precompiled {
    source: &'static str,
    filename: &'static str,
    marshalled: OnceLock<Vec<u8>>,
}

impl Precompiled {
    pub(crate) const fn new(source: &'static str, filename: &'static str) -> Self {
        Self {
            source,
            filename,
            marshalled: OnceLock::new(),
        }
    }

    /// The code object in interpreter `py`: unmarshalled, or compiled (and kept) the first time.
    pub(crate) fn code<'i>(&self, py: Interp<'i>) -> Result<PyObj<'i>, FfiError> {
        let marshal = py.import("marshal")?;
        if let Some(data) = self.marshalled.get() {
            return call(&marshal.getattr("loads")?, &[&py.bytes(data)?]);
        }
        let compile = py.eval("compile")?;
        let code = call(
            &compile,
            &[
                &py.str(self.source)?,
                &py.str(self.filename)?,
                &py.str("exec")?,
            ],
        )?;
        let data = call(&marshal.getattr("dumps")?, &[&code])?;
        if let Ok(data) = data.to_bytes() {
            let _ = self.marshalled.set(data); // another thread may have set the same bytes
        }
        Ok(code)
    }

    /// Runs the code in the `__main__` namespace of `py`, as `Interp::run` runs source.
    pub(crate) fn run(&self, py: Interp<'_>) -> Result<(), FfiError> {
        let code = self.code(py)?;
        call(&py.eval("exec")?, &[&code, &py.eval("globals()")?]).map(drop)
    }
}

fn call<'i>(function: &PyObj<'i>, arguments: &[&PyObj<'i>]) -> Result<PyObj<'i>, FfiError> {
    function
        .call(arguments)
        .map_err(|raised| FfiError::Python(raised.describe()))
}
