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


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports (anywhere in the file:
    top level, functions, `if TYPE_CHECKING:`). `from stream.x import y` counts as importing
    `stream.x.y` when that is a module, else `stream.x`."""
    modules = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a module graph: each strongly connected component of more than
    one module, sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, deps = work[-1]
            nxt = next(deps, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_module_import_cycle() -> None:
    graph = module_graph()
    assert len(graph) > 50, sorted(graph)  # the whole package was read
    assert "stream.live.session" in graph["stream.live.server"]
    assert cycles(graph) == []


def test_the_cycle_check_catches_a_planted_cycle(tmp_path: Path) -> None:
    live = tmp_path / "stream" / "live"
    live.mkdir(parents=True)
    (tmp_path / "stream" / "__init__.py").write_text("")
    (live / "__init__.py").write_text("")
    # a <-> b through a TYPE_CHECKING import; c -> d -> e -> c through a function-level import
    (live / "a.py").write_text("from stream.live.b import B\n")
    (live / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stream.live.a import A\n"
    )
    (live / "c.py").write_text("from stream.live import d\n")
    (live / "d.py").write_text("import stream.live.e\n")
    (live / "e.py").write_text("def f():\n    from stream.live.c import x\n")
    (live / "f.py").write_text("from stream.live.a import A\n")  # into a cycle, not part of it
    found = cycles(module_graph(tmp_path / "stream"))
    assert found == [
        ["stream.live.a", "stream.live.b"],
        ["stream.live.c", "stream.live.d", "stream.live.e"],
    ], found
