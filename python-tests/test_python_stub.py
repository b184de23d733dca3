"""`fidius python-stub` seen from Python: the tutorial's Greeter, --check drift, bad input, and
the interop vectors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    GREETER_INTERFACE,
    REPO_ROOT,
    check_stub,
    fill_in,
    generated_stub,
    load_module,
    python_stub,
    run_mypy_strict,
)
from fidius import PluginError, is_method

VECTORS = REPO_ROOT / "crates" / "fidius-core" / "interop" / "hash-vectors.json"

# The tutorial's filled-in Greeter plugin bodies.
GREETER_BODIES = {
    "greet": '''
if not name:
    raise PluginError("EMPTY_INPUT", "name must not be empty")
return f"Hello, {name}!"
''',
    "stats": '''
if not values:
    raise PluginError("EMPTY_INPUT", "no values", {"count": 0})
return {"count": len(values), "mean": sum(values) / len(values), "labels": labels}
''',
    "echo": "return data",
    "farewell": 'return f"Goodbye, {name}!"',
}


def fnv1a_64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) % 2**64
    return value


def stub_hash(text: str) -> int:
    found = re.search(r"^__interface_hash__ = (0x[0-9a-f]{16})$", text, re.MULTILINE)
    assert found, f"no 16-digit __interface_hash__ line in:\n{text}"
    return int(found.group(1), 16)


@pytest.fixture
def greeter_stub(fidius_bin: Path, tmp_path: Path) -> Path:
    return generated_stub(fidius_bin, GREETER_INTERFACE, "Greeter", tmp_path / "greeter.py")


def test_greeter_stub_header_and_methods(greeter_stub: Path) -> None:
    text = greeter_stub.read_text()
    assert "from fidius import method, PluginError\n" in text
    assert '__interface__ = "Greeter"\n' in text
    assert "__interface_version__ = 1\n" in text
    # An independent FNV-1a over the canonical strings the spec prescribes for this trait.
    expected = fnv1a_64(b"\n".join(sorted([
        b"echo:Vec < u8 >->Vec < u8 >!raw",
        b"greet:String->String",
        b"stats:Vec < f64 >,Option < HashMap < String, String > >->Result < Summary, PluginError >",
    ])))
    assert stub_hash(text) == expected
    names = re.findall(r"^@method\ndef (\w+)\(", text, re.MULTILINE)
    assert names == ["greet", "stats", "echo", "farewell"]
    assert 'def greet(name: str) -> str:\n    """Greets someone by name."""\n    raise NotImplementedError' in text
    assert "def echo(data: bytes) -> bytes:" in text
    assert "def stats(values: list[float], labels: dict[str, str] | None) -> Summary:" in text
    assert "    class Summary(TypedDict):\n        count: int\n        mean: float\n" in text


def test_unfilled_stub_imports_and_raises_not_implemented(greeter_stub: Path) -> None:
    module = load_module(greeter_stub)
    assert is_method(module.greet)
    with pytest.raises(NotImplementedError):
        module.greet("World")


def test_tutorial_greeter_filled_in_passes_check_and_behaves(
    fidius_bin: Path, greeter_stub: Path
) -> None:
    greeter_stub.write_text(fill_in(greeter_stub.read_text(), GREETER_BODIES))
    result = check_stub(fidius_bin, GREETER_INTERFACE, "Greeter", greeter_stub)
    assert result.returncode == 0, result.stderr
    assert "matches interface Greeter" in result.stdout

    plugin = load_module(greeter_stub)
    assert plugin.greet("World") == "Hello, World!"
    with pytest.raises(PluginError) as caught:
        plugin.greet("")
    assert caught.value.code == "EMPTY_INPUT"
    assert plugin.stats([1.0, 3.0], None) == {"count": 2, "mean": 2.0, "labels": None}
    assert plugin.echo(b"\x00\xff") == b"\x00\xff"


def test_check_without_the_optional_method_passes(fidius_bin: Path, greeter_stub: Path) -> None:
    text = fill_in(greeter_stub.read_text(), GREETER_BODIES)
    text = text[: text.index("# Optional since")]
    greeter_stub.write_text(text)
    result = check_stub(fidius_bin, GREETER_INTERFACE, "Greeter", greeter_stub)
    assert result.returncode == 0, result.stderr


def test_check_reports_a_struct_changed_since_the_stub(fidius_bin: Path, tmp_path: Path) -> None:
    interface = tmp_path / "greeter.rs"
    interface.write_text(GREETER_INTERFACE.read_text())
    stub = generated_stub(fidius_bin, interface, "Greeter", tmp_path / "greeter.py")
    assert re.search(r"^__interface_schema__ = 0x[0-9a-f]{16}$", stub.read_text(), re.MULTILINE)
    # A field added to a returned struct: the interface hash stays, the schema fingerprint moves.
    source = interface.read_text()
    assert "pub mean: f64," in source
    interface.write_text(source.replace("pub mean: f64,", "pub mean: f64,\n    pub median: f64,"))

    result = check_stub(fidius_bin, interface, "Greeter", stub)
    assert result.returncode != 0
    assert "__interface_schema__ is 0x" in result.stderr
    assert "a struct the methods use changed; regenerate the stub" in result.stderr
    assert "__interface_hash__" not in result.stderr

    # A module as the original fidius wrote it (no schema constant) is not compared.
    stub.write_text(re.sub(r"^__interface_schema__ = .*\n", "", stub.read_text(), flags=re.MULTILINE))
    result = check_stub(fidius_bin, interface, "Greeter", stub)
    assert result.returncode == 0, result.stderr


def test_check_lists_every_drift(fidius_bin: Path, greeter_stub: Path, tmp_path: Path) -> None:
    text = greeter_stub.read_text()
    text = re.sub(r"__interface_hash__ = 0x[0-9a-f]+", "__interface_hash__ = 0x0000000000000001", text)
    text = text.replace("def greet(name: str)", "def greet(name: str, extra: int)")
    text = text.replace("@method\ndef echo(", "def echo(")
    text = re.sub(r"@method\ndef stats\(.*?raise NotImplementedError\n", "", text, flags=re.DOTALL)
    text += "\n\n@method\ndef shout(text: str) -> str:\n    return text.upper()\n"
    drifted = tmp_path / "drifted.py"
    drifted.write_text(text)
    before = drifted.read_bytes()

    result = check_stub(fidius_bin, GREETER_INTERFACE, "Greeter", drifted)
    assert result.returncode != 0
    message = result.stderr
    assert "__interface_hash__ is 0x0000000000000001" in message
    assert "`greet` takes 2 parameter(s), the interface has 1" in message
    assert "`echo` is not decorated with @method" in message
    assert "method `stats` is missing" in message
    assert "@method `shout` is not a method of the interface" in message
    assert drifted.read_bytes() == before, "--check must not modify the plugin"


def test_importing_a_stub_imports_no_typing(greeter_stub: Path) -> None:
    # Each plugin instance starts an interpreter; `typing` alone costs about 12 ms of that. Run in a
    # fresh interpreter (pytest itself has imported typing) and import nothing else on the way.
    probe = (
        "import sys\n"
        f"path = {str(greeter_stub)!r}\n"
        "namespace = {'__name__': 'greeter'}\n"
        "exec(compile(open(path).read(), path, 'exec'), namespace)\n"
        "print(sorted(name for name in ('typing', 'typing_extensions') if name in sys.modules))\n"
        "print(namespace['Summary'](count=1, mean=2.0, labels=None))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "{'count': 1, 'mean': 2.0, 'labels': None}"]


@pytest.mark.parametrize(
    "doc",
    ['ends in a quote "', 'ends in three quotes """', 'holds """ three quotes', 'ends in a backslash \\',
     '""""', 'a \\" mix """"'],
    ids=["trailing-quote", "trailing-triple-quote", "triple-quote", "trailing-backslash", "only-quotes", "mixed"],
)
def test_any_doc_comment_gives_valid_python(fidius_bin: Path, tmp_path: Path, doc: str) -> None:
    interface = tmp_path / "docs.rs"
    interface.write_text(
        "#[plugin_interface(version = 1)]\n"
        f"pub trait Docs {{\n    /// {doc}\n    fn ping(&self) -> String;\n}}\n"
    )
    out = tmp_path / "docs.py"
    result = python_stub(fidius_bin, interface, "Docs", out)
    assert result.returncode == 0, result.stderr
    module = load_module(out)
    assert module.ping.__doc__ == doc


def test_out_dash_prints_the_stub(fidius_bin: Path, greeter_stub: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(fidius_bin), "python-stub", "--interface", str(GREETER_INTERFACE), "--trait-name", "Greeter",
         "--out", "-"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == greeter_stub.read_text()
    assert not (tmp_path / "-").exists()


def test_out_creates_missing_folders(fidius_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "my-greeter-py" / "nested" / "greeter.py"
    result = python_stub(fidius_bin, GREETER_INTERFACE, "Greeter", out)
    assert result.returncode == 0, result.stderr
    assert "__interface_hash__" in out.read_text()


def test_refuses_to_overwrite_without_force(fidius_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "plugin.py"
    out.write_text("# my work\n")
    result = python_stub(fidius_bin, GREETER_INTERFACE, "Greeter", out)
    assert result.returncode != 0
    assert "--force" in result.stderr
    assert out.read_text() == "# my work\n"

    forced = python_stub(fidius_bin, GREETER_INTERFACE, "Greeter", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "__interface_hash__" in out.read_text()


def test_finds_traits_in_nested_modules(fidius_bin: Path, tmp_path: Path) -> None:
    interface = tmp_path / "nested.rs"
    interface.write_text(
        "mod outer { pub mod inner {\n"
        "    #[fidius::plugin_interface(version = 2)]\n"
        "    pub trait Deep { fn ping(&self) -> String; }\n"
        "} }\n"
    )
    out = tmp_path / "deep.py"
    result = python_stub(fidius_bin, interface, "Deep", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "__interface_version__ = 2" in text
    assert stub_hash(text) == fnv1a_64(b"ping:->String")


@pytest.mark.parametrize(
    ("source", "trait", "expected"),
    [
        ("pub trait Other {}\n", "Greeter", "no trait named `Greeter` in the file (traits found: Other)"),
        ("pub trait Greeter { fn greet(&self) -> String; }\n", "Greeter",
         "trait `Greeter` at line 1, column 11 has no `#[plugin_interface(...)]` attribute"),
        ("#[plugin_interface(version = 1)]\npub trait Greeter {\n    fn greet(&self) -> ;\n}\n",
         "Greeter", "does not parse as Rust at line 3"),
        ("#[plugin_interface(version = 1)]\npub trait Greeter {\n    fn greet<T>(&mut self, x: T);\n}\n",
         "Greeter", "line 3, column 13: method `greet` is generic"),
        ("#[plugin_interface]\npub trait Greeter { fn greet(&self); }\n", "Greeter", "needs `version = N`"),
        ("#[plugin_interface(version = 1)]\npub trait Greeter { fn class(&self) -> String; }\n", "Greeter",
         "method `class` is a Python keyword"),
    ],
    ids=["absent", "not-an-interface", "syntax-error", "invalid-method", "no-version", "python-keyword"],
)
def test_clear_errors(fidius_bin: Path, tmp_path: Path, source: str, trait: str, expected: str) -> None:
    interface = tmp_path / "interface.rs"
    interface.write_text(source)
    out = tmp_path / "out.py"
    result = python_stub(fidius_bin, interface, trait, out)
    assert result.returncode != 0
    assert expected in result.stderr
    assert str(interface) in result.stderr
    assert not out.exists(), "a failed run must not leave an output file"


def test_check_of_a_missing_plugin_is_a_clear_error(fidius_bin: Path, tmp_path: Path) -> None:
    result = check_stub(fidius_bin, GREETER_INTERFACE, "Greeter", tmp_path / "absent.py")
    assert result.returncode != 0
    assert "cannot read plugin module" in result.stderr


def test_missing_interface_file_is_a_clear_error(fidius_bin: Path, tmp_path: Path) -> None:
    result = python_stub(fidius_bin, tmp_path / "nope.rs", "Greeter", tmp_path / "out.py")
    assert result.returncode != 0
    assert "cannot read interface file" in result.stderr


# The vectors whose traits no Python plugin can serve (a returned reference, `&mut`, a function
# pointer, a trait object): `#[plugin_interface]` refuses them, so `python-stub` does too, with the
# same reason (one wire check in fidius-core). Their hashes are checked on the Rust side.
UNSERVABLE = {"StaticStr", "MutSlice", "FnPointer", "DynBox"}


def test_every_interop_vector_gets_the_original_macro_hash(fidius_bin: Path, tmp_path: Path) -> None:
    if not VECTORS.is_file():
        pytest.fail(f"interop vectors not found at {VECTORS}")
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors) == 128
    mismatches = []
    refused = set()
    for vector in vectors:
        interface = tmp_path / f"{vector['trait']}.rs"
        interface.write_text(vector["source"])
        out = tmp_path / f"{vector['trait']}.py"
        result = python_stub(fidius_bin, interface, vector["trait"], out)
        if vector["trait"].removesuffix("Messy") in UNSERVABLE:
            if result.returncode == 0 or "cannot be served by a Python plugin" not in result.stderr:
                mismatches.append(f"{vector['trait']}: expected a refusal, got {result.stderr!r}")
            refused.add(vector["trait"])
            continue
        if result.returncode != 0:
            mismatches.append(f"{vector['trait']}: {result.stderr}")
            continue
        if stub_hash(out.read_text()) != int(vector["hash"], 16):
            mismatches.append(f"{vector['trait']}: {out.read_text()}")
        check = check_stub(fidius_bin, interface, vector["trait"], out)
        if check.returncode != 0:
            mismatches.append(f"{vector['trait']} --check: {check.stderr}")
    assert not mismatches, "\n".join(mismatches)
    assert len(refused) == 2 * len(UNSERVABLE), sorted(refused)
    stubs = sorted(tmp_path.glob("*.py"))
    assert len(stubs) == 128 - len(refused)
    mypy = run_mypy_strict(*stubs)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
