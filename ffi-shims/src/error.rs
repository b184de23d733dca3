use std::fmt;

/// A Python exception captured inside the interpreter where it was raised, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonException {
    /// Qualified name of the exception class, e.g. `ValueError` or `json.decoder.JSONDecodeError`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted traceback, when one could be produced.
    pub traceback: Option<String>,
}

impl fmt::Display for PythonException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

impl std::error::Error for PythonException {}

/// Failures of the FFI layer itself (as opposed to Python code raising).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FfiError {
    /// CPython could not be initialised in this process.
    #[error("CPython failed to initialise: {message}")]
    Initialization { message: String },
    /// `Py_NewInterpreterFromConfig` refused to create a sub-interpreter.
    #[error("CPython refused to create a sub-interpreter: {message}")]
    InterpreterCreation { message: String },
    /// The calling thread is already attached to an interpreter; attachments do not nest.
    #[error("this thread is already attached to a Python interpreter")]
    AlreadyAttached,
    /// The calling thread has a Python thread state current that fidius did not make current
    /// (PyO3's `with_gil`, another embedding of CPython): fidius refuses to switch thread states
    /// behind its back.
    #[error(
        "this thread has a Python thread state that fidius did not make current (PyO3's \
         with_gil or another embedding); leave it before using fidius interpreters on this thread"
    )]
    ForeignThreadState,
    /// Python code raised.
    #[error(transparent)]
    Python(#[from] PythonException),
    /// CPython could not allocate a thread state for an interrupting thread.
    #[error("CPython could not create a thread state to interrupt an interpreter")]
    ThreadState,
    /// A buffer longer than a Python object can be (`isize::MAX` bytes).
    #[error("{len} bytes are more than a Python object can hold")]
    TooLarge { len: usize },
    /// A Rust string handed to Python contained a NUL byte.
    #[error("text passed to Python contains a NUL byte at offset {offset}")]
    NulByte { offset: usize },
}
