"""No import cycles between the project's modules.

``lint-imports`` checks the layers and cycles between sibling modules; this test also
catches a cycle that runs through a package's ``__init__`` (which the sibling check does
not see) and runs with the unit tests, without the dev tools. Every import counts: at
module level, inside functions and under ``TYPE_CHECKING``, as import-linter counts them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kitty", "endpoints", "agents", "graph", "ops", "cli", "service", "bench")


def module_files() -> dict[str, Path]:
    """Every module of the packages by dotted name (a package is its ``__init__``)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of our modules (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imported(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                # A package's own ``from . import x`` is relative to itself, a module's to
                # the package that holds it.
                keep = len(anchor) - node.level + (1 if is_package else 0)
                base = ".".join([*anchor[:keep], *([base] if base else [])])
            for alias in node.names:
                target = _known(f"{base}.{alias.name}", modules) if base else None
                if target is not None:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports (itself excluded)."""
    modules = module_files()
    return {
        module: {t for t in _imported(module, path, modules) if t != module}
        for module, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when the graph has none."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_the_graph_sees_the_packages() -> None:
    graph = import_graph()
    assert {"kitty.errors", "graph.api", "graph.synthesis", "kitty.cli.main"} <= set(graph)
    assert "kitty.errors" in graph["endpoints.config._fleet"]
    assert "graph._node_support" in graph["graph.synthesis"]  # from graph._node_support import ...


def test_relative_imports_resolve(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    sources = {
        "__init__.py": "from . import a\n",
        "a.py": "from .b import thing\nimport pkg.c.deep\n",
        "b.py": "",
        "c.py": "",
    }
    for name, source in sources.items():
        (package / name).write_text(source, encoding="utf-8")
    modules = {"pkg": package / "__init__.py"}
    modules |= {f"pkg.{n[:-3]}": package / n for n in sources if n != "__init__.py"}
    assert set(_imported("pkg", modules["pkg"], modules)) == {"pkg.a"}
    assert set(_imported("pkg.a", modules["pkg.a"], modules)) == {"pkg.b", "pkg.c"}


def test_find_cycle_names_the_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
