"""The stub for a wide interface type-checks under `mypy --strict`, and a plugin finished from it
type-checks, passes `--check`, imports and behaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import (
    RICH_INTERFACE,
    check_stub,
    fill_in,
    generated_stub,
    load_module,
    run_mypy_strict,
)
from fidius import PluginError, is_method

RICH_BODIES = {
    "word_count": "return len(text.split())",
    "scale": "return factor * value",
    "flags": "return [on, letter.isupper()]",
    "area": '''
points = polygon["points"]
if len(points) < 3:
    raise PluginError("DEGENERATE", "a polygon needs three points", {"points": len(points)})
twice = sum(a["x"] * b["y"] - b["x"] * a["y"] for a, b in zip(points, points[1:] + points[:1]))
return abs(twice) / 2
''',
    "centroid": '''
if not points:
    return None
return {"x": sum(p["x"] for p in points) / len(points), "y": sum(p["y"] for p in points) / len(points)}
''',
    "histogram": '''
counts: dict[str, int] = {}
for value in values:
    key = str(value % buckets)
    counts[key] = counts.get(key, 0) + 1
return counts
''',
    "by_id": "return sorted((int(key), name) for key, name in ids.items())",
    "pair": 'return (f"{from_[0]}:{from_[1]}", (sum(lambda_) > 0, len(lambda_)))',
    "reset": "return None",
    "ping": "return None",
    "validate": '''
if not arg0:
    raise PluginError("EMPTY_INPUT", "nothing to validate")
''',
    "wait": "return bool(timeout)",
    "compress": "return bytes(reversed(data))",
    "describe": 'return f"{polygon[\'name\']} with {len(polygon[\'points\'])} points"',
}


@pytest.fixture
def rich_stub(fidius_bin: Path, tmp_path: Path) -> Path:
    return generated_stub(fidius_bin, RICH_INTERFACE, "Rich", tmp_path / "rich_plugin.py")


def test_rich_stub_maps_types_per_the_table(rich_stub: Path) -> None:
    text = rich_stub.read_text()
    for expected in [
        "def word_count(text: str) -> int:",
        "def flags(on: bool, letter: str) -> list[bool]:",
        "def area(polygon: Polygon) -> float:",
        "def centroid(points: list[Point]) -> Point | None:",
        "def histogram(values: list[int], buckets: int) -> dict[str, int]:",
        "def by_id(ids: dict[str, str]) -> list[tuple[int, str]]:",
        "def pair(from_: tuple[int, int], lambda_: list[int]) -> tuple[str, tuple[bool, int]]:",
        "def reset() -> None:",
        "def validate(arg0: str, _unused: str | None) -> None:",
        "# `std :: time :: Duration` has no Python mapping; typed as Any.\n@method\ndef wait(timeout: Any) -> bool:",
        "def compress(data: bytes) -> bytes:",
        "    class Polygon(TypedDict):\n        name: str\n        points: list[Point]\n"
        "        tags: dict[str, list[str]]\n        parent: Polygon | None\n",
        '    """Counts the words in `text`.\n\n    Words are separated by "whitespace" \\\\ nothing else.\n    """',
    ]:
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert "class Opaque" not in text, "non-serde structs must not become TypedDicts"


def test_rich_stub_passes_mypy_strict(rich_stub: Path) -> None:
    result = run_mypy_strict(rich_stub)
    assert result.returncode == 0, result.stdout + result.stderr


def test_finished_rich_plugin_type_checks_and_behaves(fidius_bin: Path, rich_stub: Path) -> None:
    rich_stub.write_text(fill_in(rich_stub.read_text(), RICH_BODIES))
    mypy = run_mypy_strict(rich_stub)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    check = check_stub(fidius_bin, RICH_INTERFACE, "Rich", rich_stub)
    assert check.returncode == 0, check.stderr

    plugin = load_module(rich_stub)
    assert all(is_method(getattr(plugin, name)) for name in RICH_BODIES)
    square = [{"x": 0.0, "y": 0.0}, {"x": 2.0, "y": 0.0}, {"x": 2.0, "y": 2.0}, {"x": 0.0, "y": 2.0}]
    polygon: dict[str, object] = {"name": "square", "points": square, "tags": {}, "parent": None}
    assert plugin.area(polygon) == 4.0
    assert plugin.centroid(square) == {"x": 1.0, "y": 1.0}
    assert plugin.centroid([]) is None
    assert plugin.word_count("a b  c") == 3
    assert plugin.histogram([1, 2, 3, 4], 2) == {"1": 2, "0": 2}
    assert plugin.by_id({"2": "b", "1": "a"}) == [(1, "a"), (2, "b")]
    assert plugin.pair((1, 2), [1, 2, 3]) == ("1:2", (True, 3))
    assert plugin.compress(b"abc") == b"cba"
    assert plugin.describe(polygon) == "square with 4 points"
    with pytest.raises(PluginError) as caught:
        plugin.area({"name": "line", "points": square[:2], "tags": {}, "parent": None})
    assert (caught.value.code, caught.value.details) == ("DEGENERATE", {"points": 2})


def test_mypy_strict_catches_a_wrong_return_type(rich_stub: Path) -> None:
    # Guards the test above: mypy must actually be checking the stub's annotations.
    rich_stub.write_text(fill_in(rich_stub.read_text(), {"word_count": 'return "three"'}))
    result = run_mypy_strict(rich_stub)
    assert result.returncode != 0
    assert "Incompatible return value type" in result.stdout
