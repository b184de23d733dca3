# Runs once in every fresh fidius sub-interpreter, before any plugin code.
#
# Defines `_fidius_prepare(sdk_code)`, the part of every load that is the same for every plugin (it
# installs the host's copy of the `fidius` SDK and builds the interpreter's compiler state; a spare
# interpreter runs it ahead of time), and `_fidius_load(spec)`, which isolates sys.path, imports the
# plugin's entry module and checks it against the interface descriptor.
# It returns a report dict that says "ok" or names exactly what is wrong; on success the plugin's
# callables wait in `_fidius_loaded_methods`, in descriptor order (None for absent optional methods),
# for the host to take. When the host gives a configuration, the methods are the attributes of the
# object the module's `__fidius_configure__(config)` returns instead of the module's own.
#
# It also routes everything the plugin writes (`print`, `sys.stdout`/`sys.stderr`, the `logging` module
# once the plugin imports it) into `_fidius_output`, which the host drains after the load and after each
# call and hands to `tracing`: nothing a plugin writes reaches the host process's own streams.
#
# It imports nothing beyond what every interpreter already has: each module imported here would cost
# start time and, because CPython 3.13 keeps part of every ended interpreter, memory per reload.
import importlib
import io
import sys

# What is kept between two drains (one call): at most this many lines and this many characters;
# beyond either, lines are counted, not kept, so a plugin that prints in a loop cannot exhaust memory.
_FIDIUS_OUTPUT_LIMIT = 10_000
_FIDIUS_OUTPUT_BUDGET = 4 * 1024 * 1024
# One line keeps at most this many characters; the rest is replaced by a marker saying how many were
# dropped. A line still waiting for its newline holds no more than this either.
_FIDIUS_LINE_LIMIT = 64 * 1024

_fidius_output = []  # (stream, python level or None, logger name or None, text)
_fidius_output_dropped = 0
_fidius_output_kept = 0  # characters in _fidius_output


def _fidius_record(stream, level, logger, text, cut=0):
    """Keeps one line for the host, capped at _FIDIUS_LINE_LIMIT; `cut` characters of it were already
    left out by the stream."""
    global _fidius_output_dropped, _fidius_output_kept
    if len(text) > _FIDIUS_LINE_LIMIT:
        cut += len(text) - _FIDIUS_LINE_LIMIT
        text = text[:_FIDIUS_LINE_LIMIT]
    if cut:
        text = f"{text}... [fidius: {cut} more characters of this line dropped]"
    if len(_fidius_output) < _FIDIUS_OUTPUT_LIMIT and _fidius_output_kept + len(text) <= _FIDIUS_OUTPUT_BUDGET:
        _fidius_output.append((stream, level, logger, text))
        _fidius_output_kept += len(text)
    else:
        _fidius_output_dropped += 1


def _fidius_take_output():
    """What the host drains: the recorded lines (a copy; the list keeps its identity) and how many
    were dropped since the last drain."""
    global _fidius_output_dropped, _fidius_output_kept
    taken = _fidius_output[:]
    _fidius_output.clear()
    _fidius_output_kept = 0
    dropped, _fidius_output_dropped = _fidius_output_dropped, 0
    return [taken, dropped]


class _FidiusStream(io.TextIOBase):
    """`sys.stdout`/`sys.stderr` of a plugin: complete lines go to the host, never to a file descriptor."""

    def __init__(self, name):
        self._name = name
        self._partial = ""  # the line so far, at most _FIDIUS_LINE_LIMIT characters
        self._cut = 0  # characters of that line left out
        self._buffer = None

    @property
    def name(self):
        return f"<fidius {self._name}>"

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "backslashreplace"

    @property
    def buffer(self):
        """A binary view: bytes written here are decoded as UTF-8 and routed like text."""
        if self._buffer is None:
            self._buffer = _FidiusBuffer(self)
        return self._buffer

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation(f"{self.name} has no file descriptor: fidius routes it to the host")

    def _extend(self, piece):
        room = _FIDIUS_LINE_LIMIT - len(self._partial)
        if len(piece) > room:
            self._cut += len(piece) - room
            piece = piece[:room]
        if piece:
            self._partial += piece

    def _end_line(self):
        _fidius_record(self._name, None, None, self._partial, self._cut)
        self._partial = ""
        self._cut = 0

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if "\n" not in text:
            self._extend(text)
            return len(text)
        first, *lines, last = text.split("\n")
        self._extend(first)
        self._end_line()
        for line in lines:
            _fidius_record(self._name, None, None, line)
        self._extend(last)
        return len(text)

    def flush(self):
        if self._partial or self._cut:
            self._end_line()


class _FidiusBuffer(io.BufferedIOBase):
    """`sys.stdout.buffer`/`sys.stderr.buffer`: bytes, decoded as UTF-8 (undecodable bytes as
    backslash escapes, a character split across writes kept whole) and written to the text stream."""

    def __init__(self, text):
        import codecs  # already imported by every interpreter (io needs it): costs nothing

        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    @property
    def name(self):
        return self._text.name

    @property
    def mode(self):
        return "wb"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._text.fileno()

    def write(self, data):
        with memoryview(data) as view:
            written = view.nbytes
            self._text.write(self._decoder.decode(view))
        return written

    def flush(self):
        self._text.flush()


def _fidius_attach_logging(logging, level):
    root = logging.getLogger()
    if any(getattr(handler, "_fidius", False) for handler in root.handlers):
        return  # importlib.reload(logging)

    class _FidiusLogHandler(logging.Handler):
        _fidius = True

        def emit(self, record):
            try:
                text = self.format(record)
            except Exception:
                self.handleError(record)
                return
            _fidius_record("log", record.levelno, record.name, text)

    root.addHandler(_FidiusLogHandler())
    root.setLevel(level)


class _FidiusLoggingLoader:
    """Wraps the real loader of `logging` to attach the host's handler once the module exists."""

    def __init__(self, loader, level):
        self._loader = loader
        self._level = level

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _fidius_attach_logging(module, self._level)


class _FidiusLoggingHook:
    """A `sys.meta_path` entry that only reacts to `import logging`: importing it up front would cost
    every instance start time and memory, and most plugins never log."""

    level = 30

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "logging":
            return None
        if cls in sys.meta_path:
            sys.meta_path.remove(cls)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                spec.loader = _FidiusLoggingLoader(spec.loader, cls.level)
                return spec
        return None


def _fidius_route_output(log_level):
    sys.stdout = sys.__stdout__ = _FidiusStream("stdout")
    sys.stderr = sys.__stderr__ = _FidiusStream("stderr")
    if "logging" in sys.modules:
        _fidius_attach_logging(sys.modules["logging"], log_level)
    else:
        _FidiusLoggingHook.level = log_level
        sys.meta_path.insert(0, _FidiusLoggingHook)


def _fidius_install_sdk(sdk_source):
    sdk = type(sys)("fidius")
    sdk.__file__ = "<fidius-host>/fidius/__init__.py"
    sdk.__path__ = []
    # The host hands over the SDK's code object (compiled once per process), or its source.
    code = compile(sdk_source, sdk.__file__, "exec") if isinstance(sdk_source, str) else sdk_source
    exec(code, sdk.__dict__)
    sys.modules["fidius"] = sdk
    return sdk


# The exception that failed the plugin's import, for the host to describe: the host's description
# needs no import and cannot recurse, while one written here would import `traceback`, which a
# plugin's own `traceback.py` or a deleted `builtins.__import__` makes raise in turn.
_fidius_import_error = None


def _fidius_import_failed(exc):
    global _fidius_import_error
    _fidius_import_error = exc
    return {"error": "import"}


def _fidius_import(entry_module):
    try:
        return importlib.import_module(entry_module), None
    except SyntaxError as exc:
        return None, {
            "error": "syntax",
            "file": exc.filename or "",
            "line": exc.lineno or 0,
            "message": exc.msg or str(exc),
        }
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (entry_module == missing or entry_module.startswith(missing + ".")):
            return None, {"error": "entry_missing"}
        return None, _fidius_import_failed(exc)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import must not escape either
        return None, _fidius_import_failed(exc)


_CO_VARARGS = 0x04


def _fidius_accepts(function, arity):
    code = getattr(function, "__code__", None)
    if code is not None and hasattr(function, "__self__"):
        code = None  # a bound method (a configured object's): its `self` is already given
    if code is not None and not hasattr(function, "__wrapped__"):
        # Plain functions: read the code object instead of importing `inspect` (instance start time).
        defaults = len(getattr(function, "__defaults__", None) or ())
        required_keyword_only = code.co_kwonlyargcount - len(getattr(function, "__kwdefaults__", None) or {})
        positional = code.co_argcount
        varargs = bool(code.co_flags & _CO_VARARGS)
        accepted = (
            required_keyword_only == 0
            and positional - defaults <= arity
            and (arity <= positional or varargs)
        )
        if accepted:
            return True, ""
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True, "(signature unavailable)"
    try:
        signature.bind(*([None] * arity))
        return True, str(signature)
    except TypeError:
        return False, str(signature)


def _fidius_configured(module, spec):
    """What the methods are looked up on: the module, or, when the host gave a configuration, the
    object the module's `__fidius_configure__(config)` returns (called once per instance)."""
    if not spec["configure"]:
        return module, None
    hook = getattr(module, "__fidius_configure__", None)
    if not callable(hook):
        return None, {"error": "configure_missing"}
    try:
        return hook(spec["config"]), None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt must not escape either
        _fidius_import_failed(exc)  # the host describes it, as an import error
        return None, {"error": "configure"}


def _fidius_check(module, spec, sdk):
    expected_hash = spec["hash"]
    found_hash = getattr(module, "__interface_hash__", None)
    if found_hash is None:
        return {"error": "hash_missing"}
    if not isinstance(found_hash, int) or isinstance(found_hash, bool):
        return {"error": "hash_not_int", "found": repr(found_hash)}
    if found_hash != expected_hash:
        return {"error": "hash_mismatch", "found": found_hash % (1 << 64)}
    # The schema fingerprint covers the structs the hash leaves out. A module without one (the
    # original fidius never wrote it) is not checked; nor is any when the host has none.
    expected_schema = spec["schema"]
    found_schema = getattr(module, "__interface_schema__", None)
    if expected_schema is not None and found_schema is not None and found_schema != expected_schema:
        if isinstance(found_schema, int) and not isinstance(found_schema, bool):
            shown = f"{found_schema % (1 << 64):#018x}"
        else:
            shown = repr(found_schema)[:40]
        return {"error": "schema_mismatch", "found": shown}
    # What the original fidius accepted is reported, not refused: the host decides (it accepts a
    # method without @method, and an interface name that differs from the trait's only in
    # spelling, with a warning, unless LoadOptions::strict).
    warnings = []
    interface = getattr(module, "__interface__", None)
    if interface is not None and interface != spec["trait"]:
        warnings.append({"kind": "interface_name", "found": str(interface)})
    version = getattr(module, "__interface_version__", None)
    if version is not None and version != spec["version"]:
        return {"error": "version_mismatch", "found": repr(version)}
    target, failure = _fidius_configured(module, spec)
    if failure is not None:
        return failure
    is_method = sdk.is_method
    methods = []
    for method in spec["methods"]:
        name = method["name"]
        function = getattr(target, name, None)
        if function is None:
            if method["optional"]:
                methods.append(None)
                continue
            if target is module and callable(getattr(module, "__fidius_configure__", None)):
                return {"error": "config_required", "method": name}
            return {"error": "method_missing", "method": name}
        if not callable(function):
            return {"error": "not_callable", "method": name, "found": type(function).__name__}
        if not is_method(getattr(function, "__func__", function)):
            warnings.append({"kind": "not_decorated", "method": name})
        accepted, signature = _fidius_accepts(function, method["arity"])
        if not accepted:
            return {"error": "arity", "method": name, "signature": signature}
        methods.append(function)
    return {"ok": True, "methods": methods, "warnings": warnings}


_fidius_sdk = None  # the `fidius` module, once _fidius_prepare installed it


def _fidius_prepare(sdk_code):
    """What every load does before it knows its plugin; no plugin code runs in the interpreter yet."""
    sys.dont_write_bytecode = True
    global _fidius_sdk
    _fidius_sdk = _fidius_install_sdk(sdk_code)
    # The first compile in an interpreter builds CPython's per-interpreter AST node classes (over a
    # hundred types, ~3.7 ms of a small plugin's ~4 ms import). Importing `_ast` builds them now, so a
    # spare interpreter pays for them ahead of time; the plugin's import would build them anyway.
    import _ast  # noqa: F401


def _fidius_load(spec):
    _fidius_route_output(spec["log_level"])
    stdlib = [entry for entry in sys.path if entry]
    sys.path[:] = [spec["vendor_dir"], spec["plugin_dir"], *stdlib]
    module, failure = _fidius_import(spec["entry_module"])
    if failure is not None:
        return failure
    report = _fidius_check(module, spec, _fidius_sdk)
    global _fidius_loaded_methods
    _fidius_loaded_methods = report.pop("methods", None)
    return report
