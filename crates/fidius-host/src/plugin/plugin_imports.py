# Runs in every plugin interpreter (both tiers, and the extension probe) before any plugin code.
#
# Imports from a plugin's own folders read source files and compiled extensions only, never bytecode:
# a `__pycache__` beside plugin sources is never read, and a sourceless `.pyc` is not importable, so
# what runs is exactly the verified source. The standard library keeps its own (the host's) bytecode,
# which is why this is a path hook for the plugin's folders rather than a process-wide
# `sys.pycache_prefix`: that would recompile every standard-library module on every import.
# Writing bytecode stays off (`sys.dont_write_bytecode`).
import sys
import _frozen_importlib_external as _fidius_external  # loaded in every interpreter already


class _FidiusSourceLoader(_fidius_external.SourceFileLoader):
    """Compiles the source every time; never looks for, reads or writes bytecode."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _fidius_source_only_imports(*roots):
    """Every folder under `roots` (and the packages inside them) gets a finder whose only loaders are
    the extension loader and `_FidiusSourceLoader`."""
    sys.dont_write_bytecode = True
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
