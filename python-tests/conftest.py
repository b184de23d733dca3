"""Shared fixtures: the `fidius` binary under test and helpers to run it and load plugins."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fidius

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GREETER_INTERFACE = REPO_ROOT / "crates" / "fidius-macro" / "tests" / "fixtures" / "greeter.rs"
RICH_INTERFACE = FIXTURES / "rich_interface.rs"
# `--cache-dir` to the null device: no .mypy_cache is left in the checkout.
MYPY_STRICT = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull]


@pytest.fixture(autouse=True)
def _fresh_method_registry() -> None:
    """Each test starts with no registered methods: tests define same-named functions, and
    `@method` refuses a second registration from one module."""
    fidius.reset_registry()


@pytest.fixture(scope="session")
def fidius_bin() -> Path:
    value = os.environ.get("FIDIUS_BIN")
    if not value:
        pytest.fail("FIDIUS_BIN is not set: export the path of the built `fidius` binary "
                    "(e.g. target/debug/fidius) before running python-tests")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"FIDIUS_BIN={value} is not a file; build it with `cargo build -p fidius-cli`")
    return path


def run_fidius(fidius_bin: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(fidius_bin), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def python_stub(fidius_bin: Path, interface: Path, trait: str, out: Path,
                *extra: str) -> subprocess.CompletedProcess[str]:
    return run_fidius(fidius_bin, "python-stub", "--interface", interface, "--trait-name", trait,
                      "--out", out, *extra)


def generated_stub(fidius_bin: Path, interface: Path, trait: str, out: Path) -> Path:
    """Runs `python-stub` and insists it succeeded."""
    result = python_stub(fidius_bin, interface, trait, out)
    assert result.returncode == 0, result.stderr
    return out


def check_stub(fidius_bin: Path, interface: Path, trait: str,
               plugin: Path) -> subprocess.CompletedProcess[str]:
    return run_fidius(fidius_bin, "python-stub", "--interface", interface, "--trait-name", trait,
                      "--check", plugin)


def fill_in(stub: str, bodies: dict[str, str]) -> str:
    """Replace each named function's `raise NotImplementedError` with a body, as a plugin author
    does by hand after running `fidius python-stub`."""
    for name, body in bodies.items():
        start = stub.index(f"\ndef {name}(")
        marker = "    raise NotImplementedError\n"
        at = stub.index(marker, start)
        indented = "".join(f"    {line}\n" if line else "\n" for line in body.strip("\n").split("\n"))
        stub = stub[:at] + indented + stub[at + len(marker):]
    return stub


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"plugin_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_mypy_strict(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MYPY_STRICT, *map(str, paths)],
        capture_output=True, text=True, timeout=600,
    )
