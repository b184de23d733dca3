//! Per-load and per-call settings.

use std::time::Duration;

use fidius_core::manifest::Isolation;

use crate::backend::process::command::WorkerCommand;
use crate::callback::HostFunctions;

/// How a plugin is loaded. `LoadOptions::default()` gives one instance, no timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub(crate) instances: usize,
    pub(crate) recent_output_lines: usize,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) load_timeout: Option<Duration>,
    pub(crate) retire_after: Duration,
    pub(crate) isolation: Option<Isolation>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) worker_command: Option<WorkerCommand>,
    pub(crate) strict: bool,
    /// [`LoadOptions::config`]: the configuration as JSON, or why it could not be serialised.
    pub(crate) config: Option<Result<serde_json::Value, String>>,
    /// Set by `PluginHost` from its builder's host functions.
    pub(crate) host_functions: HostFunctions,
    pub(crate) stream_window: usize,
    pub(crate) stream_timeout: Option<Duration>,
    pub(crate) worker_template: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            instances: 1,
            recent_output_lines: 200,
            call_timeout: None,
            load_timeout: None,
            retire_after: Duration::from_secs(1),
            isolation: None,
            memory_limit: None,
            worker_command: None,
            strict: false,
            config: None,
            host_functions: HostFunctions::default(),
            stream_window: crate::stream::DEFAULT_WINDOW,
            stream_timeout: None,
            worker_template: false,
        }
    }
}

impl LoadOptions {
    /// Number of instances (own-GIL interpreters, one instance thread each) serving the plugin's calls
    /// from one shared queue. Default: 1. Zero is rejected when loading.
    pub fn instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }

    /// How many of the plugin's latest output lines (`print`, `sys.stdout`, `sys.stderr`, `logging`)
    /// [`PythonPluginHandle::recent_output`](crate::PythonPluginHandle::recent_output) keeps, over all
    /// instances. Default: 200. Zero keeps none; every line still goes to `tracing`.
    pub fn recent_output_lines(mut self, lines: usize) -> Self {
        self.recent_output_lines = lines;
        self
    }

    /// The longest a call may take, from the moment it is made (time spent queued counts). Default:
    /// none, and a call without a timeout costs nothing extra. A call can override it with
    /// [`CallOptions`].
    ///
    /// In the process tier a call past its deadline kills its worker process (SIGKILL), whatever
    /// it is doing, and the next call gets a fresh one; the rest of this section describes the
    /// sub-interpreter tier.
    ///
    /// # What happens when a call times out
    ///
    /// The caller gets [`CallError::Timeout`](crate::CallError::Timeout) at the deadline, whatever
    /// the plugin is doing. A call still queued at its deadline is dropped without running. A call
    /// that is running is interrupted: a process-wide watchdog thread takes the instance's GIL (one
    /// switch interval, about 5 ms, while the plugin runs bytecode) and raises `KeyboardInterrupt`
    /// in it, as Ctrl-C would in a script. The exception unwinds the plugin's code (`finally`
    /// blocks and `with` exits run) and the instance serves the next call, keeping its module state.
    ///
    /// # Blocking calls and C code
    ///
    /// The exception is delivered only when the instance's thread next executes Python bytecode. Pure
    /// Python loops (`while True: pass`, deep recursion, a slow algorithm) are interrupted within
    /// milliseconds. Code inside a C function is not: `time.sleep`, a blocking `socket.recv`,
    /// `threading.Lock.acquire`/`Thread.join`, a long `re` match, `sum(range(10**12))` or a compiled
    /// extension's loop notice the interrupt only once the C function returns. If the instance has
    /// not come back [`retire_after`](Self::retire_after) past the deadline, it is **retired**: its
    /// thread is detached (it keeps its interpreter and memory until the C code returns, then ends),
    /// a fresh instance replaces it, and [`PoolStats`](crate::PoolStats) counts both.
    ///
    /// # Limits
    ///
    /// This protects a host from plugins that are slow or buggy, not from hostile ones: plugin code
    /// can catch `KeyboardInterrupt` (a bare `except:`) and carry on, which ends in retirement too,
    /// but a detached thread still uses a core for as long as it spins, and code that never returns
    /// keeps its memory forever. Code that must be stopped for certain belongs in a separate process
    /// (the process tier: see [`isolation`](Self::isolation); a worker process past its deadline is
    /// killed outright, whatever it is doing).
    ///
    /// # Which mechanism when
    ///
    /// * `call_timeout`: bounds every call of a plugin, e.g. a request handler's budget.
    /// * [`CallOptions::timeout`]: one call with a different budget, or none.
    /// * [`load_timeout`](Self::load_timeout): a plugin that may hang while importing.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// The longest importing and checking the plugin may take in each instance. Default: none.
    ///
    /// Past it, the import is interrupted the same way a call is (see
    /// [`call_timeout`](Self::call_timeout)) and loading fails with
    /// [`LoadError::LoadTimeout`](crate::LoadError::LoadTimeout); an instance whose import has not
    /// come back [`retire_after`](Self::retire_after) later (blocked in C code) is detached.
    /// Instances that replace retired ones import without this limit.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = Some(timeout);
        self
    }

    /// How long an interrupted call (or load) gets to come back before its instance is retired and
    /// replaced. Default: 1 s. (Sub-interpreter tier only: a process-tier worker that overruns a
    /// deadline is killed at once.)
    pub fn retire_after(mut self, grace: Duration) -> Self {
        self.retire_after = grace;
        self
    }

    /// Overrides the package's `[python] isolation`. Default: the manifest's value (`auto` when it
    /// has none).
    ///
    /// * [`Isolation::Subinterpreter`]: own-GIL sub-interpreters on threads of the host process.
    /// * [`Isolation::Process`]: one worker process per instance. The plugin runs in the worker's
    ///   main interpreter, so every compiled extension works; a crash, `os._exit` or runaway memory
    ///   kills only that worker ([`CallError::WorkerCrashed`](crate::CallError::WorkerCrashed)) and
    ///   the next call gets a fresh one; a call past its timeout kills its worker.
    /// * [`Isolation::Auto`]: the process tier if any compiled extension in the plugin's `vendor/`
    ///   cannot run in a sub-interpreter (as recorded by `fidius pack`, or probed in a throwaway
    ///   child process at load), otherwise sub-interpreters.
    ///
    /// [`PythonPluginHandle::tier`](crate::PythonPluginHandle::tier) tells which tier was chosen and why.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }

    /// Refuse what the original fidius tool accepted and fidius accepts with a warning (see
    /// [`LoadWarning`](crate::LoadWarning)): interface methods defined without `@method`, and an
    /// interface name (`package.interface`, `__interface__`) that differs from the trait's only in
    /// case, `_` or `-`. Default: false (accepted, logged, and listed in `PluginInfo::warnings`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Limits what Python allocates in each worker process to `bytes`: a request beyond it fails
    /// with `MemoryError` in the plugin, and the worker keeps serving (the worker counts CPython's
    /// own allocations; reporting the error may use 16 MiB more). Memory C code allocates itself is
    /// bounded by the worker's address space (`RLIMIT_AS`), set to `bytes` + 16 MiB + 256 MiB for
    /// the runtime; C code that overruns that and does not check may crash its worker, which is then
    /// replaced. Only a process can be limited, so this puts the plugin in the process tier;
    /// combined with an explicit `isolation = "subinterpreter"` the load fails. Address space counts
    /// mappings, not just used memory: numpy with OpenBLAS reserves hundreds of MiB per thread pool.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Loads the plugin as a **configured** instance: each instance (and each instance a reload or a
    /// restart brings up) calls the entry module's `__fidius_configure__(config)` once, after the
    /// import and the interface-hash checks, with `config` serialised to JSON and decoded into
    /// Python values (a struct becomes a `dict`, `()` becomes `None`); the object it returns is what
    /// the interface's methods are looked up on (its attributes, e.g. bound methods of a class
    /// instance), and the contract check (required methods, arity, `@method`, optional methods)
    /// applies to that object. Default: no configuration, and the module's own functions are the
    /// methods (a `__fidius_configure__` is then not called).
    ///
    /// Loading fails with [`LoadError::ConfigureHookMissing`](crate::LoadError::ConfigureHookMissing)
    /// when the module defines no `__fidius_configure__`, with
    /// [`LoadError::Configure`](crate::LoadError::Configure) when it raises, and with
    /// [`LoadError::InvalidOptions`](crate::LoadError::InvalidOptions) when `config` cannot be
    /// serialised to JSON. A plugin that defines `__fidius_configure__` and lacks a module-level
    /// method, loaded without a configuration, fails with
    /// [`LoadError::ConfigRequired`](crate::LoadError::ConfigRequired).
    pub fn config(mut self, config: &impl serde::Serialize) -> Self {
        self.config = Some(serde_json::to_value(config).map_err(|error| error.to_string()));
        self
    }

    /// How many items of a streamed result (`-> Stream<T>`) the plugin may produce ahead of the
    /// host's consumer (backpressure): the plugin waits at its next `yield` while that many wait
    /// to be taken. Default: 16. Zero counts as one. A call can override it with
    /// [`CallOptions::stream_window`]. (In the process tier up to twice this many may be on their
    /// way: the worker's window and the host's.)
    pub fn stream_window(mut self, items: usize) -> Self {
        self.stream_window = items;
        self
    }

    /// The longest a streamed result may take as a whole, from the call until its last item.
    /// Default: none. Each item is bounded by [`call_timeout`](Self::call_timeout) on its own
    /// (counted while the plugin produces it, not while it waits for the consumer). Past either,
    /// the stream ends with [`CallError::Timeout`](crate::CallError::Timeout) and the plugin is
    /// stopped as a timed-out call is.
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = Some(timeout);
        self
    }

    /// The configured worker command, else [`WorkerCommand::find`]'s.
    pub(crate) fn resolved_worker_command(
        &self,
    ) -> Result<WorkerCommand, crate::backend::process::command::WorkerNotFound> {
        self.worker_command
            .clone()
            .map_or_else(WorkerCommand::find, Ok)
    }

    /// How process-tier workers are started. Default: [`WorkerCommand::find`] (the
    /// `FIDIUS_WORKER` variable, else `fidius-worker` next to the running executable or on `PATH`).
    pub fn worker_command(mut self, command: WorkerCommand) -> Self {
        self.worker_command = Some(command);
        self
    }

    /// Process tier (Linux): start workers by forking a **warm template**, a process per loaded
    /// version that has initialised CPython, run the bootstrap and imported the plugin once, so a
    /// restart after a crash or timeout, and every further worker of the pool, skips exec,
    /// interpreter start and import, and the workers share the template's memory copy-on-write.
    /// Default: off, because a forked worker inherits whatever the plugin's import created: open
    /// files and sockets (shared with its siblings), random generators other than `random`'s
    /// (which CPython reseeds at fork; fidius also reseeds `numpy.random`'s global one), the
    /// `str` hash seed, and one BLAS thread instead of a pool. Only the plugin's author knows
    /// whether its import is fork-safe.
    ///
    /// A template with more than one thread (a plugin that starts a thread at import) refuses to
    /// fork; the workers then start cold, and the reason is logged (target
    /// `fidius::worker_template`) and counted in
    /// [`PoolStats::worker_template_fallbacks`](crate::PoolStats::worker_template_fallbacks).
    pub fn worker_template(mut self, on: bool) -> Self {
        self.worker_template = on;
        self
    }
}

/// Settings for one call, overriding the plugin's [`LoadOptions`]. `CallOptions::default()` changes
/// nothing.
///
/// ```no_run
/// # fn demo(handle: &fidius_host::PythonPluginHandle) -> Result<(), fidius_host::CallError> {
/// use std::time::Duration;
/// use fidius_host::CallOptions;
///
/// let quick = CallOptions::default().timeout(Duration::from_millis(200));
/// let out = handle.call_typed_json_with(0, br#"["World"]"#, &quick)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// `None`: the plugin's default; `Some(None)`: no timeout for this call.
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) stream_window: Option<usize>,
    pub(crate) stream_timeout: Option<Duration>,
}

impl CallOptions {
    /// This call's timeout instead of [`LoadOptions::call_timeout`]; same semantics.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// No timeout for this call, even if the plugin has a default one.
    pub fn without_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// For a streamed result: this stream's window instead of [`LoadOptions::stream_window`].
    pub fn stream_window(mut self, items: usize) -> Self {
        self.stream_window = Some(items);
        self
    }

    /// For a streamed result: this stream's whole-stream timeout instead of
    /// [`LoadOptions::stream_timeout`]. (For a stream, [`timeout`](Self::timeout) bounds each item.)
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = Some(timeout);
        self
    }
}
