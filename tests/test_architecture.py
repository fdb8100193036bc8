"""The package's imports point one way: core -> models -> vision/voice -> analysis ->
live/offline -> cli. A module may import its own subpackage and any lower layer, never a layer
above or a sibling on its own level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stream"
LAYER = {
    "core": 0,
    "models": 1,
    "vision": 2,
    "voice": 2,
    "analysis": 3,
    "live": 4,
    "offline": 4,
    "cli": 5,
    "api": 5,  # the public Python API (stream/__init__.py exports it)
    "client": 5,  # the public live client
    "__main__": 6,
}


def _part(module: str) -> str | None:
    """The layer name of `stream.<part>...`, None for `stream` itself (only its version)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "stream" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    out = []
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("stream")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stream"):
            out.append((node.lineno, str(node.module)))
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        own = _part(".".join(rel.parts))
        if own is None or own == "__init__":
            continue
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own:
                continue
            if target not in LAYER or LAYER[target] >= LAYER[own]:
                bad.append(f"{rel}.py:{line}: {own} imports {module}")
    return bad


def test_every_module_belongs_to_a_layer() -> None:
    names = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()}
    names -= {"__init__", "__pycache__", "data", "py"}
    assert names - {"py.typed"} <= set(LAYER), names - set(LAYER)


def test_imports_point_down_the_layers() -> None:
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "stream" / "vision").mkdir(parents=True)
    (tmp_path / "stream" / "vision" / "x.py").write_text("from stream.live.session import A\n")
    (tmp_path / "stream" / "voice").mkdir()
    (tmp_path / "stream" / "voice" / "y.py").write_text(
        "def f():\n    import stream.vision.pipeline\n"
    )
    (tmp_path / "stream" / "core").mkdir()
    (tmp_path / "stream" / "core" / "z.py").write_text("from stream.core import labels\n")
    found = violations(tmp_path / "stream")
    assert len(found) == 2, found
    assert "vision imports stream.live.session" in found[0]
    assert "voice imports stream.vision.pipeline" in found[1]


@pytest.mark.parametrize("layer", ["live", "offline"])
def test_sources_do_not_import_each_other(layer: str) -> None:
    other = {"live": "offline", "offline": "live"}[layer]
    for path in (PACKAGE / layer).rglob("*.py"):
        assert all(_part(m) != other for _, m in _imports(path)), path
