"""The `fidius` SDK as a plugin author and the host see it."""

from __future__ import annotations

import functools
import pickle
import subprocess
import types
from pathlib import Path
from typing import Callable

import pytest

import fidius
from conftest import MYPY_STRICT, run_mypy_strict
from fidius import PluginError, get_method, is_method, list_methods, method, reset_registry


def test_method_returns_the_same_function_marked() -> None:
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    decorated = method(greet)
    assert decorated is greet
    assert decorated("World") == "Hello, World!"
    assert getattr(greet, fidius.METHOD_MARKER) is True
    assert is_method(greet)


def test_undecorated_functions_are_not_methods() -> None:
    def helper() -> None:
        pass

    assert not is_method(helper)
    assert not is_method(42)


def test_method_accepts_async_functions_and_lambdas() -> None:
    async def fetch(url: str) -> str:
        return url

    assert method(fetch) is fetch
    double: Callable[[int], int] = method(lambda x: x * 2)
    assert double(4) == 8


@pytest.mark.parametrize(
    "candidate",
    [len, functools.partial(print, "x"), object(), "greet", type("Callable", (), {"__call__": lambda self: 1})()],
    ids=["builtin", "partial", "object", "string", "callable-object"],
)
def test_method_rejects_non_functions(candidate: object) -> None:
    with pytest.raises(TypeError, match="expects a plain function"):
        method(candidate)  # type: ignore[type-var]


def test_method_rejects_classes() -> None:
    class Greeter:
        pass

    with pytest.raises(TypeError, match="got type"):
        method(Greeter)


def test_registry_finds_methods_by_name_as_the_original_sdk_does() -> None:
    @method
    def greet(name: str) -> str:
        return f"hi {name}"

    @method
    def shout(text: str) -> str:
        return text.upper()

    def helper() -> None:
        pass

    assert list_methods() == ["greet", "shout"]
    assert list_methods(__name__) == ["greet", "shout"]
    assert list_methods("elsewhere") == []
    assert get_method("greet")("alice") == "hi alice"
    assert get_method("shout", module=__name__) is shout
    with pytest.raises(KeyError):
        get_method("helper")
    reset_registry()
    assert list_methods() == []


def test_registering_one_name_twice_in_a_module_is_refused() -> None:
    @method
    def dup() -> int:
        return 1

    with pytest.raises(ValueError, match="already registered in module"):
        @method  # type: ignore[no-redef]
        def dup() -> int:
            return 2


def test_same_name_in_two_modules_needs_the_module_to_choose() -> None:
    first = types.FunctionType((lambda: 1).__code__, {"__name__": "plugin_a"}, "process")
    second = types.FunctionType((lambda: 2).__code__, {"__name__": "plugin_b"}, "process")
    method(first)
    method(second)
    assert list_methods() == ["process"]
    assert get_method("process", module="plugin_b") is second
    with pytest.raises(KeyError, match="several modules"):
        get_method("process")


def test_plugin_error_attributes() -> None:
    error = PluginError("EMPTY_INPUT", "name must not be empty", {"field": "name"})
    assert error.code == "EMPTY_INPUT"
    assert error.message == "name must not be empty"
    assert error.details == {"field": "name"}
    assert isinstance(error, Exception)


def test_plugin_error_details_default_to_none() -> None:
    assert PluginError("X", "y").details is None


def test_plugin_error_str_and_repr() -> None:
    # The message alone, as the original fidius SDK gives it.
    assert str(PluginError("EMPTY_INPUT", "name must not be empty")) == "name must not be empty"
    assert repr(PluginError("A", "b")) == "PluginError('A', 'b')"
    assert repr(PluginError("A", "b", {"n": 1})) == "PluginError('A', 'b', details={'n': 1})"


def test_plugin_error_is_raisable_and_catchable() -> None:
    with pytest.raises(PluginError) as caught:
        raise PluginError("BAD", "bad input", {"index": 3})
    assert caught.value.code == "BAD"
    assert caught.value.details == {"index": 3}


def test_plugin_error_survives_pickling() -> None:
    copy = pickle.loads(pickle.dumps(PluginError("C", "m", {"k": [1, 2]})))
    assert (copy.code, copy.message, copy.details) == ("C", "m", {"k": [1, 2]})


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, "m"), "code must be a non-empty str"),
        (("", "m"), "code must be a non-empty str"),
        (("C", None), "message must be a str"),
        (("C", "m", ["not", "a", "dict"]), "details must be a dict or None"),
    ],
)
def test_plugin_error_rejects_wrong_types(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        PluginError(*args)  # type: ignore[arg-type]


def test_package_ships_py_typed() -> None:
    package = Path(fidius.__file__).parent
    assert (package / "py.typed").is_file()


def test_public_api() -> None:
    assert set(fidius.__all__) == {
        "METHOD_MARKER", "PluginError", "get_method", "is_method", "list_methods", "method",
        "reset_registry", "HostError", "host",
    }


def test_host_outside_a_host_has_no_functions() -> None:
    # Plugin unit tests run without a host: every name is an AttributeError saying none exist.
    with pytest.raises(AttributeError, match="'kv_get'; the host registered: none"):
        fidius.host.kv_get("key")
    assert dir(fidius.host) == []
    assert issubclass(fidius.HostError, Exception)


def test_a_plugin_using_host_functions_passes_mypy_strict(tmp_path: Path) -> None:
    plugin = tmp_path / "uses_host.py"
    plugin.write_text(
        "import fidius\n\n\n"
        "@fidius.method\n"
        "def lookup(key: str) -> object:\n"
        "    try:\n"
        "        value: object = fidius.host.kv_get(key)\n"
        "    except fidius.HostError as error:\n"
        "        return str(error)\n"
        "    return value\n"
    )
    result = run_mypy_strict(plugin)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sdk_passes_mypy_strict() -> None:
    # `-p` checks the installed package, as a plugin author's mypy sees it (py.typed included).
    result = subprocess.run(
        [*MYPY_STRICT, "-p", "fidius"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
