# Runs in every plugin interpreter (both tiers, and the extension probe) before any plugin code.
#
# Imports from a plugin's own folders read source files and compiled extensions only, never bytecode:
# a `__pycache__` beside plugin sources is never read, and a sourceless `.pyc` is not importable, so
# what runs is exactly the verified source. The standard library keeps its own (the host's) bytecode,
# which is why this is a path hook for the plugin's folders rather than a process-wide
# `sys.pycache_prefix`: that would recompile every standard-library module on every import.
# Writing bytecode stays off (`sys.dont_write_bytecode`).
#
# The one exception is the host's private bytecode cache (`_FidiusBytecodeCache`), given only for
# trees the host verified: it lives outside every plugin tree, in a folder only this user can write,
# and a file there is named by the SHA-256 of the source it was compiled from and is a checked-hash
# pyc (PEP 552) whose header must match that source, so a changed source or another interpreter
# (a folder per cache tag, magic number and optimisation level) never finds it.
import sys
import _frozen_importlib_external as _fidius_external  # loaded in every interpreter already
import _imp
import posix as _fidius_posix

_fidius_bytecode_cache = None  # a _FidiusBytecodeCache once the host gave a cache folder


class _FidiusSourceLoader(_fidius_external.SourceFileLoader):
    """Compiles the source, or takes its code from the host's bytecode cache; never looks for,
    reads or writes bytecode beside the source."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        source = self.get_data(path)
        cache = _fidius_bytecode_cache
        if cache is None:
            return self.source_to_code(source, path)
        return cache.code(self, fullname, path, source)


_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_OTHERS_WRITE = 0o022


def _fidius_private_dir(path):
    """Creates `path` (0700) unless it exists, then refuses it unless it is a real folder of this
    user that nobody else can write (as the host checks its package cache)."""
    posix = _fidius_posix
    try:
        posix.mkdir(path, 0o700)
    except FileExistsError:
        pass
    found = posix.lstat(path)
    if found.st_mode & _S_IFMT != _S_IFDIR:
        raise OSError(f"{path} is not a folder")
    if found.st_uid != posix.geteuid() or found.st_mode & _OTHERS_WRITE:
        raise OSError(f"{path} is not private to this user")


class _FidiusBytecodeCache:
    """The host's bytecode cache for one interpreter: `<root>/<cache tag>-<magic>-o<optimize>/
    <sha256 of the source>.pyc`, checked-hash pycs written atomically (a private temporary file,
    then a rename), so hosts sharing the folder never see half a file."""

    # A cache file larger than this is not one of ours (the largest pycs of big packages are ~1 MiB).
    FILE_LIMIT = 64 << 20
    # A hit sets the file's modification time (what pruning goes by) when it is older than this.
    TOUCH_AFTER = 3600

    def __init__(self, root):
        from _sha2 import sha256  # an extension module: imported only when a cache is in use

        tag = sys.implementation.cache_tag
        if tag is None:
            raise OSError("this interpreter has no cache tag")
        self._sha256 = sha256
        self._magic = _fidius_external._RAW_MAGIC_NUMBER
        self.dir = f"{root}/{tag}-{_fidius_external.MAGIC_NUMBER.hex()}-o{sys.flags.optimize}"
        _fidius_private_dir(root)
        _fidius_private_dir(self.dir)
        self.stats = {"hits": 0, "compiled": 0, "written": 0, "rejected": 0}

    def code(self, loader, fullname, path, source):
        source_hash = _imp.source_hash(self._magic, source)
        cached = f"{self.dir}/{self._sha256(source).hexdigest()}.pyc"
        data = self._read(cached)
        if data is not None:
            try:
                details = {"name": fullname, "path": cached}
                if _fidius_external._classify_pyc(data, fullname, details) != 0b11:
                    raise ImportError("not a checked-hash pyc")
                _fidius_external._validate_hash_pyc(data, source_hash, fullname, details)
                code = _fidius_external._compile_bytecode(memoryview(data)[16:], fullname, cached, path)
            except (ImportError, EOFError, ValueError, TypeError):
                self.stats["rejected"] += 1
            else:
                self.stats["hits"] += 1
                return code
        code = loader.source_to_code(source, path)
        self.stats["compiled"] += 1
        self._write(cached, _fidius_external._code_to_hash_pyc(code, source_hash, True))
        return code

    def _read(self, cached):
        """The file's bytes if it is a private regular file of this user of a sane size."""
        posix = _fidius_posix
        try:
            fd = posix.open(cached, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC)
        except OSError:
            return None
        try:
            found = posix.fstat(fd)
            if (
                found.st_mode & _S_IFMT != _S_IFREG
                or found.st_uid != posix.geteuid()
                or found.st_mode & _OTHERS_WRITE
                or not 16 <= found.st_size <= self.FILE_LIMIT
            ):
                self.stats["rejected"] += 1
                return None
            chunks = []
            left = found.st_size
            while left > 0:
                chunk = posix.read(fd, left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            if left:
                return None  # shrank while read: a torn file is never used
            import time  # built in: costs nothing

            if time.time() - found.st_mtime > self.TOUCH_AFTER:
                posix.utime(fd)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            posix.close(fd)

    def _write(self, cached, data):
        posix = _fidius_posix
        temporary = f"{self.dir}/.tmp-{posix.urandom(8).hex()}"
        try:
            fd = posix.open(
                temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC, 0o600
            )
        except OSError:
            return
        try:
            try:
                with memoryview(data) as view:
                    while view:
                        view = view[posix.write(fd, view):]
            finally:
                posix.close(fd)
            posix.replace(temporary, cached)
            self.stats["written"] += 1
        except OSError:
            try:
                posix.unlink(temporary)
            except OSError:
                pass


def _fidius_source_only_imports(bytecode_cache, *roots):
    """Every folder under `roots` (and the packages inside them) gets a finder whose only loaders are
    the extension loader and `_FidiusSourceLoader`; `bytecode_cache` is the host's cache folder for
    these roots, or None."""
    sys.dont_write_bytecode = True
    global _fidius_bytecode_cache
    if bytecode_cache is not None:
        try:
            _fidius_bytecode_cache = _FidiusBytecodeCache(bytecode_cache)
        except (ImportError, OSError):
            _fidius_bytecode_cache = None  # compiling from source is always correct
    external = _fidius_external
    loaders = [
        (_FidiusSourceLoader if loader is external.SourceFileLoader else loader, suffixes)
        for loader, suffixes in external._get_supported_file_loaders()
        if loader is not external.SourcelessFileLoader
    ]
    plugin_finder = external.FileFinder.path_hook(*loaders)
    prefixes = tuple(external._path_abspath(root).rstrip("/") for root in roots)

    def plugin_path_hook(path):
        absolute = external._path_abspath(path) if path else ""
        if any(absolute == prefix or absolute.startswith(prefix + "/") for prefix in prefixes):
            return plugin_finder(path)
        raise ImportError("not a plugin folder", path=path)

    sys.path_hooks.insert(0, plugin_path_hook)
    sys.path_importer_cache.clear()
